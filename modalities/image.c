/* image.c — the image modality (DESIGN §4, image; issue 3): JPEG files in,
 * ViT patch embedding with CLS and positions, BEiT block masking with a
 * learned mask embedding. Ties image_io (data), patch_embed (front-end) and
 * block_mask (masker) into one Modality. */
#include "block_mask.h"
#include "files.h"
#include "image_io.h"
#include "layers.h"
#include "patch_embed.h"
#include "registry.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

_Static_assert(sizeof(real) == sizeof(float), "modalities are built in float only");

typedef struct {
    struct {
        int64_t image_size, patch_size;
        char positions[CONFIG_STR_LEN]; /* learned | sincos */
    } frontend;
    struct {
        double ratio;
        int64_t count, min_patches, max_patches;
        double min_aspect;
    } mask;
    struct {
        double crop_scale_min, crop_scale_max, crop_ratio_min, crop_ratio_max, flip_prob, eval_crop_fraction;
        char mean[CONFIG_STR_LEN], std[CONFIG_STR_LEN];
    } data;
} ImageConfig;

#define KEY(sec, field, type, def, lo, hi, choices, help) \
    {#sec, #field, type, offsetof(ImageConfig, sec.field), def, lo, hi, choices, help}

static const ConfigKey image_keys[] = {
    KEY(frontend, image_size, CK_INT, "224", 8, 4096, NULL, "input images are image_size x image_size pixels"),
    KEY(frontend, patch_size, CK_INT, "16", 1, 512, NULL, "ViT patch size (image_size must be a multiple)"),
    KEY(frontend, positions, CK_CHOICE, "learned", 0, 0, "learned|sincos", "absolute position embedding"),
    KEY(mask, ratio, CK_FLOAT, "0.6", 0, 0.99, NULL, "fraction of patches to mask (when mask.count = 0)"),
    KEY(mask, count, CK_INT, "0", 0, 1000000, NULL, "patches to mask per image (0: use mask.ratio)"),
    KEY(mask, min_patches, CK_INT, "16", 1, 1000000, NULL, "smallest masked block, in patches (BEiT)"),
    KEY(mask, max_patches, CK_INT, "0", 0, 1000000, NULL, "largest masked block (0: no limit)"),
    KEY(mask, min_aspect, CK_FLOAT, "0.3", 0.01, 1, NULL, "block aspect ratio range [min_aspect, 1/min_aspect]"),
    KEY(data, crop_scale_min, CK_FLOAT, "0.08", 0.001, 1, NULL, "random resized crop: smallest area fraction"),
    KEY(data, crop_scale_max, CK_FLOAT, "1", 0.001, 1, NULL, "random resized crop: largest area fraction"),
    KEY(data, crop_ratio_min, CK_FLOAT, "0.75", 0.01, 100, NULL, "random resized crop: smallest aspect ratio"),
    KEY(data, crop_ratio_max, CK_FLOAT, "1.3333333333333333", 0.01, 100, NULL, "random resized crop: largest aspect"),
    KEY(data, flip_prob, CK_FLOAT, "0.5", 0, 1, NULL, "horizontal flip probability"),
    KEY(data, eval_crop_fraction, CK_FLOAT, "0.875", 0.1, 1, NULL, "evaluation: center crop of size/fraction"),
    KEY(data, mean, CK_STRING, "0.485 0.456 0.406", 0, 0, NULL, "per-channel mean of [0,1] pixels (R G B)"),
    KEY(data, std, CK_STRING, "0.229 0.224 0.225", 0, 0, NULL, "per-channel std of [0,1] pixels (R G B)"),
};

static int parse_triplet(const char *text, const char *key, float out[3], int positive, D2vError *err)
{
    int used = 0;
    if (sscanf(text, "%f %f %f %n", &out[0], &out[1], &out[2], &used) != 3 || text[used] != 0)
        return d2v_fail(err, "%s = \"%s\": expected three numbers (R G B)", key, text);
    for (int c = 0; c < 3; c++)
        if (!isfinite(out[c]) || (positive && out[c] <= 0))
            return d2v_fail(err, "%s = \"%s\": expected three finite%s numbers", key, text, positive ? " positive" : "");
    return 0;
}

static int transform_from(const ImageConfig *c, ImageTransform *t, D2vError *err)
{
    t->size = (int)c->frontend.image_size;
    t->scale_min = c->data.crop_scale_min;
    t->scale_max = c->data.crop_scale_max;
    t->ratio_min = c->data.crop_ratio_min;
    t->ratio_max = c->data.crop_ratio_max;
    t->flip_prob = c->data.flip_prob;
    t->eval_crop_fraction = c->data.eval_crop_fraction;
    if (t->scale_min > t->scale_max || t->ratio_min > t->ratio_max)
        return d2v_fail(err, "data.crop_scale_min/max and data.crop_ratio_min/max must be ordered min <= max");
    return parse_triplet(c->data.mean, "data.mean", t->mean, 0, err) ||
           parse_triplet(c->data.std, "data.std", t->std, 1, err) ? -1 : 0;
}

/* ---- front-end --------------------------------------------------------------- */

typedef struct {
    PatchShape shape;
    int grid_h, grid_w, G, N, D;
    int learned_positions;
    BlockMaskSpec mask_spec;
    size_t w_patch, b_patch, cls, pos, mask_emb; /* offsets */
    int B; /* rows of the last forward (the layout may hold more) */
    const real *images; /* the last forward's batch, for the backward */
    /* activations */
    real *cols, *patches, *masked, *x_student, *x_teacher, *d_masked, *d_patches, *fixed_pos;
    uint8_t *patch_mask, *loss_mask, *pool;
} ImageFrontend;

static void *image_create(const D2vConfig *cfg, const void *mcfg, ParamStore *ps, D2vError *err)
{
    const ImageConfig *c = mcfg;
    ImageTransform t;
    if (transform_from(c, &t, err) < 0)
        return NULL;
    if (c->frontend.image_size % c->frontend.patch_size) {
        d2v_fail(err, "frontend.image_size = %lld is not a multiple of frontend.patch_size = %lld",
                 (long long)c->frontend.image_size, (long long)c->frontend.patch_size);
        return NULL;
    }
    ImageFrontend *f = d2v_calloc(1, sizeof *f, err);
    if (!f)
        return NULL;
    f->D = (int)cfg->model.dim;
    f->shape = (PatchShape){3, (int)c->frontend.image_size, (int)c->frontend.image_size, (int)c->frontend.patch_size,
                            f->D};
    f->grid_h = f->grid_w = (int)(c->frontend.image_size / c->frontend.patch_size);
    f->G = f->grid_h * f->grid_w;
    f->N = f->G + 1; /* CLS first */
    f->learned_positions = strcmp(c->frontend.positions, "learned") == 0;
    if (!f->learned_positions && f->D % 4) {
        d2v_fail(err, "frontend.positions = sincos needs model.dim divisible by 4 (it is %d)", f->D);
        free(f);
        return NULL;
    }
    int count = c->mask.count > 0 ? (int)c->mask.count : (int)(c->mask.ratio * f->G + 0.5);
    if (count >= f->G) {
        d2v_fail(err, "mask.count = %d: an image has only %d patches", count, f->G);
        free(f);
        return NULL;
    }
    f->mask_spec = (BlockMaskSpec){f->grid_h, f->grid_w, count, (int)c->mask.min_patches, (int)c->mask.max_patches,
                                   c->mask.min_aspect};
    const int64_t D = f->D, cols = patch_cols(&f->shape);
    const int64_t w_shape[2] = {D, cols}, d_shape[1] = {D}, pos_shape[2] = {f->N, D};
    /* Conv2d's default init for the patch projection (timm's PatchEmbed);
     * CLS, positions and the mask token trunc-normal 0.02 as BEiT. */
    const float bound = 1.0f / sqrtf((float)cols);
    if (params_add(ps, "frontend.patch.weight", PARAM_WEIGHT, 0, INIT_UNIFORM, bound, 2, w_shape, err) < 0 ||
        params_add(ps, "frontend.patch.bias", PARAM_BIAS, 0, INIT_UNIFORM, bound, 1, d_shape, err) < 0 ||
        params_add(ps, "frontend.cls", PARAM_EMBED, 0, INIT_TRUNC_NORMAL, 0.02f, 1, d_shape, err) < 0 ||
        params_add(ps, "frontend.mask_emb", PARAM_EMBED, 0, INIT_TRUNC_NORMAL, 0.02f, 1, d_shape, err) < 0 ||
        (f->learned_positions &&
         params_add(ps, "frontend.pos", PARAM_EMBED, 0, INIT_TRUNC_NORMAL, 0.02f, 2, pos_shape, err) < 0)) {
        free(f);
        return NULL;
    }
    return f;
}

static void image_bind(void *fe, const ParamStore *ps)
{
    ImageFrontend *f = fe;
    f->w_patch = ps->params[params_find(ps, "frontend.patch.weight")].offset;
    f->b_patch = ps->params[params_find(ps, "frontend.patch.bias")].offset;
    f->cls = ps->params[params_find(ps, "frontend.cls")].offset;
    f->mask_emb = ps->params[params_find(ps, "frontend.mask_emb")].offset;
    if (f->learned_positions)
        f->pos = ps->params[params_find(ps, "frontend.pos")].offset;
}

static int image_max_positions(const void *fe) { return ((const ImageFrontend *)fe)->N; }

static void image_layout(void *fe, Arena *a, Arena *scratch, int B, int threads)
{
    (void)threads;
    ImageFrontend *f = fe;
    const size_t BG = (size_t)B * f->G, BN = (size_t)B * f->N, D = (size_t)f->D;
    f->B = B;
    f->x_student = arena_take(a, BN * D);
    f->x_teacher = arena_take(a, BN * D);
    /* Used within one forward or backward only: the backward rebuilds the
     * patch GEMM's input (cols, a copy of the pixels) from the batch. */
    f->cols = arena_take(scratch, BG * patch_cols(&f->shape));
    f->patches = arena_take(scratch, BG * D);
    f->masked = arena_take(scratch, BG * D);
    f->d_masked = arena_take(scratch, BG * D);
    f->d_patches = arena_take(scratch, BG * D);
    f->fixed_pos = arena_take(a, (size_t)f->N * D);
    f->patch_mask = arena_take_bytes(a, BG);
    f->loss_mask = arena_take_bytes(a, BN);
    f->pool = arena_take_bytes(a, BN);
    if (f->fixed_pos && !f->learned_positions)
        sincos_positions_2d(f->fixed_pos, f->grid_h, f->grid_w, f->D);
}

static void image_destroy(void *fe) { free(fe); }

static void image_forward(void *fe, const real *w, const Batch *batch, Rng *mask_rng, ForwardMode mode,
                          FrontendOut *out)
{
    ImageFrontend *f = fe;
    const int B = batch->B, G = f->G, N = f->N, D = f->D;
    const real *pos = f->learned_positions ? w + f->pos : f->fixed_pos;
    f->B = B; /* what backward sums over */
    f->images = batch->data;
    im2col_patches(f->cols, batch->data, &f->shape, B);
    patch_embed_forward(f->patches, f->cols, w + f->w_patch, w + f->b_patch, &f->shape, B);

    /* BEiT block masking per image (§3.3 of the paper: image masking). */
    memset(f->patch_mask, 0, (size_t)B * G);
    if (mode.train)
        for (int b = 0; b < B; b++) {
            Rng row_rng; /* the row's own draws: see Batch.row0 */
            rng_substream(&row_rng, mask_rng, (uint64_t)(batch->row0 + b));
            block_mask(f->patch_mask + (size_t)b * G, &f->mask_spec, &row_rng);
        }

    /* The student sees the mask embedding at masked patches; the teacher the
     * patches themselves. Both get CLS and positions (DESIGN §3 step 3). */
    mask_embed_forward(f->masked, f->patches, f->patch_mask, w + f->mask_emb, B * G, D);
    cls_pos_forward(f->x_student, f->masked, w + f->cls, pos, B, G, D);
    cls_pos_forward(f->x_teacher, f->patches, w + f->cls, pos, B, G, D);
    for (int b = 0; b < B; b++) {
        f->loss_mask[(size_t)b * N] = 0; /* CLS is never masked */
        f->pool[(size_t)b * N] = 0;
        memcpy(f->loss_mask + (size_t)b * N + 1, f->patch_mask + (size_t)b * G, (size_t)G);
        memset(f->pool + (size_t)b * N + 1, 1, (size_t)G);
    }
    *out = (FrontendOut){B, N, f->x_student, f->x_teacher, f->loss_mask, NULL, f->pool, 0};
}

static void image_backward(void *fe, const real *w, real *g, const real *d_x_student, ForwardMode mode)
{
    (void)w;
    (void)mode;
    ImageFrontend *f = fe;
    const int B = f->B, G = f->G, D = f->D;
    cls_pos_backward(f->d_masked, g + f->cls, f->learned_positions ? g + f->pos : NULL, d_x_student, B, G, D);
    mask_embed_backward(f->d_patches, g + f->mask_emb, f->d_masked, f->patch_mask, B * G, D);
    im2col_patches(f->cols, f->images, &f->shape, B);
    patch_embed_backward(g + f->w_patch, g + f->b_patch, f->d_patches, f->cols, &f->shape, B);
}

/* ---- data ---------------------------------------------------------------------- */

static const char *const jpeg_extensions[] = {"jpg", "jpeg", NULL};

static int image_open(const void *mcfg, const char *path, int labeled, void **dataset, D2vError *err)
{
    (void)mcfg;
    return file_dataset_open(path, jpeg_extensions, labeled, dataset, err);
}

static int image_batch_alloc(const void *mcfg, int B, Batch *batch, D2vError *err)
{
    const ImageConfig *c = mcfg;
    const size_t per = 3 * (size_t)c->frontend.image_size * (size_t)c->frontend.image_size;
    memset(batch, 0, sizeof *batch);
    batch->data = d2v_malloc((size_t)B * per * sizeof(float), err);
    batch->labels = d2v_malloc((size_t)B * sizeof(int), err);
    batch->items = d2v_malloc((size_t)B * sizeof(int), err);
    return batch->data && batch->labels && batch->items ? 0 : -1;
}

static int image_load_batch(const void *mcfg, void *dataset, const int *items, int B, int train, Rng *rng,
                            int skip_bad, void (*warn)(void *ctx, const char *msg), void *warn_ctx, Batch *batch,
                            D2vError *err)
{
    const ImageConfig *c = mcfg;
    const FileList *files = dataset;
    ImageTransform t;
    if (transform_from(c, &t, err) < 0)
        return -1;
    const size_t per = 3 * (size_t)t.size * t.size;
    batch->B = B;
    batch->T = t.size;
    batch->skipped = 0;
    for (int i = 0; i < B; i++) {
        int item = items[i];
        Rng row_rng; /* the row's own augmentation draws: see Batch.row0 */
        rng_substream(&row_rng, rng, (uint64_t)(batch->row0 + i));
        /* An unreadable file is replaced by the next one (deterministically),
         * at most a dataset's worth of tries. */
        for (int tries = 0;; tries++) {
            const char *path = files->paths[item];
            int rc = train ? image_load_train(path, &t, &row_rng, batch->data + i * per, err)
                           : image_load_eval(path, &t, batch->data + i * per, err);
            if (rc == 0)
                break;
            if (!skip_bad || tries + 1 >= files->n) {
                if (tries + 1 >= files->n)
                    d2v_fail_prefix(err, "no usable file in the whole dataset; the last: ");
                return -1;
            }
            if (warn)
                warn(warn_ctx, err->msg);
            batch->skipped++;
            item = (item + 1) % files->n;
        }
        batch->items[i] = item;
        batch->labels[i] = files->labels ? files->labels[item] : -1;
    }
    return 0;
}

/* Normalised pixels are roughly N(0,1); that is what the front-end sees. */
static void image_synthetic_batch(const void *fe, const void *mcfg, int B, Rng *rng, Batch *batch)
{
    (void)fe;
    const ImageConfig *c = mcfg;
    const size_t n = (size_t)B * 3 * (size_t)c->frontend.image_size * (size_t)c->frontend.image_size;
    for (size_t i = 0; i < n; i++)
        batch->data[i] = rng_normal(rng);
    for (int b = 0; b < B; b++)
        batch->labels[b] = batch->items[b] = -1;
    batch->B = B;
    batch->T = 0;
}

/* The patch embedding is one GEMM (B*G, C*P*P) x (C*P*P, D); its backward
 * computes the weight gradient only (the pixels need none). */
static void image_flops(const void *fe, int B, double *forward, double *backward)
{
    const ImageFrontend *f = fe;
    *forward = 2.0 * B * f->G * patch_cols(&f->shape) * f->D;
    *backward = *forward;
}

static double image_batch_amount(const void *mcfg, const Batch *batch, const char **unit)
{
    (void)mcfg;
    *unit = "images";
    return batch->B;
}

/* `d2v show`: the pixels the model saw (the eval crop or the training crop,
 * un-normalised) and the patch grid over them. */
static int image_view(const void *fe, const void *mcfg, const Batch *batch, int row, InputView *view, D2vError *err)
{
    const ImageFrontend *f = fe;
    ImageTransform t;
    if (transform_from(mcfg, &t, err) < 0)
        return -1;
    const int S = f->shape.height;
    memset(view, 0, sizeof *view);
    view->kind = VIEW_IMAGE;
    view->first_position = 1; /* after CLS */
    view->n_positions = f->G;
    view->width = view->height = S;
    view->grid_h = f->grid_h;
    view->grid_w = f->grid_w;
    view->patch = f->shape.patch;
    view->rgb = d2v_malloc((size_t)S * S * 3, err);
    if (!view->rgb)
        return -1;
    const float *img = batch->data + (size_t)row * 3 * S * S;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S * S; i++) {
            const float v = (img[(size_t)c * S * S + i] * t.std[c] + t.mean[c]) * 255.0f;
            view->rgb[(size_t)i * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v + 0.5f);
        }
    return 0;
}

const Modality image_modality = {
    .name = "image",
    .keys = image_keys,
    .n_keys = (int)(sizeof image_keys / sizeof *image_keys),
    .config_size = sizeof(ImageConfig),
    .create = image_create,
    .bind = image_bind,
    .max_positions = image_max_positions,
    .layout = image_layout,
    .destroy = image_destroy,
    .open = image_open,
    .dataset_size = file_dataset_size,
    .dataset_classes = file_dataset_classes,
    .item_name = file_dataset_item_name,
    .dataset_close = file_dataset_close,
    .batch_alloc = image_batch_alloc,
    .batch_free = batch_free_arrays,
    .synthetic_batch = image_synthetic_batch,
    .flops = image_flops,
    .batch_amount = image_batch_amount,
    .load_batch = image_load_batch,
    .forward = image_forward,
    .backward = image_backward,
    .view = image_view,
};
