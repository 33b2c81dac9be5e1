/* cmd_show.c — `d2v show mask|targets|attention`: pictures of what data2vec
 * does to one input (issue 9). The modality draws nothing: it describes the
 * input through its view callback (modality.h, InputView) and this file
 * draws that with viz/. */
#include "args.h"
#include "cli.h"
#include "draw.h"
#include "loader.h"
#include "probe.h"
#include "setup.h"
#include "spectrogram.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: d2v show mask      (--config C.ini | --checkpoint C.safetensors) --input FILE --out FILE.png\n"
            "                          [--seed N] [--html]\n"
            "       d2v show targets   --checkpoint C.safetensors --input FILE --out FILE.png [--npy FILE.npy]\n"
            "       d2v show attention --checkpoint C.safetensors --input IMAGE --out FILE.png [--npy FILE.npy]\n"
            "\n"
            "Pictures of one input (a JPEG, an audio file, or a text file: its first block),\n"
            "prepared as for evaluation (centre crop; no augmentation):\n"
            "  mask       the mask the student would get (drawn with --seed, default 1).\n"
            "             image: the input, and the input with masked patches grey and the\n"
            "             masked blocks outlined; speech: the log-mel spectrogram (display\n"
            "             only, FFTW) with masked frames shaded, and a strip of the model's\n"
            "             frames (red = masked); text: the tokens with masked ones in reverse\n"
            "             video on the terminal, or an HTML page with --html (--out FILE.html).\n"
            "             Prints 'mask BITS' (1 = masked, one per position) on stdout.\n"
            "  targets    the teacher's top-K normalised layer outputs and their average (the\n"
            "             regression target) as heatmaps, positions down, channels across,\n"
            "             blue -3 .. white 0 .. red +3. --npy writes them, (K+1)*N rows of D.\n"
            "  attention  an image model's last layer: each head's attention from CLS to the\n"
            "             patches, over the image (yellow = most attended, scaled per head).\n"
            "             --npy writes it, one row per head, one column per patch.\n");
}

/* ---- one input ---------------------------------------------------------------- */

/* Opens FILE as a one-item dataset. Image and speech datasets are
 * directories or manifests; a single file is turned into a one-line
 * manifest (a temporary file, gone once read). Text opens a file as is. */
static int open_input(const Setup *s, const char *path, void **dataset, D2vError *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return d2v_fail(err, "--input %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return d2v_fail(err, "--input %s: expected one file (an image, an audio file or a text file)", path);
    D2vError first;
    if (s->mod->open(s->mcfg, path, 0, dataset, &first) == 0)
        return 0;
    char *full = realpath(path, NULL);
    char manifest[] = "/tmp/d2v-show-XXXXXX";
    int fd = full ? mkstemp(manifest) : -1;
    FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
    int ok = f && fprintf(f, "%s\n", full) > 0;
    if (f)
        ok = fclose(f) == 0 && ok;
    else if (fd >= 0)
        close(fd);
    free(full);
    int rc = ok ? s->mod->open(s->mcfg, manifest, 0, dataset, err) : -1;
    if (fd >= 0)
        unlink(manifest);
    if (!ok)
        return d2v_fail(err, "%s", first.msg);
    /* The temporary manifest is ours, not the user's: "TMP:1: 'FILE' does
     * not end in .jpg" becomes "--input 'FILE' does not end in .jpg". */
    const size_t len = strlen(manifest);
    if (rc < 0 && strncmp(err->msg, manifest, len) == 0) {
        const char *rest = strchr(err->msg + len + 1, ' ');
        char msg[D2V_ERR_LEN];
        snprintf(msg, sizeof msg, "%s", rest ? rest + 1 : err->msg);
        d2v_fail(err, "--input %s (the files the %s modality reads)", msg, s->mod->name);
    }
    return rc;
}

typedef struct {
    Setup setup;
    Model model;
    void *dataset;
    Batch batch;
    FrontendOut fe;
    InputView view;
} Shown;

static void shown_free(Shown *w)
{
    input_view_free(&w->view);
    if (w->batch.B || w->batch.data || w->batch.tokens)
        w->setup.mod->batch_free(&w->batch);
    if (w->dataset)
        w->setup.mod->dataset_close(w->dataset);
    model_free(&w->model);
    setup_free(&w->setup);
}

/* Model (from a checkpoint, or random init from a config), the input's
 * first item as a batch of one, the front-end forward (masked with `seed`
 * when masked != 0), and the view. */
static int prepare(Shown *w, const char *checkpoint, const char *config, const char *input, int masked, uint64_t seed,
                   D2vError *err)
{
    memset(w, 0, sizeof *w);
    if (setup_model(&w->setup, &w->model, checkpoint, config, 1, err) < 0)
        return -1;
    const Modality *mod = w->setup.mod;
    if (!mod->view)
        return d2v_fail(err, "the %s modality cannot be shown (it has no view callback)", mod->name);
    if (open_input(&w->setup, input, &w->dataset, err) < 0 ||
        mod->batch_alloc(w->setup.mcfg, 1, &w->batch, err) < 0)
        return -1;
    const int item = 0;
    Rng rng;
    rng_init(&rng, seed, 0);
    if (mod->load_batch(w->setup.mcfg, w->dataset, &item, 1, 0, &rng, 0, NULL, NULL, &w->batch, err) < 0)
        return -1;
    const ForwardMode mode = {.train = masked, .seed = seed, .step = 0};
    Rng mask_rng;
    rng_init(&mask_rng, seed, rng_stream(STREAM_MASK, 0));
    mod->forward(w->model.frontend, w->model.ps.value, &w->batch, &mask_rng, mode, &w->fe);
    return mod->view(w->model.frontend, w->setup.mcfg, &w->batch, 0, &w->view, err);
}

/* ---- d2v show mask ---------------------------------------------------------------- */

#define HEADER 28
#define PAD 12
static const Rgb MASK_RED = {214, 39, 40};

static int is_masked(const Shown *w, int i)
{
    return w->fe.loss_mask[w->view.first_position + i] != 0;
}

static int mask_image(const Shown *w, const char *title, const char *out, D2vError *err)
{
    const InputView *v = &w->view;
    const int scale = v->width >= 256 ? 1 : 256 / v->width, S = v->width * scale;
    Canvas c;
    int width = 3 * PAD + 2 * S;
    if (width < 2 * PAD + text_width(title, 2))
        width = 2 * PAD + text_width(title, 2);
    if (canvas_init(&c, width, HEADER + S + PAD, RGB_WHITE, err) < 0)
        return -1;
    draw_text(&c, PAD, 8, title, 2, RGB_BLACK);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            const uint8_t *p = v->rgb + ((size_t)(y / scale) * v->width + x / scale) * 3;
            const Rgb px = {p[0], p[1], p[2]};
            draw_pixel(&c, PAD + x, HEADER + y, px);
            draw_pixel(&c, 2 * PAD + S + x, HEADER + y, px);
        }
    /* The patch grid, faint, on the right; cell centres stay untouched. */
    const int cell = v->patch * scale, x0 = 2 * PAD + S;
    for (int k = 1; k < v->grid_w; k++)
        for (int y = 0; y < S; y++)
            draw_blend(&c, x0 + k * cell, HEADER + y, RGB_WHITE, 0.35);
    for (int k = 1; k < v->grid_h; k++)
        for (int x = 0; x < S; x++)
            draw_blend(&c, x0 + x, HEADER + k * cell, RGB_WHITE, 0.35);
    /* Masked patches flat grey; an edge between a masked and an unmasked
     * patch (or the border) drawn dark, so each block shows as a region. */
    for (int gy = 0; gy < v->grid_h; gy++)
        for (int gx = 0; gx < v->grid_w; gx++) {
            if (!is_masked(w, gy * v->grid_w + gx))
                continue;
            const int left = x0 + gx * cell, top = HEADER + gy * cell;
            draw_fill(&c, left, top, left + cell, top + cell, RGB_GREY);
            const Rgb edge = {40, 40, 40};
            if (gy == 0 || !is_masked(w, (gy - 1) * v->grid_w + gx))
                draw_line(&c, left, top, left + cell - 1, top, edge);
            if (gy == v->grid_h - 1 || !is_masked(w, (gy + 1) * v->grid_w + gx))
                draw_line(&c, left, top + cell - 1, left + cell - 1, top + cell - 1, edge);
            if (gx == 0 || !is_masked(w, gy * v->grid_w + gx - 1))
                draw_line(&c, left, top, left, top + cell - 1, edge);
            if (gx == v->grid_w - 1 || !is_masked(w, gy * v->grid_w + gx + 1))
                draw_line(&c, left + cell - 1, top, left + cell - 1, top + cell - 1, edge);
        }
    int rc = canvas_save(&c, out, err);
    canvas_free(&c);
    return rc;
}

/* Spectrogram geometry (documented for the tests): 25 ms windows every
 * 10 ms, 64 mel bands; each spectrogram frame SPEC_W pixels wide, each band
 * SPEC_H high, low frequencies at the bottom; below it a STRIP_H-pixel strip
 * with one cell per model frame. */
#define SPEC_W 3
#define SPEC_H 2
#define N_MELS 64
#define STRIP_H 12
#define SHADE_ALPHA 0.5

static int mask_signal(const Shown *w, const char *title, const char *out, D2vError *err)
{
    const InputView *v = &w->view;
    const int win = v->sample_rate / 40, hop = v->sample_rate / 100;
    float *mel;
    int frames;
    if (log_mel(v->samples, v->n_samples, v->sample_rate, win, hop, N_MELS, &mel, &frames, err) < 0)
        return -1;
    /* The display range: the loudest band value and 14 nepers (~60 dB) below. */
    float hi = -INFINITY;
    for (size_t i = 0; i < (size_t)frames * N_MELS; i++)
        hi = fmaxf(hi, mel[i]);
    const double lo = hi - 14;
    const int spec_w = frames * SPEC_W, model_w = (int)lround((double)v->n_positions * v->hop / hop * SPEC_W);
    int width = 2 * PAD + (spec_w > model_w ? spec_w : model_w);
    if (width < 2 * PAD + text_width(title, 2))
        width = 2 * PAD + text_width(title, 2);
    Canvas c;
    if (canvas_init(&c, width, HEADER + N_MELS * SPEC_H + 6 + STRIP_H + PAD, RGB_WHITE, err) < 0) {
        free(mel);
        return -1;
    }
    draw_text(&c, PAD, 8, title, 2, RGB_BLACK);
    for (int f = 0; f < frames; f++) {
        /* The model frame holding this window's centre. */
        const int centre = f * hop + win / 2, i = centre / v->hop;
        const int shaded = i < v->n_positions && is_masked(w, i);
        for (int m = 0; m < N_MELS; m++) {
            Rgb color = colormap_sequential((mel[(size_t)f * N_MELS + m] - lo) / (hi - lo));
            const int x = PAD + f * SPEC_W, y = HEADER + (N_MELS - 1 - m) * SPEC_H;
            draw_fill(&c, x, y, x + SPEC_W, y + SPEC_H, color);
            if (shaded)
                for (int yy = y; yy < y + SPEC_H; yy++)
                    for (int xx = x; xx < x + SPEC_W; xx++)
                        draw_blend(&c, xx, yy, RGB_WHITE, SHADE_ALPHA);
        }
    }
    /* The strip: model frame i spans [i*hop_m, (i+1)*hop_m) samples. */
    const int top = HEADER + N_MELS * SPEC_H + 6;
    for (int i = 0; i < v->n_positions; i++) {
        const int x0 = PAD + (int)lround((double)i * v->hop / hop * SPEC_W),
                  x1 = PAD + (int)lround((double)(i + 1) * v->hop / hop * SPEC_W);
        draw_fill(&c, x0, top, x1 - 1, top + STRIP_H, is_masked(w, i) ? MASK_RED : RGB_LIGHT);
    }
    free(mel);
    int rc = canvas_save(&c, out, err);
    canvas_free(&c);
    return rc;
}

static void html_escaped(FILE *f, const char *s)
{
    for (; *s; s++)
        if (*s == '<')
            fputs("&lt;", f);
        else if (*s == '>')
            fputs("&gt;", f);
        else if (*s == '&')
            fputs("&amp;", f);
        else if (*s == '\n')
            fputs("&#9166;<br>", f);
        else
            fputc(*s, f);
}

static int mask_tokens(const Shown *w, const char *title, const char *out, int html, D2vError *err)
{
    const InputView *v = &w->view;
    if (!html) {
        /* Reverse video for masked tokens; '|' between tokens so pieces show. */
        printf("%s\n", title);
        for (int i = 0; i < v->n_positions; i++)
            printf("%s%s%s%s", i ? "|" : "", is_masked(w, i) ? "\033[7m" : "", v->tokens[i],
                   is_masked(w, i) ? "\033[0m" : "");
        printf("\n");
        return 0;
    }
    FILE *f = fopen(out, "w");
    if (!f)
        return d2v_fail(err, "cannot write %s: %s", out, strerror(errno));
    fprintf(f, "<!doctype html>\n<meta charset=\"utf-8\">\n<title>d2v show mask</title>\n"
               "<style>body{font-family:monospace;line-height:1.8}span{border:1px solid #ccc;white-space:pre}"
               "span.m{background:#d62728;color:#fff}</style>\n<p>");
    html_escaped(f, title);
    fprintf(f, "</p>\n<p>");
    for (int i = 0; i < v->n_positions; i++) {
        fprintf(f, "<span%s>", is_masked(w, i) ? " class=\"m\"" : "");
        html_escaped(f, v->tokens[i]);
        fprintf(f, "</span>");
    }
    fprintf(f, "</p>\n");
    if (fclose(f) != 0)
        return d2v_fail(err, "writing %s: %s", out, strerror(errno));
    return 0;
}

static int show_mask(const char *checkpoint, const char *config, const char *input, const char *out, uint64_t seed,
                     int html, D2vError *err)
{
    Shown w;
    int rc = prepare(&w, checkpoint, config, input, 1, seed, err);
    if (rc == 0 && w.view.kind == VIEW_TOKENS && html && !out)
        rc = d2v_fail(err, "--html needs --out FILE.html");
    if (rc == 0 && w.view.kind != VIEW_TOKENS && !out)
        rc = d2v_fail(err, "--out FILE.png is required for a %s input", w.setup.mod->name);
    if (rc == 0) {
        int masked = 0;
        for (int i = 0; i < w.view.n_positions; i++)
            masked += is_masked(&w, i);
        char title[256];
        const char *unit = w.view.kind == VIEW_IMAGE ? "patches" : w.view.kind == VIEW_SIGNAL ? "frames" : "tokens";
        snprintf(title, sizeof title, "%s mask, seed %llu: %d of %d %s masked (%.0f%%)", w.setup.mod->name,
                 (unsigned long long)seed, masked, w.view.n_positions, unit,
                 100.0 * masked / (w.view.n_positions ? w.view.n_positions : 1));
        rc = w.view.kind == VIEW_IMAGE    ? mask_image(&w, title, out, err)
             : w.view.kind == VIEW_SIGNAL ? mask_signal(&w, title, out, err)
                                          : mask_tokens(&w, title, out, html, err);
        if (rc == 0) {
            printf("mask ");
            for (int i = 0; i < w.view.n_positions; i++)
                putchar(is_masked(&w, i) ? '1' : '0');
            printf("\n");
            if (out)
                fprintf(stderr, "d2v show mask: %s; wrote %s\n", title, out);
        }
    }
    shown_free(&w);
    return rc;
}

/* ---- d2v show targets ------------------------------------------------------------- */

static int show_targets(const char *checkpoint, const char *input, const char *out, const char *npy, D2vError *err)
{
    Shown w;
    real *layers = NULL;
    int rc = prepare(&w, checkpoint, NULL, input, 0, 1, err);
    Canvas c = {0};
    if (rc == 0) {
        const Data2vec *m = &w.model.d2v;
        const int K = m->top_k, L = m->encoder.layers, N = w.fe.N, D = m->encoder.dim;
        const size_t ND = (size_t)N * D;
        layers = d2v_malloc((K + 1) * ND * sizeof(real), err);
        if (!layers) {
            rc = -1;
            goto out;
        }
        d2v_teacher_targets_layers(m, &w.model.ps, &w.model.acts, w.fe.x_teacher, w.fe.pad, 1, N, layers);
        memcpy(layers + K * ND, w.model.acts.target_sum, ND * sizeof(real));
        if (npy && npy_write_f32(npy, layers, (int64_t)(K + 1) * N, D, err) < 0) {
            rc = -1;
            goto out;
        }
        /* Panels of N rows x D columns, cells scaled to about 256 x 192. */
        const int cw = D >= 256 ? 1 : 256 / D, ch = N >= 192 ? 1 : (192 / N > 4 ? 4 : 192 / N);
        const int pw = D * cw, ph = N * ch;
        if (canvas_init(&c, PAD + (K + 1) * (pw + PAD), 2 * HEADER + ph + PAD, RGB_WHITE, err) < 0) {
            rc = -1;
            goto out;
        }
        char title[512];
        snprintf(title, sizeof title, "%s teacher targets: top %d of %d layers, each normed (%s), averaged%s; "
                 "positions down, channels across", w.setup.mod->name, K, L,
                 m->layer_norm == NORM_INSTANCE ? "instance" : m->layer_norm == NORM_LAYER ? "layer" : "none",
                 m->final_norm != NORM_NONE ? ", then normed" : "");
        draw_text(&c, PAD, 8, title, 2, RGB_BLACK);
        for (int k = 0; k <= K; k++) {
            char label[64];
            if (k < K)
                snprintf(label, sizeof label, "layer %d", L - K + 1 + k);
            else
                snprintf(label, sizeof label, "target y");
            const int x = PAD + k * (pw + PAD);
            draw_text(&c, x, HEADER + 6, label, 2, k < K ? RGB_BLACK : MASK_RED);
            float *panel = (float *)(layers + k * ND);
            draw_heatmap(&c, x, 2 * HEADER, panel, N, D, cw, ch, -3, 3, 1);
        }
        rc = canvas_save(&c, out, err);
        if (rc == 0)
            fprintf(stderr, "d2v show targets: %d positions x %d channels, %d layers + their average; wrote %s\n", N,
                    D, K, out);
    }
out:
    canvas_free(&c);
    free(layers);
    shown_free(&w);
    return rc;
}

/* ---- d2v show attention ------------------------------------------------------------ */

/* Geometry (for the tests): the image scaled to ATT_SIZE pixels (integer
 * factor), panels side by side: the image, then head 0, 1, ... */
#define ATT_SIZE 128
#define ATT_ALPHA 0.65

static int show_attention(const char *checkpoint, const char *input, const char *out, const char *npy, D2vError *err)
{
    Shown w;
    float *att = NULL;
    real *last_probs = NULL;
    Canvas c = {0};
    int rc = prepare(&w, checkpoint, NULL, input, 0, 1, err);
    if (rc == 0 && (w.view.kind != VIEW_IMAGE || w.fe.cls_position < 0))
        rc = d2v_fail(err, "%s is a %s model; attention from CLS over a patch grid needs an image model with a CLS "
                      "token", checkpoint, w.setup.mod->name);
    if (rc < 0)
        goto out;
    {
        const Transformer *t = &w.model.d2v.encoder;
        const int N = w.fe.N, H = t->heads, G = w.view.n_positions;
        /* The last block writes its attention probabilities where
         * BlockActs.probs points: the arena where a student keeps them for
         * its backward, or nowhere (NULL). A forward alone may point it
         * anywhere: here, at a buffer of our own. */
        BlockActs *last = &w.model.acts.student.blocks[t->layers - 1];
        last_probs = d2v_malloc((size_t)H * N * N * sizeof *last_probs, err);
        if (!last_probs) {
            rc = -1;
            goto out;
        }
        last->probs = last_probs;
        const ForwardMode eval = {.train = 0};
        transformer_forward(t, w.model.ps.value, &w.model.acts.student, w.fe.x_teacher, w.fe.pad, 1, N, eval);
        const real *probs = last->probs; /* (B,H,N,N) */
        att = d2v_malloc((size_t)H * G * sizeof *att, err);
        if (!att) {
            rc = -1;
            goto out;
        }
        for (int h = 0; h < H; h++)
            for (int g = 0; g < G; g++)
                att[(size_t)h * G + g] =
                    (float)probs[((size_t)h * N + w.fe.cls_position) * N + w.view.first_position + g];
        if (npy && npy_write_f32(npy, att, H, G, err) < 0) {
            rc = -1;
            goto out;
        }
        const InputView *v = &w.view;
        const int scale = v->width >= ATT_SIZE ? 1 : ATT_SIZE / v->width, S = v->width * scale;
        if (canvas_init(&c, PAD + (H + 1) * (S + PAD), 2 * HEADER + S + PAD, RGB_WHITE, err) < 0) {
            rc = -1;
            goto out;
        }
        char title[512];
        snprintf(title, sizeof title, "last layer (%d) attention from CLS, per head, scaled to each head's max",
                 t->layers);
        draw_text(&c, PAD, 8, title, 2, RGB_BLACK);
        draw_text(&c, PAD, HEADER + 6, "input", 2, RGB_BLACK);
        for (int h = 0; h < H; h++) {
            char label[32];
            snprintf(label, sizeof label, "head %d", h);
            draw_text(&c, PAD + (h + 1) * (S + PAD), HEADER + 6, label, 2, RGB_BLACK);
        }
        for (int h = -1; h < H; h++) {
            float max = 0;
            for (int g = 0; h >= 0 && g < G; g++)
                max = fmaxf(max, att[(size_t)h * G + g]);
            const int x0 = PAD + (h + 1) * (S + PAD), y0 = 2 * HEADER;
            for (int y = 0; y < S; y++)
                for (int x = 0; x < S; x++) {
                    const int iy = y / scale, ix = x / scale;
                    const uint8_t *p = v->rgb + ((size_t)iy * v->width + ix) * 3;
                    draw_pixel(&c, x0 + x, y0 + y, (Rgb){p[0], p[1], p[2]});
                    if (h < 0)
                        continue;
                    const int g = (iy / v->patch) * v->grid_w + ix / v->patch;
                    const double a = max > 0 ? att[(size_t)h * G + g] / max : 0;
                    draw_blend(&c, x0 + x, y0 + y, colormap_sequential(a), ATT_ALPHA);
                }
        }
        rc = canvas_save(&c, out, err);
        if (rc == 0)
            fprintf(stderr, "d2v show attention: %d heads over a %d x %d patch grid; wrote %s\n", H, v->grid_h,
                    v->grid_w, out);
    }
out:
    canvas_free(&c);
    free(att);
    free(last_probs);
    shown_free(&w);
    return rc;
}

int cmd_show(int argc, char **argv)
{
    if (argc < 1 || wants_help(argc, argv)) {
        usage(argc < 1 ? stderr : stdout);
        return argc < 1 ? 2 : 0;
    }
    const char *what = argv[0];
    if (strcmp(what, "mask") != 0 && strcmp(what, "targets") != 0 && strcmp(what, "attention") != 0) {
        fprintf(stderr, "d2v show: unknown picture '%s' (expected mask, targets or attention)\n", what);
        return 2;
    }
    Option o[] = {{"--config", 1, NULL}, {"--checkpoint", 1, NULL}, {"--input", 1, NULL}, {"--out", 1, NULL},
                  {"--seed", 1, "1"},    {"--html", 0, NULL},       {"--npy", 1, NULL}};
    const int n = sizeof o / sizeof *o;
    if (parse_options("show", argc - 1, argv + 1, o, n) < 0)
        return 2;
    const char *config = option(o, n, "--config"), *checkpoint = option(o, n, "--checkpoint");
    const char *input = option(o, n, "--input"), *out = option(o, n, "--out"), *npy = option(o, n, "--npy");
    const int mask = strcmp(what, "mask") == 0;
    if (!input || (!mask && (!checkpoint || config || !out)) || (mask && !!config == !!checkpoint)) {
        fprintf(stderr, "d2v show %s: %s\n", what,
                mask ? "give --input and exactly one of --config and --checkpoint"
                     : "give --checkpoint, --input and --out");
        usage(stderr);
        return 2;
    }
    char *end;
    const unsigned long long seed = strtoull(option(o, n, "--seed"), &end, 10);
    if (*end) {
        fprintf(stderr, "d2v show: --seed %s: expected a non-negative integer\n", option(o, n, "--seed"));
        return 2;
    }
    D2vError err;
    int rc = mask ? show_mask(checkpoint, config, input, out, seed, option(o, n, "--html") != NULL, &err)
             : strcmp(what, "targets") == 0 ? show_targets(checkpoint, input, out, npy, &err)
                                            : show_attention(checkpoint, input, out, npy, &err);
    return rc < 0 ? fail("show", &err) : 0;
}
