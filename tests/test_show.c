/* test_show.c — the pictures of issue 9, end to end: `d2v plot`, `d2v show
 * mask` (image, speech, text), `d2v show targets` and `d2v show attention`
 * run on tiny inputs (a 4-step image pretraining gives the checkpoint); each
 * PNG is decoded with libpng (viz/png.c) and its size and known pixels are
 * checked against what the command printed or exported (.npy). Errors must
 * be one line naming the file.
 * usage: test_show D2V_BINARY SOURCE_DIR */
#define _XOPEN_SOURCE 700

#include "check.h"
#include "plot.h"
#include "png.h"
#include "tempdir.h"

#include <math.h>
#include <stdarg.h>
#include <sndfile.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *d2v, *src;

/* Runs a shell command; returns its exit status. */
static int run(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    if (s)
        s[n] = 0;
    fclose(f);
    return s;
}

/* The BITS of a "mask BITS" line in a file, or NULL. */
static char *mask_bits(const char *path)
{
    char *s = slurp(path), *at = s ? strstr(s, "mask ") : NULL;
    if (!at) {
        free(s);
        return NULL;
    }
    while (at > s && at[-1] != '\n' && (at = strstr(at + 1, "mask ")))
        ;
    if (!at) {
        free(s);
        return NULL;
    }
    char *bits = strdup(at + 5);
    bits[strspn(bits, "01")] = 0;
    free(s);
    return bits;
}

/* A float32 .npy written by d2v (format 1.0): data and the element count. */
static float *read_npy(const char *path, size_t *n)
{
    char *s = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    s = malloc((size_t)size);
    if (fread(s, 1, (size_t)size, f) != (size_t)size || size < 10) {
        fclose(f);
        free(s);
        return NULL;
    }
    fclose(f);
    const size_t header = 10 + (size_t)((uint8_t)s[8] | (uint8_t)s[9] << 8);
    *n = ((size_t)size - header) / sizeof(float);
    float *data = malloc(*n * sizeof(float));
    memcpy(data, s + header, *n * sizeof(float));
    free(s);
    return data;
}

typedef struct {
    uint8_t *rgb;
    int w, h;
} Picture;

static int load(const char *path, Picture *p)
{
    D2vError err;
    if (png_read_rgb(path, &p->rgb, &p->w, &p->h, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static Rgb at(const Picture *p, int x, int y)
{
    if (x < 0 || y < 0 || x >= p->w || y >= p->h)
        return (Rgb){1, 2, 3};
    const uint8_t *q = p->rgb + ((size_t)y * p->w + x) * 3;
    return (Rgb){q[0], q[1], q[2]};
}

static int same(Rgb a, Rgb b) { return a.r == b.r && a.g == b.g && a.b == b.b; }
static int near(Rgb a, Rgb b) { return abs(a.r - b.r) <= 1 && abs(a.g - b.g) <= 1 && abs(a.b - b.b) <= 1; }

static Rgb blend(Rgb p, Rgb c, double a)
{
    return (Rgb){(uint8_t)lround(p.r * (1 - a) + c.r * a), (uint8_t)lround(p.g * (1 - a) + c.g * a),
                 (uint8_t)lround(p.b * (1 - a) + c.b * a)};
}

/* An error: non-zero exit, one line, naming `what`. */
static void check_error(const char *name, const char *err_path, int status, const char *what)
{
    char *e = slurp(err_path);
    int lines = 0;
    for (char *c = e; c && *c; c++)
        lines += *c == '\n';
    CHECK(status == 1 || status == 2, "%s: exit status %d, expected 1 or 2", name, status);
    CHECK(e && lines == 1 && strstr(e, what), "%s: expected one line naming %s, got: %s", name, what, e ? e : "");
    free(e);
}

/* ---- d2v plot ------------------------------------------------------------------- */

static void test_plot(void)
{
    char dir[512], log[600], png[600], err[600];
    path_in_dir(dir, sizeof dir, "run");
    mkdir(dir, 0755);
    snprintf(log, sizeof log, "%s/log.jsonl", dir);
    snprintf(png, sizeof png, "%s/curves.png", tmp_dir);
    snprintf(err, sizeof err, "%s/plot.err", tmp_dir);
    FILE *f = fopen(log, "w");
    for (int s = 0; s <= 100; s += 10)
        fprintf(f, "{\"step\":%d,\"loss\":2.0,\"lr\":%g,\"tau\":0.999,\"target_var\":%g,\"pred_var\":0.5,"
                   "\"frontend_var\":0.7,\"masked\":10,\"positions\":20}\n",
                s, 1e-3 * s / 100, 0.5 + s / 200.0);
    fclose(f);
    CHECK(run("'%s' plot '%s' --out '%s' 2>'%s'", d2v, dir, png, err) == 0, "d2v plot failed");
    Picture p;
    if (load(png, &p) < 0) {
        CHECK(0, "plot: no PNG");
        return;
    }
    CHECK(p.w == 3 * PLOT_PANEL_W && p.h == 2 * PLOT_PANEL_H + PLOT_HEADER_H, "plot size %d x %d", p.w, p.h);
    CHECK(same(at(&p, 0, p.h - 1), RGB_WHITE), "plot background is not white");
    /* Loss (panel 0) is constant: its line runs through the middle of the
     * plot area; target_var (panel 1) rises from bottom left to top right. */
    const int ax0 = PLOT_LEFT, ay0 = PLOT_HEADER_H + PLOT_TOP, ax1 = PLOT_PANEL_W - PLOT_RIGHT,
              ay1 = PLOT_HEADER_H + PLOT_PANEL_H - PLOT_BOTTOM;
    const int mid = ay1 - (int)lround(0.5 * (ay1 - ay0));
    CHECK(same(at(&p, (ax0 + ax1) / 2, mid), plot_color(0)), "loss line not at the middle");
    CHECK(same(at(&p, (ax0 + ax1) / 2, mid - 10), RGB_WHITE) || same(at(&p, (ax0 + ax1) / 2, mid - 10), RGB_LIGHT),
          "loss panel: something drawn above a constant line");
    CHECK(same(at(&p, ax0, ay0), RGB_BLACK) && same(at(&p, ax1, ay1), RGB_BLACK), "plot frame corners");
    /* target_var: 5% padding each way, so the first point sits 5/110 of the
     * height above the bottom and the last as far below the top. */
    const int H = ay1 - ay0, x1 = PLOT_PANEL_W;
    CHECK(same(at(&p, x1 + ax0, ay1 - (int)lround(H * 0.05 / 1.1)), plot_color(0)), "target_var first point");
    CHECK(same(at(&p, x1 + ax1, ay1 - (int)lround(H * 1.05 / 1.1)), plot_color(0)), "target_var last point");
    free(p.rgb);

    f = fopen(log, "a");
    fprintf(f, "not json\n");
    fclose(f);
    check_error("plot of a bad log", err, run("'%s' plot '%s' --out '%s' 2>'%s'", d2v, dir, png, err),
                "log.jsonl:12");
    check_error("plot of a missing run", err,
                run("'%s' plot '%s/nothing' --out '%s' 2>'%s'", d2v, tmp_dir, png, err), "nothing/log.jsonl");
}

/* ---- inputs ----------------------------------------------------------------------- */

/* A 1 s, 16 kHz WAV: silence, a 440 Hz tone in the middle third, silence. */
static int write_wav(const char *path)
{
    SF_INFO info = {.samplerate = 16000, .channels = 1, .format = SF_FORMAT_WAV | SF_FORMAT_PCM_16};
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    if (!f)
        return -1;
    float x[16000];
    for (int i = 0; i < 16000; i++)
        x[i] = i > 5333 && i < 10666 ? 0.5f * sinf(2 * (float)M_PI * 440 * i / 16000) : 0.001f * ((i * 7919) % 13 - 6);
    sf_write_float(f, x, 16000);
    sf_close(f);
    return 0;
}

/* ---- d2v show -------------------------------------------------------------------------- */

#define HEADER 28
#define PAD 12

static void test_image(const char *jpg, const char *ckpt)
{
    char png[600], out[600], err[600], npy[600];
    snprintf(png, sizeof png, "%s/mask.png", tmp_dir);
    snprintf(out, sizeof out, "%s/mask.out", tmp_dir);
    snprintf(err, sizeof err, "%s/show.err", tmp_dir);
    CHECK(run("'%s' show mask --config '%s/configs/image_micro.ini' --input '%s' --out '%s' >'%s' 2>'%s'", d2v, src,
              jpg, png, out, err) == 0, "show mask (image) failed");
    char *bits = mask_bits(out);
    Picture p;
    if (!bits || load(png, &p) < 0) {
        CHECK(0, "show mask (image): no mask line or no PNG");
        free(bits);
        return;
    }
    /* 32 px scaled 8x: two 256-pixel panels; 8 x 8 patches of 32 pixels. */
    CHECK(strlen(bits) == 64, "image mask has %zu positions, expected 64", strlen(bits));
    CHECK(p.h == HEADER + 256 + PAD && p.w >= 3 * PAD + 512, "mask picture %d x %d", p.w, p.h);
    int masked = 0, bad = 0;
    for (int g = 0; g < 64 && bits[g]; g++) {
        const int cx = (g % 8) * 32 + 16, cy = HEADER + (g / 8) * 32 + 16;
        const Rgb left = at(&p, PAD + cx, cy), right = at(&p, 2 * PAD + 256 + cx, cy);
        masked += bits[g] == '1';
        bad += bits[g] == '1' ? !same(right, RGB_GREY) : !same(right, left);
    }
    CHECK(bad == 0, "image mask: %d patch centres disagree with the printed mask", bad);
    CHECK(masked >= 30 && masked <= 40, "image mask: %d of 64 masked, expected about 38 (0.6)", masked);
    free(bits);
    free(p.rgb);

    /* Attention: 4 heads; the exported CLS attention, per-head scaled,
     * blended over the input at each patch centre. */
    snprintf(png, sizeof png, "%s/attention.png", tmp_dir);
    snprintf(npy, sizeof npy, "%s/attention.npy", tmp_dir);
    CHECK(run("'%s' show attention --checkpoint '%s' --input '%s' --out '%s' --npy '%s' 2>'%s'", d2v, ckpt, jpg, png,
              npy, err) == 0, "show attention failed");
    size_t n = 0;
    float *att = read_npy(npy, &n);
    if (!att || load(png, &p) < 0) {
        CHECK(0, "show attention: no .npy or no PNG");
        free(att);
        return;
    }
    CHECK(n == 4 * 64, "attention .npy holds %zu values, expected 4 heads x 64 patches", n);
    CHECK(p.w == PAD + 5 * (128 + PAD) && p.h == 2 * HEADER + 128 + PAD, "attention picture %d x %d", p.w, p.h);
    bad = 0;
    for (int h = 0; h < 4 && n == 256; h++) {
        float max = 0, sum = 0;
        for (int g = 0; g < 64; g++) {
            max = fmaxf(max, att[h * 64 + g]);
            sum += att[h * 64 + g];
        }
        CHECK(sum > 0.5f && sum < 1.0f + 1e-5f, "head %d: CLS attention to patches sums to %g", h, sum);
        for (int g = 0; g < 64; g += 9) {
            const int cx = (g % 8) * 16 + 8, cy = 2 * HEADER + (g / 8) * 16 + 8;
            const Rgb input = at(&p, PAD + cx, cy);
            const Rgb want = blend(input, colormap_sequential(att[h * 64 + g] / max), 0.65);
            bad += !near(at(&p, PAD + (h + 1) * (128 + PAD) + cx, cy), want);
        }
    }
    CHECK(bad == 0, "attention: %d patch centres differ from input blended with the exported attention", bad);
    free(att);
    free(p.rgb);

    /* Targets: K = 4 layers + the average, 65 positions x 128 channels,
     * cells 2 x 2, diverging colours over [-3, 3]. */
    snprintf(png, sizeof png, "%s/targets.png", tmp_dir);
    snprintf(npy, sizeof npy, "%s/targets.npy", tmp_dir);
    CHECK(run("'%s' show targets --checkpoint '%s' --input '%s' --out '%s' --npy '%s' 2>'%s'", d2v, ckpt, jpg, png,
              npy, err) == 0, "show targets failed");
    float *y = read_npy(npy, &n);
    if (!y || load(png, &p) < 0) {
        CHECK(0, "show targets: no .npy or no PNG");
        free(y);
        return;
    }
    CHECK(n == 5 * 65 * 128, "targets .npy holds %zu values, expected 5 x 65 x 128", n);
    CHECK(p.w == PAD + 5 * (256 + PAD) && p.h == 2 * HEADER + 130 + PAD, "targets picture %d x %d", p.w, p.h);
    bad = 0;
    for (int k = 0; k < 5 && n == 5 * 65 * 128; k++)
        for (int pos = 0; pos < 65; pos += 16)
            for (int d = 0; d < 128; d += 37) {
                const float v = y[((size_t)k * 65 + pos) * 128 + d];
                bad += !same(at(&p, PAD + k * (256 + PAD) + 2 * d, 2 * HEADER + 2 * pos), colormap_diverging((v + 3) / 6));
            }
    CHECK(bad == 0, "targets: %d cells differ from the exported values", bad);
    /* Layer-normed... each layer is instance-normed over positions for
     * image_micro: every channel of a layer has mean 0 over the 65 positions. */
    double worst = 0;
    for (int k = 0; k < 4 && n == 5 * 65 * 128; k++)
        for (int d = 0; d < 128; d++) {
            double mean = 0;
            for (int pos = 0; pos < 65; pos++)
                mean += y[((size_t)k * 65 + pos) * 128 + d] / 65.0;
            worst = fmax(worst, fabs(mean));
        }
    CHECK(worst < 1e-4, "an instance-normed layer has a channel with mean %g over positions", worst);
    free(y);
    free(p.rgb);

    /* Bad input: a text file as an image; attention of a missing file. */
    char txt[600];
    snprintf(txt, sizeof txt, "%s/not_an_image.jpg", tmp_dir);
    FILE *f = fopen(txt, "w");
    fprintf(f, "hello\n");
    fclose(f);
    check_error("attention of a non-JPEG", err,
                run("'%s' show attention --checkpoint '%s' --input '%s' --out '%s' 2>'%s'", d2v, ckpt, txt, png, err),
                "not_an_image.jpg");
    check_error("mask of a missing file", err,
                run("'%s' show mask --config '%s/configs/image_micro.ini' --input '%s/missing.jpg' --out '%s' "
                    ">/dev/null 2>'%s'", d2v, src, tmp_dir, png, err), "missing.jpg");
}

static void test_speech(void)
{
    char wav[600], png[600], out[600], err[600];
    snprintf(wav, sizeof wav, "%s/tone.wav", tmp_dir);
    snprintf(png, sizeof png, "%s/mask_speech.png", tmp_dir);
    snprintf(out, sizeof out, "%s/mask_speech.out", tmp_dir);
    snprintf(err, sizeof err, "%s/speech.err", tmp_dir);
    CHECK(write_wav(wav) == 0, "cannot write %s", wav);
    CHECK(run("'%s' show mask --config '%s/configs/speech_micro.ini' --input '%s' --out '%s' >'%s' 2>'%s'", d2v, src,
              wav, png, out, err) == 0, "show mask (speech) failed");
    char *bits = mask_bits(out);
    Picture p;
    if (!bits || load(png, &p) < 0) {
        CHECK(0, "show mask (speech): no mask line or no PNG");
        free(bits);
        return;
    }
    /* 1 s: 49 frames of 320 samples; the spectrogram 98 windows of 3 px,
     * 64 bands of 2 px; the strip's cell i spans 6 px from PAD + 6 i. */
    CHECK(strlen(bits) == 49, "speech mask has %zu frames, expected 49", strlen(bits));
    CHECK(p.h == HEADER + 128 + 6 + 12 + PAD, "speech mask picture height %d", p.h);
    const int strip = HEADER + 128 + 6 + 6;
    int bad = 0, masked = 0;
    for (int i = 0; bits[i]; i++) {
        masked += bits[i] == '1';
        bad += !same(at(&p, PAD + 6 * i + 2, strip), bits[i] == '1' ? (Rgb){214, 39, 40} : RGB_LIGHT);
    }
    CHECK(bad == 0, "speech strip: %d frames disagree with the printed mask", bad);
    CHECK(masked > 0 && masked < 49, "speech mask: %d of 49 frames masked", masked);
    /* The tone (samples 5333..10666, frames ~17..33) is loud in the
     * spectrogram's low bands; the silence before it is dark. An unmasked
     * column is the colour map itself, so compare brightness. */
    int tone = -1, quiet = -1;
    for (int i = 20; i < 31 && tone < 0; i++)
        if (bits[i] == '0')
            tone = i;
    for (int i = 2; i < 14 && quiet < 0; i++)
        if (bits[i] == '0')
            quiet = i;
    if (tone >= 0 && quiet >= 0) {
        /* The 440 Hz band: mel of 440 Hz is about 550 of 2840; band ~11 of 64. */
        const int y = HEADER + (63 - 11) * 2;
        const Rgb a = at(&p, PAD + tone * 6 + 3, y), b = at(&p, PAD + quiet * 6 + 3, y);
        CHECK(a.r + a.g + a.b > b.r + b.g + b.b + 150, "the tone is not brighter than the silence (%d,%d,%d vs %d,%d,%d)",
              a.r, a.g, a.b, b.r, b.g, b.b);
    }
    free(bits);
    free(p.rgb);
}

static void test_text(void)
{
    char corpus[600], ini[600], html[600], out[600], err[600];
    snprintf(corpus, sizeof corpus, "%s/corpus.txt", tmp_dir);
    snprintf(ini, sizeof ini, "%s/text.ini", tmp_dir);
    snprintf(html, sizeof html, "%s/mask.html", tmp_dir);
    snprintf(out, sizeof out, "%s/text.out", tmp_dir);
    snprintf(err, sizeof err, "%s/text.err", tmp_dir);
    FILE *f = fopen(corpus, "w");
    for (int i = 0; i < 40; i++)
        fprintf(f, "The quick brown fox jumps over the lazy dog number %d, and the dog & the <fox> sleep.\n", i);
    fclose(f);
    CHECK(run("'%s' tokenizer train --vocab-size 300 --out '%s/tok' '%s' 2>'%s'", d2v, tmp_dir, corpus, err) == 0,
          "tokenizer train");
    CHECK(run("sed -e 's|^tokenizer = .*|tokenizer = %s/tok|' -e 's|^vocab_size = .*|vocab_size = 0|' "
              "'%s/configs/text_micro.ini' > '%s'", tmp_dir, src, ini) == 0, "text config");
    CHECK(run("'%s' show mask --config '%s' --input '%s' --html --out '%s' >'%s' 2>'%s'", d2v, ini, corpus, html, out,
              err) == 0, "show mask (text, html) failed");
    char *bits = mask_bits(out), *page = slurp(html);
    CHECK(bits && page, "text mask: no mask line or no HTML");
    if (bits && page) {
        int ones = 0, marked = 0;
        for (char *c = bits; *c; c++)
            ones += *c == '1';
        for (char *c = page; (c = strstr(c, "class=\"m\"")); c++)
            marked++;
        CHECK(strlen(bits) == 64 || strlen(bits) > 20, "text mask covers %zu tokens", strlen(bits));
        CHECK(ones > 0 && ones == marked, "HTML marks %d tokens, the mask has %d", marked, ones);
        CHECK(strstr(page, "&lt;fox&gt;") || strstr(page, "&lt;") , "HTML does not escape '<'");
        CHECK(strstr(page, "<span>&lt;s&gt;</span>") != NULL, "the first token is not <s>");
    }
    free(bits);
    free(page);
    CHECK(run("'%s' show mask --config '%s' --input '%s' >'%s' 2>'%s'", d2v, ini, corpus, out, err) == 0,
          "show mask (text, terminal) failed");
    char *term = slurp(out);
    CHECK(term && strstr(term, "\033[7m"), "terminal output has no reverse-video token");
    free(term);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_show D2V_BINARY SOURCE_DIR\n");
        return 2;
    }
    d2v = argv[1];
    src = argv[2];
    if (tmp_dir_create("show") < 0)
        return 1;
    test_plot();
    test_speech();
    test_text();
    /* Images: a few Fashion-MNIST JPEGs (Debian's dataset package) and a
     * 4-step pretraining for a checkpoint. */
    if (access("/usr/share/datasets/fashion-mnist", R_OK) == 0 &&
        run("/usr/bin/python3 '%s/scripts/make_fmnist.py' --out '%s/fmnist' --train-per-class 1 --test-per-class 1 "
            ">/dev/null", src, tmp_dir) == 0) {
        CHECK(run("'%s' pretrain '%s/configs/image_micro.ini' --data '%s/fmnist/train' --run '%s/img' "
                  "--set train.steps=4 --set train.batch_size=4 --set train.threads=1 2>/dev/null",
                  d2v, src, tmp_dir, tmp_dir) == 0, "image pretraining");
        char ckpt[600];
        snprintf(ckpt, sizeof ckpt, "%s/img/last.safetensors", tmp_dir);
        char jpg[600];
        snprintf(jpg, sizeof jpg, "%s/fmnist/test/0_tshirt/00000.jpg", tmp_dir);
        if (access(jpg, R_OK) != 0)
            run("ls '%s'/fmnist/test/*/*.jpg | head -1 | tr -d '\\n' > '%s/first'", tmp_dir, tmp_dir);
        char *first = access(jpg, R_OK) != 0 ? NULL : strdup(jpg);
        if (!first) {
            char p[600];
            snprintf(p, sizeof p, "%s/first", tmp_dir);
            first = slurp(p);
        }
        test_image(first ? first : jpg, ckpt);
        free(first);
    } else {
        printf("image part skipped: dataset-fashion-mnist is not installed\n");
    }
    remove_tree(tmp_dir);
    return check_summary();
}
