/* test_gradcheck.c — every backward against central finite differences, in
 * double precision (the core compiled with -DD2V_DOUBLE, see real.h).
 *
 * For a layer y = f(x, theta) we check the scalar s = sum(y * r) with a fixed
 * random r: the backward given d_y = r must equal (s(v+h) - s(v-h)) / 2h for
 * every input and parameter entry v (gradcheck.h). The checker itself is tested first on
 * a deliberately wrong gradient, so a broken backward cannot pass silently. */
#include "data2vec.h"
#include "fixture.h"
#include "gradcheck.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- linear ----------------------------------------------------------------------- */

typedef struct {
    int M, In, Out;
    double *x, *w, *b, *y, *r;
} LinearCase;

static double linear_scalar(void *ctx)
{
    LinearCase *c = ctx;
    linear_forward(c->y, c->x, c->w, c->b, c->M, c->In, c->Out);
    return dot(c->y, c->r, (size_t)c->M * c->Out);
}

static void test_linear(void)
{
    LinearCase c = {5, 4, 3, NULL, NULL, NULL, NULL, NULL};
    c.x = random_array(20, 1);
    c.w = random_array(12, 1);
    c.b = random_array(3, 1);
    c.y = zeros(15);
    c.r = random_array(15, 1);
    double *dx = zeros(20), *dw = zeros(12), *db = zeros(3);
    linear_scalar(&c);
    linear_backward(dx, dw, db, c.r, c.x, c.w, c.M, c.In, c.Out, 0);
    expect_grad("linear d_in", c.x, 20, dx, linear_scalar, &c);
    expect_grad("linear d_weight", c.w, 12, dw, linear_scalar, &c);
    expect_grad("linear d_bias", c.b, 3, db, linear_scalar, &c);

    /* In place (d_in over in) and split (the weight part later) give the same bits. */
    double *x2 = zeros(20), *dw2 = zeros(12), *dw3 = zeros(12), *db2 = zeros(3);
    memcpy(x2, c.x, 20 * sizeof *x2);
    linear_backward(x2, dw2, db2, c.r, x2, c.w, c.M, c.In, c.Out, 0);
    linear_backward(NULL, NULL, NULL, c.r, NULL, c.w, c.M, c.In, c.Out, 0);
    linear_backward_weight(dw3, c.r, c.x, c.M, c.In, c.Out);
    CHECK(memcmp(x2, dx, 20 * sizeof *dx) == 0 && memcmp(dw2, dw, 12 * sizeof *dw) == 0 &&
              memcmp(dw3, dw, 12 * sizeof *dw) == 0 && memcmp(db2, db, 3 * sizeof *db) == 0,
          "linear_backward in place or split differs");
    free(x2); free(dw2); free(dw3); free(db2);

    /* The checker must catch a wrong gradient: 1% off in one entry. */
    dw[5] *= 1.01;
    CHECK(grad_error(c.w, 12, dw, linear_scalar, &c) > 100 * TOLERANCE,
          "the gradient checker did not notice a 1%% error");
    free(c.x); free(c.w); free(c.b); free(c.y); free(c.r); free(dx); free(dw); free(db);
}

/* ---- layer norm, instance norm, GELU, dropout, mask embedding ------------------------------- */

typedef struct {
    int M, D, B, N, affine;
    double *x, *gamma, *beta, *y, *r, *mean, *rstd;
    uint8_t *pad;
} NormCase;

static double layernorm_scalar(void *ctx)
{
    NormCase *c = ctx;
    layernorm_forward(c->y, c->mean, c->rstd, c->x, c->affine ? c->gamma : NULL, c->beta, c->M, c->D, 1e-5);
    return dot(c->y, c->r, (size_t)c->M * c->D);
}

static double instancenorm_scalar(void *ctx)
{
    NormCase *c = ctx;
    instancenorm_forward(c->y, c->mean, c->rstd, c->x, c->pad, c->B, c->N, c->D, 1e-5);
    return dot(c->y, c->r, (size_t)c->B * c->N * c->D);
}

static void test_norms(void)
{
    NormCase c = {6, 5, 2, 3, 1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    size_t n = 30;
    c.x = random_array(n, 2);
    c.gamma = random_array(5, 1);
    c.beta = random_array(5, 1);
    c.y = zeros(n);
    c.r = random_array(n, 1);
    c.mean = zeros(30);
    c.rstd = zeros(30);
    double *dx = zeros(n), *dg = zeros(5), *dbeta = zeros(5);
    for (c.affine = 1; c.affine >= 0; c.affine--) {
        layernorm_scalar(&c);
        memset(dg, 0, 5 * sizeof(double));
        memset(dbeta, 0, 5 * sizeof(double));
        layernorm_backward(dx, c.affine ? dg : NULL, dbeta, c.r, c.x, c.mean, c.rstd, c.affine ? c.gamma : NULL,
                           c.M, c.D);
        expect_grad(c.affine ? "layer norm d_in" : "layer norm (no affine) d_in", c.x, n, dx, layernorm_scalar, &c);
        if (c.affine) {
            expect_grad("layer norm d_gamma", c.gamma, 5, dg, layernorm_scalar, &c);
            expect_grad("layer norm d_beta", c.beta, 5, dbeta, layernorm_scalar, &c);
        }
    }
    /* Instance norm over N=3 positions of B=2 samples, sample 1's last
     * position padding: it must neither count nor receive gradient. */
    uint8_t pad[6] = {0, 0, 0, 0, 0, 1};
    c.pad = pad;
    instancenorm_scalar(&c);
    instancenorm_backward(dx, c.r, c.x, c.mean, c.rstd, c.pad, c.B, c.N, c.D);
    expect_grad("instance norm d_in (with padding)", c.x, n, dx, instancenorm_scalar, &c);
    for (int d = 0; d < c.D; d++)
        CHECK(dx[5 * c.D + d] == 0 && c.y[5 * c.D + d] == 0, "instance norm touched a padded position");
    free(c.x); free(c.gamma); free(c.beta); free(c.y); free(c.r); free(c.mean); free(c.rstd);
    free(dx); free(dg); free(dbeta);
}

typedef struct {
    size_t n;
    double *x, *y, *r;
    DropoutSite site;
} PointwiseCase;

static double gelu_scalar(void *ctx)
{
    PointwiseCase *c = ctx;
    gelu_forward(c->y, c->x, c->n);
    return dot(c->y, c->r, c->n);
}

static double dropout_scalar(void *ctx)
{
    PointwiseCase *c = ctx;
    dropout_forward(c->y, c->x, c->n, c->site);
    return dot(c->y, c->r, c->n);
}

static void test_pointwise(void)
{
    PointwiseCase c = {64, random_array(64, 2), zeros(64), random_array(64, 1), {0.3, 7, 11, 2, 0, 0, NULL}};
    double *dx = zeros(64);
    gelu_scalar(&c);
    gelu_backward(dx, c.r, c.x, c.n);
    expect_grad("GELU d_in", c.x, c.n, dx, gelu_scalar, &c);
    /* The fused recompute gives both the forward's output and the same d_in. */
    double *act = zeros(64), *dx_fused = zeros(64);
    gelu_backward_recompute(act, dx_fused, c.r, c.x, c.n);
    expect_grad("GELU d_in (with recompute)", c.x, c.n, dx_fused, gelu_scalar, &c);
    gelu_forward(c.y, c.x, c.n);
    for (size_t i = 0; i < c.n; i++)
        CHECK(act[i] == c.y[i], "gelu_backward_recompute output %zu: %g, gelu_forward %g", i, act[i], c.y[i]);
    free(act);
    free(dx_fused);
    dropout_scalar(&c);
    dropout_backward(dx, c.r, c.n, c.site);
    expect_grad("dropout d_in", c.x, c.n, dx, dropout_scalar, &c);
    int dropped = 0;
    for (size_t i = 0; i < c.n; i++)
        dropped += c.y[i] == 0;
    CHECK(dropped > 5 && dropped < 35, "dropout p=0.3 dropped %d of 64", dropped);
    free(c.x); free(c.y); free(c.r); free(dx);
}

/* A mask the forward records is the one the backward would draw again:
 * the same bits, across chunk boundaries and a length not a multiple of 8. */
static void test_dropout_keep_mask(void)
{
    const size_t n = 2500;
    double *x = random_array(n, 1), *y_drawn = zeros(n), *y_kept = zeros(n);
    double *d_drawn = zeros(n), *d_kept = zeros(n), *again = zeros(n);
    uint8_t *keep = calloc((n + 7) / 8, 1);
    DropoutSite drawn = {0.25, 9, 3, 4, 100, 0, NULL}, kept = drawn;
    kept.keep = keep;
    dropout_forward(y_drawn, x, n, drawn);
    dropout_forward(y_kept, x, n, kept);
    CHECK(memcmp(y_drawn, y_kept, n * sizeof *x) == 0, "dropout forward differs when it records its mask");
    dropout_backward(d_drawn, x, n, drawn);
    dropout_backward(d_kept, x, n, kept);
    CHECK(memcmp(d_drawn, d_kept, n * sizeof *x) == 0, "dropout backward from the recorded mask differs");
    dropout_again(again, x, n, kept);
    CHECK(memcmp(again, y_drawn, n * sizeof *x) == 0, "dropout_again differs from the forward");
    size_t set = 0;
    for (size_t i = 0; i < n; i++)
        set += (keep[i / 8] >> (i % 8)) & 1;
    CHECK(set > n / 2 && set < n, "recorded mask keeps %zu of %zu at p = 0.25", set, n);
    free(x); free(y_drawn); free(y_kept); free(d_drawn); free(d_kept); free(again); free(keep);
}

typedef struct {
    int M, D;
    double *x, *emb, *y, *r;
    const uint8_t *mask;
} MaskCase;

static double mask_scalar(void *ctx)
{
    MaskCase *c = ctx;
    mask_embed_forward(c->y, c->x, c->mask, c->emb, c->M, c->D);
    return dot(c->y, c->r, (size_t)c->M * c->D);
}

static void test_mask_embed(void)
{
    const uint8_t mask[4] = {0, 1, 1, 0};
    MaskCase c = {4, 3, random_array(12, 1), random_array(3, 1), zeros(12), random_array(12, 1), mask};
    double *dx = zeros(12), *de = zeros(3);
    mask_scalar(&c);
    mask_embed_backward(dx, de, c.r, c.mask, c.M, c.D);
    expect_grad("mask embedding d_in", c.x, 12, dx, mask_scalar, &c);
    expect_grad("mask embedding d_emb", c.emb, 3, de, mask_scalar, &c);
    free(c.x); free(c.emb); free(c.y); free(c.r); free(dx); free(de);
}

/* ---- attention with a key padding mask ------------------------------------------------ */

typedef struct {
    int B, N, D, H;
    double *qkv, *out, *probs, *r, *scratch;
    const uint8_t *pad;
    DropoutSite drop;
} AttnCase;

static double attn_scalar(void *ctx)
{
    AttnCase *c = ctx;
    attention_forward(c->out, c->probs, c->qkv, c->pad, c->B, c->N, c->D, c->H, c->drop, c->scratch);
    return dot(c->out, c->r, (size_t)c->B * c->N * c->D);
}

static void test_attention(void)
{
    const uint8_t pad[10] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
    AttnCase c = {2, 5, 6, 2, NULL, NULL, NULL, NULL, NULL, pad, {0, 3, 5, 1, 0, 0, NULL}};
    size_t nqkv = (size_t)c.B * c.N * 3 * c.D, nout = (size_t)c.B * c.N * c.D;
    c.qkv = random_array(nqkv, 1);
    c.out = zeros(nout);
    c.probs = zeros((size_t)c.B * c.H * c.N * c.N);
    c.r = random_array(nout, 1);
    c.scratch = zeros(attention_scratch_size(c.N, 64));
    double *dqkv = zeros(nqkv), *again = zeros(nout), *dqkv_drawn = zeros(nqkv), *dqkv_kept = zeros(nqkv);
    uint8_t *keep = calloc((size_t)c.B * c.H * attention_keep_bytes(c.N), 1);
    /* 0: no dropout; 1: the backward draws the mask again; 2: it reads the
     * mask the forward recorded. */
    for (int with_dropout = 0; with_dropout <= 2; with_dropout++) {
        c.drop.p = with_dropout ? 0.2 : 0;
        c.drop.keep = with_dropout == 2 ? keep : NULL;
        attn_scalar(&c);
        /* From the forward's probabilities (a student that keeps them), then
         * recomputing them: the same bits. */
        attention_backward(dqkv_kept, NULL, c.r, c.qkv, c.probs, c.pad, c.B, c.N, c.D, c.H, c.drop, c.scratch);
        attention_backward(dqkv, again, c.r, c.qkv, NULL, c.pad, c.B, c.N, c.D, c.H, c.drop, c.scratch);
        CHECK(memcmp(dqkv_kept, dqkv, nqkv * sizeof *dqkv) == 0,
              "attention backward from the kept probabilities differs from the recomputed ones");
        /* The backward's recomputed output is the forward's, bit for bit. */
        CHECK(memcmp(again, c.out, nout * sizeof *again) == 0, "attention_backward's out differs from the forward's");
        const char *what[] = {"attention d_qkv (padding)", "attention d_qkv (padding, dropout)",
                              "attention d_qkv (padding, dropout, recorded mask)"};
        expect_grad(what[with_dropout], c.qkv, nqkv, dqkv, attn_scalar, &c);
        if (with_dropout == 1)
            memcpy(dqkv_drawn, dqkv, nqkv * sizeof *dqkv);
        if (with_dropout == 2)
            CHECK(memcmp(dqkv, dqkv_drawn, nqkv * sizeof *dqkv) == 0,
                  "attention backward from the recorded mask differs from the drawn one");
    }
    c.drop.keep = NULL;
    free(again);
    free(dqkv_drawn);
    free(dqkv_kept);
    free(keep);
    /* Padded keys get exactly zero weight. */
    for (int h = 0; h < c.H; h++)
        for (int i = 0; i < c.N; i++)
            CHECK(c.probs[((size_t)(1 * c.H + h) * c.N + i) * c.N + 4] == 0, "a padded key got attention");
    free(c.qkv); free(c.out); free(c.probs); free(c.r); free(c.scratch); free(dqkv);
}

/* ---- regression loss -------------------------------------------------------------------- */

typedef struct {
    int P, D;
    double *pred, *target, beta, scale;
} LossCase;

static double loss_scalar(void *ctx)
{
    LossCase *c = ctx;
    return regression_loss_forward(c->pred, c->target, c->P, c->D, c->beta, c->scale);
}

static void test_loss(void)
{
    LossCase c = {4, 3, random_array(12, 2), random_array(12, 2), 0, 0.5};
    double *dp = zeros(12);
    const double betas[] = {0, 1, 4};
    for (int i = 0; i < 3; i++) {
        c.beta = betas[i];
        regression_loss_backward(dp, c.pred, c.target, c.P, c.D, c.beta, c.scale);
        char what[64];
        snprintf(what, sizeof what, "regression loss d_pred (beta %g)", c.beta);
        expect_grad(what, c.pred, 12, dp, loss_scalar, &c);
    }
    free(c.pred); free(c.target); free(dp);
}

/* ---- the encoder and the whole objective ---------------------------------------------------- */

typedef struct {
    Data2vec model;
    ParamStore ps;
    Arena arena;
    Data2vecActs acts;
    int B, N, D;
    double *x, *x_teacher, *d_x, *r;
    uint8_t mask[12], pad[12];
    ForwardMode mode;
    StepStats stats;
} StepCase;

static void step_case_init(StepCase *c, const D2vConfig *cfg)
{
    D2vError err;
    memset(c, 0, sizeof *c);
    c->B = 2;
    c->N = 6;
    c->D = (int)cfg->model.dim;
    if (d2v_register(&c->model, &c->ps, cfg, &err) < 0 || params_alloc(&c->ps, &err) < 0) {
        fprintf(stderr, "setup: %s\n", err.msg);
        exit(2);
    }
    d2v_bind(&c->model, &c->ps);
    Rng init;
    rng_init(&init, 42, 0);
    params_init(&c->ps, &init);
    /* Make every parameter non-trivial (norm gains 1 and biases 0 would hide
     * mistakes) and the teacher differ from the student. */
    for (size_t i = 0; i < c->ps.numel; i++)
        c->ps.value[i] += 0.2 * rng_normal(&test_rng);
    for (size_t i = 0; i < c->ps.teacher_numel; i++)
        c->ps.teacher[i] = c->ps.value[i] + 0.1 * rng_normal(&test_rng);
    Arena measure = {0};
    d2v_layout(&c->acts, &measure, &c->model, c->B, c->N, 64);
    if (arena_alloc(&c->arena, measure.used, &err) < 0)
        exit(2);
    d2v_layout(&c->acts, &c->arena, &c->model, c->B, c->N, 64);
    size_t n = (size_t)c->B * c->N * c->D;
    c->x = random_array(n, 1);
    c->x_teacher = random_array(n, 1);
    c->d_x = zeros(n);
    c->r = random_array(n, 1);
    const uint8_t mask[12] = {1, 0, 1, 1, 0, 0, 0, 1, 1, 0, 1, 0};
    const uint8_t pad[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
    memcpy(c->mask, mask, 12);
    memcpy(c->pad, pad, 12);
    c->mode = (ForwardMode){.train = 1, .seed = 99, .step = 3};
}

static void step_case_free(StepCase *c)
{
    params_free(&c->ps);
    arena_free(&c->arena);
    free(c->x); free(c->x_teacher); free(c->d_x); free(c->r);
}

/* s = sum(encoder output * r): checks the Transformer alone. */
static double encoder_scalar(void *ctx)
{
    StepCase *c = ctx;
    transformer_forward(&c->model.encoder, c->ps.value, &c->acts.student, c->x, c->pad, c->B, c->N, c->mode);
    return dot(c->acts.student.output, c->r, (size_t)c->B * c->N * c->D);
}

/* The data2vec loss of one step. */
static double step_scalar(void *ctx)
{
    StepCase *c = ctx;
    params_zero_grad(&c->ps);
    d2v_step(&c->model, &c->ps, &c->acts, c->x, c->x_teacher, c->mask, c->pad, c->B, c->N, c->mode, c->d_x,
             &c->stats);
    return c->stats.loss;
}

/* Checks d scalar / d every parameter tensor (the store's grad after one
 * backward), tensor by tensor so a failure names the tensor. */
static void expect_param_grads(StepCase *c, const char *label, ScalarFn f, int student_only_params)
{
    double *analytic = malloc(c->ps.numel * sizeof(double));
    memcpy(analytic, c->ps.grad, c->ps.numel * sizeof(double));
    for (int i = 0; i < c->ps.count; i++) {
        const Param *p = &c->ps.params[i];
        if (student_only_params && !p->in_teacher)
            continue;
        char what[160];
        snprintf(what, sizeof what, "%s: d %s", label, p->name);
        expect_grad(what, c->ps.value + p->offset, p->numel, analytic + p->offset, f, c);
    }
    free(analytic);
}

static void test_encoder(const char *layout, double dropout)
{
    ObjectiveCase oc = {layout, "layer", "none", "ffn", "linear", 0, dropout};
    D2vConfig cfg = fixture_config(oc, 8, 3, 2, 16, 2);
    StepCase c;
    step_case_init(&c, &cfg);
    char label[96];
    snprintf(label, sizeof label, "encoder %s dropout %g", layout, dropout);
    encoder_scalar(&c);
    params_zero_grad(&c.ps);
    double *dx = zeros((size_t)c.B * c.N * c.D);
    transformer_backward(&c.model.encoder, c.ps.value, c.ps.grad, &c.acts.student, c.x, c.pad, c.r, dx, c.B, c.N,
                         c.mode);
    char what[160];
    snprintf(what, sizeof what, "%s: d input", label);
    expect_grad(what, c.x, (size_t)c.B * c.N * c.D, dx, encoder_scalar, &c);
    expect_param_grads(&c, label, encoder_scalar, 1);
    free(dx);
    step_case_free(&c);
}

static void test_step(const char *layout, const char *layer_norm, const char *final_norm, const char *tap,
                      const char *head, double beta, double dropout)
{
    ObjectiveCase oc = {layout, layer_norm, final_norm, tap, head, beta, dropout};
    D2vConfig cfg = fixture_config(oc, 8, 3, 2, 16, 2);
    StepCase c;
    step_case_init(&c, &cfg);
    char label[160];
    snprintf(label, sizeof label, "step %s targets %s/%s@%s head %s beta %g dropout %g", layout, layer_norm,
             final_norm, tap, head, beta, dropout);
    step_scalar(&c);
    CHECK(isfinite(c.stats.loss) && c.stats.loss > 0, "%s: loss %g", label, c.stats.loss);
    CHECK(c.stats.n_loss == 5, "%s: %d loss positions, expected 5 (masked and not padding)", label, c.stats.n_loss);
    double *dx = malloc((size_t)c.B * c.N * c.D * sizeof(double));
    memcpy(dx, c.d_x, (size_t)c.B * c.N * c.D * sizeof(double));
    char what[200];
    snprintf(what, sizeof what, "%s: d x_student", label);
    expect_grad(what, c.x, (size_t)c.B * c.N * c.D, dx, step_scalar, &c);
    step_scalar(&c);
    expect_param_grads(&c, label, step_scalar, 0);
    free(dx);
    step_case_free(&c);
}

int main(void)
{
    openblas_set_num_threads(1);
    rng_init(&test_rng, 2022, 1);
    test_linear();
    test_norms();
    test_pointwise();
    test_dropout_keep_mask();
    test_mask_embed();
    test_attention();
    test_loss();
    test_encoder("post_ln", 0);
    test_encoder("pre_ln", 0);
    test_encoder("post_ln", 0.1);
    test_encoder("pre_ln", 0.1);
    test_step("post_ln", "instance", "none", "ffn", "linear", 0, 0);
    test_step("post_ln", "layer", "layer", "block", "mlp", 4, 0.1);
    test_step("pre_ln", "layer", "layer", "block", "linear", 2, 0);
    test_step("pre_ln", "none", "instance", "ffn", "mlp", 0, 0.1);
    return check_summary();
}
