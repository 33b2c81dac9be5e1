/* patch_embed.h — the ViT/BEiT front-end (DESIGN §4, image): a P x P conv
 * with stride P over the image, computed as im2col + one GEMM; a learned CLS
 * token prepended; learned (or fixed sin-cos) absolute positions added.
 * Shapes: B batch, C channels (3), H x W image, P patch, G = (H/P)(W/P)
 * patches, D channels, N = G + 1 positions (CLS first). */
#ifndef D2V_PATCH_EMBED_H
#define D2V_PATCH_EMBED_H

#include "real.h"

#include <stddef.h>

typedef struct {
    int channels, height, width, patch, dim;
} PatchShape;

static inline int patch_count(const PatchShape *s) { return (s->height / s->patch) * (s->width / s->patch); }
static inline int patch_cols(const PatchShape *s) { return s->channels * s->patch * s->patch; }

/* img (B,C,H,W) -> cols (B*G, C*P*P), rows patch-major (b, py, px), columns
 * ordered (c, ky, kx) as PyTorch's Conv2d weight (D, C, P, P) flattens. */
void im2col_patches(real *cols, const real *img, const PatchShape *s, int B);

/* out (B*G, D) = cols . W^T + b, W (D, C*P*P). cols must hold im2col(img). */
void patch_embed_forward(real *out, const real *cols, const real *weight, const real *bias, const PatchShape *s, int B);
/* d_weight (D, C*P*P) += d_out^T cols; d_bias += column sums. (No gradient
 * to the pixels: nothing upstream learns.) */
void patch_embed_backward(real *d_weight, real *d_bias, const real *d_out, const real *cols, const PatchShape *s, int B);

/* out (B, G+1, D): row 0 of each sample is cls, rows 1.. are patches (B,G,D),
 * then pos (G+1, D) is added to every sample. */
void cls_pos_forward(real *out, const real *patches, const real *cls, const real *pos, int B, int G, int D);
/* d_patches (B,G,D) overwritten; d_cls (D) and d_pos (G+1,D) accumulated;
 * d_pos may be NULL (fixed sin-cos positions). */
void cls_pos_backward(real *d_patches, real *d_cls, real *d_pos, const real *d_out, int B, int G, int D);

/* Fixed 2-D sin-cos positions (MAE/BEiT v2 style) for a gh x gw grid plus a
 * zero row for CLS: pos (1 + gh*gw, D), D divisible by 4. As in MAE, the
 * first D/2 channels encode the patch's column, the last D/2 its row, each
 * as [sin(t w_k), cos(t w_k)] with w_k = 10000^(-k/(D/4)), k < D/4. */
void sincos_positions_2d(real *pos, int gh, int gw, int D);

#endif
