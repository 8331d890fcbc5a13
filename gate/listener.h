/*
 * The listening socket of a front: bound once at start, handed from a front
 * to its successor on a configuration reload (so it never closes).
 */
#ifndef PHIGATE_LISTENER_H
#define PHIGATE_LISTENER_H

#include <event2/listener.h>
#include <stddef.h>

/* Listen on address:port (an IP address; setting names the listener in
 * errors and logs, e.g. "listen.postgres").  addr_text gets "host:port".
 * NULL with err on failure. */
struct evconnlistener *listener_open(struct event_base *base, const char *address, int port, const char *setting,
                                     evconnlistener_cb cb, void *arg, char *addr_text, size_t addr_len, char *err,
                                     size_t errlen);

/* Move *from to *to, now calling cb(arg): connections queued in the socket
 * meanwhile are accepted by the new owner. */
void listener_hand_over(struct evconnlistener **from, struct evconnlistener **to, evconnlistener_cb cb, void *arg);

#endif
