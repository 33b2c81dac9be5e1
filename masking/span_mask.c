/* span_mask.c — fairseq's compute_mask_indices, static spans with overlap
 * allowed, followed by require_same_masks. Only the random generator differs
 * from fairseq (Philox instead of numpy's global Mersenne Twister); the draws
 * are made in this fixed order:
 *   1. the span count: one uniform per row when valid_len is given, a single
 *      uniform shared by all rows when it is NULL (fairseq's padding_mask=None
 *      path reuses all_num_mask for every row);
 *   2. per row, the span starts (a partial Fisher-Yates, one rng_below each);
 *   3. per row whose masked count exceeds the batch minimum, the frames kept
 *      (again a partial Fisher-Yates over that row's masked frames, ascending). */
#include "span_mask.h"

#include <stdlib.h>
#include <string.h>

/* Move a uniform random k-subset of pool[0..n) into pool[0..k), the first k
 * steps of a Fisher-Yates shuffle: numpy's choice(..., replace=False) in
 * distribution (not in draws). */
static void sample_without_replacement(int *pool, int n, int k, Rng *rng)
{
    for (int i = 0; i < k; i++) {
        int j = i + (int)rng_below(rng, (uint32_t)(n - i));
        int tmp = pool[i];
        pool[i] = pool[j];
        pool[j] = tmp;
    }
}

/* int(mask_prob * sz / mask_length + np.random.rand()), then max(min_masks, .):
 * the uniform rounds the expected span count up with probability equal to its
 * fractional part, so the mean count is exactly prob * sz / span. The sum is
 * non-negative, so the C cast truncates the same way Python's int() does. */
static int draw_span_count(const SpanMaskSpec *spec, int sz, Rng *rng)
{
    int count = (int)(spec->prob * sz / spec->span + (double)rng_uniform(rng));
    return count > spec->min_masks ? count : spec->min_masks;
}

/* One row before the same-count cut: writes the row's mask (padding stays 0)
 * and returns how many distinct frames it masked. */
static int mask_row(uint8_t *row, int sz, int span_count, const SpanMaskSpec *spec, int *scratch, Rng *rng)
{
    /* Starts come from range(sz - min_len). When the row is too short for
     * that many distinct starts, fairseq widens the range to span_count + 1
     * values; starts at or past sz then mask nothing (they are dropped by the
     * `mask_idc < sz` filter below), which is how a too-short row ends up
     * with fewer masked frames than asked for. */
    int min_len = spec->span;
    if (sz - min_len <= span_count)
        min_len = sz - span_count - 1;
    const int start_range = sz - min_len; /* >= span_count + 1, >= 1 */
    for (int i = 0; i < start_range; i++)
        scratch[i] = i;
    sample_without_replacement(scratch, start_range, span_count, rng);

    int masked = 0;
    for (int s = 0; s < span_count; s++) {
        /* Spans may overlap (no_overlap=False); np.unique counts a frame once. */
        for (int t = scratch[s]; t < scratch[s] + spec->span && t < sz; t++) {
            masked += !row[t];
            row[t] = 1;
        }
    }
    return masked;
}

/* require_same_masks: keep a uniform random `keep` of the row's masked frames
 * (np.random.choice(mask_idc, min_len, replace=False)); the rest are unmasked. */
static void thin_row(uint8_t *row, int sz, int keep, int *scratch, Rng *rng)
{
    int n = 0;
    for (int t = 0; t < sz; t++)
        if (row[t])
            scratch[n++] = t;
    sample_without_replacement(scratch, n, keep, rng);
    memset(row, 0, (size_t)sz);
    for (int i = 0; i < keep; i++)
        row[scratch[i]] = 1;
}

int span_mask(uint8_t *mask, int B, int T, const int *valid_len, const SpanMaskSpec *spec, Rng *rng)
{
    if (B < 0 || T < 0 || !(spec->prob >= 0.0 && spec->prob <= 1.0) || spec->span < 1 || spec->min_masks < 0)
        return -1;
    if (valid_len)
        for (int b = 0; b < B; b++)
            if (valid_len[b] < 0 || valid_len[b] > T)
                return -1;
    if (B == 0)
        return 0;

    /* With prob <= 1 and span >= 1 a row asks for at most max(T + 1, min_masks)
     * spans, and the start range holds at most one more value than that. */
    const int most_spans = T + 1 > spec->min_masks ? T + 1 : spec->min_masks;
    int *scratch = malloc(((size_t)most_spans + 1) * sizeof *scratch);
    int *row_masked = malloc((size_t)B * sizeof *row_masked);
    if (!scratch || !row_masked) {
        free(scratch);
        free(row_masked);
        return -1;
    }

    memset(mask, 0, (size_t)B * (size_t)T);
    const int shared_count = valid_len ? 0 : draw_span_count(spec, T, rng);
    int fewest = 0;
    for (int b = 0; b < B; b++) {
        const int sz = valid_len ? valid_len[b] : T;
        const int span_count = valid_len ? draw_span_count(spec, sz, rng) : shared_count;
        row_masked[b] = mask_row(mask + (size_t)b * T, sz, span_count, spec, scratch, rng);
        if (b == 0 || row_masked[b] < fewest)
            fewest = row_masked[b];
    }
    for (int b = 0; b < B; b++)
        if (row_masked[b] > fewest)
            thin_row(mask + (size_t)b * T, valid_len ? valid_len[b] : T, fewest, scratch, rng);

    free(scratch);
    free(row_masked);
    return fewest;
}

int span_mask_rows(uint8_t *mask, int B, int T, const int *valid_len, const SpanMaskSpec *spec, const Rng *base,
                   int row0, int (*agree_min)(void *ctx, int value), void *agree_ctx)
{
    if (B < 0 || T < 0 || !valid_len || !(spec->prob >= 0.0 && spec->prob <= 1.0) || spec->span < 1 ||
        spec->min_masks < 0)
        return -1;
    for (int b = 0; b < B; b++)
        if (valid_len[b] < 0 || valid_len[b] > T)
            return -1;
    const int most_spans = T + 1 > spec->min_masks ? T + 1 : spec->min_masks;
    int *scratch = malloc(((size_t)most_spans + 1) * sizeof *scratch);
    int *row_masked = malloc(((size_t)B + 1) * sizeof *row_masked);
    Rng *rows = malloc(((size_t)B + 1) * sizeof *rows);
    if (!scratch || !row_masked || !rows) {
        free(scratch);
        free(row_masked);
        free(rows);
        return -1;
    }
    memset(mask, 0, (size_t)B * (size_t)T);
    int fewest = 0;
    for (int b = 0; b < B; b++) {
        rng_substream(&rows[b], base, (uint64_t)(row0 + b));
        const int span_count = draw_span_count(spec, valid_len[b], &rows[b]);
        row_masked[b] = mask_row(mask + (size_t)b * T, valid_len[b], span_count, spec, scratch, &rows[b]);
        if (b == 0 || row_masked[b] < fewest)
            fewest = row_masked[b];
    }
    if (agree_min)
        fewest = agree_min(agree_ctx, B > 0 ? fewest : T + 1);
    for (int b = 0; b < B; b++)
        if (row_masked[b] > fewest)
            thin_row(mask + (size_t)b * T, valid_len[b], fewest, scratch, &rows[b]);
    free(scratch);
    free(row_masked);
    free(rows);
    return fewest;
}
