/* block_mask.h — BEiT's block-wise masking (Bao et al. 2021, Alg. 1), the
 * image masker of data2vec: rectangular blocks of at least min_patches
 * patches with aspect ratio log-uniform in [min_aspect, 1/min_aspect] are
 * placed at random until `count` patches of the gh x gw grid are masked. A
 * block is only kept if it adds at least one new patch and does not exceed
 * the remaining count, so the total never exceeds count; it may fall short
 * when no block fits any more (the attempt budget runs out). */
#ifndef D2V_BLOCK_MASK_H
#define D2V_BLOCK_MASK_H

#include "rng.h"

#include <stdint.h>

typedef struct {
    int grid_h, grid_w;
    int count;          /* patches to mask */
    int min_patches;    /* smallest target area, in patches; a block can
                           come out a little smaller (h, w are rounded: 16 ->
                           5x3), and once fewer than this remain BEiT draws
                           the area from [remaining, min_patches] */
    int max_patches;    /* largest block (0 = count) */
    double min_aspect;  /* e.g. 0.3, in (0, 1]; the range is [min_aspect, 1/min_aspect] */
} BlockMaskSpec;

/* A placed block: rows top..top+height-1, columns left..left+width-1. */
typedef struct {
    int top, left, height, width;
} MaskBlock;

/* mask (grid_h*grid_w), row-major, 1 = masked. Returns the number masked. */
int block_mask(uint8_t *mask, const BlockMaskSpec *spec, Rng *rng);

/* One step of block_mask (BEiT's `_mask`): up to 10 attempts to place one
 * block that masks between 1 and max_new new patches. Returns how many it
 * masked (0: every attempt failed) and, if block is non-NULL and a block was
 * placed, its rectangle. Exposed so tests can watch each block land. */
int block_mask_place(uint8_t *mask, const BlockMaskSpec *spec, int max_new, Rng *rng, MaskBlock *block);

#endif
