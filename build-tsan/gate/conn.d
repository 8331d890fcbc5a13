build-tsan/gate/conn.o: gate/conn.c gate/conn.h
gate/conn.h:
