/* test_tokenizer.c — the byte-level BPE tokenizer: GPT-2's byte alphabet,
 * UTF-8 repair and its report, normalization, GPT-2's pre-tokenization,
 * training (hand-checked merges, and the incremental pair counts against a
 * naive trainer that recounts everything), merge priority in encode, the
 * round trip decode(encode(x)) == normalize(x) over random bytes, random
 * Unicode and real text, the vocab.json/merges.txt round trip, rejection of
 * corrupt files with messages naming them, specials never made from text,
 * and inputs larger than the 1 MB chunks.
 *
 * Standalone: prints each failure, ends with "N passed, M failed" and exits
 * nonzero if any check failed. Files go to a fresh mkdtemp directory under
 * /tmp, removed at the end. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp, truncate */
#endif

#include "check.h"
#include "tempdir.h"
#include "tokenizer.h"

#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <utf8proc.h>

/* ---- helpers ---------------------------------------------------------- */

static uint64_t rng_state = 0x2545F4914F6CDD1Dull;

static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static uint32_t random_below(uint32_t n)
{
    return (uint32_t)(next_random() % n);
}

typedef struct {
    char *p;
    size_t n, cap;
} Str;

static void str_put(Str *s, const void *bytes, size_t n)
{
    if (s->n + n + 1 > s->cap) {
        s->cap = (s->n + n + 1) * 2;
        s->p = realloc(s->p, s->cap);
        if (!s->p) {
            fprintf(stderr, "out of memory\n");
            exit(2);
        }
    }
    memcpy(s->p + s->n, bytes, n);
    s->n += n;
    s->p[s->n] = 0;
}

static void str_puts(Str *s, const char *text)
{
    str_put(s, text, strlen(text));
}

static void str_put_cp(Str *s, int32_t cp)
{
    uint8_t buf[4];
    utf8proc_ssize_t n = utf8proc_encode_char(cp, buf);
    str_put(s, buf, (size_t)n);
}

static int is_valid_utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t cp;
        utf8proc_ssize_t len = utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &cp);
        if (len <= 0)
            return 0;
        i += (size_t)len;
    }
    return 1;
}

static char *encode_then_decode(Tokenizer *t, const char *text, size_t len, size_t *out_len, int *saw_special)
{
    TokIds ids = {0};
    D2vError err;
    if (tokenizer_encode(t, text, len, &ids, NULL, &err) < 0) {
        CHECK(0, "encode: %s", err.msg);
        return NULL;
    }
    for (size_t i = 0; i < ids.n; i++)
        if (tokenizer_is_special(t, ids.ids[i]))
            *saw_special = 1;
    char *back = NULL;
    if (tokenizer_decode(t, ids.ids, ids.n, 0, &back, out_len, &err) < 0)
        CHECK(0, "decode: %s", err.msg);
    tok_ids_free(&ids);
    return back;
}

/* decode(encode(x)) == normalize(x), and no special token made. */
static int round_trips(Tokenizer *t, const char *text, size_t len)
{
    TokOptions o = tokenizer_options(t);
    char *norm = NULL, *back;
    size_t norm_len = 0, back_len = 0;
    D2vError err;
    int saw_special = 0;
    if (tok_normalize(&o, text, len, &norm, &norm_len, NULL, &err) < 0) {
        CHECK(0, "normalize: %s", err.msg);
        return 0;
    }
    back = encode_then_decode(t, text, len, &back_len, &saw_special);
    int ok = back && back_len == norm_len && memcmp(back, norm, norm_len) == 0 && !saw_special &&
             is_valid_utf8(norm, norm_len);
    free(norm);
    free(back);
    return ok;
}

static void hexdump_short(const char *label, const char *s, size_t n)
{
    fprintf(stderr, "  %s (%zu bytes):", label, n);
    for (size_t i = 0; i < n && i < 48; i++)
        fprintf(stderr, " %02X", (unsigned char)s[i]);
    fprintf(stderr, "%s\n", n > 48 ? " ..." : "");
}

static TokCounter *counter_of(const TokOptions *o, const char *text)
{
    TokCounter *c = NULL;
    D2vError err;
    if (tok_counter_create(o, &c, &err) < 0 || tok_counter_add_text(c, text, strlen(text), NULL, &err) < 0)
        CHECK(0, "counting: %s", err.msg);
    return c;
}

static Tokenizer *train_on(const char *text, int vocab_size, int64_t min_frequency, const TokOptions *o)
{
    TokCounter *c = counter_of(o, text);
    Tokenizer *t = NULL;
    D2vError err;
    TokTrainOptions to = {.vocab_size = vocab_size, .min_frequency = min_frequency};
    if (c && tokenizer_train_counts(c, &to, &t, NULL, &err) < 0)
        CHECK(0, "training: %s", err.msg);
    tok_counter_free(c);
    return t;
}

static void merge_text(const Tokenizer *t, int rank, char *out, size_t size)
{
    int32_t l, r, res;
    if (tokenizer_merge(t, rank, &l, &r, &res) < 0) {
        snprintf(out, size, "(none)");
        return;
    }
    snprintf(out, size, "%s %s", tokenizer_token_text(t, l, NULL), tokenizer_token_text(t, r, NULL));
}

/* The ids of text as the tokens' vocab.json spellings, space-separated. */
static void spelled_ids(Tokenizer *t, const char *text, char *out, size_t size)
{
    TokIds ids = {0};
    D2vError err;
    out[0] = 0;
    if (tokenizer_encode(t, text, strlen(text), &ids, NULL, &err) < 0) {
        snprintf(out, size, "error: %.400s", err.msg);
        return;
    }
    size_t used = 0;
    for (size_t i = 0; i < ids.n && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? " " : "", tokenizer_token_text(t, ids.ids[i], NULL));
    tok_ids_free(&ids);
}

/* Some real text in several scripts: prose, numbers, punctuation,
 * contractions, combining marks, emoji with joiners and modifiers. */
static const char *const REAL_TEXT[] = {
    "The quick brown fox jumps over the lazy dog. It's 9:45 a.m., and we're late!\n",
    "In the beginning God created the heaven and the earth. And the earth was without form, and void.\n",
    "Don't panic: 42 is the answer (probably); see RFC 2119 and ISO-8601 dates like 2024-02-29.\n",
    "Der Weiße Hai schwimmt über den Fluß, während Ärzte Öl kaufen.\n",
    "Le cœur a ses raisons que la raison ne connaît point. Ça va? Très bien, merci.\n",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.\n",
    "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.\n",
    "日本語のテキストです。東京は大きな都市です。\n",
    "中文文本处理，包括分词和编码。\n",
    "한국어 텍스트도 잘 처리되어야 합니다.\n",
    "العربية تكتب من اليمين إلى اليسار.\n",
    "עברית נכתבת מימין לשמאל.\n",
    "हिन्दी में संयुक्ताक्षर और मात्राएँ होती हैं।\n",
    "ภาษาไทยไม่มีการเว้นวรรคระหว่างคำ\n",
    "Emoji: 👍🏽 👨‍👩‍👧‍👦 🇩🇪 ❤️ 😀😃😄 — and ligatures ﬁ ﬂ, full-width ＡＢＣ１２３, ½ ², Ⅻ.\n",
    "Combining: e\xcc\x81 a\xcc\x8a n\xcc\x83 (decomposed) vs é å ñ; Hangul jamo \xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab.\n",
    "Tabs\tand  double  spaces, trailing spaces   \nand\r\nCRLF lines.\n",
};

static char *real_text(int copies)
{
    Str s = {0};
    for (int c = 0; c < copies; c++)
        for (size_t i = 0; i < sizeof REAL_TEXT / sizeof *REAL_TEXT; i++)
            str_puts(&s, REAL_TEXT[i]);
    return s.p;
}

/* ---- the byte alphabet ------------------------------------------------ */

static void test_byte_alphabet(void)
{
    int seen[0x200] = {0}, bijective = 1;
    for (int b = 0; b < 256; b++) {
        uint32_t cp = tok_byte_to_unicode((uint8_t)b);
        if (cp >= 0x200 || seen[cp]++ || tok_unicode_to_byte(cp) != b)
            bijective = 0;
        /* Never whitespace or a control: merges.txt splits on spaces. */
        utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)cp);
        CHECK(cat != UTF8PROC_CATEGORY_ZS && cat != UTF8PROC_CATEGORY_CC && cat != UTF8PROC_CATEGORY_CF,
              "byte 0x%02X maps to U+%04X of category %s", b, cp, utf8proc_category_string((utf8proc_int32_t)cp));
    }
    CHECK(bijective, "byte <-> unicode is not a bijection");
    int outside = 0;
    for (uint32_t cp = 0; cp < 0x200; cp++)
        outside += !seen[cp] && tok_unicode_to_byte(cp) != -1;
    CHECK(outside == 0, "%d code points outside the alphabet map to bytes", outside);
    /* GPT-2's well-known spellings. */
    CHECK(tok_byte_to_unicode(' ') == 0x120, "space should be U+0120 'Ġ'");
    CHECK(tok_byte_to_unicode('\n') == 0x10A, "newline should be U+010A 'Ċ'");
    CHECK(tok_byte_to_unicode(0) == 0x100, "NUL should be U+0100 'Ā'");
    CHECK(tok_byte_to_unicode(0xAD) == 0x143, "soft hyphen should be U+0143 'Ń'");
    CHECK(tok_byte_to_unicode('A') == 'A' && tok_byte_to_unicode(0xE9) == 0xE9, "printable bytes spell themselves");
    CHECK(tok_unicode_to_byte(0x144) == -1 && tok_unicode_to_byte(' ') == -1, "outside the alphabet");
}

/* ---- UTF-8 repair ----------------------------------------------------- */

typedef struct {
    const char *bytes;
    size_t len;
    int64_t first, count;
    const char *repaired;
    size_t repaired_len; /* 0: strlen(repaired) */
} RepairCase;

static void test_utf8_repair(void)
{
    /* Replacement counts as Python's bytes.decode("utf-8", "replace"): one
     * U+FFFD per maximal ill-formed subpart. */
    static const RepairCase cases[] = {
        {"plain", 5, -1, 0, "plain", 0},
        {"ab\xff" "cd", 5, 2, 1, "ab\xef\xbf\xbd" "cd", 0},
        {"ab\xc3", 3, 2, 1, "ab\xef\xbf\xbd", 0},                                          /* truncated at the end */
        {"\xe2\x82x", 3, 0, 1, "\xef\xbf\xbdx", 0},                                        /* truncated 3-byte */
        {"\xf0\x9f\x98" "A", 4, 0, 1, "\xef\xbf\xbd" "A", 0},                               /* truncated emoji */
        {"\xc0\xaf", 2, 0, 2, "\xef\xbf\xbd\xef\xbf\xbd", 0},                             /* overlong '/' */
        {"\xe0\x80\x80", 3, 0, 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 0},             /* overlong */
        {"\xed\xa0\x80", 3, 0, 3, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 0},             /* surrogate */
        {"\xf4\x90\x80\x80", 4, 0, 4, "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 0}, /* > U+10FFFF */
        {"x\x80y\xbf", 4, 1, 2, "x\xef\xbf\xbdy\xef\xbf\xbd", 0},                          /* stray continuations */
        {"\xf8\x88\x80\x80\x80", 5, 0, 5,
         "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", 0}, /* 5-byte form */
        {"nul\0ok", 6, -1, 0, "nul\0ok", 6},
        {"\xe2\x82\xac \xf0\x9f\x98\x80", 8, -1, 0, "\xe2\x82\xac \xf0\x9f\x98\x80", 0}, /* valid */
    };
    TokOptions none = {.normalization = TOK_NORM_NONE, .contractions = 1};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const RepairCase *c = &cases[i];
        char *out = NULL;
        size_t n = 0;
        Utf8Report rep;
        D2vError err;
        size_t want = c->repaired_len ? c->repaired_len : strlen(c->repaired);
        int rc = tok_normalize(&none, c->bytes, c->len, &out, &n, &rep, &err);
        CHECK(rc == 0 && rep.first_offset == c->first && rep.count == c->count,
              "case %zu: report (%lld, %lld), expected (%lld, %lld)", i, (long long)rep.first_offset,
              (long long)rep.count, (long long)c->first, (long long)c->count);
        CHECK(rc == 0 && n == want && memcmp(out, c->repaired, want) == 0, "case %zu: repaired text differs", i);
        free(out);
    }

    /* The offset is counted across chunks and across the stream reader. */
    size_t big = 3u << 20;
    char *text = malloc(big);
    for (size_t i = 0; i < big; i++)
        text[i] = "lorem ipsum dolor sit amet "[i % 27];
    size_t bad_at = (3u << 19) + 7;
    text[bad_at] = (char)0xFE;
    text[big - 2] = (char)0xC3; /* truncated at the very end, after 'x' */
    text[big - 1] = 'x';
    char path[512];
    path_in_dir(path, sizeof path, "bad_utf8.txt");
    write_file(path, text, big);
    Tokenizer *t = train_on("lorem ipsum dolor sit amet", 300, 1, &none);
    TokIds ids = {0};
    Utf8Report rep;
    D2vError err;
    CHECK(t && tokenizer_encode(t, text, big, &ids, &rep, &err) == 0, "encoding 3 MB");
    CHECK(rep.first_offset == (int64_t)bad_at && rep.count == 2, "in memory: report (%lld, %lld), expected (%zu, 2)",
          (long long)rep.first_offset, (long long)rep.count, bad_at);
    FILE *fp = fopen(path, "rb");
    int64_t bytes = 0;
    CHECK(fp && t && tokenizer_encode_stream(t, fp, path, NULL, NULL, &rep, &bytes, &err) == 0, "stream encode");
    CHECK(rep.first_offset == (int64_t)bad_at && rep.count == 2 && bytes == (int64_t)big,
          "stream: report (%lld, %lld) of %lld bytes, expected (%zu, 2) of %zu", (long long)rep.first_offset,
          (long long)rep.count, (long long)bytes, bad_at, big);
    if (fp)
        fclose(fp);
    tok_ids_free(&ids);
    tokenizer_free(t);
    free(text);
}

/* ---- normalization ---------------------------------------------------- */

static void check_normalized(TokNormalization mode, const char *in, const char *want)
{
    TokOptions o = {.normalization = mode, .contractions = 1};
    char *out = NULL;
    size_t n = 0;
    D2vError err;
    int rc = tok_normalize(&o, in, strlen(in), &out, &n, NULL, &err);
    CHECK(rc == 0 && n == strlen(want) && memcmp(out, want, n) == 0, "%s(\"%s\") = \"%s\", expected \"%s\"",
          tok_normalization_name(mode), in, rc == 0 ? out : err.msg, want);
    free(out);
}

/* A random string of code points likely to stress normalization and
 * pre-tokenization. */
static void random_unicode(Str *s, int n_chars)
{
    static const int32_t singles[] = {
        0, 0x09, 0x0A, 0x0D, 0x0B, 0x0C, 0x1C, 0x1F, 0x20, 0x20, 0x20, 0x27, 0x7F, 0x85, 0xA0, 0xAD, 0xB2, 0xBD,
        0x130, 0x1C4, 0x2028, 0x2029, 0x3000, 0x1680, 0x200B, 0x200D, 0x200E, 0x200F, 0x202E, 0x2060, 0xFE0F,
        0xFB01, 0xFDFA, 0x2160, 0x2474, 0x1E9E, 0x212B, 0x2126, 0xFFFD, 0xFFFE, 0xE000, 0x10FFFF, 0x1F3FB,
        0x0345, 0x0F73, 0x1D15E, 0x2F800, 0xFF9E, 0x3099, 0x304B};
    static const int32_t ranges[][2] = {
        {'a', 'z'},         {'A', 'Z'},         {'0', '9'},         {0x21, 0x2F},       {0xC0, 0xFF},
        {0x300, 0x36F},     {0x370, 0x3FF},     {0x400, 0x4FF},     {0x590, 0x5FF},     {0x600, 0x6FF},
        {0x900, 0x97F},     {0xE00, 0xE7F},     {0x1100, 0x11FF},   {0x3040, 0x30FF},   {0x4E00, 0x9FFF},
        {0xAC00, 0xD7A3},   {0xFF01, 0xFF5E},   {0x1F600, 0x1F64F}, {0x1F1E6, 0x1F1FF}, {0x1D400, 0x1D7FF},
        {0x2000, 0x206F},   {0x80, 0x9F}};
    const int n_ranges = sizeof ranges / sizeof *ranges, n_singles = sizeof singles / sizeof *singles;
    for (int i = 0; i < n_chars; i++) {
        int32_t cp;
        if (random_below(4) == 0) {
            cp = singles[random_below((uint32_t)n_singles)];
        } else {
            const int32_t *r = ranges[random_below((uint32_t)n_ranges)];
            cp = r[0] + (int32_t)random_below((uint32_t)(r[1] - r[0] + 1));
        }
        if (random_below(10) == 0)
            str_puts(s, random_below(2) ? "'s" : "'ll");
        str_put_cp(s, cp);
    }
}

static void test_normalization(void)
{
    check_normalized(TOK_NORM_NFKC, "\xef\xac\x81", "fi");                 /* ligature */
    check_normalized(TOK_NORM_NFKC, "\xef\xbc\xa1\xef\xbc\x91", "A1");     /* full-width */
    check_normalized(TOK_NORM_NFKC, "x\xc2\xb2", "x2");                     /* superscript */
    check_normalized(TOK_NORM_NFKC, "a\xc2\xa0" "b", "a b");                /* NBSP */
    check_normalized(TOK_NORM_NFKC, "e\xcc\x81", "\xc3\xa9");               /* e + acute -> é */
    check_normalized(TOK_NORM_NFKC, "\xe2\x84\xa2", "TM");
    check_normalized(TOK_NORM_NFC, "\xef\xac\x81", "\xef\xac\x81");         /* NFC keeps the ligature */
    check_normalized(TOK_NORM_NFC, "A\xcc\x8a", "\xc3\x85");                /* A + ring -> Å */
    check_normalized(TOK_NORM_NFC, "\xe2\x84\xab", "\xc3\x85");             /* Angstrom sign -> Å */
    check_normalized(TOK_NORM_NONE, "e\xcc\x81\xef\xac\x81", "e\xcc\x81\xef\xac\x81");
    /* Hangul jamo compose into a syllable. */
    check_normalized(TOK_NORM_NFC, "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab", "\xed\x95\x9c");

    /* Spans are normalized piecewise (ASCII is copied); the whole must be
     * what utf8proc gives for the whole string. */
    int mismatches = 0;
    for (int trial = 0; trial < 3000; trial++) {
        Str s = {0};
        random_unicode(&s, 1 + (int)random_below(40));
        for (TokNormalization mode = TOK_NORM_NFC; mode <= TOK_NORM_NFKC; mode++) {
            TokOptions o = {.normalization = mode, .contractions = 1};
            utf8proc_option_t flags = UTF8PROC_STABLE | UTF8PROC_COMPOSE | (mode == TOK_NORM_NFKC ? UTF8PROC_COMPAT : 0);
            utf8proc_uint8_t *want = NULL;
            utf8proc_ssize_t want_len = utf8proc_map((const utf8proc_uint8_t *)s.p, (utf8proc_ssize_t)s.n, &want, flags);
            char *got = NULL;
            size_t got_len = 0;
            D2vError err;
            int rc = tok_normalize(&o, s.p, s.n, &got, &got_len, NULL, &err);
            if (rc != 0 || want_len < 0 || (size_t)want_len != got_len || memcmp(want, got, got_len) != 0) {
                if (mismatches++ < 3) {
                    fprintf(stderr, "normalization mismatch (%s):\n", tok_normalization_name(mode));
                    hexdump_short("input", s.p, s.n);
                    hexdump_short("utf8proc", (const char *)want, want_len > 0 ? (size_t)want_len : 0);
                    hexdump_short("ours", got ? got : "", got_len);
                }
            }
            /* Idempotent: normalizing again changes nothing. */
            char *again = NULL;
            size_t again_len = 0;
            if (rc == 0 && (tok_normalize(&o, got, got_len, &again, &again_len, NULL, &err) != 0 ||
                            again_len != got_len || memcmp(again, got, got_len) != 0))
                mismatches++;
            free(again);
            free(want);
            free(got);
        }
        free(s.p);
    }
    CHECK(mismatches == 0, "%d normalizations differ from utf8proc's of the whole string (or are not idempotent)",
          mismatches);
}

/* ---- pre-tokenization ------------------------------------------------- */

typedef struct {
    char joined[1024];
    size_t used;
    int count;
} Pieces;

/* Pieces joined by '|' for comparison with hand-written expectations. */
static int collect_piece(void *ctx, const uint8_t *p, size_t n, D2vError *err)
{
    (void)err;
    Pieces *ps = ctx;
    if (ps->used + n + 2 < sizeof ps->joined) {
        if (ps->count++)
            ps->joined[ps->used++] = '|';
        memcpy(ps->joined + ps->used, p, n);
        ps->used += n;
        ps->joined[ps->used] = 0;
    }
    return 0;
}

static void check_split(int contractions, const char *text, const char *want)
{
    TokOptions o = {.normalization = TOK_NORM_NONE, .contractions = contractions};
    Pieces ps = {.used = 0};
    D2vError err;
    tok_split(&o, text, strlen(text), collect_piece, &ps, &err);
    CHECK(strcmp(ps.joined, want) == 0, "split(\"%s\") = \"%s\", expected \"%s\"", text, ps.joined, want);
}

typedef struct {
    size_t total;
    int ok;
    const char *text;
} Concat;

static int check_concat(void *ctx, const uint8_t *p, size_t n, D2vError *err)
{
    (void)err;
    Concat *c = ctx;
    if (n == 0 || n > TOK_MAX_PIECE_BYTES || memcmp(c->text + c->total, p, n) != 0)
        c->ok = 0;
    c->total += n;
    return 0;
}

static void test_pretokenize(void)
{
    /* GPT-2's pattern, by hand. */
    check_split(1, "Hello world", "Hello| world");
    check_split(1, "Hello  world", "Hello| | world");
    check_split(1, "I'm here, it's 2024!", "I|'m| here|,| it|'s| 2024|!");
    check_split(1, "we'll they've you're I'd don't", "we|'ll| they|'ve| you|'re| I|'d| don|'t");
    check_split(1, "DON'T", "DON|'|T"); /* contractions are lower case only */
    check_split(0, "it's", "it|'|s");
    check_split(1, "a\n\nb", "a|\n|\n|b");
    check_split(1, "a \nb", "a| |\n|b");
    check_split(1, "x\t\ty", "x|\t|\t|y");
    check_split(1, "end  ", "end|  ");
    check_split(1, "  lead", " | lead");
    check_split(1, "3.14 abc123", "3|.|14| abc|123");
    check_split(1, "?!... ok", "?!...| ok");
    check_split(1, " 😀😀x", " 😀😀|x");
    check_split(1, "日本語のテキスト。次", "日本語のテキスト|。|次");
    check_split(1, "cafe\xcc\x81", "cafe|\xcc\x81"); /* a combining mark is not \p{L} */
    check_split(1, "a\xc2\xa0" "b", "a|\xc2\xa0|b");  /* NBSP is whitespace, and not ' ' */
    check_split(1, "\xe2\x85\xa0 \xc2\xbd", "\xe2\x85\xa0| \xc2\xbd"); /* Nl, No are \p{N} */

    /* NUL is an ordinary punctuation-class character. */
    TokOptions o = {.normalization = TOK_NORM_NONE, .contractions = 1};
    Pieces ps = {.used = 0};
    D2vError err;
    tok_split(&o, "x\0\0y", 4, collect_piece, &ps, &err);
    CHECK(ps.count == 3 && ps.used == 6 && memcmp(ps.joined, "x|\0\0|y", 6) == 0, "NUL pieces");

    /* Pieces always concatenate to the input and respect the length cap. */
    int broken = 0;
    for (int trial = 0; trial < 2000; trial++) {
        Str s = {0};
        random_unicode(&s, 1 + (int)random_below(60));
        Concat c = {0, 1, s.p};
        tok_split(&o, s.p, s.n, check_concat, &c, &err);
        broken += !c.ok || c.total != s.n;
        free(s.p);
    }
    CHECK(broken == 0, "%d random strings whose pieces do not concatenate to them", broken);
    Str long_word = {0};
    for (int i = 0; i < 700; i++)
        str_puts(&long_word, "\xc3\xa9"); /* 1400 bytes of é */
    Concat c = {0, 1, long_word.p};
    tok_split(&o, long_word.p, long_word.n, check_concat, &c, &err);
    CHECK(c.ok && c.total == long_word.n, "a long word is split at character boundaries");
    free(long_word.p);
}

/* ---- training --------------------------------------------------------- */

static void test_first_merges(void)
{
    TokOptions o = tok_default_options();
    /* The textbook example: "aa" is the most frequent pair (4), then "ab"
     * and "aa a" tie at 2 and the smaller left id ('a') wins, then "aa ab". */
    Tokenizer *t = train_on("aaabdaaabac", TOK_MIN_VOCAB + 3, 1, &o);
    if (!t)
        return;
    char m[3][64];
    for (int r = 0; r < 3; r++)
        merge_text(t, r, m[r], sizeof m[r]);
    CHECK(tokenizer_n_merges(t) == 3 && tokenizer_vocab_size(t) == TOK_MIN_VOCAB + 3, "3 merges, %d tokens",
          tokenizer_vocab_size(t));
    CHECK(strcmp(m[0], "a a") == 0, "first merge \"%s\", expected \"a a\"", m[0]);
    CHECK(strcmp(m[1], "a b") == 0, "second merge \"%s\", expected \"a b\"", m[1]);
    CHECK(strcmp(m[2], "aa ab") == 0, "third merge \"%s\", expected \"aa ab\"", m[2]);
    char spelled[256];
    spelled_ids(t, "aaabdaaabac", spelled, sizeof spelled);
    CHECK(strcmp(spelled, "aaab d aaab a c") == 0, "encoding \"%s\"", spelled);

    /* RoBERTa's layout of ids. */
    TokSpecials sp = tokenizer_specials(t);
    CHECK(sp.bos == 0 && sp.pad == 1 && sp.eos == 2 && sp.unk == 3 && sp.mask == tokenizer_vocab_size(t) - 1,
          "special ids %d %d %d %d %d", sp.bos, sp.pad, sp.eos, sp.unk, sp.mask);
    CHECK(tokenizer_token_id(t, "a", 1) == 4 + 'a' && tokenizer_token_id(t, "\xc4\xa0", 2) == 4 + ' ',
          "byte tokens are 4 + byte");
    tokenizer_free(t);

    /* min_frequency stops early; the vocabulary is smaller than asked. */
    TokTrainStats st;
    TokCounter *c = counter_of(&o, "aaabdaaabac");
    TokTrainOptions to = {.vocab_size = 1000, .min_frequency = 2};
    D2vError err;
    CHECK(c && tokenizer_train_counts(c, &to, &t, &st, &err) == 0 && st.n_merges == 3 && st.vocab_size == 264,
          "min_frequency 2: %d merges", st.n_merges);
    tokenizer_free(t);
    to.vocab_size = 260;
    CHECK(tokenizer_train_counts(c, &to, &t, &st, &err) < 0 && strstr(err.msg, "261"), "vocab 260 refused");
    to.vocab_size = 300;
    to.min_frequency = 0;
    CHECK(tokenizer_train_counts(c, &to, &t, &st, &err) < 0, "min_frequency 0 refused");
    tok_counter_free(c);
    c = counter_of(&o, "");
    to.min_frequency = 1;
    CHECK(c && tokenizer_train_counts(c, &to, &t, &st, &err) < 0 && strstr(err.msg, "no text"), "empty text refused");
    tok_counter_free(c);
}

/* A trainer that recounts every pair from scratch before each merge, with
 * the same rules (ties by smaller left then right id; a spelling made twice
 * keeps its first id; a pair is merged at most once). The incremental
 * trainer must make exactly its merges. */
typedef struct {
    int32_t *sym;
    int len;
    int64_t count;
} NaiveWord;

typedef struct {
    NaiveWord *words;
    int n_words;
    Str bytes[2048]; /* each token's bytes */
    int n_tokens;
    int32_t merged[1024][2];
    int n_merged;
} Naive;

static int naive_add_piece(void *ctx, const uint8_t *p, size_t n, D2vError *err)
{
    (void)err;
    Naive *nv = ctx;
    for (int w = 0; w < nv->n_words; w++) {
        NaiveWord *x = &nv->words[w];
        if ((size_t)x->len == n) {
            int same = 1;
            for (size_t i = 0; i < n && same; i++)
                same = x->sym[i] == 4 + p[i];
            if (same) {
                x->count++;
                return 0;
            }
        }
    }
    nv->words = realloc(nv->words, (size_t)(nv->n_words + 1) * sizeof *nv->words);
    NaiveWord *x = &nv->words[nv->n_words++];
    x->sym = malloc(n * sizeof *x->sym);
    x->len = (int)n;
    x->count = 1;
    for (size_t i = 0; i < n; i++)
        x->sym[i] = 4 + p[i];
    return 0;
}

static int naive_was_merged(const Naive *nv, int32_t a, int32_t b)
{
    for (int i = 0; i < nv->n_merged; i++)
        if (nv->merged[i][0] == a && nv->merged[i][1] == b)
            return 1;
    return 0;
}

/* One merge; 0 when no pair is left. */
static int naive_step(Naive *nv)
{
    int64_t best = 0;
    int32_t ba = 0, bb = 0;
    for (int w = 0; w < nv->n_words; w++) {
        NaiveWord *x = &nv->words[w];
        for (int i = 0; i + 1 < x->len; i++) {
            int32_t a = x->sym[i], b = x->sym[i + 1];
            if (naive_was_merged(nv, a, b))
                continue;
            int64_t count = 0;
            for (int v = 0; v < nv->n_words; v++)
                for (int j = 0; j + 1 < nv->words[v].len; j++)
                    if (nv->words[v].sym[j] == a && nv->words[v].sym[j + 1] == b)
                        count += nv->words[v].count;
            if (count > best || (count == best && (a < ba || (a == ba && b < bb)))) {
                best = count;
                ba = a;
                bb = b;
            }
        }
    }
    if (best == 0)
        return 0;
    Str joined = {0};
    str_put(&joined, nv->bytes[ba].p, nv->bytes[ba].n);
    str_put(&joined, nv->bytes[bb].p, nv->bytes[bb].n);
    int32_t c = -1;
    for (int k = 0; k < nv->n_tokens && c < 0; k++)
        if (nv->bytes[k].n == joined.n && memcmp(nv->bytes[k].p, joined.p, joined.n) == 0)
            c = k;
    if (c < 0) {
        c = nv->n_tokens++;
        nv->bytes[c] = joined;
    } else {
        free(joined.p);
    }
    nv->merged[nv->n_merged][0] = ba;
    nv->merged[nv->n_merged][1] = bb;
    nv->n_merged++;
    for (int w = 0; w < nv->n_words; w++) {
        NaiveWord *x = &nv->words[w];
        int out = 0;
        for (int i = 0; i < x->len;) {
            if (i + 1 < x->len && x->sym[i] == ba && x->sym[i + 1] == bb) {
                x->sym[out++] = c;
                i += 2;
            } else {
                x->sym[out++] = x->sym[i++];
            }
        }
        x->len = out;
    }
    return 1;
}

static void test_incremental_counts(void)
{
    TokOptions o = {.normalization = TOK_NORM_NONE, .contractions = 1};
    int differ = 0;
    for (int trial = 0; trial < 12 && !differ; trial++) {
        /* Words over a tiny alphabet, so pairs overlap ("aaaa"), repeat and
         * re-spell each other ("ab"+"c" vs "a"+"bc"). */
        Str text = {0};
        int n_words = 40 + (int)random_below(200);
        for (int w = 0; w < n_words; w++) {
            int len = 1 + (int)random_below(9);
            for (int i = 0; i < len; i++) {
                char ch = "aabbc"[random_below(trial % 2 ? 5 : 3)];
                str_put(&text, &ch, 1);
            }
            str_puts(&text, "\n");
        }
        Naive nv = {0};
        for (int b = 0; b < 260; b++) {
            uint8_t byte = (uint8_t)(b - 4);
            if (b >= 4)
                str_put(&nv.bytes[b], &byte, 1);
            else
                str_puts(&nv.bytes[b], b == 0 ? "<s>" : b == 1 ? "<pad>" : b == 2 ? "</s>" : "<unk>");
        }
        nv.n_tokens = 260;
        D2vError err;
        tok_split(&o, text.p, text.n, naive_add_piece, &nv, &err);

        int target_merges = 60;
        Tokenizer *t = train_on(text.p, TOK_MIN_VOCAB + target_merges, 1, &o);
        int r = 0;
        while (t && r < tokenizer_n_merges(t)) {
            if (!naive_step(&nv)) {
                differ = 1;
                fprintf(stderr, "trial %d: the naive trainer ran out of pairs at merge %d\n", trial, r);
                break;
            }
            int32_t l, rt, res;
            tokenizer_merge(t, r, &l, &rt, &res);
            if (l != nv.merged[r][0] || rt != nv.merged[r][1]) {
                differ = 1;
                fprintf(stderr, "trial %d, merge %d: incremental (%d, %d), naive (%d, %d)\n", trial, r, l, rt,
                        nv.merged[r][0], nv.merged[r][1]);
                break;
            }
            r++;
        }
        /* And when training stopped short, the naive one has nothing left. */
        if (t && !differ && tokenizer_vocab_size(t) < TOK_MIN_VOCAB + target_merges && naive_step(&nv)) {
            differ = 1;
            fprintf(stderr, "trial %d: stopped after %d merges, the naive trainer found another\n", trial, r);
        }
        tokenizer_free(t);
        for (int w = 0; w < nv.n_words; w++)
            free(nv.words[w].sym);
        free(nv.words);
        for (int k = 0; k < nv.n_tokens; k++)
            free(nv.bytes[k].p);
        free(text.p);
    }
    CHECK(!differ, "incremental training differs from recounting");

    /* Same text, same merges. */
    char *text = real_text(3);
    Tokenizer *a = train_on(text, 700, 1, &o), *b = train_on(text, 700, 1, &o);
    int same = a && b && tokenizer_n_merges(a) == tokenizer_n_merges(b);
    for (int r = 0; same && r < tokenizer_n_merges(a); r++) {
        int32_t x[3], y[3];
        tokenizer_merge(a, r, &x[0], &x[1], &x[2]);
        tokenizer_merge(b, r, &y[0], &y[1], &y[2]);
        same = memcmp(x, y, sizeof x) == 0;
    }
    CHECK(same, "training twice gives different merges");
    tokenizer_free(a);
    tokenizer_free(b);
    free(text);
}

/* ---- hand-written tokenizer files -------------------------------------- */

/* A tokenizer directory: specials, the 256 bytes, extra tokens, <mask>;
 * merges as lines. */
static void write_tokenizer_dir(const char *dir, const char *const *extra, int n_extra, const char *merges_text)
{
    mkdir(dir, 0777);
    json_t *v = json_object();
    int id = 0;
    for (int k = 0; k < 4; k++)
        json_object_set_new(v, (const char *[]){"<s>", "<pad>", "</s>", "<unk>"}[k], json_integer(id++));
    for (int b = 0; b < 256; b++) {
        char spelled[4] = {0};
        utf8proc_encode_char((utf8proc_int32_t)tok_byte_to_unicode((uint8_t)b), (utf8proc_uint8_t *)spelled);
        json_object_set_new(v, spelled, json_integer(id++));
    }
    for (int i = 0; i < n_extra; i++)
        json_object_set_new(v, extra[i], json_integer(id++));
    json_object_set_new(v, "<mask>", json_integer(id++));
    char path[600];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    json_dump_file(v, path, JSON_INDENT(1));
    json_decref(v);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    write_file(path, merges_text, strlen(merges_text));
}

static void check_encoding(const char *dir, const char *text, const char *want)
{
    Tokenizer *t = NULL;
    D2vError err;
    if (tokenizer_load(dir, &t, &err) < 0) {
        CHECK(0, "loading %s: %s", dir, err.msg);
        return;
    }
    char got[512];
    spelled_ids(t, text, got, sizeof got);
    CHECK(strcmp(got, want) == 0, "%s: \"%s\" -> \"%s\", expected \"%s\"", dir, text, got, want);
    tokenizer_free(t);
}

static void test_merge_rank_order(void)
{
    char dir[600];
    const char *const ab_bc[] = {"ab", "bc", "abc", "aa", "aba"};
    path_in_dir(dir, sizeof dir, "rank_ab_first");
    write_tokenizer_dir(dir, ab_bc, 5, "#version: 0.2\na b\nb c\n");
    check_encoding(dir, "abc", "ab c");
    path_in_dir(dir, sizeof dir, "rank_bc_first");
    write_tokenizer_dir(dir, ab_bc, 5, "#version: 0.2\nb c\na b\n");
    check_encoding(dir, "abc", "a bc");
    path_in_dir(dir, sizeof dir, "rank_chain");
    write_tokenizer_dir(dir, ab_bc, 5, "#version: 0.2\na b\nab c\n");
    check_encoding(dir, "abcab abc", "abc ab Ġ abc");
    /* Every occurrence of the best pair is merged, left to right. */
    path_in_dir(dir, sizeof dir, "rank_overlap");
    write_tokenizer_dir(dir, ab_bc, 5, "a a\n"); /* no header: accepted too */
    check_encoding(dir, "aaa aaaa", "aa a Ġ aa aa");
    /* A later-ranked pair waits even when it comes first in the word. */
    path_in_dir(dir, sizeof dir, "rank_position");
    write_tokenizer_dir(dir, ab_bc, 5, "#version: 0.2\nb c\na b\n");
    check_encoding(dir, "abab", "ab ab");
    check_encoding(dir, "abcab", "a bc ab");
    /* GPT-2 merges every occurrence of the best pair before it looks for
     * the next one, even when a merge made from the result outranks it
     * (possible only in hand-made files): "a b" twice, and "ab a" never. */
    path_in_dir(dir, sizeof dir, "rank_all_occurrences");
    write_tokenizer_dir(dir, ab_bc, 5, "#version: 0.2\nab a\na b\n");
    check_encoding(dir, "abab", "ab ab");
}

/* ---- round trips ------------------------------------------------------ */

static void test_round_trip_random(void)
{
    char *corpus = real_text(4);
    for (TokNormalization mode = TOK_NORM_NONE; mode <= TOK_NORM_NFKC; mode++) {
        TokOptions o = {.normalization = mode, .contractions = mode != TOK_NORM_NFC};
        Tokenizer *t = train_on(corpus, 1200, 1, &o);
        if (!t)
            continue;
        int failures = 0;
        for (int trial = 0; trial < 1500; trial++) {
            Str s = {0};
            if (trial % 3 == 0) { /* arbitrary bytes, mostly ill-formed */
                int n = (int)random_below(80);
                for (int i = 0; i < n; i++) {
                    char b = (char)random_below(256);
                    str_put(&s, &b, 1);
                }
                if (n == 0)
                    str_put(&s, "", 0);
            } else {
                random_unicode(&s, (int)random_below(50));
            }
            if (!s.p)
                str_put(&s, "", 0);
            if (!round_trips(t, s.p, s.n) && failures++ < 3) {
                fprintf(stderr, "round trip fails (%s):\n", tok_normalization_name(mode));
                hexdump_short("input", s.p, s.n);
            }
            free(s.p);
        }
        CHECK(failures == 0, "%s: %d random strings do not round-trip", tok_normalization_name(mode), failures);
        for (size_t i = 0; i < sizeof REAL_TEXT / sizeof *REAL_TEXT; i++)
            CHECK(round_trips(t, REAL_TEXT[i], strlen(REAL_TEXT[i])), "%s: real text line %zu",
                  tok_normalization_name(mode), i);
        CHECK(round_trips(t, corpus, strlen(corpus)), "%s: the whole real text", tok_normalization_name(mode));
        CHECK(round_trips(t, "", 0), "empty text");
        tokenizer_free(t);
    }
    free(corpus);
}

static void test_specials_never_from_text(void)
{
    TokOptions o = tok_default_options();
    /* Even trained on text full of them. */
    Str s = {0};
    for (int i = 0; i < 200; i++)
        str_puts(&s, "<s> hello </s> <pad><pad> <unk> <mask> <s></s>\n");
    Tokenizer *t = train_on(s.p, 600, 1, &o);
    if (t) {
        TokIds ids = {0};
        D2vError err;
        tokenizer_encode(t, s.p, s.n, &ids, NULL, &err);
        int specials = 0;
        for (size_t i = 0; i < ids.n; i++)
            specials += tokenizer_is_special(t, ids.ids[i]);
        CHECK(ids.n > 0 && specials == 0, "%d special ids encoded from text", specials);
        CHECK(round_trips(t, s.p, s.n), "text naming specials round-trips");
        /* Decoding a special writes its name, or nothing when skipped. */
        TokSpecials sp = tokenizer_specials(t);
        int32_t seq[] = {sp.bos, ids.ids[0], sp.eos, sp.pad};
        char *out;
        size_t len;
        tokenizer_decode(t, seq, 4, 0, &out, &len, &err);
        CHECK(strncmp(out, "<s><</s><pad>", len) == 0, "decoded \"%s\"", out);
        free(out);
        tokenizer_decode(t, seq, 4, 1, &out, &len, &err);
        CHECK(len == 1 && out[0] == '<', "decoded with specials skipped \"%s\"", out);
        free(out);
        int32_t bad[] = {5, tokenizer_vocab_size(t)};
        CHECK(tokenizer_decode(t, bad, 2, 0, &out, &len, &err) < 0 && strstr(err.msg, "position 1"),
              "an id out of range is an error naming its position");
        tok_ids_free(&ids);
        tokenizer_free(t);
    }
    free(s.p);
}

/* ---- the files -------------------------------------------------------- */

static void test_file_round_trip(void)
{
    char *corpus = real_text(4);
    TokOptions o = {.normalization = TOK_NORM_NFC, .contractions = 0};
    Tokenizer *t = train_on(corpus, 900, 1, &o), *u = NULL;
    char a[600], b[600], path[700];
    path_in_dir(a, sizeof a, "saved_a");
    path_in_dir(b, sizeof b, "saved_b");
    D2vError err;
    CHECK(t && tokenizer_save(t, a, &err) == 0, "save: %s", err.msg);
    CHECK(tokenizer_load(a, &u, &err) == 0, "load: %s", err.msg);
    if (!t || !u) {
        tokenizer_free(t);
        free(corpus);
        return;
    }
    CHECK(tokenizer_vocab_size(u) == tokenizer_vocab_size(t) && tokenizer_n_merges(u) == tokenizer_n_merges(t),
          "sizes after loading");
    TokOptions lo = tokenizer_options(u);
    CHECK(lo.normalization == TOK_NORM_NFC && lo.contractions == 0, "settings after loading");
    int differ = 0;
    for (int trial = 0; trial < 300; trial++) {
        Str s = {0};
        random_unicode(&s, (int)random_below(60));
        if (!s.p)
            str_put(&s, "", 0);
        TokIds x = {0}, y = {0};
        tokenizer_encode(t, s.p, s.n, &x, NULL, &err);
        tokenizer_encode(u, s.p, s.n, &y, NULL, &err);
        differ += x.n != y.n || (x.n && memcmp(x.ids, y.ids, x.n * sizeof *x.ids) != 0);
        tok_ids_free(&x);
        tok_ids_free(&y);
        free(s.p);
    }
    TokIds x = {0}, y = {0};
    tokenizer_encode(t, corpus, strlen(corpus), &x, NULL, &err);
    tokenizer_encode(u, corpus, strlen(corpus), &y, NULL, &err);
    differ += x.n != y.n || memcmp(x.ids, y.ids, x.n * sizeof *x.ids) != 0;
    tok_ids_free(&x);
    tok_ids_free(&y);
    CHECK(differ == 0, "%d texts encode differently after save and load", differ);

    /* The GPT-2 layout, read back with jansson and line by line. */
    snprintf(path, sizeof path, "%s/vocab.json", a);
    json_error_t je;
    json_t *v = json_load_file(path, 0, &je);
    CHECK(v && json_object_size(v) == (size_t)tokenizer_vocab_size(t), "vocab.json holds every token");
    if (v) {
        CHECK(json_integer_value(json_object_get(v, "<s>")) == 0 && json_integer_value(json_object_get(v, "<pad>")) == 1 &&
                  json_integer_value(json_object_get(v, "</s>")) == 2 &&
                  json_integer_value(json_object_get(v, "<unk>")) == 3 &&
                  json_integer_value(json_object_get(v, "<mask>")) == tokenizer_vocab_size(t) - 1,
              "special ids in vocab.json");
        CHECK(json_integer_value(json_object_get(v, "\xc4\xa0")) == 4 + ' ' &&
                  json_integer_value(json_object_get(v, "\xc4\x8a")) == 4 + '\n' &&
                  json_integer_value(json_object_get(v, "\xc4\x80")) == 4,
              "byte tokens spelled in GPT-2's alphabet");
        json_decref(v);
    }
    snprintf(path, sizeof path, "%s/merges.txt", a);
    size_t len;
    uint8_t *merges = read_whole(path, &len);
    int lines = 0;
    for (size_t i = 0; merges && i < len; i++)
        lines += merges[i] == '\n';
    CHECK(merges && len > 14 && memcmp(merges, "#version: 0.2\n", 14) == 0 && lines == tokenizer_n_merges(t) + 1,
          "merges.txt: header and one line per merge");
    free(merges);

    /* Saving what was loaded gives the same bytes. */
    CHECK(tokenizer_save(u, b, &err) == 0, "second save: %s", err.msg);
    const char *names[] = {"vocab.json", "merges.txt", "d2v_tokenizer.json"};
    for (int i = 0; i < 3; i++) {
        size_t la = 0, lb = 0;
        snprintf(path, sizeof path, "%s/%s", a, names[i]);
        uint8_t *fa = read_whole(path, &la);
        snprintf(path, sizeof path, "%s/%s", b, names[i]);
        uint8_t *fb = read_whole(path, &lb);
        CHECK(fa && fb && la == lb && memcmp(fa, fb, la) == 0, "%s differs after load and save", names[i]);
        free(fa);
        free(fb);
    }
    /* A directory without d2v_tokenizer.json (as RoBERTa's) loads with the
     * defaults. */
    snprintf(path, sizeof path, "%s/d2v_tokenizer.json", b);
    unlink(path);
    tokenizer_free(u);
    u = NULL;
    CHECK(tokenizer_load(b, &u, &err) == 0 && tokenizer_options(u).normalization == TOK_NORM_NFKC &&
              tokenizer_options(u).contractions == 1,
          "defaults without d2v_tokenizer.json");
    tokenizer_free(u);
    tokenizer_free(t);
    free(corpus);
}

typedef struct {
    const char *what;
    const char *vocab_json;  /* NULL: keep the valid one */
    const char *merges_txt;  /* NULL: keep the valid one */
    const char *settings;    /* NULL: none */
    const char *must_name;   /* the message must contain this */
    size_t merges_len;       /* 0: strlen(merges_txt) */
} Corruption;

static void test_corrupt_files(void)
{
    const char *const extra[] = {"ab", "abc", "<s"};
    const Corruption cases[] = {
        {"truncated JSON", "{\n \"<s>\": 0,\n \"<pad>\": ", NULL, NULL, "vocab.json:3:", 0},
        /* jansson quotes the text near an error, here a backslash and a
         * newline: the message must stay one line (found by fuzzing). */
        {"newline near the error", "{\"a\\\nb\": 0}", NULL, NULL, "invalid escape near", 0},
        {"not an object", "[1, 2]", NULL, NULL, "vocab.json: expected a JSON object", 0},
        {"empty object", "{}", NULL, NULL, "vocab.json: 0 tokens", 0},
        {"duplicate key", "{\"<s>\": 0, \"<s>\": 1}", NULL, NULL, "vocab.json:1:", 0},
        {"duplicate id", "{\"<s>\": 0, \"<pad>\": 0}", NULL, NULL, "id 0 given to both", 0},
        {"id out of range", "{\"<s>\": 0, \"<pad>\": 7}", NULL, NULL, "outside 0..1", 0},
        {"id not a number", "{\"<s>\": \"0\"}", NULL, NULL, "not an integer", 0},
        {"no <mask>", "{\"<s>\": 0, \"<pad>\": 1, \"</s>\": 2, \"<unk>\": 3}", NULL, NULL, "no <mask> token", 0},
        {"no byte tokens", "{\"<s>\": 0, \"<pad>\": 1, \"</s>\": 2, \"<unk>\": 3, \"<mask>\": 4}", NULL, NULL,
         "no token for byte 0x00", 0},
        {"one part", NULL, "#version: 0.2\na b\nab\n", NULL, "merges.txt:3: expected", 0},
        {"three parts", NULL, "#version: 0.2\na b c\n", NULL, "merges.txt:2: expected", 0},
        {"two spaces", NULL, "#version: 0.2\na  b\n", NULL, "merges.txt:2: expected", 0},
        {"empty line", NULL, "#version: 0.2\na b\n\nab c\n", NULL, "merges.txt:3: expected", 0},
        {"unknown part", NULL, "#version: 0.2\nzz b\n", NULL, "merges.txt:2: \"zz\" is not in vocab.json", 0},
        {"missing result", NULL, "#version: 0.2\na c\n", NULL, "merges.txt:2: the merge's result \"ac\"", 0},
        {"duplicate merge", NULL, "#version: 0.2\na b\nab c\na b\n", NULL, "merges.txt:4: duplicate merge", 0},
        {"makes a special", NULL, "#version: 0.2\n< s\n<s >\n", NULL, "merges.txt:3:", 0},
        {"NUL byte", NULL, "#version: 0.2\na\0b\n", NULL, "merges.txt:2: NUL", 18},
        {"bad setting", NULL, NULL, "{\"normalization\": \"nfd\"}", "d2v_tokenizer.json: normalization \"nfd\"", 0},
        {"unknown setting", NULL, NULL, "{\"lowercase\": true}", "d2v_tokenizer.json: unknown key", 0},
        {"corrupt settings", NULL, NULL, "{\"normalization\": ", "d2v_tokenizer.json:1:", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const Corruption *c = &cases[i];
        char dir[600], path[700];
        path_in_dir(dir, sizeof dir, "corrupt");
        remove_tree(dir);
        write_tokenizer_dir(dir, extra, 3, "#version: 0.2\na b\nab c\n");
        if (c->vocab_json) {
            snprintf(path, sizeof path, "%s/vocab.json", dir);
            write_file(path, c->vocab_json, strlen(c->vocab_json));
        }
        if (c->merges_txt) {
            snprintf(path, sizeof path, "%s/merges.txt", dir);
            size_t len = c->merges_len ? c->merges_len : strlen(c->merges_txt);
            write_file(path, c->merges_txt, len);
        }
        if (c->settings) {
            snprintf(path, sizeof path, "%s/d2v_tokenizer.json", dir);
            write_file(path, c->settings, strlen(c->settings));
        }
        Tokenizer *t = NULL;
        D2vError err = {{0}};
        int rc = tokenizer_load(dir, &t, &err);
        CHECK(rc < 0 && !t && strstr(err.msg, c->must_name) && strchr(err.msg, '\n') == NULL,
              "%s: %s (expected an error containing \"%s\")", c->what, rc < 0 ? err.msg : "loaded", c->must_name);
        tokenizer_free(t);
    }

    /* The valid directory loads; missing files and over-long lines don't. */
    char dir[600], path[700];
    path_in_dir(dir, sizeof dir, "corrupt");
    remove_tree(dir);
    write_tokenizer_dir(dir, extra, 3, "#version: 0.2\na b\nab c\n");
    Tokenizer *t = NULL;
    D2vError err;
    CHECK(tokenizer_load(dir, &t, &err) == 0, "the uncorrupted directory: %s", err.msg);
    tokenizer_free(t);
    t = NULL;

    snprintf(path, sizeof path, "%s/merges.txt", dir);
    Str longline = {0};
    str_puts(&longline, "#version: 0.2\n");
    for (int i = 0; i < 20000; i++)
        str_puts(&longline, "a");
    str_puts(&longline, " b\n");
    write_file(path, longline.p, longline.n);
    free(longline.p);
    CHECK(tokenizer_load(dir, &t, &err) < 0 && strstr(err.msg, "merges.txt:2: line longer than"), "long line: %s",
          err.msg);

    /* A huge file is refused before anything is read (sparse: costs no disk). */
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    CHECK(truncate(path, (off_t)TOK_MAX_FILE_BYTES + 1) == 0, "truncate");
    CHECK(tokenizer_load(dir, &t, &err) < 0 && strstr(err.msg, "vocab.json") && strstr(err.msg, "more than"),
          "huge vocab.json: %s", err.msg);

    unlink(path);
    CHECK(tokenizer_load(dir, &t, &err) < 0 && strstr(err.msg, "vocab.json") && strstr(err.msg, "No such file"),
          "missing vocab.json: %s", err.msg);
    mkdir(path, 0777);
    CHECK(tokenizer_load(dir, &t, &err) < 0 && strstr(err.msg, "vocab.json: not a regular file"),
          "vocab.json a directory: %s", err.msg);
    rmdir(path);
    write_tokenizer_dir(dir, extra, 3, "");
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    unlink(path);
    CHECK(tokenizer_load(dir, &t, &err) < 0 && strstr(err.msg, "merges.txt"), "missing merges.txt: %s", err.msg);
    CHECK(tokenizer_load("/nonexistent/tok", &t, &err) < 0 && strstr(err.msg, "/nonexistent/tok/vocab.json"),
          "missing directory: %s", err.msg);
    CHECK(t == NULL, "nothing returned on failure");
}

/* ---- big inputs ------------------------------------------------------- */

static int collect_ids(void *ctx, const int32_t *ids, size_t n, D2vError *err)
{
    (void)err;
    TokIds *all = ctx;
    for (size_t i = 0; i < n; i++) {
        if (all->n == all->cap) {
            all->cap = all->cap ? 2 * all->cap : 1024;
            all->ids = realloc(all->ids, all->cap * sizeof *all->ids);
        }
        all->ids[all->n++] = ids[i];
    }
    return 0;
}

static void test_big_inputs(void)
{
    char *corpus = real_text(4);
    TokOptions o = tok_default_options();
    Tokenizer *t = train_on(corpus, 1000, 1, &o);
    if (!t) {
        free(corpus);
        return;
    }
    D2vError err;

    /* Chunking is invisible: 3 MB of lines encode as the lines one by one
     * (each line starts with a non-space and ends in '\n', which GPT-2's
     * pattern never joins across). */
    Str many = {0};
    TokIds by_line = {0};
    int line_no = 0;
    while (many.n < (3u << 20)) {
        const char *line = REAL_TEXT[line_no % 15];
        char numbered[512];
        snprintf(numbered, sizeof numbered, "%d. %s", line_no++, line);
        str_puts(&many, numbered);
        tokenizer_encode(t, numbered, strlen(numbered), &by_line, NULL, &err);
    }
    TokIds whole = {0}, streamed = {0};
    CHECK(tokenizer_encode(t, many.p, many.n, &whole, NULL, &err) == 0, "encoding 3 MB: %s", err.msg);
    CHECK(whole.n == by_line.n && memcmp(whole.ids, by_line.ids, whole.n * sizeof *whole.ids) == 0,
          "3 MB in chunks: %zu ids, line by line: %zu", whole.n, by_line.n);
    char path[600];
    path_in_dir(path, sizeof path, "many_lines.txt");
    write_file(path, many.p, many.n);
    FILE *fp = fopen(path, "rb");
    CHECK(fp && tokenizer_encode_stream(t, fp, path, collect_ids, &streamed, NULL, NULL, &err) == 0, "stream: %s",
          err.msg);
    if (fp)
        fclose(fp);
    CHECK(streamed.n == whole.n && memcmp(streamed.ids, whole.ids, whole.n * sizeof *whole.ids) == 0,
          "streamed and in-memory encodings differ");
    tok_ids_free(&by_line);
    tok_ids_free(&whole);
    tok_ids_free(&streamed);
    free(many.p);

    /* One 3 MB line: a word with no spaces at all, then unspaced CJK, then
     * a run of combining marks: forced cuts and piece caps, never a crash,
     * and still decode(encode(x)) == normalize(x). */
    Str line = {0};
    for (int i = 0; i < (1 << 20) + 5000; i++)
        str_put(&line, "a", 1);
    for (int i = 0; i < 400000; i++)
        str_puts(&line, "\xe4\xb8\xad"); /* 中 */
    for (int i = 0; i < 100000; i++)
        str_puts(&line, "\xcc\x81"); /* combining acute */
    str_puts(&line, "\n");
    CHECK(round_trips(t, line.p, line.n), "a 3 MB line round-trips");
    TokIds ids = {0};
    tokenizer_encode(t, line.p, line.n, &ids, NULL, &err);
    CHECK(ids.n >= line.n / TOK_MAX_PIECE_BYTES, "%zu ids for a %zu-byte line", ids.n, line.n);
    tok_ids_free(&ids);
    path_in_dir(path, sizeof path, "one_line.txt");
    write_file(path, line.p, line.n);
    TokCounter *c = NULL;
    int64_t bytes = 0;
    CHECK(tok_counter_create(&o, &c, &err) == 0 && tok_counter_add_file(c, path, NULL, &bytes, &err) == 0 &&
              bytes == (int64_t)line.n,
          "counting a 3 MB line: %s", err.msg);
    tok_counter_free(c);
    free(line.p);

    /* A stream exactly one chunk long is cut as the same bytes in memory
     * ("thth...": a cut before the last byte would split a "t h" merge). */
    Str exact = {0};
    for (int i = 0; i < (1 << 19); i++)
        str_put(&exact, "th", 2);
    path_in_dir(path, sizeof path, "exact_chunk.txt");
    write_file(path, exact.p, exact.n);
    TokIds mem = {0}, str = {0};
    tokenizer_encode(t, exact.p, exact.n, &mem, NULL, &err);
    fp = fopen(path, "rb");
    CHECK(fp && tokenizer_encode_stream(t, fp, path, collect_ids, &str, NULL, NULL, &err) == 0, "stream: %s", err.msg);
    if (fp)
        fclose(fp);
    CHECK(mem.n == str.n && memcmp(mem.ids, str.ids, mem.n * sizeof *mem.ids) == 0,
          "1 MB exactly: %zu ids in memory, %zu streamed", mem.n, str.n);
    tok_ids_free(&mem);
    tok_ids_free(&str);
    free(exact.p);

    /* NUL bytes and an empty input. */
    const char nul[] = "a\0b\0\0 c";
    CHECK(round_trips(t, nul, sizeof nul - 1), "NUL bytes round-trip");
    CHECK(tok_counter_create(&o, &c, &err) == 0 && tok_counter_add_file(c, "/nonexistent.txt", NULL, NULL, &err) < 0 &&
              strstr(err.msg, "/nonexistent.txt"),
          "a missing file names it");
    tok_counter_free(c);
    tokenizer_free(t);
    free(corpus);
}

typedef struct {
    char text[2048];
    int count;
} Warnings;

static void collect_warning(void *ctx, const char *message)
{
    Warnings *w = ctx;
    size_t used = strlen(w->text);
    snprintf(w->text + used, sizeof w->text - used, "%s\n", message);
    w->count++;
}

static void test_train_files(void)
{
    char good[600], bad[600], empty[600], out[600];
    path_in_dir(good, sizeof good, "train_good.txt");
    path_in_dir(bad, sizeof bad, "train_bad.txt");
    path_in_dir(empty, sizeof empty, "train_empty.txt");
    path_in_dir(out, sizeof out, "trained");
    char *corpus = real_text(2);
    write_file(good, corpus, strlen(corpus));
    write_file(bad, "caf\xe9 au lait\n", 13);
    write_file(empty, "", 0);
    const char *paths[] = {good, bad, empty};
    TokOptions o = tok_default_options();
    TokTrainOptions to = {.vocab_size = 500, .min_frequency = 2};
    TokTrainStats st;
    Warnings w = {.count = 0};
    Tokenizer *t = NULL;
    D2vError err;
    CHECK(tokenizer_train(paths, 3, &o, &to, collect_warning, &w, &t, &st, &err) == 0, "train: %s", err.msg);
    char want_bad[700], want_empty[700];
    snprintf(want_bad, sizeof want_bad, "%s: invalid UTF-8 at byte offset 3 (replaced by U+FFFD; 1 place)", bad);
    snprintf(want_empty, sizeof want_empty, "%s: empty file", empty);
    CHECK(w.count == 2 && strstr(w.text, want_bad) && strstr(w.text, want_empty), "warnings:\n%s", w.text);
    CHECK(st.input_bytes == (int64_t)strlen(corpus) + 13 && st.vocab_size <= 500 && st.n_merges > 100,
          "stats: %lld bytes, %d merges, vocabulary %d", (long long)st.input_bytes, st.n_merges, st.vocab_size);
    CHECK(t && tokenizer_save(t, out, &err) == 0, "save: %s", err.msg);
    tokenizer_free(t);
    t = NULL;
    paths[1] = "/nonexistent/file.txt";
    CHECK(tokenizer_train(paths, 2, &o, &to, NULL, NULL, &t, &st, &err) < 0 && !t &&
              strstr(err.msg, "/nonexistent/file.txt"),
          "a missing file: %s", err.msg);
    free(corpus);
}

int main(void)
{
    if (tmp_dir_create("tokenizer") < 0)
        return 1;
    test_byte_alphabet();
    test_utf8_repair();
    test_normalization();
    test_pretokenize();
    test_first_merges();
    test_incremental_counts();
    test_merge_rank_order();
    test_round_trip_random();
    test_specials_never_from_text();
    test_file_round_trip();
    test_corrupt_files();
    test_big_inputs();
    test_train_files();
    remove_tree(tmp_dir);
    return check_summary();
}
