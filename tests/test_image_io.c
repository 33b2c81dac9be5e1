/* test_image_io.c — JPEG decoding (RGB, grayscale, CMYK/YCCK, DCT scaling),
 * the resampler against hand-computed pixels, the train/eval transforms, the
 * rejection of broken files with distinct messages, and the dataset file
 * listing (directory scan, labels, manifests, symlink loops).
 *
 * Standalone: prints each failure, ends with "N passed, M failed" and exits
 * nonzero if any check failed. Test images are written here with libjpeg's
 * compressor into a fresh mkdtemp directory under /tmp, removed at the end. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp, lstat, symlink */
#endif

#include "files.h"
#include "image_io.h"
#include "check.h"
#include "tempdir.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>

static const float zero_mean[3] = {0, 0, 0}, unit_std[3] = {1, 1, 1};





/* Writes a JPEG with libjpeg's compressor. in_space/components describe the
 * pixels; file_space is the JPEG's own color space (JCS_UNKNOWN = libjpeg's
 * default for the input); adobe = -1 keeps libjpeg's choice of the Adobe
 * marker, 0/1 forces it. All components at full resolution (4:4:4), so flat
 * colors survive quality 100 almost exactly. */
static int write_jpeg(const char *path, int w, int h, J_COLOR_SPACE in_space, int components, const uint8_t *pixels,
                      J_COLOR_SPACE file_space, int adobe, int quality)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, fp);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = components;
    c.in_color_space = in_space;
    jpeg_set_defaults(&c);
    if (file_space != JCS_UNKNOWN)
        jpeg_set_colorspace(&c, file_space);
    if (adobe >= 0)
        c.write_Adobe_marker = adobe ? TRUE : FALSE;
    jpeg_set_quality(&c, quality, TRUE);
    for (int i = 0; i < c.num_components; i++)
        c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(pixels + (size_t)c.next_scanline * w * components);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return fclose(fp) == 0 ? 0 : -1;
}

static uint8_t *flat_image(int w, int h, int components, const uint8_t *color)
{
    uint8_t *p = malloc((size_t)w * h * components);
    for (int i = 0; i < w * h; i++)
        memcpy(p + (size_t)i * components, color, (size_t)components);
    return p;
}

/* R = 2x, G = 2y, B = 128: linear, so any normalized interpolating filter
 * reproduces it exactly away from the edges, and JPEG keeps it within a few
 * levels. */
static int write_gradient_jpeg(const char *path, int w, int h)
{
    uint8_t *p = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *q = p + ((size_t)y * w + x) * 3;
            q[0] = (uint8_t)(2 * x);
            q[1] = (uint8_t)(2 * y);
            q[2] = 128;
        }
    int rc = write_jpeg(path, w, h, JCS_RGB, 3, p, JCS_UNKNOWN, -1, 100);
    free(p);
    return rc;
}

static int max_abs_diff_flat(const Image8 *img, const uint8_t *rgb)
{
    int worst = 0;
    for (int i = 0; i < img->width * img->height; i++)
        for (int c = 0; c < 3; c++) {
            int d = abs((int)img->rgb[3 * i + c] - (int)rgb[c]);
            if (d > worst)
                worst = d;
        }
    return worst;
}

static int contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

static int near(double a, double b, double tol)
{
    return fabs(a - b) <= tol;
}

/* ---- decoding --------------------------------------------------------------- */

static void test_decode_rgb_and_gray(void)
{
    char path[4096];
    D2vError err = {{0}};
    Image8 img;

    const uint8_t color[3] = {200, 40, 90};
    uint8_t *p = flat_image(16, 16, 3, color);
    path_in_dir(path, sizeof path, "flat_rgb.jpg");
    CHECK(write_jpeg(path, 16, 16, JCS_RGB, 3, p, JCS_UNKNOWN, -1, 100) == 0, "write %s", path);
    free(p);
    CHECK(image_decode_jpeg(path, 0, 0, &img, &err) == 0, "decode RGB: %s", err.msg);
    CHECK(img.width == 16 && img.height == 16, "RGB dims %dx%d", img.width, img.height);
    if (img.rgb)
        CHECK(max_abs_diff_flat(&img, color) <= 2, "RGB flat color off by %d", max_abs_diff_flat(&img, color));
    image_free(&img);
    CHECK(img.rgb == NULL && img.width == 0, "image_free clears the struct");

    /* Four quadrants of different colors: the layout (row order, channel
     * order) survives, not just a mean color. */
    const uint8_t quad[4][3] = {{255, 0, 0}, {0, 255, 0}, {0, 0, 255}, {250, 250, 250}};
    p = malloc(32 * 32 * 3);
    for (int y = 0; y < 32; y++)
        for (int x = 0; x < 32; x++)
            memcpy(p + (y * 32 + x) * 3, quad[(y >= 16) * 2 + (x >= 16)], 3);
    path_in_dir(path, sizeof path, "quad.jpg");
    CHECK(write_jpeg(path, 32, 32, JCS_RGB, 3, p, JCS_UNKNOWN, -1, 100) == 0, "write %s", path);
    free(p);
    CHECK(image_decode_jpeg(path, 0, 0, &img, &err) == 0, "decode quadrants: %s", err.msg);
    if (img.rgb) {
        int worst = 0;
        for (int q = 0; q < 4; q++) {
            int x = (q & 1) ? 24 : 8, y = (q & 2) ? 24 : 8;
            for (int c = 0; c < 3; c++) {
                int d = abs((int)img.rgb[(y * 32 + x) * 3 + c] - (int)quad[q][c]);
                worst = d > worst ? d : worst;
            }
        }
        CHECK(worst <= 4, "quadrant centers off by %d", worst);
    }
    image_free(&img);

    const uint8_t gray = 77;
    p = flat_image(24, 8, 1, &gray);
    path_in_dir(path, sizeof path, "gray.jpg");
    CHECK(write_jpeg(path, 24, 8, JCS_GRAYSCALE, 1, p, JCS_UNKNOWN, -1, 100) == 0, "write %s", path);
    free(p);
    CHECK(image_decode_jpeg(path, 0, 0, &img, &err) == 0, "decode gray: %s", err.msg);
    CHECK(img.width == 24 && img.height == 8, "gray dims %dx%d", img.width, img.height);
    const uint8_t gray_rgb[3] = {77, 77, 77};
    if (img.rgb)
        CHECK(max_abs_diff_flat(&img, gray_rgb) <= 1, "gray -> RGB off by %d", max_abs_diff_flat(&img, gray_rgb));
    image_free(&img);

    /* The in-memory entry point, with and without a name. */
    size_t len;
    uint8_t *bytes = read_whole(path, &len);
    CHECK(bytes != NULL, "read back %s", path);
    if (bytes) {
        CHECK(image_decode_jpeg_mem(bytes, len, "gray-in-memory", 0, 0, &img, &err) == 0, "decode from memory: %s",
              err.msg);
        CHECK(img.width == 24, "memory decode width %d", img.width);
        image_free(&img);
        CHECK(image_decode_jpeg_mem(bytes, len / 3, NULL, 0, 0, &img, &err) != 0 && img.rgb == NULL,
              "a third of a JPEG from memory is rejected");
        free(bytes);
    }

    /* Progressive JPEG, full size and DCT-scaled. */
    {
        char ppath[4096];
        const uint8_t pcolor[3] = {120, 200, 10};
        p = flat_image(40, 24, 3, pcolor);
        path_in_dir(ppath, sizeof ppath, "progressive.jpg");
        FILE *fp = fopen(ppath, "wb");
        struct jpeg_compress_struct c;
        struct jpeg_error_mgr jerr;
        c.err = jpeg_std_error(&jerr);
        jpeg_create_compress(&c);
        jpeg_stdio_dest(&c, fp);
        c.image_width = 40, c.image_height = 24, c.input_components = 3, c.in_color_space = JCS_RGB;
        jpeg_set_defaults(&c);
        jpeg_set_quality(&c, 100, TRUE);
        jpeg_simple_progression(&c);
        jpeg_start_compress(&c, TRUE);
        while (c.next_scanline < c.image_height) {
            JSAMPROW r = p + (size_t)c.next_scanline * 40 * 3;
            jpeg_write_scanlines(&c, &r, 1);
        }
        jpeg_finish_compress(&c);
        jpeg_destroy_compress(&c);
        fclose(fp);
        free(p);
        CHECK(image_decode_jpeg(ppath, 0, 0, &img, &err) == 0 && img.width == 40 && img.height == 24,
              "progressive decode: %s", err.msg);
        if (img.rgb)
            CHECK(max_abs_diff_flat(&img, pcolor) <= 3, "progressive color off by %d",
                  max_abs_diff_flat(&img, pcolor));
        image_free(&img);
        CHECK(image_decode_jpeg(ppath, 10, 0, &img, &err) == 0 && img.width == 10 && img.height == 6,
              "progressive at 2/8: %dx%d %s", img.width, img.height, err.msg);
        image_free(&img);
    }
}

static void test_decode_cmyk(void)
{
    char path[4096];
    D2vError err = {{0}};
    Image8 img;
    /* Ink C=64 M=0 Y=128 K=51 -> R = 191*204/255, G = 255*204/255, B = 127*204/255. */
    const uint8_t ink[4] = {64, 0, 128, 51};
    const uint8_t want[3] = {153, 204, 102};
    const uint8_t inverted[4] = {255 - 64, 255 - 0, 255 - 128, 255 - 51};

    /* Adobe marker: the file stores inverted ink, as Photoshop does. Once as
     * plain CMYK, once transformed to YCCK (libjpeg's default for CMYK). */
    const J_COLOR_SPACE spaces[2] = {JCS_CMYK, JCS_YCCK};
    const char *names[2] = {"cmyk_adobe.jpg", "ycck_adobe.jpg"};
    for (int s = 0; s < 2; s++) {
        uint8_t *p = flat_image(16, 16, 4, inverted);
        path_in_dir(path, sizeof path, names[s]);
        CHECK(write_jpeg(path, 16, 16, JCS_CMYK, 4, p, spaces[s], 1, 100) == 0, "write %s", path);
        free(p);
        CHECK(image_decode_jpeg(path, 0, 0, &img, &err) == 0, "decode %s: %s", names[s], err.msg);
        CHECK(img.width == 16 && img.height == 16, "%s dims", names[s]);
        if (img.rgb)
            CHECK(max_abs_diff_flat(&img, want) <= 3, "%s -> RGB off by %d (got %d %d %d)", names[s],
                  max_abs_diff_flat(&img, want), img.rgb[0], img.rgb[1], img.rgb[2]);
        image_free(&img);
    }

    /* No Adobe marker: the values are ink amounts as they are. */
    uint8_t *p = flat_image(16, 16, 4, ink);
    path_in_dir(path, sizeof path, "cmyk_plain.jpg");
    CHECK(write_jpeg(path, 16, 16, JCS_CMYK, 4, p, JCS_CMYK, 0, 100) == 0, "write %s", path);
    free(p);
    CHECK(image_decode_jpeg(path, 0, 0, &img, &err) == 0, "decode plain CMYK: %s", err.msg);
    if (img.rgb)
        CHECK(max_abs_diff_flat(&img, want) <= 3, "plain CMYK -> RGB off by %d (got %d %d %d)",
              max_abs_diff_flat(&img, want), img.rgb[0], img.rgb[1], img.rgb[2]);
    image_free(&img);

    /* Pure red ink-wise: no cyan, full magenta and yellow, no black. */
    const uint8_t red_inverted[4] = {255, 0, 0, 255}, red[3] = {255, 0, 0};
    p = flat_image(8, 8, 4, red_inverted);
    path_in_dir(path, sizeof path, "cmyk_red.jpg");
    CHECK(write_jpeg(path, 8, 8, JCS_CMYK, 4, p, JCS_CMYK, 1, 100) == 0, "write %s", path);
    free(p);
    CHECK(image_decode_jpeg(path, 0, 0, &img, &err) == 0, "decode CMYK red: %s", err.msg);
    if (img.rgb)
        CHECK(max_abs_diff_flat(&img, red) <= 3, "CMYK red off by %d", max_abs_diff_flat(&img, red));
    image_free(&img);
}

static void test_dct_scaling(void)
{
    char path[4096];
    D2vError err = {{0}};
    const uint8_t color[3] = {30, 160, 220};
    uint8_t *p = flat_image(64, 48, 3, color);
    path_in_dir(path, sizeof path, "scale.jpg");
    CHECK(write_jpeg(path, 64, 48, JCS_RGB, 3, p, JCS_UNKNOWN, -1, 95) == 0, "write %s", path);
    free(p);

    /* min size -> expected output: the smallest n/8 with ceil(64n/8) x
     * ceil(48n/8) at least that large, or full size. */
    static const struct { int min_w, min_h, w, h; } cases[] = {
        {0, 0, 64, 48},   {1, 1, 8, 6},     {8, 6, 8, 6},    {9, 0, 16, 12},  {16, 0, 16, 12},
        {17, 0, 24, 18},  {0, 13, 24, 18},  {33, 25, 40, 30}, {57, 0, 64, 48}, {64, 48, 64, 48},
        {100, 100, 64, 48}, {0, 47, 64, 48},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Image8 img;
        int rc = image_decode_jpeg(path, cases[i].min_w, cases[i].min_h, &img, &err);
        CHECK(rc == 0, "decode with min %dx%d: %s", cases[i].min_w, cases[i].min_h, err.msg);
        CHECK(img.width == cases[i].w && img.height == cases[i].h, "min %dx%d gives %dx%d, expected %dx%d",
              cases[i].min_w, cases[i].min_h, img.width, img.height, cases[i].w, cases[i].h);
        if (rc == 0)
            CHECK(max_abs_diff_flat(&img, color) <= 3, "scaled decode keeps the color (off by %d)",
                  max_abs_diff_flat(&img, color));
        image_free(&img);
    }
}

/* ---- resampling --------------------------------------------------------- */

/* out is CHW; value of channel c at (x, y). */
static float at(const float *out, int w, int h, int c, int x, int y)
{
    return out[(size_t)c * w * h + (size_t)y * w + x];
}

static void test_resample_identity_and_normalize(void)
{
    uint8_t px[2 * 3 * 3];
    for (int i = 0; i < 18; i++)
        px[i] = (uint8_t)(i * 14 + 3);
    Image8 img = {3, 2, px};
    float out[18];
    image_resample_normalize(&img, 0, 0, 3, 2, 3, 2, 0, zero_mean, unit_std, out);
    int ok = 1;
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++)
            for (int c = 0; c < 3; c++)
                ok &= near(at(out, 3, 2, c, x, y), px[(y * 3 + x) * 3 + c] / 255.0, 1e-6);
    CHECK(ok, "same-size resample is the identity, CHW, /255");

    const float mean[3] = {0.5f, 0.4f, 0.3f}, std[3] = {0.2f, 0.25f, 0.5f};
    image_resample_normalize(&img, 0, 0, 3, 2, 3, 2, 0, mean, std, out);
    ok = 1;
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++)
            for (int c = 0; c < 3; c++)
                ok &= near(at(out, 3, 2, c, x, y), (px[(y * 3 + x) * 3 + c] / 255.0 - mean[c]) / std[c], 1e-5);
    CHECK(ok, "normalization is (v/255 - mean[c]) / std[c]");

    image_resample_normalize(&img, 0, 0, 3, 2, 3, 2, 1, zero_mean, unit_std, out);
    ok = 1;
    for (int y = 0; y < 2; y++)
        for (int x = 0; x < 3; x++)
            for (int c = 0; c < 3; c++)
                ok &= near(at(out, 3, 2, c, x, y), px[(y * 3 + (2 - x)) * 3 + c] / 255.0, 1e-6);
    CHECK(ok, "flip mirrors the columns");
}

static void test_resample_downscale(void)
{
    /* 4x4 -> 2x2 over the whole image: scale 2, so the triangle spans 2
     * source pixels each side. Output 0 is centered at 1.0; sources 0, 1, 2
     * (centers 0.5, 1.5, 2.5) get 1 - |d|/2 = 3/4, 3/4, 1/4 (source -1 is
     * outside the image and dropped), i.e. 3/7, 3/7, 1/7 after normalizing;
     * output 1 mirrors that: 1/7, 3/7, 3/7 on sources 1, 2, 3. Note this is
     * PIL's BILINEAR, not a 2x2 box average. */
    static const double wts[2][4] = {{3 / 7.0, 3 / 7.0, 1 / 7.0, 0}, {0, 1 / 7.0, 3 / 7.0, 3 / 7.0}};
    uint8_t px[4 * 4 * 3];
    for (int i = 0; i < 48; i++)
        px[i] = (uint8_t)((i * 37 + 11) % 256);
    Image8 img = {4, 4, px};
    float out[12];
    image_resample_normalize(&img, 0, 0, 4, 4, 2, 2, 0, zero_mean, unit_std, out);
    int ok = 1;
    for (int oy = 0; oy < 2; oy++)
        for (int ox = 0; ox < 2; ox++)
            for (int c = 0; c < 3; c++) {
                double want = 0;
                for (int y = 0; y < 4; y++)
                    for (int x = 0; x < 4; x++)
                        want += wts[oy][y] * wts[ox][x] * px[(y * 4 + x) * 3 + c];
                ok &= near(at(out, 2, 2, c, ox, oy), want / 255.0, 1e-5);
            }
    CHECK(ok, "4x4 -> 2x2 matches the hand-computed triangle weights");

    /* A constant image stays constant whatever the scale and box. */
    uint8_t flat[7 * 5 * 3];
    for (int i = 0; i < 7 * 5; i++)
        flat[3 * i] = 10, flat[3 * i + 1] = 100, flat[3 * i + 2] = 250;
    Image8 fimg = {7, 5, flat};
    float fout[3 * 3 * 2];
    image_resample_normalize(&fimg, 0.3, 0.7, 6.1, 3.9, 3, 2, 1, zero_mean, unit_std, fout);
    ok = 1;
    for (int i = 0; i < 6; i++)
        ok &= near(fout[i], 10 / 255.0, 1e-6) && near(fout[6 + i], 100 / 255.0, 1e-6) &&
              near(fout[12 + i], 250 / 255.0, 1e-6);
    CHECK(ok, "weights sum to 1: a flat image stays flat");
}

static void test_resample_upscale_and_boxes(void)
{
    /* 2x2 -> 4x4: scale 1/2, plain bilinear. Output centers 0.25, 0.75,
     * 1.25, 1.75 against source centers 0.5, 1.5, clamped at the edges:
     * weights (1, 0), (3/4, 1/4), (1/4, 3/4), (0, 1). */
    static const double wts[4][2] = {{1, 0}, {0.75, 0.25}, {0.25, 0.75}, {0, 1}};
    const uint8_t px[2 * 2 * 3] = {0, 40, 200, 100, 80, 0, 200, 120, 100, 252, 160, 50};
    Image8 img = {2, 2, (uint8_t *)px};
    float out[3 * 16];
    for (int flip = 0; flip < 2; flip++) {
        image_resample_normalize(&img, 0, 0, 2, 2, 4, 4, flip, zero_mean, unit_std, out);
        int ok = 1;
        for (int oy = 0; oy < 4; oy++)
            for (int ox = 0; ox < 4; ox++)
                for (int c = 0; c < 3; c++) {
                    int sx = flip ? 3 - ox : ox;
                    double want = 0;
                    for (int y = 0; y < 2; y++)
                        for (int x = 0; x < 2; x++)
                            want += wts[oy][y] * wts[sx][x] * px[(y * 2 + x) * 3 + c];
                    ok &= near(at(out, 4, 4, c, ox, oy), want / 255.0, 1e-5);
                }
        CHECK(ok, "2x2 -> 4x4 bilinear matches hand-computed weights (flip=%d)", flip);
    }

    /* Fractional boxes on one row [0, 100, 200, 250]: box [1, 3) -> 2 pixels
     * is sources 1 and 2 exactly; box [0.5, 2.5) puts the output centers at
     * 1.0 and 2.0, halfway between sources. */
    uint8_t row[4 * 3];
    const int vals[4] = {0, 100, 200, 250};
    for (int i = 0; i < 4; i++)
        row[3 * i] = row[3 * i + 1] = row[3 * i + 2] = (uint8_t)vals[i];
    Image8 rimg = {4, 1, row};
    float rout[6];
    image_resample_normalize(&rimg, 1, 0, 2, 1, 2, 1, 0, zero_mean, unit_std, rout);
    CHECK(near(rout[0] * 255, 100, 1e-3) && near(rout[1] * 255, 200, 1e-3), "box [1,3): %g %g", rout[0] * 255,
          rout[1] * 255);
    image_resample_normalize(&rimg, 0.5, 0, 2, 1, 2, 1, 0, zero_mean, unit_std, rout);
    CHECK(near(rout[0] * 255, 50, 1e-3) && near(rout[1] * 255, 150, 1e-3), "box [0.5,2.5): %g %g",
          rout[0] * 255, rout[1] * 255);
    /* A box of the right half shrunk to one pixel: center 3.0, support 2,
     * sources 1, 2, 3 with weights 1/4, 3/4, 3/4 (source 4 is outside). */
    image_resample_normalize(&rimg, 2, 0, 2, 1, 1, 1, 0, zero_mean, unit_std, rout);
    CHECK(near(rout[0] * 255, (0.25 * 100 + 0.75 * 200 + 0.75 * 250) / 1.75, 1e-3), "box [2,4) -> 1: %g",
          rout[0] * 255);
}

/* ---- transforms ---------------------------------------------------------- */

static ImageTransform default_transform(int size)
{
    ImageTransform t = {
        .size = size,
        .scale_min = 0.08, .scale_max = 1.0,
        .ratio_min = 3.0 / 4.0, .ratio_max = 4.0 / 3.0,
        .flip_prob = 0.5,
        .eval_crop_fraction = 0.875,
        .mean = {0, 0, 0}, .std = {1, 1, 1},
    };
    return t;
}

/* Checks an eval output against the gradient R = 2x, G = 2y: output pixel
 * (ox, oy) must show the source position the Resize + CenterCrop recipe maps
 * it to, computed here from torchvision's rules on the full-size image. */
static void check_eval_geometry(const char *path, int W, int H, int size, double fraction)
{
    ImageTransform t = default_transform(size);
    t.eval_crop_fraction = fraction;
    float *out = malloc(sizeof(float) * 3 * size * size);
    D2vError err = {{0}};
    int rc = image_load_eval(path, &t, out, &err);
    CHECK(rc == 0, "eval %d/%g: %s", size, fraction, err.msg);
    if (rc == 0) {
        int R = (int)lround(size / fraction);
        int rw = W <= H ? R : (int)((double)R * W / H), rh = W <= H ? (int)((double)R * H / W) : R;
        int left = (int)lround((rw - size) / 2.0), top = (int)lround((rh - size) / 2.0);
        double worst = 0;
        for (int oy = 0; oy < size; oy++)
            for (int ox = 0; ox < size; ox++) {
                double u = (left + ox + 0.5) * W / rw, v = (top + oy + 0.5) * H / rh;
                double dr = fabs(at(out, size, size, 0, ox, oy) * 255 - 2 * (u - 0.5));
                double dg = fabs(at(out, size, size, 1, ox, oy) * 255 - 2 * (v - 0.5));
                double db = fabs(at(out, size, size, 2, ox, oy) * 255 - 128);
                worst = fmax(worst, fmax(dr, fmax(dg, db)));
            }
        CHECK(worst <= 5.0, "eval %d/%g: output differs from the expected center crop by %.2f levels", size,
              fraction, worst);
    }
    free(out);
}

static void test_eval_transform(void)
{
    char path[4096];
    path_in_dir(path, sizeof path, "gradient.jpg");
    CHECK(write_gradient_jpeg(path, 128, 96) == 0, "write %s", path);
    check_eval_geometry(path, 128, 96, 16, 0.5);  /* resize to 32: decoded at 3/8 */
    check_eval_geometry(path, 128, 96, 40, 0.5);  /* resize to 80: decoded at 7/8 */
    check_eval_geometry(path, 128, 96, 90, 1.0);  /* resize to 90: full size */
    check_eval_geometry(path, 128, 96, 112, 1.0); /* enlarge to 112 */

    path_in_dir(path, sizeof path, "gradient_tall.jpg");
    CHECK(write_gradient_jpeg(path, 64, 120) == 0, "write %s", path);
    check_eval_geometry(path, 64, 120, 24, 0.75);

    /* A flat image gives the normalized color everywhere, at the right size. */
    const uint8_t color[3] = {51, 102, 204};
    uint8_t *p = flat_image(50, 70, 3, color);
    path_in_dir(path, sizeof path, "flat_eval.jpg");
    CHECK(write_jpeg(path, 50, 70, JCS_RGB, 3, p, JCS_UNKNOWN, -1, 100) == 0, "write %s", path);
    free(p);
    ImageTransform t = default_transform(16);
    t.mean[0] = 0.485f, t.mean[1] = 0.456f, t.mean[2] = 0.406f;
    t.std[0] = 0.229f, t.std[1] = 0.224f, t.std[2] = 0.225f;
    float out[3 * 16 * 16];
    D2vError err = {{0}};
    CHECK(image_load_eval(path, &t, out, &err) == 0, "eval flat: %s", err.msg);
    int ok = 1;
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < 256; i++)
            ok &= near(out[c * 256 + i], (color[c] / 255.0 - t.mean[c]) / t.std[c], 3.0 / 255 / t.std[c]);
    CHECK(ok, "eval of a flat image is the normalized color");

    ImageTransform bad = default_transform(16);
    bad.eval_crop_fraction = 0;
    CHECK(image_load_eval(path, &bad, out, &err) != 0 && contains(err.msg, "eval_crop_fraction"),
          "eval_crop_fraction 0 rejected: %s", err.msg);
}

static void test_crop_sampling(void)
{
    ImageTransform t = default_transform(224);
    Rng rng;
    rng_init(&rng, 1234, 7);
    int inside = 1, flips = 0;
    double min_frac = 1, max_frac = 0;
    for (int trial = 0; trial < 4000; trial++) {
        int W = 1 + (int)rng_below(&rng, 1500), H = 1 + (int)rng_below(&rng, 1500);
        if (trial % 4 == 1) /* extreme shapes push toward the fallback */
            H = 1 + (int)rng_below(&rng, 8);
        ImageCrop c = image_sample_crop(&t, &rng, W, H);
        inside &= c.x >= 0 && c.y >= 0 && c.w >= 1 && c.h >= 1 && c.x + c.w <= W && c.y + c.h <= H;
        flips += c.flip;
        if (W >= 200 && H >= 200) {
            double frac = (double)c.w * c.h / ((double)W * H);
            min_frac = fmin(min_frac, frac);
            max_frac = fmax(max_frac, frac);
        }
    }
    CHECK(inside, "every sampled crop lies inside its image");
    CHECK(flips > 1800 && flips < 2200, "flip_prob 0.5 flips about half: %d of 4000", flips);
    CHECK(min_frac > 0.07 && max_frac <= 1.0, "crop area fraction in [0.08, 1] (rounding aside): %g .. %g", min_frac,
          max_frac);

    /* No try can succeed (w >= sqrt(0.9 * 3) * 100 > 100): center crop with
     * the ratio clamped to 3, h = round(100 / 3) = 33. */
    ImageTransform wide = default_transform(32);
    wide.scale_min = 0.9, wide.ratio_min = 3, wide.ratio_max = 4;
    ImageCrop c = image_sample_crop(&wide, &rng, 100, 100);
    CHECK(c.x == 0 && c.y == 33 && c.w == 100 && c.h == 33, "fallback crop (%d,%d %dx%d), expected (0,33 100x33)",
          c.x, c.y, c.w, c.h);
    wide.ratio_min = 0.2, wide.ratio_max = 0.25; /* and tall: w = round(100 * 0.25) = 25 */
    c = image_sample_crop(&wide, &rng, 100, 100);
    CHECK(c.x == 37 && c.y == 0 && c.w == 25 && c.h == 100, "tall fallback crop (%d,%d %dx%d)", c.x, c.y, c.w, c.h);

    /* The same rng state gives the same crop. */
    Rng a, b;
    rng_init(&a, 99, 3);
    rng_init(&b, 99, 3);
    int same = 1;
    for (int i = 0; i < 100; i++) {
        ImageCrop ca = image_sample_crop(&t, &a, 640, 480), cb = image_sample_crop(&t, &b, 640, 480);
        same &= memcmp(&ca, &cb, sizeof ca) == 0;
    }
    CHECK(same, "crop sampling depends only on the rng state");
}

static void test_train_transform(void)
{
    char path[4096];
    path_in_dir(path, sizeof path, "gradient_train.jpg");
    const int W = 128, H = 96; /* 2x must stay below 256 */
    CHECK(write_gradient_jpeg(path, W, H) == 0, "write %s", path);

    const int size = 32;
    ImageTransform t = default_transform(size);
    const size_t n = 3 * (size_t)size * size;
    float *a = malloc(n * sizeof *a), *b = malloc(n * sizeof *b), *c = malloc(n * sizeof *c);
    D2vError err = {{0}};
    Rng ra, rb, rc;
    rng_init(&ra, 42, 0);
    rng_init(&rb, 42, 0);
    rng_init(&rc, 43, 0);
    CHECK(image_load_train(path, &t, &ra, a, &err) == 0, "train seed 42: %s", err.msg);
    CHECK(image_load_train(path, &t, &rb, b, &err) == 0, "train seed 42 again: %s", err.msg);
    CHECK(image_load_train(path, &t, &rc, c, &err) == 0, "train seed 43: %s", err.msg);
    CHECK(memcmp(a, b, n * sizeof *a) == 0, "same seed, identical floats");
    CHECK(memcmp(a, c, n * sizeof *a) != 0, "different seed, different view");
    CHECK(ra.position == rb.position && ra.used == rb.used, "same number of draws consumed");

    /* Geometry: replay the crop with the same rng state and check the output
     * shows the gradient at the crop's positions (after the flip). Only
     * pixels away from the image border, where the filter window is whole,
     * are compared. */
    double worst = 0;
    int compared = 0;
    for (int seed = 0; seed < 30; seed++) {
        Rng r1, r2;
        rng_init(&r1, (uint64_t)seed, 5);
        rng_init(&r2, (uint64_t)seed, 5);
        if (image_load_train(path, &t, &r1, a, &err) != 0) {
            CHECK(0, "train seed %d: %s", seed, err.msg);
            continue;
        }
        ImageCrop crop = image_sample_crop(&t, &r2, W, H);
        double sx = (double)crop.w / size, sy = (double)crop.h / size;
        double margin_x = fmax(sx, 1.0) + 8, margin_y = fmax(sy, 1.0) + 8;
        for (int oy = 0; oy < size; oy++)
            for (int ox = 0; ox < size; ox++) {
                int src_x = crop.flip ? size - 1 - ox : ox;
                double u = crop.x + (src_x + 0.5) * sx, v = crop.y + (oy + 0.5) * sy;
                if (u < margin_x || u > W - margin_x || v < margin_y || v > H - margin_y)
                    continue;
                worst = fmax(worst, fabs(at(a, size, size, 0, ox, oy) * 255 - 2 * (u - 0.5)));
                worst = fmax(worst, fabs(at(a, size, size, 1, ox, oy) * 255 - 2 * (v - 0.5)));
                compared++;
            }
    }
    CHECK(compared > 1000, "enough interior pixels compared (%d)", compared);
    CHECK(worst <= 4.0, "train output follows the sampled crop and flip (worst %.2f levels)", worst);

    /* flip_prob 1 and 0 from the same state: mirror images of each other. */
    ImageTransform always = t, never = t;
    always.flip_prob = 1.0;
    never.flip_prob = 0.0;
    rng_init(&ra, 7, 0);
    rng_init(&rb, 7, 0);
    CHECK(image_load_train(path, &always, &ra, a, &err) == 0, "train flip 1: %s", err.msg);
    CHECK(image_load_train(path, &never, &rb, b, &err) == 0, "train flip 0: %s", err.msg);
    int mirrored = 1;
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
                mirrored &= at(a, size, size, ch, x, y) == at(b, size, size, ch, size - 1 - x, y);
    CHECK(mirrored, "flip_prob 1 is the mirror of flip_prob 0 for the same draws");

    /* A flat image: every crop is the normalized color. */
    const uint8_t color[3] = {10, 128, 240};
    uint8_t *p = flat_image(90, 60, 3, color);
    path_in_dir(path, sizeof path, "flat_train.jpg");
    CHECK(write_jpeg(path, 90, 60, JCS_RGB, 3, p, JCS_UNKNOWN, -1, 100) == 0, "write %s", path);
    free(p);
    int ok = 1;
    for (int seed = 0; seed < 10; seed++) {
        rng_init(&ra, (uint64_t)seed, 1);
        ok &= image_load_train(path, &t, &ra, a, &err) == 0;
        for (int ch = 0; ch < 3; ch++)
            for (int i = 0; i < size * size; i++)
                ok &= near(a[ch * size * size + i] * 255, color[ch], 3.0);
    }
    CHECK(ok, "train views of a flat image are flat: %s", err.msg);

    /* A crop smaller than the output (tiny image) is enlarged. */
    const uint8_t tiny_color[3] = {90, 90, 90};
    p = flat_image(5, 7, 3, tiny_color);
    path_in_dir(path, sizeof path, "tiny.jpg");
    CHECK(write_jpeg(path, 5, 7, JCS_RGB, 3, p, JCS_UNKNOWN, -1, 100) == 0, "write %s", path);
    free(p);
    rng_init(&ra, 1, 1);
    CHECK(image_load_train(path, &t, &ra, a, &err) == 0 && near(a[0] * 255, 90, 3), "tiny image upscaled: %s",
          err.msg);

    ImageTransform bad = t;
    bad.scale_min = 0;
    CHECK(image_load_train(path, &bad, &ra, a, &err) != 0 && contains(err.msg, "scale_min"),
          "scale_min 0 rejected: %s", err.msg);
    free(a);
    free(b);
    free(c);
}

/* ---- broken files ---------------------------------------------------------- */

static void expect_decode_error(const char *path, const char *needle, const char *what)
{
    D2vError err = {{0}};
    Image8 img = {1, 1, NULL};
    int rc = image_decode_jpeg(path, 0, 0, &img, &err);
    CHECK(rc != 0, "%s: decoding should fail", what);
    CHECK(img.rgb == NULL && img.width == 0, "%s: no image left behind", what);
    CHECK(contains(err.msg, path), "%s: message names the file: %s", what, err.msg);
    CHECK(contains(err.msg, needle), "%s: message says '%s': %s", what, needle, err.msg);

    /* The transforms report the same failure. */
    ImageTransform t = default_transform(8);
    float out[3 * 8 * 8];
    Rng rng;
    rng_init(&rng, 1, 1);
    err.msg[0] = 0;
    CHECK(image_load_train(path, &t, &rng, out, &err) != 0 && contains(err.msg, needle) && contains(err.msg, path),
          "%s: train load fails the same way: %s", what, err.msg);
    err.msg[0] = 0;
    CHECK(image_load_eval(path, &t, out, &err) != 0 && contains(err.msg, needle) && contains(err.msg, path),
          "%s: eval load fails the same way: %s", what, err.msg);
}

static void test_broken_files(void)
{
    char path[4096], good[4096];

    path_in_dir(path, sizeof path, "empty.jpg");
    CHECK(write_file(path, "", 0) == 0, "write %s", path);
    expect_decode_error(path, "empty file", "zero-byte file");

    /* A valid, busy image cut in half: libjpeg pads it with gray and warns
     * "Premature end of JPEG file". */
    uint8_t *noise = malloc(64 * 64 * 3);
    uint32_t state = 12345;
    for (int i = 0; i < 64 * 64 * 3; i++) {
        state = state * 1664525u + 1013904223u;
        noise[i] = (uint8_t)(state >> 24);
    }
    path_in_dir(good, sizeof good, "noise.jpg");
    CHECK(write_jpeg(good, 64, 64, JCS_RGB, 3, noise, JCS_UNKNOWN, -1, 90) == 0, "write %s", good);
    free(noise);
    size_t len;
    uint8_t *bytes = read_whole(good, &len);
    CHECK(bytes != NULL && len > 1000, "read back %s", good);
    if (bytes) {
        path_in_dir(path, sizeof path, "truncated.jpg");
        CHECK(write_file(path, bytes, len / 2) == 0, "write %s", path);
        expect_decode_error(path, "truncated or corrupt JPEG", "truncated JPEG");

        /* Garbage in the middle of the entropy-coded data. */
        uint8_t *corrupt = malloc(len);
        memcpy(corrupt, bytes, len);
        for (size_t i = len / 2; i < len / 2 + 64; i++)
            corrupt[i] = 0xFF;
        path_in_dir(path, sizeof path, "corrupt.jpg");
        CHECK(write_file(path, corrupt, len) == 0, "write %s", path);
        D2vError err = {{0}};
        Image8 img;
        CHECK(image_decode_jpeg(path, 0, 0, &img, &err) != 0 && contains(err.msg, path),
              "corrupted scan data rejected: %s", err.msg);
        free(corrupt);

        /* A header that claims 20000x20000 (400 megapixels): rejected from
         * the header alone. SOF0 is FF C0, then length(2) precision(1)
         * height(2) width(2). */
        for (size_t i = 0; i + 9 < len; i++)
            if (bytes[i] == 0xFF && bytes[i + 1] == 0xC0) {
                bytes[i + 5] = 20000 >> 8, bytes[i + 6] = 20000 & 0xFF;
                bytes[i + 7] = 20000 >> 8, bytes[i + 8] = 20000 & 0xFF;
                break;
            }
        path_in_dir(path, sizeof path, "bomb.jpg");
        CHECK(write_file(path, bytes, len) == 0, "write %s", path);
        expect_decode_error(path, "megapixel", "decompression bomb");
        free(bytes);
    }

    path_in_dir(path, sizeof path, "notes.jpg");
    const char *text = "These are my notes, not a picture.\n";
    CHECK(write_file(path, text, strlen(text)) == 0, "write %s", path);
    expect_decode_error(path, "Not a JPEG file", "text file named .jpg");

    path_in_dir(path, sizeof path, "image_png.jpg");
    const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                           0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0, 0, 0};
    CHECK(write_file(path, png, sizeof png) == 0, "write %s", path);
    expect_decode_error(path, "0x89", "PNG named .jpg");

    path_in_dir(path, sizeof path, "does_not_exist.jpg");
    expect_decode_error(path, "No such file", "missing file");

    path_in_dir(path, sizeof path, "a_directory.jpg");
    mkdir(path, 0755);
    expect_decode_error(path, "directory", "directory named .jpg");

    /* A FIFO (a manifest can list one) is refused, not waited on forever:
     * opening it for reading would block until a writer came. */
    path_in_dir(path, sizeof path, "a_fifo.jpg");
    CHECK(mkfifo(path, 0644) == 0, "mkfifo %s", path);
    expect_decode_error(path, "not a regular file", "FIFO named .jpg");

    /* Mislabeled: a WAV file named .jpg. */
    path_in_dir(path, sizeof path, "sound.jpg");
    static const uint8_t wav_header[44] = {'R', 'I', 'F', 'F', 36, 0, 0, 0, 'W', 'A', 'V', 'E', 'f', 'm', 't', ' ',
                                           16, 0, 0, 0, 1, 0, 1, 0, 0x80, 0x3e, 0, 0, 0, 0x7d, 0, 0, 2, 0, 16, 0,
                                           'd', 'a', 't', 'a', 0, 0, 0, 0};
    CHECK(write_file(path, wav_header, sizeof wav_header) == 0, "write %s", path);
    expect_decode_error(path, "Not a JPEG file", "WAV named .jpg");

    /* Unreadable (root reads everything, so only checked for other users). */
    if (geteuid() != 0) {
        path_in_dir(path, sizeof path, "locked.jpg");
        CHECK(write_file(path, "x", 1) == 0 && chmod(path, 0) == 0, "write %s", path);
        expect_decode_error(path, "Permission denied", "unreadable file");
        chmod(path, 0644);
    }

    D2vError err = {{0}};
    Image8 img;
    CHECK(image_decode_jpeg_mem((const uint8_t *)"", 0, "blob", 0, 0, &img, &err) != 0 &&
              contains(err.msg, "blob: empty file"),
          "empty memory buffer: %s", err.msg);
}

/* ---- file lists ------------------------------------------------------------ */

static void make_dirs(const char *base, const char *const *rel)
{
    char path[4096];
    for (int i = 0; rel[i]; i++) {
        snprintf(path, sizeof path, "%s/%s", base, rel[i]);
        mkdir(path, 0755);
    }
}

static void touch(const char *base, const char *rel)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", base, rel);
    write_file(path, "x", 1);
}

static const char *const jpeg_exts[] = {"jpg", "jpeg", NULL};

static void test_filelist_scan(void)
{
    char root[1024], path[2048];
    D2vError err = {{0}};
    FileList f;
    path_in_dir(root, sizeof root, "data");
    static const char *const dirs[] = {"", "cat", "cat/sub", "cat/sub/deeper", "dog", "bird", ".hidden",
                                       "dog/a", NULL};
    make_dirs(root, dirs);
    touch(root, "cat/b.jpg");
    touch(root, "cat/sub/deeper/a.JPG");
    touch(root, "cat/notes.txt");
    touch(root, "dog/c.jpeg");
    touch(root, "dog/d.png");
    touch(root, "dog/a/e.Jpeg");
    touch(root, ".hidden/x.jpg");
    touch(root, "README");
    /* A symlink loop (dog/a/loop -> ..) and a second name for cat: each file
     * is still listed once, and the scan ends. */
    snprintf(path, sizeof path, "%s/dog/a/loop", root);
    CHECK(symlink("..", path) == 0, "symlink %s", path);
    snprintf(path, sizeof path, "%s/dog/up", root);
    CHECK(symlink("../cat", path) == 0, "symlink %s", path);

    int rc = filelist_scan(root, jpeg_exts, 1, &f, &err);
    CHECK(rc == 0, "labeled scan: %s", err.msg);
    static const char *const want_rel[] = {"cat/b.jpg", "cat/sub/deeper/a.JPG", "dog/a/e.Jpeg", "dog/c.jpeg"};
    static const int want_label[] = {0, 0, 1, 1};
    CHECK(f.n == 4, "labeled scan found %d files, expected 4", f.n);
    CHECK(f.n_classes == 2 && f.n_classes == 2 && strcmp(f.class_names[0], "cat") == 0 &&
              strcmp(f.class_names[1], "dog") == 0,
          "classes are cat, dog (the empty bird/ is not a class): %d", f.n_classes);
    for (int i = 0; i < f.n && i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", root, want_rel[i]);
        CHECK(strcmp(f.paths[i], path) == 0, "file %d is %s, expected %s", i, f.paths[i], path);
        CHECK(f.labels[i] == want_label[i], "label of %s is %d", f.paths[i], f.labels[i]);
    }
    filelist_free(&f);
    CHECK(f.n == 0 && f.paths == NULL, "filelist_free clears the struct");

    /* Unlabeled, and with a trailing slash on the root: same paths, no labels. */
    snprintf(path, sizeof path, "%s/", root);
    rc = filelist_scan(path, jpeg_exts, 0, &f, &err);
    CHECK(rc == 0 && f.n == 4 && f.n_classes == 0, "unlabeled scan: %s", rc ? err.msg : "");
    for (int i = 0; i < f.n; i++)
        CHECK(f.labels[i] == -1, "unlabeled file %d has label %d", i, f.labels[i]);
    if (f.n == 4) {
        snprintf(path, sizeof path, "%s/%s", root, want_rel[0]);
        CHECK(strcmp(f.paths[0], path) == 0, "no double slash: %s", f.paths[0]);
    }
    filelist_free(&f);

    /* Starting inside the loop: a/loop leads back up to dog/, which is then
     * scanned once; no file twice. */
    snprintf(path, sizeof path, "%s/dog/a", root);
    rc = filelist_scan(path, jpeg_exts, 0, &f, &err);
    CHECK(rc == 0, "scan from inside a loop: %s", err.msg);
    int dupes = 0;
    for (int i = 1; i < f.n; i++)
        dupes += strcmp(f.paths[i - 1], f.paths[i]) == 0;
    CHECK(rc == 0 && f.n == 4 && dupes == 0, "loop from inside lists e, c and cat's two files once each: %d",
          f.n);
    filelist_free(&f);

    /* Labeled data with a file directly in the root is an error. */
    touch(root, "stray.jpg");
    rc = filelist_scan(root, jpeg_exts, 1, &f, &err);
    CHECK(rc != 0 && contains(err.msg, "stray.jpg") && contains(err.msg, "class subdirectories"),
          "stray file in a labeled root: %s", err.msg);
    CHECK(f.n == 0 && f.paths == NULL, "nothing returned on error");
    rc = filelist_scan(root, jpeg_exts, 0, &f, &err);
    CHECK(rc == 0 && f.n == 5, "unlabeled scan takes the root's file too: %d", f.n);
    filelist_free(&f);

    /* A dangling link with one of our extensions is an error naming it. */
    snprintf(path, sizeof path, "%s/dog/gone.jpg", root);
    CHECK(symlink("nowhere.jpg", path) == 0, "symlink %s", path);
    rc = filelist_scan(root, jpeg_exts, 0, &f, &err);
    CHECK(rc != 0 && contains(err.msg, "gone.jpg") && contains(err.msg, "No such file"), "dangling link: %s",
          err.msg);
    unlink(path);

    /* Unreadable directory (meaningless as root, who reads everything). */
    if (geteuid() != 0) {
        snprintf(path, sizeof path, "%s/cat/sub", root);
        chmod(path, 0);
        rc = filelist_scan(root, jpeg_exts, 0, &f, &err);
        CHECK(rc != 0 && contains(err.msg, path) && contains(err.msg, "Permission denied"),
              "unreadable directory: %s", err.msg);
        chmod(path, 0755);
    }

    /* Empty and missing. */
    path_in_dir(path, sizeof path, "empty_dir");
    mkdir(path, 0755);
    rc = filelist_scan(path, jpeg_exts, 0, &f, &err);
    CHECK(rc != 0 && contains(err.msg, path) && contains(err.msg, ".jpg/.jpeg"), "empty directory: %s", err.msg);
    path_in_dir(path, sizeof path, "no_such_dir");
    rc = filelist_scan(path, jpeg_exts, 0, &f, &err);
    CHECK(rc != 0 && contains(err.msg, path) && contains(err.msg, "No such file"), "missing path: %s", err.msg);

    /* The mkdir a; ln -s .. a/loop of the brief, alone in a directory: ends,
     * and is simply empty. */
    path_in_dir(path, sizeof path, "loop_only");
    mkdir(path, 0755);
    char sub[4096];
    snprintf(sub, sizeof sub, "%s/a", path);
    mkdir(sub, 0755);
    snprintf(sub, sizeof sub, "%s/a/loop", path);
    CHECK(symlink("..", sub) == 0, "symlink %s", sub);
    rc = filelist_scan(path, jpeg_exts, 0, &f, &err);
    CHECK(rc != 0 && contains(err.msg, "no .jpg/.jpeg files"), "loop-only tree terminates, empty: %s", err.msg);
    touch(path, "a/one.jpg");
    rc = filelist_scan(path, jpeg_exts, 1, &f, &err);
    CHECK(rc == 0 && f.n == 1 && f.n_classes == 1 && strcmp(f.class_names[0], "a") == 0,
          "loop tree with one file: %s", rc ? err.msg : "");
    filelist_free(&f);
}

static void test_filelist_manifest(void)
{
    char dir[1024], manifest[2048], want[4096];
    D2vError err = {{0}};
    FileList f;
    path_in_dir(dir, sizeof dir, "lists");
    mkdir(dir, 0755);
    snprintf(manifest, sizeof manifest, "%s/train.txt", dir);
    const char *text = "# a comment\n"
                       "\n"
                       "   \t  \n"
                       "  dog/c.JPEG  \r\n"
                       "# another\n"
                       "cat/a.jpg\r\n"
                       "/elsewhere/pics/z.jpg\tbird\n"
                       "cat/b.jpeg\tcat \t 77\n" /* extra column ignored */
                       "./cat/sub/d.jpg"; /* no final newline */
    CHECK(write_file(manifest, text, strlen(text)) == 0, "write %s", manifest);

    int rc = filelist_scan(manifest, jpeg_exts, 1, &f, &err);
    CHECK(rc == 0, "labeled manifest: %s", err.msg);
    CHECK(f.n == 5, "manifest entries: %d, expected 5", f.n);
    CHECK(f.n_classes == 3 && strcmp(f.class_names[0], "bird") == 0 && strcmp(f.class_names[1], "cat") == 0 &&
              strcmp(f.class_names[2], "dog") == 0,
          "manifest classes bird, cat, dog (%d)", f.n_classes);
    if (rc == 0 && f.n == 5) {
        /* Sorted: the absolute path first, then the manifest's directory. */
        const char *rel[5] = {NULL, "./cat/sub/d.jpg", "cat/a.jpg", "cat/b.jpeg", "dog/c.JPEG"};
        const int labels[5] = {0, 1, 1, 1, 2};
        CHECK(strcmp(f.paths[0], "/elsewhere/pics/z.jpg") == 0, "absolute entry kept as is: %s", f.paths[0]);
        for (int i = 0; i < 5; i++) {
            if (rel[i]) {
                snprintf(want, sizeof want, "%s/%s", dir, rel[i]);
                CHECK(strcmp(f.paths[i], want) == 0, "entry %d is %s, expected %s", i, f.paths[i], want);
            }
            CHECK(f.labels[i] == labels[i], "entry %s label %d, expected %d", f.paths[i], f.labels[i], labels[i]);
        }
    }
    filelist_free(&f);

    /* Unlabeled: extra columns (e.g. a frame count) are ignored. */
    rc = filelist_scan(manifest, jpeg_exts, 0, &f, &err);
    CHECK(rc == 0 && f.n == 5 && f.n_classes == 0 && f.labels[0] == -1, "unlabeled manifest: %s", err.msg);
    filelist_free(&f);

    /* Errors carry file:line. */
    char bad[2048];
    snprintf(bad, sizeof bad, "%s/long.txt", dir);
    char *long_text = malloc(6000);
    strcpy(long_text, "# fine\nok.jpg\n");
    size_t at = strlen(long_text);
    memset(long_text + at, 'a', 5000);
    strcpy(long_text + at + 5000, ".jpg\n");
    CHECK(write_file(bad, long_text, strlen(long_text)) == 0, "write %s", bad);
    free(long_text);
    rc = filelist_scan(bad, jpeg_exts, 0, &f, &err);
    snprintf(want, sizeof want, "%s:3:", bad);
    CHECK(rc != 0 && contains(err.msg, want) && contains(err.msg, "longer than 4096"), "long line: %s", err.msg);

    snprintf(bad, sizeof bad, "%s/nul.txt", dir);
    CHECK(write_file(bad, "a.jpg\nb\0.jpg\n", 13) == 0, "write %s", bad);
    rc = filelist_scan(bad, jpeg_exts, 0, &f, &err);
    snprintf(want, sizeof want, "%s:2:", bad);
    CHECK(rc != 0 && contains(err.msg, want) && contains(err.msg, "NUL"), "NUL byte: %s", err.msg);

    snprintf(bad, sizeof bad, "%s/ext.txt", dir);
    CHECK(write_file(bad, "a.jpg\nb.png\n", 12) == 0, "write %s", bad);
    rc = filelist_scan(bad, jpeg_exts, 0, &f, &err);
    snprintf(want, sizeof want, "%s:2:", bad);
    CHECK(rc != 0 && contains(err.msg, want) && contains(err.msg, "b.png"), "wrong extension: %s", err.msg);

    snprintf(bad, sizeof bad, "%s/nolabel.txt", dir);
    CHECK(write_file(bad, "cat/a.jpg\nloose.jpg\n", 20) == 0, "write %s", bad);
    rc = filelist_scan(bad, jpeg_exts, 1, &f, &err);
    snprintf(want, sizeof want, "%s:2:", bad);
    CHECK(rc != 0 && contains(err.msg, want) && contains(err.msg, "no label"), "entry without a label: %s",
          err.msg);
    rc = filelist_scan(bad, jpeg_exts, 0, &f, &err);
    CHECK(rc == 0 && f.n == 2, "the same list unlabeled is fine: %s", rc ? err.msg : "");
    filelist_free(&f);

    snprintf(bad, sizeof bad, "%s/only_comments.txt", dir);
    CHECK(write_file(bad, "# nothing\n\n", 11) == 0, "write %s", bad);
    rc = filelist_scan(bad, jpeg_exts, 0, &f, &err);
    CHECK(rc != 0 && contains(err.msg, bad) && contains(err.msg, "lists no"), "empty manifest: %s", err.msg);

    snprintf(bad, sizeof bad, "%s/single.jpg", dir);
    CHECK(write_file(bad, "x", 1) == 0, "write %s", bad);
    rc = filelist_scan(bad, jpeg_exts, 0, &f, &err);
    CHECK(rc != 0 && contains(err.msg, "single data file"), "an image given as the dataset: %s", err.msg);
}

int main(void)
{
    if (tmp_dir_create("img") < 0)
        return 1;
    test_decode_rgb_and_gray();
    test_decode_cmyk();
    test_dct_scaling();
    test_resample_identity_and_normalize();
    test_resample_downscale();
    test_resample_upscale_and_boxes();
    test_eval_transform();
    test_crop_sampling();
    test_train_transform();
    test_broken_files();
    test_filelist_scan();
    test_filelist_manifest();
    remove_tree(tmp_dir);
    return check_summary();
}
