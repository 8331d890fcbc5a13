build-tsan/gate/audit_crypto.o: gate/audit_crypto.c gate/audit_crypto.h \
 gate/audit_json.h
gate/audit_crypto.h:
gate/audit_json.h:
