/* test_image_model.c — the image front-end (DESIGN §4, image): patch
 * embedding and CLS/positions against finite differences and a direct
 * convolution, the fixed sin-cos table, and BEiT block masking.
 *
 * Built against the double-precision core (-DD2V_DOUBLE): gradients are
 * checked as in test_gradcheck.c, with the scalar s = sum(y * r) for a fixed
 * random r, so the backward fed d_y = r must match central differences of s. */
#include "block_mask.h"
#include "gradcheck.h"
#include "patch_embed.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- im2col + GEMM against a direct convolution ------------------------------------- */

/* The definition of a P x P, stride-P conv, written the slow obvious way:
 * out[b, patch (py,px), o] = bias[o] + sum_{c,ky,kx} W[o,c,ky,kx] img[b,c,py*P+ky,px*P+kx]. */
static void direct_patch_conv(double *out, const double *img, const double *weight, const double *bias,
                              const PatchShape *s, int B)
{
    const int C = s->channels, H = s->height, W = s->width, P = s->patch, D = s->dim;
    const int gh = H / P, gw = W / P;
    for (int b = 0; b < B; b++)
        for (int py = 0; py < gh; py++)
            for (int px = 0; px < gw; px++)
                for (int o = 0; o < D; o++) {
                    double sum = bias[o];
                    for (int c = 0; c < C; c++)
                        for (int ky = 0; ky < P; ky++)
                            for (int kx = 0; kx < P; kx++)
                                sum += weight[((o * C + c) * P + ky) * P + kx] *
                                       img[((b * C + c) * H + py * P + ky) * W + px * P + kx];
                    out[((b * gh + py) * gw + px) * D + o] = sum;
                }
}

static void test_patch_conv(const PatchShape s, int B, const char *what)
{
    const int G = patch_count(&s), K = patch_cols(&s), D = s.dim;
    const size_t n_img = (size_t)B * s.channels * s.height * s.width;
    double *img = random_array(n_img, 1), *weight = random_array((size_t)D * K, 1), *bias = random_array(D, 1);
    double *cols = zeros((size_t)B * G * K), *out = zeros((size_t)B * G * D), *ref = zeros((size_t)B * G * D);

    im2col_patches(cols, img, &s, B);
    /* Every column entry is one pixel, copied exactly. */
    int gather_ok = 1;
    const int gw = s.width / s.patch, P = s.patch;
    for (int row = 0; row < B * G; row++)
        for (int c = 0; c < s.channels; c++)
            for (int ky = 0; ky < P; ky++)
                for (int kx = 0; kx < P; kx++) {
                    int b = row / G, g = row % G, y = (g / gw) * P + ky, x = (g % gw) * P + kx;
                    double pixel = img[(((size_t)b * s.channels + c) * s.height + y) * s.width + x];
                    gather_ok &= cols[(size_t)row * K + (c * P + ky) * P + kx] == pixel;
                }
    CHECK(gather_ok, "%s: im2col did not copy the pixels to (c, ky, kx) columns", what);

    patch_embed_forward(out, cols, weight, bias, &s, B);
    direct_patch_conv(ref, img, weight, bias, &s, B);
    double max_diff = 0;
    for (size_t i = 0; i < (size_t)B * G * D; i++)
        max_diff = fmax(max_diff, fabs(out[i] - ref[i]));
    CHECK(max_diff < 1e-12, "%s: im2col + GEMM differs from the direct conv by %.3g", what, max_diff);
    free(img); free(weight); free(bias); free(cols); free(out); free(ref);
}

/* ---- gradient checks ---------------------------------------------------------------- */

typedef struct {
    PatchShape shape;
    int B;
    double *cols, *weight, *bias, *out, *r;
} PatchCase;

static double patch_scalar(void *ctx)
{
    PatchCase *c = ctx;
    patch_embed_forward(c->out, c->cols, c->weight, c->bias, &c->shape, c->B);
    return dot(c->out, c->r, (size_t)c->B * patch_count(&c->shape) * c->shape.dim);
}

static void test_patch_embed_grad(void)
{
    PatchCase c = {{3, 8, 12, 4, 5}, 2, NULL, NULL, NULL, NULL, NULL};
    const int G = patch_count(&c.shape), K = patch_cols(&c.shape), D = c.shape.dim;
    const size_t n_out = (size_t)c.B * G * D, n_w = (size_t)D * K;
    double *img = random_array((size_t)c.B * 3 * 8 * 12, 1);
    c.cols = zeros((size_t)c.B * G * K);
    im2col_patches(c.cols, img, &c.shape, c.B);
    c.weight = random_array(n_w, 0.5);
    c.bias = random_array(D, 1);
    c.out = zeros(n_out);
    c.r = random_array(n_out, 1);

    double *dw = zeros(n_w), *db = zeros(D);
    patch_embed_backward(dw, db, c.r, c.cols, &c.shape, c.B);
    expect_grad("patch embed d_weight", c.weight, n_w, dw, patch_scalar, &c);
    expect_grad("patch embed d_bias", c.bias, D, db, patch_scalar, &c);

    /* Parameter gradients accumulate: a second backward doubles them. */
    double *dw2 = zeros(n_w), *db2 = zeros(D);
    memcpy(dw2, dw, n_w * sizeof(double));
    memcpy(db2, db, D * sizeof(double));
    patch_embed_backward(dw2, db2, c.r, c.cols, &c.shape, c.B);
    double max_diff = 0;
    for (size_t i = 0; i < n_w; i++)
        max_diff = fmax(max_diff, fabs(dw2[i] - 2 * dw[i]));
    for (int d = 0; d < D; d++)
        max_diff = fmax(max_diff, fabs(db2[d] - 2 * db[d]));
    CHECK(max_diff < 1e-12, "patch embed backward overwrote instead of accumulating (%.3g)", max_diff);

    /* The checker must notice a gradient 1% off in one entry. */
    dw[7] *= 1.01;
    CHECK(grad_error(c.weight, n_w, dw, patch_scalar, &c) > 100 * TOLERANCE,
          "the gradient checker did not notice a 1%% error");
    free(img); free(c.cols); free(c.weight); free(c.bias); free(c.out); free(c.r);
    free(dw); free(db); free(dw2); free(db2);
}

typedef struct {
    int B, G, D;
    double *patches, *cls, *pos, *out, *r;
} ClsPosCase;

static double cls_pos_scalar(void *ctx)
{
    ClsPosCase *c = ctx;
    cls_pos_forward(c->out, c->patches, c->cls, c->pos, c->B, c->G, c->D);
    return dot(c->out, c->r, (size_t)c->B * (c->G + 1) * c->D);
}

static void test_cls_pos(void)
{
    ClsPosCase c = {3, 6, 4, NULL, NULL, NULL, NULL, NULL};
    const int N = c.G + 1;
    const size_t n_patches = (size_t)c.B * c.G * c.D, n_pos = (size_t)N * c.D, n_out = (size_t)c.B * N * c.D;
    c.patches = random_array(n_patches, 1);
    c.cls = random_array(c.D, 1);
    c.pos = random_array(n_pos, 1);
    c.out = zeros(n_out);
    c.r = random_array(n_out, 1);

    /* Forward layout: sample 1, row 0 = cls + pos[0]; row 3 = patch 2 + pos[3]. */
    cls_pos_scalar(&c);
    CHECK(c.out[(size_t)1 * N * c.D + 2] == c.cls[2] + c.pos[2], "cls_pos_forward: row 0 is not cls + pos[0]");
    CHECK(c.out[((size_t)1 * N + 3) * c.D + 1] == c.patches[((size_t)1 * c.G + 2) * c.D + 1] + c.pos[3 * c.D + 1],
          "cls_pos_forward: row 3 is not patch 2 + pos[3]");

    double *dp = random_array(n_patches, 1); /* overwritten, so garbage must not leak through */
    double *dcls = zeros(c.D), *dpos = zeros(n_pos);
    cls_pos_backward(dp, dcls, dpos, c.r, c.B, c.G, c.D);
    expect_grad("cls_pos d_patches", c.patches, n_patches, dp, cls_pos_scalar, &c);
    expect_grad("cls_pos d_cls", c.cls, c.D, dcls, cls_pos_scalar, &c);
    expect_grad("cls_pos d_pos", c.pos, n_pos, dpos, cls_pos_scalar, &c);

    /* Fixed positions (d_pos NULL): the other gradients are unchanged. */
    double *dp2 = zeros(n_patches), *dcls2 = zeros(c.D);
    cls_pos_backward(dp2, dcls2, NULL, c.r, c.B, c.G, c.D);
    CHECK(memcmp(dp, dp2, n_patches * sizeof(double)) == 0 && memcmp(dcls, dcls2, c.D * sizeof(double)) == 0,
          "cls_pos_backward without d_pos changed d_patches or d_cls");
    free(c.patches); free(c.cls); free(c.pos); free(c.out); free(c.r);
    free(dp); free(dcls); free(dpos); free(dp2); free(dcls2);
}

/* ---- sin-cos positions -------------------------------------------------------------- */

static void test_sincos(void)
{
    /* A 2 x 3 grid, D = 8: k < 2, w_0 = 1, w_1 = 10000^(-1/2) = 0.01. */
    enum { GH = 2, GW = 3, D = 8, N = 1 + GH * GW };
    double pos[N * D];
    sincos_positions_2d(pos, GH, GW, D);
    int cls_zero = 1, bounded = 1;
    for (int d = 0; d < D; d++)
        cls_zero &= pos[d] == 0;
    for (int i = D; i < N * D; i++)
        bounded &= pos[i] >= -1 && pos[i] <= 1;
    CHECK(cls_zero, "sincos: the CLS row is not zero");
    CHECK(bounded, "sincos: a value outside [-1, 1]");

    /* Worked by hand: the patch at row 1, column 2 is position 1 + 1*3 + 2 = 6;
     * MAE's first half is the column (x = 2), the second the row (y = 1). */
    const double expect[D] = {sin(2.0), sin(0.02), cos(2.0), cos(0.02), sin(1.0), sin(0.01), cos(1.0), cos(0.01)};
    double max_diff = 0;
    for (int d = 0; d < D; d++)
        max_diff = fmax(max_diff, fabs(pos[6 * D + d] - expect[d]));
    CHECK(max_diff < 1e-15, "sincos: position (row 1, col 2) differs from the hand value by %.3g", max_diff);
    /* The top-left patch (x = y = 0) is [0, 0, 1, 1, 0, 0, 1, 1]. */
    const double origin[D] = {0, 0, 1, 1, 0, 0, 1, 1};
    CHECK(memcmp(pos + D, origin, sizeof origin) == 0, "sincos: the top-left patch is not [0 0 1 1 0 0 1 1]");
}

/* ---- block masking ------------------------------------------------------------------ */

static int count_masked(const uint8_t *mask, int n)
{
    int s = 0;
    for (int i = 0; i < n; i++)
        s += mask[i];
    return s;
}

/* Many masks of one spec: never above count, on average close to it, and
 * the return value is the number of ones. */
static void test_mask_fill(BlockMaskSpec spec, int trials, double min_fraction, const char *what)
{
    const int n = spec.grid_h * spec.grid_w;
    uint8_t *mask = malloc((size_t)n);
    Rng rng;
    rng_init(&rng, 1234, 7);
    int over = 0, miscounted = 0;
    double total = 0;
    for (int t = 0; t < trials; t++) {
        int got = block_mask(mask, &spec, &rng);
        int ones = count_masked(mask, n);
        over += ones > spec.count;
        miscounted += got != ones;
        total += ones;
    }
    double mean = total / trials;
    CHECK(over == 0, "%s: %d masks exceeded count %d", what, over, spec.count);
    CHECK(miscounted == 0, "%s: the return value was not the number masked (%d times)", what, miscounted);
    CHECK(mean >= min_fraction * spec.count, "%s: mean %.1f masked, expected at least %.0f%% of %d", what, mean,
          100 * min_fraction, spec.count);
    free(mask);
}

/* Replays block_mask one block at a time through block_mask_place and checks
 * each block: inside the grid and smaller than it, the patches it newly
 * masks lie in its rectangle, the whole rectangle is masked afterwards, and
 * the replay ends with the very mask block_mask draws from the same seed. */
static void test_mask_blocks(BlockMaskSpec spec, int trials, const char *what)
{
    const int n = spec.grid_h * spec.grid_w;
    const int max_block = spec.max_patches > 0 ? spec.max_patches : spec.count;
    uint8_t *mask = malloc((size_t)n), *before = malloc((size_t)n), *direct = malloc((size_t)n);
    int bad_block = 0, mismatch = 0;
    for (int t = 0; t < trials; t++) {
        Rng rng;
        rng_init(&rng, 99, (uint64_t)t);
        memset(mask, 0, (size_t)n);
        int masked = 0;
        while (masked < spec.count) {
            int remaining = spec.count - masked;
            int max_new = remaining < max_block ? remaining : max_block;
            MaskBlock blk;
            memcpy(before, mask, (size_t)n);
            int fresh = block_mask_place(mask, &spec, max_new, &rng, &blk);
            if (fresh == 0) {
                mismatch += memcmp(before, mask, (size_t)n) != 0;
                break;
            }
            int ok = fresh <= max_new && blk.height >= 1 && blk.width >= 1 && blk.height < spec.grid_h &&
                     blk.width < spec.grid_w && blk.top >= 0 && blk.left >= 0 &&
                     blk.top + blk.height <= spec.grid_h && blk.left + blk.width <= spec.grid_w;
            int changed = 0;
            for (int y = 0; ok && y < spec.grid_h; y++)
                for (int x = 0; x < spec.grid_w; x++) {
                    int i = y * spec.grid_w + x;
                    int inside = y >= blk.top && y < blk.top + blk.height && x >= blk.left && x < blk.left + blk.width;
                    changed += mask[i] != before[i];
                    if ((mask[i] != before[i] && (!inside || before[i])) || (inside && !mask[i]))
                        ok = 0;
                }
            bad_block += !ok || changed != fresh;
            masked += fresh;
        }
        Rng again;
        rng_init(&again, 99, (uint64_t)t);
        int got = block_mask(direct, &spec, &again);
        mismatch += got != masked || memcmp(direct, mask, (size_t)n) != 0;
    }
    CHECK(bad_block == 0, "%s: %d blocks were not clean rectangles inside the grid", what, bad_block);
    CHECK(mismatch == 0, "%s: the block-by-block replay differs from block_mask %d times", what, mismatch);
    free(mask); free(before); free(direct);
}

/* With count = min_patches the target area of the first block is exactly
 * min_patches, so its shape shows the aspect-ratio draw: h/w = a up to the
 * rounding of h and w (for area 16 and a in [0.3, 3.33], h/w lies in
 * [2/7, 7/2]). Both extremes should be reached and log(h/w) be symmetric. */
static void test_mask_aspect(void)
{
    const BlockMaskSpec spec = {14, 14, 16, 16, 0, 0.3};
    uint8_t mask[14 * 14];
    Rng rng;
    rng_init(&rng, 5, 0);
    int out_of_range = 0, too_big = 0, tall = 0, wide = 0, several = 0;
    double sum_log = 0;
    const int trials = 2000;
    for (int t = 0; t < trials; t++) {
        memset(mask, 0, sizeof mask);
        MaskBlock blk;
        int fresh = block_mask_place(mask, &spec, spec.count, &rng, &blk);
        if (fresh == 0) {
            out_of_range++;
            continue;
        }
        double ratio = (double)blk.height / blk.width;
        out_of_range += ratio < 0.3 / 1.1 || ratio > 1.1 / 0.3;
        too_big += blk.height * blk.width > spec.count;
        tall += ratio >= 2.5;
        wide += ratio <= 0.4;
        sum_log += log(ratio);
        /* The whole mask with count = min_patches: usually one rectangle, but
         * a first block short of 16 (e.g. 5x3) leaves a remainder that BEiT
         * fills with further, overlapping blocks, so not always. */
        Rng whole;
        rng_init(&whole, 5000 + (uint64_t)t, 0);
        block_mask(mask, &spec, &whole);
        int top = 14, left = 14, bottom = -1, right = -1;
        for (int i = 0; i < 14 * 14; i++)
            if (mask[i]) {
                int y = i / 14, x = i % 14;
                top = y < top ? y : top;
                left = x < left ? x : left;
                bottom = y > bottom ? y : bottom;
                right = x > right ? x : right;
            }
        several += (bottom - top + 1) * (right - left + 1) != count_masked(mask, 14 * 14);
    }
    CHECK(out_of_range == 0, "block aspect: %d first blocks missing or with h/w outside [0.27, 3.7]", out_of_range);
    CHECK(too_big == 0, "block aspect: %d first blocks larger than the budget", too_big);
    CHECK(tall > trials / 20 && wide > trials / 20, "block aspect: extremes rarely drawn (tall %d, wide %d)", tall,
          wide);
    CHECK(fabs(sum_log / trials) < 0.1, "block aspect: mean log(h/w) %.3f, not symmetric", sum_log / trials);
    CHECK(several < trials / 2, "block aspect: %d of %d masks of count = min_patches were not one rectangle", several,
          trials);
}

static void test_mask_edges(void)
{
    uint8_t mask[14 * 14], other[14 * 14];
    Rng a, b;

    /* Same seed, same mask; another seed, another mask. */
    const BlockMaskSpec beit = {14, 14, 118, 16, 0, 0.3};
    rng_init(&a, 42, 3);
    rng_init(&b, 42, 3);
    block_mask(mask, &beit, &a);
    block_mask(other, &beit, &b);
    CHECK(memcmp(mask, other, sizeof mask) == 0, "block mask: the same seed gave different masks");
    int differ = 0;
    for (uint64_t seed = 43; seed < 48; seed++) {
        rng_init(&b, seed, 3);
        block_mask(other, &beit, &b);
        differ += memcmp(mask, other, sizeof mask) != 0;
    }
    CHECK(differ == 5, "block mask: %d of 5 other seeds gave a different mask", differ);

    /* count 0: nothing, and no random numbers consumed. */
    const BlockMaskSpec none = {14, 14, 0, 16, 0, 0.3};
    memset(mask, 1, sizeof mask);
    rng_init(&a, 1, 0);
    int got = block_mask(mask, &none, &a);
    CHECK(got == 0 && count_masked(mask, 14 * 14) == 0, "block mask: count 0 masked %d", got);
    CHECK(a.position == 0 && a.used == 4, "block mask: count 0 consumed random numbers");

    /* Nearly everything (count = G - 1): must stop, never exceed, and cover
     * most of the grid even though no block may span a full row or column. */
    const BlockMaskSpec nearly = {14, 14, 14 * 14 - 1, 16, 0, 0.3};
    double total = 0;
    int over = 0;
    for (uint64_t seed = 0; seed < 200; seed++) {
        rng_init(&a, seed, 1);
        int m = block_mask(mask, &nearly, &a);
        over += m > nearly.count;
        total += m;
    }
    CHECK(over == 0, "block mask: count G-1 exceeded %d times", over);
    CHECK(total / 200 > 0.75 * 196, "block mask: count G-1 masked only %.1f of 196 on average", total / 200);
}

int main(void)
{
    rng_init(&test_rng, 20240601, 0);

    test_patch_conv((PatchShape){3, 8, 12, 4, 5}, 2, "conv 8x12 P4");
    test_patch_conv((PatchShape){3, 9, 14, 4, 6}, 2, "conv 9x14 P4 (remainder dropped)");
    test_patch_conv((PatchShape){1, 6, 6, 3, 2}, 3, "conv 6x6 P3 C1");
    test_patch_embed_grad();
    test_cls_pos();
    test_sincos();

    /* BEiT base (14x14, 118 of 196, blocks >= 16) and the micro config. */
    test_mask_fill((BlockMaskSpec){14, 14, 118, 16, 0, 0.3}, 2000, 0.9, "block mask 14x14/118");
    test_mask_fill((BlockMaskSpec){8, 8, 38, 4, 0, 0.3}, 2000, 0.9, "block mask 8x8/38");
    test_mask_fill((BlockMaskSpec){6, 10, 36, 4, 0, 0.3}, 2000, 0.9, "block mask 6x10/36");
    test_mask_fill((BlockMaskSpec){10, 6, 36, 4, 12, 0.3}, 2000, 0.9, "block mask 10x6/36 max 12");
    test_mask_blocks((BlockMaskSpec){14, 14, 118, 16, 0, 0.3}, 500, "blocks 14x14/118");
    test_mask_blocks((BlockMaskSpec){8, 8, 38, 4, 0, 0.3}, 500, "blocks 8x8/38");
    test_mask_blocks((BlockMaskSpec){6, 10, 36, 4, 0, 0.3}, 500, "blocks 6x10/36");
    test_mask_blocks((BlockMaskSpec){10, 6, 36, 4, 12, 0.3}, 500, "blocks 10x6/36 max 12");
    test_mask_aspect();
    test_mask_edges();

    return check_summary();
}
