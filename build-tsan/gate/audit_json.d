build-tsan/gate/audit_json.o: gate/audit_json.c gate/audit_json.h
gate/audit_json.h:
