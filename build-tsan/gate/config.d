build-tsan/gate/config.o: gate/config.c gate/config.h gate/log.h \
 gate/scram.h sqlpolicy/sqlpolicy.h
gate/config.h:
gate/log.h:
gate/scram.h:
sqlpolicy/sqlpolicy.h:
