/* cmd_eval.c — `d2v eval knn|linear`: how good are the frozen features? */
#include "args.h"
#include "cli.h"
#include "probe.h"
#include "setup.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: d2v eval knn|linear (--checkpoint C.safetensors | --random-init CONFIG)\n"
            "                --train DIR --test DIR [--pool mean|cls|topk] [--k 20] [--batch N]\n"
            "\n"
            "Embeds a labeled train and test set (class-named subdirectories; for text,\n"
            "label<TAB>text files) with the frozen\n"
            "encoder and reports top-1 / top-5 accuracy of\n"
            "  knn     cosine k-NN, votes weighted by exp(similarity / 0.07) (DINO's protocol)\n"
            "  linear  a linear probe: logistic regression, weight decay chosen on a held-out\n"
            "          fifth of the train split\n"
            "--random-init CONFIG evaluates the same architecture untrained: the baseline.\n");
}

int cmd_eval(int argc, char **argv)
{
    if (wants_help(argc, argv) || argc < 1 || (strcmp(argv[0], "knn") != 0 && strcmp(argv[0], "linear") != 0)) {
        usage(argc >= 1 && wants_help(argc, argv) ? stdout : stderr);
        return wants_help(argc, argv) ? 0 : 2;
    }
    const int knn = strcmp(argv[0], "knn") == 0;
    Option o[] = {{"--checkpoint", 1, NULL}, {"--random-init", 1, NULL}, {"--train", 1, NULL}, {"--test", 1, NULL},
                  {"--pool", 1, "mean"},       {"--k", 1, "20"},           {"--batch", 1, "64"}};
    const int n = sizeof o / sizeof *o;
    if (parse_options("eval", argc - 1, argv + 1, o, n) < 0)
        return 2;
    const char *checkpoint = option(o, n, "--checkpoint"), *random_init = option(o, n, "--random-init");
    const char *train = option(o, n, "--train"), *test = option(o, n, "--test");
    Pool pool;
    int k = atoi(option(o, n, "--k")), batch = atoi(option(o, n, "--batch"));
    if (!!checkpoint == !!random_init || !train || !test || pool_parse(option(o, n, "--pool"), &pool) < 0 || k < 1 ||
        batch < 1) {
        fprintf(stderr, "d2v eval: give exactly one of --checkpoint and --random-init, and --train and --test\n");
        usage(stderr);
        return 2;
    }
    Setup s;
    Model m;
    EvalSets sets = {0};
    D2vError err;
    ProbeResult r = {0, 0};
    double decay = 0;
    /* The same calls as the periodic k-NN of d2v pretrain (eval.every), so
     * both print the same number for the same checkpoint. */
    int rc = setup_model(&s, &m, checkpoint, random_init, batch, &err) < 0 ||
             eval_sets_open(&sets, s.mod, s.mcfg, train, test, m.d2v.encoder.dim, &err) < 0 ? -1 : 0;
    const FeatureSet *tr = &sets.train, *te = &sets.test;
    if (rc == 0 && knn)
        rc = eval_knn(&sets, &m, s.mcfg, pool, batch, k, &r, &err);
    if (rc == 0 && !knn) {
        LinearProbeOptions lo = {0.2, 300, 0, 0};
        rc = eval_sets_embed(&sets, &m, s.mcfg, pool, batch, &err) < 0 ||
             linear_probe(tr->features, tr->labels, tr->n, te->features, te->labels, te->n, tr->dim, tr->n_classes,
                          &lo, &r, &decay, &err) < 0 ? -1 : 0;
    }
    if (rc == 0) {
        printf("%s probe (%s, pool %s): top1 %.4f  top5 %.4f  (train %d, test %d, %d classes", knn ? "k-NN" : "linear",
               checkpoint ? checkpoint : "random init", option(o, n, "--pool"), r.top1, r.top5, tr->n, te->n,
               tr->n_classes);
        if (knn)
            printf(", k %d", k);
        else
            printf(", weight decay %g", decay);
        printf(")\n");
        printf("d2v eval %s top1=%.4f top5=%.4f\n", argv[0], r.top1, r.top5);
    }
    eval_sets_close(&sets);
    model_free(&m);
    setup_free(&s);
    return rc < 0 ? fail("eval", &err) : 0;
}
