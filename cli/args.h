/* args.h — the small option parser the subcommands share: --name VALUE
 * options and flags, each looked up by name; anything unrecognised is an
 * error. */
#ifndef D2V_CLI_ARGS_H
#define D2V_CLI_ARGS_H

typedef struct {
    const char *name;  /* "--checkpoint" */
    int takes_value;
    const char *value; /* the value, or "1" for a flag that was given */
} Option;

/* Fills the options' values from argv. Returns 0, or prints an error
 * naming the command and returns -1. */
int parse_options(const char *command, int argc, char **argv, Option *opts, int n_opts);
const char *option(const Option *opts, int n_opts, const char *name);

#endif
