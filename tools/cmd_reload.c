/*
 * phigatectl reload: make a running phigate re-read its configuration, masking
 * rules and secrets, and report the outcome.
 *
 * It sends SIGHUP to the pid in phigate's pid file and waits for the daemon to
 * write "<pid_file>.reload" with the next attempt number.  Only a user allowed
 * to signal phigate's process (its own user, or root) can reload it: no network
 * listener and no extra credential is involved.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "gate/reload.h"
#include "tools/phigatectl.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: phigatectl reload --pid-file FILE [--timeout SECONDS]\n"
            "\n"
            "Reloads a running phigate (the process in FILE, phigate.pid_file of its configuration):\n"
            "it re-reads the configuration, masking rules and credential files, and switches new\n"
            "sessions to them only when all of it is valid; open sessions keep their configuration.\n"
            "Prints the outcome (the new generation and config digest, or every error) from\n"
            "FILE.reload.  Exit status: 0 reloaded, 1 refused (the old configuration keeps serving),\n"
            "2 usage error, no such process, or no answer within the timeout (default 60 s).\n");
}

static pid_t read_pid(const char *path)
{
    FILE *f = fopen(path, "r");
    long pid = 0;
    if (!f) {
        fprintf(stderr, "phigatectl reload: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    if (fscanf(f, "%ld", &pid) != 1 || pid <= 1) {
        fprintf(stderr, "phigatectl reload: %s does not hold a process id\n", path);
        pid = -1;
    }
    fclose(f);
    return (pid_t)pid;
}

/* A stale pid file could name some other process now: signal only a phigate. */
static bool is_phigate(pid_t pid)
{
    char path[64], comm[64] = "";
    snprintf(path, sizeof path, "/proc/%ld/comm", (long)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    bool ok = fgets(comm, sizeof comm, f) && strncmp(comm, "phigate", 7) == 0 && strncmp(comm, "phigatectl", 10);
    fclose(f);
    return ok;
}

static int print_status(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "phigatectl reload: cannot read %s: %s\n", path, strerror(errno));
        return 2;
    }
    char line[4096];
    bool ok = false;
    while (fgets(line, sizeof line, f)) {
        if (strcmp(line, "result ok\n") == 0)
            ok = true;
        if (strncmp(line, "error ", 6) == 0)
            fputs(line + 6, stderr);
        else
            fputs(line, stdout);
    }
    fclose(f);
    fprintf(ok ? stdout : stderr, "%s\n", ok ? "phigate reloaded its configuration"
                                            : "phigate refused the new configuration; the old one keeps serving");
    return ok ? 0 : 1;
}

int cmd_reload(int argc, char **argv)
{
    const char *pid_file = NULL;
    int timeout_s = 60;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--pid-file") && i + 1 < argc) {
            pid_file = argv[++i];
        } else if (!strcmp(argv[i], "--timeout") && i + 1 < argc) {
            timeout_s = atoi(argv[++i]);
        } else {
            usage(stderr);
            return 2;
        }
    }
    if (!pid_file || timeout_s <= 0) {
        usage(stderr);
        return 2;
    }
    pid_t pid = read_pid(pid_file);
    if (pid < 0)
        return 2;
    if (!is_phigate(pid)) {
        fprintf(stderr, "phigatectl reload: process %ld from %s is not a running phigate\n", (long)pid, pid_file);
        return 2;
    }
    char status[4200];
    reload_status_path(pid_file, status, sizeof status);
    uint64_t before = reload_status_attempt(status);
    if (kill(pid, SIGHUP) != 0) {
        fprintf(stderr, "phigatectl reload: cannot signal process %ld: %s\n", (long)pid, strerror(errno));
        return 2;
    }
    struct timespec step = {0, 50 * 1000 * 1000};
    for (int waited = 0; waited < timeout_s * 20; waited++) {
        if (reload_status_attempt(status) > before)
            return print_status(status);
        nanosleep(&step, NULL);
    }
    fprintf(stderr, "phigatectl reload: no answer from phigate (pid %ld) within %d s in %s\n", (long)pid, timeout_s,
            status);
    return 2;
}
