/*
 * phigate: the daemon.  Loads the configuration, starts the fronts on one
 * libevent loop, and runs until SIGTERM/SIGINT.  SIGHUP reloads the
 * configuration: the new one is built whole off to the side and serves new
 * sessions only when all of it is good; open sessions keep the one they
 * started with (their front "generation" drains and is freed when empty).
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
#include "gate/reload.h"
#include "gate/tls.h"
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
            "Signals: SIGTERM/SIGINT stop it; SIGHUP reloads the configuration, masking rules and\n"
            "secrets without dropping sessions (`phigatectl reload --pid-file FILE` does it and reports errors).\n");
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
    /* What a start or a reload would load next: the masking rules and the TLS files. */
    char err[512];
    SSL_CTX *tls = NULL;
    bool rules_ok = reload_check_rules(cfg, err, sizeof err);
    if (!rules_ok)
        fprintf(stderr, "%s: masking rules: %s\n", path, err);
    bool tls_ok = tls_front_ctx(cfg, &tls, err, sizeof err);
    if (!tls_ok)
        fprintf(stderr, "%s: tls: %s\n", path, err);
    bool ok = rules_ok && tls_ok;
    if (tls)
        SSL_CTX_free(tls);
    if (ok)
        printf("%s: configuration is valid (%zu upstreams, %zu roles, %zu identities)\n", path, cfg->nupstreams,
               cfg->nroles, cfg->nidentities);
    else
        fprintf(stderr, "%s: configuration is NOT valid\n", path);
    config_free(cfg);
    return ok ? 0 : 1;
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info("signal %d: shutting down", (int)sig);
    event_base_loopexit(arg, NULL);
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

/* The fronts of an older configuration, still serving the sessions they have. */
typedef struct draining {
    config *cfg;
    pg_server *pg;
    my_server *my;
    oidc *oidc; /* its issuers' keys: its identities point into its cfg */
    struct draining *next;
} draining;

/* Everything one phigate process runs; any member may be NULL. */
typedef struct runtime {
    const char *config_path;
    config *cfg;      /* the configuration new sessions get */
    config *boot_cfg; /* the first one: the audit log, Redis client and console were opened with it */
    struct event_base *base;
    audit_log *audit;
    approvals *approvals;
    admin_http *admin;
    oidc *oidc;
    pg_server *pg;
    my_server *my;
    draining *older;
    struct event *drain_timer;
    uint64_t generation;      /* of cfg: 1 = the configuration phigate started with */
    uint64_t reload_attempts; /* SIGHUPs so far (the status file's attempt number) */
} runtime;

static size_t sessions_of(const pg_server *pg, const my_server *my)
{
    return (pg ? pg_server_session_count(pg) : 0) + (my ? my_server_session_count(my) : 0);
}

static void free_config(runtime *rt, config *cfg)
{
    if (cfg != rt->boot_cfg)
        config_free(cfg);
}

/* Sessions first (their last records go to the audit log), then the log. */
static void runtime_stop(runtime *rt)
{
    for (draining *d = rt->older; d; d = d->next) {
        pg_server_shutdown(d->pg);
        if (d->my)
            my_server_shutdown(d->my);
    }
    if (rt->pg)
        pg_server_shutdown(rt->pg);
    if (rt->my)
        my_server_shutdown(rt->my);
    if (rt->audit)
        audit_log_close(rt->audit);
    while (rt->older) {
        draining *d = rt->older;
        rt->older = d->next;
        pg_server_free(d->pg);
        my_server_free(d->my);
        oidc_free(d->oidc);
        free_config(rt, d->cfg);
        free(d);
    }
    pg_server_free(rt->pg);
    my_server_free(rt->my);
    admin_http_free(rt->admin);
    oidc_free(rt->oidc);
    if (rt->approvals)
        approvals_free(rt->approvals);
    if (rt->drain_timer)
        event_free(rt->drain_timer);
    if (rt->base)
        event_base_free(rt->base);
    if (rt->boot_cfg && rt->boot_cfg->pid_file)
        unlink(rt->boot_cfg->pid_file);
    if (rt->cfg != rt->boot_cfg)
        config_free(rt->cfg);
    config_free(rt->boot_cfg);
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
    if (rt->my) {
        my_server_set_approvals(rt->my, rt->approvals);
        my_server_set_oidc(rt->my, rt->oidc);
    }
    if (cfg->pid_file && !write_pid_file(cfg->pid_file))
        log_warn("cannot write pid file %s: %s", cfg->pid_file, strerror(errno));
    rt->generation = 1;
    if (cfg->pid_file) {
        /* Attempt numbers go on from the last run's, so a waiting phigatectl sees a new one. */
        char status[4200];
        reload_status_path(cfg->pid_file, status, sizeof status);
        rt->reload_attempts = reload_status_attempt(status);
    }
    return true;
}

/* ---- reload ------------------------------------------------------------------------ */

/* Free the fronts of older configurations whose last session has ended. */
static void on_drain_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    runtime *rt = arg;
    for (draining **p = &rt->older; *p;) {
        draining *d = *p;
        if (sessions_of(d->pg, d->my) > 0) {
            p = &d->next;
            continue;
        }
        *p = d->next;
        pg_server_free(d->pg);
        my_server_free(d->my);
        oidc_free(d->oidc);
        free_config(rt, d->cfg);
        free(d);
        log_info("an older configuration's last session ended: freed it");
    }
    if (!rt->older)
        event_del(rt->drain_timer);
}

static void append_error(char *errors, size_t len, const char *path, const char *err)
{
    size_t used = strlen(errors);
    if (used < len)
        snprintf(errors + used, len - used, "%s: %s\n", path, err);
}

static void record_reload(runtime *rt, const audit_reload_info *info, const char *errors)
{
    if (rt->audit)
        audit_log_append(rt->audit, audit_rec_config_reload(info), NULL, NULL);
    if (rt->boot_cfg->pid_file &&
        !reload_write_status(rt->boot_cfg->pid_file, rt->reload_attempts, info->ok, rt->generation,
                             info->config_sha256, errors))
        log_warn("cannot write the reload status next to %s: %s", rt->boot_cfg->pid_file, strerror(errno));
}

/* Every error is logged, counted in the audit record and listed in the status file. */
static void reload_refused(runtime *rt, const char *errors)
{
    uint64_t count = 0;
    char first[512] = "";
    for (const char *p = errors; *p;) {
        size_t n = strcspn(p, "\n");
        log_error("reload refused: %.*s", (int)n, p);
        if (count++ == 0)
            snprintf(first, sizeof first, "%.*s", (int)n, p);
        p += n + (p[n] == '\n');
    }
    log_error("reload refused (%llu errors): generation %llu keeps serving", (unsigned long long)count,
              (unsigned long long)rt->generation);
    audit_reload_info info = {false, rt->config_path, rt->generation, NULL, count, first};
    record_reload(rt, &info, errors);
}

/* Swap the prepared fronts in: the old ones keep their sessions and drain. */
static void reload_commit(runtime *rt, config *cfg, pg_server *pg, my_server *my, oidc *o)
{
    draining *d = calloc(1, sizeof *d);
    *d = (draining){rt->cfg, rt->pg, rt->my, rt->oidc, rt->older};
    rt->older = d;
    pg_server_take_over(pg, rt->pg);
    pg_server_set_oidc(pg, o);
    if (my) {
        my_server_take_over(my, rt->my);
        my_server_set_oidc(my, o);
    }
    rt->cfg = cfg, rt->pg = pg, rt->my = my, rt->oidc = o;
    rt->generation++;
    log_set_level((log_level)cfg->log_level);
    char sha[65];
    if (!reload_config_digest(cfg, sha))
        snprintf(sha, sizeof sha, "unavailable");
    size_t open = sessions_of(d->pg, d->my);
    log_info("configuration reloaded: generation %llu (sha256 %s) serves new sessions; %zu open sessions keep "
             "the previous one", (unsigned long long)rt->generation, sha, open);
    audit_reload_info info = {true, rt->config_path, rt->generation, sha, 0, NULL};
    record_reload(rt, &info, NULL);
    struct timeval second = {1, 0};
    if (!event_pending(rt->drain_timer, EV_TIMEOUT, NULL)) /* re-adding would postpone it under a reload storm */
        event_add(rt->drain_timer, &second);
}

/* Build the complete new runtime (config, secrets, TLS, engines) off to the
 * side; anything wrong and the running one stays, with every error reported. */
static void reload(runtime *rt)
{
    static char errors[65536];
    char err[512];
    rt->reload_attempts++;
    log_info("SIGHUP: reloading the configuration from %s", rt->config_path);
    config *cfg = config_load(rt->config_path, errors, sizeof errors);
    pg_server *pg = NULL;
    my_server *my = NULL;
    oidc *o = NULL;
    bool built = false;
    if (cfg && reload_restart_changes(rt->cfg, cfg, errors, sizeof errors) == 0) {
        /* Token issuers are rebuilt too: keys refetched, identities of cfg point into cfg. */
        if (!reload_check_rules(cfg, err, sizeof err))
            append_error(errors, sizeof errors, cfg->path, err);
        else if (cfg->noidc_issuers > 0 && !(o = oidc_new(rt->base, cfg, err, sizeof err)))
            append_error(errors, sizeof errors, cfg->path, err);
        else if (!(pg = pg_server_prepare(rt->base, cfg, rt->audit, err, sizeof err)))
            append_error(errors, sizeof errors, cfg->path, err);
        else if (cfg->my_enabled && !(my = my_server_prepare(rt->base, cfg, rt->audit, err, sizeof err)))
            append_error(errors, sizeof errors, cfg->path, err);
        else
            built = true;
    }
    if (!built) {
        pg_server_free(pg);
        oidc_free(o);
        config_free(cfg);
        reload_refused(rt, errors);
        return;
    }
    reload_commit(rt, cfg, pg, my, o);
}

static void on_hup(evutil_socket_t sig, short what, void *arg)
{
    (void)sig, (void)what;
    reload(arg);
}

static int run(const char *path)
{
    static char errors[65536];
    runtime rt = {0};
    rt.config_path = path;
    rt.cfg = rt.boot_cfg = config_load(path, errors, sizeof errors);
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
    signal(SIGHUP, SIG_IGN); /* a reload asked for before the loop runs must not kill us */
    if (!runtime_start(&rt)) {
        runtime_stop(&rt);
        return 1;
    }
    struct event *sigterm = evsignal_new(rt.base, SIGTERM, on_stop_signal, rt.base);
    struct event *sigint = evsignal_new(rt.base, SIGINT, on_stop_signal, rt.base);
    struct event *sighup = evsignal_new(rt.base, SIGHUP, on_hup, &rt);
    rt.drain_timer = event_new(rt.base, -1, EV_PERSIST, on_drain_timer, &rt);
    event_add(sigterm, NULL), event_add(sigint, NULL), event_add(sighup, NULL);
    log_info("phigate %s started (pid %ld)", PHIGATE_VERSION, (long)getpid());
    event_base_dispatch(rt.base);
    size_t open = sessions_of(rt.pg, rt.my);
    for (draining *d = rt.older; d; d = d->next)
        open += sessions_of(d->pg, d->my);
    log_info("phigate stopped with %zu sessions open", open);
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
