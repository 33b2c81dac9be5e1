/* test_text_data.c — the text modality's data and plug-in: blocks in each
 * break mode on inputs whose token counts are known (a tokenizer without
 * merges makes one token per ASCII byte), labeled sets, over-long lines
 * tokenized in pieces exactly as whole, and bad input (NUL bytes, empty and
 * blank files, ill-formed UTF-8, lines without a label) named by file, line
 * and offset; then the plug-in through the Modality table: batches with <s>
 * and padding, problems reported once through the loader's channel, and the
 * front-end's masks. */
#define _XOPEN_SOURCE 700
#include "check.h"
#include "model.h"
#include "registry.h"
#include "tempdir.h"
#include "text_data.h"
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

static Tokenizer *train_tokenizer(const char *text, int vocab_size)
{
    TokCounter *c = NULL;
    Tokenizer *t = NULL;
    D2vError err;
    TokOptions o = tok_default_options();
    TokTrainOptions to = {.vocab_size = vocab_size, .min_frequency = 1};
    if (tok_counter_create(&o, &c, &err) < 0 || tok_counter_add_text(c, text, strlen(text), NULL, &err) < 0 ||
        tokenizer_train_counts(c, &to, &t, NULL, &err) < 0)
        CHECK(0, "training a tokenizer: %s", err.msg);
    tok_counter_free(c);
    return t;
}

static const char *file_in_tmp(const char *name, const char *bytes, size_t len)
{
    static char paths[16][512];
    static int next;
    char *path = paths[next++ % 16];
    path_in_dir(path, 512, name);
    if (write_file(path, bytes, len) < 0)
        CHECK(0, "cannot write %s", path);
    return path;
}

static int read_corpus(TextCorpus *c, const char *path, Tokenizer *t, int labeled, int max_tokens, TextBreakMode mode,
                       D2vError *err)
{
    TextReadOptions o = {labeled, max_tokens, mode};
    return text_corpus_read(c, path, t, &o, err);
}

/* The lengths of the items, as "4 6 3 8". */
static void item_lengths(const TextCorpus *c, char *out, size_t size)
{
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; i < c->n_items && used + 12 < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%d", i ? " " : "", c->items[i].length);
}

/* ---- blocks ---------------------------------------------------------------------------- */

static void expect_blocks(Tokenizer *bytes, const char *text, int max_tokens, TextBreakMode mode, const char *expect,
                          const char *what)
{
    const char *path = file_in_tmp("blocks.txt", text, strlen(text));
    TextCorpus c;
    D2vError err;
    char got[256] = "(read failed)";
    if (read_corpus(&c, path, bytes, 0, max_tokens, mode, &err) == 0) {
        item_lengths(&c, got, sizeof got);
        text_corpus_free(&c);
    } else {
        CHECK(0, "%s: %s", what, err.msg);
    }
    CHECK(strcmp(got, expect) == 0, "%s: item lengths \"%s\", expected \"%s\"", what, got, expect);
}

static void test_break_modes(Tokenizer *bytes)
{
    /* One token per byte, </s> after each line: sentences of 4 and 6 tokens
     * (document 1), then 3 and 8 (document 2, after the blank line). */
    const char *two_docs = "aaa\nbbbbb\n\ncc\nddddddd\n";
    expect_blocks(bytes, two_docs, 8, TEXT_BREAK_COMPLETE_DOC, "4 6 3 8", "complete_doc");
    expect_blocks(bytes, two_docs, 10, TEXT_BREAK_COMPLETE_DOC, "10 3 8", "complete_doc, room for two");
    expect_blocks(bytes, two_docs, 10, TEXT_BREAK_COMPLETE, "10 3 8", "complete");
    expect_blocks(bytes, "aa\n\nbb\n", 8, TEXT_BREAK_COMPLETE_DOC, "3 3", "complete_doc stops at a blank line");
    expect_blocks(bytes, "aa\n\nbb\n", 8, TEXT_BREAK_COMPLETE, "6", "complete crosses documents");
    expect_blocks(bytes, two_docs, 8, TEXT_BREAK_NONE, "8 8 5", "none fills every block");
    expect_blocks(bytes, two_docs, 8, TEXT_BREAK_EOS, "4 6 3 8", "eos");
    /* A sentence longer than a block is cut into block-sized pieces; the
     * last piece may share a block with the next sentence. */
    expect_blocks(bytes, "abcdefghijklmnopqrs\nxy\n", 8, TEXT_BREAK_COMPLETE_DOC, "8 8 7", "a long sentence");
    expect_blocks(bytes, "abcdefghijklmnopqrs\nxy\n", 8, TEXT_BREAK_EOS, "8 8 4 3", "a long sentence, eos");
    /* Blanks around a line are not text; CRLF ends a line; several blank
     * lines are one boundary; no newline at the end. */
    expect_blocks(bytes, "  ab \t\r\n\r\n\n\n\tcd", 8, TEXT_BREAK_COMPLETE_DOC, "3 3", "blanks, CRLF, last line");

    /* What a block holds: its sentences' tokens, each ending in </s>, and
     * where it starts. */
    const char *path = file_in_tmp("content.txt", two_docs, strlen(two_docs));
    TextCorpus c;
    D2vError err;
    if (read_corpus(&c, path, bytes, 0, 10, TEXT_BREAK_COMPLETE_DOC, &err) < 0) {
        CHECK(0, "content: %s", err.msg);
        return;
    }
    char *text = NULL;
    size_t len = 0;
    const TextItem *it = &c.items[0];
    CHECK(tokenizer_decode(bytes, c.tokens.ids + it->start, (size_t)it->length, 0, &text, &len, &err) == 0 &&
              strcmp(text, "aaa</s>bbbbb</s>") == 0,
          "block 0 decodes to \"%s\"", text ? text : err.msg);
    free(text);
    CHECK(c.items[0].line == 1 && c.items[1].line == 4 && c.items[2].line == 5 && c.items[2].file == 0 &&
              c.items[0].label == -1,
          "blocks start at lines %lld %lld %lld", (long long)c.items[0].line, (long long)c.items[1].line,
          (long long)c.items[2].line);
    text_corpus_free(&c);
}

/* ---- labeled sets --------------------------------------------------------------------------- */

static void test_labeled(Tokenizer *bytes)
{
    const char *tsv = "pets\tcat and dog\n\nfood \t  bread\r\nfood\ta very long text that will not fit\npets\tx\n";
    const char *path = file_in_tmp("set.tsv", tsv, strlen(tsv));
    TextCorpus c;
    D2vError err;
    if (read_corpus(&c, path, bytes, 1, 8, TEXT_BREAK_COMPLETE_DOC, &err) < 0) {
        CHECK(0, "labeled: %s", err.msg);
        return;
    }
    CHECK(c.n_items == 4 && c.n_classes == 2 && strcmp(c.class_names[0], "food") == 0 &&
              strcmp(c.class_names[1], "pets") == 0,
          "labeled: %d items, %d classes", c.n_items, c.n_classes);
    if (c.n_items == 4) {
        CHECK(c.items[0].label == 1 && c.items[1].label == 0 && c.items[2].label == 0 && c.items[3].label == 1,
              "labeled: labels %d %d %d %d", c.items[0].label, c.items[1].label, c.items[2].label, c.items[3].label);
        /* "cat and dog" truncated to 7 tokens + </s>; "bread" whole; line numbers skip the blank. */
        CHECK(c.items[0].length == 8 && c.items[1].length == 6 && c.items[2].length == 8 && c.items[3].length == 2,
              "labeled: lengths %d %d %d %d", c.items[0].length, c.items[1].length, c.items[2].length,
              c.items[3].length);
        CHECK(c.items[1].line == 3 && c.items[3].line == 5, "labeled: lines %lld %lld", (long long)c.items[1].line,
              (long long)c.items[3].line);
        const TokSpecials sp = tokenizer_specials(bytes);
        CHECK(c.tokens.ids[c.items[0].start + 7] == sp.eos, "labeled: a truncated text does not end in </s>");
    }
    text_corpus_free(&c);

    /* Every problem of a labeled set is an error naming file and line. */
    struct {
        const char *name, *bytes, *expect;
        size_t len;
    } bad[] = {
        {"notab.tsv", "pets\tcat\nno tab here\n", "notab.tsv:2: expected label<TAB>text, found no tab", 0},
        {"nolabel.tsv", "\tcat\n", "nolabel.tsv:1: expected label<TAB>text, found an empty label", 0},
        {"notext.tsv", "pets\t  \n", "notext.tsv:1: expected label<TAB>text, found an empty text", 0},
        {"utf8.tsv", "pets\tcat\nfood\tbr\xff" "ad\n", "utf8.tsv:2: ill-formed UTF-8 at byte offset 16", 0},
        {"nul.tsv", "pets\tcat\nfood\tbr\0ad\n", "nul.tsv: a NUL byte at byte offset 16 (line 2)", 20},
        {"empty.tsv", "", "empty.tsv: no text (an empty file)", 0},
        {"blank.tsv", "\n \n", "blank.tsv: no text (only blank lines)", 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *p = file_in_tmp(bad[i].name, bad[i].bytes, bad[i].len ? bad[i].len : strlen(bad[i].bytes));
        int rc = read_corpus(&c, p, bytes, 1, 8, TEXT_BREAK_COMPLETE_DOC, &err);
        CHECK(rc < 0 && strstr(err.msg, bad[i].expect), "%s: expected an error with \"%s\", got %s", bad[i].name,
              bad[i].expect, rc < 0 ? err.msg : "success");
        if (rc == 0)
            text_corpus_free(&c);
    }
}

/* ---- bad files in a pretraining directory ------------------------------------------------------ */

static int has_problem(const TextCorpus *c, const char *needle, int skipped)
{
    for (int i = 0; i < c->n_problems; i++)
        if (strstr(c->problems[i].message, needle) && c->problems[i].skipped == skipped)
            return 1;
    return 0;
}

static void test_bad_files(Tokenizer *bytes)
{
    char dir[512];
    path_in_dir(dir, sizeof dir, "corpus");
    mkdir(dir, 0755);
    file_in_tmp("corpus/a_good.txt", "hello\nworld\n", 12);
    file_in_tmp("corpus/b_nul.txt", "fine\nfine\nbin\0ary\n", 18);
    file_in_tmp("corpus/c_empty.txt", "", 0);
    file_in_tmp("corpus/d_blank.txt", "\n  \n\t\n", 6);
    file_in_tmp("corpus/e_utf8.txt", "ok\nbad \xc3\x28 here \xff\n", 17);
    file_in_tmp("corpus/ignored.dat", "not read: not *.txt\n", 20);
    TextCorpus c;
    D2vError err;
    if (read_corpus(&c, dir, bytes, 0, 64, TEXT_BREAK_EOS, &err) < 0) {
        CHECK(0, "bad files: %s", err.msg);
        return;
    }
    CHECK(c.n_files == 5, "bad files: %d files listed (the .dat should not be)", c.n_files);
    /* Items: hello, world (a_good), ok, the repaired line (e_utf8). */
    CHECK(c.n_items == 4, "bad files: %d items, expected 4", c.n_items);
    CHECK(c.n_problems == 4, "bad files: %d problems, expected 4", c.n_problems);
    CHECK(has_problem(&c, "b_nul.txt: a NUL byte at byte offset 13 (line 3): not a text file", 1),
          "bad files: the NUL byte is not reported by offset and line");
    CHECK(has_problem(&c, "c_empty.txt: no text (an empty file)", 1), "bad files: the empty file is not reported");
    CHECK(has_problem(&c, "d_blank.txt: no text (only blank lines)", 1), "bad files: the blank file is not reported");
    CHECK(has_problem(&c, "e_utf8.txt: 2 ill-formed UTF-8 sequences replaced by U+FFFD, the first at byte offset 7 "
                          "(line 2)", 0),
          "bad files: the ill-formed UTF-8 is not reported as repaired: %s",
          c.n_problems > 3 ? c.problems[3].message : "");
    if (c.n_items == 4) {
        char *text = NULL;
        size_t len;
        tokenizer_decode(bytes, c.tokens.ids + c.items[3].start, (size_t)c.items[3].length, 1, &text, &len, &err);
        CHECK(text && strcmp(text, "bad \xEF\xBF\xBD( here \xEF\xBF\xBD") == 0, "bad files: the repaired line is \"%s\"",
              text ? text : "");
        free(text);
        CHECK(c.items[2].file == 4 && c.items[2].line == 1, "bad files: an item's file and line are wrong");
    }
    text_corpus_free(&c);

    /* Nothing usable at all: an error that says why. */
    char only_bad[512];
    path_in_dir(only_bad, sizeof only_bad, "only_bad");
    mkdir(only_bad, 0755);
    file_in_tmp("only_bad/x.txt", "", 0);
    CHECK(read_corpus(&c, only_bad, bytes, 0, 64, TEXT_BREAK_EOS, &err) < 0 &&
              strstr(err.msg, "no usable text; the first problem: ") && strstr(err.msg, "x.txt: no text"),
          "an all-bad corpus: %s", err.msg);
    CHECK(read_corpus(&c, "/nonexistent/corpus", bytes, 0, 64, TEXT_BREAK_EOS, &err) < 0 &&
              strstr(err.msg, "/nonexistent/corpus"),
          "a missing path: %s", err.msg);
    char no_txt[512];
    path_in_dir(no_txt, sizeof no_txt, "no_txt");
    mkdir(no_txt, 0755);
    CHECK(read_corpus(&c, no_txt, bytes, 0, 64, TEXT_BREAK_EOS, &err) < 0, "a directory without text files was read");
}

/* ---- a line longer than the tokenizer's piece ------------------------------------------------- */

static void test_long_lines(void)
{
    /* Over 2 MiB in one line: read in pieces, tokenized exactly as whole. */
    const char *words[] = {"the", "quick", "brown", "fox", "jumps", "over", "lazy", "dogs", "again,", "and"};
    const size_t target = (5u << 19) + 17;
    char *line = malloc(target + 64);
    size_t n = 0;
    for (int i = 0; n < target; i++)
        n += (size_t)sprintf(line + n, "%s%s", i ? (i % 13 == 0 ? "  " : " ") : "", words[(i * 7) % 10]);
    Tokenizer *t = train_tokenizer("the quick brown fox jumps over the lazy dogs again, and again", 300);
    TokIds whole = {0};
    D2vError err;
    Utf8Report report;
    tokenizer_encode(t, line, n, &whole, &report, &err);
    line[n] = '\n';
    const char *path = file_in_tmp("long.txt", line, n + 1);
    TextCorpus c;
    if (read_corpus(&c, path, t, 0, 1 << 30, TEXT_BREAK_EOS, &err) < 0) {
        CHECK(0, "long line: %s", err.msg);
    } else {
        CHECK(c.n_items == 1 && c.tokens.n == whole.n + 1 &&
                  memcmp(c.tokens.ids, whole.ids, whole.n * sizeof *whole.ids) == 0,
              "a %zu-byte line read in pieces gave other tokens than the whole line (%zu vs %zu)", n, c.tokens.n,
              whole.n + 1);
        text_corpus_free(&c);
    }
    tok_ids_free(&whole);

    /* No blank to cut before: 3 MB of two-byte characters is cut between
     * characters, never inside one (nothing comes back as U+FFFD). */
    line = realloc(line, (3u << 20) + 8);
    size_t m = 0;
    while (m + 2 <= (3u << 20)) {
        line[m] = (char)0xC3; /* U+00E9 */
        line[m + 1] = (char)0xA9;
        m += 2;
    }
    line[m] = '\n';
    path = file_in_tmp("long_e.txt", line, m + 1);
    if (read_corpus(&c, path, t, 0, 1 << 30, TEXT_BREAK_EOS, &err) < 0) {
        CHECK(0, "long unspaced line: %s", err.msg);
    } else {
        char *text = NULL;
        size_t len = 0;
        tokenizer_decode(t, c.tokens.ids, c.tokens.n - 1, 0, &text, &len, &err);
        CHECK(c.n_problems == 0 && text && len == m && memcmp(text, line, m) == 0,
              "a %zu-byte unspaced line did not come back whole (%zu bytes, %d problems)", m, len, c.n_problems);
        free(text);
        text_corpus_free(&c);
    }
    free(line);
    tokenizer_free(t);
}

/* ---- the plug-in --------------------------------------------------------------------------------- */

typedef struct {
    char messages[8][D2V_ERR_LEN + 16];
    int n;
} Warnings;

static void collect(void *ctx, const char *msg)
{
    Warnings *w = ctx;
    if (w->n < 8)
        snprintf(w->messages[w->n++], sizeof w->messages[0], "%s", msg);
}

static void test_plugin(Tokenizer *bytes)
{
    const Modality *mod = modality_find("text");
    CHECK(mod && strcmp(modality_names(), "image|speech|text") == 0, "the registry does not know text");
    if (!mod)
        return;
    char tok_dir[512], corpus[512], sets[4][600];
    path_in_dir(tok_dir, sizeof tok_dir, "tok");
    D2vError err;
    CHECK(tokenizer_save(bytes, tok_dir, &err) == 0, "saving the tokenizer: %s", err.msg);
    path_in_dir(corpus, sizeof corpus, "plugin");
    mkdir(corpus, 0755);
    const char *a_txt = "one two three four five six\nseven\n\neight nine ten eleven\n";
    file_in_tmp("plugin/a.txt", a_txt, strlen(a_txt));
    file_in_tmp("plugin/b.txt", "x\xffy\n", 4);
    file_in_tmp("plugin/c.txt", "", 0);

    D2vConfig cfg;
    void *mcfg = calloc(1, mod->config_size);
    ConfigTable tables[2] = {d2v_config_table(&cfg), {mod->keys, mod->n_keys, mcfg}};
    snprintf(sets[0], sizeof sets[0], "data.tokenizer=%s", tok_dir);
    snprintf(sets[1], sizeof sets[1], "data.seq_len=%d", 16);
    const char *model_sets[] = {"model.modality=text", "model.dim=16", "model.layers=2", "model.heads=2",
                                "model.ffn_dim=32", "target.top_k=2", "data.break_mode=eos", "mask.prob=0.5",
                                "mask.span=2"};
    int rc = config_defaults(tables, 2, &err);
    rc = rc ? rc : config_set(tables, 2, sets[0], &err);
    rc = rc ? rc : config_set(tables, 2, sets[1], &err);
    for (size_t i = 0; rc == 0 && i < sizeof model_sets / sizeof *model_sets; i++)
        rc = config_set(tables, 2, model_sets[i], &err);
    CHECK(rc == 0, "config: %s", err.msg);

    void *dataset = NULL;
    if (rc == 0 && mod->open(mcfg, corpus, 0, &dataset, &err) < 0) {
        CHECK(0, "open: %s", err.msg);
        dataset = NULL;
    }
    if (dataset) {
        /* eos blocks of at most 15 tokens: 15 + 13 (line 1), 6 (seven), 15 + 7
         * (line 4), 6 (x U+FFFD y: 5 bytes and </s>). */
        CHECK(mod->dataset_size(dataset) == 6, "plugin: %d items, expected 6", mod->dataset_size(dataset));
        Batch batch;
        mod->batch_alloc(mcfg, 3, &batch, &err);
        Warnings w = {0};
        const int items[3] = {0, 2, 5};
        Rng rng;
        rng_init(&rng, 1, 1);
        /* data.on_error = fail: the empty file stops the first batch. */
        CHECK(mod->load_batch(mcfg, dataset, items, 3, 1, &rng, 0, collect, &w, &batch, &err) < 0 &&
                  strstr(err.msg, "c.txt: no text (an empty file)"),
              "plugin: a skipped file did not fail the first batch under on_error=fail: %s", err.msg);
        mod->dataset_close(dataset);
        mod->open(mcfg, corpus, 0, &dataset, &err);
        w.n = 0;
        CHECK(mod->load_batch(mcfg, dataset, items, 3, 1, &rng, 1, collect, &w, &batch, &err) == 0,
              "plugin: load_batch: %s", err.msg);
        CHECK(w.n == 2 && batch.skipped == 1 && strstr(w.messages[1], "c.txt: no text") &&
                  strncmp(w.messages[0], MODALITY_WARNING_KEPT, strlen(MODALITY_WARNING_KEPT)) == 0 &&
                  strstr(w.messages[0], "b.txt: 1 ill-formed UTF-8 sequence replaced"),
              "plugin: %d warnings, %d skipped: %s | %s", w.n, batch.skipped, w.messages[0], w.messages[1]);
        const TokSpecials sp = tokenizer_specials(bytes);
        /* Rows: <s> + item, padded to the longest (16). */
        CHECK(batch.B == 3 && batch.T == 16 && batch.lengths[1] == 7 && batch.lengths[2] == 7 &&
                  batch.tokens[0] == sp.bos && batch.tokens[16 + 6] == sp.eos && batch.tokens[16 + 7] == sp.pad &&
                  batch.tokens[2 * 16 + 15] == sp.pad && batch.labels[0] == -1,
              "plugin: batch T=%d lengths %d %d %d", batch.T, batch.lengths[0], batch.lengths[1], batch.lengths[2]);
        CHECK(mod->load_batch(mcfg, dataset, items, 3, 1, &rng, 1, collect, &w, &batch, &err) == 0 && w.n == 2 &&
                  batch.skipped == 0,
              "plugin: problems were reported twice");
        CHECK(strstr(mod->item_name(dataset, 5), "b.txt:1") != NULL, "plugin: item name %s",
              mod->item_name(dataset, 5));

        /* The front-end: the student sees <mask> where the loss is; specials
         * and padding are never masked or pooled; the teacher sees the text. */
        Model m;
        if (model_build(&m, &cfg, mod, mcfg, 3, 1, &err) < 0) {
            CHECK(0, "model_build: %s", err.msg);
        } else {
            const ForwardMode train = {.train = 1, .seed = 5, .step = 0};
            FrontendOut fe;
            Rng mask_rng;
            rng_init(&mask_rng, 5, 4);
            m.mod->forward(m.frontend, m.ps.value, &batch, &mask_rng, train, &fe);
            const int D = 16;
            const int tokens_table = params_find(&m.ps, "frontend.tokens");
            const float *mask_row = params_value(&m.ps, tokens_table) + (size_t)sp.mask * D;
            const float *pos = params_value(&m.ps, params_find(&m.ps, "frontend.pos"));
            int masked = 0, wrong = 0, bad_pool = 0;
            for (int b = 0; b < 3; b++)
                for (int t = 0; t < fe.N; t++) {
                    const int i = b * fe.N + t;
                    const int pad = t >= batch.lengths[b];
                    const int special = batch.tokens[i] == sp.bos || batch.tokens[i] == sp.eos;
                    bad_pool += fe.pool[i] != (!pad && !special) || (fe.pad && fe.pad[i] != pad);
                    if (fe.loss_mask[i]) {
                        masked++;
                        wrong += pad || special;
                        for (int d = 0; d < D; d++) /* post_ln: no front-end norm, x = E[<mask>] + P */
                            wrong += fe.x_student[(size_t)i * D + d] != mask_row[d] + pos[t * D + d];
                    } else if (!pad) {
                        wrong += memcmp(fe.x_student + (size_t)i * D, fe.x_teacher + (size_t)i * D,
                                        D * sizeof(float)) != 0;
                    }
                }
            CHECK(masked > 0 && wrong == 0 && bad_pool == 0, "plugin forward: %d masked, %d wrong, %d bad pool/pad",
                  masked, wrong, bad_pool);
            CHECK(fe.pad != NULL && fe.cls_position == -1 && fe.N == 16, "plugin forward: padding or N");
            model_free(&m);
        }
        mod->batch_free(&batch);
        mod->dataset_close(dataset);
    }

    /* A vocabulary size that does not match the tokenizer is refused. */
    config_set(tables, 2, "data.vocab_size=4096", &err);
    CHECK(mod->open(mcfg, corpus, 0, &dataset, &err) < 0 && strstr(err.msg, "data.vocab_size = 4096"),
          "a vocab_size mismatch: %s", err.msg);
    config_set(tables, 2, "data.vocab_size=0", &err);
    config_set(tables, 2, "mask.random_prob=0.7", &err);
    config_set(tables, 2, "mask.keep_prob=0.7", &err);
    CHECK(mod->open(mcfg, corpus, 0, &dataset, &err) < 0 && strstr(err.msg, "mask.random_prob"),
          "random_prob + keep_prob > 1: %s", err.msg);
    free(mcfg);
}

int main(void)
{
    if (tmp_dir_create("text_data") < 0)
        return 1;
    /* The smallest vocabulary: no merges, one token per byte. */
    Tokenizer *bytes = train_tokenizer("a", TOK_MIN_VOCAB);
    if (bytes) {
        test_break_modes(bytes);
        test_labeled(bytes);
        test_bad_files(bytes);
        test_plugin(bytes);
        tokenizer_free(bytes);
    }
    test_long_lines();
    remove_tree(tmp_dir);
    return check_summary();
}
