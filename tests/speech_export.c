/* speech_export.c — runs the speech front-end (modalities/speech.c) on a
 * small padded batch, forward and backward, and writes everything an
 * independent implementation needs to redo it (config, weights, waveform,
 * lengths, the drawn frame mask, d_x_student) together with what C computed
 * (pad and pool masks, x_student, x_teacher, every parameter gradient) into
 * one safetensors file per case. reference/speech_crosscheck.py redoes it in
 * PyTorch the way fairseq's Data2VecAudioModel does and compares.
 *
 * The front-end is reached only through the Modality table, configured by
 * the modality's own config keys, exactly as model_build and the CLI do, so
 * what is checked is what training runs.
 *
 * usage: speech_export OUTDIR */
#include "conv_encoder.h"
#include "loader.h"
#include "registry.h"
#include "rng.h"
#include "safetensors.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { BATCH = 3, SAMPLES = 800, MAX_SETS = 24, MAX_KEEP = 256 };

typedef struct {
    const char *name;
    /* --set style overrides on top of every key's default */
    const char *sets[MAX_SETS];
    int lengths[BATCH];
} SpeechCase;

/* Shared by every case: a model small enough to check by brute force. The
 * Transformer keys only have to pass validation; the front-end never reads
 * them. mask.prob and mask.min_masks stay at their defaults; the span is
 * shortened because rows have only 12..19 frames. */
#define COMMON_SETS                                                                             \
    "model.modality=speech", "model.dim=16", "model.heads=4", "model.layers=2", "model.ffn_dim=32", \
        "target.top_k=2", "frontend.conv_spec=8x10x5,8x3x2*2,8x2x2", "mask.span=3",            \
        "data.max_samples=800", "data.min_samples=400", "data.batching=pad"

/* 800 samples give 19 frames, 660 give 16, 520 give 12, and 797 still 19. */
static const SpeechCase cases[] = {
    /* odd kernel: Conv1d(padding=K/2) keeps the length, SamePad is a no-op */
    {"odd_kernel",
     {COMMON_SETS, "frontend.pos_conv_kernel=5", "frontend.pos_conv_groups=4", "frontend.pos_conv_depth=2"},
     {800, 660, 520}},
    /* even kernel: SamePad drops the extra last frame; the longest row is
     * not the first, so nothing may assume row 0 is full */
    {"even_kernel",
     {COMMON_SETS, "frontend.pos_conv_kernel=4", "frontend.pos_conv_groups=4", "frontend.pos_conv_depth=2"},
     {520, 800, 660}},
    /* rows shorter than T in samples but not in frames: no frame is padding
     * (the un-padded path), and a depthwise pos conv (groups = D) of depth 3 */
    {"full_frames_depthwise",
     {COMMON_SETS, "frontend.pos_conv_kernel=3", "frontend.pos_conv_groups=16", "frontend.pos_conv_depth=3"},
     {800, 797, 800}},
};

/* Copies of buffers the writer points at until it saves. */
typedef struct {
    void *blocks[MAX_KEEP];
    int n;
} Keep;

static void *keep(Keep *k, const void *src, size_t bytes)
{
    if (k->n == MAX_KEEP)
        abort(); /* a test bug: raise MAX_KEEP */
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        abort();
    memcpy(p, src, bytes);
    k->blocks[k->n++] = p;
    return p;
}

static int add_tensor(StWriter *w, Keep *k, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                      const void *data, size_t bytes, D2vError *err)
{
    return st_writer_add(w, keep(k, name, strlen(name) + 1), dtype, ndim, shape, keep(k, data, bytes), err);
}

static int add_params(StWriter *w, Keep *k, const ParamStore *ps, const real *buffer, const char *prefix,
                      D2vError *err)
{
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->params[i];
        char name[PARAM_NAME_LEN + 32];
        snprintf(name, sizeof name, "%s%s", prefix, p->name);
        if (add_tensor(w, k, name, ST_F32, p->ndim, p->shape, buffer + p->offset, p->numel * sizeof(real), err) < 0)
            return -1;
    }
    return 0;
}

static int export_case(const SpeechCase *sc, int index, const char *outdir, D2vError *err)
{
    const Modality *mod = &speech_modality;
    D2vConfig cfg;
    void *mcfg = calloc(1, mod->config_size);
    if (!mcfg)
        return d2v_fail(err, "out of memory");
    ConfigTable tables[2] = {d2v_config_table(&cfg), {mod->keys, mod->n_keys, mcfg}};
    int rc = config_defaults(tables, 2, err);
    for (int i = 0; i < MAX_SETS && sc->sets[i] && rc == 0; i++)
        rc = config_set(tables, 2, sc->sets[i], err);
    rc = rc ? rc : d2v_config_validate(&cfg, err);
    if (rc < 0) {
        free(mcfg);
        return -1;
    }

    /* create -> alloc -> bind -> init, as model_build does. */
    ParamStore ps = {0};
    void *fe = mod->create(&cfg, mcfg, &ps, err);
    if (!fe || params_alloc(&ps, err) < 0) {
        free(mcfg);
        params_free(&ps);
        return -1;
    }
    mod->bind(fe, &ps);
    Rng rng;
    rng_init(&rng, 100 + (uint64_t)index, rng_stream(STREAM_INIT, 0));
    params_init(&ps, &rng);
    /* Norm gains of 1 and zero biases would hide a swapped gain and bias or a
     * missing bias: move them off their initial values. */
    for (int i = 0; i < ps.count; i++) {
        const Param *p = &ps.params[i];
        if (p->kind == PARAM_NORM || p->kind == PARAM_BIAS)
            for (size_t j = 0; j < p->numel; j++)
                ps.value[p->offset + j] += 0.2f * rng_normal(&rng);
    }

    /* Measure the layout, allocate once, lay it out for real (arena.h). */
    Arena measure = {0}, measure_scratch = {0}, arena = {0}, scratch = {0};
    mod->layout(fe, &measure, &measure_scratch, BATCH, 1);
    if (arena_alloc(&arena, measure.used, err) < 0 || arena_alloc(&scratch, measure_scratch.used, err) < 0) {
        arena_free(&arena);
        mod->destroy(fe);
        params_free(&ps);
        free(mcfg);
        return -1;
    }
    mod->layout(fe, &arena, &scratch, BATCH, 1);

    /* A padded batch as speech_load_batch leaves it: row b holds lengths[b]
     * samples, zeros after, T = the configured maximum. */
    float *wave = calloc((size_t)BATCH * SAMPLES, sizeof(float));
    if (!wave)
        abort();
    int lengths[BATCH];
    for (int b = 0; b < BATCH; b++) {
        lengths[b] = sc->lengths[b];
        for (int t = 0; t < lengths[b]; t++)
            wave[(size_t)b * SAMPLES + t] = rng_normal(&rng);
    }
    Batch batch = {.B = BATCH, .T = SAMPLES, .data = wave, .lengths = lengths};

    Rng mask_rng;
    rng_init(&mask_rng, 7 + (uint64_t)index, rng_stream(STREAM_MASK, 0));
    const ForwardMode mode = {.seed = 1, .step = 0, .train = 1};
    FrontendOut out;
    mod->forward(fe, ps.value, &batch, &mask_rng, mode, &out);
    const int N = out.N, D = (int)cfg.model.dim;
    const size_t BN = (size_t)BATCH * N, BND = BN * D;

    /* Taken now: the backward owns the front-end's buffers afterwards. */
    uint8_t *pad = calloc(BN, 1); /* NULL pad in FrontendOut means none */
    real *d_x = malloc(BND * sizeof(real));
    if (!pad || !d_x)
        abort();
    if (out.pad)
        memcpy(pad, out.pad, BN);
    StWriter w;
    st_writer_init(&w);
    Keep k = {.n = 0};
    const int64_t wave_shape[2] = {BATCH, SAMPLES}, x_shape[3] = {BATCH, N, D}, m_shape[2] = {BATCH, N},
                  b_shape[1] = {BATCH};
    rc = add_tensor(&w, &k, "x_student", ST_F32, 3, x_shape, out.x_student, BND * sizeof(real), err);
    rc = rc ? rc : add_tensor(&w, &k, "x_teacher", ST_F32, 3, x_shape, out.x_teacher, BND * sizeof(real), err);

    /* Backward from a random d_x_student over every frame, padded ones too:
     * pos_conv(x) is nonzero there, so its weights do get gradient from them.
     * The gradient buffer starts non-zero to check that backward adds. */
    for (size_t i = 0; i < BND; i++)
        d_x[i] = rng_normal(&rng);
    for (size_t i = 0; i < ps.numel; i++)
        ps.grad[i] = 0.01f * rng_normal(&rng);
    rc = rc ? rc : add_params(&w, &k, &ps, ps.grad, "grad_init.", err);
    mod->backward(fe, ps.value, ps.grad, d_x, mode);

    rc = rc ? rc : add_params(&w, &k, &ps, ps.value, "param.", err);
    rc = rc ? rc : add_params(&w, &k, &ps, ps.grad, "grad.", err);
    rc = rc ? rc : add_tensor(&w, &k, "wave", ST_F32, 2, wave_shape, wave, (size_t)BATCH * SAMPLES * sizeof(float), err);
    rc = rc ? rc : add_tensor(&w, &k, "d_x_student", ST_F32, 3, x_shape, d_x, BND * sizeof(real), err);
    rc = rc ? rc : add_tensor(&w, &k, "lengths", ST_I32, 1, b_shape, lengths, sizeof lengths, err);
    /* Byte-sized tensors last, so every wider one stays aligned. */
    rc = rc ? rc : add_tensor(&w, &k, "frame_mask", ST_U8, 2, m_shape, out.loss_mask, BN, err);
    rc = rc ? rc : add_tensor(&w, &k, "pad", ST_U8, 2, m_shape, pad, BN, err);
    rc = rc ? rc : add_tensor(&w, &k, "pool", ST_U8, 2, m_shape, out.pool, BN, err);

    /* The resolved config: the reference reads its shapes from here. */
    char *config_text = config_dump(tables, 2);
    rc = rc ? rc : (config_text ? 0 : d2v_fail(err, "out of memory"));
    rc = rc ? rc : st_writer_meta(&w, "case", sc->name, err);
    rc = rc ? rc : st_writer_meta(&w, "config", config_text, err);
    char eps[32];
    snprintf(eps, sizeof eps, "%.17g", (double)CONV_LN_EPS);
    rc = rc ? rc : st_writer_meta(&w, "layer_norm_eps", eps, err);
    char path[4096];
    snprintf(path, sizeof path, "%s/speech%d_%s.safetensors", outdir, index, sc->name);
    rc = rc ? rc : st_writer_save(&w, path, err);
    if (rc == 0) {
        int masked = 0;
        for (size_t i = 0; i < BN; i++)
            masked += out.loss_mask[i];
        printf("wrote %s (N = %d frames, %d masked, padded: %s)\n", path, N, masked, out.pad ? "yes" : "no");
    }

    st_writer_free(&w);
    for (int i = 0; i < k.n; i++)
        free(k.blocks[i]);
    free(config_text);
    free(d_x);
    free(pad);
    free(wave);
    arena_free(&arena);
    arena_free(&scratch);
    mod->destroy(fe);
    params_free(&ps);
    free(mcfg);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: speech_export OUTDIR\n");
        return 2;
    }
    mkdir(argv[1], 0755);
    D2vError err;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        if (export_case(&cases[i], (int)i, argv[1], &err) < 0) {
            fprintf(stderr, "speech_export: case %s: %s\n", cases[i].name, err.msg);
            return 1;
        }
    return 0;
}
