/* crosscheck_export.c — runs S = 3 full training steps of a small model in C
 * and writes everything an independent implementation needs to redo them
 * (inputs, initial weights, learning rates, EMA decays) together with what
 * C computed (targets, predictions, losses, step-0 gradients, final student
 * and teacher weights) into one safetensors file per case. The PyTorch side
 * (reference/crosscheck.py) recomputes and compares.
 *
 * usage: crosscheck_export OUTDIR */
#include "data2vec.h"
#include "ema.h"
#include "fixture.h"
#include "optim.h"
#include "rng.h"
#include "safetensors.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { DIM = 32, LAYERS = 3, HEADS = 2, FFN = 64, TOP_K = 2, BATCH = 3, POS = 10, STEPS = 3 };

static const ObjectiveCase cases[] = {
    {"post_ln", "instance", "none", "ffn", "linear", 0, 0},   /* speech */
    {"pre_ln", "layer", "layer", "block", "linear", 2, 0},    /* image */
    {"post_ln", "layer", "none", "ffn", "mlp", 4, 0},         /* text */
    {"pre_ln", "none", "instance", "ffn", "mlp", 0.5, 0},
    {"post_ln", "none", "layer", "block", "linear", 1, 0},
    {"pre_ln", "instance", "instance", "block", "mlp", 0, 0},
};

/* Copies of buffers that keep changing, so the writer can point at them. */
typedef struct {
    void *blocks[512];
    int n;
} Keep;

static void *keep(Keep *k, const void *src, size_t bytes)
{
    void *p = malloc(bytes);
    memcpy(p, src, bytes);
    k->blocks[k->n++] = p;
    return p;
}

static int add_params(StWriter *w, Keep *k, const ParamStore *ps, const real *buffer, const char *prefix,
                      int teacher_only, D2vError *err)
{
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->params[i];
        if (teacher_only && !p->in_teacher)
            continue;
        char name[160];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        char *stored = keep(k, name, strlen(name) + 1);
        if (st_writer_add(w, stored, ST_F32, p->ndim, p->shape, keep(k, buffer + p->offset, p->numel * sizeof(real)),
                          err) < 0)
            return -1;
    }
    return 0;
}

static int meta_num(StWriter *w, const char *key, double v, D2vError *err)
{
    char text[64];
    snprintf(text, sizeof text, "%.17g", v);
    return st_writer_meta(w, key, text, err);
}

static int export_case(const ObjectiveCase *oc, int index, const char *outdir, D2vError *err)
{
    D2vConfig cfg = fixture_config(*oc, DIM, LAYERS, HEADS, FFN, TOP_K);
    cfg.model.init_std = 0.1;
    Data2vec model;
    ParamStore ps = {0};
    const int64_t emb_shape[1] = {DIM};
    if (d2v_register(&model, &ps, &cfg, err) < 0 ||
        params_add(&ps, "mask_emb", PARAM_EMBED, 0, INIT_NORMAL, 1.0f, 1, emb_shape, err) < 0 ||
        params_alloc(&ps, err) < 0)
        return -1;
    d2v_bind(&model, &ps);
    const size_t emb = ps.params[params_find(&ps, "mask_emb")].offset;
    Rng rng;
    rng_init(&rng, 1000 + (uint64_t)index, 0);
    params_init(&ps, &rng);
    /* Norm gains of 1 and zero biases would hide mistakes; a teacher equal
     * to the student would hide which weights the targets come from. */
    for (size_t i = 0; i < ps.numel; i++)
        ps.value[i] += 0.05f * rng_normal(&rng);
    for (size_t i = 0; i < ps.teacher_numel; i++)
        ps.teacher[i] = ps.value[i] + 0.05f * rng_normal(&rng);

    Arena measure = {0}, arena = {0};
    Data2vecActs acts;
    d2v_layout(&acts, &measure, &model, BATCH, POS, 64);
    if (arena_alloc(&arena, measure.used, err) < 0)
        return -1;
    d2v_layout(&acts, &arena, &model, BATCH, POS, 64);

    StWriter w;
    st_writer_init(&w);
    Keep k = {.n = 0};
    const int64_t xshape[3] = {BATCH, POS, DIM}, mshape[2] = {BATCH, POS}, sshape[1] = {STEPS};
    const size_t n = (size_t)BATCH * POS * DIM;
    int rc = add_params(&w, &k, &ps, ps.value, "init.", 0, err);
    rc = rc ? rc : add_params(&w, &k, &ps, ps.teacher, "init_teacher.", 1, err);

    /* The last two positions of the last sample are padding. */
    uint8_t pad[BATCH * POS] = {0};
    pad[BATCH * POS - 1] = pad[BATCH * POS - 2] = 1;
    rc = rc ? rc : st_writer_add(&w, "pad", ST_U8, 2, mshape, pad, err);

    float lr[STEPS] = {2e-3f, 1e-3f, 5e-4f}, tau[STEPS] = {0.9f, 0.95f, 0.99f};
    float loss[STEPS], target_var[STEPS], pred_var[STEPS], grad_norm[STEPS];
    const AdamW opt = {0, 0.9, 0.98, 1e-6, 0.05};
    const double clip = index % 2 ? 0.05 : 0; /* small enough that it clips */
    real *x = malloc(n * sizeof(real)), *xs = malloc(n * sizeof(real)), *d_x = malloc(n * sizeof(real));
    real *d_unused = malloc(n * sizeof(real));
    for (int s = 0; s < STEPS && rc == 0; s++) {
        uint8_t mask[BATCH * POS];
        for (size_t i = 0; i < n; i++)
            x[i] = rng_normal(&rng);
        for (int i = 0; i < BATCH * POS; i++)
            mask[i] = !pad[i] && rng_uniform(&rng) < 0.45f;
        mask[0] = 1; /* at least one loss position per step */
        char name[32];
        snprintf(name, sizeof name, "x.%d", s);
        rc = st_writer_add(&w, keep(&k, name, strlen(name) + 1), ST_F32, 3, xshape, keep(&k, x, n * sizeof(real)), err);
        snprintf(name, sizeof name, "mask.%d", s);
        rc = rc ? rc : st_writer_add(&w, keep(&k, name, strlen(name) + 1), ST_U8, 2, mshape, keep(&k, mask, sizeof mask), err);

        /* One training step as pretraining runs it: mask embedding, the
         * objective, its backward into the mask embedding, clip, AdamW, EMA. */
        StepStats stats;
        params_zero_grad(&ps);
        mask_embed_forward(xs, x, mask, ps.value + emb, BATCH * POS, DIM);
        d2v_step(&model, &ps, &acts, xs, x, mask, pad, BATCH, POS, (ForwardMode){.train = 1, .seed = 7, .step = (uint64_t)s}, d_x, &stats);
        mask_embed_backward(d_unused, ps.grad + emb, d_x, mask, BATCH * POS, DIM);
        loss[s] = (float)stats.loss;
        target_var[s] = (float)stats.target_var;
        pred_var[s] = (float)stats.pred_var;
        if (s == 0) {
            const int64_t pshape[2] = {stats.n_loss, DIM};
            size_t pbytes = (size_t)stats.n_loss * DIM * sizeof(real);
            rc = rc ? rc : st_writer_add(&w, "c.targets", ST_F32, 2, pshape, keep(&k, acts.targets, pbytes), err);
            rc = rc ? rc : st_writer_add(&w, "c.pred", ST_F32, 2, pshape, keep(&k, acts.pred, pbytes), err);
            rc = rc ? rc : add_params(&w, &k, &ps, ps.grad, "grad.", 0, err);
        }
        grad_norm[s] = (float)clip_grad_norm(&ps, clip);
        adamw_step(&ps, &opt, lr[s], s + 1);
        ema_update(&ps, tau[s]);
    }
    rc = rc ? rc : add_params(&w, &k, &ps, ps.value, "final.", 0, err);
    rc = rc ? rc : add_params(&w, &k, &ps, ps.teacher, "final_teacher.", 1, err);
    rc = rc ? rc : st_writer_add(&w, "lr", ST_F32, 1, sshape, lr, err);
    rc = rc ? rc : st_writer_add(&w, "tau", ST_F32, 1, sshape, tau, err);
    rc = rc ? rc : st_writer_add(&w, "c.loss", ST_F32, 1, sshape, loss, err);
    rc = rc ? rc : st_writer_add(&w, "c.target_var", ST_F32, 1, sshape, target_var, err);
    rc = rc ? rc : st_writer_add(&w, "c.pred_var", ST_F32, 1, sshape, pred_var, err);
    rc = rc ? rc : st_writer_add(&w, "c.grad_norm", ST_F32, 1, sshape, grad_norm, err);

    const struct { const char *key; double v; } nums[] = {
        {"dim", DIM}, {"layers", LAYERS}, {"heads", HEADS}, {"ffn", FFN}, {"top_k", TOP_K}, {"batch", BATCH},
        {"positions", POS}, {"steps", STEPS}, {"eps", cfg.model.layer_norm_eps}, {"loss_beta", oc->beta},
        {"loss_scale", model.loss_scale}, {"beta1", opt.beta1}, {"beta2", opt.beta2}, {"adam_eps", opt.eps},
        {"weight_decay", opt.weight_decay}, {"clip_norm", clip},
    };
    for (size_t i = 0; i < sizeof nums / sizeof *nums && rc == 0; i++)
        rc = meta_num(&w, nums[i].key, nums[i].v, err);
    const char *strs[][2] = {{"layout", oc->layout}, {"layer_norm", oc->layer_norm}, {"final_norm", oc->final_norm},
                             {"layer_output", oc->tap}, {"head", oc->head}};
    for (size_t i = 0; i < 5 && rc == 0; i++)
        rc = st_writer_meta(&w, strs[i][0], strs[i][1], err);
    char path[4096];
    snprintf(path, sizeof path, "%s/case%d_%s_%s_%s_%s.safetensors", outdir, index, oc->layout, oc->layer_norm,
             oc->final_norm, oc->head);
    rc = rc ? rc : st_writer_save(&w, path, err);
    if (rc == 0)
        printf("wrote %s (loss %.6f -> %.6f)\n", path, loss[0], loss[STEPS - 1]);
    st_writer_free(&w);
    for (int i = 0; i < k.n; i++)
        free(k.blocks[i]);
    free(x); free(xs); free(d_x); free(d_unused);
    arena_free(&arena);
    params_free(&ps);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: crosscheck_export OUTDIR\n");
        return 2;
    }
    mkdir(argv[1], 0755);
    D2vError err;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (export_case(&cases[i], (int)i, argv[1], &err) < 0) {
            fprintf(stderr, "crosscheck_export: %s\n", err.msg);
            return 1;
        }
    return 0;
}
