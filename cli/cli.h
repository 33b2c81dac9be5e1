/* cli.h — the d2v subcommands. Each takes the arguments after its name and
 * returns the process exit status; only cli/ prints errors and exits. */
#ifndef D2V_CLI_H
#define D2V_CLI_H

int cmd_version(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_pretrain(int argc, char **argv);
int cmd_embed(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_tokenizer(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_plot(int argc, char **argv);
int cmd_show(int argc, char **argv);
int cmd_compare(int argc, char **argv);

/* argv[0] as the user typed it, for commands printed back to them. */
extern const char *program_path;

/* True when argv holds -h or --help. */
int wants_help(int argc, char **argv);

#endif
