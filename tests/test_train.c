/* test_train.c — the training loop's reliability paths, in process: a
 * non-finite gradient or loss stops the run with a message naming the step,
 * the tensor and the last good checkpoint (train.on_nonfinite=stop), or the
 * update is skipped, leaves every buffer untouched and is counted in
 * log.jsonl (skip); many in a row stop even in skip mode; a stop request
 * finishes the step, saves and returns 1; stale temporary files are removed
 * and keep_last counts checkpoints an earlier process wrote; a second
 * process is kept out of a run directory in use.
 *
 * Faults are injected by a test modality that wraps the image modality:
 * its backward writes a NaN into one front-end gradient at a chosen step,
 * its forward a NaN into the student's input. No hook in the library. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp, lstat */
#endif

#include "check.h"
#include "checkpoint.h"
#include "registry.h"
#include "safetensors.h"
#include "tempdir.h"
#include "train.h"

#include <fcntl.h>
#include <jpeglib.h>
#include <math.h>
#include <signal.h>
#include <sys/file.h>

/* ---- the faulty modality ------------------------------------------------------ */

static Modality faulty;
static const ParamStore *bound_store;
static int64_t nan_grad_at = -1, nan_input_at = -1; /* 1-based update numbers */
static int nan_grad_every_step;
static const char *nan_grad_tensor = "frontend.mask_emb";

static void faulty_bind(void *fe, const ParamStore *ps)
{
    bound_store = ps;
    image_modality.bind(fe, ps);
}

static void faulty_forward(void *fe, const real *w, const Batch *batch, Rng *mask_rng, ForwardMode mode,
                           FrontendOut *out)
{
    image_modality.forward(fe, w, batch, mask_rng, mode, out);
    if (mode.train && (int64_t)mode.step + 1 == nan_input_at)
        ((real *)out->x_student)[0] = NAN; /* the front-end's own buffer */
}

static void faulty_backward(void *fe, const real *w, real *g, const real *d_x, ForwardMode mode)
{
    image_modality.backward(fe, w, g, d_x, mode);
    if (nan_grad_every_step || (int64_t)mode.step + 1 == nan_grad_at) {
        int i = params_find(bound_store, nan_grad_tensor);
        g[bound_store->params[i].offset + 1] = INFINITY;
    }
}

/* ---- a tiny image dataset and config ---------------------------------------------- */

static int write_rgb_jpeg(const char *path, int size, unsigned seed)
{
    uint8_t *pixels = malloc((size_t)size * size * 3);
    for (int i = 0; i < size * size * 3; i++) {
        seed = seed * 1103515245u + 12345u;
        pixels[i] = (uint8_t)(seed >> 16);
    }
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        free(pixels);
        return -1;
    }
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr jerr;
    c.err = jpeg_std_error(&jerr);
    jpeg_create_compress(&c);
    jpeg_stdio_dest(&c, fp);
    c.image_width = c.image_height = (JDIMENSION)size;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = pixels + (size_t)c.next_scanline * size * 3;
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    free(pixels);
    return fclose(fp) == 0 ? 0 : -1;
}

static const char *base_config =
    "[model]\nmodality = image\ndim = 32\nlayers = 2\nheads = 2\nffn_dim = 64\nlayout = pre_ln\n"
    "[target]\ntop_k = 2\n"
    "[frontend]\nimage_size = 16\npatch_size = 4\n"
    "[mask]\nmin_patches = 2\n"
    "[optim]\nlr = 0.001\nschedule = cosine\nwarmup_ratio = 0.2\n"
    "[train]\nbatch_size = 4\nthreads = 1\nlog_every = 1\nsave_every = 2\nkeep_last = 100\n"
    "var_check_after = 100000\n";

typedef struct {
    D2vConfig cfg;
    void *mcfg;
    char *text;
} TestSetup;

/* The base config plus "section.key=value" overrides, as cli/ would build it. */
static int test_setup(TestSetup *s, const char *const *sets, int n_sets)
{
    memset(s, 0, sizeof *s);
    s->mcfg = calloc(1, faulty.config_size);
    ConfigTable tables[2] = {d2v_config_table(&s->cfg), {faulty.keys, faulty.n_keys, s->mcfg}};
    D2vError err;
    if (config_defaults(tables, 2, &err) < 0 || config_load_string(tables, 2, base_config, "test config", &err) < 0) {
        fprintf(stderr, "config: %s\n", err.msg);
        return -1;
    }
    for (int i = 0; i < n_sets; i++)
        if (config_set(tables, 2, sets[i], &err) < 0) {
            fprintf(stderr, "config: %s\n", err.msg);
            return -1;
        }
    s->text = config_dump(tables, 2);
    return 0;
}

static void test_setup_free(TestSetup *s)
{
    free(s->mcfg);
    free(s->text);
}

static char data_dir[300];
static char notices[8192];

static void record_notice(void *ctx, const char *msg)
{
    (void)ctx;
    size_t used = strlen(notices);
    snprintf(notices + used, sizeof notices - used, "%s\n", msg);
}

/* Trains in RUNDIR = tmp_dir/name with the overrides; returns train_run's
 * result and its message in err. */
static int train(const char *name, int resume, const char *const *sets, int n_sets, volatile sig_atomic_t *stop,
                 D2vError *err)
{
    TestSetup s;
    if (test_setup(&s, sets, n_sets) < 0)
        return d2v_fail(err, "bad test config");
    char run[400];
    path_in_dir(run, sizeof run, name);
    notices[0] = 0;
    TrainOptions opt = {.cfg = &s.cfg, .config_text = s.text, .mod = &faulty, .mcfg = s.mcfg,
                        .data_path = data_dir, .run_dir = run, .resume = resume, .stop_requested = stop,
                        .notice = record_notice};
    int rc = train_run(&opt, err);
    if (getenv("TEST_TRAIN_VERBOSE"))
        fprintf(stderr, "[%s rc=%d] %s\n%s", name, rc, rc < 0 ? err->msg : "", notices);
    test_setup_free(&s);
    return rc;
}

static int contains(const char *haystack, const char *needle)
{
    return strstr(haystack, needle) != NULL;
}

static int exists(const char *name)
{
    char path[700];
    path_in_dir(path, sizeof path, name);
    struct stat st;
    return lstat(path, &st) == 0;
}

/* The whole log.jsonl of a run as one string (caller frees). */
static char *read_log(const char *run)
{
    char path[700], name[400];
    snprintf(name, sizeof name, "%s/log.jsonl", run);
    path_in_dir(path, sizeof path, name);
    size_t len = 0;
    uint8_t *bytes = read_whole(path, &len);
    if (!bytes)
        return calloc(1, 1);
    char *text = realloc(bytes, len + 1);
    text[len] = 0;
    return text;
}

/* ---- the tests ---------------------------------------------------------------- */

static void test_nonfinite_gradient_stops(void)
{
    nan_grad_at = 3;
    D2vError err = {""};
    const char *sets[] = {"train.steps=6"};
    int rc = train("grad_stop", 0, sets, 1, NULL, &err);
    nan_grad_at = -1;
    CHECK(rc == -1, "a non-finite gradient must stop the run (rc %d)", rc);
    CHECK(contains(err.msg, "step 3:"), "the message names the step: %s", err.msg);
    CHECK(contains(err.msg, "frontend.mask_emb"), "the message names the tensor: %s", err.msg);
    CHECK(contains(err.msg, "first of 1 tensors"), "only one tensor is non-finite: %s", err.msg);
    CHECK(contains(err.msg, "grad_stop/checkpoint-00000002.safetensors (step 2)"),
          "the message names the last good checkpoint: %s", err.msg);
    CHECK(contains(err.msg, "train.on_nonfinite=skip"), "the message mentions the skip option: %s", err.msg);
    CHECK(!exists("grad_stop/checkpoint-00000003.safetensors"), "nothing is saved after a non-finite update");
}

static void test_nonfinite_loss_stops(void)
{
    nan_input_at = 2;
    D2vError err = {""};
    const char *sets[] = {"train.steps=4"};
    int rc = train("loss_stop", 0, sets, 1, NULL, &err);
    nan_input_at = -1;
    CHECK(rc == -1, "a non-finite loss must stop the run (rc %d)", rc);
    CHECK(contains(err.msg, "step 2: the loss is nan"), "the message names the loss: %s", err.msg);
    CHECK(contains(err.msg, "none yet"), "no checkpoint was written before step 2: %s", err.msg);
}

/* Compares one tensor role (student, teacher, moments) of two checkpoints. */
static int same_tensors(const char *a_name, const char *b_name, int *n_compared)
{
    char a_path[700], b_path[700];
    path_in_dir(a_path, sizeof a_path, a_name);
    path_in_dir(b_path, sizeof b_path, b_name);
    StFile a, b;
    D2vError err;
    if (st_read(a_path, &a, &err) < 0 || st_read(b_path, &b, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return 0;
    }
    int same = a.data_len == b.data_len && memcmp(a.data, b.data, a.data_len) == 0;
    *n_compared = a.n_tensors;
    st_free(&a);
    st_free(&b);
    return same;
}

static void test_nonfinite_skip(void)
{
    nan_grad_at = 3;
    D2vError err = {""};
    const char *sets[] = {"train.steps=5", "train.on_nonfinite=skip", "train.save_every=1"};
    int rc = train("skip", 0, sets, 3, NULL, &err);
    nan_grad_at = -1;
    CHECK(rc == 0, "skip mode finishes the run: %s", err.msg);
    CHECK(contains(notices, "step 3: the gradient of frontend.mask_emb is non-finite"),
          "the skipped update is reported: %s", notices);
    /* The skipped update changed nothing: student, teacher and AdamW
     * moments after step 3 are those after step 2. */
    int n = 0;
    CHECK(same_tensors("skip/checkpoint-00000002.safetensors", "skip/checkpoint-00000003.safetensors", &n) && n > 0,
          "a skipped update must leave every tensor as it was");
    CHECK(!same_tensors("skip/checkpoint-00000003.safetensors", "skip/checkpoint-00000004.safetensors", &n),
          "the next update is applied again");
    char *log = read_log("skip");
    CHECK(contains(log, "\"step\":3,") && contains(log, "\"nonfinite_skipped\":1,"),
          "log.jsonl counts the skipped update: %s", log);
    CHECK(contains(log, "\"step\":2,") && contains(log, "\"nonfinite_skipped\":0,"), "earlier lines count 0");
    free(log);

    /* A non-finite loss is logged as null (JSON has no NaN). */
    nan_input_at = 2;
    const char *sets2[] = {"train.steps=3", "train.on_nonfinite=skip"};
    rc = train("skip_loss", 0, sets2, 2, NULL, &err);
    nan_input_at = -1;
    CHECK(rc == 0, "skip mode survives a NaN loss: %s", err.msg);
    log = read_log("skip_loss");
    CHECK(contains(log, "{\"step\":2,\"loss\":null,"), "a NaN loss is written as null: %s", log);
    free(log);
}

static void test_nonfinite_skip_gives_up(void)
{
    nan_grad_every_step = 1;
    D2vError err = {""};
    const char *sets[] = {"train.steps=40", "train.on_nonfinite=skip"};
    int rc = train("skip_all", 0, sets, 2, NULL, &err);
    nan_grad_every_step = 0;
    CHECK(rc == -1, "skipping every update must stop eventually");
    CHECK(contains(err.msg, "step 20:") && contains(err.msg, "20 non-finite updates in a row, so stopping"),
          "the message says why skip mode stopped: %s", err.msg);
}

static void test_stop_request(void)
{
    /* A stop requested before the first step: one step, a checkpoint, 1. */
    volatile sig_atomic_t stop = SIGTERM;
    D2vError err = {""};
    const char *sets[] = {"train.steps=10", "train.save_every=0"};
    int rc = train("stop", 0, sets, 2, &stop, &err);
    CHECK(rc == 1, "a stop request returns 1 (got %d: %s)", rc, err.msg);
    CHECK(exists("stop/checkpoint-00000001.safetensors") && exists("stop/last.safetensors"),
          "the stop saves a checkpoint");
    /* Resuming with no stop finishes the run and returns 0. */
    stop = 0;
    rc = train("stop", 1, sets, 2, &stop, &err);
    CHECK(rc == 0, "the resumed run finishes (rc %d: %s)", rc, err.msg);
    CHECK(exists("stop/checkpoint-00000010.safetensors"), "the end is saved");
    /* A stop requested during the last step is simply the end of the run. */
    stop = SIGINT;
    const char *sets2[] = {"train.steps=1"};
    rc = train("stop_last", 0, sets2, 1, &stop, &err);
    CHECK(rc == 0, "a stop at the final step is a finished run (rc %d)", rc);
}

static void test_run_dir_hygiene(void)
{
    D2vError err = {""};
    const char *sets[] = {"train.steps=2", "train.save_every=1", "train.keep_last=2"};
    CHECK(train("hygiene", 0, sets, 3, NULL, &err) == 0, "first run: %s", err.msg);
    /* What a SIGKILL during writes leaves: temporary files, and a torn log line. */
    char path[700];
    path_in_dir(path, sizeof path, "hygiene/checkpoint-00000003.safetensors.tmp.99999");
    write_file(path, "partial", 7);
    path_in_dir(path, sizeof path, "hygiene/last.safetensors.tmp.99998");
    CHECK(symlink("checkpoint-00000003.safetensors", path) == 0, "symlink");
    path_in_dir(path, sizeof path, "hygiene/checkpoint-00000001.safetensors.tmp");
    write_file(path, "not ours: no pid", 16);
    path_in_dir(path, sizeof path, "hygiene/notes.tmp.1");
    write_file(path, "a user's file", 13);
    path_in_dir(path, sizeof path, "hygiene/log.jsonl");
    FILE *f = fopen(path, "a");
    fputs("{\"step\":3,\"lo", f);
    fclose(f);

    const char *more[] = {"train.steps=5", "train.save_every=1", "train.keep_last=2"};
    CHECK(train("hygiene", 1, more, 3, NULL, &err) == 0, "resume: %s", err.msg);
    CHECK(!exists("hygiene/checkpoint-00000003.safetensors.tmp.99999") &&
          !exists("hygiene/last.safetensors.tmp.99998"), "temporary files of a killed writer are removed");
    CHECK(exists("hygiene/checkpoint-00000001.safetensors.tmp") && exists("hygiene/notes.tmp.1"),
          "only our own NAME.tmp.<digits> files are removed");
    CHECK(contains(notices, "removed 2 temporary files"), "the removal is reported: %s", notices);
    /* keep_last counts the first process's checkpoints too. */
    CHECK(!exists("hygiene/checkpoint-00000001.safetensors") && !exists("hygiene/checkpoint-00000002.safetensors") &&
          !exists("hygiene/checkpoint-00000003.safetensors") && exists("hygiene/checkpoint-00000004.safetensors") &&
          exists("hygiene/checkpoint-00000005.safetensors"), "keep_last = 2 across processes");
    char *log = read_log("hygiene");
    CHECK(!contains(log, "\"lo{") && !contains(log, "\"lo\n"), "the torn log line is cut: %s", log);
    int lines = 0;
    for (const char *c = log; *c; c++)
        lines += *c == '\n';
    CHECK(lines == 5, "steps 1-2, then 3-5 after the resume: %d lines", lines);
    free(log);
}

static void test_lock(void)
{
    D2vError err = {""};
    const char *sets[] = {"train.steps=1"};
    CHECK(train("locked", 0, sets, 1, NULL, &err) == 0, "first run: %s", err.msg);
    /* Hold the lock as another process would; flock locks belong to the
     * open file description, so a second open in this process conflicts. */
    char path[700];
    path_in_dir(path, sizeof path, "locked/pretrain.lock");
    int fd = open(path, O_RDWR);
    CHECK(fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) == 0, "take the lock");
    const char *more[] = {"train.steps=2"};
    int rc = train("locked", 1, more, 1, NULL, &err);
    CHECK(rc == -1 && contains(err.msg, "in use by another d2v pretrain"), "a locked run directory is refused: %s",
          err.msg);
    close(fd);
    CHECK(train("locked", 1, more, 1, NULL, &err) == 0, "after the other process is gone it resumes: %s", err.msg);
}

/* --resume from a run directory someone damaged: each refusal names what
 * is wrong, and nothing is trained or overwritten. */
static void test_bad_resume(void)
{
    D2vError err = {""};
    const char *sets[] = {"train.steps=2", "train.save_every=1"};
    CHECK(train("damaged", 0, sets, 2, NULL, &err) == 0, "first run: %s", err.msg);
    const char *more[] = {"train.steps=4", "train.save_every=1"};

    /* A truncated checkpoint (copied by hand, a broken disk). */
    char path[700];
    path_in_dir(path, sizeof path, "damaged/checkpoint-00000002.safetensors");
    CHECK(truncate(path, 4000) == 0, "truncate");
    int rc = train("damaged", 1, more, 2, NULL, &err);
    CHECK(rc == -1 && contains(err.msg, "checkpoint-00000002.safetensors") && contains(err.msg, "past the end"),
          "a truncated checkpoint is refused, naming it: %s", err.msg);

    /* last.safetensors pointing at a file that is gone. */
    unlink(path);
    rc = train("damaged", 1, more, 2, NULL, &err);
    CHECK(rc == -1 && contains(err.msg, "points to checkpoint-00000002.safetensors, which does not exist"),
          "a dangling last is explained: %s", err.msg);
    /* ... and starting afresh there is refused too (it is still a run). */
    rc = train("damaged", 0, more, 2, NULL, &err);
    CHECK(rc == -1 && contains(err.msg, "which does not exist"), "fresh start over a dangling last: %s", err.msg);

    /* A checkpoint of another model (dim 48 instead of 32). */
    char link[700];
    path_in_dir(link, sizeof link, "damaged/last.safetensors");
    unlink(link);
    CHECK(symlink("checkpoint-00000001.safetensors", link) == 0, "symlink");
    const char *other[] = {"train.steps=4", "model.dim=48", "model.ffn_dim=96"};
    rc = train("damaged", 1, other, 3, NULL, &err);
    CHECK(rc == -1 && contains(err.msg, "checkpoint-00000001.safetensors") && contains(err.msg, "the model expects"),
          "another model's checkpoint is refused: %s", err.msg);
    CHECK(exists("damaged/checkpoint-00000001.safetensors") && !exists("damaged/checkpoint-00000002.safetensors"),
          "nothing was written by the refused runs");
}

/* The collapse guard (DESIGN §3.7): a variance below its floor stops the
 * run, naming the variance, the step and what usually helps. A floor no
 * real run reaches makes it fire at once. */
static void test_collapse_guard(void)
{
    D2vError err = {""};
    const char *sets[] = {"train.steps=5", "train.var_check_after=2", "train.min_pred_var=1000"};
    int rc = train("collapse", 0, sets, 3, NULL, &err);
    CHECK(rc == -1 && contains(err.msg, "step 2: representation collapse: pred_var") &&
              contains(err.msg, "below its floor 1000") && contains(err.msg, "last checkpoint: none yet") &&
              contains(err.msg, "ema.anneal_steps"), "collapse: %s", err.msg);
}

/* A front-end's backward follows the rows its forward was given, not the
 * rows the model was laid out for: d2v pretrain lays out room for
 * eval.batch rows when that exceeds train.batch_size (the periodic k-NN
 * embeds in the training model), and a training step must not change.
 * (The image front-end once summed gradients over every laid-out row,
 * reading stale activations.) Extra rows are filled with garbage first. */
static void test_layout_larger_than_batch(void)
{
    static const struct {
        const char *name, *config;
    } cases[] = {
        {"image", "[model]\nmodality = image\ndim = 32\nlayers = 2\nheads = 2\nffn_dim = 64\n[target]\ntop_k = 2\n"
                  "[frontend]\nimage_size = 16\npatch_size = 4\n[mask]\nmin_patches = 2\n[train]\nthreads = 1\n"},
        {"speech", "[model]\nmodality = speech\ndim = 32\nlayers = 2\nheads = 2\nffn_dim = 64\n[target]\ntop_k = 2\n"
                   "[frontend]\nconv_spec = 16x10x5,16x3x2\npos_conv_kernel = 4\npos_conv_groups = 4\n"
                   "pos_conv_depth = 1\n[mask]\nspan = 2\nmin_masks = 1\n[train]\nthreads = 1\n"
                   "[data]\nmax_samples = 1600\nmin_samples = 800\n"},
        {"text", "[model]\nmodality = text\ndim = 32\nlayers = 2\nheads = 2\nffn_dim = 64\n[target]\ntop_k = 2\n"
                 "[train]\nthreads = 1\n[data]\ntokenizer = /nonexistent/tokenizer\nvocab_size = 64\nseq_len = 16\n"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const Modality *mod = modality_find(cases[c].name);
        D2vConfig cfg;
        void *mcfg = calloc(1, mod->config_size);
        ConfigTable tables[2] = {d2v_config_table(&cfg), {mod->keys, mod->n_keys, mcfg}};
        D2vError err = {{0}};
        Model fit, roomy;
        memset(&fit, 0, sizeof fit);
        memset(&roomy, 0, sizeof roomy);
        int ok = config_defaults(tables, 2, &err) == 0 &&
                 config_load_string(tables, 2, cases[c].config, cases[c].name, &err) == 0 &&
                 d2v_config_validate(&cfg, &err) == 0 && model_build(&fit, &cfg, mod, mcfg, 2, 1, &err) == 0 &&
                 model_build(&roomy, &cfg, mod, mcfg, 7, 1, &err) == 0;
        CHECK(ok, "%s: setup: %s", cases[c].name, err.msg);
        if (!ok) {
            model_free(&fit);
            model_free(&roomy);
            free(mcfg);
            continue;
        }
        memset(roomy.arena.base, 0x3f, roomy.arena.capacity); /* stale activations: 0.75 everywhere */
        Batch batch;
        Rng rng;
        rng_init(&rng, 7, 0);
        CHECK(mod->batch_alloc(mcfg, 2, &batch, &err) == 0, "%s: batch: %s", cases[c].name, err.msg);
        mod->synthetic_batch(fit.frontend, mcfg, 2, &rng, &batch);
        StepResult a, b;
        train_forward_backward(&fit, &cfg, &batch, 0, &a, NULL);
        train_forward_backward(&roomy, &cfg, &batch, 0, &b, NULL);
        size_t differ = 0;
        for (size_t i = 0; i < fit.ps.numel; i++)
            differ += memcmp(&fit.ps.grad[i], &roomy.ps.grad[i], sizeof(real)) != 0;
        CHECK(a.loss == b.loss && a.n_loss == b.n_loss && differ == 0,
              "%s: a batch of 2 in a model laid out for 7 rows: loss %.9g vs %.9g, %zu of %zu gradients differ",
              cases[c].name, b.loss, a.loss, differ, fit.ps.numel);
        mod->batch_free(&batch);
        model_free(&fit);
        model_free(&roomy);
        free(mcfg);
    }
}

int main(void)
{
    if (tmp_dir_create("train") < 0)
        return 1;
    faulty = image_modality;
    faulty.bind = faulty_bind;
    faulty.forward = faulty_forward;
    faulty.backward = faulty_backward;
    snprintf(data_dir, sizeof data_dir, "%s/data", tmp_dir);
    mkdir(data_dir, 0755);
    for (int i = 0; i < 12; i++) {
        char path[400];
        snprintf(path, sizeof path, "%s/%02d.jpg", data_dir, i);
        if (write_rgb_jpeg(path, 20, (unsigned)i + 1) < 0) {
            fprintf(stderr, "cannot write %s\n", path);
            return 1;
        }
    }
    test_nonfinite_gradient_stops();
    test_nonfinite_loss_stops();
    test_nonfinite_skip();
    test_nonfinite_skip_gives_up();
    test_stop_request();
    test_run_dir_hygiene();
    test_lock();
    test_bad_resume();
    test_collapse_guard();
    test_layout_larger_than_batch();
    remove_tree(tmp_dir);
    return check_summary();
}
