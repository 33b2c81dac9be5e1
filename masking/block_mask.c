/* block_mask.c — BEiT's block-wise masking, step for step as
 * MaskingGenerator in unilm/beit/masking_generator.py, so the masks d2v
 * trains on have the same distribution as data2vec's image recipe. Only the
 * random generator differs (Philox instead of Python's Mersenne Twister); the
 * draws are made in the same order: per attempt the area, then the aspect
 * ratio, then (if the block fits) the top row, then the left column. */
#include "block_mask.h"

#include <math.h>
#include <string.h>

/* BEiT's `for attempt in range(10)`: a block that does not fit, or adds no
 * new patch, or adds too many, is redrawn at most this many times. */
#define ATTEMPTS_PER_BLOCK 10

/* Python's random.uniform(a, b) = a + (b - a) * random(). The formula also
 * holds for a > b, which happens here once fewer than min_patches remain to
 * be masked: the area is then drawn from [remaining, min_patches]. */
static double uniform_between(Rng *rng, double a, double b)
{
    return a + (b - a) * (double)rng_uniform(rng);
}

/* Python 3's round() sends halves to the even neighbour; so does nearbyint()
 * in the default rounding mode (an exact .5 is rare here, but it is free to
 * agree). */
static int round_half_even(double x)
{
    return (int)nearbyint(x);
}

int block_mask_place(uint8_t *mask, const BlockMaskSpec *spec, int max_new, Rng *rng, MaskBlock *block)
{
    const int grid_h = spec->grid_h, grid_w = spec->grid_w;
    const double log_aspect_lo = log(spec->min_aspect), log_aspect_hi = log(1.0 / spec->min_aspect);
    for (int attempt = 0; attempt < ATTEMPTS_PER_BLOCK; attempt++) {
        double area = uniform_between(rng, spec->min_patches, max_new);
        /* Log-uniform aspect ratio, so a block h/w = a is as likely as w/h = a. */
        double aspect = exp(uniform_between(rng, log_aspect_lo, log_aspect_hi));
        int h = round_half_even(sqrt(area * aspect));
        int w = round_half_even(sqrt(area / aspect));
        /* Strictly smaller than the grid, as BEiT tests it: a block never
         * spans the full width or height. Kept on purpose for fidelity to the
         * released recipe, even though a full-width block would be legal. */
        if (!(w < grid_w && h < grid_h))
            continue;
        /* randint(0, grid - size) includes both ends: grid - size + 1 choices. */
        int top = (int)rng_below(rng, (uint32_t)(grid_h - h + 1));
        int left = (int)rng_below(rng, (uint32_t)(grid_w - w + 1));
        int already = 0;
        for (int y = top; y < top + h; y++)
            for (int x = left; x < left + w; x++)
                already += mask[y * grid_w + x];
        int fresh = h * w - already;
        /* Overlapping earlier blocks is allowed; only the new patches count
         * against the budget, and a block that adds nothing is no progress. */
        if (fresh <= 0 || fresh > max_new)
            continue;
        for (int y = top; y < top + h; y++)
            memset(mask + y * grid_w + left, 1, (size_t)w);
        if (block)
            *block = (MaskBlock){top, left, h, w};
        return fresh;
    }
    return 0;
}

int block_mask(uint8_t *mask, const BlockMaskSpec *spec, Rng *rng)
{
    memset(mask, 0, (size_t)spec->grid_h * spec->grid_w);
    const int max_block = spec->max_patches > 0 ? spec->max_patches : spec->count;
    int masked = 0;
    while (masked < spec->count) {
        int remaining = spec->count - masked;
        int max_new = remaining < max_block ? remaining : max_block;
        int fresh = block_mask_place(mask, spec, max_new, rng, NULL);
        /* Ten failed attempts in a row: give up short of count (BEiT does the
         * same). Every success adds at least one patch, so this terminates. */
        if (fresh == 0)
            break;
        masked += fresh;
    }
    return masked;
}
