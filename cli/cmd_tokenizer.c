/* cmd_tokenizer.c — `d2v tokenizer train|encode|decode`: the text modality's
 * byte-level BPE tokenizer (modalities/tokenizer.h), trained, and inspected
 * as token ids. */
#include "args.h"
#include "cli.h"
#include "setup.h"
#include "tokenizer.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: d2v tokenizer train --vocab-size N --out DIR [options] FILE...\n"
            "       d2v tokenizer encode --tokenizer DIR [--count-only] [FILE|-]\n"
            "       d2v tokenizer decode --tokenizer DIR [--skip-special] [FILE|-]\n"
            "\n"
            "The text modality's byte-level BPE tokenizer, in GPT-2/RoBERTa's layout: DIR holds\n"
            "vocab.json, merges.txt and d2v_tokenizer.json (normalization settings).\n"
            "(d2v tokenizer train|encode|decode --help for each.)\n");
}

static void usage_train(FILE *out)
{
    fprintf(out,
            "usage: d2v tokenizer train --vocab-size N --out DIR [--normalization nfkc|nfc|none]\n"
            "                           [--min-frequency N] [--no-contractions] FILE...\n"
            "\n"
            "Learns a byte-level BPE vocabulary of N tokens from plain UTF-8 text files: <s> <pad>\n"
            "</s> <unk> (ids 0-3), the 256 bytes, the merges in the order learned, <mask> last.\n"
            "Writes DIR/vocab.json, DIR/merges.txt and DIR/d2v_tokenizer.json (DIR is created).\n"
            "Invalid UTF-8 is replaced by U+FFFD with a warning naming the file and offset.\n"
            "  --vocab-size N        tokens in all, at least 261 (e.g. 8192)\n"
            "  --normalization M     Unicode normalization before tokenizing (default nfkc)\n"
            "  --min-frequency N     stop early when the best pair occurs fewer than N times\n"
            "                        (default 2; the vocabulary is then smaller than asked)\n"
            "  --no-contractions     do not split 's 't 're 've 'm 'll 'd off words as GPT-2 does\n");
}

static void usage_encode(FILE *out)
{
    fprintf(out,
            "usage: d2v tokenizer encode --tokenizer DIR [--count-only] [FILE|-]\n"
            "\n"
            "Prints the token ids of FILE (or standard input), separated by spaces, with a line\n"
            "break after every token that holds one, so output lines follow the input's. No <s>\n"
            "or </s> is added. On standard error: bytes, tokens and MB/s.\n"
            "  --count-only          print only the summary (to time encoding alone)\n");
}

static void usage_decode(FILE *out)
{
    fprintf(out,
            "usage: d2v tokenizer decode --tokenizer DIR [--skip-special] [FILE|-]\n"
            "\n"
            "Reads whitespace-separated token ids from FILE (or standard input) and writes the\n"
            "text they stand for. decode(encode(x)) is x after normalization.\n"
            "  --skip-special        leave out special tokens (<s>, </s>, <pad>, ...) instead of\n"
            "                        writing their names\n");
}

static double megabytes(int64_t bytes)
{
    return (double)bytes / 1e6;
}

/* parse_options knows only options; this sets the other arguments (files,
 * "-") aside first. An argument starting with "--" is an option, followed by
 * its value when it takes one. */
static int parse_with_files(const char *command, int argc, char **argv, Option *opts, int n_opts, char **files,
                            int *n_files)
{
    char **options = calloc((size_t)argc + 1, sizeof *options);
    if (!options) {
        fprintf(stderr, "d2v %s: out of memory\n", command);
        return -1;
    }
    int n = 0;
    *n_files = 0;
    for (int i = 0; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0) {
            files[(*n_files)++] = argv[i];
            continue;
        }
        options[n++] = argv[i];
        for (int j = 0; j < n_opts; j++)
            if (opts[j].takes_value && strcmp(argv[i], opts[j].name) == 0 && i + 1 < argc)
                options[n++] = argv[++i];
    }
    int rc = parse_options(command, n, options, opts, n_opts);
    free(options);
    return rc;
}

static int parse_count(const char *text, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || errno || end == text || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int train(int argc, char **argv)
{
    const char *cmd = "tokenizer train";
    Option o[] = {{"--vocab-size", 1, NULL},
                  {"--out", 1, NULL},
                  {"--normalization", 1, "nfkc"},
                  {"--min-frequency", 1, "2"},
                  {"--no-contractions", 0, NULL}};
    const int n = sizeof o / sizeof *o;
    char **files = calloc((size_t)argc + 1, sizeof *files);
    int n_files = 0;
    if (!files || parse_with_files(cmd, argc, argv, o, n, files, &n_files) < 0) {
        free(files);
        return 2;
    }
    D2vError err;
    TokOptions opt = tok_default_options();
    long vocab_size, min_frequency;
    const char *out = option(o, n, "--out");
    if (parse_count(option(o, n, "--vocab-size"), TOK_MIN_VOCAB, TOK_MAX_VOCAB, &vocab_size) < 0 ||
        parse_count(option(o, n, "--min-frequency"), 1, LONG_MAX, &min_frequency) < 0 || !out || n_files == 0) {
        fprintf(stderr, "d2v %s: needs --vocab-size (%d to %d), --out DIR and at least one FILE\n", cmd,
                TOK_MIN_VOCAB, TOK_MAX_VOCAB);
        usage_train(stderr);
        free(files);
        return 2;
    }
    if (tok_normalization_parse(option(o, n, "--normalization"), &opt.normalization, &err) < 0) {
        free(files);
        return fail(cmd, &err);
    }
    opt.contractions = option(o, n, "--no-contractions") == NULL;

    /* Counted file by file (to warn about each), then merged. */
    double t0 = d2v_now_seconds();
    Tokenizer *tok = NULL;
    TokCounter *counter = NULL;
    TokTrainStats st = {0};
    TokTrainOptions to = {.vocab_size = (int)vocab_size, .min_frequency = min_frequency};
    int rc = tok_counter_create(&opt, &counter, &err);
    for (int i = 0; i < n_files && rc == 0; i++) {
        Utf8Report rep;
        int64_t bytes = 0;
        rc = tok_counter_add_file(counter, files[i], &rep, &bytes, &err);
        if (rc == 0 && rep.count > 0)
            fprintf(stderr, "d2v %s: warning: %s: invalid UTF-8 at byte offset %lld (replaced by U+FFFD; %lld place%s)\n",
                    cmd, files[i], (long long)rep.first_offset, (long long)rep.count, rep.count == 1 ? "" : "s");
        if (rc == 0 && bytes == 0)
            fprintf(stderr, "d2v %s: warning: %s: empty file\n", cmd, files[i]);
    }
    double t1 = d2v_now_seconds();
    if (rc == 0)
        rc = tokenizer_train_counts(counter, &to, &tok, &st, &err);
    double t2 = d2v_now_seconds();
    if (rc == 0)
        rc = tokenizer_save(tok, out, &err);
    if (rc == 0) {
        double mb = megabytes(st.input_bytes);
        fprintf(stderr,
                "d2v %s: counted %.2f MB in %d file%s in %.2f s (%.1f MB/s): %lld pieces, %lld distinct; "
                "normalization %s\n"
                "d2v %s: learned %d merges in %.2f s: vocabulary %d%s\n"
                "d2v %s: trained in %.2f s in all (%.1f MB/s); wrote %s/vocab.json and %s/merges.txt\n",
                cmd, mb, n_files, n_files == 1 ? "" : "s", t1 - t0, mb / (t1 - t0 > 1e-9 ? t1 - t0 : 1e-9),
                (long long)st.pieces, (long long)st.distinct_pieces, tok_normalization_name(opt.normalization), cmd,
                st.n_merges, t2 - t1, st.vocab_size,
                st.vocab_size < to.vocab_size ? " (fewer than asked: no pair left occurs --min-frequency times)" : "",
                cmd, t2 - t0, mb / (t2 - t0 > 1e-9 ? t2 - t0 : 1e-9), out, out);
    }
    tok_counter_free(counter);
    tokenizer_free(tok);
    free(files);
    return rc < 0 ? fail(cmd, &err) : 0;
}

/* Where encode and decode read from: a file, or standard input for "-" or
 * nothing. */
static FILE *open_input(const char *cmd, int n_files, char **files, const char **name)
{
    if (n_files > 1) {
        fprintf(stderr, "d2v %s: one input at most (a FILE or -)\n", cmd);
        return NULL;
    }
    if (n_files == 0 || strcmp(files[0], "-") == 0) {
        *name = "standard input";
        return stdin;
    }
    *name = files[0];
    FILE *fp = fopen(files[0], "rb");
    if (!fp)
        fprintf(stderr, "d2v %s: cannot open %s: %s\n", cmd, files[0], strerror(errno));
    return fp;
}

typedef struct {
    const Tokenizer *tok;
    int print;
    int at_line_start;
    int64_t n_tokens;
} EncodeOutput;

/* Prints ids; a token that holds a line break ends the output line. */
static int print_ids(void *ctx, const int32_t *ids, size_t n, D2vError *err)
{
    EncodeOutput *e = ctx;
    e->n_tokens += (int64_t)n;
    if (!e->print)
        return 0;
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const uint8_t *bytes = tokenizer_token_bytes(e->tok, ids[i], &len);
        int breaks = memchr(bytes, '\n', len) != NULL;
        if (printf(e->at_line_start ? "%d" : " %d", (int)ids[i]) < 0 || (breaks && putchar('\n') == EOF))
            return d2v_fail(err, "writing the ids: %s", strerror(errno));
        e->at_line_start = breaks;
    }
    return 0;
}

static int encode(int argc, char **argv)
{
    const char *cmd = "tokenizer encode";
    Option o[] = {{"--tokenizer", 1, NULL}, {"--count-only", 0, NULL}};
    const int n = sizeof o / sizeof *o;
    char *files[4];
    int n_files = 0;
    if (argc > 4 || parse_with_files(cmd, argc, argv, o, n, files, &n_files) < 0 || !option(o, n, "--tokenizer")) {
        usage_encode(stderr);
        return 2;
    }
    const char *name;
    FILE *in = open_input(cmd, n_files, files, &name);
    if (!in)
        return 2;
    D2vError err;
    Tokenizer *tok = NULL;
    EncodeOutput out = {.print = option(o, n, "--count-only") == NULL, .at_line_start = 1};
    Utf8Report rep = {0};
    int64_t bytes = 0;
    int rc = tokenizer_load(option(o, n, "--tokenizer"), &tok, &err);
    double t1 = d2v_now_seconds();
    if (rc == 0) {
        out.tok = tok;
        rc = tokenizer_encode_stream(tok, in, name, print_ids, &out, &rep, &bytes, &err);
    }
    if (rc == 0 && out.print && !out.at_line_start && putchar('\n') == EOF)
        rc = d2v_fail(&err, "writing the ids: %s", strerror(errno));
    if (rc == 0 && fflush(stdout) != 0)
        rc = d2v_fail(&err, "writing the ids: %s", strerror(errno));
    double t2 = d2v_now_seconds();
    if (rc == 0 && rep.count > 0)
        fprintf(stderr, "d2v %s: warning: %s: invalid UTF-8 at byte offset %lld (replaced by U+FFFD; %lld place%s)\n",
                cmd, name, (long long)rep.first_offset, (long long)rep.count, rep.count == 1 ? "" : "s");
    if (rc == 0)
        fprintf(stderr, "d2v %s: %.2f MB -> %lld tokens (%.2f bytes/token) in %.3f s: %.2f MB/s%s\n", cmd,
                megabytes(bytes), (long long)out.n_tokens,
                out.n_tokens ? (double)bytes / (double)out.n_tokens : 0.0, t2 - t1,
                megabytes(bytes) / (t2 - t1 > 1e-9 ? t2 - t1 : 1e-9), out.print ? " (including printing)" : "");
    if (in != stdin)
        fclose(in);
    tokenizer_free(tok);
    return rc < 0 ? fail(cmd, &err) : 0;
}

/* Reads whitespace-separated ids and writes their bytes as it goes, so the
 * input may be any size. */
static int decode_stream(const Tokenizer *tok, FILE *in, const char *name, int skip_specials, D2vError *err)
{
    long line = 1;
    int c;
    int64_t id = -1; /* -1: between ids */
    do {
        c = getc(in);
        if (c >= '0' && c <= '9') {
            id = (id < 0 ? 0 : id * 10) + (c - '0');
            if (id > INT32_MAX)
                return d2v_fail(err, "%s:%ld: token id too large", name, line);
            continue;
        }
        if (c != EOF && c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return d2v_fail(err, "%s:%ld: unexpected '%c' (expected token ids separated by spaces)", name, line,
                            c >= 0x20 && c < 0x7F ? c : '?');
        if (id >= 0) {
            size_t len;
            const uint8_t *bytes = tokenizer_token_bytes(tok, (int32_t)id, &len);
            if (!bytes)
                return d2v_fail(err, "%s:%ld: token id %lld is not in the vocabulary (0..%d)", name, line,
                                (long long)id, tokenizer_vocab_size(tok) - 1);
            if (!(skip_specials && tokenizer_is_special(tok, (int32_t)id)) && len && fwrite(bytes, 1, len, stdout) != len)
                return d2v_fail(err, "writing the text: %s", strerror(errno));
            id = -1;
        }
        if (c == '\n')
            line++;
    } while (c != EOF);
    if (ferror(in))
        return d2v_fail(err, "cannot read %s: %s", name, strerror(errno));
    return fflush(stdout) == 0 ? 0 : d2v_fail(err, "writing the text: %s", strerror(errno));
}

static int decode(int argc, char **argv)
{
    const char *cmd = "tokenizer decode";
    Option o[] = {{"--tokenizer", 1, NULL}, {"--skip-special", 0, NULL}};
    const int n = sizeof o / sizeof *o;
    char *files[4];
    int n_files = 0;
    if (argc > 4 || parse_with_files(cmd, argc, argv, o, n, files, &n_files) < 0 || !option(o, n, "--tokenizer")) {
        usage_decode(stderr);
        return 2;
    }
    const char *name;
    FILE *in = open_input(cmd, n_files, files, &name);
    if (!in)
        return 2;
    D2vError err;
    Tokenizer *tok = NULL;
    int rc = tokenizer_load(option(o, n, "--tokenizer"), &tok, &err);
    if (rc == 0)
        rc = decode_stream(tok, in, name, option(o, n, "--skip-special") != NULL, &err);
    if (in != stdin)
        fclose(in);
    tokenizer_free(tok);
    return rc < 0 ? fail(cmd, &err) : 0;
}

int cmd_tokenizer(int argc, char **argv)
{
    typedef struct {
        const char *name;
        int (*run)(int, char **);
        void (*help)(FILE *);
    } Sub;
    static const Sub subs[] = {{"train", train, usage_train}, {"encode", encode, usage_encode},
                               {"decode", decode, usage_decode}};
    for (size_t i = 0; argc >= 1 && i < sizeof subs / sizeof *subs; i++) {
        if (strcmp(argv[0], subs[i].name) != 0)
            continue;
        if (wants_help(argc - 1, argv + 1)) {
            subs[i].help(stdout);
            return 0;
        }
        return subs[i].run(argc - 1, argv + 1);
    }
    if (wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    if (argc >= 1)
        fprintf(stderr, "d2v tokenizer: unknown subcommand '%s' (train, encode or decode)\n", argv[0]);
    usage(stderr);
    return 2;
}
