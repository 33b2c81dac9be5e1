/* test_conv_encoder.c — the speech front-end (encoders/conv_encoder.c): the
 * spec parser, output lengths, im2col + GEMM against a direct convolution,
 * im2col/col2im adjointness, and finite-difference gradient checks of the
 * feature encoder and the positional conv encoder.
 *
 * Built against the double-precision core (-DD2V_DOUBLE); gradients use the
 * scalar s = sum(y * r) for a fixed random r, as in test_image_model.c. */
#include "conv_encoder.h"
#include "gradcheck.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static double max_abs_diff(const double *a, const double *b, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fmax(m, fabs(a[i] - b[i]));
    return m;
}

/* ---- spec parsing and lengths ------------------------------------------------------------ */

static void test_spec_parse(void)
{
    ConvSpec spec;
    D2vError err = {{0}};
    /* wav2vec 2.0 base: [(512,10,5)] + [(512,3,2)]*4 + [(512,2,2)]*2. */
    int rc = conv_spec_parse(&spec, "512x10x5,512x3x2*4,512x2x2*2", &err);
    CHECK(rc == 0, "default spec rejected: %s", err.msg);
    CHECK(spec.n_layers == 7, "default spec: %d layers, want 7", spec.n_layers);
    const int want_k[7] = {10, 3, 3, 3, 3, 2, 2}, want_s[7] = {5, 2, 2, 2, 2, 2, 2};
    int layers_ok = 1;
    for (int l = 0; l < 7 && l < spec.n_layers; l++)
        layers_ok &= spec.layer[l].channels == 512 && spec.layer[l].kernel == want_k[l] &&
                     spec.layer[l].stride == want_s[l];
    CHECK(layers_ok, "default spec parsed to the wrong layers");

    const char *bad[] = {"",          "512",        "512x10",      "512x10x5,",  "512xx5",    "512x10x5*0",
                         "512x0x5",   "x10x5",      "512x10x5;",   "512 x10x5",  "-512x10x5", "512x10x5*",
                         "512x10x5*4*2", "9999999x10x5", "512x3x2*33", "512x10x5,,512x3x2"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        err.msg[0] = '\0';
        rc = conv_spec_parse(&spec, bad[i], &err);
        CHECK(rc == -1 && strstr(err.msg, "conv spec"), "bad spec \"%s\": rc %d, message \"%s\"", bad[i], rc,
              err.msg);
    }
    /* The message points at the offending character. */
    conv_spec_parse(&spec, "512x10x5,512y3x2", &err);
    CHECK(strstr(err.msg, "position 12") != NULL, "message does not locate the error: %s", err.msg);
}

static void test_lengths(void)
{
    CHECK(conv_out_length(20, 3, 2) == 9, "floor((20-3)/2)+1 != %d", conv_out_length(20, 3, 2));
    CHECK(conv_out_length(21, 3, 2) == 10, "floor((21-3)/2)+1 != %d", conv_out_length(21, 3, 2));
    CHECK(conv_out_length(3, 3, 7) == 1, "a single window gives %d frames", conv_out_length(3, 3, 7));
    CHECK(conv_out_length(2, 3, 1) == 0, "input shorter than the kernel gives %d frames", conv_out_length(2, 3, 1));
    int formula_ok = 1;
    for (int T = 1; T < 40; T++)
        for (int K = 1; K < 6; K++)
            for (int S = 1; S < 5; S++) {
                int count = 0; /* windows [t*S, t*S+K) inside [0, T) */
                for (int t = 0; t * S + K <= T; t++)
                    count++;
                formula_ok &= conv_out_length(T, K, S) == count;
            }
    CHECK(formula_ok, "conv_out_length disagrees with counting windows");

    ConvSpec spec;
    ConvEncoderPlan plan;
    D2vError err = {{0}};
    conv_spec_parse(&spec, "512x10x5,512x3x2*4,512x2x2*2", &err);
    /* wav2vec 2.0: one second at 16 kHz is 49 frames (a 20 ms hop, 25 ms field). */
    int rc = conv_encoder_plan(&plan, &spec, 3, 16000, &err);
    CHECK(rc == 0 && conv_encoder_frames(&plan) == 49 && conv_encoder_channels(&plan) == 512,
          "16000 samples -> %d frames x %d channels, want 49 x 512", conv_encoder_frames(&plan),
          conv_encoder_channels(&plan));
    CHECK(plan.cols_size == (size_t)3 * 1599 * 512 * 3, "cols_size %zu", plan.cols_size);
    CHECK(plan.grad_size == (size_t)3 * 3199 * 512, "grad_size %zu", plan.grad_size);
    /* 400 samples is the receptive field: exactly one frame; 399 none. */
    rc = conv_encoder_plan(&plan, &spec, 1, 400, &err);
    CHECK(rc == 0 && conv_encoder_frames(&plan) == 1, "400 samples -> %d frames", conv_encoder_frames(&plan));
    err.msg[0] = '\0';
    rc = conv_encoder_plan(&plan, &spec, 1, 399, &err);
    CHECK(rc == -1 && err.msg[0], "399 samples accepted (rc %d)", rc);
}

/* ---- feature encoder: buffers, direct conv, gradients --------------------------------------- */

typedef struct {
    ConvEncoderPlan plan;
    ConvEncoderParams params, grads;
    ConvEncoderBuffers buf;
    double *wave, *d_wave, *r;
} EncoderCase;

static void encoder_setup(EncoderCase *c, const char *spec_text, int B, int T)
{
    ConvSpec spec;
    D2vError err = {{0}};
    memset(c, 0, sizeof *c);
    if (conv_spec_parse(&spec, spec_text, &err) || conv_encoder_plan(&c->plan, &spec, B, T, &err)) {
        fprintf(stderr, "setup %s: %s\n", spec_text, err.msg);
        exit(1);
    }
    const ConvEncoderPlan *p = &c->plan;
    for (int l = 0; l < p->n_layers; l++) {
        c->params.weight[l] = random_array(p->weight_size[l], 0.5);
        c->params.ln_gain[l] = random_array(p->c_out[l], 0.2);
        for (int d = 0; d < p->c_out[l]; d++)
            c->params.ln_gain[l][d] += 1;
        c->params.ln_bias[l] = random_array(p->c_out[l], 0.2);
        c->grads.weight[l] = zeros(p->weight_size[l]);
        c->grads.ln_gain[l] = zeros(p->c_out[l]);
        c->grads.ln_bias[l] = zeros(p->c_out[l]);
        c->buf.conv[l] = zeros(p->act_size[l]);
        c->buf.mean[l] = zeros(p->stat_size[l]);
        c->buf.rstd[l] = zeros(p->stat_size[l]);
    }
    c->buf.out = zeros(p->act_size[p->n_layers - 1]);
    c->buf.act = zeros(p->act_max);
    c->buf.cols = zeros(p->cols_size);
    c->buf.grad = zeros(p->grad_size);
    c->buf.weight_kc = zeros(2 * p->weight_max);
    c->wave = random_array((size_t)B * T, 1);
    c->d_wave = zeros((size_t)B * T);
    const int L = p->n_layers - 1;
    c->r = random_array(p->act_size[L], 1);
}

static void encoder_free(EncoderCase *c)
{
    for (int l = 0; l < c->plan.n_layers; l++) {
        free(c->params.weight[l]); free(c->params.ln_gain[l]); free(c->params.ln_bias[l]);
        free(c->grads.weight[l]); free(c->grads.ln_gain[l]); free(c->grads.ln_bias[l]);
        free(c->buf.conv[l]); free(c->buf.mean[l]); free(c->buf.rstd[l]);
    }
    free(c->buf.out); free(c->buf.act); free(c->buf.cols); free(c->buf.grad); free(c->buf.weight_kc);
    free(c->wave); free(c->d_wave); free(c->r);
}

/* The definition of a valid strided conv, no bias, channels-last:
 * out[b, t, o] = sum_{c,k} W[o, c, k] x[b, t*S + k, c]. */
static void direct_conv(double *out, const double *x, const double *weight, int B, int T_in, int C_in, int C_out,
                        int K, int S)
{
    const int T_out = conv_out_length(T_in, K, S);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T_out; t++)
            for (int o = 0; o < C_out; o++) {
                double sum = 0;
                for (int c = 0; c < C_in; c++)
                    for (int k = 0; k < K; k++)
                        sum += weight[((size_t)o * C_in + c) * K + k] * x[((size_t)b * T_in + t * S + k) * C_in + c];
                out[((size_t)b * T_out + t) * C_out + o] = sum;
            }
}

/* GELU(LayerNorm(z)) of one layer's conv output, by hand: the layer's
 * output, which the encoder keeps only for the last layer. */
static double *ln_gelu_by_hand(const EncoderCase *c, int l)
{
    const ConvEncoderPlan *p = &c->plan;
    const int C = p->c_out[l];
    double *y = zeros(p->act_size[l]);
    for (size_t m = 0; m < p->stat_size[l]; m++) {
        const double *z = c->buf.conv[l] + m * C;
        double mu = 0, var = 0;
        for (int d = 0; d < C; d++)
            mu += z[d] / C;
        for (int d = 0; d < C; d++)
            var += (z[d] - mu) * (z[d] - mu) / C;
        for (int d = 0; d < C; d++) {
            double v = (z[d] - mu) / sqrt(var + 1e-5) * c->params.ln_gain[l][d] + c->params.ln_bias[l][d];
            y[m * C + d] = 0.5 * v * (1 + erf(v / sqrt(2.0)));
        }
    }
    return y;
}

static void test_encoder_direct(const char *spec_text, int B, int T)
{
    EncoderCase c;
    encoder_setup(&c, spec_text, B, T);
    conv_encoder_forward(&c.buf, c.wave, &c.params, &c.plan);
    const ConvEncoderPlan *p = &c.plan;
    for (int l = 0; l < p->n_layers; l++) {
        double *ref = zeros(p->act_size[l]), *in = l ? ln_gelu_by_hand(&c, l - 1) : NULL;
        direct_conv(ref, l ? in : c.wave, c.params.weight[l], B, p->t_in[l], p->c_in[l], p->c_out[l], p->kernel[l],
                    p->stride[l]);
        double diff = max_abs_diff(ref, c.buf.conv[l], p->act_size[l]);
        CHECK(diff < 1e-12, "%s layer %d: im2col + GEMM differs from the direct conv by %.3g", spec_text, l, diff);
        free(ref);
        free(in);
    }
    /* And the output is the last layer's layer norm then GELU. */
    const int l = p->n_layers - 1;
    double *want = ln_gelu_by_hand(&c, l);
    double worst = max_abs_diff(want, c.buf.out, p->act_size[l]);
    CHECK(worst < 1e-12, "%s: last layer is not GELU(LayerNorm(conv)) (%.3g)", spec_text, worst);
    free(want);
    encoder_free(&c);
}

/* im2col's adjoint is col2im: <im2col(x), y> == <x, col2im(y)> for any x, y,
 * which is exactly what the backward relies on. */
static void test_col2im_adjoint(int T, int C, int K, int S)
{
    const int B = 2, T_out = conv_out_length(T, K, S);
    const size_t n_x = (size_t)B * T * C, n_cols = (size_t)B * T_out * C * K;
    double *x = random_array(n_x, 1), *y = random_array(n_cols, 1);
    double *cols = zeros(n_cols), *back = random_array(n_x, 1); /* garbage: must be overwritten */
    conv1d_im2col(cols, x, B, T, C, K, S);
    conv1d_col2im(back, y, B, T, C, K, S);
    double lhs = dot(cols, y, n_cols), rhs = dot(x, back, n_x);
    CHECK(fabs(lhs - rhs) < 1e-10 * (1 + fabs(lhs)), "col2im is not im2col's adjoint (T %d C %d K %d S %d): %.12g vs %.12g",
          T, C, K, S, lhs, rhs);
    free(x); free(y); free(cols); free(back);
}

static double encoder_scalar(void *ctx)
{
    EncoderCase *c = ctx;
    conv_encoder_forward(&c->buf, c->wave, &c->params, &c->plan);
    const int L = c->plan.n_layers - 1;
    return dot(c->buf.out, c->r, c->plan.act_size[L]);
}

static void test_encoder_grad(const char *spec_text, int B, int T)
{
    EncoderCase c;
    encoder_setup(&c, spec_text, B, T);
    const ConvEncoderPlan *p = &c.plan;
    conv_encoder_forward(&c.buf, c.wave, &c.params, &c.plan);
    conv_encoder_backward(c.d_wave, &c.grads, c.r, c.wave, &c.params, &c.buf, &c.plan);

    char what[128];
    for (int l = 0; l < p->n_layers; l++) {
        snprintf(what, sizeof what, "%s layer %d d_weight", spec_text, l);
        expect_grad(what, c.params.weight[l], p->weight_size[l], c.grads.weight[l], encoder_scalar, &c);
        snprintf(what, sizeof what, "%s layer %d d_ln_gain", spec_text, l);
        expect_grad(what, c.params.ln_gain[l], p->c_out[l], c.grads.ln_gain[l], encoder_scalar, &c);
        snprintf(what, sizeof what, "%s layer %d d_ln_bias", spec_text, l);
        expect_grad(what, c.params.ln_bias[l], p->c_out[l], c.grads.ln_bias[l], encoder_scalar, &c);
    }
    snprintf(what, sizeof what, "%s d_wave", spec_text);
    expect_grad(what, c.wave, (size_t)B * T, c.d_wave, encoder_scalar, &c);

    /* A second backward without d_wave: weights accumulate to exactly twice,
     * d_wave (garbage-filled first) is overwritten by a third backward. */
    double *w0 = zeros(p->weight_size[0]), *g_last = zeros(p->c_out[p->n_layers - 1]);
    memcpy(w0, c.grads.weight[0], p->weight_size[0] * sizeof(double));
    memcpy(g_last, c.grads.ln_gain[p->n_layers - 1], p->c_out[p->n_layers - 1] * sizeof(double));
    conv_encoder_forward(&c.buf, c.wave, &c.params, &c.plan);
    conv_encoder_backward(NULL, &c.grads, c.r, c.wave, &c.params, &c.buf, &c.plan);
    double acc = 0;
    for (size_t i = 0; i < p->weight_size[0]; i++)
        acc = fmax(acc, fabs(c.grads.weight[0][i] - 2 * w0[i]));
    for (int d = 0; d < p->c_out[p->n_layers - 1]; d++)
        acc = fmax(acc, fabs(c.grads.ln_gain[p->n_layers - 1][d] - 2 * g_last[d]));
    CHECK(acc < 1e-12, "%s: parameter gradients not accumulated (%.3g)", spec_text, acc);

    double *d_wave2 = random_array((size_t)B * T, 100);
    conv_encoder_backward(d_wave2, &c.grads, c.r, c.wave, &c.params, &c.buf, &c.plan);
    CHECK(max_abs_diff(d_wave2, c.d_wave, (size_t)B * T) < 1e-12, "%s: d_wave not overwritten", spec_text);

    /* The checker itself notices a gradient 1% off in a single entry (the
     * largest, so the error is 1% of the scale the checker measures by). */
    size_t big = 0;
    for (size_t i = 1; i < (size_t)B * T; i++)
        big = fabs(c.d_wave[i]) > fabs(c.d_wave[big]) ? i : big;
    c.d_wave[big] *= 1.01;
    CHECK(grad_error(c.wave, (size_t)B * T, c.d_wave, encoder_scalar, &c) > 100 * TOLERANCE,
          "the gradient checker did not notice a 1%% error in d_wave");
    free(w0); free(g_last); free(d_wave2);
    encoder_free(&c);
}

/* ---- positional conv encoder ------------------------------------------------------------- */

typedef struct {
    PosConvPlan plan;
    PosConvParams params, grads;
    PosConvBuffers buf;
    const int *lengths;
    double *x, *d_x, *r;
} PosCase;

static void pos_setup(PosCase *c, PosConvShape shape, int B, int T, const int *lengths)
{
    D2vError err = {{0}};
    memset(c, 0, sizeof *c);
    if (pos_conv_plan(&c->plan, shape, B, T, omp_get_max_threads(), &err)) {
        fprintf(stderr, "pos setup: %s\n", err.msg);
        exit(1);
    }
    const PosConvPlan *p = &c->plan;
    for (int l = 0; l < shape.depth; l++) {
        c->params.weight[l] = random_array(p->weight_size, 0.5);
        c->params.bias[l] = random_array(shape.dim, 0.3);
        c->grads.weight[l] = zeros(p->weight_size);
        c->grads.bias[l] = zeros(shape.dim);
        c->buf.conv[l] = zeros(p->act_size);
        c->buf.normed[l] = zeros(p->act_size);
        c->buf.mean[l] = zeros(p->stat_size);
        c->buf.rstd[l] = zeros(p->stat_size);
    }
    for (int l = 0; l <= shape.depth; l++)
        c->buf.layer_in[l] = zeros(p->act_size);
    c->buf.cols = zeros((size_t)p->lanes * p->cols_size);
    c->buf.weight_kc = zeros((size_t)p->lanes * 2 * p->group_weight_size);
    c->buf.grad_a = zeros(p->act_size);
    c->buf.grad_b = zeros(p->act_size);
    c->lengths = lengths;
    c->x = random_array(p->act_size, 1);
    c->d_x = zeros(p->act_size);
    c->r = random_array(p->act_size, 1);
}

static void pos_free(PosCase *c)
{
    const int depth = c->plan.shape.depth;
    for (int l = 0; l < depth; l++) {
        free(c->params.weight[l]); free(c->params.bias[l]); free(c->grads.weight[l]); free(c->grads.bias[l]);
        free(c->buf.conv[l]); free(c->buf.normed[l]); free(c->buf.mean[l]); free(c->buf.rstd[l]);
    }
    for (int l = 0; l <= depth; l++)
        free(c->buf.layer_in[l]);
    free(c->buf.cols); free(c->buf.weight_kc); free(c->buf.grad_a); free(c->buf.grad_b);
    free(c->x); free(c->d_x); free(c->r);
}

/* PyTorch's Conv1d(D, D, K, padding=K/2, groups=G) followed by SamePad(K),
 * written from the definition: the conv yields T + 2(K/2) - K + 1 frames
 * (T + 1 for even K), out[t'] = bias + sum_{c in group, k} W[o, c, k] x[t' - K/2 + k],
 * then SamePad drops the last frame when K is even. */
static void direct_same_conv(double *out, const double *x, const double *weight, const double *bias, int B, int T,
                             int D, int K, int G)
{
    const int Cg = D / G, pad = K / 2, T_conv = T + 2 * pad - K + 1;
    const int T_keep = K % 2 == 0 ? T_conv - 1 : T_conv;
    CHECK(T_keep == T, "same padding keeps %d of %d frames (K %d)", T_keep, T, K);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T_keep; t++)
            for (int o = 0; o < D; o++) {
                const int g = o / Cg;
                double sum = bias[o];
                for (int c = 0; c < Cg; c++)
                    for (int k = 0; k < K; k++) {
                        int s = t - pad + k;
                        if (s >= 0 && s < T)
                            sum += weight[((size_t)o * Cg + c) * K + k] * x[((size_t)b * T + s) * D + g * Cg + c];
                    }
                out[((size_t)b * T + t) * D + o] = sum;
            }
}

static void test_pos_direct(PosConvShape shape, int B, int T, const int *lengths)
{
    PosCase c;
    pos_setup(&c, shape, B, T, lengths);
    pos_conv_forward(&c.buf, c.x, c.lengths, &c.params, &c.plan);
    for (int l = 0; l < shape.depth; l++) {
        double *ref = zeros(c.plan.act_size);
        direct_same_conv(ref, c.buf.layer_in[l], c.params.weight[l], c.params.bias[l], B, T, shape.dim, shape.kernel,
                         shape.groups);
        double diff = max_abs_diff(ref, c.buf.conv[l], c.plan.act_size);
        CHECK(diff < 1e-12, "pos conv K %d G %d layer %d differs from the direct conv by %.3g", shape.kernel,
              shape.groups, l, diff);
        free(ref);
    }
    /* Padded input frames are invisible: changing them changes nothing. */
    if (lengths) {
        double *before = zeros(c.plan.act_size);
        memcpy(before, c.buf.layer_in[shape.depth], c.plan.act_size * sizeof(double));
        for (int b = 0; b < B; b++)
            for (size_t i = (size_t)lengths[b] * shape.dim; i < (size_t)T * shape.dim; i++)
                c.x[(size_t)b * T * shape.dim + i] += 10;
        pos_conv_forward(&c.buf, c.x, c.lengths, &c.params, &c.plan);
        CHECK(max_abs_diff(before, c.buf.layer_in[shape.depth], c.plan.act_size) == 0,
              "pos conv K %d: output depends on padded input frames", shape.kernel);
        free(before);
    }
    pos_free(&c);
}

static double pos_scalar(void *ctx)
{
    PosCase *c = ctx;
    pos_conv_forward(&c->buf, c->x, c->lengths, &c->params, &c->plan);
    return dot(c->buf.layer_in[c->plan.shape.depth], c->r, c->plan.act_size);
}

static void test_pos_grad(PosConvShape shape, int B, int T, const int *lengths)
{
    PosCase c;
    pos_setup(&c, shape, B, T, lengths);
    pos_conv_forward(&c.buf, c.x, c.lengths, &c.params, &c.plan);
    double *garbage = random_array(c.plan.act_size, 100);
    memcpy(c.d_x, garbage, c.plan.act_size * sizeof(double)); /* must be overwritten */
    pos_conv_backward(c.d_x, &c.grads, c.r, c.lengths, &c.params, &c.buf, &c.plan);

    char what[128];
    const char *pad_note = lengths ? "padded" : "unpadded";
    for (int l = 0; l < shape.depth; l++) {
        snprintf(what, sizeof what, "pos conv K %d G %d %s layer %d d_weight", shape.kernel, shape.groups, pad_note, l);
        expect_grad(what, c.params.weight[l], c.plan.weight_size, c.grads.weight[l], pos_scalar, &c);
        snprintf(what, sizeof what, "pos conv K %d G %d %s layer %d d_bias", shape.kernel, shape.groups, pad_note, l);
        expect_grad(what, c.params.bias[l], shape.dim, c.grads.bias[l], pos_scalar, &c);
    }
    snprintf(what, sizeof what, "pos conv K %d G %d %s d_x", shape.kernel, shape.groups, pad_note);
    expect_grad(what, c.x, c.plan.act_size, c.d_x, pos_scalar, &c);
    if (lengths) {
        int zero_ok = 1;
        for (int b = 0; b < B; b++)
            for (size_t i = (size_t)lengths[b] * shape.dim; i < (size_t)T * shape.dim; i++)
                zero_ok &= c.d_x[(size_t)b * T * shape.dim + i] == 0;
        CHECK(zero_ok, "pos conv K %d: padded frames got a gradient", shape.kernel);
    }
    free(garbage);
    pos_free(&c);
}

static void test_pos_plan_errors(void)
{
    PosConvPlan plan;
    D2vError err = {{0}};
    CHECK(pos_conv_plan(&plan, (PosConvShape){6, 5, 4, 1}, 1, 8, 2, &err) == -1 && err.msg[0],
          "6 channels in 4 groups accepted");
    err.msg[0] = '\0';
    CHECK(pos_conv_plan(&plan, (PosConvShape){8, 5, 4, 0}, 1, 8, 2, &err) == -1 && err.msg[0], "depth 0 accepted");
    /* data2vec audio base: 768 channels, 16 groups, 5 layers of kernel 95/5 = 19. */
    CHECK(pos_conv_plan(&plan, (PosConvShape){768, 19, 16, 5}, 2, 100, 2, &err) == 0 &&
              plan.weight_size == (size_t)768 * 48 * 19 && plan.cols_size == (size_t)2 * 100 * 48 * 19,
          "data2vec pos conv plan: %s", err.msg);
    /* One scratch lane per thread, never more than the groups. */
    CHECK(plan.lanes == 2, "pos conv: %d lanes for 2 threads", plan.lanes);
    CHECK(pos_conv_plan(&plan, (PosConvShape){768, 19, 16, 5}, 2, 100, 64, &err) == 0 && plan.lanes == 16,
          "64 threads, 16 groups: %d lanes", plan.lanes);
    CHECK(pos_conv_plan(&plan, (PosConvShape){8, 3, 1, 1}, 1, 8, 2, &err) == 0 && plan.lanes == 1,
          "one group: %d lanes", plan.lanes);
}

int main(void)
{
    rng_init(&test_rng, 20240717, 0);

    test_spec_parse();
    test_lengths();

    test_col2im_adjoint(20, 1, 3, 2); /* overlapping windows, S < K */
    test_col2im_adjoint(23, 3, 2, 3); /* gaps between windows, S > K */
    test_col2im_adjoint(17, 4, 4, 4); /* tiling, S == K, with a tail */
    test_col2im_adjoint(9, 2, 1, 1);
    test_encoder_direct("4x3x2,5x2x1*2", 2, 20);
    test_encoder_direct("3x4x2,2x3x3,4x2x1", 2, 23);
    test_encoder_direct("6x10x5,6x3x2", 1, 64);

    test_encoder_grad("4x3x2,5x2x1*2", 2, 20);
    test_encoder_grad("3x2x3,4x3x2", 2, 22); /* gaps (S > K) and unread tails */
    test_encoder_grad("3x3x2,4x2x2", 2, 21); /* K = S windows that tile the batch: one matmul, no copy */

    const int lengths[2] = {7, 5};
    for (int K = 4; K <= 5; K++) {
        const PosConvShape shape = {4, K, 2, 2};
        test_pos_direct(shape, 2, 7, NULL);
        test_pos_direct(shape, 2, 7, lengths);
        test_pos_grad(shape, 2, 7, NULL);
        test_pos_grad(shape, 2, 7, lengths);
    }
    test_pos_direct((PosConvShape){6, 3, 3, 1}, 2, 5, NULL);
    test_pos_grad((PosConvShape){6, 8, 1, 1}, 1, 6, NULL); /* kernel wider than T/2, one group */
    test_pos_plan_errors();

    return check_summary();
}
