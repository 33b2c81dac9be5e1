#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* fileno */
#endif

#include "image_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h> /* before jpeglib.h, which uses FILE and size_t */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>

/* A JPEG header can declare up to 65500 x 65500 pixels in a few hundred
 * bytes; refusing anything above 100 megapixels (a 300 MB RGB buffer) before
 * allocating keeps one hostile or broken file from taking the loader down. */
#define IMAGE_MAX_PIXELS 100000000ull
/* Far above any real photograph; mostly a guard for a wrong path (a disk
 * image, a tarball) being read whole into memory. */
#define IMAGE_MAX_FILE_BYTES (1ll << 30)
/* Real progressive JPEGs have about 10 scans; a crafted one can have
 * thousands of tiny ones, each making libjpeg-turbo walk the whole
 * coefficient buffer (the reason djpeg has -maxscans). */
#define JPEG_MAX_SCANS 500

/* ---- libjpeg error handling -------------------------------------------- */

/* libjpeg reports fatal errors by calling error_exit, which must not return;
 * the default one prints and calls exit(). Ours jumps back into the decoding
 * function, which turns the message into a D2vError. Warnings (corrupt or
 * missing data that libjpeg papers over with gray) are counted and the first
 * one kept, and the caller treats them as errors too: a half-gray training
 * image is worse than a skipped one. Nothing is ever printed. */
typedef struct {
    struct jpeg_error_mgr mgr; /* first member: libjpeg hands back &mgr */
    jmp_buf escape;
    char first_warning[JMSG_LENGTH_MAX];
    struct jpeg_progress_mgr progress; /* only to count scans */
    int too_many_scans;
} JpegTrap;

static void trap_error_exit(j_common_ptr cinfo)
{
    JpegTrap *trap = (JpegTrap *)cinfo->err;
    longjmp(trap->escape, 1);
}

static void trap_emit_message(j_common_ptr cinfo, int level)
{
    JpegTrap *trap = (JpegTrap *)cinfo->err;
    if (level >= 0) /* trace output, not a problem */
        return;
    if (trap->mgr.num_warnings == 0)
        trap->mgr.format_message(cinfo, trap->first_warning);
    trap->mgr.num_warnings++;
}

static void trap_output_message(j_common_ptr cinfo)
{
    (void)cinfo; /* library code never prints */
}

static void trap_count_scans(j_common_ptr cinfo)
{
    JpegTrap *trap = (JpegTrap *)cinfo->err;
    if (cinfo->is_decompressor && ((j_decompress_ptr)cinfo)->input_scan_number > JPEG_MAX_SCANS) {
        trap->too_many_scans = 1;
        longjmp(trap->escape, 1);
    }
}

/* ---- decoding ----------------------------------------------------------- */

/* How to pick the DCT scale once the header says how big the image is.
 * Either fixed minimum output dimensions (image_decode_jpeg's contract), or a
 * function that returns scale_num in 1..8 itself (the transforms, which need
 * to sample their crop from the full size first). */
typedef struct {
    int min_width, min_height;
    int (*choose_scale)(void *ctx, int full_width, int full_height);
    void *ctx;
} ScalePlan;

typedef struct {
    int full_width, full_height;
    int scale_num; /* the decoded image is the full one scaled by scale_num / 8 */
} DecodeInfo;

/* Smallest scale_num whose output is at least min_width x min_height (a
 * non-positive minimum constrains nothing; both non-positive means full
 * size). jpeg_calc_output_dimensions is the authority on the rounding. */
static int scale_for_min_size(struct jpeg_decompress_struct *cinfo, int min_width, int min_height)
{
    if (min_width <= 0 && min_height <= 0)
        return 8;
    for (int num = 1; num < 8; num++) {
        cinfo->scale_num = (unsigned)num;
        cinfo->scale_denom = 8;
        jpeg_calc_output_dimensions(cinfo);
        if ((long)cinfo->output_width >= min_width && (long)cinfo->output_height >= min_height)
            return num;
    }
    return 8;
}

/* Adobe's CMYK JPEGs (Photoshop and nearly everything since) store the ink
 * values inverted, 255 = no ink, and mark themselves with an APP14 "Adobe"
 * segment; libjpeg hands the stored values through unchanged. With inverted
 * c' = 255 - C and k' = 255 - K the naive conversion R = (255 - C)(255 - K)
 * / 255 becomes R = c' k' / 255. */
static void cmyk_row_to_rgb(const uint8_t *cmyk, uint8_t *rgb, int width, int adobe_inverted)
{
    for (int x = 0; x < width; x++, cmyk += 4, rgb += 3) {
        unsigned c = cmyk[0], m = cmyk[1], y = cmyk[2], k = cmyk[3];
        if (!adobe_inverted) {
            c = 255 - c;
            m = 255 - m;
            y = 255 - y;
            k = 255 - k;
        }
        /* (a * b + 127) / 255: a*b/255 rounded to nearest. */
        rgb[0] = (uint8_t)((c * k + 127) / 255);
        rgb[1] = (uint8_t)((m * k + 127) / 255);
        rgb[2] = (uint8_t)((y * k + 127) / 255);
    }
}

#define ROWS_PER_READ 8

static int decode_jpeg(const uint8_t *data, size_t len, const char *what, const ScalePlan *plan, Image8 *out,
                       DecodeInfo *info, D2vError *err)
{
    *out = (Image8){0};
    if (len == 0)
        return d2v_fail(err, "%s: empty file", what);
    if ((unsigned long long)len > ULONG_MAX)
        return d2v_fail(err, "%s: too large for libjpeg", what);

    struct jpeg_decompress_struct cinfo;
    JpegTrap trap;
    /* Changed after setjmp and needed after longjmp: volatile so the error
     * path sees their current values, not stale register copies. */
    uint8_t *volatile pixels = NULL;
    uint8_t *volatile cmyk_rows = NULL;

    memset(&cinfo, 0, sizeof cinfo);
    cinfo.err = jpeg_std_error(&trap.mgr);
    trap.mgr.error_exit = trap_error_exit;
    trap.mgr.emit_message = trap_emit_message;
    trap.mgr.output_message = trap_output_message;
    trap.first_warning[0] = 0;
    trap.too_many_scans = 0;
    trap.progress = (struct jpeg_progress_mgr){.progress_monitor = trap_count_scans};

    if (setjmp(trap.escape)) {
        if (trap.too_many_scans) {
            jpeg_destroy_decompress(&cinfo);
            free(pixels);
            free(cmyk_rows);
            return d2v_fail(err, "%s: more than %d progressive scans (a malformed or hostile JPEG)", what,
                            JPEG_MAX_SCANS);
        }
        char message[JMSG_LENGTH_MAX];
        trap.mgr.format_message((j_common_ptr)&cinfo, message);
        int warned = trap.mgr.num_warnings > 0;
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(cmyk_rows);
        /* A warning before the fatal error is usually the real story (data
         * ran out, then the decoder found nothing usable). */
        if (warned)
            return d2v_fail(err, "%s: truncated or corrupt JPEG (%s; then: %s)", what, trap.first_warning,
                            message);
        return d2v_fail(err, "%s: not a valid JPEG (%s)", what, message);
    }

    jpeg_create_decompress(&cinfo);
    cinfo.progress = &trap.progress;
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);

    const int full_w = (int)cinfo.image_width, full_h = (int)cinfo.image_height;
    if ((unsigned long long)full_w * (unsigned long long)full_h > IMAGE_MAX_PIXELS) {
        jpeg_destroy_decompress(&cinfo);
        return d2v_fail(err, "%s: image is %dx%d (%.0f megapixels), above the %llu-megapixel limit", what, full_w,
                        full_h, (double)full_w * full_h / 1e6, IMAGE_MAX_PIXELS / 1000000);
    }

    int cmyk;
    switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
        cinfo.out_color_space = JCS_RGB;
        cmyk = 0;
        break;
    case JCS_CMYK:
    case JCS_YCCK:
        /* libjpeg turns YCCK into CMYK but not CMYK into RGB. */
        cinfo.out_color_space = JCS_CMYK;
        cmyk = 1;
        break;
    default:
        jpeg_destroy_decompress(&cinfo);
        return d2v_fail(err, "%s: unsupported JPEG color space (%d components)", what, cinfo.num_components);
    }

    int num = plan->choose_scale ? plan->choose_scale(plan->ctx, full_w, full_h)
                                 : scale_for_min_size(&cinfo, plan->min_width, plan->min_height);
    if (num < 1 || num > 8)
        num = 8;
    cinfo.scale_num = (unsigned)num;
    cinfo.scale_denom = 8;

    jpeg_start_decompress(&cinfo);
    const int width = (int)cinfo.output_width, height = (int)cinfo.output_height;
    if (cinfo.output_components != (cmyk ? 4 : 3)) {
        jpeg_destroy_decompress(&cinfo);
        return d2v_fail(err, "%s: unexpected %d output components", what, cinfo.output_components);
    }
    const size_t stride = (size_t)width * 3;
    pixels = malloc(stride * (size_t)height);
    if (cmyk)
        cmyk_rows = malloc((size_t)width * 4 * ROWS_PER_READ);
    if (!pixels || (cmyk && !cmyk_rows)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        free(cmyk_rows);
        return d2v_fail(err, "%s: out of memory for a %dx%d image", what, width, height);
    }

    while (cinfo.output_scanline < cinfo.output_height) {
        const int y = (int)cinfo.output_scanline;
        const int want = height - y < ROWS_PER_READ ? height - y : ROWS_PER_READ;
        JSAMPROW rows[ROWS_PER_READ];
        for (int i = 0; i < want; i++)
            rows[i] = cmyk ? cmyk_rows + (size_t)i * width * 4 : pixels + (size_t)(y + i) * stride;
        int got = (int)jpeg_read_scanlines(&cinfo, rows, (JDIMENSION)want);
        if (got <= 0) {
            /* Only a suspending data source returns 0; ours never does. */
            jpeg_destroy_decompress(&cinfo);
            free(pixels);
            free(cmyk_rows);
            return d2v_fail(err, "%s: JPEG decoder stalled at row %d", what, y);
        }
        if (cmyk)
            for (int i = 0; i < got; i++)
                cmyk_row_to_rgb(cmyk_rows + (size_t)i * width * 4, pixels + (size_t)(y + i) * stride, width,
                                cinfo.saw_Adobe_marker);
    }
    jpeg_finish_decompress(&cinfo);

    int warnings = (int)trap.mgr.num_warnings;
    jpeg_destroy_decompress(&cinfo);
    free(cmyk_rows);
    if (warnings > 0) {
        free(pixels);
        return d2v_fail(err, "%s: truncated or corrupt JPEG (%s)", what, trap.first_warning);
    }
    out->width = width;
    out->height = height;
    out->rgb = pixels;
    if (info)
        *info = (DecodeInfo){full_w, full_h, num};
    return 0;
}

/* Reads the whole file: JPEGs are small, and libjpeg's memory source makes
 * "premature end of file" detection exact. */
static int read_whole_file(const char *path, uint8_t **data, size_t *len, D2vError *err)
{
    *data = NULL;
    *len = 0;
    /* open + fdopen rather than fopen: O_NONBLOCK keeps a FIFO (a manifest
     * can name one) from blocking the loader thread forever in open()
     * before fstat below can refuse it. No effect on regular files. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    FILE *fp = fd < 0 ? NULL : fdopen(fd, "rb");
    if (!fp) {
        int saved = errno;
        if (fd >= 0)
            close(fd);
        return d2v_fail(err, "%s: %s", path, strerror(saved));
    }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0) {
        int saved = errno;
        fclose(fp);
        return d2v_fail(err, "%s: %s", path, strerror(saved));
    }
    if (S_ISDIR(st.st_mode)) {
        fclose(fp);
        return d2v_fail(err, "%s: is a directory, not an image", path);
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(fp);
        return d2v_fail(err, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        fclose(fp);
        return d2v_fail(err, "%s: empty file", path);
    }
    if ((long long)st.st_size > IMAGE_MAX_FILE_BYTES) {
        fclose(fp);
        return d2v_fail(err, "%s: %lld bytes, too large for an image (limit %lld)", path, (long long)st.st_size,
                        IMAGE_MAX_FILE_BYTES);
    }
    size_t size = (size_t)st.st_size;
    uint8_t *bytes = malloc(size);
    if (!bytes) {
        fclose(fp);
        return d2v_fail(err, "%s: out of memory reading %zu bytes", path, size);
    }
    size_t got = fread(bytes, 1, size, fp);
    int read_error = ferror(fp), saved = errno;
    fclose(fp);
    if (got != size) {
        free(bytes);
        if (read_error)
            return d2v_fail(err, "%s: read error: %s", path, strerror(saved));
        return d2v_fail(err, "%s: file shrank while being read (%zu of %zu bytes)", path, got, size);
    }
    *data = bytes;
    *len = size;
    return 0;
}

int image_decode_jpeg_mem(const uint8_t *data, size_t len, const char *what, int min_width, int min_height,
                          Image8 *out, D2vError *err)
{
    ScalePlan plan = {.min_width = min_width, .min_height = min_height};
    return decode_jpeg(data, len, what ? what : "(memory)", &plan, out, NULL, err);
}

int image_decode_jpeg(const char *path, int min_width, int min_height, Image8 *out, D2vError *err)
{
    *out = (Image8){0};
    uint8_t *data;
    size_t len;
    if (read_whole_file(path, &data, &len, err))
        return -1;
    int rc = image_decode_jpeg_mem(data, len, path, min_width, min_height, out, err);
    free(data);
    return rc;
}

void image_free(Image8 *img)
{
    if (!img)
        return;
    free(img->rgb);
    *img = (Image8){0};
}

/* ---- resampling ----------------------------------------------------------- */

/* The filter taps of one axis: output o reads source pixels first[o] ..
 * first[o] + count[o] - 1 with weights weights[o * max_taps + k]. */
typedef struct {
    int *first, *count;
    float *weights;
    int max_taps;
} AxisTaps;

/* Support (half-width, in source pixels) of the triangle filter: 1 when
 * enlarging (plain bilinear between the two nearest pixels), the scale
 * factor when shrinking, so every source pixel under the output pixel's
 * footprint contributes (antialiasing). */
static double filter_support(double extent, int out_n)
{
    double scale = extent / out_n;
    return scale > 1.0 ? scale : 1.0;
}

static int max_taps_for(double extent, int out_n)
{
    /* Pixels with centers strictly inside (center - s, center + s): at most
     * 2s + 1 of them. */
    return (int)ceil(2.0 * filter_support(extent, out_n)) + 1;
}

/* Pixel centers sit at i + 0.5, so output pixel o of the region [start,
 * start + extent) is centered at start + (o + 0.5) * scale; that is the
 * convention of PIL's resize with a box (and of align_corners=False). Taps
 * that would fall outside the image are dropped and the rest renormalized to
 * sum to 1, which is what clamping at the edges means for PIL. */
static void axis_taps_compute(AxisTaps *t, double start, double extent, int in_n, int out_n)
{
    const double scale = extent / out_n;
    const double support = filter_support(extent, out_n);
    const double inv_support = 1.0 / support;
    for (int o = 0; o < out_n; o++) {
        const double center = start + (o + 0.5) * scale;
        /* Source i has nonzero weight iff |i + 0.5 - center| < support. */
        int lo = (int)floor(center - support - 0.5) + 1;
        int hi = (int)ceil(center + support - 0.5); /* exclusive */
        if (lo < 0)
            lo = 0;
        if (hi > in_n)
            hi = in_n;
        if (hi - lo > t->max_taps) /* rounding at the ends; never more than one */
            hi = lo + t->max_taps;
        float *w = t->weights + (size_t)o * t->max_taps;
        double sum = 0.0;
        for (int i = lo; i < hi; i++) {
            double d = fabs(i + 0.5 - center) * inv_support;
            double v = d < 1.0 ? 1.0 - d : 0.0;
            w[i - lo] = (float)v;
            sum += v;
        }
        if (hi <= lo || sum <= 0.0) {
            /* The region lies outside the image on this axis: repeat the
             * nearest edge pixel rather than produce nothing. */
            lo = (int)floor(center);
            lo = lo < 0 ? 0 : lo >= in_n ? in_n - 1 : lo;
            hi = lo + 1;
            w[0] = 1.0f;
            sum = 1.0;
        }
        const double inv_sum = 1.0 / sum;
        for (int k = 0; k < hi - lo; k++)
            w[k] = (float)(w[k] * inv_sum);
        t->first[o] = lo;
        t->count[o] = hi - lo;
    }
}

/* The worker behind image_resample_normalize; fails only when allocating its
 * tables and row buffer fails.
 *
 * Vertical pass first, then horizontal: the vertical pass runs over whole
 * contiguous rows (a loop the compiler vectorizes, uint8 -> float included)
 * and absorbs the larger source extent, so the horizontal pass, whose taps
 * gather interleaved RGB and stay scalar, only sees out_h rows. Each output
 * row is finished (flipped, normalized, written CHW) as soon as it exists,
 * so the only buffer is one row of floats. */
static int resample_normalize(const Image8 *img, double x0, double y0, double w, double h, int out_w, int out_h,
                              int flip, const float mean[3], const float std[3], float *out, D2vError *err)
{
    if (!img || !img->rgb || img->width <= 0 || img->height <= 0 || out_w <= 0 || out_h <= 0)
        return d2v_fail(err, "resample: empty image or output");
    if (!(isfinite(x0) && isfinite(y0) && isfinite(w) && isfinite(h) && w > 0 && h > 0 && fabs(x0) < 1e9 &&
          fabs(y0) < 1e9 && w < 1e9 && h < 1e9))
        return d2v_fail(err, "resample: bad region (%g, %g, %g, %g)", x0, y0, w, h);
    const int in_w = img->width, in_h = img->height;

    /* The tables in one allocation: first/count per output of each axis,
     * then the weights. */
    AxisTaps tx = {.max_taps = max_taps_for(w, out_w)};
    AxisTaps ty = {.max_taps = max_taps_for(h, out_h)};
    size_t tables = 2 * (size_t)out_w * sizeof(int) + 2 * (size_t)out_h * sizeof(int) +
                    (size_t)out_w * tx.max_taps * sizeof(float) + (size_t)out_h * ty.max_taps * sizeof(float);
    char *block = malloc(tables);
    if (!block)
        return d2v_fail(err, "resample: out of memory for %dx%d filter tables", out_w, out_h);
    tx.first = (int *)block;
    tx.count = tx.first + out_w;
    ty.first = tx.count + out_w;
    ty.count = ty.first + out_h;
    tx.weights = (float *)(ty.count + out_h);
    ty.weights = tx.weights + (size_t)out_w * tx.max_taps;
    axis_taps_compute(&tx, x0, w, in_w, out_w);
    axis_taps_compute(&ty, y0, h, in_h, out_h);

    /* Only the source columns some horizontal tap reads are filtered
     * vertically. */
    int col_lo = in_w, col_hi = 0;
    for (int o = 0; o < out_w; o++) {
        if (tx.first[o] < col_lo)
            col_lo = tx.first[o];
        if (tx.first[o] + tx.count[o] > col_hi)
            col_hi = tx.first[o] + tx.count[o];
    }
    const size_t span = (size_t)(col_hi - col_lo) * 3, src_stride = (size_t)in_w * 3;
    float *row = malloc(span * sizeof *row);
    if (!row) {
        free(block);
        return d2v_fail(err, "resample: out of memory for a %d-pixel row", col_hi - col_lo);
    }

    /* (v / 255 - mean) / std as one multiply-add. */
    float gain[3], bias[3];
    for (int c = 0; c < 3; c++) {
        gain[c] = 1.0f / (255.0f * std[c]);
        bias[c] = -mean[c] / std[c];
    }
    const size_t plane = (size_t)out_w * out_h;

    for (int oy = 0; oy < out_h; oy++) {
        const float *wy = ty.weights + (size_t)oy * ty.max_taps;
        const uint8_t *src = img->rgb + (size_t)ty.first[oy] * src_stride + (size_t)col_lo * 3;
        for (size_t i = 0; i < span; i++)
            row[i] = wy[0] * src[i];
        for (int k = 1; k < ty.count[oy]; k++) {
            src += src_stride;
            for (size_t i = 0; i < span; i++)
                row[i] += wy[k] * src[i];
        }
        float *dst = out + (size_t)oy * out_w;
        for (int ox = 0; ox < out_w; ox++) {
            const int sx = flip ? out_w - 1 - ox : ox;
            const float *p = row + (size_t)(tx.first[sx] - col_lo) * 3;
            const float *wx = tx.weights + (size_t)sx * tx.max_taps;
            float r = 0.0f, g = 0.0f, b = 0.0f;
            for (int k = 0; k < tx.count[sx]; k++, p += 3) {
                r += wx[k] * p[0];
                g += wx[k] * p[1];
                b += wx[k] * p[2];
            }
            dst[ox] = r * gain[0] + bias[0];
            dst[plane + ox] = g * gain[1] + bias[1];
            dst[2 * plane + ox] = b * gain[2] + bias[2];
        }
    }
    free(row);
    free(block);
    return 0;
}

void image_resample_normalize(const Image8 *img, double x0, double y0, double w, double h, int out_w, int out_h,
                              int flip, const float mean[3], const float std[3], float *out)
{
    /* This entry point has no way to report failure (only allocation can
     * fail), so the output is poisoned with NaN: a loss that goes NaN is
     * noticed, a silently stale tensor is not. The loaders use the checked
     * worker directly. */
    if (resample_normalize(img, x0, y0, w, h, out_w, out_h, flip, mean, std, out, NULL) != 0 && out_w > 0 &&
        out_h > 0)
        for (size_t i = 0; i < 3 * (size_t)out_w * out_h; i++)
            out[i] = NAN;
}

/* ---- transforms ----------------------------------------------------------- */

static int check_transform(const ImageTransform *t, int for_training, D2vError *err)
{
    if (t->size <= 0 || t->size > 16384)
        return d2v_fail(err, "image transform: size %d outside [1, 16384]", t->size);
    for (int c = 0; c < 3; c++)
        if (!(t->std[c] > 0.0f) || !isfinite(t->mean[c]))
            return d2v_fail(err, "image transform: channel %d needs a finite mean and std > 0", c);
    if (for_training) {
        if (!(t->scale_min > 0.0 && t->scale_min <= t->scale_max && t->scale_max <= 1.0))
            return d2v_fail(err, "image transform: need 0 < scale_min <= scale_max <= 1, got %g, %g", t->scale_min,
                            t->scale_max);
        if (!(t->ratio_min > 0.0 && t->ratio_min <= t->ratio_max && isfinite(t->ratio_max)))
            return d2v_fail(err, "image transform: need 0 < ratio_min <= ratio_max, got %g, %g", t->ratio_min,
                            t->ratio_max);
        if (!(t->flip_prob >= 0.0 && t->flip_prob <= 1.0))
            return d2v_fail(err, "image transform: flip_prob %g outside [0, 1]", t->flip_prob);
    } else if (!(t->eval_crop_fraction > 0.0 && t->eval_crop_fraction <= 1.0)) {
        return d2v_fail(err, "image transform: eval_crop_fraction %g outside (0, 1]", t->eval_crop_fraction);
    }
    return 0;
}

static double uniform_between(Rng *rng, double lo, double hi)
{
    return lo + (hi - lo) * (double)rng_uniform(rng);
}

/* torchvision's RandomResizedCrop.get_params, draw for draw (Python's round
 * is round-half-even, which is rint's default mode). */
ImageCrop image_sample_crop(const ImageTransform *t, Rng *rng, int width, int height)
{
    ImageCrop crop = {0, 0, width, height, 0};
    const double area = (double)width * height;
    const double log_lo = log(t->ratio_min), log_hi = log(t->ratio_max);
    int found = 0;
    for (int attempt = 0; attempt < 10 && !found; attempt++) {
        const double target_area = area * uniform_between(rng, t->scale_min, t->scale_max);
        const double aspect = exp(uniform_between(rng, log_lo, log_hi));
        /* Compared as doubles before the cast: an extreme ratio must not
         * overflow int. */
        const double w = rint(sqrt(target_area * aspect));
        const double h = rint(sqrt(target_area / aspect));
        if (w > 0 && w <= width && h > 0 && h <= height) {
            crop.w = (int)w;
            crop.h = (int)h;
            crop.y = (int)rng_below(rng, (uint32_t)(height - crop.h + 1));
            crop.x = (int)rng_below(rng, (uint32_t)(width - crop.w + 1));
            found = 1;
        }
    }
    if (!found) {
        /* Center crop with the aspect ratio clamped into range. */
        const double in_ratio = (double)width / height;
        if (in_ratio < t->ratio_min) {
            crop.w = width;
            crop.h = (int)rint(width / t->ratio_min);
        } else if (in_ratio > t->ratio_max) {
            crop.h = height;
            crop.w = (int)rint(height * t->ratio_max);
        }
        crop.w = crop.w < 1 ? 1 : crop.w > width ? width : crop.w;
        crop.h = crop.h < 1 ? 1 : crop.h > height ? height : crop.h;
        crop.y = (height - crop.h) / 2;
        crop.x = (width - crop.w) / 2;
    }
    /* Drawn even when flip_prob is 0 or 1, so every image consumes the same
     * draws after its crop. */
    crop.flip = (double)rng_uniform(rng) < t->flip_prob;
    return crop;
}

/* Smallest scale_num (of n/8) at which both extents, in full-size pixels,
 * still span at least `need` decoded pixels. */
static int smallest_scale_covering(int extent_w, int extent_h, int need)
{
    for (int num = 1; num < 8; num++)
        if ((long long)extent_w * num >= 8LL * need && (long long)extent_h * num >= 8LL * need)
            return num;
    return 8;
}

typedef struct {
    const ImageTransform *t;
    Rng *rng;
    ImageCrop crop;
} TrainPlan;

static int choose_train_scale(void *ctx, int full_width, int full_height)
{
    TrainPlan *plan = ctx;
    plan->crop = image_sample_crop(plan->t, plan->rng, full_width, full_height);
    return smallest_scale_covering(plan->crop.w, plan->crop.h, plan->t->size);
}

/* The decoded image is the full one scaled by exactly num/8: each 8x8 DCT
 * block becomes num x num pixels covering the same area (the last, partial
 * block is cut at ceil(W * num / 8)). So full-size coordinates map by num/8,
 * not by decoded_width / W, which differs by up to a pixel at the far edge. */
static double decoded_per_full(const DecodeInfo *info)
{
    return info->scale_num / 8.0;
}

int image_load_train(const char *path, const ImageTransform *t, Rng *rng, float *out, D2vError *err)
{
    if (check_transform(t, 1, err))
        return -1;
    uint8_t *data;
    size_t len;
    if (read_whole_file(path, &data, &len, err))
        return -1;
    TrainPlan train = {.t = t, .rng = rng};
    ScalePlan plan = {.choose_scale = choose_train_scale, .ctx = &train};
    Image8 img;
    DecodeInfo info;
    int rc = decode_jpeg(data, len, path, &plan, &img, &info, err);
    free(data);
    if (rc)
        return -1;
    const double s = decoded_per_full(&info);
    const ImageCrop *c = &train.crop;
    rc = resample_normalize(&img, c->x * s, c->y * s, c->w * s, c->h * s, t->size, t->size, c->flip, t->mean, t->std,
                            out, err);
    image_free(&img);
    return rc ? d2v_fail_prefix(err, "%s: ", path) : 0;
}

typedef struct {
    int resize_to; /* the shorter side after resizing */
} EvalPlan;

static int choose_eval_scale(void *ctx, int full_width, int full_height)
{
    const EvalPlan *plan = ctx;
    int shorter = full_width < full_height ? full_width : full_height;
    return smallest_scale_covering(shorter, shorter, plan->resize_to);
}

int image_load_eval(const char *path, const ImageTransform *t, float *out, D2vError *err)
{
    if (check_transform(t, 0, err))
        return -1;
    uint8_t *data;
    size_t len;
    if (read_whole_file(path, &data, &len, err))
        return -1;
    EvalPlan eval = {.resize_to = (int)rint(t->size / t->eval_crop_fraction)};
    if (eval.resize_to < t->size)
        eval.resize_to = t->size;
    ScalePlan plan = {.choose_scale = choose_eval_scale, .ctx = &eval};
    Image8 img;
    DecodeInfo info;
    int rc = decode_jpeg(data, len, path, &plan, &img, &info, err);
    free(data);
    if (rc)
        return -1;

    /* torchvision's Resize(resize_to) then CenterCrop(size), worked out on
     * the full-size image so the result does not depend on the DCT scale
     * chosen: the resized image is rw x rh, the crop starts at (left, top) in
     * it, and that square is a box of the full image, which one resampling
     * call turns into the output. */
    const int W = info.full_width, H = info.full_height, R = eval.resize_to;
    int rw, rh;
    if (W <= H) {
        rw = R;
        rh = (int)((double)R * H / W);
    } else {
        rh = R;
        rw = (int)((double)R * W / H);
    }
    const int left = (int)rint((rw - t->size) / 2.0), top = (int)rint((rh - t->size) / 2.0);
    const double full_per_resized_x = (double)W / rw, full_per_resized_y = (double)H / rh;
    const double s = decoded_per_full(&info);
    rc = resample_normalize(&img, left * full_per_resized_x * s, top * full_per_resized_y * s,
                            t->size * full_per_resized_x * s, t->size * full_per_resized_y * s, t->size, t->size, 0,
                            t->mean, t->std, out, err);
    image_free(&img);
    return rc ? d2v_fail_prefix(err, "%s: ", path) : 0;
}
