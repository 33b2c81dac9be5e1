/* test_core.c — the objective's pieces against answers computed by hand:
 * teacher targets on an input whose answer is known, EMA decay values, one
 * AdamW step, schedule values at key steps, the RNG, checkpoint round trip
 * and rejection, and bit-for-bit determinism of a step. */
#include "check.h"
#include "checkpoint.h"
#include "data2vec.h"
#include "ema.h"
#include "fixture.h"
#include "layers.h"
#include "optim.h"
#include "rng.h"
#include "safetensors.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int close_to(double a, double b, double tol) { return fabs(a - b) <= tol * (1 + fabs(b)); }

/* ---- a model whose teacher is simple enough to compute by hand ---------------- */

typedef struct {
    Data2vec model;
    ParamStore ps;
    Arena arena;
    Data2vecActs acts;
} Model;

static void model_init(Model *m, const D2vConfig *cfg, int B, int N)
{
    D2vError err;
    memset(m, 0, sizeof *m);
    if (d2v_register(&m->model, &m->ps, cfg, &err) < 0 || params_alloc(&m->ps, &err) < 0) {
        fprintf(stderr, "setup: %s\n", err.msg);
        exit(2);
    }
    d2v_bind(&m->model, &m->ps);
    Rng rng;
    rng_init(&rng, 5, 0);
    params_init(&m->ps, &rng);
    Arena measure = {0};
    d2v_layout(&m->acts, &measure, &m->model, B, N, 64);
    if (arena_alloc(&m->arena, measure.used, &err) < 0)
        exit(2);
    d2v_layout(&m->acts, &m->arena, &m->model, B, N, 64);
}

static void model_free(Model *m)
{
    params_free(&m->ps);
    arena_free(&m->arena);
}

/* With every teacher weight zero except each block's fc2 bias c_l, a pre-LN
 * block maps h to h + c_l: attention and fc1 contribute nothing, the FFN
 * output is the constant c_l. So with D=4, L=3, K=2:
 *   tap=block: a^l = x + c_0 + ... + c_l      tap=ffn: a^l = c_l
 * and the targets follow in closed form. */
enum { TB = 2, TN = 3, TD = 4 };
static const float c_bias[3][TD] = {{1, -2, 0.5f, 3}, {0.25f, 0.5f, -1, 2}, {-3, 1, 1, 0}};

static void zero_teacher_except_fc2_bias(Model *m)
{
    memset(m->ps.teacher, 0, m->ps.teacher_numel * sizeof(real));
    for (int l = 0; l < 3; l++) {
        memcpy(m->ps.teacher + m->model.encoder.blocks[l].fc2_b, c_bias[l], sizeof c_bias[l]);
        for (int d = 0; d < TD; d++) /* LN gains: irrelevant (zero weights follow), but keep them sane */
            m->ps.teacher[m->model.encoder.blocks[l].ln1_w + d] = m->ps.teacher[m->model.encoder.blocks[l].ln2_w + d] = 1;
    }
}

static void hand_layernorm(double *v, int D)
{
    double mu = 0, var = 0;
    for (int d = 0; d < D; d++)
        mu += v[d];
    mu /= D;
    for (int d = 0; d < D; d++)
        var += (v[d] - mu) * (v[d] - mu);
    var /= D;
    for (int d = 0; d < D; d++)
        v[d] = (v[d] - mu) / sqrt(var + 1e-5);
}

static void test_targets(void)
{
    const float x[TB * TN * TD] = {0.1f, 0.2f, -0.3f, 0.4f, 1, 0, -1, 2, 0.5f, 0.5f, 0.5f, -0.5f,
                                   3, 1, 4, 1, -5, 9, 2, 6, 7, 7, 7, 7 /* padding */};
    const uint8_t pad[TB * TN] = {0, 0, 0, 0, 0, 1};

    /* 1) tap=block, no norms: y = mean(x + c0 + c1, x + c0 + c1 + c2). */
    {
        ObjectiveCase oc = {"pre_ln", "none", "none", "block", "linear", 0, 0};
        D2vConfig cfg = fixture_config(oc, TD, 3, 2, 8, 2);
        Model m;
        model_init(&m, &cfg, TB, TN);
        zero_teacher_except_fc2_bias(&m);
        d2v_teacher_targets(&m.model, &m.ps, &m.acts, x, pad, TB, TN);
        int ok = 1;
        for (int i = 0; i < TB * TN; i++)
            for (int d = 0; d < TD; d++) {
                double want = x[i * TD + d] + c_bias[0][d] + c_bias[1][d] + 0.5 * c_bias[2][d];
                ok &= close_to(m.acts.target_sum[i * TD + d], want, 1e-5);
            }
        CHECK(ok, "targets (block tap, no norm) differ from x + c0 + c1 + c2/2");
        model_free(&m);
    }
    /* 2) tap=ffn, layer norm per layer: y = (LN(c1) + LN(c2)) / 2 everywhere. */
    {
        ObjectiveCase oc = {"pre_ln", "layer", "none", "ffn", "linear", 0, 0};
        D2vConfig cfg = fixture_config(oc, TD, 3, 2, 8, 2);
        Model m;
        model_init(&m, &cfg, TB, TN);
        zero_teacher_except_fc2_bias(&m);
        d2v_teacher_targets(&m.model, &m.ps, &m.acts, x, pad, TB, TN);
        double c1[TD], c2[TD];
        for (int d = 0; d < TD; d++)
            c1[d] = c_bias[1][d], c2[d] = c_bias[2][d];
        hand_layernorm(c1, TD);
        hand_layernorm(c2, TD);
        int ok = 1;
        for (int i = 0; i < TB * TN; i++)
            for (int d = 0; d < TD; d++)
                ok &= close_to(m.acts.target_sum[i * TD + d], 0.5 * (c1[d] + c2[d]), 1e-5);
        CHECK(ok, "targets (ffn tap, layer norm) differ from (LN(c1) + LN(c2))/2");
        model_free(&m);
    }
    /* 3) tap=block, instance norm per layer, final layer norm: the constants
     * vanish under instance norm, so y = LN(IN(x)), IN over the sample's
     * non-padding positions only. */
    {
        ObjectiveCase oc = {"pre_ln", "instance", "layer", "block", "linear", 0, 0};
        D2vConfig cfg = fixture_config(oc, TD, 3, 2, 8, 2);
        Model m;
        model_init(&m, &cfg, TB, TN);
        zero_teacher_except_fc2_bias(&m);
        d2v_teacher_targets(&m.model, &m.ps, &m.acts, x, pad, TB, TN);
        double want[TB * TN][TD] = {{0}};
        for (int b = 0; b < TB; b++) {
            int valid = b == 0 ? 3 : 2;
            for (int d = 0; d < TD; d++) {
                double mu = 0, var = 0;
                for (int n = 0; n < valid; n++)
                    mu += x[(b * TN + n) * TD + d];
                mu /= valid;
                for (int n = 0; n < valid; n++)
                    var += pow(x[(b * TN + n) * TD + d] - mu, 2);
                var /= valid;
                for (int n = 0; n < valid; n++)
                    want[b * TN + n][d] = (x[(b * TN + n) * TD + d] - mu) / sqrt(var + 1e-5);
            }
        }
        int ok = 1;
        for (int i = 0; i < TB * TN; i++) {
            if (pad[i])
                continue;
            hand_layernorm(want[i], TD);
            for (int d = 0; d < TD; d++)
                ok &= close_to(m.acts.target_sum[i * TD + d], want[i][d], 1e-4);
        }
        CHECK(ok, "targets (block tap, instance norm, final layer norm) differ from LN(IN(x))");
        model_free(&m);
    }
}

/* ---- EMA, AdamW, schedules --------------------------------------------------- */

static void test_ema(void)
{
    CHECK(ema_tau(0.999, 0.9999, 30000, 0) == 0.999, "tau at update 0");
    CHECK(close_to(ema_tau(0.999, 0.9999, 30000, 15000), 0.99945, 1e-12), "tau halfway: %.8f",
          ema_tau(0.999, 0.9999, 30000, 15000));
    CHECK(ema_tau(0.999, 0.9999, 30000, 30000) == 0.9999, "tau at the end of the anneal");
    CHECK(ema_tau(0.999, 0.9999, 30000, 90000) == 0.9999, "tau is held after the anneal");
    CHECK(ema_tau(0.9, 0.99, 0, 0) == 0.99, "no anneal means tau_end from the start");

    ParamStore ps = {0};
    const int64_t two[1] = {2};
    D2vError err;
    params_add(&ps, "t", PARAM_BIAS, 1, INIT_ZERO, 0, 1, two, &err);
    params_add(&ps, "s", PARAM_BIAS, 0, INIT_ZERO, 0, 1, two, &err);
    params_alloc(&ps, &err);
    real *t_student = params_value(&ps, 0), *t_teacher = params_teacher(&ps, 0), *s = params_value(&ps, 1);
    t_student[0] = 1, t_student[1] = -2, t_teacher[0] = 3, t_teacher[1] = 4, s[0] = 5;
    ema_update(&ps, 0.75);
    CHECK(close_to(t_teacher[0], 0.75 * 3 + 0.25 * 1, 1e-7) && close_to(t_teacher[1], 0.75 * 4 - 0.25 * 2, 1e-7),
          "EMA update: teacher %g %g", t_teacher[0], t_teacher[1]);
    CHECK(ps.teacher_numel < ps.params[1].offset + 1, "a student-only tensor fell inside the teacher range");
    params_free(&ps);
}

static void test_adamw(void)
{
    ParamStore ps = {0};
    const int64_t w_shape[2] = {1, 2}, b_shape[1] = {2};
    D2vError err;
    params_add(&ps, "w", PARAM_WEIGHT, 0, INIT_ZERO, 0, 2, w_shape, &err);
    params_add(&ps, "b", PARAM_BIAS, 0, INIT_ZERO, 0, 1, b_shape, &err);
    params_add(&ps, "e", PARAM_EMBED, 0, INIT_ZERO, 0, 2, w_shape, &err);
    params_alloc(&ps, &err);
    CHECK(param_decays(&ps.params[0]) && !param_decays(&ps.params[1]) && !param_decays(&ps.params[2]),
          "weight decay rule: only weight matrices decay");
    const double lr = 0.1, wd = 0.5, eps = 1e-8;
    for (int i = 0; i < 3; i++) {
        params_value(&ps, i)[0] = 2, params_value(&ps, i)[1] = -1;
        params_grad(&ps, i)[0] = 0.5, params_grad(&ps, i)[1] = -4;
    }
    AdamW opt = {lr, 0.9, 0.999, eps, wd};
    adamw_step(&ps, &opt, lr, 1);
    /* Step 1: m_hat = g, v_hat = g^2, so the update is lr * g / (|g| + eps). */
    const double w0 = 2 * (1 - lr * wd) - lr * 0.5 / (0.5 + eps);
    const double w1 = -1 * (1 - lr * wd) + lr * 4 / (4 + eps);
    CHECK(close_to(params_value(&ps, 0)[0], w0, 1e-6) && close_to(params_value(&ps, 0)[1], w1, 1e-6),
          "AdamW step 1 on a decayed weight: %g %g, expected %g %g", params_value(&ps, 0)[0],
          params_value(&ps, 0)[1], w0, w1);
    CHECK(close_to(params_value(&ps, 1)[0], 2 - lr, 1e-6) && close_to(params_value(&ps, 2)[1], -1 + lr, 1e-6),
          "AdamW step 1 on undecayed tensors: %g %g", params_value(&ps, 1)[0], params_value(&ps, 2)[1]);
    /* Step 2 with the same gradient: m = g(1 - b1^2), v = g^2(1 - b2^2): the
     * bias-corrected ratio is again g/|g|. */
    const double w0_2 = w0 * (1 - lr * wd) - lr * 0.5 / (0.5 + eps);
    adamw_step(&ps, &opt, lr, 2);
    CHECK(close_to(params_value(&ps, 0)[0], w0_2, 1e-5), "AdamW step 2: %g, expected %g", params_value(&ps, 0)[0],
          w0_2);

    /* Clipping: norm of all gradients, scaled to max_norm. */
    double norm = clip_grad_norm(&ps, 1.0);
    double want = sqrt(3 * (0.25 + 16));
    CHECK(close_to(norm, want, 1e-6), "gradient norm %g, expected %g", norm, want);
    CHECK(close_to(clip_grad_norm(&ps, 0), 1.0, 1e-5), "after clipping the norm is %g, expected 1",
          clip_grad_norm(&ps, 0));
    params_free(&ps);
}

static void test_schedules(void)
{
    D2vConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.optim.lr = 1;
    cfg.train.steps = 110;
    cfg.optim.warmup_steps = 10;
    strcpy(cfg.optim.schedule, "cosine");
    Schedule s;
    schedule_from_config(&s, &cfg);
    CHECK(close_to(schedule_lr(&s, 0), 0.1, 1e-12), "cosine warm-up start %g", schedule_lr(&s, 0));
    CHECK(close_to(schedule_lr(&s, 9), 1, 1e-12), "cosine warm-up end %g", schedule_lr(&s, 9));
    CHECK(close_to(schedule_lr(&s, 10), 1, 1e-12), "cosine start %g", schedule_lr(&s, 10));
    CHECK(close_to(schedule_lr(&s, 60), 0.5, 1e-12), "cosine midpoint %g", schedule_lr(&s, 60));
    CHECK(fabs(schedule_lr(&s, 110)) < 1e-12 && fabs(schedule_lr(&s, 500)) < 1e-12, "cosine end");

    strcpy(cfg.optim.schedule, "tri_stage");
    cfg.train.steps = 100;
    cfg.optim.warmup_steps = 0;
    cfg.optim.warmup_ratio = 0.1, cfg.optim.hold_ratio = 0.4, cfg.optim.decay_ratio = 0.5;
    cfg.optim.init_lr_scale = 0.01, cfg.optim.final_lr_scale = 0.05;
    schedule_from_config(&s, &cfg);
    CHECK(close_to(schedule_lr(&s, 0), 0.01 + 0.99 * 0.1, 1e-12), "tri-stage warm-up start %g", schedule_lr(&s, 0));
    CHECK(close_to(schedule_lr(&s, 9), 1, 1e-12) && close_to(schedule_lr(&s, 49), 1, 1e-12), "tri-stage hold");
    CHECK(close_to(schedule_lr(&s, 74), sqrt(0.05), 1e-9), "tri-stage decay midpoint %g, expected %g",
          schedule_lr(&s, 74), sqrt(0.05));
    CHECK(close_to(schedule_lr(&s, 99), 0.05, 1e-9) && close_to(schedule_lr(&s, 1000), 0.05, 1e-12),
          "tri-stage end %g", schedule_lr(&s, 99));

    strcpy(cfg.optim.schedule, "constant");
    cfg.optim.warmup_ratio = 0;
    schedule_from_config(&s, &cfg);
    CHECK(schedule_lr(&s, 0) == 1 && schedule_lr(&s, 99) == 1, "constant schedule");
}

/* ---- RNG ------------------------------------------------------------------------------- */

static void test_rng(void)
{
    /* Philox4x32-10 known-answer vector (Random123's kat_vectors): counter
     * and key all ones (0xffffffff) -> 408f276d 41c83b0e a20bc7c6 6d5451fd. */
    const uint32_t ones[4] = {0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu};
    uint32_t out[4];
    philox4x32(ones, ones, out);
    CHECK(out[0] == 0x408f276du && out[1] == 0x41c83b0eu && out[2] == 0xa20bc7c6u && out[3] == 0x6d5451fdu,
          "Philox known answer: %08x %08x %08x %08x", out[0], out[1], out[2], out[3]);
    Rng a, b;
    rng_init(&a, 7, 1);
    rng_init(&b, 7, 1);
    int same = 1;
    double mean = 0;
    for (int i = 0; i < 10000; i++) {
        float u = rng_uniform(&a);
        same &= u == rng_uniform(&b);
        mean += u;
    }
    CHECK(same, "two streams with the same seed differ");
    CHECK(fabs(mean / 10000 - 0.5) < 0.01, "uniform mean %g", mean / 10000);
    rng_init(&b, 7, 2);
    CHECK(rng_u32(&a) != rng_u32(&b), "different streams gave the same number");
    int counts[5] = {0};
    for (int i = 0; i < 5000; i++)
        counts[rng_below(&a, 5)]++;
    for (int k = 0; k < 5; k++)
        CHECK(counts[k] > 900 && counts[k] < 1100, "rng_below(5) bucket %d: %d of 5000", k, counts[k]);
    /* The batched draw (dropout) is the element-wise one, from any start. */
    /* 300 values cover the 16-block vector path and the ends around it;
     * the last start's blocks cross 2^32 (a carry into the counter's high word). */
    float batch[300];
    const uint64_t starts[4] = {0, 5, (1ull << 32) - 3, (1ull << 34) - 130};
    for (int s = 0; s < 4; s++) {
        rng_uniforms_at(9, 4, 11, starts[s], 300, batch);
        int equal = 1;
        for (int i = 0; i < 300; i++)
            equal &= batch[i] == rng_uniform_at(9, 4, 11, starts[s] + (uint64_t)i);
        CHECK(equal, "rng_uniforms_at from %llu differs from rng_uniform_at", (unsigned long long)starts[s]);
    }
}

/* ---- checkpoints ---------------------------------------------------------------------- */

static void test_checkpoint(void)
{
    ObjectiveCase oc = {"post_ln", "instance", "none", "ffn", "linear", 0, 0};
    D2vConfig cfg = fixture_config(oc, 16, 2, 2, 32, 2);
    Model a, b;
    model_init(&a, &cfg, 2, 4);
    for (size_t i = 0; i < a.ps.numel; i++) {
        a.ps.adam_m[i] = (real)i * 1e-3f;
        a.ps.adam_v[i] = (real)i * 2e-3f;
    }
    for (size_t i = 0; i < a.ps.teacher_numel; i++)
        a.ps.teacher[i] = -a.ps.value[i];
    char dir[] = "/tmp/d2v_test_ckpt_XXXXXX";
    CHECK(mkdtemp(dir) != NULL, "mkdtemp");
    char path[256];
    snprintf(path, sizeof path, "%s/run.safetensors", dir);
    TrainState st = {.step = 1234, .world = 1}, st2;
    rng_init(&st.rng, 99, 3);
    rng_u32(&st.rng);
    D2vError err = {{0}};
    CHECK(checkpoint_save(path, &a.ps, &st, "[model]\ndim = 16\n", &err) == 0, "save: %s", err.msg);

    model_init(&b, &cfg, 2, 4);
    CHECK(checkpoint_load(path, &b.ps, &st2, &err) == 0, "load: %s", err.msg);
    CHECK(memcmp(a.ps.value, b.ps.value, a.ps.numel * sizeof(real)) == 0, "student differs after round trip");
    CHECK(memcmp(a.ps.teacher, b.ps.teacher, a.ps.teacher_numel * sizeof(real)) == 0, "teacher differs");
    CHECK(memcmp(a.ps.adam_m, b.ps.adam_m, a.ps.numel * sizeof(real)) == 0 &&
              memcmp(a.ps.adam_v, b.ps.adam_v, a.ps.numel * sizeof(real)) == 0,
          "Adam moments differ");
    CHECK(st2.step == 1234 && rng_u32(&st2.rng) == rng_u32(&st.rng), "step or RNG state lost");
    CHECK(st2.best_knn_step == 0 && st2.best_knn == 0, "no periodic k-NN: no best score (%lld)",
          (long long)st2.best_knn_step);
    /* The best periodic k-NN so far round-trips exactly (resume must not
     * let a worse score overwrite best-knn.safetensors). */
    TrainState best = st, read_back;
    best.best_knn = 0.1 + 0.2; /* not a short decimal */
    best.best_knn_step = 1000;
    CHECK(checkpoint_save(path, &a.ps, &best, "[model]\ndim = 16\n", &err) == 0, "save: %s", err.msg);
    CHECK(checkpoint_read_state(path, &read_back, &err) == 0 && read_back.step == 1234 &&
              read_back.best_knn == best.best_knn && read_back.best_knn_step == 1000,
          "best_knn round trip: %s %.17g %lld", err.msg, read_back.best_knn, (long long)read_back.best_knn_step);
    CHECK(checkpoint_load(path, &b.ps, &read_back, &err) == 0 && read_back.best_knn == best.best_knn,
          "best_knn through checkpoint_load: %s", err.msg);
    best.best_knn_step = 2000; /* after the checkpoint's own step */
    CHECK(checkpoint_save(path, &a.ps, &best, "[model]\ndim = 16\n", &err) == 0, "save: %s", err.msg);
    CHECK(checkpoint_read_state(path, &read_back, &err) < 0 && strstr(err.msg, "best_knn_step"),
          "a best step after the checkpoint's step is refused: %s", err.msg);
    CHECK(checkpoint_save(path, &a.ps, &st, "[model]\ndim = 16\n", &err) == 0, "save: %s", err.msg);
    char *config = NULL;
    CHECK(checkpoint_read_config(path, &config, &err) == 0 && config && strcmp(config, "[model]\ndim = 16\n") == 0,
          "embedded config: %s", config ? config : err.msg);
    free(config);

    /* Another model's checkpoint: a clear error naming the tensor. */
    D2vConfig other = fixture_config(oc, 16, 3, 2, 32, 2);
    Model c;
    model_init(&c, &other, 2, 4);
    CHECK(checkpoint_load(path, &c.ps, NULL, &err) < 0 && strstr(err.msg, "blocks.2.") && strstr(err.msg, "missing"),
          "a checkpoint with fewer layers: %s", err.msg);
    model_free(&c);
    D2vConfig narrow = fixture_config(oc, 8, 2, 2, 32, 2);
    model_init(&c, &narrow, 2, 4);
    CHECK(checkpoint_load(path, &c.ps, NULL, &err) < 0 && strstr(err.msg, "the model expects F32 (24,8)"),
          "a checkpoint of another width: %s", err.msg);
    model_free(&c);

    /* A plain safetensors file that is not a d2v checkpoint. */
    StWriter w;
    st_writer_init(&w);
    const int64_t one[1] = {1};
    float v = 1;
    st_writer_add(&w, "x", ST_F32, 1, one, &v, &err);
    snprintf(path, sizeof path, "%s/plain.safetensors", dir);
    st_writer_save(&w, path, &err);
    st_writer_free(&w);
    CHECK(checkpoint_load(path, &b.ps, NULL, &err) < 0 && strstr(err.msg, "not a d2v checkpoint"),
          "a foreign safetensors file: %s", err.msg);
    unlink(path);
    snprintf(path, sizeof path, "%s/run.safetensors", dir);
    unlink(path);
    rmdir(dir);
    model_free(&a);
    model_free(&b);
}

/* ---- determinism ------------------------------------------------------------------------- */

/* A step's inputs: x (rows, D) normal, about half the rows masked. */
static void random_step_inputs(real *x, uint8_t *mask, int rows, int D, uint64_t seed)
{
    Rng rng;
    rng_init(&rng, seed, 0);
    for (int i = 0; i < rows * D; i++)
        x[i] = rng_normal(&rng);
    for (int i = 0; i < rows; i++)
        mask[i] = rng_uniform(&rng) < 0.5f;
}

static void test_determinism(void)
{
    ObjectiveCase oc = {"post_ln", "instance", "none", "ffn", "linear", 0, 0.1};
    D2vConfig cfg = fixture_config(oc, 32, 2, 4, 64, 2);
    enum { B = 4, N = 24, D = 32 };
    Model m;
    model_init(&m, &cfg, B, N);
    static real x[B * N * D], dx1[B * N * D], dx2[B * N * D];
    uint8_t mask[B * N];
    random_step_inputs(x, mask, B * N, D, 3);
    real *g1 = malloc(m.ps.numel * sizeof(real));
    StepStats s1, s2;
    ForwardMode mode = {.train = 1, .seed = 11, .step = 5};
    params_zero_grad(&m.ps);
    d2v_step(&m.model, &m.ps, &m.acts, x, x, mask, NULL, B, N, mode, dx1, &s1);
    memcpy(g1, m.ps.grad, m.ps.numel * sizeof(real));
    params_zero_grad(&m.ps);
    d2v_step(&m.model, &m.ps, &m.acts, x, x, mask, NULL, B, N, mode, dx2, &s2);
    CHECK(s1.loss == s2.loss && memcmp(g1, m.ps.grad, m.ps.numel * sizeof(real)) == 0 &&
              memcmp(dx1, dx2, sizeof dx1) == 0,
          "the same step twice gave different numbers (loss %.9g vs %.9g)", s1.loss, s2.loss);
    /* Dropout is drawn per step: another step index gives another loss. */
    mode.step = 6;
    d2v_step(&m.model, &m.ps, &m.acts, x, x, mask, NULL, B, N, mode, dx2, &s2);
    CHECK(s1.loss != s2.loss, "dropout ignored the step index");
    free(g1);
    model_free(&m);
}

/* A student that keeps its blocks' attention probabilities and outputs
 * (train.attention_memory_mb large enough), one that keeps the
 * probabilities only and one that recomputes both in the backward take the
 * same step, bit for bit, dropout included. */
static void test_attention_memory(void)
{
    ObjectiveCase oc = {"post_ln", "instance", "none", "ffn", "linear", 0, 0.1};
    enum { B = 3, N = 17, D = 32 };
    static real x[B * N * D], dx_kept[B * N * D], dx_recomputed[B * N * D];
    uint8_t mask[B * N];
    random_step_inputs(x, mask, B * N, D, 4);
    ForwardMode mode = {.train = 1, .seed = 11, .step = 5};
    StepStats kept, recomputed;
    D2vConfig cfg = fixture_config(oc, D, 2, 4, 64, 2);
    Model m;
    model_init(&m, &cfg, B, N);
    CHECK(m.acts.student.keep_probs && m.acts.student.keep_att && !m.acts.teacher.keep_probs &&
              m.acts.student.blocks[0].probs != m.acts.student.blocks[1].probs &&
              m.acts.student.blocks[0].att != m.acts.student.blocks[1].att,
          "a student within attention_memory_mb does not keep each block's probabilities and outputs");
    real *g_kept = malloc(m.ps.numel * sizeof(real));
    params_zero_grad(&m.ps);
    d2v_step(&m.model, &m.ps, &m.acts, x, x, mask, NULL, B, N, mode, dx_kept, &kept);
    memcpy(g_kept, m.ps.grad, m.ps.numel * sizeof(real));
    model_free(&m);

    /* Here two blocks' probabilities (B*H*N*N floats each) take 27.1 KB and
     * their outputs (B*N*D) 12.8 KB: 0.03 MiB keeps the probabilities only,
     * 0.01 MiB neither. */
    const double budgets[] = {0.03, 0.01};
    for (int b = 0; b < 2; b++) {
        cfg.train.attention_memory_mb = budgets[b];
        model_init(&m, &cfg, B, N);
        CHECK(m.acts.student.keep_probs == (b == 0) && !m.acts.student.keep_att,
              "attention_memory_mb %g: probabilities kept %d, outputs kept %d", budgets[b],
              m.acts.student.keep_probs, m.acts.student.keep_att);
        params_zero_grad(&m.ps);
        d2v_step(&m.model, &m.ps, &m.acts, x, x, mask, NULL, B, N, mode, dx_recomputed, &recomputed);
        CHECK(kept.loss == recomputed.loss && memcmp(g_kept, m.ps.grad, m.ps.numel * sizeof(real)) == 0 &&
                  memcmp(dx_kept, dx_recomputed, sizeof dx_kept) == 0,
              "attention_memory_mb %g gave another step than keeping everything (loss %.9g vs %.9g)", budgets[b],
              recomputed.loss, kept.loss);
        model_free(&m);
    }
    free(g_kept);
}

/* The float build's GELU uses its own vectorisable erf and exp (layers.c);
 * they must agree with libm's in double to float precision, forward and
 * backward, over the whole range activations take (and past it). */
static void test_gelu_precision(void)
{
    enum { COUNT = 40001 };
    float *x = malloc(COUNT * sizeof *x), *y = malloc(COUNT * sizeof *y), *ones = malloc(COUNT * sizeof *ones),
          *dy = malloc(COUNT * sizeof *dy);
    for (int i = 0; i < COUNT; i++) {
        x[i] = -20.0f + 40.0f * (float)i / (COUNT - 1);
        ones[i] = 1.0f;
    }
    gelu_forward(y, x, COUNT);
    gelu_backward(dy, ones, x, COUNT);
    double worst_y = 0, worst_dy = 0;
    for (int i = 0; i < COUNT; i++) {
        const double v = x[i], cdf = 0.5 * (1 + erf(v / sqrt(2.0)));
        const double exact_y = v * cdf, exact_dy = cdf + v * exp(-0.5 * v * v) / sqrt(2 * M_PI);
        const double ey = fabs(y[i] - exact_y) / (1 + fabs(v)), edy = fabs(dy[i] - exact_dy);
        worst_y = ey > worst_y ? ey : worst_y;
        worst_dy = edy > worst_dy ? edy : worst_dy;
    }
    CHECK(worst_y < 4e-7, "gelu forward: worst error %.3g x (1 + |x|)", worst_y);
    CHECK(worst_dy < 1e-6, "gelu backward: worst error %.3g", worst_dy);
    printf("gelu vs libm erf/exp in double: forward %.2g (1 + |x|), backward %.2g\n", worst_y, worst_dy);
    /* A NaN activation (a diverged step the training loop is about to
     * refuse) must come out NaN, not be undefined behaviour in the exp's
     * exponent arithmetic (the sanitizer build checks that part). */
    const float odd[4] = {NAN, -NAN, INFINITY, -INFINITY};
    float odd_y[4], odd_dy[4];
    gelu_forward(odd_y, odd, 4);
    gelu_backward(odd_dy, ones, odd, 4);
    CHECK(isnan(odd_y[0]) && isnan(odd_y[1]) && isnan(odd_dy[0]) && isnan(odd_dy[1]),
          "gelu of NaN: %g %g, gradient %g %g", odd_y[0], odd_y[1], odd_dy[0], odd_dy[1]);
    CHECK(odd_y[2] == INFINITY, "gelu(inf) = %g", odd_y[2]);
    /* The backward that recomputes the output gives both sets of bits. */
    float *y2 = malloc(COUNT * sizeof *y2), *dy2 = malloc(COUNT * sizeof *dy2);
    gelu_forward(y, x, COUNT);
    gelu_backward_recompute(y2, dy2, ones, x, COUNT);
    CHECK(memcmp(y, y2, COUNT * sizeof *y) == 0, "gelu_backward_recompute's output differs from gelu_forward");
    CHECK(memcmp(dy, dy2, COUNT * sizeof *dy) == 0, "gelu_backward_recompute's gradient differs from gelu_backward");
    free(y2);
    free(dy2);
    free(x);
    free(y);
    free(ones);
    free(dy);
}

/* bias_backward sums rows in fixed blocks: the column sums of d_out
 * added to what d_bias held, close to the sums in double, and the same
 * bits on 1 thread and on 2. Fewer rows than blocks, and more; more
 * columns than one pass takes (1024). */
static void test_bias_backward(void)
{
    const int shapes[3][2] = {{5, 40}, {300, 1500}, {3152, 192}}; /* M, Out */
    for (int s = 0; s < 3; s++) {
        const int M = shapes[s][0], Out = shapes[s][1];
        real *d_out = malloc((size_t)M * Out * sizeof *d_out), *one = malloc(Out * sizeof *d_out),
             *two = malloc(Out * sizeof *d_out);
        for (size_t i = 0; i < (size_t)M * Out; i++)
            d_out[i] = sinf(0.13f * (float)i);
        double worst = 0;
        const int threads = omp_get_max_threads();
        omp_set_num_threads(1);
        for (int o = 0; o < Out; o++)
            one[o] = two[o] = (real)o / Out;
        bias_backward(one, d_out, M, Out);
        omp_set_num_threads(2);
        bias_backward(two, d_out, M, Out);
        omp_set_num_threads(threads);
        for (int o = 0; o < Out; o++) {
            double sum = (double)o / Out;
            for (int m = 0; m < M; m++)
                sum += d_out[(size_t)m * Out + o];
            worst = fmax(worst, fabs(one[o] - sum));
        }
        CHECK(worst < 1e-5 * (1 + sqrt((double)M)), "bias_backward %d x %d: off by %.3g from the sums in double", M, Out, worst);
        CHECK(memcmp(one, two, Out * sizeof *one) == 0, "bias_backward %d x %d: 1 and 2 threads differ", M, Out);
        free(d_out);
        free(one);
        free(two);
    }
}

/* layernorm_backward sums its gain and bias gradients over fixed blocks
 * of rows: the same bits on 1 thread and on 2, in place or not. */
static void test_layernorm_backward_threads(void)
{
    enum { M = 301, D = 40 };
    static real x[M * D], dy[M * D], dx1[M * D], dx2[M * D], y[M * D], mean[M], rstd[M], gamma[D], beta[D];
    real dg1[D] = {0}, db1[D] = {0}, dg2[D] = {0}, db2[D] = {0};
    for (int i = 0; i < M * D; i++) {
        x[i] = 2 * sinf(0.3f * (float)i) + 0.01f * (float)(i % 13);
        dy[i] = cosf(0.17f * (float)i);
    }
    for (int d = 0; d < D; d++) {
        gamma[d] = 1 + 0.01f * (float)d;
        beta[d] = 0.1f;
    }
    layernorm_forward(y, mean, rstd, x, gamma, beta, M, D, 1e-5f);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    layernorm_backward(dx1, dg1, db1, dy, x, mean, rstd, gamma, M, D);
    omp_set_num_threads(2);
    memcpy(dx2, dy, sizeof dx2);
    layernorm_backward(dx2, dg2, db2, dx2, x, mean, rstd, gamma, M, D);
    omp_set_num_threads(threads);
    CHECK(memcmp(dx1, dx2, sizeof dx1) == 0 && memcmp(dg1, dg2, sizeof dg1) == 0 && memcmp(db1, db2, sizeof db1) == 0,
          "layernorm_backward: 1 thread and 2 (in place) differ");

    /* Rows wider than the stack's partial sums allow (layers.c,
     * LAYERNORM_WIDE) take one block: the gain and bias gradients still
     * the sums over rows, d_in the same as without them. */
    enum { WM = 7, WD = 5000 };
    real *wx = malloc(sizeof(real) * WM * WD * 4 + sizeof(real) * WD * 3), *wdy = wx + WM * WD, *wdx = wdy + WM * WD,
         *wdx_plain = wdx + WM * WD, *wgamma = wdx_plain + WM * WD, *wdg = wgamma + WD, *wdb = wdg + WD;
    real wmean[WM], wrstd[WM];
    for (int i = 0; i < WM * WD; i++) {
        wx[i] = sinf(0.7f * (float)i);
        wdy[i] = cosf(0.11f * (float)i);
    }
    for (int d = 0; d < WD; d++) {
        wgamma[d] = 1 - 0.0001f * (float)d;
        wdg[d] = wdb[d] = 0;
    }
    layernorm_forward(wdx, wmean, wrstd, wx, NULL, NULL, WM, WD, 1e-5f); /* only its statistics are used */
    layernorm_backward(wdx, wdg, wdb, wdy, wx, wmean, wrstd, wgamma, WM, WD);
    layernorm_backward(wdx_plain, NULL, NULL, wdy, wx, wmean, wrstd, wgamma, WM, WD);
    double worst = 0;
    for (int d = 0; d < WD; d++) {
        double g = 0, b = 0;
        for (int m = 0; m < WM; m++) {
            const double xhat = ((double)wx[m * WD + d] - wmean[m]) * wrstd[m];
            g += wdy[m * WD + d] * xhat;
            b += wdy[m * WD + d];
        }
        worst = fmax(worst, fmax(fabs(wdg[d] - g), fabs(wdb[d] - b)));
    }
    CHECK(worst < 1e-5 && memcmp(wdx, wdx_plain, sizeof(real) * WM * WD) == 0,
          "layernorm_backward, %d channels: gradients off by %.3g, or d_in not the same as without them", WD, worst);
    free(wx);
}

/* max |a - b| over max |b|: how far a is from b on b's own scale. */
static double largest_difference(const float *a, const float *b, size_t n)
{
    double diff = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i]));
    }
    return diff / (scale > 0 ? scale : 1);
}

/* layernorm_gelu_backward (one pass, GELU's input recomputed, gain and
 * bias gradients summed in fixed row blocks) against the three separate
 * steps: layer norm, GELU's backward, layer norm's backward. Rows narrower
 * and wider than the one-pass limit (1024 channels), fewer rows than
 * blocks and more. */
static void test_layernorm_gelu_backward(void)
{
    const int shapes[3][2] = {{7, 40}, {75, 256}, {3, 1100}};
    for (int s = 0; s < 3; s++) {
        const int M = shapes[s][0], D = shapes[s][1];
        const size_t n = (size_t)M * D;
        float *in = malloc(n * sizeof *in), *dy = malloc(n * sizeof *in), *ln = malloc(n * sizeof *in);
        float *want = malloc(n * sizeof *in), *got = malloc(n * sizeof *in);
        float *gamma = malloc(D * sizeof *in), *beta = malloc(D * sizeof *in), *mean = malloc(M * sizeof *in),
              *rstd = malloc(M * sizeof *in);
        float *dg_want = calloc(D, sizeof *in), *db_want = calloc(D, sizeof *in), *dg = calloc(D, sizeof *in),
              *db = calloc(D, sizeof *in);
        for (size_t i = 0; i < n; i++) {
            in[i] = 3.0f * sinf(0.37f * (float)i) + 0.1f * (float)(i % 5);
            dy[i] = cosf(0.11f * (float)i);
        }
        for (int i = 0; i < D; i++) {
            gamma[i] = 0.5f + 0.003f * (float)i;
            beta[i] = 0.2f - 0.001f * (float)i;
        }
        layernorm_forward(ln, mean, rstd, in, gamma, beta, M, D, 1e-5f);
        gelu_backward(want, dy, ln, n);
        layernorm_backward(want, dg_want, db_want, want, in, mean, rstd, gamma, M, D);
        memcpy(got, dy, n * sizeof *got); /* in place, as the conv encoder calls it */
        layernorm_gelu_backward(got, dg, db, got, in, mean, rstd, gamma, beta, M, D);
        /* Differences only from the order of float sums: each output
         * against its array's largest magnitude. */
        const double worst = fmax(largest_difference(got, want, n),
                                  fmax(largest_difference(dg, dg_want, D), largest_difference(db, db_want, D)));
        CHECK(worst < 2e-6, "layernorm_gelu_backward %d x %d: difference %.3g of the largest value from the three steps",
              M, D, worst);
        free(in); free(dy); free(ln); free(want); free(got); free(gamma); free(beta); free(mean); free(rstd);
        free(dg_want); free(db_want); free(dg); free(db);
    }
}

/* The float build records dropout masks in vector mask registers
 * (layers.c): a recorded mask must give the bits of the drawn one, for
 * element-wise dropout (chunk edges, a length not a multiple of 16) and for
 * attention's per-(b, h) tiles (N x N not a multiple of 8). */
static void test_dropout_keep_mask(void)
{
    const size_t n = 2500 + 7;
    float *x = malloc(n * sizeof *x), *drawn = malloc(n * sizeof *x), *kept = malloc(n * sizeof *x);
    uint8_t *keep = calloc((n + 7) / 8, 1);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)i - 1000.0f;
    DropoutSite site = {0.3f, 5, 2, 9, 17, 0, NULL}, recording = site;
    recording.keep = keep;
    dropout_forward(drawn, x, n, site);
    dropout_forward(kept, x, n, recording);
    CHECK(memcmp(drawn, kept, n * sizeof *x) == 0, "dropout forward changed by recording its mask");
    dropout_backward(drawn, x, n, site);
    dropout_backward(kept, x, n, recording);
    CHECK(memcmp(drawn, kept, n * sizeof *x) == 0, "dropout backward from the recorded mask differs");
    free(x);
    free(drawn);
    free(kept);
    free(keep);

    enum { B = 2, N = 13, D = 8, H = 2 };
    const size_t nqkv = (size_t)B * N * 3 * D, nout = (size_t)B * N * D;
    float *qkv = malloc(nqkv * sizeof *qkv), *out = malloc(nout * sizeof *out), *d_out = malloc(nout * sizeof *out);
    float *probs = malloc((size_t)B * H * N * N * sizeof *probs), *scratch = malloc(attention_scratch_size(N, 64) * sizeof *scratch);
    float *dqkv_drawn = malloc(nqkv * sizeof *qkv), *dqkv_kept = malloc(nqkv * sizeof *qkv);
    uint8_t *attn_keep = calloc((size_t)B * H * attention_keep_bytes(N), 1);
    for (size_t i = 0; i < nqkv; i++)
        qkv[i] = sinf((float)i);
    for (size_t i = 0; i < nout; i++)
        d_out[i] = cosf((float)i);
    DropoutSite drop = {0.25f, 3, 1, 4, 0, 0, NULL};
    attention_backward(dqkv_drawn, NULL, d_out, qkv, NULL, NULL, B, N, D, H, drop, scratch);
    drop.keep = attn_keep;
    attention_forward(out, probs, qkv, NULL, B, N, D, H, drop, scratch);
    attention_backward(dqkv_kept, NULL, d_out, qkv, NULL, NULL, B, N, D, H, drop, scratch);
    CHECK(memcmp(dqkv_drawn, dqkv_kept, nqkv * sizeof *qkv) == 0,
          "attention backward from the recorded mask differs from the drawn one");
    free(qkv); free(out); free(d_out); free(probs); free(scratch); free(dqkv_drawn); free(dqkv_kept); free(attn_keep);
}

/* attention_forward's probabilities against softmax(q k^T / sqrt(Dh)) in
 * double, for key counts around the 16-float blocks of its softmax (a
 * masked last block) and not a multiple of its four-row groups, with
 * padded keys (probability exactly 0) and rows whose keys are all padding
 * (all 0). */
static void test_attention_softmax(void)
{
    const int sizes[] = {13, 16, 37, 99};
    for (int t = 0; t < 4; t++) {
        const int B = 3, N = sizes[t], D = 8, H = 2, Dh = D / H;
        const size_t nqkv = (size_t)B * N * 3 * D;
        float *qkv = malloc(nqkv * sizeof *qkv), *out = malloc((size_t)B * N * D * sizeof *out);
        float *probs = malloc((size_t)B * H * N * N * sizeof *probs);
        float *scratch = malloc(attention_scratch_size(N, 64) * sizeof *scratch);
        uint8_t *pad = calloc((size_t)B * N, 1);
        for (size_t i = 0; i < nqkv; i++)
            qkv[i] = 3 * sinf(0.7f * (float)i + (float)t);
        for (int j = N - 5; j < N; j++)
            pad[N + j] = 1; /* batch 1: its last 5 keys */
        memset(pad + 2 * N, 1, (size_t)N); /* batch 2: all keys */
        DropoutSite none = {0};
        attention_forward(out, probs, qkv, pad, B, N, D, H, none, scratch);
        double worst = 0;
        int pad_ok = 1;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < H; h++)
                for (int i = 0; i < N; i++) {
                    const float *q = qkv + ((size_t)b * N + i) * 3 * D + h * Dh;
                    const float *p = probs + (((size_t)b * H + h) * N + i) * N;
                    double s[128], max = -INFINITY, sum = 0;
                    for (int j = 0; j < N; j++) {
                        const float *k = qkv + ((size_t)b * N + j) * 3 * D + D + h * Dh;
                        s[j] = 0;
                        for (int d = 0; d < Dh; d++)
                            s[j] += (double)q[d] * k[d];
                        s[j] /= sqrt((double)Dh);
                        if (!pad[b * N + j] && s[j] > max)
                            max = s[j];
                    }
                    for (int j = 0; j < N; j++)
                        sum += pad[b * N + j] ? 0 : exp(s[j] - max);
                    for (int j = 0; j < N; j++) {
                        if (pad[b * N + j]) {
                            pad_ok &= p[j] == 0;
                            continue;
                        }
                        const double err = fabs(p[j] - exp(s[j] - max) / sum);
                        worst = err > worst ? err : worst;
                    }
                }
        CHECK(worst < 2e-6, "attention probabilities over %d keys: largest error %.3g", N, worst);
        CHECK(pad_ok, "attention over %d keys: a padded key (or a row of padding) got a nonzero probability", N);
        free(qkv);
        free(out);
        free(probs);
        free(scratch);
        free(pad);
    }
}

/* Errors are printed as one line by cli/, so a message quoting bad input (a
 * JSON parser's "near '...'" can hold a newline) must still be one line. */
static void test_error_one_line(void)
{
    D2vError err;
    d2v_fail(&err, "x.json:3:1: invalid escape near '%s'", "\"\\\n\t\r");
    CHECK(strcspn(err.msg, "\n\r\t") == strlen(err.msg), "control bytes kept in an error: %s", err.msg);
    CHECK(strstr(err.msg, "near") != NULL, "error text lost: %s", err.msg);
    d2v_fail(&err, "bad\nvalue");
    d2v_fail_prefix(&err, "f\x01ile: ");
    CHECK(strcmp(err.msg, "f?ile: bad?value") == 0, "prefixed error: %s", err.msg);
}

int main(void)
{
    test_error_one_line();
    test_gelu_precision();
    test_bias_backward();
    test_layernorm_backward_threads();
    test_dropout_keep_mask();
    test_attention_softmax();
    test_layernorm_gelu_backward();
    test_targets();
    test_ema();
    test_adamw();
    test_schedules();
    test_rng();
    test_checkpoint();
    test_determinism();
    test_attention_memory();
    return check_summary();
}
