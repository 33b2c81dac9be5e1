/* token_embed.c — token lookup, learned positions and the embedding layer
 * norm of the text front-end (RoBERTa / fairseq data2vec_text). */
#include "token_embed.h"

#include "layers.h"

#include <string.h>

/* ---- token lookup ---------------------------------------------------------------- */

void token_embed_forward(real *out, const int32_t *ids, const real *table, int M, int D, int32_t pad_id)
{
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++) {
        real *dst = out + (size_t)m * D;
        if (ids[m] == pad_id)
            memset(dst, 0, (size_t)D * sizeof(real));
        else
            memcpy(dst, table + (size_t)ids[m] * D, (size_t)D * sizeof(real));
    }
}

void token_embed_backward(real *d_table, const real *d_out, const int32_t *ids, int M, int V, int D,
                          int32_t pad_id, int *first, int *order)
{
    /* Stable counting sort of positions by id: bucket v is order[first[v] ..
     * first[v+1]), positions ascending. O(M + V), serial (it is tiny next to
     * the D-wide adds below). */
    memset(first, 0, (size_t)(V + 1) * sizeof(int));
    for (int m = 0; m < M; m++)
        if (ids[m] != pad_id)
            first[ids[m] + 1]++;
    for (int v = 0; v < V; v++)
        first[v + 1] += first[v];
    for (int m = 0; m < M; m++)
        if (ids[m] != pad_id)
            order[first[ids[m]]++] = m;
    /* The placement loop advanced each start to the next bucket's start:
     * shift back by one bucket. */
    for (int v = V; v > 0; v--)
        first[v] = first[v - 1];
    first[0] = 0;

    /* Each vocabulary row is owned by one thread, which adds its positions in
     * a fixed order: no atomics, and the same sums for any thread count. */
#pragma omp parallel for schedule(dynamic, 64)
    for (int v = 0; v < V; v++) {
        if (first[v] == first[v + 1])
            continue;
        real *row = d_table + (size_t)v * D;
        for (int j = first[v]; j < first[v + 1]; j++) {
            const real *g = d_out + (size_t)order[j] * D;
            for (int d = 0; d < D; d++)
                row[d] += g[d];
        }
    }
}

/* ---- learned positions ----------------------------------------------------------- */

void position_embed_forward(real *x, const real *pos, int B, int S, int D)
{
#pragma omp parallel for collapse(2) schedule(static)
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++) {
            real *row = x + ((size_t)b * S + s) * D;
            const real *p = pos + (size_t)s * D;
            for (int d = 0; d < D; d++)
                row[d] += p[d];
        }
}

void position_embed_backward(real *d_pos, const real *d_x, int B, int S, int D)
{
    /* Parallel over positions: each thread owns whole rows of d_pos and adds
     * the batch in a fixed order. */
#pragma omp parallel for schedule(static)
    for (int s = 0; s < S; s++) {
        real *dp = d_pos + (size_t)s * D;
        for (int b = 0; b < B; b++) {
            const real *g = d_x + ((size_t)b * S + s) * D;
            for (int d = 0; d < D; d++)
                dp[d] += g[d];
        }
    }
}

/* ---- the embedding layer ----------------------------------------------------------- */

void text_embed_forward(TextEmbedActs *a, const int32_t *ids, const TextEmbedParams *p, int B, int S, int D,
                        int32_t pad_id, real eps)
{
    const int M = B * S;
    token_embed_forward(a->sum, ids, p->table, M, D, pad_id);
    position_embed_forward(a->sum, p->pos, B, S, D);
    if (p->norm_w) {
        layernorm_forward(a->normed, a->mean, a->rstd, a->sum, p->norm_w, p->norm_b, M, D, eps);
        a->out = a->normed;
    } else {
        a->out = a->sum;
    }
}

void text_embed_backward(const TextEmbedGrads *g, const real *d_out, const TextEmbedActs *a, const int32_t *ids,
                         const TextEmbedParams *p, int B, int S, int D, int V, int32_t pad_id, real *d_sum,
                         int *first, int *order)
{
    const int M = B * S;
    const real *d = d_out;
    if (p->norm_w) {
        layernorm_backward(d_sum, g->norm_w, g->norm_b, d_out, a->sum, a->mean, a->rstd, p->norm_w, M, D);
        d = d_sum;
    }
    /* sum = E[ids] + P: the same gradient reaches both tables. */
    position_embed_backward(g->pos, d, B, S, D);
    token_embed_backward(g->table, d, ids, M, V, D, pad_id, first, order);
}
