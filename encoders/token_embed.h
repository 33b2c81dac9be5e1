/* token_embed.h — the text front-end (DESIGN §4, text): RoBERTa's embedding
 * layer as fairseq's data2vec text recipe builds it (no embedding scale,
 * learned positions, layernorm_embedding):
 *
 *   x = LN( E[ids] + P[0..S) )      LN optional, see text_embed_forward
 *
 * Positions are plain 0..S-1. fairseq numbers them from padding_idx + 1 = 2
 * and keeps a zero row for padding; with right-padded rows that is the same
 * table shifted by two rows, so only the row indices differ. Dropout after
 * the embedding is the Transformer's input dropout (model.dropout, core/
 * transformer.c), not repeated here.
 *
 * Shapes: B batch, S tokens per row, D channels, V vocabulary, M = B*S. */
#ifndef D2V_TOKEN_EMBED_H
#define D2V_TOKEN_EMBED_H

#include "real.h"

#include <stdint.h>

/* out (M,D) = table (V,D) rows picked by ids (M). A pad_id position gets a
 * zero row: nn.Embedding's padding_idx, so padding has no embedding and its
 * table row never learns. ids must be in [0, V). */
void token_embed_forward(real *out, const int32_t *ids, const real *table, int M, int D, int32_t pad_id);

/* d_table (V,D) += every row of d_out (M,D) added to the row of its id; pad_id
 * positions add nothing. The scatter is made deterministic and race-free by
 * bucketing positions by id first (a stable counting sort: first (V+1) bucket
 * starts, order (M) positions), then giving each thread whole vocabulary rows
 * that it sums in ascending position order — so the result is the same for
 * any thread count, and rows of ids absent from the batch are not touched. */
void token_embed_backward(real *d_table, const real *d_out, const int32_t *ids, int M, int V, int D,
                          int32_t pad_id, int *first, int *order);

/* x (B,S,D) += pos (>= S rows, D): row s added at position s of every row. */
void position_embed_forward(real *x, const real *pos, int B, int S, int D);
/* d_pos (S,D) += d_x (B,S,D) summed over the batch. */
void position_embed_backward(real *d_pos, const real *d_x, int B, int S, int D);

/* ---- the whole embedding layer -------------------------------------------------- */

typedef struct {
    const real *table;           /* (V,D) */
    const real *pos;             /* (>= S, D) */
    const real *norm_w, *norm_b; /* (D) layernorm_embedding; norm_w NULL: no layer norm */
} TextEmbedParams;

typedef struct {
    real *table, *pos, *norm_w, *norm_b; /* gradients, accumulated; norm_* unused without the norm */
} TextEmbedGrads;

/* One pass's activations (M rows): sum = E[ids] + P, mean/rstd of the norm,
 * and out, which is the norm's output, or sum itself without the norm. */
typedef struct {
    real *sum, *mean, *rstd, *normed;
    const real *out;
} TextEmbedActs;

/* a->out (B,S,D) = LN(E[ids] + P) (or without LN when p->norm_w is NULL). */
void text_embed_forward(TextEmbedActs *a, const int32_t *ids, const TextEmbedParams *p, int B, int S, int D,
                        int32_t pad_id, real eps);
/* From d_out (B,S,D) into the gradients. d_sum (B*S*D) is scratch; first
 * (V+1) and order (B*S) as for token_embed_backward. */
void text_embed_backward(const TextEmbedGrads *g, const real *d_out, const TextEmbedActs *a, const int32_t *ids,
                         const TextEmbedParams *p, int B, int S, int D, int V, int32_t pad_id, real *d_sum,
                         int *first, int *order);

#endif
