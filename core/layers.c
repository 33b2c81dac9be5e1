#include "layers.h"

#include "rng.h"

#include <math.h>
#include <omp.h>
#include <string.h>

/* ---- linear ------------------------------------------------------------- */

void linear_forward(real *out, const real *in, const real *weight, const real *bias, int M, int In, int Out)
{
    gemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, Out, In, R(1), in, In, weight, In, R(0), out, Out);
    if (!bias)
        return;
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        real *row = out + (size_t)m * Out;
        for (int o = 0; o < Out; o++)
            row[o] += bias[o];
    }
}

void linear_backward(real *d_in, real *d_weight, real *d_bias, const real *d_out, const real *in,
                     const real *weight, int M, int In, int Out, int accumulate_d_in)
{
    if (d_in)
        gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, In, Out, R(1), d_out, Out, weight, In,
             accumulate_d_in ? R(1) : R(0), d_in, In);
    gemm(CblasRowMajor, CblasTrans, CblasNoTrans, Out, In, M, R(1), d_out, Out, in, In, R(1), d_weight, In);
    if (!d_bias)
        return;
    /* Column sums, row by row: contiguous reads, and one fixed summation
     * order whatever the thread count. */
    for (int m = 0; m < M; m++) {
        const real *row = d_out + (size_t)m * Out;
        for (int o = 0; o < Out; o++)
            d_bias[o] += row[o];
    }
}

/* ---- layer norm ----------------------------------------------------------- */

void layernorm_forward(real *out, real *mean, real *rstd, const real *in, const real *gamma,
                       const real *beta, int M, int D, real eps)
{
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        const real *x = in + (size_t)m * D;
        real *y = out + (size_t)m * D;
        real mu = 0;
        for (int d = 0; d < D; d++)
            mu += x[d];
        mu /= (real)D;
        real var = 0;
        for (int d = 0; d < D; d++)
            var += (x[d] - mu) * (x[d] - mu);
        var /= (real)D; /* biased, as torch.nn.functional.layer_norm */
        real r = R(1) / sqrt(var + eps);
        for (int d = 0; d < D; d++) {
            real xhat = (x[d] - mu) * r;
            y[d] = gamma ? xhat * gamma[d] + beta[d] : xhat;
        }
        mean[m] = mu;
        rstd[m] = r;
    }
}

void layernorm_backward(real *d_in, real *d_gamma, real *d_beta, const real *d_out, const real *in,
                        const real *mean, const real *rstd, const real *gamma, int M, int D)
{
    /* d xhat = d_out * gamma; d x = r * (d xhat - mean(d xhat) - xhat * mean(d xhat * xhat)). */
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        const real *x = in + (size_t)m * D, *dy = d_out + (size_t)m * D;
        real *dx = d_in + (size_t)m * D;
        real mu = mean[m], r = rstd[m];
        real sum_dxhat = 0, sum_dxhat_xhat = 0;
        for (int d = 0; d < D; d++) {
            real xhat = (x[d] - mu) * r;
            real dxhat = gamma ? dy[d] * gamma[d] : dy[d];
            sum_dxhat += dxhat;
            sum_dxhat_xhat += dxhat * xhat;
        }
        sum_dxhat /= (real)D;
        sum_dxhat_xhat /= (real)D;
        for (int d = 0; d < D; d++) {
            real xhat = (x[d] - mu) * r;
            real dxhat = gamma ? dy[d] * gamma[d] : dy[d];
            dx[d] = r * (dxhat - sum_dxhat - xhat * sum_dxhat_xhat);
        }
    }
    if (!d_gamma)
        return;
    /* Parameter gradients reduce over rows: parallel over blocks of
     * channels instead, each summed in row order, so the result does not
     * depend on the thread count. A block of 16 floats is one cache line
     * per row: the rows are streamed once, not once per channel. */
    enum { BLOCK = 16 };
    const int blocks = (D + BLOCK - 1) / BLOCK;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        const int d0 = blk * BLOCK, width = D - d0 < BLOCK ? D - d0 : BLOCK;
        real g[BLOCK] = {0}, b[BLOCK] = {0};
        for (int m = 0; m < M; m++) {
            const real *dy = d_out + (size_t)m * D + d0, *x = in + (size_t)m * D + d0;
            const real mu = mean[m], r = rstd[m];
            for (int j = 0; j < width; j++) {
                g[j] += dy[j] * (x[j] - mu) * r;
                b[j] += dy[j];
            }
        }
        for (int j = 0; j < width; j++) {
            d_gamma[d0 + j] += g[j];
            d_beta[d0 + j] += b[j];
        }
    }
}

/* ---- instance norm over positions ----------------------------------------- */

void instancenorm_forward(real *out, real *mean, real *rstd, const real *in, const uint8_t *pad,
                          int B, int N, int D, real eps)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int d = 0; d < D; d++) {
            const real *x = in + (size_t)b * N * D + d;
            real *y = out + (size_t)b * N * D + d;
            const uint8_t *p = pad ? pad + (size_t)b * N : NULL;
            real mu = 0, count = 0;
            for (int n = 0; n < N; n++)
                if (!p || !p[n]) {
                    mu += x[(size_t)n * D];
                    count += 1;
                }
            mu = count > 0 ? mu / count : 0;
            real var = 0;
            for (int n = 0; n < N; n++)
                if (!p || !p[n])
                    var += (x[(size_t)n * D] - mu) * (x[(size_t)n * D] - mu);
            var = count > 0 ? var / count : 0;
            real r = R(1) / sqrt(var + eps);
            for (int n = 0; n < N; n++)
                y[(size_t)n * D] = (!p || !p[n]) ? (x[(size_t)n * D] - mu) * r : 0;
            mean[(size_t)b * D + d] = mu;
            rstd[(size_t)b * D + d] = r;
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
static inline real gelu_exp(real x) { return exp(x); }
static inline real gelu_erf(real x) { return erf(x); }
#else
/* libm's erff and expf are scalar calls: they were a fifth of a speech step
 * (the CNN applies GELU to every sample-rate frame). These two are branch-
 * free, so `omp simd` turns each loop into vector code.
 *
 * e^x: x = n ln2 + r with |r| <= ln2/2, e^r by its degree-6 Taylor
 * polynomial (relative error < 2e-7), 2^n put into the exponent bits. */
static inline float gelu_exp(float x)
{
    /* Written so a NaN fails the first test and is clamped too: converting
     * a NaN n to int32_t below is undefined behaviour (UBSan: a negative
     * left shift). GELU's result stays NaN through its factor x. */
    x = x >= -87.0f ? x : -87.0f;
    x = x <= 88.0f ? x : 88.0f;
    /* Adding 1.5 * 2^23 rounds to an integer in plain arithmetic, which
     * vectorises where floorf would not. */
    const float shifter = 12582912.0f;
    const float n = (x * 1.44269504088896341f + shifter) - shifter;
    const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f; /* ln2 split in two for accuracy */
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const union { int32_t bits; float value; } scale = {.bits = ((int32_t)n + 127) << 23};
    return p * scale.value;
}

/* erf by Abramowitz & Stegun 7.1.26: 1 - poly(t) e^{-x^2} with t =
 * 1/(1 + 0.3275911|x|), absolute error below 1.5e-7 (a float's spacing
 * near 1 is 6e-8); tests/test_core.c checks it against libm's erf. */
static inline float gelu_erf(float x)
{
    const float a = fabsf(x);
    const float t = 1.0f / (1.0f + 0.3275911f * a);
    float p = 1.061405429f;
    p = p * t - 1.453152027f;
    p = p * t + 1.421413741f;
    p = p * t - 0.284496736f;
    p = p * t + 0.254829592f;
    const float y = 1.0f - p * t * gelu_exp(-a * a);
    return copysignf(y, x);
}
#endif

void gelu_forward(real *out, const real *in, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        real x = in[i];
        out[i] = R(0.5) * x * (R(1) + gelu_erf(x * INV_SQRT2));
    }
}

void gelu_backward(real *d_in, const real *d_out, const real *in, size_t n)
{
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < n; i++) {
        real x = in[i];
        real cdf = R(0.5) * (R(1) + gelu_erf(x * INV_SQRT2));
        real pdf = INV_SQRT_2PI * gelu_exp(R(-0.5) * x * x);
        d_in[i] = d_out[i] * (cdf + x * pdf);
    }
}

/* ---- dropout -------------------------------------------------------------------- */

/* One Philox block gives four uniforms: elements are processed in groups of
 * four so each block is computed once. */
static void dropout_apply(real *out, const real *in, size_t n, DropoutSite s)
{
    const real keep_scale = R(1) / (R(1) - s.p);
    const size_t groups = (n + 3) / 4;
#pragma omp parallel for schedule(static)
    for (size_t g = 0; g < groups; g++) {
        for (size_t i = g * 4; i < g * 4 + 4 && i < n; i++) {
            float u = rng_uniform_at(s.seed, s.site, s.step, s.first + i);
            out[i] = u >= (float)s.p ? in[i] * keep_scale : 0;
        }
    }
}

void dropout_forward(real *out, const real *in, size_t n, DropoutSite site)
{
    if (site.p > 0)
        dropout_apply(out, in, n, site);
    else if (out != in)
        memcpy(out, in, n * sizeof(real));
}

void dropout_backward(real *d_in, const real *d_out, size_t n, DropoutSite site)
{
    /* The mask and scale are the same multiplier as in the forward. */
    dropout_forward(d_in, d_out, n, site);
}

/* ---- attention ------------------------------------------------------------- */

size_t attention_scratch_size(int N, int threads)
{
    /* Per thread: one (N,N) score/probability tile and one for its gradient. */
    return (size_t)threads * 2 * (size_t)N * (size_t)N;
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
        real *p = probs + (size_t)bh * N * N;
        const uint8_t *key_pad = pad ? pad + (size_t)b * N : NULL;
        gemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, Dh, scale, q, row, k, row, R(0), p, N);
        for (int i = 0; i < N; i++) {
            real *pi = p + (size_t)i * N;
            real max = -INFINITY;
            for (int j = 0; j < N; j++)
                if (!key_pad || !key_pad[j])
                    max = pi[j] > max ? pi[j] : max;
            real sum = 0;
            for (int j = 0; j < N; j++) {
                pi[j] = (!key_pad || !key_pad[j]) ? exp(pi[j] - max) : 0;
                sum += pi[j];
            }
            /* A row whose keys are all padding attends to nothing. */
            real inv = sum > 0 ? R(1) / sum : 0;
            for (int j = 0; j < N; j++)
                pi[j] *= inv;
        }
        const real *pv = p;
        if (drop.p > 0) {
            real *tile = scratch + (size_t)omp_get_thread_num() * 2 * N * N;
            DropoutSite s = drop;
            s.site = (drop.site << 16) + drop.first_bh + (uint64_t)bh; /* a distinct stream per (b,h) */
            const real keep_scale = R(1) / (R(1) - s.p);
            for (size_t i = 0; i < (size_t)N * N; i++)
                tile[i] = rng_uniform_at(s.seed, s.site, s.step, i) >= (float)s.p ? p[i] * keep_scale : 0;
            pv = tile;
        }
        gemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, Dh, N, R(1), pv, N, v, row, R(0),
             out + (size_t)b * N * D + (size_t)h * Dh, D);
    }
}

void attention_backward(real *d_qkv, const real *d_out, const real *probs, const real *qkv, int B, int N,
                        int D, int H, DropoutSite drop, real *scratch)
{
    const int Dh = D / H, row = 3 * D;
    const real scale = R(1) / sqrt((real)Dh);
#pragma omp parallel for schedule(dynamic, 1)
    for (int bh = 0; bh < B * H; bh++) {
        const int b = bh / H, h = bh % H;
        const size_t qoff = (size_t)b * N * row + (size_t)h * Dh;
        const real *q = qkv + qoff, *k = q + D, *v = q + 2 * D;
        real *dq = d_qkv + qoff, *dk = dq + D, *dv = dq + 2 * D;
        const real *p = probs + (size_t)bh * N * N;
        const real *dout = d_out + (size_t)b * N * D + (size_t)h * Dh;
        real *tile = scratch + (size_t)omp_get_thread_num() * 2 * N * N;
        real *dp = tile + (size_t)N * N;
        DropoutSite s = drop;
        s.site = (drop.site << 16) + drop.first_bh + (uint64_t)bh;
        const real keep_scale = drop.p > 0 ? R(1) / (R(1) - s.p) : R(1);
        const real *pv = p;
        if (drop.p > 0) {
            for (size_t i = 0; i < (size_t)N * N; i++)
                tile[i] = rng_uniform_at(s.seed, s.site, s.step, i) >= (float)s.p ? p[i] * keep_scale : 0;
            pv = tile;
        }
        /* dV = P'^T dO;  dP' = dO V^T */
        gemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, Dh, N, R(1), pv, N, dout, D, R(0), dv, row);
        gemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, N, Dh, R(1), dout, D, v, row, R(0), dp, N);
        /* Through dropout, then softmax: dS = P * (dP - rowsum(dP * P)). */
        for (int i = 0; i < N; i++) {
            const real *pi = p + (size_t)i * N;
            real *dpi = dp + (size_t)i * N;
            if (drop.p > 0)
                for (int j = 0; j < N; j++)
                    dpi[j] = rng_uniform_at(s.seed, s.site, s.step, (size_t)i * N + j) >= (float)s.p
                        ? dpi[j] * keep_scale : 0;
            real dot = 0;
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
