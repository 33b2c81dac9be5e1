/* test_config.c — the INI config layer: defaults, files, --set, dump round
 * trip, every error message, a modality's table merged with core's, and the
 * cross-key checks. Prints each failure and ends with "N passed, M failed". */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* mkstemp, unlink */
#endif

#include "config.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int n_passed, n_failed;

static void check(int ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void check(int ok, int line, const char *fmt, ...)
{
    if (ok) {
        n_passed++;
        return;
    }
    n_failed++;
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "FAIL (test_config.c:%d): ", line);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

#define CHECK(cond) check((cond), __LINE__, "%s", #cond)

/* rc must be -1 and the message must contain every needle. */
static void check_error(int line, int rc, const D2vError *err, const char *const *needles)
{
    check(rc == -1, line, "expected failure, got rc=%d", rc);
    for (; *needles; needles++)
        check(strstr(err->msg, *needles) != NULL, line, "message \"%s\" lacks \"%s\"", err->msg,
              *needles);
    check(strchr(err->msg, '\n') == NULL, line, "message \"%s\" is not one line", err->msg);
}

#define CHECK_ERROR(rc, err, ...) \
    check_error(__LINE__, (rc), (err), (const char *const[]){__VA_ARGS__, NULL})

/* ---- a stand-in for a modality plug-in's table ------------------------------ */

typedef struct {
    int64_t patch_size;
    double mask_prob;
    int use_cls;
    char tokenizer[CONFIG_STR_LEN];
    char mask_kind[CONFIG_STR_LEN];
    int64_t max_items;
} FakeModality;

#define FAKE(field) offsetof(FakeModality, field)
static const ConfigKey fake_keys[] = {
    {"frontend", "patch_size", CK_INT, FAKE(patch_size), "16", 1, 1024, NULL, "patch side"},
    {"frontend", "use_cls", CK_BOOL, FAKE(use_cls), "true", 0, 0, NULL, "prepend a CLS token"},
    {"mask", "prob", CK_FLOAT, FAKE(mask_prob), "0.6", 0, 1, NULL, "fraction masked"},
    {"mask", "kind", CK_CHOICE, FAKE(mask_kind), "block", 0, 0, "block|random", "pattern"},
    /* [data] also has core keys: the section must still be dumped once. */
    {"data", "tokenizer", CK_STRING, FAKE(tokenizer), "", 0, 0, NULL, "tokenizer directory"},
    {"data", "max_items", CK_INT, FAKE(max_items), "0", 0, 1e9, NULL, "0 = all"},
};

static ConfigTable bind_fake(FakeModality *fm)
{
    ConfigTable t = {fake_keys, (int)(sizeof fake_keys / sizeof fake_keys[0]), fm};
    return t;
}

/* ---- helpers ------------------------------------------------------------------ */

/* Writes text to a fresh temporary file named in path (the caller unlinks). */
static void write_temp(const char *text, char path[64])
{
    strcpy(path, "/tmp/d2v_test_config_XXXXXX");
    int fd = mkstemp(path);
    FILE *f = fd < 0 ? NULL : fdopen(fd, "w");
    if (!f) {
        perror("temporary config file");
        exit(2);
    }
    fputs(text, f);
    fclose(f);
}

/* Loads text from a real file, since file errors must name file and line. */
static int load_tables(const ConfigTable *tables, int n_tables, const char *text, D2vError *err)
{
    char path[64];
    write_temp(text, path);
    int rc = config_load_file(tables, n_tables, path, err);
    unlink(path);
    return rc;
}

/* Core + fake tables over fresh structs, defaults applied. */
typedef struct {
    D2vConfig cfg;
    FakeModality fm;
    ConfigTable tables[2];
} Setup;

static void setup_init(Setup *s)
{
    memset(s, 0, sizeof *s);
    s->tables[0] = d2v_config_table(&s->cfg);
    s->tables[1] = bind_fake(&s->fm);
    D2vError err = {{0}};
    if (config_defaults(s->tables, 2, &err)) {
        fprintf(stderr, "config_defaults failed: %s\n", err.msg);
        exit(2);
    }
}

static int load(Setup *s, const char *text, D2vError *err)
{
    return load_tables(s->tables, 2, text, err);
}

/* Every key of every table holds the same value in a and b (doubles bit for
 * bit). */
static int tables_equal(const ConfigTable *a, const ConfigTable *b, int n_tables)
{
    for (int t = 0; t < n_tables; t++) {
        for (int i = 0; i < a[t].n_keys; i++) {
            const ConfigKey *k = &a[t].keys[i];
            const char *fa = (const char *)a[t].base + k->offset;
            const char *fb = (const char *)b[t].base + k->offset;
            size_t size = k->type == CK_INT ? sizeof(int64_t)
                        : k->type == CK_FLOAT ? sizeof(double)
                        : k->type == CK_BOOL  ? sizeof(int)
                                              : 0;
            int same = size ? memcmp(fa, fb, size) == 0 : strcmp(fa, fb) == 0;
            if (!same) {
                fprintf(stderr, "  differs: %s.%s\n", k->section, k->key);
                return 0;
            }
        }
    }
    return 1;
}

static int count_occurrences(const char *text, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(text, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_defaults(void)
{
    Setup s;
    setup_init(&s);
    CHECK(s.cfg.model.modality[0] == '\0');
    CHECK(s.cfg.model.dim == 768 && s.cfg.model.layers == 12 && s.cfg.model.heads == 12);
    CHECK(s.cfg.model.ffn_dim == 3072);
    CHECK(strcmp(s.cfg.model.layout, "post_ln") == 0);
    CHECK(s.cfg.model.dropout == 0.1);
    CHECK(s.cfg.target.top_k == 8);
    CHECK(strcmp(s.cfg.target.layer_norm, "instance") == 0);
    CHECK(strcmp(s.cfg.target.final_norm, "none") == 0);
    CHECK(s.cfg.loss.beta == 0);
    CHECK(s.cfg.optim.lr == 5e-4 && s.cfg.optim.beta2 == 0.98 && s.cfg.optim.eps == 1e-6);
    CHECK(strcmp(s.cfg.optim.schedule, "tri_stage") == 0);
    CHECK(s.cfg.ema.decay == 0.999 && s.cfg.ema.end_decay == 0.9999);
    CHECK(s.cfg.ema.anneal_steps == 30000);
    CHECK(s.cfg.train.keep_last == 3 && s.cfg.train.threads == 0);
    CHECK(s.cfg.train.min_target_var == 0.01 && s.cfg.train.min_frontend_var == 0);
    CHECK(s.cfg.train.var_check_after == 1000);
    CHECK(strcmp(s.cfg.data.on_error, "skip") == 0);
    CHECK(s.fm.patch_size == 16 && s.fm.use_cls == 1 && s.fm.mask_prob == 0.6);
    CHECK(strcmp(s.fm.mask_kind, "block") == 0);

    /* Defaults are valid except that modality has none. */
    D2vError err = {{0}};
    CHECK_ERROR(d2v_config_validate(&s.cfg, &err), &err, "model.modality", "image|speech|text");
    strcpy(s.cfg.model.modality, "speech");
    CHECK(d2v_config_validate(&s.cfg, &err) == 0);

    /* Every core key has help text. */
    ConfigTable core = d2v_config_table(&s.cfg);
    for (int i = 0; i < core.n_keys; i++)
        check(core.keys[i].help && core.keys[i].help[0], __LINE__, "%s.%s has no help",
              core.keys[i].section, core.keys[i].key);
}

static void test_full_file(void)
{
    Setup s;
    setup_init(&s);
    D2vError err = {{0}};
    const char *text =
        "\xEF\xBB\xBF; a tiny image config, saved with a byte-order mark\n"
        "# both comment styles\n"
        "[model]\n"
        "modality = image\n"
        "dim = 192        ; inline ';' comment\n"
        "layers = 4       # inline '#' comment\n"
        "  heads = 3\n" /* indented: a key, not a continuation */
        "ffn_dim = 768\n"
        "layout = pre_ln\n"
        "dropout = 0\n"
        "layer_norm_eps = 1e-6\r\n" /* CRLF */
        "\n"
        "[ target ]   \n"
        "top_k = 3\n"
        "layer_norm = layer\n"
        "final_norm = layer\n"
        "layer_output = block\n"
        "[loss]\n"
        "beta = 2\n"
        "[optim]\n"
        "lr = 1.5e-3\n"
        "beta2 = 0.999\n"
        "weight_decay = 0.05\n"
        "clip_norm = 3.0\n"
        "schedule = cosine\n"
        "warmup_steps = 100\n"
        "[ema]\n"
        "end_decay = 0.9998\n"
        "[train]\n"
        "steps = 2000\n"
        "batch_size = 32\n"
        "seed = -0\n"
        "threads = 2\n"
        "[data]\n"
        "on_error = fail\n"
        "tokenizer = vocab;v2/dir\n" /* ';' not after a blank is data */
        "[frontend]\n"
        "patch_size = 8\n"
        "use_cls = No\n"
        "[mask]\n"
        "prob : 0.5\n" /* inih also accepts ':' */
        "kind = random\n";
    int rc = load(&s, text, &err);
    check(rc == 0, __LINE__, "full file failed: %s", err.msg);
    CHECK(strcmp(s.cfg.model.modality, "image") == 0);
    CHECK(s.cfg.model.dim == 192 && s.cfg.model.layers == 4 && s.cfg.model.heads == 3);
    CHECK(strcmp(s.cfg.model.layout, "pre_ln") == 0);
    CHECK(s.cfg.model.dropout == 0 && s.cfg.model.layer_norm_eps == 1e-6);
    CHECK(s.cfg.target.top_k == 3 && strcmp(s.cfg.target.layer_output, "block") == 0);
    CHECK(s.cfg.loss.beta == 2);
    CHECK(s.cfg.optim.lr == 1.5e-3 && s.cfg.optim.clip_norm == 3.0);
    CHECK(strcmp(s.cfg.optim.schedule, "cosine") == 0 && s.cfg.optim.warmup_steps == 100);
    CHECK(s.cfg.ema.end_decay == 0.9998 && s.cfg.ema.decay == 0.999);
    CHECK(s.cfg.train.steps == 2000 && s.cfg.train.batch_size == 32);
    CHECK(s.cfg.train.seed == 0 && s.cfg.train.threads == 2);
    CHECK(strcmp(s.cfg.data.on_error, "fail") == 0);
    CHECK(strcmp(s.fm.tokenizer, "vocab;v2/dir") == 0);
    CHECK(s.fm.patch_size == 8 && s.fm.use_cls == 0);
    CHECK(s.fm.mask_prob == 0.5 && strcmp(s.fm.mask_kind, "random") == 0);
    CHECK(d2v_config_validate(&s.cfg, &err) == 0);

    /* An empty file and a file of comments change nothing. */
    Setup e;
    setup_init(&e);
    CHECK(load(&e, "", &err) == 0);
    CHECK(load(&e, "; nothing\n\n   # here\n", &err) == 0);
    CHECK(e.cfg.model.dim == 768);
}

static void test_set_overrides(void)
{
    Setup s;
    setup_init(&s);
    D2vError err = {{0}};
    CHECK(load(&s, "[model]\ndim = 384\n[frontend]\npatch_size = 14\n", &err) == 0);
    CHECK(s.cfg.model.dim == 384);
    CHECK(config_set(s.tables, 2, "model.dim=512", &err) == 0);
    CHECK(s.cfg.model.dim == 512);
    CHECK(config_set(s.tables, 2, "  train.steps =  10 ", &err) == 0);
    CHECK(s.cfg.train.steps == 10);
    CHECK(config_set(s.tables, 2, "frontend.patch_size=32", &err) == 0);
    CHECK(s.fm.patch_size == 32);
    /* --set may repeat a key: the last one wins. */
    CHECK(config_set(s.tables, 2, "model.dim=256", &err) == 0);
    CHECK(s.cfg.model.dim == 256);
    CHECK(config_set(s.tables, 2, "data.tokenizer=", &err) == 0);
    CHECK(s.fm.tokenizer[0] == '\0');
    /* A value may contain '=' and '.'. */
    CHECK(config_set(s.tables, 2, "data.tokenizer=a=b.c", &err) == 0);
    CHECK(strcmp(s.fm.tokenizer, "a=b.c") == 0);
}

static void test_round_trip(void)
{
    Setup a, b;
    setup_init(&a);
    setup_init(&b);
    D2vError err = {{0}};
    const char *sets[] = {
        "model.modality=text",        "model.dropout=0.123456789012345678",
        "optim.lr=0.00030000000000000003", "loss.beta=1e-300",
        "loss.scale=0.3333333333333333", "train.seed=9007199254740991",
        "optim.min_lr=4.9e-324",      "frontend.use_cls=false",
        "data.tokenizer=/some/dir/with spaces",  "mask.kind=random",
        "model.init_std=0.30000000000000004",
    };
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
        check(config_set(a.tables, 2, sets[i], &err) == 0, __LINE__, "%s: %s", sets[i], err.msg);

    char *dump = config_dump(a.tables, 2);
    CHECK(dump != NULL);
    if (!dump)
        return;
    int rc = config_load_string(b.tables, 2, dump, "dump", &err);
    check(rc == 0, __LINE__, "reloading the dump failed: %s", err.msg);
    CHECK(tables_equal(a.tables, b.tables, 2));

    /* A second dump is the same text. */
    char *dump2 = config_dump(b.tables, 2);
    CHECK(dump2 && strcmp(dump, dump2) == 0);

    /* Every section once, in table order, even [data] with keys from both
     * tables; every key once. */
    CHECK(count_occurrences(dump, "[data]") == 1);
    CHECK(count_occurrences(dump, "[model]") == 1);
    CHECK(count_occurrences(dump, "[frontend]") == 1);
    CHECK(count_occurrences(dump, "\ntokenizer = ") == 1);
    CHECK(count_occurrences(dump, "\non_error = ") == 1);
    const char *model = strstr(dump, "[model]"), *train = strstr(dump, "[train]");
    const char *frontend = strstr(dump, "[frontend]");
    CHECK(model && train && frontend && model < train && train < frontend);
    CHECK(strstr(dump, "\nlr = 0.00030000000000000003\n") != NULL);
    CHECK(strstr(dump, "\nweight_decay = 0.01\n") != NULL); /* shortest form */
    CHECK(strstr(dump, "\nanneal_steps = 30000\n") != NULL);
    CHECK(strstr(dump, "\nuse_cls = false\n") != NULL);
    CHECK(strstr(dump, "\nmax_items = 0\n") != NULL);
    free(dump);
    free(dump2);

    /* An unset string dumps as "key =" and reads back as unset. */
    Setup c, d;
    setup_init(&c);
    setup_init(&d);
    char *defaults = config_dump(c.tables, 2);
    CHECK(defaults && strstr(defaults, "[model]\nmodality =\ndim = 768\n") != NULL);
    CHECK(defaults && config_load_string(d.tables, 2, defaults, "defaults", &err) == 0);
    CHECK(tables_equal(c.tables, d.tables, 2) && d.cfg.model.modality[0] == '\0');
    free(defaults);

    /* An empty table set dumps to an empty string, not NULL. */
    char *empty = config_dump(NULL, 0);
    CHECK(empty && empty[0] == '\0');
    free(empty);
}

static void test_comments(void)
{
    Setup s;
    setup_init(&s);
    D2vError err = {{0}};
    const char *text = "[model] ; the model\n"
                       "dim = 16 ;comment without a space after\n"
                       "layers=3# not a comment: no blank before '#'\n";
    /* "3#" is not an integer: '#' only starts a comment after a blank. */
    CHECK_ERROR(load(&s, text, &err), &err, ":3:", "model.layers = \"3#");
    CHECK(s.cfg.model.dim == 16);
}

static void test_errors(void)
{
    Setup s;
    D2vError err = {{0}};

    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\ndim = 64\ndimm = 3\n", &err), &err, ":3: ",
                "unknown key [model] dimm", "(known keys in [model]: modality, dim, layers,");

    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\ndim = 64\n\n[modle]\nlayers = 2\n", &err), &err, ":4: ",
                "unknown section [modle]", "known sections: model, target,", "frontend, mask");
    /* Also when the unknown section is empty. */
    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\ndim = 64\n[traning]\n", &err), &err, ":3: ",
                "unknown section [traning]");

    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\ndim = 64\nlayers = 2\n# again:\ndim = 32\n", &err), &err,
                ":5: ", "duplicate key model.dim (first set on line 2)");
    /* Also across two [model] blocks, and when the first was indented. */
    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\n  dim = 64\n[train]\nsteps=1\n[model]\ndim = 64\n", &err),
                &err, ":6: ", "duplicate key model.dim (first set on line 2)");

    const char *bad_ints[] = {"abc", "12abc", "1.5", "99999999999999999999", "", "0x20",
                              "1e3", "- 5", "64 64"};
    for (size_t i = 0; i < sizeof bad_ints / sizeof bad_ints[0]; i++) {
        char text[128], quoted[64];
        snprintf(text, sizeof text, "[model]\nlayers = 2\ndim = %s\n", bad_ints[i]);
        snprintf(quoted, sizeof quoted, "model.dim = \"%s\"", bad_ints[i]);
        setup_init(&s);
        CHECK_ERROR(load(&s, text, &err), &err, ":3: ", quoted,
                    ": expected an integer in [8, 65536]");
    }

    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\ndim = 4\n", &err), &err, ":2: ",
                "model.dim = \"4\": expected an integer in [8, 65536]");
    setup_init(&s);
    CHECK_ERROR(load(&s, "[train]\nthreads = 1025\n", &err), &err, ":2: ",
                "train.threads = \"1025\": expected an integer in [0, 1024]");
    setup_init(&s);
    CHECK_ERROR(load(&s, "[train]\nsteps = 0\n", &err), &err, "train.steps", "[1, ");

    const char *bad_floats[] = {"1e-3x", "abc", "nan", "inf", "1e999", "", "0.5.1", "1,5"};
    for (size_t i = 0; i < sizeof bad_floats / sizeof bad_floats[0]; i++) {
        char text[128], quoted[64];
        snprintf(text, sizeof text, "\n[optim]\nlr = %s\n", bad_floats[i]);
        snprintf(quoted, sizeof quoted, "optim.lr = \"%s\"", bad_floats[i]);
        setup_init(&s);
        CHECK_ERROR(load(&s, text, &err), &err, ":3: ", quoted, ": expected a number in [");
    }
    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\ndropout = 1\n", &err), &err, ":2: ",
                "model.dropout = \"1\": expected a number in [0, 0.99]");
    setup_init(&s);
    CHECK_ERROR(load(&s, "[optim]\nlr = 0\n", &err), &err, "optim.lr = \"0\"");
    setup_init(&s);
    CHECK_ERROR(load(&s, "[optim]\nclip_norm = -1\n", &err), &err, "optim.clip_norm");

    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\n\nlayout = mid_ln\n", &err), &err, ":3: ",
                "model.layout = \"mid_ln\": expected one of post_ln|pre_ln");
    setup_init(&s);
    CHECK_ERROR(load(&s, "[data]\non_error = Skip\n", &err), &err, ":2: ",
                "expected one of skip|fail");
    /* A prefix of a choice is not the choice. */
    setup_init(&s);
    CHECK_ERROR(load(&s, "[optim]\nschedule = tri\n", &err), &err, "cosine|tri_stage|constant");

    setup_init(&s);
    CHECK_ERROR(load(&s, "[frontend]\nuse_cls = maybe\n", &err), &err, ":2: ",
                "frontend.use_cls = \"maybe\": expected true or false");

    setup_init(&s);
    CHECK_ERROR(load(&s, "dim = 64\n[model]\n", &err), &err, ":1: ",
                "key dim is outside any section");

    setup_init(&s);
    CHECK_ERROR(config_load_file(s.tables, 2, "/nonexistent/x.ini", &err), &err,
                "cannot open config /nonexistent/x.ini: No such file or directory");

    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\ndim = 64\njust words\n", &err), &err, ":3: ",
                "expected [section] or key = value");
    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\n[train\nsteps = 3\n", &err), &err, ":2: ",
                "no closing ']'");
    setup_init(&s);
    CHECK_ERROR(load(&s, "[model] extra\n", &err), &err, ":1: ", "unexpected text after [model]");
    setup_init(&s);
    CHECK_ERROR(load(&s, "[model]\n= 5\n", &err), &err, ":2: ", "no key before '='");

    /* A line longer than inih's buffer is an error, not two lines. */
    char long_text[600];
    strcpy(long_text, "[data]\ntokenizer = ");
    size_t used = strlen(long_text);
    memset(long_text + used, 'x', 300);
    strcpy(long_text + used + 300, "\n");
    setup_init(&s);
    CHECK_ERROR(load(&s, long_text, &err), &err, ":2: ", "line is", "characters long");
    /* ... but a long comment is fine. */
    char long_comment[600] = "[model]\n# ";
    memset(long_comment + strlen(long_comment), '-', 400);
    strcat(long_comment, "\ndim = 16 ; ");
    memset(long_comment + strlen(long_comment), '-', 100);
    setup_init(&s);
    CHECK(load(&s, long_comment, &err) == 0 && s.cfg.model.dim == 16);

    /* config_load_string names its text. */
    setup_init(&s);
    CHECK_ERROR(config_load_string(s.tables, 2, "[model]\ndim = x\n", "checkpoint config", &err),
                &err, "checkpoint config:2: model.dim = \"x\"");
}

static void test_set_errors(void)
{
    Setup s;
    setup_init(&s);
    D2vError err = {{0}};
    const char *malformed[] = {"model.dim", "dim=3", ".dim=3", "model.=3", "", "=3"};
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++)
        CHECK_ERROR(config_set(s.tables, 2, malformed[i], &err), &err, "--set",
                    "expected the form section.key=value");
    CHECK_ERROR(config_set(s.tables, 2, "model.dimm=3", &err), &err,
                "--set: unknown key [model] dimm (known keys in [model]: modality, dim,");
    CHECK_ERROR(config_set(s.tables, 2, "modle.dim=3", &err), &err,
                "--set: unknown section [modle]");
    /* An argument may hold newlines (found by fuzz_config): the message
     * escapes them and stays one line. */
    CHECK_ERROR(config_set(s.tables, 2, "e\n[train]\nsteps.x=1", &err), &err,
                "--set: unknown section [\"e\\n[train]\\nsteps\"]");
    CHECK(!strchr(err.msg, '\n'));
    CHECK_ERROR(config_set(s.tables, 2, "model.di\x1bm=3", &err), &err, "--set: unknown key [model] \"di\\x1bm\"");
    CHECK_ERROR(config_set(s.tables, 2, "model.dim=abc", &err), &err,
                "--set: model.dim = \"abc\": expected an integer in [8, 65536]");
    CHECK_ERROR(config_set(s.tables, 2, "frontend.use_cls=2", &err), &err,
                "--set: frontend.use_cls = \"2\": expected true or false");
    /* Text that a dump could not carry. */
    CHECK_ERROR(config_set(s.tables, 2, "data.tokenizer=a #b", &err), &err,
                "--set: data.tokenizer", "comment");
    CHECK_ERROR(config_set(s.tables, 2, "data.tokenizer=a\nb", &err), &err, "line break");
    char long_set[400] = "data.tokenizer=";
    memset(long_set + strlen(long_set), 'y', 300);
    CHECK_ERROR(config_set(s.tables, 2, long_set, &err), &err, "data.tokenizer",
                "expected text of at most");
    /* Failed sets leave the value alone. */
    CHECK(s.cfg.model.dim == 768 && s.fm.use_cls == 1);
}

static void test_second_table(void)
{
    Setup s;
    setup_init(&s);
    D2vError err = {{0}};
    CHECK_ERROR(load(&s, "[frontend]\npatch_size = 16\npatch = 3\n", &err), &err, ":3: ",
                "unknown key [frontend] patch (known keys in [frontend]: patch_size, use_cls)");
    /* [data]'s known keys come from both tables. */
    setup_init(&s);
    CHECK_ERROR(load(&s, "[data]\nbogus = 1\n", &err), &err, "on_error, tokenizer, max_items");
    setup_init(&s);
    CHECK_ERROR(load(&s, "[frontend]\npatch_size = 0\n", &err), &err,
                "frontend.patch_size = \"0\": expected an integer in [1, 1024]");

    /* Core alone does not know the modality's sections. */
    D2vConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    ConfigTable core = d2v_config_table(&cfg);
    CHECK(config_defaults(&core, 1, &err) == 0);
    CHECK_ERROR(load_tables(&core, 1, "[frontend]\npatch_size = 8\n", &err), &err, ":1: ", "unknown section [frontend]");

    /* A key defined by two tables is a bug in a table. */
    ConfigTable twice[2] = {core, core};
    CHECK_ERROR(config_defaults(twice, 2, &err), &err, "model.modality twice");

    /* A table whose default breaks its own range is caught. */
    FakeModality fm;
    ConfigKey bad_default = {"frontend", "patch_size", CK_INT, FAKE(patch_size), "0", 1, 8,
                             NULL, "x"};
    ConfigTable bad = {&bad_default, 1, &fm};
    CHECK_ERROR(config_defaults(&bad, 1, &err), &err, "default of frontend.patch_size");
}

static void test_validate(void)
{
    Setup s;
    D2vError err = {{0}};
    struct {
        const char *sets[4];
        const char *needle;
    } cases[] = {
        {{"model.dim=100", "model.heads=12"},
         "model.dim = 100 is not divisible by model.heads = 12"},
        {{"target.top_k=13"}, "target.top_k = 13 exceeds model.layers = 12"},
        {{"optim.warmup_ratio=0.5", "optim.hold_ratio=0.5", "optim.decay_ratio=0.1"},
         "optim.warmup_ratio + optim.hold_ratio + optim.decay_ratio = 1.1 exceeds 1"},
        {{"ema.end_decay=0.99"}, "ema.end_decay = 0.99 is below ema.decay = 0.999"},
        {{"optim.min_lr=0.01"}, "optim.min_lr = 0.01 exceeds optim.lr = 0.0005"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        setup_init(&s);
        strcpy(s.cfg.model.modality, "speech");
        for (int i = 0; i < 4 && cases[c].sets[i]; i++)
            check(config_set(s.tables, 2, cases[c].sets[i], &err) == 0, __LINE__, "%s",
                  err.msg);
        CHECK_ERROR(d2v_config_validate(&s.cfg, &err), &err, cases[c].needle);
    }
    /* Ratios summing to exactly 1 (in floating point, 1 + tiny) pass, and
     * only tri_stage cares about them. */
    setup_init(&s);
    strcpy(s.cfg.model.modality, "speech");
    CHECK(config_set(s.tables, 2, "optim.warmup_ratio=0.1", &err) == 0);
    CHECK(config_set(s.tables, 2, "optim.hold_ratio=0.2", &err) == 0);
    CHECK(config_set(s.tables, 2, "optim.decay_ratio=0.7", &err) == 0);
    CHECK(d2v_config_validate(&s.cfg, &err) == 0);
    CHECK(config_set(s.tables, 2, "optim.hold_ratio=0.9", &err) == 0);
    CHECK(d2v_config_validate(&s.cfg, &err) == -1);
    CHECK(config_set(s.tables, 2, "optim.schedule=cosine", &err) == 0);
    CHECK(d2v_config_validate(&s.cfg, &err) == 0);
}

static void test_peek(void)
{
    D2vError err = {{0}};
    char out[64];
    /* The peek ignores everything it was not asked about, even errors. */
    char path[64];
    write_temp("[model]\nmodality = image ; comment\nbogus = 1\n[nonsense]\nx\n", path);
    CHECK(config_peek(path, 0, NULL, "model.modality", out, sizeof out, &err) == 0);
    CHECK(strcmp(out, "image") == 0);

    char *sets[] = {"model.modality=text", "garbage", "model.modality = speech ",
                    "train.steps=3"};
    CHECK(config_peek(path, 4, sets, "model.modality", out, sizeof out, &err) == 0);
    CHECK(strcmp(out, "speech") == 0);
    CHECK(config_peek(path, 4, sets, "train.steps", out, sizeof out, &err) == 0);
    CHECK(strcmp(out, "3") == 0);
    CHECK(config_peek(path, 4, sets, "train.seed", out, sizeof out, &err) == 0);
    CHECK(out[0] == '\0');
    CHECK(config_peek(NULL, 1, sets, "model.modality", out, sizeof out, &err) == 0);
    CHECK(strcmp(out, "text") == 0);
    CHECK_ERROR(config_peek("/nonexistent/y.ini", 0, NULL, "model.modality", out, sizeof out,
                            &err),
                &err, "cannot open config /nonexistent/y.ini: No such file or directory");
    char tiny[3];
    CHECK_ERROR(config_peek(path, 0, NULL, "model.modality", tiny, sizeof tiny, &err), &err,
                "too long");
    unlink(path);
}

int main(void)
{
    test_defaults();
    test_full_file();
    test_set_overrides();
    test_round_trip();
    test_comments();
    test_errors();
    test_set_errors();
    test_second_table();
    test_validate();
    test_peek();

    printf("%d passed, %d failed\n", n_passed, n_failed);
    return n_failed ? 1 : 0;
}
