build-tsan/gate/log.o: gate/log.c gate/log.h
gate/log.h:
