/* token_mask.c — fairseq's MaskTokensDataset (mask_multiple_length spans,
 * random / unchanged replacement) over caller-chosen maskable positions.
 * Only the random generator differs from fairseq (Philox instead of numpy);
 * per row the draws are: the start count (one uniform), the starts (a partial
 * Fisher-Yates, one rng_below each), then for each selected position in
 * ascending order one uniform (mask / random / keep) and, for a random
 * replacement, one rng_below for the token. */
#include "token_mask.h"

#include <string.h>

const char *token_mask_spec_problem(const TokenMaskSpec *spec)
{
    if (!(spec->prob >= 0 && spec->prob <= 1))
        return "the masking probability must be in [0, 1]";
    if (spec->span < 1)
        return "the span must be at least 1";
    if (!(spec->random_prob >= 0 && spec->keep_prob >= 0 && spec->random_prob + spec->keep_prob <= 1))
        return "the random and keep probabilities must be >= 0 and sum to at most 1";
    return NULL;
}

int token_mask(int32_t *out_ids, uint8_t *loss, uint8_t *selected, const int32_t *ids, const uint8_t *maskable,
               int B, int T, const TokenMaskSpec *spec, const TokenMaskVocab *vocab, int *scratch, Rng *rng)
{
    if (token_mask_spec_problem(spec) || B < 0 || T < 0 || (spec->random_prob > 0 && vocab->n_random < 1))
        return -1;
    const size_t n = (size_t)B * T;
    memcpy(out_ids, ids, n * sizeof *out_ids);
    memset(loss, 0, n);
    int n_loss = 0;
    for (int b = 0; b < B; b++) {
        const uint8_t *row_maskable = maskable + (size_t)b * T;
        int32_t *row_out = out_ids + (size_t)b * T;
        uint8_t *row_loss = loss + (size_t)b * T;
        /* Selection is marked in row_loss first, then turned into the loss. */
        int m = 0;
        for (int t = 0; t < T; t++)
            if (row_maskable[t])
                scratch[m++] = t;
        int starts = (int)(spec->prob * m / spec->span + (double)rng_uniform(rng));
        if (starts > m)
            starts = m;
        /* numpy's choice(m, starts, replace=False) in distribution: the first
         * `starts` steps of a Fisher-Yates shuffle of the maskable positions. */
        for (int i = 0; i < starts; i++) {
            int j = i + (int)rng_below(rng, (uint32_t)(m - i));
            int tmp = scratch[i];
            scratch[i] = scratch[j];
            scratch[j] = tmp;
        }
        for (int i = 0; i < starts; i++)
            for (int t = scratch[i]; t < scratch[i] + spec->span && t < T; t++)
                if (row_maskable[t])
                    row_loss[t] = 1;
        if (selected)
            memcpy(selected + (size_t)b * T, row_loss, (size_t)T);

        const double replace_prob = spec->random_prob + spec->keep_prob;
        for (int t = 0; t < T; t++) {
            if (!row_loss[t])
                continue;
            const double u = (double)rng_uniform(rng);
            if (u < spec->keep_prob) {
                /* unchanged: the student sees the true token */
            } else if (u < replace_prob) {
                row_out[t] = vocab->random_ids[rng_below(rng, (uint32_t)vocab->n_random)];
            } else {
                row_out[t] = vocab->mask_id;
            }
            if (!spec->loss_on_selected && row_out[t] != vocab->mask_id)
                row_loss[t] = 0;
            n_loss += row_loss[t];
        }
    }
    return n_loss;
}
