#include "gate/listener.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "gate/log.h"

static void accept_failed(struct evconnlistener *l, void *arg)
{
    (void)l;
    log_error("%s: accept failed: %s", (const char *)arg, strerror(errno));
}

struct evconnlistener *listener_open(struct event_base *base, const char *address, int port, const char *setting,
                                     evconnlistener_cb cb, void *arg, char *addr_text, size_t addr_len, char *err,
                                     size_t errlen)
{
    struct sockaddr_storage ss;
    int sslen = sizeof ss;
    snprintf(addr_text, addr_len, strchr(address, ':') ? "[%s]:%d" : "%s:%d", address, port);
    if (evutil_parse_sockaddr_port(addr_text, (struct sockaddr *)&ss, &sslen) != 0) {
        snprintf(err, errlen, "%s.address %s is not an IP address", setting, address);
        return NULL;
    }
    struct evconnlistener *l = evconnlistener_new_bind(base, cb, arg, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 512,
                                                       (struct sockaddr *)&ss, sslen);
    if (!l)
        snprintf(err, errlen, "cannot listen on %s: %s", addr_text, strerror(errno));
    else
        evconnlistener_set_error_cb(l, accept_failed); /* setting: a string literal, lives forever */
    return l;
}

void listener_hand_over(struct evconnlistener **from, struct evconnlistener **to, evconnlistener_cb cb, void *arg)
{
    *to = *from;
    *from = NULL;
    if (*to)
        evconnlistener_set_cb(*to, cb, arg);
}
