/* cmd_embed.c — `d2v embed`: frozen features of a dataset as .npy. */
#include "args.h"
#include "cli.h"
#include "probe.h"
#include "setup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: d2v embed --checkpoint C.safetensors --data PATH --out FEATURES.npy [--pool mean|cls|topk]\n"
                 "                 [--batch N]\n"
                 "\n"
                 "Runs every file under PATH (for text: every line of label<TAB>text files)\n"
                 "through the pretrained encoder (evaluation transform, no masking, no dropout)\n"
                 "and writes one float32 row per item to FEATURES.npy, shape (n, D). Alongside,\n"
                 "FEATURES.npy.tsv lists row, label and path (text: FILE:LINE) per line.\n"
                 "  --pool mean   mean over the last layer's content positions (default; text:\n"
                 "                the tokens other than <s>, </s> and padding)\n"
                 "  --pool cls    the CLS position (image)\n"
                 "  --pool topk   the teacher's averaged normalised top-K layers (the targets)\n"
                 "  --batch N     items per forward pass (default 64)\n");
}

int cmd_embed(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    Option o[] = {{"--checkpoint", 1, NULL}, {"--data", 1, NULL}, {"--out", 1, NULL}, {"--pool", 1, "mean"},
                  {"--batch", 1, "64"}};
    const int n = sizeof o / sizeof *o;
    if (parse_options("embed", argc, argv, o, n) < 0)
        return 2;
    const char *checkpoint = option(o, n, "--checkpoint"), *data = option(o, n, "--data"), *out = option(o, n, "--out");
    Pool pool;
    int batch = atoi(option(o, n, "--batch"));
    if (!checkpoint || !data || !out || pool_parse(option(o, n, "--pool"), &pool) < 0 || batch < 1) {
        usage(stderr);
        return 2;
    }
    Setup s;
    Model m;
    FeatureSet f = {0};
    D2vError err;
    int rc = setup_model(&s, &m, checkpoint, NULL, batch, &err) < 0 ||
             setup_features(&s, &m, data, 1, pool, batch, &f, &err) < 0 ||
             npy_write_f32(out, f.features, f.n, f.dim, &err) < 0 ? -1 : 0;
    if (rc == 0) {
        char tsv[4200];
        snprintf(tsv, sizeof tsv, "%s.tsv", out);
        FILE *t = fopen(tsv, "w");
        if (!t) {
            rc = d2v_fail(&err, "cannot write %s: %s", tsv, strerror(errno));
        } else {
            fprintf(t, "row\tlabel\tpath\n");
            for (int i = 0; i < f.n; i++)
                fprintf(t, "%d\t%s\t%s\n", i, f.labels[i] >= 0 ? f.class_names[f.labels[i]] : "",
                        s.mod->item_name(f.dataset, i));
            if (fclose(t) != 0)
                rc = d2v_fail(&err, "writing %s: %s", tsv, strerror(errno));
        }
    }
    if (rc == 0)
        fprintf(stderr, "d2v embed: wrote %s (%d x %d) and %s.tsv\n", out, f.n, f.dim, out);
    feature_set_free(&f);
    model_free(&m);
    setup_free(&s);
    return rc < 0 ? fail("embed", &err) : 0;
}
