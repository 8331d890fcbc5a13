build-tsan/gate/scram.o: gate/scram.c gate/scram.h
gate/scram.h:
