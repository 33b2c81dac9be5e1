/* cmd_compare.c — placeholder, replaced below. */
#include "cli.h"
#include <stdio.h>
int cmd_compare(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "d2v compare: not yet\n"); return 2; }
