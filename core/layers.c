#include "layers.h"

#include "rng.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* Where floats are 16 to a vector, a few loops are written with AVX-512
 * intrinsics: dropout's keep masks as 16-bit mask registers, and the
 * attention softmax, whose rows (197 keys for an image) end in a partial
 * vector that gcc's vectorised loop leaves to scalar code (issue 6). The
 * portable loops stay for other targets and the double build. */
#if defined(__AVX512F__) && !defined(D2V_DOUBLE)
#include <immintrin.h>
#define FLOAT_AVX512 1
#else
#define FLOAT_AVX512 0
#endif

/* ---- linear ------------------------------------------------------------- */

void linear_forward(real *out, const real *in, const real *weight, const real *bias, int M, int In, int Out)
{
    if (!bias) {
        gemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, Out, In, R(1), in, In, weight, In, R(0), out, Out);
        return;
    }
#ifdef D2V_DOUBLE
    /* The bias goes in first and the GEMM accumulates onto it (beta = 1). */
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++)
        memcpy(out + (size_t)m * Out, bias, (size_t)Out * sizeof(real));
    gemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, Out, In, R(1), in, In, weight, In, R(1), out, Out);
#else
    /* The bias is added as the product is written: no pass over out to
     * fill it first (issue 6 profile: 2% of an image_tiny step). */
    d2v_sgemm_bias(CblasNoTrans, CblasTrans, M, Out, In, in, In, weight, In, bias, out, Out);
#endif
}

void linear_backward_weight(real *d_weight, const real *d_out, const real *in, int M, int In, int Out)
{
    gemm(CblasRowMajor, CblasTrans, CblasNoTrans, Out, In, M, R(1), d_out, Out, in, In, R(1), d_weight, In);
}

/* A bias gradient's column sums go in this many fixed blocks of rows, each
 * summed in row order and the blocks added in block order: the same bits
 * whatever the thread count. Blocks of rows read d_out as it lies, whole
 * rows at a time; threads taking blocks of 32 columns each read every
 * row at a stride (measured, the old and new libraries in one run, 2
 * threads, d_out from memory: 3152 x 768 324 -> 196 us, 2048 x 1024 341
 * -> 165, 3152 x 192 44 -> 31). */
#define BIAS_ROW_BLOCKS 16
#define BIAS_COLUMNS 1024 /* at a time, so the blocks' partial sums stay 64 KB (on the stack) */

void bias_backward(real *d_bias, const real *d_out, int M, int Out)
{
    real partial[BIAS_ROW_BLOCKS][BIAS_COLUMNS];
    for (int c0 = 0; c0 < Out; c0 += BIAS_COLUMNS) {
        const int n = Out - c0 < BIAS_COLUMNS ? Out - c0 : BIAS_COLUMNS;
#pragma omp parallel for schedule(static)
        for (int b = 0; b < BIAS_ROW_BLOCKS; b++) {
            const int m0 = (int)((long long)M * b / BIAS_ROW_BLOCKS), m1 = (int)((long long)M * (b + 1) / BIAS_ROW_BLOCKS);
            real *sum = partial[b];
            for (int o = 0; o < n; o++)
                sum[o] = 0;
            for (int m = m0; m < m1; m++) {
                const real *row = d_out + (size_t)m * Out + c0;
#pragma omp simd
                for (int o = 0; o < n; o++)
                    sum[o] += row[o];
            }
        }
        for (int b = 0; b < BIAS_ROW_BLOCKS; b++)
            for (int o = 0; o < n; o++)
                d_bias[c0 + o] += partial[b][o];
    }
}

void linear_backward(real *d_in, real *d_weight, real *d_bias, const real *d_out, const real *in,
                     const real *weight, int M, int In, int Out, int accumulate_d_in)
{
    /* The weight gradient first: it reads in, which d_in may overwrite. */
    if (d_weight)
        linear_backward_weight(d_weight, d_out, in, M, In, Out);
    if (d_in)
        gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, In, Out, R(1), d_out, Out, weight, In,
             accumulate_d_in ? R(1) : R(0), d_in, In);
    if (d_bias)
        bias_backward(d_bias, d_out, M, Out);
}

/* ---- layer norm ----------------------------------------------------------- */

/* One row's normalisation from its statistics: shared by the forward and
 * the recompute, so both give the same bits. */
static inline void layernorm_row(real *y, const real *x, real mu, real r, const real *gamma, const real *beta, int D)
{
    for (int d = 0; d < D; d++) {
        real xhat = (x[d] - mu) * r;
        y[d] = gamma ? xhat * gamma[d] + beta[d] : xhat;
    }
}

/* A row's mean and 1/std, saved for the backward. */
static inline void layernorm_stats(const real *x, int D, real eps, real *mean, real *rstd)
{
    /* The row sums in vector lanes (omp simd reduction): a running scalar
     * sum waits on each add's latency, which made layer norm a tenth of a
     * speech step. The lanes' order is fixed: same bits on every run. */
    real mu = 0;
#pragma omp simd reduction(+ : mu)
    for (int d = 0; d < D; d++)
        mu += x[d];
    mu /= (real)D;
    real var = 0;
#pragma omp simd reduction(+ : var)
    for (int d = 0; d < D; d++)
        var += (x[d] - mu) * (x[d] - mu);
    var /= (real)D; /* biased, as torch.nn.functional.layer_norm */
    *mean = mu;
    *rstd = R(1) / sqrt(var + eps);
}

static inline void gelu_row(real *y, int D); /* in the GELU section */

/* The forward, or (then_gelu) GELU of it in the same pass over each row:
 * layernorm_forward and layernorm_gelu_forward. */
static void layernorm_rows_forward(real *out, real *mean, real *rstd, const real *in, const real *gamma,
                                   const real *beta, int M, int D, real eps, int then_gelu)
{
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        layernorm_stats(in + (size_t)m * D, D, eps, &mean[m], &rstd[m]);
        layernorm_row(out + (size_t)m * D, in + (size_t)m * D, mean[m], rstd[m], gamma, beta, D);
        if (then_gelu)
            gelu_row(out + (size_t)m * D, D);
    }
}

/* The same from saved statistics: layernorm_recompute and layernorm_gelu_recompute. */
static void layernorm_rows_recompute(real *out, const real *in, const real *mean, const real *rstd,
                                     const real *gamma, const real *beta, int M, int D, int then_gelu)
{
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        layernorm_row(out + (size_t)m * D, in + (size_t)m * D, mean[m], rstd[m], gamma, beta, D);
        if (then_gelu)
            gelu_row(out + (size_t)m * D, D);
    }
}

void layernorm_forward(real *out, real *mean, real *rstd, const real *in, const real *gamma,
                       const real *beta, int M, int D, real eps)
{
    layernorm_rows_forward(out, mean, rstd, in, gamma, beta, M, D, eps, 0);
}

void layernorm_recompute(real *out, const real *in, const real *mean, const real *rstd, const real *gamma,
                         const real *beta, int M, int D)
{
    layernorm_rows_recompute(out, in, mean, rstd, gamma, beta, M, D, 0);
}

/* One row of layer norm's backward: d x = r (d xhat - mean(d xhat) - xhat
 * mean(d xhat xhat)), d xhat = d_out gamma; and, where g is given, the
 * row's share of the gain and bias gradients added to g and b. The row is
 * read whole before it is written: dx may be dy. */
static inline void layernorm_backward_row(real *dx, real *g, real *b, const real *dy, const real *x, real mu, real r,
                                          const real *gamma, int D)
{
    real sum_dxhat = 0, sum_dxhat_xhat = 0;
    if (g) {
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
        for (int d = 0; d < D; d++) {
            const real xhat = (x[d] - mu) * r;
            const real dxhat = gamma ? dy[d] * gamma[d] : dy[d];
            sum_dxhat += dxhat;
            sum_dxhat_xhat += dxhat * xhat;
            g[d] += dy[d] * xhat;
            b[d] += dy[d];
        }
    } else {
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
        for (int d = 0; d < D; d++) {
            const real xhat = (x[d] - mu) * r;
            const real dxhat = gamma ? dy[d] * gamma[d] : dy[d];
            sum_dxhat += dxhat;
            sum_dxhat_xhat += dxhat * xhat;
        }
    }
    sum_dxhat /= (real)D;
    sum_dxhat_xhat /= (real)D;
    for (int d = 0; d < D; d++) {
        const real xhat = (x[d] - mu) * r;
        const real dxhat = gamma ? dy[d] * gamma[d] : dy[d];
        dx[d] = r * (dxhat - sum_dxhat - xhat * sum_dxhat_xhat);
    }
}

/* The gain and bias gradients reduce over rows: rows go in this many
 * fixed blocks, each summed in row order, and the blocks are added in
 * block order, so the result does not depend on the thread count. A block
 * sums them in the same pass that takes its rows' input gradient: d_out
 * and in are read once. (Threads taking 16-channel strips down every row
 * first, then the rows again: 0.75% + 0.43% of an image_tiny step.) */
#define LAYERNORM_ROW_BLOCKS 16
#define LAYERNORM_WIDE 4096 /* channels past which the blocks' partial sums (on the stack) would pass 512 KB */

void layernorm_backward(real *d_in, real *d_gamma, real *d_beta, const real *d_out, const real *in,
                        const real *mean, const real *rstd, const real *gamma, int M, int D)
{
    if (!d_gamma) {
#pragma omp parallel for schedule(static)
        for (int m = 0; m < M; m++)
            layernorm_backward_row(d_in + (size_t)m * D, NULL, NULL, d_out + (size_t)m * D, in + (size_t)m * D,
                                   mean[m], rstd[m], gamma, D);
        return;
    }
    if (D > LAYERNORM_WIDE) {
        /* Rows this wide: one block, on one thread, straight into the
         * gradients (still one fixed order). */
        for (int m = 0; m < M; m++)
            layernorm_backward_row(d_in + (size_t)m * D, d_gamma, d_beta, d_out + (size_t)m * D, in + (size_t)m * D,
                                   mean[m], rstd[m], gamma, D);
        return;
    }
    real partial[LAYERNORM_ROW_BLOCKS][2][D];
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < LAYERNORM_ROW_BLOCKS; blk++) {
        real *g = partial[blk][0], *b = partial[blk][1];
        memset(g, 0, (size_t)D * sizeof *g);
        memset(b, 0, (size_t)D * sizeof *b);
        const int m0 = (int)((long long)M * blk / LAYERNORM_ROW_BLOCKS);
        const int m1 = (int)((long long)M * (blk + 1) / LAYERNORM_ROW_BLOCKS);
        for (int m = m0; m < m1; m++)
            layernorm_backward_row(d_in + (size_t)m * D, g, b, d_out + (size_t)m * D, in + (size_t)m * D, mean[m],
                                   rstd[m], gamma, D);
    }
    for (int blk = 0; blk < LAYERNORM_ROW_BLOCKS; blk++)
        for (int d = 0; d < D; d++) {
            d_gamma[d] += partial[blk][0][d];
            d_beta[d] += partial[blk][1][d];
        }
}

/* ---- instance norm over positions ----------------------------------------- */

/* Channels at a time in instancenorm_forward: a line of each position's
 * row. Going down one channel at a time read a line per value (speech
 * targets: 0.8% of a step); each channel still sums its positions in
 * order, so the bits are the same. */
#define INSTANCENORM_CHANNELS 16

void instancenorm_forward(real *out, real *mean, real *rstd, const real *in, const uint8_t *pad,
                          int B, int N, int D, real eps)
{
    const int blocks = (D + INSTANCENORM_CHANNELS - 1) / INSTANCENORM_CHANNELS;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int blk = 0; blk < blocks; blk++) {
            const int d0 = blk * INSTANCENORM_CHANNELS;
            const int w = D - d0 < INSTANCENORM_CHANNELS ? D - d0 : INSTANCENORM_CHANNELS;
            const real *x = in + (size_t)b * N * D + d0;
            real *y = out + (size_t)b * N * D + d0;
            const uint8_t *p = pad ? pad + (size_t)b * N : NULL;
            real mu[INSTANCENORM_CHANNELS] = {0}, var[INSTANCENORM_CHANNELS] = {0}, r[INSTANCENORM_CHANNELS];
            real count = 0;
            for (int n = 0; n < N; n++)
                if (!p || !p[n]) {
                    for (int j = 0; j < w; j++)
                        mu[j] += x[(size_t)n * D + j];
                    count += 1;
                }
            for (int j = 0; j < w; j++)
                mu[j] = count > 0 ? mu[j] / count : 0;
            for (int n = 0; n < N; n++)
                if (!p || !p[n])
                    for (int j = 0; j < w; j++)
                        var[j] += (x[(size_t)n * D + j] - mu[j]) * (x[(size_t)n * D + j] - mu[j]);
            for (int j = 0; j < w; j++) {
                var[j] = count > 0 ? var[j] / count : 0;
                r[j] = R(1) / sqrt(var[j] + eps);
                mean[(size_t)b * D + d0 + j] = mu[j];
                rstd[(size_t)b * D + d0 + j] = r[j];
            }
            for (int n = 0; n < N; n++)
                for (int j = 0; j < w; j++)
                    y[(size_t)n * D + j] = (!p || !p[n]) ? (x[(size_t)n * D + j] - mu[j]) * r[j] : 0;
        }
}

void instancenorm_backward(real *d_in, const real *d_out, const real *in, const real *mean,
                           const real *rstd, const uint8_t *pad, int B, int N, int D)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int d = 0; d < D; d++) {
            const real *x = in + (size_t)b * N * D + d, *dy = d_out + (size_t)b * N * D + d;
            real *dx = d_in + (size_t)b * N * D + d;
            const uint8_t *p = pad ? pad + (size_t)b * N : NULL;
            real mu = mean[(size_t)b * D + d], r = rstd[(size_t)b * D + d];
            real sum_dy = 0, sum_dy_xhat = 0, count = 0;
            for (int n = 0; n < N; n++)
                if (!p || !p[n]) {
                    sum_dy += dy[(size_t)n * D];
                    sum_dy_xhat += dy[(size_t)n * D] * (x[(size_t)n * D] - mu) * r;
                    count += 1;
                }
            if (count > 0) {
                sum_dy /= count;
                sum_dy_xhat /= count;
            }
            for (int n = 0; n < N; n++)
                dx[(size_t)n * D] = (!p || !p[n])
                    ? r * (dy[(size_t)n * D] - sum_dy - (x[(size_t)n * D] - mu) * r * sum_dy_xhat)
                    : 0;
        }
}

/* ---- GELU ------------------------------------------------------------------- */

#define INV_SQRT2 R(0.70710678118654752440)
#define INV_SQRT_2PI R(0.39894228040143267794)

#ifdef D2V_DOUBLE
/* The gradient checks compare against libm's exact erf and exp. */
static inline real fast_exp(real x) { return exp(x); }
static inline real erf_approx(real a) { return erf(a); }
#else
/* libm's erff and expf are scalar calls: they were a fifth of a speech step
 * (the CNN applies GELU to every sample-rate frame), and expf was 2% of an
 * image step in the attention softmax. These two are branch-
 * free, so `omp simd` turns each loop into vector code. The polynomials
 * are written with fmaf: under -std=c11 gcc does not contract a * b + c on
 * its own, and a fused multiply-add is one instruction instead of two.
 *
 * e^x: x = n ln2 + r with |r| <= ln2/2, e^r by its degree-6 Taylor
 * polynomial (relative error < 2e-7), 2^n put into the exponent bits. */
static inline float fast_exp(float x)
{
    /* Written so a NaN fails the first test and is clamped too: converting
     * a NaN n to int32_t below is undefined behaviour (UBSan: a negative
     * left shift). GELU's result stays NaN through its factor x. */
    x = x >= -87.0f ? x : -87.0f;
    x = x <= 88.0f ? x : 88.0f;
    /* Adding 1.5 * 2^23 rounds to an integer in plain arithmetic, which
     * vectorises where floorf would not. */
    const float shifter = 12582912.0f;
    const float n = fmaf(x, 1.44269504088896341f, shifter) - shifter;
    const float r = fmaf(n, 2.12194440e-4f, fmaf(n, -0.693359375f, x)); /* ln2 split in two for accuracy */
    float p = 1.0f / 720;
    p = fmaf(p, r, 1.0f / 120);
    p = fmaf(p, r, 1.0f / 24);
    p = fmaf(p, r, 1.0f / 6);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    const union { int32_t bits; float value; } scale = {.bits = ((int32_t)n + 127) << 23};
    return p * scale.value;
}

/* erf(a) = a P(a^2) / Q(a^2), a rational function fitted to erf on
 * [0, 3.92] by scripts/fit_erf.py (largest error 4e-8 in exact arithmetic,
 * 3.5e-7 evaluated in float); past 3.92 erf is 1 in float. GELU's forward
 * needs only erf, and this costs no exp: the erf of Abramowitz & Stegun
 * 7.1.26 (1 - poly(t) e^{-a^2}, t = 1/(1 + 0.3275911 a)) took 30
 * operations a vector with its exp; this takes 17 (measured: 0.30 -> 0.17
 * ns an element, one thread, in L1; the speech CNN's layer norm + GELU
 * forward 1.63% -> 1.29% of a step; from memory GELU is bound by the
 * copy). The backward still needs an exp, for GELU's Gaussian density.
 * tests/test_core.c checks GELU against libm. */
static inline float erf_approx(float a)
{
    /* A NaN fails the first test and is clamped; GELU's factor x keeps it NaN. */
    a = a >= -3.92f ? a : -3.92f;
    a = a <= 3.92f ? a : 3.92f;
    const float z = a * a;
    float p = 1.992184942e-08f;
    p = fmaf(p, z, -1.994514726e-06f);
    p = fmaf(p, z, 1.490240373e-04f);
    p = fmaf(p, z, 3.974253223e-03f);
    p = fmaf(p, z, 5.140133121e-02f);
    p = fmaf(p, z, 2.061449205e-01f);
    p = fmaf(p, z, 1.128378775e+00f);
    float q = 1.024471044e-03f;
    q = fmaf(q, z, 1.489187227e-02f);
    q = fmaf(q, z, 1.175772639e-01f);
    q = fmaf(q, z, 5.160199260e-01f);
    q = fmaf(q, z, 1.0f);
    return a * p / q;
}
#endif

/* Phi(x), the standard normal CDF: GELU(x) = x Phi(x). */
static inline real phi(real x)
{
    return R(0.5) * (R(1) + erf_approx(x * INV_SQRT2));
}

/* Phi(x), and (in *pdf) its density: GELU'(x) = Phi(x) + x pdf(x). The
 * same Phi as the forward's, so a backward that recomputes GELU's output
 * gets the forward's bits. */
static inline real normal_cdf(real x, real *pdf)
{
    *pdf = INV_SQRT_2PI * fast_exp(R(-0.5) * x * x);
    return phi(x);
}

/* Every GELU of the forward is this expression, so the fused passes below
 * give the bits of gelu_forward. */
static inline real gelu_value(real x)
{
    return x * phi(x);
}

void gelu_forward(real *out, const real *in, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++)
        out[i] = gelu_value(in[i]);
}

/* ---- layer norm then GELU, one pass (the CNN feature encoder's layer tail) ---- */

static inline void gelu_row(real *y, int D)
{
#pragma omp simd
    for (int d = 0; d < D; d++)
        y[d] = gelu_value(y[d]);
}

void layernorm_gelu_forward(real *out, real *mean, real *rstd, const real *in, const real *gamma,
                            const real *beta, int M, int D, real eps)
{
    layernorm_rows_forward(out, mean, rstd, in, gamma, beta, M, D, eps, 1);
}

void layernorm_gelu_recompute(real *out, const real *in, const real *mean, const real *rstd, const real *gamma,
                              const real *beta, int M, int D)
{
    layernorm_rows_recompute(out, in, mean, rstd, gamma, beta, M, D, 1);
}

void gelu_backward(real *d_in, const real *d_out, const real *in, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        real pdf;
        const real cdf = normal_cdf(in[i], &pdf);
        d_in[i] = d_out[i] * (cdf + in[i] * pdf);
    }
}

void gelu_backward_recompute(real *out, real *d_in, const real *d_out, const real *in, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        real pdf;
        const real x = in[i], cdf = normal_cdf(x, &pdf);
        out[i] = x * cdf;
        d_in[i] = d_out[i] * (cdf + x * pdf);
    }
}

/* dy * GELU'(y) at y = the layer norm of x, recomputed from its row's mean
 * and 1/std by layernorm_row's expression (so with the recompute's bits);
 * *xhat gets the normalised x, which layer norm's backward needs too. */
static inline real gelu_grad_at_layernorm(real dy, real x, real mu, real r, const real *gamma, const real *beta,
                                          int d, real *xhat)
{
    *xhat = (x - mu) * r;
    const real y = gamma ? *xhat * gamma[d] + beta[d] : *xhat;
    real pdf;
    const real cdf = normal_cdf(y, &pdf);
    return dy * (cdf + y * pdf);
}

/* d_in (M,D) = d_out * GELU'(layer norm(in)); d_in may be d_out. */
static void gelu_backward_after_layernorm(real *d_in, const real *d_out, const real *in, const real *mean,
                                          const real *rstd, const real *gamma, const real *beta, int M, int D)
{
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        const real *x = in + (size_t)m * D, *dy = d_out + (size_t)m * D;
        real *dx = d_in + (size_t)m * D;
        const real mu = mean[m], r = rstd[m];
#pragma omp simd
        for (int d = 0; d < D; d++) {
            real xhat;
            dx[d] = gelu_grad_at_layernorm(dy[d], x[d], mu, r, gamma, beta, d, &xhat);
        }
    }
}

/* Rows go in this many fixed blocks: each block sums its rows' gain and
 * bias gradients, and the blocks are added in block order (omp ordered),
 * so the sums do not depend on the thread count. Channels up to
 * LN_GELU_MAX_D keep a block's sums on the stack; wider rows take the
 * separate passes. */
#define LN_GELU_BLOCKS 32
#define LN_GELU_MAX_D 1024

void layernorm_gelu_backward(real *d_in, real *d_gamma, real *d_beta, const real *d_out, const real *in,
                             const real *mean, const real *rstd, const real *gamma, const real *beta, int M, int D)
{
    if (D > LN_GELU_MAX_D) {
        gelu_backward_after_layernorm(d_in, d_out, in, mean, rstd, gamma, beta, M, D);
        layernorm_backward(d_in, d_gamma, d_beta, d_in, in, mean, rstd, gamma, M, D);
        return;
    }
    const int blocks = M < LN_GELU_BLOCKS ? M : LN_GELU_BLOCKS;
#pragma omp parallel for ordered schedule(static, 1)
    for (int blk = 0; blk < blocks; blk++) {
        const int m0 = (int)((long long)M * blk / blocks), m1 = (int)((long long)M * (blk + 1) / blocks);
        real block_dgamma[LN_GELU_MAX_D], block_dbeta[LN_GELU_MAX_D];
        for (int d = 0; d < D; d++)
            block_dgamma[d] = block_dbeta[d] = 0;
        for (int m = m0; m < m1; m++) {
            const real *x = in + (size_t)m * D, *dy = d_out + (size_t)m * D;
            real *dx = d_in + (size_t)m * D;
            const real mu = mean[m], r = rstd[m];
            real sum_dxhat = 0, sum_dxhat_xhat = 0;
            /* Through GELU; dx holds d(LN output) for now. */
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
            for (int d = 0; d < D; d++) {
                real xhat;
                const real g = gelu_grad_at_layernorm(dy[d], x[d], mu, r, gamma, beta, d, &xhat);
                dx[d] = g;
                block_dgamma[d] += g * xhat;
                block_dbeta[d] += g;
                const real dxhat = gamma ? g * gamma[d] : g;
                sum_dxhat += dxhat;
                sum_dxhat_xhat += dxhat * xhat;
            }
            sum_dxhat /= (real)D;
            sum_dxhat_xhat /= (real)D;
            /* Layer norm's backward, as layernorm_backward's row pass. */
#pragma omp simd
            for (int d = 0; d < D; d++) {
                const real xhat = (x[d] - mu) * r;
                const real dxhat = gamma ? dx[d] * gamma[d] : dx[d];
                dx[d] = r * (dxhat - sum_dxhat - xhat * sum_dxhat_xhat);
            }
        }
#pragma omp ordered
        if (d_gamma)
            for (int d = 0; d < D; d++) {
                d_gamma[d] += block_dgamma[d];
                d_beta[d] += block_dbeta[d];
            }
    }
}

/* ---- dropout -------------------------------------------------------------------- */

/* Uniforms are drawn in chunks so each Philox block (four values) is
 * computed once (twice at most where a chunk boundary splits one). */
#define DROPOUT_CHUNK 1024

/* keep[k / 8] bit k % 8 = (u[k] >= p) for k < n. */
static void record_keep(uint8_t *keep, const float *u, size_t n, float p)
{
    size_t k = 0;
#if FLOAT_AVX512
    const __m512 threshold = _mm512_set1_ps(p);
    for (; k + 16 <= n; k += 16) {
        const __mmask16 kept = _mm512_cmp_ps_mask(_mm512_loadu_ps(u + k), threshold, _CMP_GE_OQ);
        keep[k / 8] = (uint8_t)kept;
        keep[k / 8 + 1] = (uint8_t)(kept >> 8);
    }
#endif
    for (; k < n; k += 8) {
        unsigned bits = 0;
        for (size_t j = 0; j < 8 && k + j < n; j++)
            bits |= (unsigned)(u[k + j] >= p) << j;
        keep[k / 8] = (uint8_t)bits;
    }
}

/* out[k] = in[k] / (1 - p) where uniform first+k of the site is >= p, else 0,
 * for k < n; bit k of keep (if not NULL) records which. Serial: called
 * inside parallel loops. */
static void dropout_range(real *out, const real *in, uint64_t first, size_t n, DropoutSite s, uint8_t *keep)
{
    const real keep_scale = R(1) / (R(1) - s.p);
    float u[DROPOUT_CHUNK];
    for (size_t done = 0; done < n; done += DROPOUT_CHUNK) {
        const size_t len = n - done < DROPOUT_CHUNK ? n - done : DROPOUT_CHUNK;
        rng_uniforms_at(s.seed, s.site, s.step, first + done, len, u);
        for (size_t k = 0; k < len; k++)
            out[done + k] = u[k] >= (float)s.p ? in[done + k] * keep_scale : 0;
        if (keep)
            record_keep(keep + done / 8, u, len, (float)s.p);
    }
}

/* out[k] = in[k] / (1 - p) where bit k of keep is set, else 0: the mask a
 * dropout_range recorded, without drawing it again. */
static void dropout_range_kept(real *out, const real *in, size_t n, real p, const uint8_t *keep)
{
    const real keep_scale = R(1) / (R(1) - p);
    size_t k = 0;
#if FLOAT_AVX512
    /* A bit test per element kept gcc from vectorising this loop (perf: as
     * slow as the Philox draw it replaces); 16 bits are a mask register. */
    const __m512 scale = _mm512_set1_ps(keep_scale);
    for (; k + 16 <= n; k += 16) {
        const __mmask16 kept = (__mmask16)(keep[k / 8] | keep[k / 8 + 1] << 8);
        _mm512_storeu_ps(out + k, _mm512_maskz_mul_ps(kept, _mm512_loadu_ps(in + k), scale));
    }
#endif
    for (; k < n; k++)
        out[k] = (keep[k / 8] >> (k % 8)) & 1 ? in[k] * keep_scale : 0;
}

/* Chunks of DROPOUT_CHUNK on the threads; with record, the mask goes to
 * site.keep, otherwise it is read from there when given, drawn when not. */
static void dropout_apply(real *out, const real *in, size_t n, DropoutSite s, int record)
{
    const size_t chunks = (n + DROPOUT_CHUNK - 1) / DROPOUT_CHUNK;
#pragma omp parallel for schedule(static)
    for (size_t c = 0; c < chunks; c++) {
        const size_t first = c * DROPOUT_CHUNK, len = n - first < DROPOUT_CHUNK ? n - first : DROPOUT_CHUNK;
        uint8_t *keep = s.keep ? s.keep + first / 8 : NULL;
        if (keep && !record)
            dropout_range_kept(out + first, in + first, len, s.p, keep);
        else
            dropout_range(out + first, in + first, s.first + first, len, s, keep);
    }
}

void dropout_forward(real *out, const real *in, size_t n, DropoutSite site)
{
    if (site.p > 0)
        dropout_apply(out, in, n, site, 1);
    else if (out != in)
        memcpy(out, in, n * sizeof(real));
}

void dropout_again(real *out, const real *in, size_t n, DropoutSite site)
{
    /* The mask and scale are the forward's: read back where it was
     * recorded, drawn again (the same counters) where it was not. */
    if (site.p > 0)
        dropout_apply(out, in, n, site, 0);
    else if (out != in)
        memcpy(out, in, n * sizeof(real));
}

void dropout_backward(real *d_in, const real *d_out, size_t n, DropoutSite site)
{
    /* The same multiplier as in the forward. */
    dropout_again(d_in, d_out, n, site);
}

/* ---- attention ------------------------------------------------------------- */

size_t attention_keep_bytes(int N)
{
    return ((size_t)N * N + 7) / 8;
}

size_t attention_scratch_size(int N, int threads)
{
    /* Per thread, (N,N) tiles: the probabilities (the forward's where
     * nobody keeps them, the backward's recomputed ones), their dropped
     * version and (backward) their gradient. */
    return (size_t)threads * 3 * (size_t)N * (size_t)N;
}

#if FLOAT_AVX512
/* fast_exp on 16 floats: the same operations, so the same bits. */
static inline __m512 fast_exp16(__m512 x)
{
    /* max_ps returns its second operand where the first is NaN: a NaN is
     * clamped to -87, as in fast_exp. */
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const __m512 shifter = _mm512_set1_ps(12582912.0f);
    const __m512 n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(1.44269504088896341f), shifter), shifter);
    const __m512 r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f),
                                     _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693359375f), x));
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
    return _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
}

/* Lanes j .. j+16 of a row of N (fewer at its end). */
static inline __mmask16 lanes_in_row(int j, int N)
{
    return N - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (N - j)) - 1);
}

/* Those of them whose keys are not padding. */
static inline __mmask16 real_keys(const uint8_t *key_pad, int j, int N)
{
    if (!key_pad)
        return lanes_in_row(j, N);
    if (N - j >= 16) {
        const __m512i pad = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(key_pad + j)));
        return _mm512_testn_epi32_mask(pad, pad);
    }
    __mmask16 keys = 0;
    for (int l = 0; l < N - j; l++)
        keys |= (__mmask16)(!key_pad[j + l] << l);
    return keys;
}

/* The softmax of `rows` (1 .. SOFTMAX_ROWS) consecutive rows in place, in
 * 16-float vectors (the last one masked). A row's three passes are a chain
 * of dependent steps (its max, then its sum, then the scaling); four rows
 * at a time interleave four chains. Measured on 197-key rows: 73 ns a row
 * for gcc's vectorised loops (12 vectors, then 5 scalar exps), 63 one row
 * at a time with masks, 42 four at a time (issue 6 profile: the softmax
 * was 2.6% of an image_tiny step). A row with no key to attend to (all
 * padding) is zero. */
#define SOFTMAX_ROWS 4
__attribute__((always_inline)) static inline void softmax_rows(float *row, int rows, const uint8_t *key_pad, int N)
{
    __m512 max[SOFTMAX_ROWS], sum[SOFTMAX_ROWS];
    for (int r = 0; r < rows; r++) {
        max[r] = _mm512_set1_ps(-INFINITY);
        sum[r] = _mm512_setzero_ps();
    }
    for (int j = 0; j < N; j += 16) {
        const __mmask16 keys = real_keys(key_pad, j, N);
        for (int r = 0; r < rows; r++)
            max[r] = _mm512_mask_max_ps(max[r], keys, max[r], _mm512_maskz_loadu_ps(keys, row + (size_t)r * N + j));
    }
    unsigned empty = 0; /* bit r: row r has no key */
    for (int r = 0; r < rows; r++) {
        const float row_max = _mm512_reduce_max_ps(max[r]);
        empty |= (unsigned)(row_max == -INFINITY) << r;
        max[r] = _mm512_set1_ps(row_max);
    }
    for (int j = 0; j < N; j += 16) {
        const __mmask16 in_row = lanes_in_row(j, N), keys = real_keys(key_pad, j, N);
        for (int r = 0; r < rows; r++) {
            if (empty >> r & 1)
                continue;
            float *at = row + (size_t)r * N + j;
            const __m512 e = _mm512_maskz_mov_ps(keys, fast_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(in_row, at), max[r])));
            _mm512_mask_storeu_ps(at, in_row, e);
            sum[r] = _mm512_add_ps(sum[r], e);
        }
    }
    for (int r = 0; r < rows; r++)
        sum[r] = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum[r]));
    for (int j = 0; j < N; j += 16) {
        const __mmask16 in_row = lanes_in_row(j, N);
        for (int r = 0; r < rows; r++) {
            if (empty >> r & 1)
                continue;
            float *at = row + (size_t)r * N + j;
            _mm512_mask_storeu_ps(at, in_row, _mm512_mul_ps(_mm512_maskz_loadu_ps(in_row, at), sum[r]));
        }
    }
    for (int r = 0; r < rows; r++)
        if (empty >> r & 1)
            memset(row + (size_t)r * N, 0, (size_t)N * sizeof *row);
}

/* The softmax of each of the N rows of p (N, N). */
static void softmax_tile(float *p, const uint8_t *key_pad, int N)
{
    int i = 0;
    for (; i + SOFTMAX_ROWS <= N; i += SOFTMAX_ROWS)
        softmax_rows(p + (size_t)i * N, SOFTMAX_ROWS, key_pad, N);
    for (; i < N; i++)
        softmax_rows(p + (size_t)i * N, 1, key_pad, N);
}
#else
/* Softmax over one row of scores in place; padded keys get probability 0,
 * and a row whose keys are all padding attends to nothing. Branch-free
 * loops, so they vectorise (fast_exp). */
static void softmax_row(real *row, const uint8_t *key_pad, int N)
{
    real max = -INFINITY;
    if (key_pad) {
        for (int j = 0; j < N; j++)
            if (!key_pad[j])
                max = row[j] > max ? row[j] : max;
    } else {
#pragma omp simd reduction(max : max)
        for (int j = 0; j < N; j++)
            max = row[j] > max ? row[j] : max;
    }
    if (max == -INFINITY) {
        memset(row, 0, (size_t)N * sizeof *row);
        return;
    }
    real sum = 0;
    if (key_pad) {
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < N; j++) {
            const real e = key_pad[j] ? R(0) : fast_exp(row[j] - max);
            row[j] = e;
            sum += e;
        }
    } else {
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < N; j++) {
            const real e = fast_exp(row[j] - max);
            row[j] = e;
            sum += e;
        }
    }
    const real inv = R(1) / sum;
#pragma omp simd
    for (int j = 0; j < N; j++)
        row[j] *= inv;
}

static void softmax_tile(real *p, const uint8_t *key_pad, int N)
{
    for (int i = 0; i < N; i++)
        softmax_row(p + (size_t)i * N, key_pad, N);
}
#endif

/* p (N,N) = softmax(scale q k^T) for one (batch, head): q and k are strided
 * rows of qkv. The forward and the backward's recompute share it, so both
 * get the same bits. */
static void attention_probs(real *p, const real *q, const real *k, const uint8_t *key_pad, int N, int Dh, int row,
                            real scale)
{
    gemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, Dh, scale, q, row, k, row, R(0), p, N);
    softmax_tile(p, key_pad, N);
}

void attention_forward(real *out, real *probs, const real *qkv, const uint8_t *pad, int B, int N, int D,
                       int H, DropoutSite drop, real *scratch)
{
    const int Dh = D / H, row = 3 * D;
    const real scale = R(1) / sqrt((real)Dh);
    /* One (batch, head) pair per task with single-threaded GEMMs inside:
     * small N x N x Dh GEMMs parallelise badly inside BLAS (issue 6). */
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const real *q = qkv + (size_t)b * N * row + (size_t)h * Dh;
        const real *k = q + D, *v = q + 2 * D;
        real *my_scratch = scratch + (size_t)omp_get_thread_num() * 3 * N * N;
        real *p = probs ? probs + (size_t)bh * N * N : my_scratch;
        const uint8_t *key_pad = pad ? pad + (size_t)b * N : NULL;
        attention_probs(p, q, k, key_pad, N, Dh, row, scale);
        const real *pv = p;
        if (drop.p > 0) {
            real *tile = my_scratch + (size_t)N * N;
            DropoutSite s = drop;
            s.site = (drop.site << 16) + drop.first_bh + (uint64_t)bh; /* a distinct stream per (b,h) */
            dropout_range(tile, p, 0, (size_t)N * N, s, drop.keep ? drop.keep + (size_t)bh * attention_keep_bytes(N) : NULL);
            pv = tile;
        }
        gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Dh, N, R(1), pv, N, v, row, R(0),
             out + (size_t)b * N * D + (size_t)h * Dh, D);
    }
}

void attention_backward(real *d_qkv, real *out, const real *d_out, const real *qkv, const real *probs,
                        const uint8_t *pad, int B, int N, int D, int H, DropoutSite drop, real *scratch)
{
    const int Dh = D / H, row = 3 * D;
    const real scale = R(1) / sqrt((real)Dh);
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const size_t qoff = (size_t)b * N * row + (size_t)h * Dh;
        const real *q = qkv + qoff, *k = q + D, *v = q + 2 * D;
        real *dq = d_qkv + qoff, *dk = dq + D, *dv = dq + 2 * D;
        const real *dout = d_out + (size_t)b * N * D + (size_t)h * Dh;
        real *recomputed = scratch + (size_t)omp_get_thread_num() * 3 * N * N;
        real *tile = recomputed + (size_t)N * N, *dp = tile + (size_t)N * N;
        /* The forward's probabilities, or the same bits again by its own
         * GEMM and softmax where the caller could not keep them (issue 6). */
        const real *p = probs ? probs + (size_t)bh * N * N : recomputed;
        if (!probs)
            attention_probs(recomputed, q, k, pad ? pad + (size_t)b * N : NULL, N, Dh, row, scale);
        DropoutSite s = drop;
        s.site = (drop.site << 16) + drop.first_bh + (uint64_t)bh;
        const real keep_scale = drop.p > 0 ? R(1) / (R(1) - s.p) : R(1);
        const real *pv = p;
        if (drop.p > 0) {
            if (drop.keep)
                dropout_range_kept(tile, p, (size_t)N * N, drop.p, drop.keep + (size_t)bh * attention_keep_bytes(N));
            else
                dropout_range(tile, p, 0, (size_t)N * N, s, NULL);
            pv = tile;
        }
        /* The forward's output again, by the forward's own GEMM (same bits):
         * for a caller that did not keep it. */
        if (out)
            gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Dh, N, R(1), pv, N, v, row, R(0),
                 out + (size_t)b * N * D + (size_t)h * Dh, D);
        /* dV = P'^T dO;  dP' = dO V^T */
        gemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, Dh, N, R(1), pv, N, dout, D, R(0), dv, row);
        gemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, Dh, R(1), dout, D, v, row, R(0), dp, N);
        /* Through dropout, then softmax: dS = P * (dP - rowsum(dP * P)). */
        for (int i = 0; i < N; i++) {
            const real *pi = p + (size_t)i * N;
            real *dpi = dp + (size_t)i * N;
            /* The forward's mask, read back from the dropped tile: where it
             * is 0 either the key was dropped or P is 0, and then dS is 0
             * whatever dP is, so the Philox draws need not be redone. */
            if (drop.p > 0) {
                const real *ti = tile + (size_t)i * N;
                for (int j = 0; j < N; j++)
                    dpi[j] = ti[j] != 0 ? dpi[j] * keep_scale : 0;
            }
            real dot = 0;
#pragma omp simd reduction(+ : dot)
            for (int j = 0; j < N; j++)
                dot += dpi[j] * pi[j];
            for (int j = 0; j < N; j++)
                dpi[j] = pi[j] * (dpi[j] - dot);
        }
        /* S = scale Q K^T:  dQ = scale dS K;  dK = scale dS^T Q */
        gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Dh, N, scale, dp, N, k, row, R(0), dq, row);
        gemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, Dh, N, scale, dp, N, q, row, R(0), dk, row);
    }
}

/* ---- mask embedding ---------------------------------------------------------- */

void mask_embed_forward(real *out, const real *in, const uint8_t *mask, const real *emb, int M, int D)
{
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++)
        memcpy(out + (size_t)m * D, mask[m] ? emb : in + (size_t)m * D, (size_t)D * sizeof(real));
}

void mask_embed_backward(real *d_in, real *d_emb, const real *d_out, const uint8_t *mask, int M, int D)
{
    for (int m = 0; m < M; m++) {
        const real *g = d_out + (size_t)m * D;
        real *dx = d_in + (size_t)m * D;
        if (mask[m]) {
            for (int d = 0; d < D; d++)
                d_emb[d] += g[d];
            memset(dx, 0, (size_t)D * sizeof(real));
        } else {
            memcpy(dx, g, (size_t)D * sizeof(real));
        }
    }
}

void residual_forward(real *out, const real *a, const real *b, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

/* ---- the data2vec regression loss (paper eq. 3) ------------------------------- */

static inline real smooth_l1(real diff, real beta)
{
    real a = fabs(diff);
    if (beta == 0)
        return diff * diff;
    return a < beta ? R(0.5) * diff * diff / beta : a - R(0.5) * beta;
}

static inline real smooth_l1_grad(real diff, real beta)
{
    if (beta == 0)
        return R(2) * diff;
    if (fabs(diff) < beta)
        return diff / beta;
    return diff > 0 ? R(1) : R(-1);
}

double regression_loss_forward(const real *pred, const real *target, int P, int D, real beta, real scale)
{
    if (P == 0)
        return 0;
    /* Summed in double, in a fixed order, so the logged loss is reproducible. */
    double total = 0;
    for (size_t i = 0; i < (size_t)P * D; i++)
        total += (double)smooth_l1(pred[i] - target[i], beta);
    return total * (double)scale / (double)P;
}

void regression_loss_backward(real *d_pred, const real *pred, const real *target, int P, int D, real beta,
                              real scale)
{
    if (P == 0)
        return;
    const real k = scale / (real)P;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < (size_t)P * D; i++)
        d_pred[i] = k * smooth_l1_grad(pred[i] - target[i], beta);
}
