/* tokenizer.h — the text modality's byte-level BPE tokenizer, in the layout
 * GPT-2 and RoBERTa use, so their tools read what d2v writes and d2v reads
 * theirs:
 *
 *   1. normalization (utf8proc: NFKC by default, or NFC, or none); ill-formed
 *      UTF-8 is replaced by U+FFFD, one per maximal ill-formed subpart (the
 *      Unicode recommendation Python and browsers follow), and reported;
 *   2. pre-tokenization with GPT-2's pattern
 *        's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
 *      evaluated by hand over utf8proc's general categories (\s is the
 *      Unicode White_Space property); a space before a word belongs to it;
 *   3. byte-level BPE over each piece's UTF-8 bytes: the 256 bytes are all
 *      tokens, so no input is unknown, and decode(encode(x)) == normalize(x).
 *
 * NUL and other control characters are ordinary text: they pass through
 * normalization unchanged, form punctuation-class pieces, and come back from
 * decode byte for byte.
 *
 * A tokenizer directory holds vocab.json (token -> id; tokens spelled in
 * GPT-2's byte-to-unicode alphabet), merges.txt ("#version: 0.2", then one
 * "left right" merge per line, highest priority first) and d2v_tokenizer.json
 * (normalization and contraction settings; a directory without it, e.g.
 * RoBERTa's, loads with the defaults). Trained vocabularies use RoBERTa's
 * order: <s>=0 <pad>=1 </s>=2 <unk>=3, the 256 bytes (4 + byte value), the
 * merges' tokens in merge order, and <mask> last. Special tokens are never
 * produced from text: "<s>" in the input is the three bytes '<' 's' '>'.
 *
 * Input is processed in chunks of about 1 MB, cut before an ASCII whitespace
 * character that follows a printable ASCII one: no normalization or
 * pre-tokenization step looks across such a point, so chunking changes
 * nothing. Only 1 MB without any such point (one "word" of a megabyte, or a
 * megabyte of unspaced CJK) is cut elsewhere — before an ASCII byte if there
 * is one, else between characters — which may split a piece there. Pieces are
 * also split every TOK_MAX_PIECE_BYTES bytes (at a character boundary), which
 * bounds the cost of BPE on garbage; GPT-2 has no such limit, so only pieces
 * longer than that may be encoded differently by other tools. */
#ifndef D2V_TOKENIZER_H
#define D2V_TOKENIZER_H

#include "common.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define TOK_MAX_PIECE_BYTES 512
/* 4 specials + 256 bytes + <mask>: the smallest vocabulary. */
#define TOK_MIN_VOCAB 261
#define TOK_MAX_VOCAB (1 << 21)
/* Bounds on what loading will read: vocab.json, merges.txt and
 * d2v_tokenizer.json larger than this, or merges.txt lines longer, are
 * refused rather than allocated for. GPT-2's files are 1 MB and 456 KB. */
#define TOK_MAX_FILE_BYTES (64 << 20)
#define TOK_MAX_LINE_BYTES 16384

typedef enum { TOK_NORM_NONE, TOK_NORM_NFC, TOK_NORM_NFKC } TokNormalization;

typedef struct {
    TokNormalization normalization; /* default NFKC */
    int contractions;               /* GPT-2's 's 't 're 've 'm 'll 'd pieces; default on */
} TokOptions;

TokOptions tok_default_options(void);
/* "none" | "nfc" | "nfkc" */
int tok_normalization_parse(const char *name, TokNormalization *out, D2vError *err);
const char *tok_normalization_name(TokNormalization n);

/* What ill-formed UTF-8 a call met: how many maximal ill-formed subparts it
 * replaced by U+FFFD, and the byte offset (in that call's input) of the first
 * one, -1 if none. Every function taking one resets it first. */
typedef struct {
    int64_t first_offset;
    int64_t count;
} Utf8Report;

/* GPT-2's byte-to-unicode alphabet: printable Latin-1 bytes stand for
 * themselves, the other 68 are moved in byte order to U+0100..U+0143.
 * tok_unicode_to_byte returns -1 for a code point outside the alphabet. */
uint32_t tok_byte_to_unicode(uint8_t byte);
int tok_unicode_to_byte(uint32_t codepoint);

/* normalize(x) as the tokenizer sees it: a malloc'ed, NUL-terminated copy
 * (which may also contain NULs; *out_len is its length). */
int tok_normalize(const TokOptions *o, const char *text, size_t len, char **out, size_t *out_len,
                  Utf8Report *report, D2vError *err);

/* Pre-tokenization of already normalized text: calls piece(ctx, ...) for each
 * piece in order; the pieces concatenate to the input. A non-zero return from
 * piece stops the split and is returned. Ill-formed bytes (which normalized
 * text has none of) count as single punctuation-class characters. */
typedef int (*TokPieceFn)(void *ctx, const uint8_t *piece, size_t len, D2vError *err);
int tok_split(const TokOptions *o, const char *text, size_t len, TokPieceFn piece, void *ctx, D2vError *err);

/* ---- the tokenizer ---------------------------------------------------- */

typedef struct Tokenizer Tokenizer;

typedef struct {
    int32_t bos, pad, eos, unk, mask; /* <s> <pad> </s> <unk> <mask> */
} TokSpecials;

/* A growable id array: encode appends to it. Start it zeroed. */
typedef struct {
    int32_t *ids;
    size_t n, cap;
} TokIds;
void tok_ids_free(TokIds *ids);

/* Loads DIR/vocab.json, DIR/merges.txt and (if present) DIR/d2v_tokenizer.json.
 * Every inconsistency is a one-line error naming the file and, where there is
 * one, the line: corrupt JSON, ids that are not exactly 0..n-1, a missing
 * special or byte token, a merge whose parts or result are not tokens or
 * whose result is a special token, duplicate merges, over-long lines. */
int tokenizer_load(const char *dir, Tokenizer **out, D2vError *err);
/* Writes the three files (each via a temporary file and rename), creating
 * DIR if needed (not its parents). */
int tokenizer_save(const Tokenizer *t, const char *dir, D2vError *err);
void tokenizer_free(Tokenizer *t);

int tokenizer_vocab_size(const Tokenizer *t);
int tokenizer_n_merges(const Tokenizer *t);
TokOptions tokenizer_options(const Tokenizer *t);
TokSpecials tokenizer_specials(const Tokenizer *t);
/* 1 for the special tokens, and for any other vocab.json entry that is not
 * spelled in the byte alphabet (no text encodes to those either). */
int tokenizer_is_special(const Tokenizer *t, int32_t id);
/* The token as spelled in vocab.json; NULL for an id out of range. */
const char *tokenizer_token_text(const Tokenizer *t, int32_t id, size_t *len);
/* The bytes decode emits for the token (a special's own spelling); NULL for
 * an id out of range. */
const uint8_t *tokenizer_token_bytes(const Tokenizer *t, int32_t id, size_t *len);
/* The id of a vocab.json spelling, -1 if absent. */
int32_t tokenizer_token_id(const Tokenizer *t, const char *text, size_t len);
/* The merge of rank r (0 = applied first): left + right -> result. */
int tokenizer_merge(const Tokenizer *t, int rank, int32_t *left, int32_t *right, int32_t *result);

/* Appends the ids of text to out. Not thread-safe on one Tokenizer: it keeps
 * a cache of recently encoded pieces (that is what makes encoding fast;
 * bounded, cleared when full). */
int tokenizer_encode(Tokenizer *t, const char *text, size_t len, TokIds *out, Utf8Report *report, D2vError *err);

/* Encodes a stream chunk by chunk in bounded memory, handing each chunk's ids
 * to emit; the ids are those of encoding the whole stream at once. name is
 * for messages; *bytes_read (if non-NULL) the input size. */
typedef int (*TokIdsFn)(void *ctx, const int32_t *ids, size_t n, D2vError *err);
int tokenizer_encode_stream(Tokenizer *t, FILE *fp, const char *name, TokIdsFn emit, void *ctx, Utf8Report *report,
                            int64_t *bytes_read, D2vError *err);

/* The bytes of the ids, malloc'ed and NUL-terminated (*len excludes the
 * terminator). Specials are written as their spelling unless skip_specials.
 * An id outside the vocabulary is an error naming it and its position. */
int tokenizer_decode(const Tokenizer *t, const int32_t *ids, size_t n, int skip_specials, char **out, size_t *len,
                     D2vError *err);

/* ---- training --------------------------------------------------------- */

/* Training counts pre-token frequencies over all the text once, then learns
 * merges over the distinct pieces weighted by their counts, updating pair
 * counts incrementally (never re-reading the text). */
typedef struct TokCounter TokCounter;

int tok_counter_create(const TokOptions *o, TokCounter **out, D2vError *err);
int tok_counter_add_text(TokCounter *c, const char *text, size_t len, Utf8Report *report, D2vError *err);
/* Adds one file; *bytes_read (if non-NULL) its size. */
int tok_counter_add_file(TokCounter *c, const char *path, Utf8Report *report, int64_t *bytes_read, D2vError *err);
void tok_counter_free(TokCounter *c);

typedef struct {
    int vocab_size;        /* wanted size including specials, bytes and <mask> */
    int64_t min_frequency; /* stop when the best pair occurs fewer times (>= 1) */
} TokTrainOptions;

typedef struct {
    int64_t input_bytes;     /* raw bytes counted */
    int64_t pieces;          /* pre-tokens counted */
    int64_t distinct_pieces;
    int n_merges;
    int vocab_size; /* smaller than asked when the text ran out of pairs */
} TokTrainStats;

/* Merges, most frequent pair first; among pairs of equal count the one whose
 * left token id, then right token id, is smaller (so the result depends only
 * on the text). A merge whose result would be spelled like a special token is
 * never made. A merge that spells an existing token again (as "ab"+"c" after
 * "a"+"bc") is recorded in merges.txt but adds no token. */
int tokenizer_train_counts(const TokCounter *c, const TokTrainOptions *t, Tokenizer **out, TokTrainStats *stats,
                           D2vError *err);

/* Counts the files, then trains. warn (may be NULL) is told about each file
 * holding ill-formed UTF-8, or nothing at all, in a one-line message naming
 * it; such files are still used. */
typedef void (*TokWarnFn)(void *ctx, const char *message);
int tokenizer_train(const char *const *paths, int n_paths, const TokOptions *o, const TokTrainOptions *t,
                    TokWarnFn warn, void *warn_ctx, Tokenizer **out, TokTrainStats *stats, D2vError *err);

#endif
