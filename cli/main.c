/* main.c — `d2v <command> ...`: dispatch to the subcommands. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command commands[] = {
    {"pretrain", cmd_pretrain, "pretrain an encoder with data2vec (d2v pretrain CONFIG --data PATH --run RUNDIR)"},
    {"bench", cmd_bench, "time full training steps on synthetic inputs: step time, phases, GFLOP/s, MFU, RSS"},
    {"embed", cmd_embed, "write frozen features of a dataset to .npy"},
    {"eval", cmd_eval, "k-NN or linear-probe accuracy of frozen features (eval knn|linear)"},
    {"tokenizer", cmd_tokenizer, "train a byte-level BPE tokenizer on text, or encode/decode with one"},
    {"show", cmd_show, "pictures of one input: the mask, the teacher's targets, the last layer's attention"},
    {"plot", cmd_plot, "a run's log.jsonl as curves: loss, target_var, pred_var, frontend_var, lr, tau"},
    {"compare", cmd_compare, "the same objective on several modalities for the same time: one side-by-side report"},
    {"inspect", cmd_inspect, "list the tensors, metadata and embedded config of a .safetensors file"},
    {"version", cmd_version, "print the version, BLAS library, CPU core type and thread count"},
};

static void usage(FILE *out)
{
    fprintf(out,
            "d2v — data2vec pretraining for speech, images and text in one C program\n"
            "\n"
            "usage: d2v <command> [options]   (d2v <command> --help for its options)\n"
            "\n"
            "commands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
}

const char *program_path = "d2v";

int wants_help(int argc, char **argv)
{
    for (int i = 0; i < argc; i++)
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            return 1;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 0 && argv[0] && argv[0][0])
        program_path = argv[0];
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0)
        return cmd_version(0, argv + 2);
    for (size_t i = 0; i < sizeof commands / sizeof *commands; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 2, argv + 2);
    fprintf(stderr, "d2v: unknown command '%s' (run 'd2v --help' for the list)\n", argv[1]);
    return 2;
}
