/* conv_encoder.c — the speech front-end (wav2vec 2.0 §2, data2vec audio): the
 * conv feature encoder and the convolutional positional encoder, each conv
 * done as GEMMs over its windows (im2col, or the windows read in place). */
#include "conv_encoder.h"

#include "layers.h"

#include <ctype.h>
#include <omp.h>
#include <string.h>

/* Windows this narrow (the first layer's: one channel, K = 10) give the
 * weight gradient's product too few rows of C for the threads to share;
 * conv1d_weight_grad_gemm gives each thread whole waveforms instead. */
#define NARROW_WINDOW 16

/* ---- spec parsing ---------------------------------------------------------------------- */

#define SPEC_MAX_VALUE 1000000 /* far beyond any real layer; keeps products in range */
#define SPEC_FORMAT "expected channels x kernel x stride[*repeat], comma-separated, e.g. \"512x10x5,512x3x2*4\""

/* Reads a positive decimal at *pos. No sign, no spaces: the spec is a config
 * string, and a typo should fail loudly rather than be half-read. */
static int spec_number(int *value, const char *text, size_t *pos, const char *what, D2vError *err)
{
    size_t i = *pos;
    if (!isdigit((unsigned char)text[i]))
        return d2v_fail(err, "conv spec \"%s\": expected %s at position %zu; " SPEC_FORMAT, text, what, i);
    long v = 0;
    for (; isdigit((unsigned char)text[i]); i++) {
        v = v * 10 + (text[i] - '0');
        if (v > SPEC_MAX_VALUE)
            return d2v_fail(err, "conv spec \"%s\": %s at position %zu is too large", text, what, *pos);
    }
    if (v == 0)
        return d2v_fail(err, "conv spec \"%s\": %s at position %zu must be positive", text, what, *pos);
    *value = (int)v;
    *pos = i;
    return 0;
}

static int spec_expect(char c, const char *text, size_t *pos, D2vError *err)
{
    if (text[*pos] != c)
        return d2v_fail(err, "conv spec \"%s\": expected '%c' at position %zu; " SPEC_FORMAT, text, c, *pos);
    (*pos)++;
    return 0;
}

int conv_spec_parse(ConvSpec *spec, const char *text, D2vError *err)
{
    memset(spec, 0, sizeof *spec);
    if (!text || !*text)
        return d2v_fail(err, "conv spec is empty; " SPEC_FORMAT);
    size_t pos = 0;
    for (;;) {
        ConvLayerSpec layer;
        int repeat = 1;
        if (spec_number(&layer.channels, text, &pos, "channels", err) || spec_expect('x', text, &pos, err) ||
            spec_number(&layer.kernel, text, &pos, "kernel", err) || spec_expect('x', text, &pos, err) ||
            spec_number(&layer.stride, text, &pos, "stride", err))
            return -1;
        if (text[pos] == '*') {
            pos++;
            if (spec_number(&repeat, text, &pos, "repeat count", err))
                return -1;
        }
        if (repeat > CONV_MAX_LAYERS - spec->n_layers)
            return d2v_fail(err, "conv spec \"%s\": more than %d layers", text, CONV_MAX_LAYERS);
        for (int r = 0; r < repeat; r++)
            spec->layer[spec->n_layers++] = layer;
        if (text[pos] == '\0')
            return 0;
        if (spec_expect(',', text, &pos, err))
            return -1;
    }
}

/* ---- feature encoder plan ------------------------------------------------------------- */

static size_t size_max(size_t a, size_t b) { return a > b ? a : b; }

int conv_encoder_plan(ConvEncoderPlan *plan, const ConvSpec *spec, int B, int T, D2vError *err)
{
    memset(plan, 0, sizeof *plan);
    if (spec->n_layers < 1 || spec->n_layers > CONV_MAX_LAYERS)
        return d2v_fail(err, "conv encoder: %d layers (need 1..%d)", spec->n_layers, CONV_MAX_LAYERS);
    plan->n_layers = spec->n_layers;
    plan->B = B;
    plan->grad_size = (size_t)B * T; /* the waveform, one channel */
    int t = T, c = 1;
    for (int l = 0; l < spec->n_layers; l++) {
        const ConvLayerSpec *s = &spec->layer[l];
        int t_out = conv_out_length(t, s->kernel, s->stride);
        if (t_out < 1)
            return d2v_fail(err, "conv encoder: %d samples are too few, layer %d (kernel %d) gets %d frames",
                            T, l, s->kernel, t);
        plan->c_in[l] = c;
        plan->c_out[l] = s->channels;
        plan->kernel[l] = s->kernel;
        plan->stride[l] = s->stride;
        plan->t_in[l] = t;
        plan->t_out[l] = t_out;
        plan->act_size[l] = (size_t)B * t_out * s->channels;
        plan->stat_size[l] = (size_t)B * t_out;
        plan->weight_size[l] = (size_t)s->channels * c * s->kernel;
        plan->cols_size = size_max(plan->cols_size, (size_t)B * t_out * c * s->kernel);
        /* conv1d_weight_grad_gemm's per-waveform products of a narrow layer */
        if (c * s->kernel <= NARROW_WINDOW)
            plan->cols_size = size_max(plan->cols_size, (size_t)B * c * s->kernel * s->channels);
        plan->weight_max = size_max(plan->weight_max, plan->weight_size[l]);
        plan->act_max = size_max(plan->act_max, plan->act_size[l]);
        plan->grad_size = size_max(plan->grad_size, plan->act_size[l]);
        t = t_out;
        c = s->channels;
    }
    return 0;
}

/* ---- im2col / col2im for a valid, strided conv ------------------------------------------ */

void conv1d_im2col(real *cols, const real *x, int B, int T_in, int C_in, int K, int S)
{
    const int T_out = conv_out_length(T_in, K, S), width = C_in * K;
    /* One row per output frame, each written by one thread. */
#pragma omp parallel for schedule(static)
    for (int row = 0; row < B * T_out; row++) {
        const int b = row / T_out, t = row % T_out;
        memcpy(cols + (size_t)row * width, x + ((size_t)b * T_in + (size_t)t * S) * C_in,
               (size_t)width * sizeof(real));
    }
}

void conv1d_col2im(real *d_x, const real *d_cols, int B, int T_in, int C_in, int K, int S)
{
    const int T_out = conv_out_length(T_in, K, S), width = C_in * K;
    /* The scatter-add of d_cols back onto the input, written as a gather:
     * each input frame sums the (t, k) with t*S + k == t_in, so every thread
     * owns its output rows (no atomics) and the sum order is fixed. Frames
     * past the last window ((T - K) % S tail) get zero, as they are unread. */
#pragma omp parallel for schedule(static)
    for (int row = 0; row < B * T_in; row++) {
        const int b = row / T_in, t_in = row % T_in;
        real *dx = d_x + (size_t)row * C_in;
        for (int c = 0; c < C_in; c++)
            dx[c] = 0;
        /* t ranges over frames whose window [t*S, t*S + K) covers t_in. */
        int t_first = t_in - K + 1 <= 0 ? 0 : (t_in - K + 1 + S - 1) / S;
        int t_last = t_in / S < T_out - 1 ? t_in / S : T_out - 1;
        for (int t = t_first; t <= t_last; t++) {
            const real *src = d_cols + ((size_t)b * T_out + t) * width + (size_t)(t_in - t * S) * C_in;
#pragma omp simd
            for (int c = 0; c < C_in; c++)
                dx[c] += src[c];
        }
    }
}

void conv_weight_kc(real *w_kc, const real *w, int C_out, int C_in, int K)
{
    for (int o = 0; o < C_out; o++)
        for (int c = 0; c < C_in; c++)
            for (int k = 0; k < K; k++)
                w_kc[((size_t)o * K + k) * C_in + c] = w[((size_t)o * C_in + c) * K + k];
}

/* w (C_out, C_in, K) += g_kc (C_out, K, C_in): conv_weight_kc's adjoint. */
static void conv_weight_kc_add_back(real *w, const real *g_kc, int C_out, int C_in, int K)
{
    for (int o = 0; o < C_out; o++)
        for (int c = 0; c < C_in; c++)
            for (int k = 0; k < K; k++)
                w[((size_t)o * C_in + c) * K + k] += g_kc[((size_t)o * K + k) * C_in + c];
}

/* w (C_out, C_in, K) += g_t (K, C_in, C_out): the same, from the weight
 * gradient as the feature encoder computes it (transposed). */
static void conv_weight_t_add_back(real *w, const real *g_t, int C_out, int C_in, int K)
{
#pragma omp parallel for schedule(static)
    for (int o = 0; o < C_out; o++)
        for (int c = 0; c < C_in; c++)
            for (int k = 0; k < K; k++)
                w[((size_t)o * C_in + c) * K + k] += g_t[((size_t)k * C_in + c) * C_out + o];
}

/* ---- the two matmuls that read the windows --------------------------------------------- */

/* Window t of waveform b, the conv's input row (b, t), is K*C_in contiguous
 * reals of the channels-last input from frame t*S: consecutive windows
 * overlap (row stride S*C_in < K*C_in), and a waveform's last window need
 * not end at its last frame. Where the matmul reads overlapping rows
 * (gemm_reads_overlapping_rows) it takes them in place, one call per
 * waveform, or one for the batch when the windows tile it exactly; the
 * im2col copy, 78 MB at layer 1 of speech_tiny, then never exists (issue 6:
 * it was 3.6% of a speech step, a memmove). Elsewhere they are copied into
 * cols first. */
static int windows_tile_batch(int T_in, int K, int S)
{
    return K == S && T_in == conv_out_length(T_in, K, S) * S;
}

/* The batch's windows as the rows of one matrix (row stride K*C_in): x
 * itself where they tile it, else a copy in cols where the matmul cannot
 * read overlapping rows; NULL where it reads them in place, per waveform. */
static const real *batch_windows(real *cols, const real *x, int B, int T_in, int C_in, int K, int S)
{
    if (windows_tile_batch(T_in, K, S))
        return x;
    if (gemm_reads_overlapping_rows())
        return NULL;
    conv1d_im2col(cols, x, B, T_in, C_in, K, S);
    return cols;
}

/* Frames of one waveform a task convolves and normalises: their conv
 * output (768 x 256 floats at speech_tiny) is still in the core's L2 when
 * the layer norm reads it. */
#define CONV_FRAME_BLOCK 768

/* One layer's forward: conv (B*T_out, C_out) = windows . W_kc^T, then y =
 * GELU(layer norm(conv)) with its mean and 1/std. A task is a block of one
 * waveform's frames on one thread (its matmul single-threaded inside the
 * parallel loop, as attention's are): the layer norm reads the block's
 * conv output from the core's cache instead of reading back the whole
 * layer's (52 MB at speech_tiny's first layer) from memory, and the layer
 * has no matmul barriers. Tasks are dealt dynamically; a row's values do
 * not depend on which thread computes it. */
static void conv_layer_forward(real *y, real *conv, real *mean, real *rstd, const real *x, const real *w_kc,
                               real *cols, const real *ln_gain, const real *ln_bias, int B, int T_in, int C_in,
                               int C_out, int K, int S)
{
    const int T_out = conv_out_length(T_in, K, S), width = C_in * K;
    const real *rows = batch_windows(cols, x, B, T_in, C_in, K, S);
    const int blocks = (T_out + CONV_FRAME_BLOCK - 1) / CONV_FRAME_BLOCK;
#pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < B * blocks; task++) {
        const int b = task / blocks, t0 = task % blocks * CONV_FRAME_BLOCK;
        const int frames = T_out - t0 < CONV_FRAME_BLOCK ? T_out - t0 : CONV_FRAME_BLOCK;
        const size_t r0 = (size_t)b * T_out + t0; /* the block's first output row */
        const real *windows = rows ? rows + r0 * width : x + ((size_t)b * T_in + (size_t)t0 * S) * C_in;
        gemm(CblasRowMajor, CblasNoTrans, CblasTrans, frames, C_out, width, R(1), windows, rows ? width : S * C_in,
             w_kc, width, R(0), conv + r0 * C_out, C_out);
        /* "layer_norm" mode: TransposeLast -> Fp32LayerNorm(C, affine) ->
         * TransposeLast; channels-last makes the transposes free. */
        layernorm_gelu_forward(y + r0 * C_out, mean + r0, rstd + r0, conv + r0 * C_out, ln_gain, ln_bias, frames,
                               C_out, CONV_LN_EPS);
    }
}

/* d_W_kc^T (K*C_in, C_out) = windows^T . d_conv, summed over the batch's
 * frames in order (per waveform when read in place). Transposed, the wide
 * operand (the windows, K*C_in columns) is the product's A, which each
 * thread packs for itself; as d_conv^T . windows it was B, packed into
 * memory all threads share, and each per-waveform product that adds to
 * the last moved C through gemm.c's transposed scratch and back.
 * conv_weight_t_add_back takes this layout. */
static void conv1d_weight_grad_gemm(real *d_w_t, const real *d_conv, const real *x, real *cols, int B, int T_in,
                                    int C_in, int C_out, int K, int S)
{
    const int T_out = conv_out_length(T_in, K, S), width = C_in * K;
    const real *rows = batch_windows(cols, x, B, T_in, C_in, K, S);
    if (rows) {
        gemm(CblasRowMajor, CblasTrans, CblasNoTrans, width, C_out, B * T_out, R(1), rows, width, d_conv, C_out, R(0),
             d_w_t, C_out);
        return;
    }
    if (width <= NARROW_WINDOW) {
        /* A narrow layer (the first: one channel, K = 10) has too few
         * rows of C for the threads to share over 6399-frame passes
         * (speech_tiny: 24 GFLOP/s, 11 ms a step): a waveform per thread
         * instead, each into its own slot of cols (free here: the windows
         * are read in place), then the slots added in waveform order,
         * whatever the threads. */
        real *per_wave = cols;
#pragma omp parallel for schedule(dynamic, 1)
        for (int b = 0; b < B; b++)
            gemm(CblasRowMajor, CblasTrans, CblasNoTrans, width, C_out, T_out, R(1), x + (size_t)b * T_in * C_in,
                 S * C_in, d_conv + (size_t)b * T_out * C_out, C_out, R(0), per_wave + (size_t)b * width * C_out,
                 C_out);
#pragma omp parallel for schedule(static)
        for (int j = 0; j < width; j++)
            for (int o = 0; o < C_out; o++) {
                real sum = 0;
                for (int b = 0; b < B; b++)
                    sum += per_wave[((size_t)b * width + j) * C_out + o];
                d_w_t[(size_t)j * C_out + o] = sum;
            }
        return;
    }
    for (int b = 0; b < B; b++)
        gemm(CblasRowMajor, CblasTrans, CblasNoTrans, width, C_out, T_out, R(1), x + (size_t)b * T_in * C_in, S * C_in,
             d_conv + (size_t)b * T_out * C_out, C_out, b == 0 ? R(0) : R(1), d_w_t, C_out);
}

/* d_x (B, T_in, C_in), the adjoint of the windows, from d_conv (B*T_out,
 * C_out): frame t*S + k of waveform b gets d_conv[b, t] . W_kc[:, k*C_in ..
 * (k+1)*C_in), one matmul per (waveform, k) writing every S-th frame (row
 * stride S*C_in). k goes down, so a frame sums its windows in the order
 * conv1d_col2im does (t going up), the first of them with beta = 0; frames
 * [0, K-S), which a k < K-S meets first with beta = 1, and frames past
 * the last window start at zero. Nothing the size of the windows (78 MB
 * at layer 1 of speech_tiny) is written and read back. Windows with gaps
 * between them (S > K) take d_cols and col2im. */
static void conv1d_input_grad_gemm(real *d_x, const real *d_conv, const real *w_kc, real *cols, int B, int T_in,
                                   int C_in, int C_out, int K, int S)
{
    const int T_out = conv_out_length(T_in, K, S), width = C_in * K;
    if (S > K) {
        gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B * T_out, width, C_out, R(1), d_conv, C_out, w_kc, width,
             R(0), cols, width);
        conv1d_col2im(d_x, cols, B, T_in, C_in, K, S);
        return;
    }
    const int covered = (T_out - 1) * S + K;
    for (int b = 0; b < B; b++) {
        real *dx = d_x + (size_t)b * T_in * C_in;
        memset(dx, 0, (size_t)(K - S) * C_in * sizeof *dx);
        memset(dx + (size_t)covered * C_in, 0, (size_t)(T_in - covered) * C_in * sizeof *dx);
        for (int k = K - 1; k >= 0; k--)
            gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T_out, C_in, C_out, R(1), d_conv + (size_t)b * T_out * C_out,
                 C_out, w_kc + (size_t)k * C_in, width, k + S <= K - 1 ? R(1) : R(0), dx + (size_t)k * C_in, S * C_in);
    }
}

/* ---- feature encoder ------------------------------------------------------------------- */

/* Layer l's output from its saved conv output: out = GELU(LN(conv)) with
 * the forward's mean and 1/std. The same functions as the forward, so the
 * recompute gives the same bits. */
static void ln_gelu(real *out, const ConvEncoderBuffers *buf, const ConvEncoderParams *params,
                    const ConvEncoderPlan *plan, int l)
{
    const int M = plan->B * plan->t_out[l], C = plan->c_out[l];
    layernorm_gelu_recompute(out, buf->conv[l], buf->mean[l], buf->rstd[l], params->ln_gain[l], params->ln_bias[l],
                             M, C);
}

void conv_encoder_forward(ConvEncoderBuffers *buf, const real *wave, const ConvEncoderParams *params,
                          const ConvEncoderPlan *plan)
{
    const int B = plan->B, last = plan->n_layers - 1;
    const real *x = wave; /* (B, T, 1): the waveform is already channels-last */
    for (int l = 0; l <= last; l++) {
        const int C_in = plan->c_in[l], C_out = plan->c_out[l], K = plan->kernel[l];
        /* No bias (conv_bias=False in wav2vec 2.0, the layer norm's beta
         * plays its part). */
        conv_weight_kc(buf->weight_kc, params->weight[l], C_out, C_in, K);
        /* A layer reads its input while it writes its output: they go to
         * act and grad in turn (grad is free until the backward). */
        real *y = l == last ? buf->out : l % 2 == 0 ? buf->act : buf->grad;
        conv_layer_forward(y, buf->conv[l], buf->mean[l], buf->rstd[l], x, buf->weight_kc, buf->cols,
                           params->ln_gain[l], params->ln_bias[l], B, plan->t_in[l], C_in, C_out, K, plan->stride[l]);
        x = y;
    }
}

void conv_encoder_backward(real *d_wave, const ConvEncoderParams *grads, const real *d_out, const real *wave,
                           const ConvEncoderParams *params, ConvEncoderBuffers *buf, const ConvEncoderPlan *plan)
{
    const int B = plan->B;
    /* grad takes d(conv output) from d(layer output) (d_out, then act);
     * act then holds the layer's input x, then d(x) for the layer below. */
    const real *d_act = d_out;
    real *d = buf->grad;
    for (int l = plan->n_layers - 1; l >= 0; l--) {
        const int C_in = plan->c_in[l], C_out = plan->c_out[l], K = plan->kernel[l], S = plan->stride[l];
        const int M = B * plan->t_out[l];

        /* Through GELU and the layer norm in one pass; GELU's input, the
         * layer norm's output, is recomputed inside. */
        layernorm_gelu_backward(d, grads->ln_gain[l], grads->ln_bias[l], d_act, buf->conv[l], buf->mean[l],
                                buf->rstd[l], params->ln_gain[l], params->ln_bias[l], M, C_out);
        /* The conv's input (the layer below's output) was not kept:
         * rebuild it, cheaper than keeping it per layer. */
        const real *x = wave;
        if (l > 0) {
            ln_gelu(buf->act, buf, params, plan, l - 1);
            x = buf->act;
        }
        /* d_W, added to the gradient in its (C_out, C_in, K) order */
        real *w_kc = buf->weight_kc, *d_w_t = buf->weight_kc + plan->weight_max;
        conv1d_weight_grad_gemm(d_w_t, d, x, buf->cols, B, plan->t_in[l], C_in, C_out, K, S);
        conv_weight_t_add_back(grads->weight[l], d_w_t, C_out, C_in, K);
        if (l == 0 && !d_wave)
            break;
        /* d(layer input) into act, whose x the weight gradient has spent. */
        conv_weight_kc(w_kc, params->weight[l], C_out, C_in, K);
        real *d_x = l > 0 ? buf->act : d_wave;
        conv1d_input_grad_gemm(d_x, d, w_kc, buf->cols, B, plan->t_in[l], C_in, C_out, K, S);
        d_act = d_x;
    }
}

/* ---- positional encoder: grouped conv with "same" padding ------------------------------- */

int pos_conv_plan(PosConvPlan *plan, PosConvShape shape, int B, int T, int threads, D2vError *err)
{
    memset(plan, 0, sizeof *plan);
    if (shape.dim < 1 || shape.kernel < 1 || shape.groups < 1 || shape.dim % shape.groups != 0)
        return d2v_fail(err, "pos conv: %d channels do not split into %d groups (kernel %d)", shape.dim,
                        shape.groups, shape.kernel);
    if (shape.depth < 1 || shape.depth > POS_CONV_MAX_DEPTH)
        return d2v_fail(err, "pos conv: depth %d (need 1..%d)", shape.depth, POS_CONV_MAX_DEPTH);
    const int group_width = shape.dim / shape.groups;
    plan->B = B;
    plan->T = T;
    plan->shape = shape;
    plan->act_size = (size_t)B * T * shape.dim;
    plan->stat_size = (size_t)B * T;
    plan->cols_size = (size_t)B * T * group_width * shape.kernel;
    plan->weight_size = (size_t)shape.dim * group_width * shape.kernel;
    plan->group_weight_size = (size_t)group_width * group_width * shape.kernel;
    plan->lanes = threads < 1 ? 1 : threads < shape.groups ? threads : shape.groups;
    return 0;
}

/* Group g's channels [c0, c0 + Cg) of x (B, T, D) -> cols (B*T, K*Cg), column
 * k*Cg + c = x[b, t + k - K/2, c0 + c], zero outside [0, T): a frame's Cg
 * channels are one copy (the weight is permuted to match, conv_weight_kc).
 * Conv1d(padding=K/2) yields T + 1 frames for even K and SamePad drops the
 * last; the first T frames read exactly these offsets, so one formula
 * covers both parities. */
static void same_im2col(real *cols, const real *x, int B, int T, int D, int c0, int Cg, int K)
{
    const int half = K / 2, width = Cg * K;
    for (int row = 0; row < B * T; row++) {
        const int b = row / T, t = row % T;
        real *dst = cols + (size_t)row * width;
        for (int k = 0; k < K; k++) {
            const int src_t = t + k - half;
            if (src_t < 0 || src_t >= T) /* the zero padding */
                memset(dst + (size_t)k * Cg, 0, (size_t)Cg * sizeof(real));
            else
                memcpy(dst + (size_t)k * Cg, x + ((size_t)b * T + src_t) * D + c0, (size_t)Cg * sizeof(real));
        }
    }
}

/* The adjoint, as a gather: d_x[b, s, c0 + c] = sum_k d_cols[(b, s - k + K/2), k*Cg + c]
 * over in-range frames. Overwrites group g's channels only. */
static void same_col2im(real *d_x, const real *d_cols, int B, int T, int D, int c0, int Cg, int K)
{
    const int half = K / 2, width = Cg * K;
    for (int row = 0; row < B * T; row++) {
        const int b = row / T, s = row % T;
        real *dx = d_x + (size_t)row * D + c0;
        for (int c = 0; c < Cg; c++)
            dx[c] = 0;
        for (int k = 0; k < K; k++) {
            const int t = s - k + half;
            if (t < 0 || t >= T)
                continue;
            const real *src = d_cols + ((size_t)b * T + t) * width + (size_t)k * Cg;
#pragma omp simd
            for (int c = 0; c < Cg; c++)
                dx[c] += src[c];
        }
    }
}

static void zero_padded_frames(real *x, const int *lengths, int B, int T, int D)
{
    if (!lengths)
        return;
    for (int b = 0; b < B; b++)
        if (lengths[b] < T)
            memset(x + ((size_t)b * T + lengths[b]) * D, 0, (size_t)(T - lengths[b]) * D * sizeof(real));
}

void pos_conv_forward(PosConvBuffers *buf, const real *x, const int *lengths, const PosConvParams *params,
                      const PosConvPlan *plan)
{
    const int B = plan->B, T = plan->T, M = B * T;
    const int D = plan->shape.dim, K = plan->shape.kernel, G = plan->shape.groups, Cg = D / G, width = Cg * K;
    memcpy(buf->layer_in[0], x, plan->act_size * sizeof(real));
    zero_padded_frames(buf->layer_in[0], lengths, B, T, D);
    /* data2vec_audio.py make_conv_block: Conv1d(groups=G, padding=K/2) ->
     * SamePad -> TransposeLast -> LayerNorm(affine=False) -> TransposeLast ->
     * GELU, `depth` times. */
    for (int l = 0; l < plan->shape.depth; l++) {
        const real *in = buf->layer_in[l];
        real *conv = buf->conv[l];
        /* Each group is its own small conv: its Cg output channels see only
         * its Cg input channels, weight rows [g*Cg, (g+1)*Cg) of (D, Cg*K).
         * The groups run side by side, one per thread with its own scratch
         * (single-threaded matmuls, as attention's heads): shared out, each
         * group's 16 x 304 x 792 products and copies were parallel regions
         * of their own, and speech_tiny's weight gradients ran at 44
         * GFLOP/s. A group's bits do not depend on its thread. */
#pragma omp parallel for schedule(dynamic) num_threads(plan->lanes)
        for (int g = 0; g < G; g++) {
            const int lane = omp_get_thread_num();
            real *cols = buf->cols + (size_t)lane * plan->cols_size;
            real *w_kc = buf->weight_kc + (size_t)lane * 2 * plan->group_weight_size;
            same_im2col(cols, in, B, T, D, g * Cg, Cg, K);
            conv_weight_kc(w_kc, params->weight[l] + (size_t)g * Cg * width, Cg, Cg, K);
            gemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, Cg, width, R(1), cols, width, w_kc, width, R(0),
                 conv + g * Cg, D);
        }
        const real *bias = params->bias[l];
#pragma omp parallel for schedule(static)
        for (int m = 0; m < M; m++)
            for (int d = 0; d < D; d++)
                conv[(size_t)m * D + d] += bias[d];
        layernorm_forward(buf->normed[l], buf->mean[l], buf->rstd[l], conv, NULL, NULL, M, D, CONV_LN_EPS);
        gelu_forward(buf->layer_in[l + 1], buf->normed[l], plan->act_size);
    }
}

void pos_conv_backward(real *d_x, const PosConvParams *grads, const real *d_out, const int *lengths,
                       const PosConvParams *params, PosConvBuffers *buf, const PosConvPlan *plan)
{
    const int B = plan->B, T = plan->T, M = B * T;
    const int D = plan->shape.dim, K = plan->shape.kernel, G = plan->shape.groups, Cg = D / G, width = Cg * K;
    const real *d_act = d_out;
    for (int l = plan->shape.depth - 1; l >= 0; l--) {
        real *d_normed = buf->grad_a, *d_conv = buf->grad_b;
        gelu_backward(d_normed, d_act, buf->normed[l], plan->act_size);
        layernorm_backward(d_conv, NULL, NULL, d_normed, buf->conv[l], buf->mean[l], buf->rstd[l], NULL, M, D);
        /* d_bias: column sums, parallel over channels for a fixed sum order. */
        real *d_bias = grads->bias[l];
#pragma omp parallel for schedule(static)
        for (int d = 0; d < D; d++) {
            real sum = 0;
            for (int m = 0; m < M; m++)
                sum += d_conv[(size_t)m * D + d];
            d_bias[d] += sum;
        }
        real *d_in = l > 0 ? buf->grad_a : d_x; /* d_normed is spent: reuse it */
        /* Groups side by side as in the forward: each writes only its own
         * weight rows and its own channels of d_in. */
#pragma omp parallel for schedule(dynamic) num_threads(plan->lanes)
        for (int g = 0; g < G; g++) {
            const int lane = omp_get_thread_num();
            real *cols = buf->cols + (size_t)lane * plan->cols_size;
            real *w_kc = buf->weight_kc + (size_t)lane * 2 * plan->group_weight_size;
            real *d_w_kc = w_kc + plan->group_weight_size;
            same_im2col(cols, buf->layer_in[l], B, T, D, g * Cg, Cg, K);
            /* d_W_g (Cg, K*Cg) = d_conv_g^T . cols_g, added in (Cg, Cg, K) order */
            gemm(CblasRowMajor, CblasTrans, CblasNoTrans, Cg, width, M, R(1), d_conv + g * Cg, D, cols, width, R(0),
                 d_w_kc, width);
            conv_weight_kc_add_back(grads->weight[l] + (size_t)g * Cg * width, d_w_kc, Cg, Cg, K);
            /* d_cols_g (M, K*Cg) = d_conv_g . W_g, then back onto the frames. */
            conv_weight_kc(w_kc, params->weight[l] + (size_t)g * Cg * width, Cg, Cg, K);
            gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, width, Cg, R(1), d_conv + g * Cg, D, w_kc, width, R(0),
                 cols, width);
            same_col2im(d_in, cols, B, T, D, g * Cg, Cg, K);
        }
        d_act = d_in;
    }
    /* The forward zeroed padded input frames, so they get no gradient. */
    zero_padded_frames(d_x, lengths, B, T, D);
}
