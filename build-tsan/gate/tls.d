build-tsan/gate/tls.o: gate/tls.c gate/tls.h gate/scram.h
gate/tls.h:
gate/scram.h:
