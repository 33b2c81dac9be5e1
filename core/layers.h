/* layers.h — the building blocks, each a forward/backward pair.
 *
 * Shapes: M rows (= B batch x N positions), D channels, In/Out a linear map's
 * input/output width. Row-major throughout. Convention for every backward:
 * the gradient with respect to the layer's input (d_in) is OVERWRITTEN,
 * unless the function says it accumulates; gradients with respect to
 * parameters are ACCUMULATED (+=), so a parameter used twice, or a batch
 * split into micro-batches, just adds up. */
#ifndef D2V_LAYERS_H
#define D2V_LAYERS_H

#include "real.h"

#include <stdint.h>

/* out (M,Out) = in (M,In) . W^T + b; W is (Out,In) as PyTorch stores Linear.
 * bias may be NULL. */
void linear_forward(real *out, const real *in, const real *weight, const real *bias, int M, int In, int Out);
/* d_in (M,In) = d_out . W (accumulated into d_in when accumulate_d_in),
 * d_weight (Out,In) += d_out^T . in, d_bias (Out) += column sums of d_out.
 * d_in, d_bias may be NULL; so may d_weight, for a caller that has no `in`
 * yet and calls linear_backward_weight later. d_in may be `in` (in place). */
void linear_backward(real *d_in, real *d_weight, real *d_bias, const real *d_out, const real *in,
                     const real *weight, int M, int In, int Out, int accumulate_d_in);
/* d_bias (Out) += column sums of d_out (M,Out): linear_backward's bias part. */
void bias_backward(real *d_bias, const real *d_out, int M, int Out);
/* d_weight (Out,In) += d_out (M,Out)^T . in (M,In): linear_backward's weight part. */
void linear_backward_weight(real *d_weight, const real *d_out, const real *in, int M, int In, int Out);

/* Layer norm over the last dimension (D) of each of M rows. gamma/beta may
 * be NULL (no affine: the data2vec target norms). Saves mean and 1/std per
 * row for the backward. */
void layernorm_forward(real *out, real *mean, real *rstd, const real *in, const real *gamma,
                       const real *beta, int M, int D, real eps);
/* d_in (M,D) from d_out; d_gamma, d_beta (D) accumulated (may be NULL).
 * d_in may be d_out (in place). */
void layernorm_backward(real *d_in, real *d_gamma, real *d_beta, const real *d_out, const real *in,
                        const real *mean, const real *rstd, const real *gamma, int M, int D);
/* out (M,D) = the forward's output again, from its input and saved mean and
 * 1/std: the backward recomputes a normalised input instead of keeping it. */
void layernorm_recompute(real *out, const real *in, const real *mean, const real *rstd, const real *gamma,
                         const real *beta, int M, int D);

/* Instance norm (no affine): per sample b and channel d, normalise over the
 * N positions that are not padding (pad[b*N+n] != 0 marks padding; pad may
 * be NULL). Padded positions come out as 0. mean/rstd are (B,D). */
void instancenorm_forward(real *out, real *mean, real *rstd, const real *in, const uint8_t *pad,
                          int B, int N, int D, real eps);
/* d_in (B,N,D) from d_out; padded positions get 0. */
void instancenorm_backward(real *d_in, const real *d_out, const real *in, const real *mean,
                           const real *rstd, const uint8_t *pad, int B, int N, int D);

/* GELU, the exact erf form (PyTorch's default): x/2 (1 + erf(x/sqrt 2)). */
void gelu_forward(real *out, const real *in, size_t n);
/* d_in (n) = d_out * GELU'(in); may work in place. */
void gelu_backward(real *d_in, const real *d_out, const real *in, size_t n);
/* gelu_backward, and out (n) = GELU(in) from the same erf and exp: for a
 * caller that did not keep the forward's output. out may be in, and d_in
 * may be d_out (in place). */
void gelu_backward_recompute(real *out, real *d_in, const real *d_out, const real *in, size_t n);

/* out (M,D) = GELU(layer norm(in)) in one pass over each row: the bits of
 * layernorm_forward then gelu_forward, one read and one write of out fewer. */
void layernorm_gelu_forward(real *out, real *mean, real *rstd, const real *in, const real *gamma,
                            const real *beta, int M, int D, real eps);
/* The same from the saved mean and 1/std (layernorm_recompute, then GELU). */
void layernorm_gelu_recompute(real *out, const real *in, const real *mean, const real *rstd, const real *gamma,
                              const real *beta, int M, int D);

/* The backward of out = GELU(layer norm(in)) (layernorm_gelu_forward): d_in
 * (M,D) from d_out, and d_gamma, d_beta (D) added to, from the saved mean
 * and 1/std. GELU's input is recomputed per element, not kept, and the
 * whole backward is one pass over the rows. d_in may be d_out. */
void layernorm_gelu_backward(real *d_in, real *d_gamma, real *d_beta, const real *d_out, const real *in,
                             const real *mean, const real *rstd, const real *gamma, const real *beta, int M, int D);

/* Inverted dropout: out = in * keep / (1-p), keep drawn from the counter-
 * based RNG at (seed, site, step), so nothing depends on thread scheduling
 * and a backward without a recorded mask (keep below) can draw it again.
 * p == 0 copies (or no-ops when out == in). In-place (out == in) is
 * allowed. */
typedef struct {
    real p;
    uint64_t seed, site, step;
    /* Where this batch sits in the step's global batch (data parallel,
     * gradient accumulation): element i draws at index first + i, and
     * attention's (b, h) at first_bh + b*H + h, so a row's dropout does not
     * depend on which rank or micro-batch computes it. 0 for a whole batch. */
    uint64_t first, first_bh;
    /* The keep mask, one bit per element (NULL: none). A forward records
     * it there, and the backward reads it instead of drawing it again.
     * Attention's is attention_keep_bytes(N) per (b, h), in b*H + h order. */
    uint8_t *keep;
} DropoutSite;
/* out (n) = in with the site's dropout applied (identity when p = 0). */
void dropout_forward(real *out, const real *in, size_t n, DropoutSite site);
/* d_in (n) = d_out through the same keep mask as the forward. */
void dropout_backward(real *d_in, const real *d_out, size_t n, DropoutSite site);
/* out (n) = in through the forward's mask again (a recompute of the
 * forward's output): the same multiplier as dropout_backward. */
void dropout_again(real *out, const real *in, size_t n, DropoutSite site);
/* Bytes of one (b, h) tile's attention keep mask: N x N bits. */
size_t attention_keep_bytes(int N);

/* Multi-head softmax attention. qkv (B,N,3D) holds q|k|v per row, each D =
 * H heads x Dh channels. out (B,N,D) = softmax(q k^T / sqrt(Dh)) v per head.
 * Keys with pad != 0 get zero weight. probs (B,H,N,N) gets the attention
 * probabilities (pre-dropout), which the backward either reads or
 * recomputes from qkv and pad (the same bits either way). scratch needs
 * attention_scratch_size() reals. */
size_t attention_scratch_size(int N, int threads);
/* out (B,N,D) and probs (B,H,N,N) from qkv (B,N,3D). probs may be NULL
 * where nobody reads them: each (b,h)'s then stays in its thread's scratch
 * tile, in cache, instead of going out to memory. */
void attention_forward(real *out, real *probs, const real *qkv, const uint8_t *pad, int B, int N, int D,
                       int H, DropoutSite drop, real *scratch);
/* d_qkv (B,N,3D) from d_out (B,N,D). probs: the forward's (B,H,N,N), or
 * NULL to recompute them from qkv and pad (an N x N x Dh GEMM and a softmax
 * per head more, for B*H*N*N less memory per block). When out is not NULL,
 * the forward's out (B,N,D) again, bit for bit (one N x Dh x N GEMM per
 * head more). */
void attention_backward(real *d_qkv, real *out, const real *d_out, const real *qkv, const real *probs,
                        const uint8_t *pad, int B, int N, int D, int H, DropoutSite drop, real *scratch);

/* Replaces the rows where mask != 0 by a learned vector emb (D): how image
 * and speech hide input (wav2vec 2.0 / BEiT). x (B*N, D). */
void mask_embed_forward(real *out, const real *in, const uint8_t *mask, const real *emb, int M, int D);
/* d_in (M,D): d_out where unmasked, 0 where masked; d_emb (D) += masked rows of d_out. */
void mask_embed_backward(real *d_in, real *d_emb, const real *d_out, const uint8_t *mask, int M, int D);

/* out (M,D) = a + b. */
void residual_forward(real *out, const real *a, const real *b, size_t n);

/* data2vec's regression loss over P predicted rows (P,D):
 *   loss = scale/P * sum_rows sum_channels l(pred - target)
 * with l the Smooth L1 of width beta, or the squared error when beta == 0
 * (fairseq uses F.mse_loss then, without the 1/2). Returns the loss and
 * writes d_pred (P,D) = d loss / d pred. */
double regression_loss_forward(const real *pred, const real *target, int P, int D, real beta, real scale);
/* d_pred (P,D) = d loss / d pred, for the same beta and scale. */
void regression_loss_backward(real *d_pred, const real *pred, const real *target, int P, int D, real beta,
                              real scale);

#endif
