build-tsan/gate/audit_rec.o: gate/audit_rec.c gate/audit_internal.h \
 gate/audit_json.h gate/audit_log.h
gate/audit_internal.h:
gate/audit_json.h:
gate/audit_log.h:
