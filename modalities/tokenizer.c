/* tokenizer.c — byte-level BPE in the GPT-2 / RoBERTa layout; see tokenizer.h
 * for the contract. In order: the byte alphabet, UTF-8 repair and
 * normalization, chunked input, pre-tokenization, hash tables, the tokenizer
 * (encode, decode), training, and the files. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* getc_unlocked */
#endif

#include "tokenizer.h"

#include "files.h"

#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <utf8proc.h>

/* Input is read and normalized this many bytes at a time (see tokenizer.h). */
#define CHUNK_BYTES ((size_t)1 << 20)
/* The encode cache holds pieces up to this long: nearly all words are, and
 * long pieces are rare enough not to be worth the memory. */
#define CACHE_MAX_PIECE 64
#define CACHE_MAX_ENTRIES ((size_t)1 << 17)

static const char *const SPECIAL_NAMES[5] = {"<s>", "<pad>", "</s>", "<unk>", "<mask>"};

/* ---- GPT-2's byte alphabet ------------------------------------------- */

/* GPT-2 spells every byte as a visible character so that vocab.json keys are
 * printable and merges.txt can separate a merge's parts with a space: the
 * printable Latin-1 bytes stand for themselves, and the 68 others (C0
 * controls and space, DEL and the C1 controls, NBSP, soft hyphen) are moved,
 * in byte order, to U+0100 onwards. This closed form is that table. */
static int byte_is_self_spelled(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

uint32_t tok_byte_to_unicode(uint8_t byte)
{
    if (byte_is_self_spelled(byte))
        return byte;
    if (byte <= 0x20)
        return 0x100 + byte;              /* 33 bytes: U+0100..U+0120 */
    if (byte <= 0xA0)
        return 0x100 + 33 + (byte - 0x7F); /* 34 bytes: U+0121..U+0142 */
    return 0x143;                         /* 0xAD */
}

int tok_unicode_to_byte(uint32_t cp)
{
    if (cp < 0x100)
        return byte_is_self_spelled(cp) ? (int)cp : -1;
    if (cp <= 0x120)
        return (int)(cp - 0x100);
    if (cp <= 0x142)
        return (int)(0x7F + (cp - 0x121));
    return cp == 0x143 ? 0xAD : -1;
}

/* ---- growable byte buffer -------------------------------------------- */

typedef struct {
    uint8_t *p;
    size_t n, cap;
} ByteBuf;

static int bytebuf_reserve(ByteBuf *b, size_t extra, D2vError *err)
{
    if (extra <= b->cap - b->n)
        return 0;
    if (extra > SIZE_MAX / 2 - b->n)
        return d2v_fail(err, "out of memory: a buffer of more than %zu bytes", SIZE_MAX / 2);
    size_t cap = b->cap ? b->cap : 256;
    while (cap - b->n < extra)
        cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p)
        return d2v_fail(err, "out of memory allocating %zu bytes", cap);
    b->p = p;
    b->cap = cap;
    return 0;
}

static int bytebuf_append(ByteBuf *b, const void *src, size_t n, D2vError *err)
{
    if (bytebuf_reserve(b, n, err))
        return -1;
    if (n)
        memcpy(b->p + b->n, src, n);
    b->n += n;
    return 0;
}

static void bytebuf_free(ByteBuf *b)
{
    free(b->p);
    *b = (ByteBuf){0};
}

/* ---- UTF-8 ----------------------------------------------------------- */

/* The length of the well-formed UTF-8 sequence at s (n >= 1 bytes available),
 * or, when it is ill-formed, minus the length of its maximal subpart: the
 * lead byte and the continuation bytes that could still have completed it
 * (Unicode 15, section 3.9, Table 3-7). Replacing each maximal subpart by one
 * U+FFFD is what Python's errors="replace" and the WHATWG decoder do. */
static int utf8_sequence(const uint8_t *s, size_t n)
{
    uint8_t b = s[0];
    if (b < 0x80)
        return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        need = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        lo = b == 0xE0 ? 0xA0 : 0x80; /* no overlong forms */
        hi = b == 0xED ? 0x9F : 0xBF; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        lo = b == 0xF0 ? 0x90 : 0x80; /* no overlong forms */
        hi = b == 0xF4 ? 0x8F : 0xBF; /* nothing above U+10FFFF */
    } else {
        return -1;
    }
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n)
            return -k;
        uint8_t c = s[k];
        if (c < (k == 1 ? lo : 0x80) || c > (k == 1 ? hi : 0xBF))
            return -k;
    }
    return need + 1;
}

/* The code point at s[i] and its length; an ill-formed byte reads as one
 * U+FFFD of length 1 (only tok_split's callers can hand us such bytes). */
static size_t char_at(const uint8_t *s, size_t n, size_t i, int32_t *cp)
{
    int len = utf8_sequence(s + i, n - i);
    const uint8_t *p = s + i;
    switch (len) {
    case 1: *cp = p[0]; return 1;
    case 2: *cp = (p[0] & 0x1F) << 6 | (p[1] & 0x3F); return 2;
    case 3: *cp = (p[0] & 0x0F) << 12 | (p[1] & 0x3F) << 6 | (p[2] & 0x3F); return 3;
    case 4: *cp = (p[0] & 0x07) << 18 | (p[1] & 0x3F) << 12 | (p[2] & 0x3F) << 6 | (p[3] & 0x3F); return 4;
    default: *cp = 0xFFFD; return 1;
    }
}

static size_t utf8_encode(uint32_t cp, uint8_t out[4])
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (uint8_t)(0xF0 | cp >> 18);
    out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
    out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
    out[3] = (uint8_t)(0x80 | (cp & 0x3F));
    return 4;
}

static void report_reset(Utf8Report *r)
{
    if (r)
        *r = (Utf8Report){.first_offset = -1, .count = 0};
}

static void report_invalid(Utf8Report *r, int64_t offset)
{
    if (!r)
        return;
    if (r->count == 0)
        r->first_offset = offset;
    r->count++;
}

/* Appends s[0..n) to out with each maximal ill-formed subpart replaced by
 * U+FFFD; base is s's offset in the caller's input, for the report. */
static int append_repaired(const uint8_t *s, size_t n, int64_t base, Utf8Report *rep, ByteBuf *out, D2vError *err)
{
    /* Worst case: every byte ill-formed, each becoming 3 bytes. */
    if (n > SIZE_MAX / 3 || bytebuf_reserve(out, 3 * n, err))
        return n > SIZE_MAX / 3 ? d2v_fail(err, "out of memory") : -1;
    uint8_t *dst = out->p + out->n;
    for (size_t i = 0; i < n;) {
        int len = utf8_sequence(s + i, n - i);
        if (len > 0) {
            memcpy(dst, s + i, (size_t)len);
            dst += len;
            i += (size_t)len;
        } else {
            report_invalid(rep, base + (int64_t)i);
            *dst++ = 0xEF, *dst++ = 0xBF, *dst++ = 0xBD;
            i += (size_t)-len;
        }
    }
    out->n = (size_t)(dst - out->p);
    return 0;
}

/* ---- normalization ---------------------------------------------------- */

TokOptions tok_default_options(void)
{
    return (TokOptions){.normalization = TOK_NORM_NFKC, .contractions = 1};
}

static const char *const NORMALIZATION_NAMES[] = {"none", "nfc", "nfkc"};

const char *tok_normalization_name(TokNormalization n)
{
    return n >= TOK_NORM_NONE && n <= TOK_NORM_NFKC ? NORMALIZATION_NAMES[n] : "?";
}

int tok_normalization_parse(const char *name, TokNormalization *out, D2vError *err)
{
    for (int i = 0; i < 3; i++) {
        if (strcmp(name, NORMALIZATION_NAMES[i]) == 0) {
            *out = (TokNormalization)i;
            return 0;
        }
    }
    return d2v_fail(err, "normalization \"%s\": expected none, nfc or nfkc", name);
}

/* Scratch space reused from chunk to chunk. */
typedef struct {
    TokNormalization mode;
    utf8proc_int32_t *cps;
    size_t cps_cap;
    ByteBuf repaired;
} Normalizer;

static void normalizer_free(Normalizer *nz)
{
    free(nz->cps);
    bytebuf_free(&nz->repaired);
}

/* NFC is canonical decomposition then composition; NFKC also applies the
 * compatibility mappings (ligatures, full-width forms, superscripts...).
 * STABLE keeps compositions to those stable across Unicode versions, as
 * utf8proc_NFC/NFKC do. */
static utf8proc_option_t normalization_flags(TokNormalization mode)
{
    utf8proc_option_t flags = UTF8PROC_STABLE | UTF8PROC_COMPOSE;
    return mode == TOK_NORM_NFKC ? flags | UTF8PROC_COMPAT : flags;
}

/* Repairs and normalizes one span that contains non-ASCII bytes. */
static int normalize_span(Normalizer *nz, const uint8_t *s, size_t n, int64_t base, Utf8Report *rep, ByteBuf *out,
                          D2vError *err)
{
    if (nz->mode == TOK_NORM_NONE)
        return append_repaired(s, n, base, rep, out, err);
    nz->repaired.n = 0;
    if (append_repaired(s, n, base, rep, &nz->repaired, err))
        return -1;
    utf8proc_option_t flags = normalization_flags(nz->mode);
    utf8proc_ssize_t count;
    for (;;) {
        /* One slot more than the code points: utf8proc_reencode writes a
         * terminating NUL after the UTF-8 it produces in the same buffer. */
        utf8proc_ssize_t room = nz->cps_cap ? (utf8proc_ssize_t)nz->cps_cap - 1 : 0;
        count = utf8proc_decompose(nz->repaired.p, (utf8proc_ssize_t)nz->repaired.n, nz->cps, room, flags);
        if (count < 0)
            return d2v_fail(err, "normalizing text: %s", utf8proc_errmsg(count));
        if (count <= room)
            break;
        size_t cap = (size_t)count + 1 + (size_t)count / 2;
        utf8proc_int32_t *cps = realloc(nz->cps, cap * sizeof *cps);
        if (!cps)
            return d2v_fail(err, "out of memory normalizing text (%zu code points)", (size_t)count);
        nz->cps = cps;
        nz->cps_cap = cap;
    }
    utf8proc_ssize_t bytes = utf8proc_reencode(nz->cps, count, flags);
    if (bytes < 0)
        return d2v_fail(err, "normalizing text: %s", utf8proc_errmsg(bytes));
    return bytebuf_append(out, nz->cps, (size_t)bytes, err);
}

/* Normalizes s[0..n) onto out. ASCII is its own normal form and a position
 * just before an ASCII character is a normalization boundary (ASCII
 * characters are starters that never combine with what precedes them), so
 * only the spans holding non-ASCII bytes, together with the ASCII character
 * just before them (the base an accent may compose with), go through
 * utf8proc; mostly-ASCII text costs little more than a copy. */
static int normalize_chunk(Normalizer *nz, const uint8_t *s, size_t n, int64_t base, Utf8Report *rep, ByteBuf *out,
                           D2vError *err)
{
    size_t i = 0;
    while (i < n) {
        size_t j = i;
        while (j < n && s[j] < 0x80)
            j++;
        size_t span = j > i ? j - 1 : j;
        if (j == n)
            span = n;
        if (bytebuf_append(out, s + i, span - i, err))
            return -1;
        if (j == n)
            break;
        size_t k = j;
        while (k < n && s[k] >= 0x80)
            k++;
        if (normalize_span(nz, s + span, k - span, base + (int64_t)span, rep, out, err))
            return -1;
        i = k;
    }
    return 0;
}

/* ---- chunked input ---------------------------------------------------- */

static int is_ascii_space(uint8_t b)
{
    return b == ' ' || (b >= 0x09 && b <= 0x0D);
}

static int is_ascii_graphic(uint8_t b)
{
    return b >= 0x21 && b <= 0x7E;
}

/* Where to end a chunk of the window w[0..n) when more input follows. Best:
 * before an ASCII whitespace character that follows a printable ASCII one.
 * Neither normalization (see normalize_chunk) nor GPT-2's pattern looks
 * across that point: the piece holding the printable character ends there,
 * and the pattern starts afresh at the whitespace. Failing that, before an
 * ASCII byte (still a normalization boundary), else between characters. */
static size_t find_cut(const uint8_t *w, size_t n, int at_end)
{
    if (at_end)
        return n;
    for (size_t p = n - 1; p > 0; p--)
        if (is_ascii_space(w[p]) && is_ascii_graphic(w[p - 1]))
            return p;
    for (size_t p = n - 1; p > 0; p--)
        if (w[p] < 0x80)
            return p;
    for (size_t p = n - 1; p > 0; p--)
        if ((w[p] & 0xC0) != 0x80)
            return p;
    return n;
}

/* Raw input, from memory or a stream, handed out in chunks that end at
 * find_cut's points. */
typedef struct {
    FILE *fp;
    const char *name;
    const uint8_t *mem;
    size_t mem_len;
    uint8_t *buf; /* stream: CHUNK_BYTES of lookahead */
    size_t buf_len;
    size_t taken; /* bytes of the window handed out by the last call */
    int eof;
    int64_t offset; /* input offset of the window's first byte */
} Source;

static void source_memory(Source *src, const void *text, size_t len)
{
    *src = (Source){.mem = text, .mem_len = len};
}

static int source_stream(Source *src, FILE *fp, const char *name, D2vError *err)
{
    *src = (Source){.fp = fp, .name = name};
    src->buf = d2v_malloc(CHUNK_BYTES, err);
    return src->buf ? 0 : -1;
}

static void source_free(Source *src)
{
    free(src->buf);
    src->buf = NULL;
}

static int source_fill(Source *src, D2vError *err)
{
    memmove(src->buf, src->buf + src->taken, src->buf_len - src->taken);
    src->buf_len -= src->taken;
    while (src->buf_len < CHUNK_BYTES && !src->eof) {
        size_t got = fread(src->buf + src->buf_len, 1, CHUNK_BYTES - src->buf_len, src->fp);
        src->buf_len += got;
        if (got == 0) {
            if (ferror(src->fp))
                return d2v_fail(err, "cannot read %s: %s", src->name, strerror(errno));
            src->eof = 1;
        }
    }
    /* A full window may be all that is left: know it, so a stream is cut
     * exactly as the same bytes in memory would be. */
    if (!src->eof) {
        int c = getc(src->fp);
        if (c == EOF && ferror(src->fp))
            return d2v_fail(err, "cannot read %s: %s", src->name, strerror(errno));
        if (c == EOF)
            src->eof = 1;
        else
            ungetc(c, src->fp);
    }
    return 0;
}

/* 1 with the next chunk in (*chunk, *n) and its input offset in *base, 0 at
 * the end of the input, -1 on a read error. */
static int source_next(Source *src, const uint8_t **chunk, size_t *n, int64_t *base, D2vError *err)
{
    src->offset += (int64_t)src->taken;
    const uint8_t *window;
    size_t len;
    int at_end;
    if (src->fp) {
        if (source_fill(src, err))
            return -1;
        window = src->buf;
        len = src->buf_len;
        at_end = src->eof;
    } else {
        src->mem += src->taken;
        src->mem_len -= src->taken;
        window = src->mem;
        len = src->mem_len < CHUNK_BYTES ? src->mem_len : CHUNK_BYTES;
        at_end = len == src->mem_len;
    }
    src->taken = 0;
    if (len == 0)
        return 0;
    src->taken = find_cut(window, len, at_end);
    *chunk = window;
    *n = src->taken;
    *base = src->offset;
    return 1;
}

/* The next chunk, repaired and normalized into out (replacing its contents). */
static int next_normalized(Source *src, Normalizer *nz, ByteBuf *out, Utf8Report *rep, D2vError *err)
{
    const uint8_t *chunk;
    size_t n;
    int64_t base;
    int got = source_next(src, &chunk, &n, &base, err);
    if (got <= 0)
        return got;
    out->n = 0;
    return normalize_chunk(nz, chunk, n, base, rep, out, err) ? -1 : 1;
}

/* ---- pre-tokenization ------------------------------------------------- */

typedef enum { CLASS_LETTER, CLASS_NUMBER, CLASS_SPACE, CLASS_OTHER } CharClass;

/* GPT-2's classes: \p{L}, \p{N}, \s (the White_Space property: the Z*
 * categories, TAB..CR and NEL) and everything else (punctuation, symbols,
 * marks, controls including NUL). */
static CharClass classify(int32_t cp)
{
    if (cp < 0x80) {
        if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z')
            return CLASS_LETTER;
        if (cp >= '0' && cp <= '9')
            return CLASS_NUMBER;
        return is_ascii_space((uint8_t)cp) ? CLASS_SPACE : CLASS_OTHER;
    }
    switch (utf8proc_category(cp)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return CLASS_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return CLASS_NUMBER;
    case UTF8PROC_CATEGORY_ZS:
    case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP:
        return CLASS_SPACE;
    default:
        return cp == 0x85 ? CLASS_SPACE : CLASS_OTHER;
    }
}

/* GPT-2 splits off English contractions first, case-sensitively. */
static size_t contraction_length(const uint8_t *s, size_t n, size_t i)
{
    static const char *const suffixes[] = {"s", "t", "re", "ve", "m", "ll", "d"};
    for (size_t k = 0; k < sizeof suffixes / sizeof *suffixes; k++) {
        size_t len = strlen(suffixes[k]);
        if (n - i - 1 >= len && memcmp(s + i + 1, suffixes[k], len) == 0)
            return 1 + len;
    }
    return 0;
}

/* The end of the piece starting at s[i]: the first alternative of GPT-2's
 * pattern that matches there, matched greedily. */
static size_t piece_end(const uint8_t *s, size_t n, size_t i, int contractions)
{
    int32_t cp;
    size_t j = i + char_at(s, n, i, &cp);
    if (contractions && cp == '\'') {
        size_t len = contraction_length(s, n, i);
        if (len)
            return i + len;
    }
    CharClass cls = classify(cp);
    if (cp == ' ' && j < n) {
        /* " ?\p{L}+" and its siblings: one space joins the run after it. */
        int32_t next;
        size_t next_len = char_at(s, n, j, &next);
        CharClass next_cls = classify(next);
        if (next_cls != CLASS_SPACE) {
            cls = next_cls;
            j += next_len;
        }
    }
    if (cls != CLASS_SPACE) {
        while (j < n) {
            size_t len = char_at(s, n, j, &cp);
            if (classify(cp) != cls)
                break;
            j += len;
        }
        return j;
    }
    /* "\s+(?!\S)|\s+": a whitespace run, less its last character when
     * something follows, so that a final space can join the next word. */
    size_t last = i;
    while (j < n) {
        size_t len = char_at(s, n, j, &cp);
        if (classify(cp) != CLASS_SPACE)
            break;
        last = j;
        j += len;
    }
    return j == n || last == i ? j : last;
}

/* Hands piece[0..n) to fn in parts of at most TOK_MAX_PIECE_BYTES, cut at
 * character boundaries (see tokenizer.h). */
static int emit_piece(const uint8_t *p, size_t n, TokPieceFn fn, void *ctx, D2vError *err)
{
    while (n > TOK_MAX_PIECE_BYTES) {
        size_t cut = TOK_MAX_PIECE_BYTES;
        while (cut > 1 && (p[cut] & 0xC0) == 0x80)
            cut--;
        int rc = fn(ctx, p, cut, err);
        if (rc)
            return rc;
        p += cut;
        n -= cut;
    }
    return fn(ctx, p, n, err);
}

static int split_pieces(const TokOptions *o, const uint8_t *s, size_t n, TokPieceFn fn, void *ctx, D2vError *err)
{
    for (size_t i = 0; i < n;) {
        size_t end = piece_end(s, n, i, o->contractions);
        int rc = emit_piece(s + i, end - i, fn, ctx, err);
        if (rc)
            return rc;
        i = end;
    }
    return 0;
}

int tok_split(const TokOptions *o, const char *text, size_t len, TokPieceFn piece, void *ctx, D2vError *err)
{
    return split_pieces(o, (const uint8_t *)text, len, piece, ctx, err);
}

int tok_normalize(const TokOptions *o, const char *text, size_t len, char **out, size_t *out_len,
                  Utf8Report *report, D2vError *err)
{
    report_reset(report);
    *out = NULL;
    Source src;
    source_memory(&src, text, len);
    Normalizer nz = {.mode = o->normalization};
    ByteBuf chunk = {0}, all = {0};
    int got;
    while ((got = next_normalized(&src, &nz, &chunk, report, err)) > 0)
        if (bytebuf_append(&all, chunk.p, chunk.n, err))
            break;
    int rc = got == 0 ? bytebuf_append(&all, "", 1, err) : -1;
    normalizer_free(&nz);
    bytebuf_free(&chunk);
    if (rc) {
        bytebuf_free(&all);
        return -1;
    }
    *out = (char *)all.p;
    *out_len = all.n - 1;
    return 0;
}

/* ---- hash tables ------------------------------------------------------ */

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* Never 0: 0 marks an empty slot. */
static uint64_t hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (uint64_t)n;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 31;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = mix64(h ^ w);
    return h ? h : 1;
}

/* Byte strings -> int64, open addressing, keys copied into one array. */
typedef struct {
    uint64_t hash;
    uint64_t key_off;
    uint32_t key_len;
    int64_t value;
} BytesSlot;

typedef struct {
    BytesSlot *slots;
    size_t cap, count;
    ByteBuf keys;
} BytesMap;

static void bytesmap_free(BytesMap *m)
{
    free(m->slots);
    bytebuf_free(&m->keys);
    *m = (BytesMap){0};
}

static void bytesmap_clear(BytesMap *m)
{
    if (m->slots)
        memset(m->slots, 0, m->cap * sizeof *m->slots);
    m->count = 0;
    m->keys.n = 0;
}

static const uint8_t *bytesmap_key(const BytesMap *m, const BytesSlot *s)
{
    return m->keys.p + s->key_off;
}

static BytesSlot *bytesmap_slot(const BytesMap *m, const uint8_t *key, size_t len, uint64_t hash)
{
    size_t mask = m->cap - 1;
    for (size_t j = hash & mask;; j = (j + 1) & mask) {
        BytesSlot *s = &m->slots[j];
        if (s->hash == 0 ||
            (s->hash == hash && s->key_len == len && memcmp(bytesmap_key(m, s), key, len) == 0))
            return s;
    }
}

static int64_t *bytesmap_find(const BytesMap *m, const void *key, size_t len)
{
    if (m->count == 0)
        return NULL;
    BytesSlot *s = bytesmap_slot(m, key, len, hash_bytes(key, len));
    return s->hash ? &s->value : NULL;
}

static int bytesmap_grow(BytesMap *m, D2vError *err)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    BytesSlot *slots = calloc(cap, sizeof *slots);
    if (!slots)
        return d2v_fail(err, "out of memory growing a table to %zu entries", cap);
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].hash)
            continue;
        size_t j = m->slots[i].hash & (cap - 1);
        while (slots[j].hash)
            j = (j + 1) & (cap - 1);
        slots[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return 0;
}

/* The value slot of key, created holding init if new (*created says which);
 * NULL when out of memory. */
static int64_t *bytesmap_insert(BytesMap *m, const void *key, size_t len, int64_t init, int *created, D2vError *err)
{
    if (len > UINT32_MAX) {
        d2v_fail(err, "a key of %zu bytes is too long", len);
        return NULL;
    }
    if (2 * (m->count + 1) > m->cap && bytesmap_grow(m, err))
        return NULL;
    uint64_t hash = hash_bytes(key, len);
    BytesSlot *s = bytesmap_slot(m, key, len, hash);
    if (created)
        *created = s->hash == 0;
    if (s->hash)
        return &s->value;
    size_t off = m->keys.n;
    if (bytebuf_append(&m->keys, key, len, err))
        return NULL;
    *s = (BytesSlot){.hash = hash, .key_off = off, .key_len = (uint32_t)len, .value = init};
    m->count++;
    return &s->value;
}

/* A pair of token ids -> int32, open addressing. */
#define PAIR_EMPTY UINT64_MAX

typedef struct {
    uint64_t *keys;
    int32_t *values;
    size_t cap, count;
} PairMap;

static uint64_t pair_key(int32_t left, int32_t right)
{
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

static void pairmap_free(PairMap *m)
{
    free(m->keys);
    free(m->values);
    *m = (PairMap){0};
}

static size_t pairmap_slot(const PairMap *m, uint64_t key)
{
    size_t mask = m->cap - 1;
    size_t j = mix64(key) & mask;
    while (m->keys[j] != PAIR_EMPTY && m->keys[j] != key)
        j = (j + 1) & mask;
    return j;
}

static int32_t pairmap_get(const PairMap *m, int32_t left, int32_t right)
{
    if (m->count == 0)
        return -1;
    size_t j = pairmap_slot(m, pair_key(left, right));
    return m->keys[j] == PAIR_EMPTY ? -1 : m->values[j];
}

static int pairmap_grow(PairMap *m, D2vError *err)
{
    size_t cap = m->cap ? m->cap * 2 : 1024;
    uint64_t *keys = malloc(cap * sizeof *keys);
    int32_t *values = malloc(cap * sizeof *values);
    if (!keys || !values) {
        free(keys);
        free(values);
        return d2v_fail(err, "out of memory growing a table to %zu entries", cap);
    }
    for (size_t i = 0; i < cap; i++)
        keys[i] = PAIR_EMPTY;
    PairMap grown = {keys, values, cap, m->count};
    for (size_t i = 0; i < m->cap; i++) {
        if (m->keys[i] == PAIR_EMPTY)
            continue;
        size_t j = pairmap_slot(&grown, m->keys[i]);
        keys[j] = m->keys[i];
        values[j] = m->values[i];
    }
    pairmap_free(m);
    *m = grown;
    return 0;
}

/* Sets (left, right) -> value unless present; returns the value now stored,
 * or INT32_MIN when out of memory. */
static int32_t pairmap_put(PairMap *m, int32_t left, int32_t right, int32_t value, D2vError *err)
{
    if (2 * (m->count + 1) > m->cap && pairmap_grow(m, err))
        return INT32_MIN;
    uint64_t key = pair_key(left, right);
    size_t j = pairmap_slot(m, key);
    if (m->keys[j] == PAIR_EMPTY) {
        m->keys[j] = key;
        m->values[j] = value;
        m->count++;
    }
    return m->values[j];
}

/* ---- the tokenizer ---------------------------------------------------- */

typedef struct {
    int32_t left, right, result;
} Merge;

struct Tokenizer {
    TokOptions opt;
    int32_t n_vocab;
    ByteBuf text;     /* every token's vocab.json spelling, back to back, each NUL-terminated */
    size_t *text_off; /* n_vocab + 1 entries */
    ByteBuf bytes;    /* every token's bytes: what decode emits */
    size_t *bytes_off;
    uint8_t *special;
    size_t cap_vocab;
    BytesMap by_text; /* spelling -> id */
    int32_t byte_id[256];
    Merge *merges; /* rank order */
    int n_merges, cap_merges;
    PairMap rank_of; /* (left, right) -> rank */
    TokSpecials sp;
    /* encode's scratch and cache */
    Normalizer nz;
    ByteBuf norm;
    BytesMap cache;     /* piece -> (offset into cache_ids) << 8 | count */
    TokIds cache_ids;
};

static int tokenizer_new(const TokOptions *o, Tokenizer **out, D2vError *err)
{
    Tokenizer *t = d2v_calloc(1, sizeof *t, err);
    if (!t)
        return -1;
    t->opt = *o;
    t->nz.mode = o->normalization;
    t->sp = (TokSpecials){-1, -1, -1, -1, -1};
    for (int b = 0; b < 256; b++)
        t->byte_id[b] = -1;
    *out = t;
    return 0;
}

void tokenizer_free(Tokenizer *t)
{
    if (!t)
        return;
    bytebuf_free(&t->text);
    bytebuf_free(&t->bytes);
    free(t->text_off);
    free(t->bytes_off);
    free(t->special);
    bytesmap_free(&t->by_text);
    free(t->merges);
    pairmap_free(&t->rank_of);
    normalizer_free(&t->nz);
    bytebuf_free(&t->norm);
    bytesmap_free(&t->cache);
    tok_ids_free(&t->cache_ids);
    free(t);
}

void tok_ids_free(TokIds *ids)
{
    free(ids->ids);
    *ids = (TokIds){0};
}

static int ids_append(TokIds *ids, const int32_t *src, size_t n, D2vError *err)
{
    if (n > ids->cap - ids->n) {
        size_t cap = ids->cap ? ids->cap : 256;
        while (cap - ids->n < n) {
            if (cap > SIZE_MAX / 2 / sizeof *ids->ids)
                return d2v_fail(err, "out of memory: more than %zu token ids", cap);
            cap *= 2;
        }
        int32_t *grown = realloc(ids->ids, cap * sizeof *grown);
        if (!grown)
            return d2v_fail(err, "out of memory holding %zu token ids", cap);
        ids->ids = grown;
        ids->cap = cap;
    }
    memcpy(ids->ids + ids->n, src, n * sizeof *src);
    ids->n += n;
    return 0;
}

/* The spelling of bytes in GPT-2's alphabet. */
static int spell_bytes(const uint8_t *bytes, size_t n, ByteBuf *out, D2vError *err)
{
    if (bytebuf_reserve(out, 2 * n, err))
        return -1;
    for (size_t i = 0; i < n; i++)
        out->n += utf8_encode(tok_byte_to_unicode(bytes[i]), out->p + out->n);
    return 0;
}

/* The bytes a spelling stands for; 0 if it is not spelled in the alphabet. */
static int unspell(const uint8_t *text, size_t n, ByteBuf *out, D2vError *err)
{
    out->n = 0;
    if (bytebuf_reserve(out, n, err))
        return -1;
    for (size_t i = 0; i < n;) {
        int32_t cp;
        int len = utf8_sequence(text + i, n - i);
        if (len <= 0)
            return 0;
        i += char_at(text, n, i, &cp);
        int b = tok_unicode_to_byte((uint32_t)cp);
        if (b < 0)
            return 0;
        out->p[out->n++] = (uint8_t)b;
    }
    return 1;
}

static int special_index(const uint8_t *text, size_t n)
{
    for (int k = 0; k < 5; k++)
        if (strlen(SPECIAL_NAMES[k]) == n && memcmp(SPECIAL_NAMES[k], text, n) == 0)
            return k;
    return -1;
}

/* Adds the next id: its spelling, its bytes, and whether it is special (a
 * named special token, or any spelling outside the byte alphabet). */
static int add_token(Tokenizer *t, const uint8_t *text, size_t text_len, const uint8_t *bytes, size_t bytes_len,
                     int special, D2vError *err)
{
    if (t->n_vocab >= TOK_MAX_VOCAB)
        return d2v_fail(err, "more than %d tokens", TOK_MAX_VOCAB);
    if ((size_t)t->n_vocab + 2 > t->cap_vocab) {
        size_t cap = t->cap_vocab ? 2 * t->cap_vocab : 1024;
        size_t *text_off = realloc(t->text_off, cap * sizeof *text_off);
        if (text_off)
            t->text_off = text_off;
        size_t *bytes_off = realloc(t->bytes_off, cap * sizeof *bytes_off);
        if (bytes_off)
            t->bytes_off = bytes_off;
        uint8_t *sp = realloc(t->special, cap);
        if (sp)
            t->special = sp;
        if (!text_off || !bytes_off || !sp)
            return d2v_fail(err, "out of memory holding %zu tokens", cap);
        t->cap_vocab = cap;
        if (t->n_vocab == 0)
            t->text_off[0] = t->bytes_off[0] = 0;
    }
    int created;
    int64_t *id = bytesmap_insert(&t->by_text, text, text_len, t->n_vocab, &created, err);
    if (!id)
        return -1;
    if (!created)
        return d2v_fail(err, "token \"%.*s\" appears twice", (int)(text_len > 60 ? 60 : text_len), text);
    if (bytebuf_append(&t->text, text, text_len, err) || bytebuf_append(&t->text, "", 1, err) ||
        bytebuf_append(&t->bytes, bytes, bytes_len, err))
        return -1;
    int32_t me = t->n_vocab++;
    t->text_off[t->n_vocab] = t->text.n;
    t->bytes_off[t->n_vocab] = t->bytes.n;
    t->special[me] = (uint8_t)special;
    switch (special_index(text, text_len)) {
    case 0: t->sp.bos = me; break;
    case 1: t->sp.pad = me; break;
    case 2: t->sp.eos = me; break;
    case 3: t->sp.unk = me; break;
    case 4: t->sp.mask = me; break;
    default: break;
    }
    if (!special && bytes_len == 1)
        t->byte_id[bytes[0]] = me;
    return 0;
}

/* Adds a token given by its spelling: bytes follow from the alphabet. */
static int add_spelled_token(Tokenizer *t, const uint8_t *text, size_t len, ByteBuf *scratch, D2vError *err)
{
    int named = special_index(text, len) >= 0;
    int spelled = named ? 0 : unspell(text, len, scratch, err);
    if (spelled < 0)
        return -1;
    if (spelled && scratch->n > 0)
        return add_token(t, text, len, scratch->p, scratch->n, 0, err);
    return add_token(t, text, len, text, len, 1, err);
}

static int add_merge(Tokenizer *t, int32_t left, int32_t right, int32_t result, D2vError *err)
{
    if (t->n_merges == t->cap_merges) {
        int cap = t->cap_merges ? 2 * t->cap_merges : 1024;
        Merge *m = realloc(t->merges, (size_t)cap * sizeof *m);
        if (!m)
            return d2v_fail(err, "out of memory holding %d merges", cap);
        t->merges = m;
        t->cap_merges = cap;
    }
    int32_t rank = pairmap_put(&t->rank_of, left, right, t->n_merges, err);
    if (rank == INT32_MIN)
        return -1;
    if (rank != t->n_merges)
        return d2v_fail(err, "duplicate merge (same as merge %d)", rank + 1);
    t->merges[t->n_merges++] = (Merge){left, right, result};
    return 0;
}

int tokenizer_vocab_size(const Tokenizer *t)
{
    return t->n_vocab;
}

int tokenizer_n_merges(const Tokenizer *t)
{
    return t->n_merges;
}

TokOptions tokenizer_options(const Tokenizer *t)
{
    return t->opt;
}

TokSpecials tokenizer_specials(const Tokenizer *t)
{
    return t->sp;
}

int tokenizer_is_special(const Tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->special[id];
}

const char *tokenizer_token_text(const Tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    if (len)
        *len = t->text_off[id + 1] - t->text_off[id] - 1;
    return (const char *)t->text.p + t->text_off[id];
}

const uint8_t *tokenizer_token_bytes(const Tokenizer *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab)
        return NULL;
    *len = t->bytes_off[id + 1] - t->bytes_off[id];
    return t->bytes.p + t->bytes_off[id];
}

int32_t tokenizer_token_id(const Tokenizer *t, const char *text, size_t len)
{
    int64_t *id = bytesmap_find(&t->by_text, text, len);
    return id ? (int32_t)*id : -1;
}

int tokenizer_merge(const Tokenizer *t, int rank, int32_t *left, int32_t *right, int32_t *result)
{
    if (rank < 0 || rank >= t->n_merges)
        return -1;
    *left = t->merges[rank].left;
    *right = t->merges[rank].right;
    *result = t->merges[rank].result;
    return 0;
}

/* ---- encode ----------------------------------------------------------- */

/* BPE on one piece, as GPT-2's encoder does it: repeatedly take the adjacent
 * pair with the lowest merge rank (the leftmost if it occurs more than once)
 * and merge every occurrence of it, left to right, until no adjacent pair
 * has a merge. Returns the number of ids written to sym. */
static size_t bpe_piece(const Tokenizer *t, const uint8_t *p, size_t n, int32_t *sym)
{
    for (size_t i = 0; i < n; i++)
        sym[i] = t->byte_id[p[i]];
    while (n > 1) {
        int32_t best = INT32_MAX;
        size_t at = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            int32_t rank = pairmap_get(&t->rank_of, sym[i], sym[i + 1]);
            if (rank >= 0 && rank < best) {
                best = rank;
                at = i;
            }
        }
        if (best == INT32_MAX)
            break;
        const Merge m = t->merges[best];
        size_t w = at;
        for (size_t i = at; i < n;) {
            if (i + 1 < n && sym[i] == m.left && sym[i + 1] == m.right) {
                sym[w++] = m.result;
                i += 2;
            } else {
                sym[w++] = sym[i++];
            }
        }
        n = w;
    }
    return n;
}

typedef struct {
    Tokenizer *t;
    TokIds *out;
} EncodeCtx;

/* Remembers a short piece's ids; a full cache is emptied and starts over
 * (cheap, and keeps memory bounded whatever the text). Failing to cache is
 * not an error. */
static void cache_store(Tokenizer *t, const uint8_t *p, size_t n, const int32_t *sym, size_t m)
{
    if (t->cache.count >= CACHE_MAX_ENTRIES) {
        bytesmap_clear(&t->cache);
        t->cache_ids.n = 0;
    }
    size_t off = t->cache_ids.n;
    if (ids_append(&t->cache_ids, sym, m, NULL) < 0)
        return;
    if (!bytesmap_insert(&t->cache, p, n, (int64_t)off << 8 | (int64_t)m, NULL, NULL))
        t->cache_ids.n = off;
}

static int encode_piece(void *ctx, const uint8_t *p, size_t n, D2vError *err)
{
    EncodeCtx *e = ctx;
    Tokenizer *t = e->t;
    if (n <= CACHE_MAX_PIECE) {
        int64_t *hit = bytesmap_find(&t->cache, p, n);
        if (hit)
            return ids_append(e->out, t->cache_ids.ids + (*hit >> 8), (size_t)(*hit & 0xFF), err);
    }
    int32_t sym[TOK_MAX_PIECE_BYTES];
    size_t m = bpe_piece(t, p, n, sym);
    if (n <= CACHE_MAX_PIECE)
        cache_store(t, p, n, sym, m);
    return ids_append(e->out, sym, m, err);
}

static int encode_source(Tokenizer *t, Source *src, TokIds *out, TokIdsFn emit, void *ctx, Utf8Report *report,
                         D2vError *err)
{
    report_reset(report);
    EncodeCtx e = {t, out};
    int got;
    while ((got = next_normalized(src, &t->nz, &t->norm, report, err)) > 0) {
        size_t before = out->n;
        if (split_pieces(&t->opt, t->norm.p, t->norm.n, encode_piece, &e, err))
            return -1;
        if (emit) {
            if (emit(ctx, out->ids + before, out->n - before, err))
                return -1;
            out->n = before;
        }
    }
    return got;
}

int tokenizer_encode(Tokenizer *t, const char *text, size_t len, TokIds *out, Utf8Report *report, D2vError *err)
{
    Source src;
    source_memory(&src, text, len);
    return encode_source(t, &src, out, NULL, NULL, report, err);
}

int tokenizer_encode_stream(Tokenizer *t, FILE *fp, const char *name, TokIdsFn emit, void *ctx, Utf8Report *report,
                            int64_t *bytes_read, D2vError *err)
{
    Source src;
    if (source_stream(&src, fp, name, err))
        return -1;
    TokIds chunk = {0};
    int rc = encode_source(t, &src, &chunk, emit, ctx, report, err);
    if (bytes_read)
        *bytes_read = src.offset + (int64_t)src.taken;
    tok_ids_free(&chunk);
    source_free(&src);
    return rc;
}

int tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, int skip_specials, char **out, size_t *len,
                     D2vError *err)
{
    ByteBuf b = {0};
    for (size_t i = 0; i < n; i++) {
        size_t tl;
        const uint8_t *bytes = tokenizer_token_bytes(t, ids[i], &tl);
        if (!bytes) {
            bytebuf_free(&b);
            return d2v_fail(err, "token id %d (at position %zu) is not in the vocabulary of %d tokens", (int)ids[i],
                            i, t->n_vocab);
        }
        if (skip_specials && t->special[ids[i]])
            continue;
        if (bytebuf_append(&b, bytes, tl, err)) {
            bytebuf_free(&b);
            return -1;
        }
    }
    if (bytebuf_append(&b, "", 1, err)) {
        bytebuf_free(&b);
        return -1;
    }
    *out = (char *)b.p;
    *len = b.n - 1;
    return 0;
}

/* ---- training: counting pieces ---------------------------------------- */

struct TokCounter {
    TokOptions opt;
    BytesMap pieces; /* piece -> occurrences */
    int64_t n_pieces, n_bytes;
    Normalizer nz;
    ByteBuf norm;
};

int tok_counter_create(const TokOptions *o, TokCounter **out, D2vError *err)
{
    TokCounter *c = d2v_calloc(1, sizeof *c, err);
    if (!c)
        return -1;
    c->opt = *o;
    c->nz.mode = o->normalization;
    *out = c;
    return 0;
}

void tok_counter_free(TokCounter *c)
{
    if (!c)
        return;
    bytesmap_free(&c->pieces);
    normalizer_free(&c->nz);
    bytebuf_free(&c->norm);
    free(c);
}

static int count_piece(void *ctx, const uint8_t *p, size_t n, D2vError *err)
{
    TokCounter *c = ctx;
    int64_t *count = bytesmap_insert(&c->pieces, p, n, 0, NULL, err);
    if (!count)
        return -1;
    (*count)++;
    c->n_pieces++;
    return 0;
}

static int count_source(TokCounter *c, Source *src, Utf8Report *report, int64_t *bytes_read, D2vError *err)
{
    report_reset(report);
    int got;
    while ((got = next_normalized(src, &c->nz, &c->norm, report, err)) > 0)
        if (split_pieces(&c->opt, c->norm.p, c->norm.n, count_piece, c, err))
            return -1;
    int64_t bytes = src->offset + (int64_t)src->taken;
    c->n_bytes += bytes;
    if (bytes_read)
        *bytes_read = bytes;
    return got;
}

int tok_counter_add_text(TokCounter *c, const char *text, size_t len, Utf8Report *report, D2vError *err)
{
    Source src;
    source_memory(&src, text, len);
    return count_source(c, &src, report, NULL, err);
}

int tok_counter_add_file(TokCounter *c, const char *path, Utf8Report *report, int64_t *bytes_read, D2vError *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return d2v_fail(err, "cannot open %s: %s", path, strerror(errno));
    Source src;
    int rc = source_stream(&src, fp, path, err);
    if (rc == 0)
        rc = count_source(c, &src, report, bytes_read, err);
    source_free(&src);
    fclose(fp);
    return rc;
}

/* ---- training: merges ------------------------------------------------- */

/* An adjacent pair of symbols in the distinct pieces ("words"). */
typedef struct {
    int32_t left, right;
    int64_t count;   /* occurrences, weighted by the words' counts */
    int32_t *words;  /* words it was added to; may repeat or be stale, never misses one */
    int32_t n_words, cap_words;
    int32_t touched; /* the merge step that last raised its count */
    uint8_t merged;  /* already a merge: new occurrences are not merged twice */
    uint8_t blocked; /* its result would be spelled like a special token */
} Pair;

typedef struct {
    int64_t count;
    int32_t left, right, pair;
} HeapEntry;

/* The pair counts are kept exact as merges rewrite the words; the heap is
 * lazy: it holds, for every live pair, at least one entry whose count is at
 * least the pair's true count, and a popped entry is only trusted when its
 * count is exact (otherwise it goes back with the true count). A pair whose
 * count rises gets a fresh entry at the end of that merge step. */
typedef struct {
    int32_t *sym;  /* every word's symbols, back to back */
    size_t *start; /* word w begins at sym[start[w]] */
    int32_t *len;
    int64_t *count;
    int32_t *seen; /* the merge step that last rewrote the word */
    int32_t n_words;
    Pair *pairs;
    int32_t n_pairs, cap_pairs;
    PairMap index;
    HeapEntry *heap;
    size_t heap_n, heap_cap;
    int32_t *touched;
    size_t n_touched, cap_touched;
    int32_t step;
} Trainer;

static void trainer_free(Trainer *tr)
{
    free(tr->sym);
    free(tr->start);
    free(tr->len);
    free(tr->count);
    free(tr->seen);
    for (int32_t p = 0; p < tr->n_pairs; p++)
        free(tr->pairs[p].words);
    free(tr->pairs);
    pairmap_free(&tr->index);
    free(tr->heap);
    free(tr->touched);
}

/* The heap's order, which is also the tie-breaking rule: higher count first,
 * then smaller left id, then smaller right id. */
static int heap_before(const HeapEntry *x, const HeapEntry *y)
{
    if (x->count != y->count)
        return x->count > y->count;
    if (x->left != y->left)
        return x->left < y->left;
    return x->right < y->right;
}

static int heap_push(Trainer *tr, HeapEntry e, D2vError *err)
{
    if (tr->heap_n == tr->heap_cap) {
        size_t cap = tr->heap_cap ? 2 * tr->heap_cap : 4096;
        HeapEntry *h = realloc(tr->heap, cap * sizeof *h);
        if (!h)
            return d2v_fail(err, "out of memory growing the pair queue to %zu entries", cap);
        tr->heap = h;
        tr->heap_cap = cap;
    }
    size_t i = tr->heap_n++;
    while (i > 0 && heap_before(&e, &tr->heap[(i - 1) / 2])) {
        tr->heap[i] = tr->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    tr->heap[i] = e;
    return 0;
}

static HeapEntry heap_pop(Trainer *tr)
{
    HeapEntry top = tr->heap[0], last = tr->heap[--tr->heap_n];
    size_t i = 0, n = tr->heap_n;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            break;
        if (child + 1 < n && heap_before(&tr->heap[child + 1], &tr->heap[child]))
            child++;
        if (!heap_before(&tr->heap[child], &last))
            break;
        tr->heap[i] = tr->heap[child];
        i = child;
    }
    if (n > 0)
        tr->heap[i] = last;
    return top;
}

static int32_t pair_lookup_or_add(Trainer *tr, int32_t left, int32_t right, D2vError *err)
{
    if (tr->n_pairs == INT32_MAX) {
        d2v_fail(err, "more than %d distinct symbol pairs", INT32_MAX);
        return -1;
    }
    int32_t p = pairmap_put(&tr->index, left, right, tr->n_pairs, err);
    if (p == INT32_MIN)
        return -1;
    if (p == tr->n_pairs) {
        if (tr->n_pairs == tr->cap_pairs) {
            int32_t cap = tr->cap_pairs ? (tr->cap_pairs > INT32_MAX / 2 ? INT32_MAX : 2 * tr->cap_pairs) : 4096;
            Pair *grown = realloc(tr->pairs, (size_t)cap * sizeof *grown);
            if (!grown) {
                d2v_fail(err, "out of memory holding %d symbol pairs", cap);
                return -1;
            }
            tr->pairs = grown;
            tr->cap_pairs = cap;
        }
        tr->pairs[p] = (Pair){.left = left, .right = right, .touched = -1};
        tr->n_pairs++;
    }
    return p;
}

/* Adds delta occurrences of (left, right), found in word w. */
static int pair_add(Trainer *tr, int32_t left, int32_t right, int64_t delta, int32_t w, D2vError *err)
{
    int32_t p = pair_lookup_or_add(tr, left, right, err);
    if (p < 0)
        return -1;
    Pair *pr = &tr->pairs[p];
    pr->count += delta;
    if (delta <= 0)
        return 0;
    if (pr->n_words == 0 || pr->words[pr->n_words - 1] != w) {
        if (pr->n_words == pr->cap_words) {
            int32_t cap = pr->cap_words ? 2 * pr->cap_words : 4;
            int32_t *grown = realloc(pr->words, (size_t)cap * sizeof *grown);
            if (!grown)
                return d2v_fail(err, "out of memory listing the words of a symbol pair");
            pr->words = grown;
            pr->cap_words = cap;
        }
        pr->words[pr->n_words++] = w;
    }
    if (pr->touched != tr->step) {
        pr->touched = tr->step;
        if (tr->n_touched == tr->cap_touched) {
            size_t cap = tr->cap_touched ? 2 * tr->cap_touched : 4096;
            int32_t *grown = realloc(tr->touched, cap * sizeof *grown);
            if (!grown)
                return d2v_fail(err, "out of memory listing changed symbol pairs");
            tr->touched = grown;
            tr->cap_touched = cap;
        }
        tr->touched[tr->n_touched++] = p;
    }
    return 0;
}

/* Queues every pair whose count rose in this step, with its new count. */
static int push_touched(Trainer *tr, D2vError *err)
{
    for (size_t i = 0; i < tr->n_touched; i++) {
        const Pair *pr = &tr->pairs[tr->touched[i]];
        if (pr->merged || pr->blocked || pr->count <= 0)
            continue;
        if (heap_push(tr, (HeapEntry){pr->count, pr->left, pr->right, tr->touched[i]}, err))
            return -1;
    }
    tr->n_touched = 0;
    return 0;
}

/* The live pair with the highest count (ties: heap_before), or -1. */
static int32_t pop_best(Trainer *tr, D2vError *err)
{
    while (tr->heap_n > 0) {
        HeapEntry e = heap_pop(tr);
        const Pair *pr = &tr->pairs[e.pair];
        if (pr->merged || pr->blocked || pr->count <= 0)
            continue;
        if (e.count != pr->count) {
            e.count = pr->count;
            if (heap_push(tr, e, err))
                return -2;
            continue;
        }
        return e.pair;
    }
    return -1;
}

/* One word's symbols, distinct pieces as byte tokens, and the first counts. */
static int trainer_init(Trainer *tr, const TokCounter *c, const Tokenizer *t, D2vError *err)
{
    const BytesMap *m = &c->pieces;
    if (m->count > INT32_MAX)
        return d2v_fail(err, "more than %d distinct pieces", INT32_MAX);
    size_t n = m->count;
    tr->sym = malloc((m->keys.n ? m->keys.n : 1) * sizeof *tr->sym);
    tr->start = malloc((n ? n : 1) * sizeof *tr->start);
    tr->len = malloc((n ? n : 1) * sizeof *tr->len);
    tr->count = malloc((n ? n : 1) * sizeof *tr->count);
    tr->seen = calloc(n ? n : 1, sizeof *tr->seen);
    if (!tr->sym || !tr->start || !tr->len || !tr->count || !tr->seen)
        return d2v_fail(err, "out of memory holding %zu distinct pieces", n);
    size_t at = 0;
    int32_t w = 0;
    for (size_t i = 0; i < m->cap; i++) {
        const BytesSlot *s = &m->slots[i];
        if (!s->hash)
            continue;
        const uint8_t *key = bytesmap_key(m, s);
        tr->start[w] = at;
        tr->len[w] = (int32_t)s->key_len;
        tr->count[w] = s->value;
        for (uint32_t k = 0; k < s->key_len; k++)
            tr->sym[at + k] = t->byte_id[key[k]];
        for (uint32_t k = 0; k + 1 < s->key_len; k++)
            if (pair_add(tr, tr->sym[at + k], tr->sym[at + k + 1], s->value, w, err))
                return -1;
        at += s->key_len;
        w++;
    }
    tr->n_words = w;
    return push_touched(tr, err);
}

/* Rewrites word w with every (a, b), left to right, replaced by c, and moves
 * the counts of the pairs around each occurrence: (x, a) and (b, y) become
 * (x, c) and (c, y). x is the symbol already written, so in "a b a b" the
 * second occurrence's left neighbour is the c just made. */
static int merge_in_word(Trainer *tr, int32_t w, int32_t a, int32_t b, int32_t c, D2vError *err)
{
    int32_t *s = tr->sym + tr->start[w];
    int32_t n = tr->len[w], out = 0;
    int64_t k = tr->count[w];
    for (int32_t i = 0; i < n;) {
        if (i + 1 < n && s[i] == a && s[i + 1] == b) {
            if (out > 0 && (pair_add(tr, s[out - 1], a, -k, w, err) || pair_add(tr, s[out - 1], c, k, w, err)))
                return -1;
            if (i + 2 < n && (pair_add(tr, b, s[i + 2], -k, w, err) || pair_add(tr, c, s[i + 2], k, w, err)))
                return -1;
            if (pair_add(tr, a, b, -k, w, err))
                return -1;
            s[out++] = c;
            i += 2;
        } else {
            s[out++] = s[i++];
        }
    }
    tr->len[w] = out;
    return 0;
}

static int apply_merge(Trainer *tr, int32_t p, int32_t result, D2vError *err)
{
    tr->step++;
    Pair *pr = &tr->pairs[p];
    int32_t a = pr->left, b = pr->right, n = pr->n_words;
    int32_t *words = pr->words; /* taken over: a merged pair needs no list */
    pr->words = NULL;
    pr->n_words = pr->cap_words = 0;
    pr->merged = 1;
    int rc = 0;
    for (int32_t i = 0; i < n && rc == 0; i++) {
        int32_t w = words[i];
        if (tr->seen[w] == tr->step)
            continue;
        tr->seen[w] = tr->step;
        rc = merge_in_word(tr, w, a, b, result, err);
    }
    free(words);
    return rc ? -1 : push_touched(tr, err);
}

static int add_named_special(Tokenizer *t, int k, D2vError *err)
{
    const char *name = SPECIAL_NAMES[k];
    return add_token(t, (const uint8_t *)name, strlen(name), (const uint8_t *)name, strlen(name), 1, err);
}

/* RoBERTa's order: <s> <pad> </s> <unk>, then the 256 bytes. */
static int add_initial_tokens(Tokenizer *t, D2vError *err)
{
    for (int k = 0; k < 4; k++)
        if (add_named_special(t, k, err))
            return -1;
    ByteBuf spelled = {0};
    int rc = 0;
    for (int b = 0; b < 256 && rc == 0; b++) {
        uint8_t byte = (uint8_t)b;
        spelled.n = 0;
        rc = spell_bytes(&byte, 1, &spelled, err) || add_token(t, spelled.p, spelled.n, &byte, 1, 0, err) ? -1 : 0;
    }
    bytebuf_free(&spelled);
    return rc;
}

/* Makes the merge of pair p (already popped): its token, new or existing,
 * and the rewrite of the words. Returns 1 if the pair is blocked instead. */
static int make_merge(Tokenizer *t, Trainer *tr, int32_t p, ByteBuf *text, ByteBuf *bytes, D2vError *err)
{
    int32_t a = tr->pairs[p].left, b = tr->pairs[p].right;
    size_t la, lb, ba, bb;
    const char *ta = tokenizer_token_text(t, a, &la), *tb = tokenizer_token_text(t, b, &lb);
    text->n = bytes->n = 0;
    if (bytebuf_append(text, ta, la, err) || bytebuf_append(text, tb, lb, err))
        return -1;
    const int64_t *existing = bytesmap_find(&t->by_text, text->p, text->n);
    if (existing && t->special[*existing]) {
        tr->pairs[p].blocked = 1;
        return 1;
    }
    int32_t result = existing ? (int32_t)*existing : t->n_vocab;
    if (!existing) {
        const uint8_t *xa = tokenizer_token_bytes(t, a, &ba), *xb = tokenizer_token_bytes(t, b, &bb);
        if (bytebuf_append(bytes, xa, ba, err) || bytebuf_append(bytes, xb, bb, err) ||
            add_token(t, text->p, text->n, bytes->p, bytes->n, 0, err))
            return -1;
    }
    if (add_merge(t, a, b, result, err))
        return -1;
    return apply_merge(tr, p, result, err);
}

int tokenizer_train_counts(const TokCounter *c, const TokTrainOptions *to, Tokenizer **out, TokTrainStats *stats,
                           D2vError *err)
{
    *out = NULL;
    if (to->vocab_size < TOK_MIN_VOCAB || to->vocab_size > TOK_MAX_VOCAB)
        return d2v_fail(err, "vocabulary size %d: expected %d (4 specials, 256 bytes, <mask>) to %d", to->vocab_size,
                        TOK_MIN_VOCAB, TOK_MAX_VOCAB);
    if (to->min_frequency < 1)
        return d2v_fail(err, "minimum pair frequency %lld: expected at least 1", (long long)to->min_frequency);
    if (c->n_pieces == 0)
        return d2v_fail(err, "no text to learn merges from");
    Tokenizer *t;
    if (tokenizer_new(&c->opt, &t, err))
        return -1;
    Trainer tr = {0};
    ByteBuf text = {0}, bytes = {0};
    int rc = add_initial_tokens(t, err) || trainer_init(&tr, c, t, err) ? -1 : 0;
    while (rc == 0 && t->n_vocab < to->vocab_size - 1) {
        int32_t p = pop_best(&tr, err);
        if (p == -2)
            rc = -1;
        if (p < 0 || tr.pairs[p].count < to->min_frequency)
            break;
        if (make_merge(t, &tr, p, &text, &bytes, err) < 0)
            rc = -1;
    }
    if (rc == 0)
        rc = add_named_special(t, 4, err);
    if (rc == 0 && stats)
        *stats = (TokTrainStats){.input_bytes = c->n_bytes,
                                 .pieces = c->n_pieces,
                                 .distinct_pieces = (int64_t)c->pieces.count,
                                 .n_merges = t->n_merges,
                                 .vocab_size = t->n_vocab};
    trainer_free(&tr);
    bytebuf_free(&text);
    bytebuf_free(&bytes);
    if (rc) {
        tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

int tokenizer_train(const char *const *paths, int n_paths, const TokOptions *o, const TokTrainOptions *t,
                    TokWarnFn warn, void *warn_ctx, Tokenizer **out, TokTrainStats *stats, D2vError *err)
{
    *out = NULL;
    TokCounter *c;
    if (tok_counter_create(o, &c, err))
        return -1;
    int rc = 0;
    for (int i = 0; i < n_paths && rc == 0; i++) {
        Utf8Report rep;
        int64_t bytes = 0;
        rc = tok_counter_add_file(c, paths[i], &rep, &bytes, err);
        char msg[D2V_ERR_LEN];
        if (rc == 0 && warn && rep.count > 0) {
            snprintf(msg, sizeof msg, "%s: invalid UTF-8 at byte offset %lld (replaced by U+FFFD; %lld place%s)",
                     paths[i], (long long)rep.first_offset, (long long)rep.count, rep.count == 1 ? "" : "s");
            warn(warn_ctx, msg);
        }
        if (rc == 0 && warn && bytes == 0) {
            snprintf(msg, sizeof msg, "%s: empty file", paths[i]);
            warn(warn_ctx, msg);
        }
    }
    if (rc == 0)
        rc = tokenizer_train_counts(c, t, out, stats, err);
    tok_counter_free(c);
    return rc;
}

/* ---- files ------------------------------------------------------------ */

#define VOCAB_FILE "vocab.json"
#define MERGES_FILE "merges.txt"
#define SETTINGS_FILE "d2v_tokenizer.json"

/* A token as messages show it: quoted, with control characters and
 * ill-formed UTF-8 escaped and long ones shortened, so that an error stays
 * one readable line whatever garbage the file held. */
static const char *shown(const char *s, size_t n, char out[96])
{
    const uint8_t *u = (const uint8_t *)s;
    size_t w = 0;
    out[w++] = '"';
    for (size_t i = 0; i < n;) {
        if (w >= 86) {
            w += (size_t)snprintf(out + w, 96 - w, "...");
            break;
        }
        int len = utf8_sequence(u + i, n - i);
        if (len > 1) {
            memcpy(out + w, u + i, (size_t)len);
            w += (size_t)len;
            i += (size_t)len;
        } else if (len == 1 && u[i] >= 0x20 && u[i] != 0x7F && u[i] != '"' && u[i] != '\\') {
            out[w++] = (char)u[i++];
        } else {
            w += (size_t)snprintf(out + w, 96 - w, "\\x%02X", u[i++]);
        }
    }
    out[w++] = '"';
    out[w] = 0;
    return out;
}

static int join_path(char *out, size_t size, const char *dir, const char *name, D2vError *err)
{
    if ((size_t)snprintf(out, size, "%s/%s", dir, name) >= size)
        return d2v_fail(err, "path too long: %s/%s", dir, name);
    return 0;
}

/* A regular file no larger than TOK_MAX_FILE_BYTES. */
static int check_input_file(const char *path, D2vError *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return d2v_fail(err, "cannot read %s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return d2v_fail(err, "%s: not a regular file", path);
    if (st.st_size > TOK_MAX_FILE_BYTES)
        return d2v_fail(err, "%s: %lld bytes, more than the %d MB a tokenizer file may have", path,
                        (long long)st.st_size, TOK_MAX_FILE_BYTES >> 20);
    return 0;
}

static int load_json(const char *path, json_t **out, D2vError *err)
{
    if (check_input_file(path, err))
        return -1;
    json_error_t e;
    *out = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
    if (!*out) /* jansson's text may quote a newline; d2v_fail keeps one line */
        return d2v_fail(err, "%s:%d:%d: %s", path, e.line, e.column, e.text);
    return 0;
}

static int load_settings(const char *path, TokOptions *o, D2vError *err)
{
    json_t *root;
    if (load_json(path, &root, err))
        return -1;
    int rc = json_is_object(root) ? 0 : d2v_fail(err, "%s: expected a JSON object", path);
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        if (rc)
            break;
        if (strcmp(key, "normalization") == 0) {
            rc = json_is_string(v) ? tok_normalization_parse(json_string_value(v), &o->normalization, err)
                                   : d2v_fail(err, "normalization is not a string");
        } else if (strcmp(key, "contractions") == 0) {
            rc = json_is_boolean(v) ? 0 : d2v_fail(err, "contractions is not true or false");
            o->contractions = json_is_true(v);
        } else {
            rc = d2v_fail(err, "unknown key \"%s\" (expected normalization, contractions)", key);
        }
        if (rc)
            d2v_fail_prefix(err, "%s: ", path);
    }
    json_decref(root);
    return rc;
}

/* vocab.json: an object of spelling -> id whose ids are exactly 0..n-1,
 * added to t in id order. */
static int load_vocab(Tokenizer *t, const char *path, D2vError *err)
{
    json_t *root;
    if (load_json(path, &root, err))
        return -1;
    char a[96], b[96];
    size_t n = json_is_object(root) ? json_object_size(root) : 0;
    int rc = 0;
    if (!json_is_object(root))
        rc = d2v_fail(err, "%s: expected a JSON object of token -> id", path);
    else if (n == 0 || n > TOK_MAX_VOCAB)
        rc = d2v_fail(err, "%s: %zu tokens (expected 1 to %d)", path, n, TOK_MAX_VOCAB);
    const char **by_id = rc ? NULL : d2v_calloc(n, sizeof *by_id, err);
    size_t *len_of = rc ? NULL : d2v_calloc(n, sizeof *len_of, err);
    if (rc == 0 && (!by_id || !len_of))
        rc = -1;
    const char *key;
    size_t key_len;
    json_t *v;
    if (rc == 0) {
        json_object_keylen_foreach(root, key, key_len, v)
        {
            json_int_t id = json_is_integer(v) ? json_integer_value(v) : -1;
            if (!json_is_integer(v))
                rc = d2v_fail(err, "%s: token %s: the id is not an integer", path, shown(key, key_len, a));
            else if (id < 0 || (size_t)id >= n)
                rc = d2v_fail(err, "%s: token %s: id %lld outside 0..%zu (the ids must number the tokens from 0)",
                              path, shown(key, key_len, a), (long long)id, n - 1);
            else if (by_id[id])
                rc = d2v_fail(err, "%s: id %lld given to both %s and %s", path, (long long)id,
                              shown(by_id[id], len_of[id], a), shown(key, key_len, b));
            else if (key_len == 0)
                rc = d2v_fail(err, "%s: an empty token (id %lld)", path, (long long)id);
            if (rc)
                break;
            by_id[id] = key;
            len_of[id] = key_len;
        }
    }
    ByteBuf scratch = {0};
    for (size_t id = 0; rc == 0 && id < n; id++)
        if (add_spelled_token(t, (const uint8_t *)by_id[id], len_of[id], &scratch, err))
            rc = d2v_fail_prefix(err, "%s: ", path);
    bytebuf_free(&scratch);
    free(by_id);
    free(len_of);
    json_decref(root);
    return rc;
}

/* One merges.txt line "left right": both parts and their concatenation must
 * be tokens, none of them special. */
static int parse_merge(Tokenizer *t, const char *line, size_t len, ByteBuf *joined, D2vError *err)
{
    char a[96];
    const char *space = memchr(line, ' ', len);
    if (!space || space == line || space == line + len - 1 || memchr(space + 1, ' ', len - (size_t)(space - line) - 1))
        return d2v_fail(err, "expected \"left right\" (two tokens and one space), got %s", shown(line, len, a));
    size_t left_len = (size_t)(space - line), right_len = len - left_len - 1;
    int32_t left = tokenizer_token_id(t, line, left_len), right = tokenizer_token_id(t, space + 1, right_len);
    if (left < 0)
        return d2v_fail(err, "%s is not in " VOCAB_FILE, shown(line, left_len, a));
    if (right < 0)
        return d2v_fail(err, "%s is not in " VOCAB_FILE, shown(space + 1, right_len, a));
    joined->n = 0;
    if (bytebuf_append(joined, line, left_len, err) || bytebuf_append(joined, space + 1, right_len, err))
        return -1;
    int32_t result = tokenizer_token_id(t, (const char *)joined->p, joined->n);
    if (result < 0)
        return d2v_fail(err, "the merge's result %s is not in " VOCAB_FILE,
                        shown((const char *)joined->p, joined->n, a));
    if (t->special[left] || t->special[right] || t->special[result])
        return d2v_fail(err, "the merge %s involves a special token", shown(line, len, a));
    return add_merge(t, left, right, result, err);
}

static int load_merges(Tokenizer *t, const char *path, D2vError *err)
{
    if (check_input_file(path, err))
        return -1;
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return d2v_fail(err, "cannot read %s: %s", path, strerror(errno));
    char *line = d2v_malloc(TOK_MAX_LINE_BYTES + 1, err);
    ByteBuf joined = {0};
    int rc = line ? 0 : -1, got;
    size_t len = 0;
    long line_no = 0;
    while (rc == 0 &&
           (got = read_text_line(fp, line, TOK_MAX_LINE_BYTES, &len, path, line_no + 1, "merges file", err)) != 0) {
        if (got < 0) {
            rc = -1;
            break;
        }
        line_no++;
        /* GPT-2's header; every later line is a merge (tokens may begin
         * with '#'). */
        if (line_no == 1 && strncmp(line, "#version", 8) == 0)
            continue;
        if (parse_merge(t, line, len, &joined, err))
            rc = d2v_fail_prefix(err, "%s:%ld: ", path, line_no);
    }
    bytebuf_free(&joined);
    free(line);
    fclose(fp);
    return rc;
}

/* Everything encode relies on: the specials d2v uses and all 256 bytes. */
static int check_complete(const Tokenizer *t, const char *vocab_path, D2vError *err)
{
    const int32_t ids[5] = {t->sp.bos, t->sp.pad, t->sp.eos, t->sp.unk, t->sp.mask};
    for (int k = 0; k < 5; k++)
        if (ids[k] < 0)
            return d2v_fail(err, "%s: no %s token (d2v needs <s> <pad> </s> <unk> <mask>)", vocab_path,
                            SPECIAL_NAMES[k]);
    for (int b = 0; b < 256; b++) {
        if (t->byte_id[b] < 0) {
            uint8_t spelled[4];
            size_t n = utf8_encode(tok_byte_to_unicode((uint8_t)b), spelled);
            return d2v_fail(err, "%s: no token for byte 0x%02X (\"%.*s\"); byte-level BPE needs all 256", vocab_path,
                            b, (int)n, (const char *)spelled);
        }
    }
    return 0;
}

int tokenizer_load(const char *dir, Tokenizer **out, D2vError *err)
{
    *out = NULL;
    char vocab[4096], merges[4096], settings[4096];
    if (join_path(vocab, sizeof vocab, dir, VOCAB_FILE, err) || join_path(merges, sizeof merges, dir, MERGES_FILE, err) ||
        join_path(settings, sizeof settings, dir, SETTINGS_FILE, err))
        return -1;
    TokOptions o = tok_default_options();
    struct stat st;
    if (stat(settings, &st) == 0 && load_settings(settings, &o, err))
        return -1;
    Tokenizer *t;
    if (tokenizer_new(&o, &t, err))
        return -1;
    if (load_vocab(t, vocab, err) || check_complete(t, vocab, err) || load_merges(t, merges, err)) {
        tokenizer_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

typedef int (*FileWriter)(FILE *fp, const Tokenizer *t);

static int write_vocab(FILE *fp, const Tokenizer *t)
{
    json_t *root = json_object();
    int rc = root ? 0 : -1;
    for (int32_t id = 0; rc == 0 && id < t->n_vocab; id++)
        rc = json_object_set_new(root, tokenizer_token_text(t, id, NULL), json_integer(id));
    /* One token per line: readable, and load errors get useful line numbers. */
    if (rc == 0)
        rc = json_dumpf(root, fp, JSON_INDENT(1)) || fputc('\n', fp) == EOF ? -1 : 0;
    json_decref(root);
    return rc;
}

static int write_merges(FILE *fp, const Tokenizer *t)
{
    if (fputs("#version: 0.2\n", fp) == EOF)
        return -1;
    for (int r = 0; r < t->n_merges; r++)
        if (fprintf(fp, "%s %s\n", tokenizer_token_text(t, t->merges[r].left, NULL),
                    tokenizer_token_text(t, t->merges[r].right, NULL)) < 0)
            return -1;
    return 0;
}

static int write_settings(FILE *fp, const Tokenizer *t)
{
    return fprintf(fp, "{\n \"normalization\": \"%s\",\n \"contractions\": %s\n}\n",
                   tok_normalization_name(t->opt.normalization), t->opt.contractions ? "true" : "false") < 0
               ? -1
               : 0;
}

/* Written to PATH.tmp and renamed, so a failed save never leaves a
 * half-written file under the real name. */
static int write_atomically(const char *dir, const char *name, FileWriter write, const Tokenizer *t, D2vError *err)
{
    char path[4096], tmp[4100];
    if (join_path(path, sizeof path, dir, name, err))
        return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *fp = fopen(tmp, "w");
    if (!fp)
        return d2v_fail(err, "cannot write %s: %s", tmp, strerror(errno));
    int ok = write(fp, t) == 0 && !ferror(fp);
    int saved = errno;
    ok = fclose(fp) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        saved = ok ? errno : saved;
        remove(tmp);
        return d2v_fail(err, "cannot write %s: %s", path, saved ? strerror(saved) : "write error");
    }
    return 0;
}

int tokenizer_save(const Tokenizer *t, const char *dir, D2vError *err)
{
    struct stat st;
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return d2v_fail(err, "cannot create directory %s: %s", dir, strerror(errno));
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return d2v_fail(err, "%s: not a directory", dir);
    return write_atomically(dir, VOCAB_FILE, write_vocab, t, err) ||
                   write_atomically(dir, MERGES_FILE, write_merges, t, err) ||
                   write_atomically(dir, SETTINGS_FILE, write_settings, t, err)
               ? -1
               : 0;
}
