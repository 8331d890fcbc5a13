/*
 * phigate: the daemon.  Loads the configuration, starts the fronts on one
 * libevent loop, and runs until SIGTERM/SIGINT.
 */
#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gate/admin_http.h"
#include "gate/approvals.h"
#include "gate/audit_log.h"
#include "gate/config.h"
#include "gate/log.h"
#include "gate/oidc.h"
#include "myfront/my_front.h"
#include "pgfront/pg_front.h"

#define PHIGATE_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: phigate --config FILE       run the gateway in the foreground\n"
            "       phigate --check-config FILE check a configuration file and explain every error\n"
            "       phigate --help | --version\n"
            "\n"
            "phigate is a PostgreSQL/MySQL gateway that holds the database credentials,\n"
            "authenticates each agent with its own identity, masks PHI and audits every statement.\n"
            "Signals: SIGTERM/SIGINT stop it.\n");
}

static int check_config(const char *path)
{
    static char errors[65536];
    config *cfg = config_load(path, errors, sizeof errors);
    if (!cfg) {
        fputs(errors, stderr);
        fprintf(stderr, "%s: configuration is NOT valid\n", path);
        return 1;
    }
    printf("%s: configuration is valid (%zu upstreams, %zu roles, %zu identities)\n", path, cfg->nupstreams,
           cfg->nroles, cfg->nidentities);
    config_free(cfg);
    return 0;
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info("signal %d: shutting down", (int)sig);
    event_base_loopexit(arg, NULL);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what, (void)arg;
    log_warn("SIGHUP: configuration reload is not supported by this version; restart phigate to apply changes");
}

static audit_log *open_audit(const config *cfg, struct event_base *base, char *err, size_t errlen)
{
    audit_log_opts o = {
        .dir = cfg->audit_dir,
        .key_path = cfg->audit_key_file,
        .base = base,
        .checkpoint_records = (uint32_t)cfg->audit_checkpoint_records,
        .checkpoint_ms = (uint32_t)cfg->audit_checkpoint_ms,
        .rotate_bytes = (uint64_t)cfg->audit_rotate_bytes,
        .preallocate_bytes = (uint64_t)cfg->audit_preallocate_bytes,
    };
    return audit_log_open(&o, err, errlen);
}

static bool write_pid_file(const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return false;
    fprintf(f, "%ld\n", (long)getpid());
    return fclose(f) == 0;
}

/* Everything one phigate process runs; any member may be NULL. */
typedef struct runtime {
    config *cfg;
    struct event_base *base;
    audit_log *audit;
    approvals *approvals;
    admin_http *admin;
    oidc *oidc;
    pg_server *pg;
    my_server *my;
} runtime;

/* Sessions first (their last records go to the audit log), then the log. */
static void runtime_stop(runtime *rt)
{
    if (rt->pg)
        pg_server_shutdown(rt->pg);
    if (rt->my)
        my_server_shutdown(rt->my);
    if (rt->audit)
        audit_log_close(rt->audit);
    pg_server_free(rt->pg);
    my_server_free(rt->my);
    admin_http_free(rt->admin);
    oidc_free(rt->oidc);
    if (rt->approvals)
        approvals_free(rt->approvals);
    if (rt->base)
        event_base_free(rt->base);
    if (rt->cfg && rt->cfg->pid_file)
        unlink(rt->cfg->pid_file);
    config_free(rt->cfg);
}

static bool start_failed(const char *what, const char *err)
{
    log_error("cannot start %s: %s", what, err);
    fprintf(stderr, "phigate: cannot start %s: %s\n", what, err);
    return false;
}

/* Open the audit log, the approvals client and admin console, and the fronts. */
static bool runtime_start(runtime *rt)
{
    char err[512];
    const config *cfg = rt->cfg;
    rt->base = event_base_new();
    if (cfg->audit_enabled && !(rt->audit = open_audit(cfg, rt->base, err, sizeof err)))
        return start_failed("without its audit log", err);
    if (!rt->audit)
        log_warn("audit log disabled by configuration (audit.enabled: false): statements are not recorded");
    if (cfg->redis_enabled) {
        approvals_opts ao;
        approvals_opts_from_config(cfg, &ao);
        if (!(rt->approvals = approvals_new(rt->base, &ao, err, sizeof err)))
            return start_failed("the approvals client", err);
    }
    if (cfg->admin_enabled) {
        admin_http_opts ho;
        admin_http_opts_from_config(cfg, &ho);
        if (!(rt->admin = admin_http_new(rt->base, &ho, rt->approvals, err, sizeof err)))
            return start_failed("the admin console", err);
    }
    if (cfg->noidc_issuers > 0 && !(rt->oidc = oidc_new(rt->base, cfg, err, sizeof err)))
        return start_failed("token login (oidc)", err);
    if (!(rt->pg = pg_server_new(rt->base, cfg, rt->audit, err, sizeof err)))
        return start_failed("pgfront", err);
    pg_server_set_approvals(rt->pg, rt->approvals);
    pg_server_set_oidc(rt->pg, rt->oidc);
    if (cfg->my_enabled && !(rt->my = my_server_new(rt->base, cfg, rt->audit, err, sizeof err)))
        return start_failed("myfront", err);
    if (rt->my)
        my_server_set_oidc(rt->my, rt->oidc);
    if (cfg->pid_file && !write_pid_file(cfg->pid_file))
        log_warn("cannot write pid file %s: %s", cfg->pid_file, strerror(errno));
    return true;
}

static int run(const char *path)
{
    static char errors[65536];
    runtime rt = {0};
    rt.cfg = config_load(path, errors, sizeof errors);
    if (!rt.cfg) {
        fputs(errors, stderr);
        fprintf(stderr, "phigate: not starting, the configuration has errors\n");
        return 1;
    }
    log_set_level((log_level)rt.cfg->log_level);
    if (rt.cfg->log_file && !log_open_file(rt.cfg->log_file)) {
        fprintf(stderr, "phigate: cannot open log file %s: %s\n", rt.cfg->log_file, strerror(errno));
        config_free(rt.cfg);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    if (!runtime_start(&rt)) {
        runtime_stop(&rt);
        return 1;
    }
    struct event *sigterm = evsignal_new(rt.base, SIGTERM, on_stop_signal, rt.base);
    struct event *sigint = evsignal_new(rt.base, SIGINT, on_stop_signal, rt.base);
    struct event *sighup = evsignal_new(rt.base, SIGHUP, on_hup, rt.base);
    event_add(sigterm, NULL), event_add(sigint, NULL), event_add(sighup, NULL);
    log_info("phigate %s started (pid %ld)", PHIGATE_VERSION, (long)getpid());
    event_base_dispatch(rt.base);
    log_info("phigate stopped with %zu sessions open",
             pg_server_session_count(rt.pg) + (rt.my ? my_server_session_count(rt.my) : 0));
    event_free(sigterm), event_free(sigint), event_free(sighup);
    runtime_stop(&rt);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", required_argument, NULL, 'C'},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'C':
            return check_config(optarg);
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("phigate %s\n", PHIGATE_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!config_path || optind != argc) {
        usage(stderr);
        return 2;
    }
    return run(config_path);
}
