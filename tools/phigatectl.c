/*
 * phigatectl: phigate's command-line tool.  One binary, one subcommand per
 * job, each with its own --help.
 */
#include <stdio.h>
#include <string.h>

#include "tools/phigatectl.h"

typedef struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} command;

static const command commands[] = {
    {"scram-verifier", cmd_scram_verifier, "make a SCRAM-SHA-256 verifier for an identity's password"},
    {"audit", cmd_audit, "verify, replay, export and list the audit log; make its signing key"},
    {"approvals", cmd_approvals, "list, show, approve and deny statements held for approval"},
    {"reload", cmd_reload, "make a running phigate reload its configuration, rules and secrets"},
};

static void usage(FILE *out)
{
    fprintf(out, "Usage: phigatectl COMMAND [ARGS...]\n\nCommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-16s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nphigatectl COMMAND --help shows a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "phigatectl: unknown command \"%s\"\n\n", argv[1]);
    usage(stderr);
    return 2;
}
