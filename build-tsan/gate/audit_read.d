build-tsan/gate/audit_read.o: gate/audit_read.c gate/audit_read.h \
 gate/audit_crypto.h gate/audit_json.h
gate/audit_read.h:
gate/audit_crypto.h:
gate/audit_json.h:
