/* patch_embed.c — the ViT/BEiT front-end (DESIGN §4, image): patches to
 * vectors, CLS token, absolute positions. */
#include "patch_embed.h"

#include <string.h>

/* ---- patch embedding: a P x P conv with stride P ------------------------------ */

void im2col_patches(real *cols, const real *img, const PatchShape *s, int B)
{
    const int C = s->channels, H = s->height, W = s->width, P = s->patch;
    const int grid_w = W / P, G = patch_count(s), K = patch_cols(s);
    /* Patches do not overlap (stride = kernel), so im2col is a pure gather:
     * one output row per patch, each row written by one thread. Like
     * torch's Conv2d, the last H % P rows and W % P columns are never read. */
#pragma omp parallel for schedule(static)
    for (int row = 0; row < B * G; row++) {
        const int b = row / G, g = row % G;
        const int y0 = (g / grid_w) * P, x0 = (g % grid_w) * P;
        real *dst = cols + (size_t)row * K;
        for (int c = 0; c < C; c++) {
            const real *plane = img + ((size_t)b * C + c) * H * W;
            for (int ky = 0; ky < P; ky++, dst += P)
                memcpy(dst, plane + (size_t)(y0 + ky) * W + x0, (size_t)P * sizeof(real));
        }
    }
}

void patch_embed_forward(real *out, const real *cols, const real *weight, const real *bias, const PatchShape *s, int B)
{
    const int M = B * patch_count(s), K = patch_cols(s), D = s->dim;
    /* The whole conv is one GEMM: every patch row against every filter. */
    gemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, D, K, R(1), cols, K, weight, K, R(0), out, D);
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        real *row = out + (size_t)m * D;
        for (int d = 0; d < D; d++)
            row[d] += bias[d];
    }
}

void patch_embed_backward(real *d_weight, real *d_bias, const real *d_out, const real *cols, const PatchShape *s, int B)
{
    const int M = B * patch_count(s), K = patch_cols(s), D = s->dim;
    gemm(CblasRowMajor, CblasTrans, CblasNoTrans, D, K, M, R(1), d_out, D, cols, K, R(1), d_weight, K);
    /* Column sums, parallel over channels so each thread owns its outputs and
     * the sum order does not depend on the thread count. */
#pragma omp parallel for schedule(static)
    for (int d = 0; d < D; d++) {
        real sum = 0;
        for (int m = 0; m < M; m++)
            sum += d_out[(size_t)m * D + d];
        d_bias[d] += sum;
    }
}

/* ---- CLS token and absolute positions -------------------------------------------- */

void cls_pos_forward(real *out, const real *patches, const real *cls, const real *pos, int B, int G, int D)
{
    const int N = G + 1;
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int n = 0; n < N; n++) {
            const real *src = n == 0 ? cls : patches + ((size_t)b * G + (n - 1)) * D;
            const real *p = pos + (size_t)n * D;
            real *dst = out + ((size_t)b * N + n) * D;
            for (int d = 0; d < D; d++)
                dst[d] = src[d] + p[d];
        }
}

void cls_pos_backward(real *d_patches, real *d_cls, real *d_pos, const real *d_out, int B, int G, int D)
{
    const int N = G + 1;
    /* The patch rows pass straight through; row 0 of every sample is CLS. */
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++)
            memcpy(d_patches + ((size_t)b * G + g) * D, d_out + ((size_t)b * N + 1 + g) * D, (size_t)D * sizeof(real));
    /* One CLS vector and one position table are shared by the whole batch, so
     * their gradients sum over samples. */
    for (int b = 0; b < B; b++)
        for (int d = 0; d < D; d++)
            d_cls[d] += d_out[(size_t)b * N * D + d];
    if (!d_pos)
        return;
    /* Parallel over positions: each thread owns whole rows of d_pos and adds
     * the samples in a fixed order. */
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        real *dp = d_pos + (size_t)n * D;
        for (int b = 0; b < B; b++) {
            const real *g = d_out + ((size_t)b * N + n) * D;
            for (int d = 0; d < D; d++)
                dp[d] += g[d];
        }
    }
}

/* ---- fixed 2-D sin-cos positions ------------------------------------------------ */

void sincos_positions_2d(real *pos, int gh, int gw, int D)
{
    /* MAE's get_2d_sincos_pos_embed (util/pos_embed.py), extended to gh != gw.
     * MAE builds its grid with np.meshgrid(grid_w, grid_h) ("w goes first"),
     * so its "emb_h" half actually encodes the column: channels
     * [0, D/4) sin(x w_k), [D/4, D/2) cos(x w_k), [D/2, 3D/4) sin(y w_k),
     * [3D/4, D) cos(y w_k), with x the column, y the row and
     * w_k = 1 / 10000^(k / (D/4)). Row 0 (CLS) stays zero, as MAE's
     * cls_token=True. Any D % 4 leftover channels stay zero too. */
    const int quarter = D / 4;
    memset(pos, 0, (size_t)(1 + gh * gw) * D * sizeof(real));
    for (int y = 0; y < gh; y++)
        for (int x = 0; x < gw; x++) {
            real *row = pos + (size_t)(1 + y * gw + x) * D;
            for (int k = 0; k < quarter; k++) {
                /* In double whatever real is, as MAE computes in float64. */
                double omega = 1.0 / pow(10000.0, (double)k / quarter);
                row[k] = (real)sin(x * omega);
                row[quarter + k] = (real)cos(x * omega);
                row[2 * quarter + k] = (real)sin(y * omega);
                row[3 * quarter + k] = (real)cos(y * omega);
            }
        }
}
