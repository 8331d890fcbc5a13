build-tsan/gate/audit_verify.o: gate/audit_verify.c gate/audit_verify.h \
 gate/audit_crypto.h gate/audit_json.h gate/audit_read.h
gate/audit_verify.h:
gate/audit_crypto.h:
gate/audit_json.h:
gate/audit_read.h:
