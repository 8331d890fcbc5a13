build-tsan/gate/audit_log.o: gate/audit_log.c gate/audit_log.h \
 gate/audit_json.h gate/audit_crypto.h gate/audit_internal.h \
 gate/audit_read.h gate/log.h
gate/audit_log.h:
gate/audit_json.h:
gate/audit_crypto.h:
gate/audit_internal.h:
gate/audit_read.h:
gate/log.h:
