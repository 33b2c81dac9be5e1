/* speech.c — the speech modality (DESIGN §4, speech; issue 4): audio files
 * in, wav2vec 2.0's front-end, span masking with a learned mask embedding.
 * Ties audio_io (data), conv_encoder (front-end) and span_mask (masker) into
 * one Modality, in the shape of fairseq's Data2VecAudioModel:
 *
 *   wave (B,T) -> CNN -> LN -> Linear(C,D) = features (B,N,D)
 *   student: mask_emb at masked frames, x + pos_conv(x)
 *   teacher: the unmasked features, x + pos_conv(x) with the student's
 *            pos_conv (fairseq's ema_layers_only: the positional encoder is
 *            copied, not averaged, so it has no teacher copy here at all)
 *
 * Shapes: B batch, T samples, N frames, C CNN channels, D model width. */
#include "audio_io.h"
#include "conv_encoder.h"
#include "files.h"
#include "layers.h"
#include "registry.h"
#include "span_mask.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(real) == sizeof(float), "modalities are built in float only");

typedef struct {
    struct {
        char conv_spec[CONFIG_STR_LEN];
        int64_t pos_conv_kernel, pos_conv_groups, pos_conv_depth;
    } frontend;
    struct {
        double prob;
        int64_t span, min_masks;
    } mask;
    struct {
        int64_t sample_rate, max_samples, min_samples;
        char batching[CONFIG_STR_LEN]; /* crop | pad */
    } data;
} SpeechConfig;

#define KEY(sec, field, type, def, lo, hi, choices, help) \
    {#sec, #field, type, offsetof(SpeechConfig, sec.field), def, lo, hi, choices, help}

static const ConfigKey speech_keys[] = {
    KEY(frontend, conv_spec, CK_STRING, "512x10x5,512x3x2*4,512x2x2*2", 0, 0, NULL,
        "feature encoder convs, channels x kernel x stride, '*n' repeats (wav2vec 2.0: 20 ms frames)"),
    KEY(frontend, pos_conv_kernel, CK_INT, "19", 1, 1023, NULL,
        "kernel of each positional conv (data2vec: conv_pos 95 / depth 5)"),
    KEY(frontend, pos_conv_groups, CK_INT, "16", 1, 65536, NULL, "groups of each positional conv (divides dim)"),
    KEY(frontend, pos_conv_depth, CK_INT, "5", 1, POS_CONV_MAX_DEPTH, NULL, "stacked positional convs"),
    KEY(mask, prob, CK_FLOAT, "0.65", 0, 1, NULL, "probability that a frame starts a masked span"),
    KEY(mask, span, CK_INT, "10", 1, 100000, NULL, "frames per masked span"),
    KEY(mask, min_masks, CK_INT, "2", 0, 100000, NULL, "at least this many spans per utterance"),
    KEY(data, sample_rate, CK_INT, "16000", AUDIO_MIN_RATE, AUDIO_MAX_RATE, NULL,
        "the model's rate; other rates are resampled (libsoxr)"),
    KEY(data, max_samples, CK_INT, "320000", 1, 1e9, NULL, "longer utterances are cropped to this (random in training)"),
    KEY(data, min_samples, CK_INT, "32000", 0, 1e9, NULL, "shorter utterances are skipped and counted"),
    KEY(data, batching, CK_CHOICE, "crop", 0, 0, "crop|pad",
        "training batches: crop every row to the shortest (fairseq) or pad with a padding mask"),
};

/* ---- front-end --------------------------------------------------------------- */

typedef struct {
    ConvSpec spec;
    PosConvShape pos_shape;
    SpanMaskSpec mask_spec;
    int C, D, max_T, max_N;
    int threads; /* the layout's: the positional convs' scratch has a lane per thread */
    /* parameter offsets */
    size_t conv_w[CONV_MAX_LAYERS], conv_g[CONV_MAX_LAYERS], conv_b[CONV_MAX_LAYERS];
    size_t feat_g, feat_b, proj_w, proj_b, mask_emb;
    size_t pos_w[POS_CONV_MAX_DEPTH], pos_b[POS_CONV_MAX_DEPTH];
    /* activations, laid out for B x max_T; a batch uses a prefix */
    ConvEncoderBuffers cnn;
    PosConvBuffers pos;
    real *feat_mean, *feat_rstd, *feat_ln, *proj, *masked, *x_student, *x_teacher;
    real *d_pos_in, *d_masked, *d_proj, *d_feat_ln, *d_feat;
    uint8_t *frame_mask, *pad, *pool;
    int *frames; /* valid frames per row */
    /* this batch */
    ConvEncoderPlan cnn_plan;
    PosConvPlan pos_plan;
    const real *wave;
    int B, N, padded;
} SpeechFrontend;

/* Frames the CNN makes of `samples` valid samples (fairseq's
 * _get_feat_extract_output_lengths): a frame is valid only if its whole
 * receptive field is, so padding never leaks into a valid frame. */
static int frames_of(const ConvSpec *spec, int samples)
{
    int t = samples;
    for (int l = 0; l < spec->n_layers; l++)
        t = conv_out_length(t, spec->layer[l].kernel, spec->layer[l].stride);
    return t;
}

static void *speech_create(const D2vConfig *cfg, const void *mcfg, ParamStore *ps, D2vError *err)
{
    const SpeechConfig *c = mcfg;
    SpeechFrontend *f = d2v_calloc(1, sizeof *f, err);
    if (!f)
        return NULL;
    if (conv_spec_parse(&f->spec, c->frontend.conv_spec, err) < 0) {
        d2v_fail_prefix(err, "frontend.conv_spec: ");
        goto fail;
    }
    f->D = (int)cfg->model.dim;
    f->C = f->spec.layer[f->spec.n_layers - 1].channels;
    f->max_T = (int)c->data.max_samples;
    f->max_N = frames_of(&f->spec, f->max_T);
    if (c->data.min_samples > c->data.max_samples) {
        d2v_fail(err, "data.min_samples = %lld exceeds data.max_samples = %lld", (long long)c->data.min_samples,
                 (long long)c->data.max_samples);
        goto fail;
    }
    /* Every utterance that passes min_samples must give the CNN a frame. */
    int shortest = c->data.min_samples > 0 ? (int)c->data.min_samples : 1;
    if (frames_of(&f->spec, shortest) < 1) {
        int need = 1;
        while (need <= f->max_T && frames_of(&f->spec, need) < 1)
            need++;
        d2v_fail(err, "data.min_samples = %lld: the conv encoder needs at least %d samples for one frame "
                 "(frontend.conv_spec = %s)", (long long)c->data.min_samples, need, c->frontend.conv_spec);
        goto fail;
    }
    f->pos_shape = (PosConvShape){f->D, (int)c->frontend.pos_conv_kernel, (int)c->frontend.pos_conv_groups,
                                  (int)c->frontend.pos_conv_depth};
    if (f->D % f->pos_shape.groups) {
        d2v_fail(err, "frontend.pos_conv_groups = %d does not divide model.dim = %d", f->pos_shape.groups, f->D);
        goto fail;
    }
    f->mask_spec = (SpanMaskSpec){c->mask.prob, (int)c->mask.span, (int)c->mask.min_masks};

    /* Initialisation as fairseq: conv feature encoder kaiming normal
     * (ConvFeatureExtractionModel), the projection PyTorch's Linear default,
     * each positional conv PyTorch's Conv1d default (make_conv_block), the
     * mask embedding U(0,1). */
    char name[PARAM_NAME_LEN];
    int c_in = 1;
    for (int l = 0; l < f->spec.n_layers; l++) {
        const ConvLayerSpec *s = &f->spec.layer[l];
        const int64_t w_shape[2] = {s->channels, (int64_t)c_in * s->kernel}, n_shape[1] = {s->channels};
        const float kaiming = sqrtf(2.0f / (float)(c_in * s->kernel));
        snprintf(name, sizeof name, "frontend.conv.%d.weight", l);
        if (params_add(ps, name, PARAM_WEIGHT, 0, INIT_NORMAL, kaiming, 2, w_shape, err) < 0)
            goto fail;
        snprintf(name, sizeof name, "frontend.conv.%d.norm.weight", l);
        if (params_add(ps, name, PARAM_NORM, 0, INIT_ONE, 0, 1, n_shape, err) < 0)
            goto fail;
        snprintf(name, sizeof name, "frontend.conv.%d.norm.bias", l);
        if (params_add(ps, name, PARAM_NORM, 0, INIT_ZERO, 0, 1, n_shape, err) < 0)
            goto fail;
        c_in = s->channels;
    }
    const int64_t c_shape[1] = {f->C}, d_shape[1] = {f->D}, proj_shape[2] = {f->D, f->C};
    const float proj_bound = 1.0f / sqrtf((float)f->C);
    if (params_add(ps, "frontend.feature_norm.weight", PARAM_NORM, 0, INIT_ONE, 0, 1, c_shape, err) < 0 ||
        params_add(ps, "frontend.feature_norm.bias", PARAM_NORM, 0, INIT_ZERO, 0, 1, c_shape, err) < 0 ||
        params_add(ps, "frontend.proj.weight", PARAM_WEIGHT, 0, INIT_UNIFORM, proj_bound, 2, proj_shape, err) < 0 ||
        params_add(ps, "frontend.proj.bias", PARAM_BIAS, 0, INIT_UNIFORM, proj_bound, 1, d_shape, err) < 0 ||
        params_add(ps, "frontend.mask_emb", PARAM_EMBED, 0, INIT_UNIFORM_POSITIVE, 1.0f, 1, d_shape, err) < 0)
        goto fail;
    const int group_in = f->D / f->pos_shape.groups;
    const int64_t pw_shape[2] = {f->D, (int64_t)group_in * f->pos_shape.kernel};
    const float pos_bound = 1.0f / sqrtf((float)(group_in * f->pos_shape.kernel));
    for (int l = 0; l < f->pos_shape.depth; l++) {
        snprintf(name, sizeof name, "frontend.pos_conv.%d.weight", l);
        if (params_add(ps, name, PARAM_WEIGHT, 0, INIT_UNIFORM, pos_bound, 2, pw_shape, err) < 0)
            goto fail;
        snprintf(name, sizeof name, "frontend.pos_conv.%d.bias", l);
        if (params_add(ps, name, PARAM_BIAS, 0, INIT_UNIFORM, pos_bound, 1, d_shape, err) < 0)
            goto fail;
    }
    return f;
fail:
    free(f);
    return NULL;
}

static size_t offset_of(const ParamStore *ps, const char *name) { return ps->params[params_find(ps, name)].offset; }

static void speech_bind(void *fe, const ParamStore *ps)
{
    SpeechFrontend *f = fe;
    char name[PARAM_NAME_LEN];
    for (int l = 0; l < f->spec.n_layers; l++) {
        snprintf(name, sizeof name, "frontend.conv.%d.weight", l);
        f->conv_w[l] = offset_of(ps, name);
        snprintf(name, sizeof name, "frontend.conv.%d.norm.weight", l);
        f->conv_g[l] = offset_of(ps, name);
        snprintf(name, sizeof name, "frontend.conv.%d.norm.bias", l);
        f->conv_b[l] = offset_of(ps, name);
    }
    f->feat_g = offset_of(ps, "frontend.feature_norm.weight");
    f->feat_b = offset_of(ps, "frontend.feature_norm.bias");
    f->proj_w = offset_of(ps, "frontend.proj.weight");
    f->proj_b = offset_of(ps, "frontend.proj.bias");
    f->mask_emb = offset_of(ps, "frontend.mask_emb");
    for (int l = 0; l < f->pos_shape.depth; l++) {
        snprintf(name, sizeof name, "frontend.pos_conv.%d.weight", l);
        f->pos_w[l] = offset_of(ps, name);
        snprintf(name, sizeof name, "frontend.pos_conv.%d.bias", l);
        f->pos_b[l] = offset_of(ps, name);
    }
}

static int speech_max_positions(const void *fe) { return ((const SpeechFrontend *)fe)->max_N; }

static void speech_layout(void *fe, Arena *a, Arena *scratch, int B, int threads)
{
    SpeechFrontend *f = fe;
    ConvEncoderPlan cp;
    PosConvPlan pp;
    f->threads = threads;
    /* create() checked that max_T gives frames and the groups divide D. */
    if (conv_encoder_plan(&cp, &f->spec, B, f->max_T, NULL) < 0 ||
        pos_conv_plan(&pp, f->pos_shape, B, f->max_N, threads, NULL) < 0)
        abort();
    /* Kept for the backward: the CNN's conv outputs and statistics, its
     * output, the positional convs' activations, the feature norm's. */
    for (int l = 0; l < cp.n_layers; l++) {
        f->cnn.conv[l] = arena_take(a, cp.act_size[l]);
        f->cnn.mean[l] = arena_take(a, cp.stat_size[l]);
        f->cnn.rstd[l] = arena_take(a, cp.stat_size[l]);
    }
    f->cnn.out = arena_take(a, cp.act_size[cp.n_layers - 1]);
    for (int l = 0; l <= pp.shape.depth; l++)
        f->pos.layer_in[l] = arena_take(a, pp.act_size);
    for (int l = 0; l < pp.shape.depth; l++) {
        f->pos.conv[l] = arena_take(a, pp.act_size);
        f->pos.normed[l] = arena_take(a, pp.act_size);
        f->pos.mean[l] = arena_take(a, pp.stat_size);
        f->pos.rstd[l] = arena_take(a, pp.stat_size);
    }
    const size_t BN = (size_t)B * f->max_N, C = (size_t)f->C, D = (size_t)f->D;
    f->feat_mean = arena_take(a, BN);
    f->feat_rstd = arena_take(a, BN);
    f->feat_ln = arena_take(a, BN * C);
    f->x_student = arena_take(a, BN * D);
    f->x_teacher = arena_take(a, BN * D);
    f->frame_mask = arena_take_bytes(a, BN);
    f->pad = arena_take_bytes(a, BN);
    f->pool = arena_take_bytes(a, BN);
    f->frames = arena_take_bytes(a, (size_t)B * sizeof(int));
    /* Used within one forward or backward only: the CNN's im2col columns,
     * layer outputs and gradients (the largest buffers at 2 s crops), the
     * positional convs' scratch, the projection's and the gradients. */
    f->cnn.act = arena_take(scratch, cp.act_max);
    f->cnn.cols = arena_take(scratch, cp.cols_size);
    f->cnn.grad = arena_take(scratch, cp.grad_size);
    f->cnn.weight_kc = arena_take(scratch, 2 * cp.weight_max);
    f->pos.cols = arena_take(scratch, (size_t)pp.lanes * pp.cols_size);
    f->pos.weight_kc = arena_take(scratch, (size_t)pp.lanes * 2 * pp.group_weight_size);
    f->pos.grad_a = arena_take(scratch, pp.act_size);
    f->pos.grad_b = arena_take(scratch, pp.act_size);
    f->proj = arena_take(scratch, BN * D);
    f->masked = arena_take(scratch, BN * D);
    f->d_feat_ln = arena_take(scratch, BN * C);
    f->d_feat = arena_take(scratch, BN * C);
    f->d_pos_in = arena_take(scratch, BN * D);
    f->d_masked = arena_take(scratch, BN * D);
    f->d_proj = arena_take(scratch, BN * D);
}

static void speech_destroy(void *fe) { free(fe); }

static void gather_params(const SpeechFrontend *f, const real *w, ConvEncoderParams *cnn, PosConvParams *pos)
{
    for (int l = 0; l < f->spec.n_layers; l++) {
        cnn->weight[l] = (real *)w + f->conv_w[l];
        cnn->ln_gain[l] = (real *)w + f->conv_g[l];
        cnn->ln_bias[l] = (real *)w + f->conv_b[l];
    }
    for (int l = 0; l < f->pos_shape.depth; l++) {
        pos->weight[l] = (real *)w + f->pos_w[l];
        pos->bias[l] = (real *)w + f->pos_b[l];
    }
}

/* x + pos_conv(x), padded frames of x zeroed first (fairseq's
 * extract_features zeroes them before the positional conv). */
static void add_positions(SpeechFrontend *f, real *out, real *x, const PosConvParams *pos)
{
    const size_t D = (size_t)f->D;
    if (f->padded)
        for (size_t i = 0; i < (size_t)f->B * f->N; i++)
            if (f->pad[i])
                memset(x + i * D, 0, D * sizeof(real));
    pos_conv_forward(&f->pos, x, f->padded ? f->frames : NULL, pos, &f->pos_plan);
    residual_forward(out, x, f->pos.layer_in[f->pos_shape.depth], (size_t)f->B * f->N * D);
}

static void speech_forward(void *fe, const real *w, const Batch *batch, Rng *mask_rng, ForwardMode mode,
                           FrontendOut *out)
{
    SpeechFrontend *f = fe;
    const int B = batch->B, C = f->C, D = f->D;
    ConvEncoderParams cnn;
    PosConvParams pos;
    gather_params(f, w, &cnn, &pos);
    /* The loader guarantees B and T within the layout and every row at least
     * min_samples long (checked to give a frame in create()). */
    if (conv_encoder_plan(&f->cnn_plan, &f->spec, B, batch->T, NULL) < 0)
        abort();
    const int N = conv_encoder_frames(&f->cnn_plan);
    if (pos_conv_plan(&f->pos_plan, f->pos_shape, B, N, f->threads, NULL) < 0)
        abort();
    f->B = B;
    f->N = N;
    f->wave = batch->data;
    const size_t M = (size_t)B * N;

    /* Which frames are padding: those past a row's own frame count. */
    f->padded = 0;
    for (int b = 0; b < B; b++) {
        f->frames[b] = frames_of(&f->spec, batch->lengths[b]);
        f->padded |= f->frames[b] < N;
        for (int t = 0; t < N; t++) {
            f->pad[(size_t)b * N + t] = t >= f->frames[b];
            f->pool[(size_t)b * N + t] = t < f->frames[b];
        }
    }

    /* Features: CNN, layer norm over channels, projection to D (wav2vec 2.0 §2). */
    conv_encoder_forward(&f->cnn, batch->data, &cnn, &f->cnn_plan);
    const real *cnn_out = f->cnn.out;
    layernorm_forward(f->feat_ln, f->feat_mean, f->feat_rstd, cnn_out, w + f->feat_g, w + f->feat_b, (int)M, C,
                      CONV_LN_EPS);
    linear_forward(f->proj, f->feat_ln, w + f->proj_w, w + f->proj_b, (int)M, C, D);

    /* Span masking over valid frames, the same count in every row
     * (paper §3.3, speech; fairseq compute_mask_indices). */
    memset(f->frame_mask, 0, M);
    /* Per-row draws (Batch.row0); the same count over every rank's rows. */
    if (mode.train && span_mask_rows(f->frame_mask, B, N, f->frames, &f->mask_spec, mask_rng, batch->row0,
                                     batch->agree_min, batch->agree_ctx) < 0)
        abort(); /* only on an allocation failure of a few ints */
    mask_embed_forward(f->masked, f->proj, f->frame_mask, w + f->mask_emb, (int)M, D);

    /* The teacher's input first, then the student's, so the positional
     * conv's buffers hold the student's activations for the backward. */
    add_positions(f, f->x_teacher, f->proj, &pos);
    add_positions(f, f->x_student, f->masked, &pos);
    *out = (FrontendOut){B, N, f->x_student, f->x_teacher, f->frame_mask, f->padded ? f->pad : NULL, f->pool, -1};
}

static void speech_backward(void *fe, const real *w, real *g, const real *d_x_student, ForwardMode mode)
{
    (void)mode;
    SpeechFrontend *f = fe;
    const int B = f->B, N = f->N, C = f->C, D = f->D;
    const size_t M = (size_t)B * N;
    ConvEncoderParams cnn, cnn_grad;
    PosConvParams pos, pos_grad;
    gather_params(f, w, &cnn, &pos);
    gather_params(f, g, &cnn_grad, &pos_grad);

    /* x + pos_conv(x): both paths; padded frames of x were zeroed, so they
     * pass no gradient. */
    pos_conv_backward(f->d_pos_in, &pos_grad, d_x_student, f->padded ? f->frames : NULL, &pos, &f->pos, &f->pos_plan);
    for (size_t i = 0; i < M; i++) {
        real *d = f->d_masked + i * D;
        if (f->padded && f->pad[i]) {
            memset(d, 0, (size_t)D * sizeof(real));
            continue;
        }
        for (int j = 0; j < D; j++)
            d[j] = d_x_student[i * D + j] + f->d_pos_in[i * D + j];
    }
    mask_embed_backward(f->d_proj, g + f->mask_emb, f->d_masked, f->frame_mask, (int)M, D);
    linear_backward(f->d_feat_ln, g + f->proj_w, g + f->proj_b, f->d_proj, f->feat_ln, w + f->proj_w, (int)M, C, D, 0);
    layernorm_backward(f->d_feat, g + f->feat_g, g + f->feat_b, f->d_feat_ln, f->cnn.out,
                       f->feat_mean, f->feat_rstd, w + f->feat_g, (int)M, C);
    /* The waveform learns nothing: no gradient into it. */
    conv_encoder_backward(NULL, &cnn_grad, f->d_feat, f->wave, &cnn, &f->cnn, &f->cnn_plan);
}

/* ---- data ---------------------------------------------------------------------- */

/* What libsndfile reads; the decoder, not the extension, has the last word. */
static const char *const audio_extensions[] = {"wav", "flac", "ogg", "oga", "opus", "aiff", "aif", "au", NULL};

static int speech_open(const void *mcfg, const char *path, int labeled, void **dataset, D2vError *err)
{
    (void)mcfg;
    return file_dataset_open(path, audio_extensions, labeled, dataset, err);
}

static int speech_batch_alloc(const void *mcfg, int B, Batch *batch, D2vError *err)
{
    const SpeechConfig *c = mcfg;
    memset(batch, 0, sizeof *batch);
    batch->data = d2v_malloc((size_t)B * (size_t)c->data.max_samples * sizeof(float), err);
    batch->lengths = d2v_malloc((size_t)B * sizeof(int), err);
    batch->labels = d2v_malloc((size_t)B * sizeof(int), err);
    batch->items = d2v_malloc((size_t)B * sizeof(int), err);
    return batch->data && batch->lengths && batch->labels && batch->items ? 0 : -1;
}

/* Rows are read at stride max_samples, then packed to stride T:
 *  - crop (training, fairseq's default): T = the shortest row; longer rows
 *    keep a random window of T, so no frame is padding;
 *  - pad (training with data.batching = pad, and always for evaluation, so
 *    an embedding never depends on the other rows of its batch): T = the
 *    longest row, the rest zero, lengths mark the valid samples. */
static int speech_load_batch(const void *mcfg, void *dataset, const int *items, int B, int train, Rng *rng,
                             int skip_bad, void (*warn)(void *ctx, const char *msg), void *warn_ctx, Batch *batch,
                             D2vError *err)
{
    const SpeechConfig *c = mcfg;
    const FileList *files = dataset;
    const int64_t stride = c->data.max_samples;
    batch->B = B;
    batch->skipped = 0;
    for (int i = 0; i < B; i++) {
        int item = items[i];
        int64_t n = 0;
        Rng row_rng; /* the row's own draws: see Batch.row0 */
        rng_substream(&row_rng, rng, (uint64_t)(batch->row0 + i));
        /* An unreadable or too short file is replaced by the next one
         * (deterministically), at most a dataset's worth of tries. Too short
         * is a size filter, not an error, so it is skipped even under
         * data.on_error = fail. */
        for (int tries = 0;; tries++) {
            int rc = audio_load(files->paths[item], (int)c->data.sample_rate, c->data.max_samples,
                                c->data.min_samples, train, &row_rng, batch->data + i * stride, &n, err);
            if (rc == 0)
                break;
            if ((!skip_bad && rc != AUDIO_TOO_SHORT) || tries + 1 >= files->n) {
                if (tries + 1 >= files->n)
                    d2v_fail_prefix(err, "no usable file in the whole dataset; the last: ");
                return -1;
            }
            if (warn)
                warn(warn_ctx, err->msg);
            batch->skipped++;
            item = (item + 1) % files->n;
        }
        batch->lengths[i] = (int)n;
        batch->items[i] = item;
        batch->labels[i] = files->labels ? files->labels[item] : -1;
    }
    const int crop = train && strcmp(c->data.batching, "crop") == 0;
    int T = batch->lengths[0];
    for (int i = 1; i < B; i++)
        T = crop ? (batch->lengths[i] < T ? batch->lengths[i] : T) : (batch->lengths[i] > T ? batch->lengths[i] : T);
    for (int i = 0; i < B; i++) {
        float *row = batch->data + i * stride;
        int n = batch->lengths[i], offset = 0;
        if (crop && n > T) {
            /* The crop window: sub-streams from 2^23 on, one per row. */
            Rng crop_rng;
            rng_substream(&crop_rng, rng, (1u << 23) + (uint64_t)(batch->row0 + i));
            offset = (int)rng_below(&crop_rng, (uint32_t)(n - T + 1));
        }
        /* Row i moves to i*T <= i*stride: memmove, never past a later row. */
        memmove(batch->data + (size_t)i * T, row + offset, (size_t)(crop ? T : n) * sizeof(float));
        if (crop)
            batch->lengths[i] = T;
    }
    if (!crop)
        for (int i = 0; i < B; i++)
            memset(batch->data + (size_t)i * T + batch->lengths[i], 0,
                   (size_t)(T - batch->lengths[i]) * sizeof(float));
    batch->T = T;
    return 0;
}

/* Full-length rows (data.max_samples) of unit-variance noise: the shape
 * of a cropped training batch after per-utterance normalisation. */
static void speech_synthetic_batch(const void *fe, const void *mcfg, int B, Rng *rng, Batch *batch)
{
    (void)fe;
    const SpeechConfig *c = mcfg;
    const int T = (int)c->data.max_samples;
    for (size_t i = 0; i < (size_t)B * T; i++)
        batch->data[i] = rng_normal(rng);
    for (int b = 0; b < B; b++) {
        batch->lengths[b] = T;
        batch->labels[b] = batch->items[b] = -1;
    }
    batch->B = B;
    batch->T = T;
}

/* The CNN's convolutions (as im2col GEMMs), the projection C -> D and the
 * grouped positional convolutions, at max_samples per row. Backward is
 * twice forward, except the first CNN layer, which needs no gradient for
 * the waveform. */
static void speech_flops(const void *fe, int B, double *forward, double *backward)
{
    const SpeechFrontend *f = fe;
    ConvEncoderPlan plan;
    *forward = *backward = 0;
    if (conv_encoder_plan(&plan, &f->spec, B, f->max_T, NULL) < 0)
        return;
    for (int l = 0; l < plan.n_layers; l++) {
        const double conv = 2.0 * B * plan.t_out[l] * plan.c_out[l] * plan.c_in[l] * plan.kernel[l];
        *forward += conv;
        *backward += l == 0 ? conv : 2 * conv;
    }
    const double M = (double)B * conv_encoder_frames(&plan);
    const double proj = 2 * M * f->C * f->D;
    const double pos = f->pos_shape.depth * 2 * M * f->D * ((double)f->D / f->pos_shape.groups) * f->pos_shape.kernel;
    /* The positional convs run forward twice: on the teacher's unmasked and
     * the student's masked input. */
    *forward += proj + 2 * pos;
    *backward += 2 * (proj + pos);
}

static double speech_batch_amount(const void *mcfg, const Batch *batch, const char **unit)
{
    const SpeechConfig *c = mcfg;
    double samples = 0;
    for (int b = 0; b < batch->B; b++)
        samples += batch->lengths[b];
    *unit = "s of audio";
    return samples / (double)c->data.sample_rate;
}

/* `d2v show`: the waveform of the row, and the CNN's frame grid over it
 * (hop = the product of the strides, window = the receptive field). */
static int speech_view(const void *fe, const void *mcfg, const Batch *batch, int row, InputView *view, D2vError *err)
{
    const SpeechFrontend *f = fe;
    const SpeechConfig *c = mcfg;
    memset(view, 0, sizeof *view);
    view->kind = VIEW_SIGNAL;
    view->n_positions = f->frames[row];
    view->n_samples = batch->lengths[row];
    view->sample_rate = (int)c->data.sample_rate;
    int hop = 1, window = 1;
    for (int l = 0; l < f->spec.n_layers; l++) {
        window += (f->spec.layer[l].kernel - 1) * hop;
        hop *= f->spec.layer[l].stride;
    }
    view->hop = hop;
    view->window = window;
    view->samples = d2v_malloc((size_t)view->n_samples * sizeof(float), err);
    if (!view->samples)
        return -1;
    memcpy(view->samples, batch->data + (size_t)row * batch->T, (size_t)view->n_samples * sizeof(float));
    return 0;
}

const Modality speech_modality = {
    .name = "speech",
    .keys = speech_keys,
    .n_keys = (int)(sizeof speech_keys / sizeof *speech_keys),
    .config_size = sizeof(SpeechConfig),
    .create = speech_create,
    .bind = speech_bind,
    .max_positions = speech_max_positions,
    .layout = speech_layout,
    .destroy = speech_destroy,
    .open = speech_open,
    .dataset_size = file_dataset_size,
    .dataset_classes = file_dataset_classes,
    .item_name = file_dataset_item_name,
    .dataset_close = file_dataset_close,
    .batch_alloc = speech_batch_alloc,
    .batch_free = batch_free_arrays,
    .synthetic_batch = speech_synthetic_batch,
    .flops = speech_flops,
    .batch_amount = speech_batch_amount,
    .load_batch = speech_load_batch,
    .forward = speech_forward,
    .backward = speech_backward,
    .view = speech_view,
};
