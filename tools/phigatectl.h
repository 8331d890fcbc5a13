/* phigatectl subcommands: each is int cmd_<name>(argc, argv) with argv[0] = the command name. */
#ifndef PHIGATE_PHIGATECTL_H
#define PHIGATE_PHIGATECTL_H

int cmd_scram_verifier(int argc, char **argv);
int cmd_audit(int argc, char **argv);
int cmd_approvals(int argc, char **argv);
int cmd_reload(int argc, char **argv);

#endif
