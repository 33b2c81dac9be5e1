#include "args.h"

#include <stdio.h>
#include <string.h>

int parse_options(const char *command, int argc, char **argv, Option *opts, int n_opts)
{
    for (int i = 0; i < argc; i++) {
        int known = 0;
        for (int j = 0; j < n_opts && !known; j++) {
            if (strcmp(argv[i], opts[j].name) != 0)
                continue;
            known = 1;
            if (!opts[j].takes_value) {
                opts[j].value = "1";
            } else if (i + 1 < argc) {
                opts[j].value = argv[++i];
            } else {
                fprintf(stderr, "d2v %s: %s needs a value\n", command, argv[i]);
                return -1;
            }
        }
        if (!known) {
            fprintf(stderr, "d2v %s: unexpected argument '%s' (see d2v %s --help)\n", command, argv[i], command);
            return -1;
        }
    }
    return 0;
}

const char *option(const Option *opts, int n_opts, const char *name)
{
    for (int j = 0; j < n_opts; j++)
        if (strcmp(opts[j].name, name) == 0)
            return opts[j].value;
    return NULL;
}
