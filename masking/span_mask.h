/* span_mask.h — wav2vec 2.0's span masking, the audio masker of data2vec:
 * fairseq's compute_mask_indices (fairseq/data/data_utils.py) for
 * mask_type="static", no_overlap=False, require_same_masks=True and
 * mask_dropout=0. Per row, about prob * len / span span starts are drawn
 * without replacement and `span` frames are masked from each; spans may
 * overlap, so the masked fraction comes out below prob. Every row is then cut
 * down at random to the smallest row's masked count, so all rows of a batch
 * mask the same number of frames (the model gathers them as a dense block). */
#ifndef D2V_SPAN_MASK_H
#define D2V_SPAN_MASK_H

#include "rng.h"

#include <stdint.h>

typedef struct {
    double prob;    /* fairseq mask_prob, in [0, 1]: fraction of frames that
                       would be masked if spans never overlapped */
    int span;       /* fairseq mask_length, >= 1 */
    int min_masks;  /* fairseq min_masks: at least this many spans per row */
} SpanMaskSpec;

/* mask (B, T) row-major, 1 = masked; every element is written. valid_len[b]
 * is the number of non-padded frames of row b, in [0, T] (NULL = every row
 * has all T). Padded frames are never masked. Returns the per-row masked
 * count, the same for every row, or -1 on a bad argument or if the scratch
 * allocation (malloc, max(T + 1, min_masks) + 1 ints) fails. */
int span_mask(uint8_t *mask, int B, int T, const int *valid_len, const SpanMaskSpec *spec, Rng *rng);

/* The same masks with per-row randomness, for batches that are a slice of a
 * larger one (data-parallel ranks): row b draws its span count, starts and
 * thinning from rng_substream(base, row0 + b), and the same-count cut goes
 * to agree_min(ctx, the fewest masked frames of these rows) when agree_min
 * is not NULL (the fewest over every slice), else to this slice's fewest.
 * valid_len is required. Returns the agreed count or -1 as span_mask. */
int span_mask_rows(uint8_t *mask, int B, int T, const int *valid_len, const SpanMaskSpec *spec, const Rng *base,
                   int row0, int (*agree_min)(void *ctx, int value), void *agree_ctx);

#endif
