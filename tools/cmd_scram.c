/* phigatectl scram-verifier: the salted verifier that goes into identities.<name>.scram. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "gate/scram.h"
#include "tools/phigatectl.h"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: phigatectl scram-verifier [--iterations N] [--password-file FILE | --stdin]\n"
            "\n"
            "Prints a SCRAM-SHA-256 verifier for a password (salted; the password itself is not stored).\n"
            "Without --password-file or --stdin the password is asked for on the terminal.\n");
}

static bool read_line(FILE *f, char *buf, size_t len)
{
    if (!fgets(buf, (int)len, f))
        return false;
    buf[strcspn(buf, "\r\n")] = '\0';
    return buf[0] != '\0';
}

static bool ask_password(char *buf, size_t len)
{
    struct termios old, quiet;
    bool tty = tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
        fprintf(stderr, "Password: ");
    }
    bool ok = read_line(stdin, buf, len);
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    return ok;
}

int cmd_scram_verifier(int argc, char **argv)
{
    int iterations = SCRAM_DEFAULT_ITERATIONS;
    const char *file = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--iterations") && i + 1 < argc) {
            iterations = atoi(argv[++i]);
        } else if (!strcmp(argv[i], "--password-file") && i + 1 < argc) {
            file = argv[++i];
        } else if (!strcmp(argv[i], "--stdin")) {
            file = "-";
        } else {
            fprintf(stderr, "phigatectl scram-verifier: unknown option %s\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    if (iterations < 4096 || iterations > 10000000) {
        fprintf(stderr, "phigatectl scram-verifier: --iterations must be 4096..10000000\n");
        return 2;
    }
    char password[1024];
    bool ok;
    if (file && strcmp(file, "-") != 0) {
        FILE *f = fopen(file, "r");
        if (!f) {
            perror(file);
            return 1;
        }
        ok = read_line(f, password, sizeof password);
        fclose(f);
    } else if (file) {
        ok = read_line(stdin, password, sizeof password);
    } else {
        ok = ask_password(password, sizeof password);
    }
    if (!ok) {
        fprintf(stderr, "phigatectl scram-verifier: empty password\n");
        return 1;
    }
    char verifier[256];
    ok = scram_verifier_make(password, iterations, verifier, sizeof verifier);
    memset(password, 0, sizeof password);
    if (!ok) {
        fprintf(stderr, "phigatectl scram-verifier: failed to compute the verifier\n");
        return 1;
    }
    printf("%s\n", verifier);
    return 0;
}
