/* text_data.c — reading, tokenizing and blocking text datasets (see
 * text_data.h for the formats and what happens to bad input). */
#include "text_data.h"

#include "files.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Bytes read from a file at once, and the longest run of one line handed to
 * the tokenizer at once (a longer line is cut into such pieces). */
#define READ_BYTES (1 << 20)
#define PIECE_BYTES (1 << 20)

int text_break_mode_parse(const char *name, TextBreakMode *out)
{
    static const struct { const char *name; TextBreakMode mode; } modes[] = {
        {"complete_doc", TEXT_BREAK_COMPLETE_DOC},
        {"complete", TEXT_BREAK_COMPLETE},
        {"none", TEXT_BREAK_NONE},
        {"eos", TEXT_BREAK_EOS},
    };
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
        if (strcmp(name, modes[i].name) == 0) {
            *out = modes[i].mode;
            return 0;
        }
    return -1;
}

/* One line of pretraining text, its </s> included. */
typedef struct {
    int64_t start, line;
    int32_t length, file;
    int doc_start; /* the first sentence of a document */
} Sentence;

typedef struct {
    TextCorpus *c;
    Tokenizer *tok;
    const TextReadOptions *o;
    TokSpecials specials;
    Sentence *sentences;
    int64_t n_sentences, cap_sentences;
    char **labels; /* labeled: names in order of first appearance, until sorted */
    int n_labels, cap_labels;
    int cap_items;
    /* the file being read */
    int file;
    const char *path;
    char *line;             /* the current line's bytes not yet tokenized */
    size_t line_len;
    int64_t line_number;    /* 1-based */
    int64_t pending_offset; /* file offset of line[0] */
    int64_t line_first_token;
    int at_line_start;      /* nothing of this line tokenized yet (leading blanks are dropped) */
    int overflowed;         /* labeled: the line's bytes beyond one piece are ignored */
    int new_document;
    int64_t utf8_count, utf8_offset, utf8_line; /* ill-formed UTF-8 met in this file */
} Reader;

static int is_blank(char ch) { return ch == ' ' || ch == '\t' || ch == '\r' || ch == '\v' || ch == '\f'; }

static int grow(void **array, size_t element, int64_t *cap, int64_t need, D2vError *err)
{
    if (need <= *cap)
        return 0;
    int64_t cap_new = *cap ? *cap : 64;
    while (cap_new < need)
        cap_new *= 2;
    void *grown = realloc(*array, (size_t)cap_new * element);
    if (!grown)
        return d2v_fail(err, "out of memory reading text (%lld entries)", (long long)cap_new);
    *array = grown;
    *cap = cap_new;
    return 0;
}

static int add_problem(Reader *r, int skipped, D2vError *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* A problem of the current file. Labeled sets fail on it instead. */
static int add_problem(Reader *r, int skipped, D2vError *err, const char *fmt, ...)
{
    char message[D2V_ERR_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (r->o->labeled)
        return d2v_fail(err, "%s", message);
    TextCorpus *c = r->c;
    TextProblem *grown = realloc(c->problems, (size_t)(c->n_problems + 1) * sizeof *grown);
    if (!grown)
        return d2v_fail(err, "out of memory");
    c->problems = grown;
    snprintf(c->problems[c->n_problems].message, sizeof c->problems[c->n_problems].message, "%s", message);
    c->problems[c->n_problems++].skipped = skipped;
    return 0;
}

static int add_item(Reader *r, int64_t start, int32_t length, int32_t file, int64_t line, int32_t label,
                    D2vError *err)
{
    TextCorpus *c = r->c;
    if (c->n_items == INT_MAX)
        return d2v_fail(err, "more than %d text items", INT_MAX);
    int64_t cap = r->cap_items;
    if (grow((void **)&c->items, sizeof *c->items, &cap, (int64_t)c->n_items + 1, err) < 0)
        return -1;
    r->cap_items = (int)(cap < INT_MAX ? cap : INT_MAX);
    c->items[c->n_items++] = (TextItem){start, length, file, line, label};
    return 0;
}

/* Tokens of text appended to the corpus; ill-formed UTF-8 is noted with its
 * file offset (text starts at file_offset). */
static int encode(Reader *r, const char *text, size_t len, int64_t file_offset, D2vError *err)
{
    Utf8Report report;
    if (tokenizer_encode(r->tok, text, len, &r->c->tokens, &report, err) < 0)
        return d2v_fail_prefix(err, "%s: ", r->path);
    if (report.count > 0) {
        if (r->utf8_count == 0) {
            r->utf8_offset = file_offset + report.first_offset;
            r->utf8_line = r->line_number;
        }
        r->utf8_count += report.count;
    }
    return 0;
}

static int append_token(Reader *r, int32_t id, D2vError *err)
{
    TokIds *t = &r->c->tokens;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        int32_t *grown = realloc(t->ids, cap * sizeof *grown);
        if (!grown)
            return d2v_fail(err, "out of memory holding %zu tokens", cap);
        t->ids = grown;
        t->cap = cap;
    }
    t->ids[t->n++] = id;
    return 0;
}

/* Where to end a piece of an over-long line so that tokenizing the pieces
 * gives the tokens of the whole line: before an ASCII blank that follows a
 * printable ASCII character (no normalization or pre-tokenization step looks
 * across that point: tokenizer.h), else at a character boundary. */
static size_t cut_point(const char *buf, size_t len)
{
    for (size_t i = len - 1; i > 0; i--)
        if ((buf[i] == ' ' || buf[i] == '\t') && buf[i - 1] > ' ' && buf[i - 1] < 0x7f)
            return i;
    for (size_t i = len - 1; i > 0; i--)
        if (((unsigned char)buf[i] & 0xC0) != 0x80)
            return i;
    return len;
}

/* Tokenizes text (part of the current line at file offset `offset`),
 * dropping blanks at the line's start. */
static int encode_line_text(Reader *r, const char *text, size_t len, int64_t offset, D2vError *err)
{
    if (r->at_line_start)
        while (len > 0 && is_blank(*text)) {
            text++;
            len--;
            offset++;
        }
    if (len == 0)
        return 0;
    r->at_line_start = 0;
    return encode(r, text, len, offset, err);
}

/* The line buffer is full and the line goes on: tokenize a piece of it. */
static int flush_piece(Reader *r, D2vError *err)
{
    size_t cut = cut_point(r->line, r->line_len);
    if (encode_line_text(r, r->line, cut, r->pending_offset, err) < 0)
        return -1;
    memmove(r->line, r->line + cut, r->line_len - cut);
    r->line_len -= cut;
    r->pending_offset += (int64_t)cut;
    return 0;
}

static int intern_label(Reader *r, const char *name, size_t len, int32_t *out, D2vError *err)
{
    for (int i = 0; i < r->n_labels; i++)
        if (strlen(r->labels[i]) == len && memcmp(r->labels[i], name, len) == 0) {
            *out = i;
            return 0;
        }
    if (r->n_labels == r->cap_labels) {
        int cap = r->cap_labels ? 2 * r->cap_labels : 16;
        char **grown = realloc(r->labels, (size_t)cap * sizeof *grown);
        if (!grown)
            return d2v_fail(err, "out of memory");
        r->labels = grown;
        r->cap_labels = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return d2v_fail(err, "out of memory");
    memcpy(copy, name, len);
    copy[len] = 0;
    *out = r->n_labels;
    r->labels[r->n_labels++] = copy;
    return 0;
}

/* Blanks around a label<TAB>text line, the tab excepted. */
static int is_blank_not_tab(char ch) { return ch != '\t' && is_blank(ch); }

static int finish_labeled_line(Reader *r, D2vError *err)
{
    const char *text = r->line;
    size_t len = r->line_len;
    while (len > 0 && is_blank_not_tab(*text)) {
        text++;
        len--;
    }
    if (r->overflowed) {
        /* Only the first piece is read; end it on a character boundary. */
        while (len > 0 && ((unsigned char)text[len - 1] & 0xC0) == 0x80)
            len--;
        if (len > 0 && ((unsigned char)text[len - 1] & 0x80))
            len--;
    }
    while (len > 0 && is_blank_not_tab(text[len - 1]))
        len--;
    if (len == 0)
        return 0; /* blank lines separate nothing here */
    const char *tab = memchr(text, '\t', len);
    if (!tab)
        return d2v_fail(err, "%s:%lld: expected label<TAB>text, found no tab", r->path, (long long)r->line_number);
    size_t label_len = (size_t)(tab - text);
    while (label_len > 0 && is_blank(text[label_len - 1]))
        label_len--;
    const char *body = tab + 1;
    size_t body_len = len - (size_t)(body - text);
    while (body_len > 0 && is_blank(*body)) {
        body++;
        body_len--;
    }
    if (label_len == 0 || body_len == 0)
        return d2v_fail(err, "%s:%lld: expected label<TAB>text, found an empty %s", r->path,
                        (long long)r->line_number, label_len == 0 ? "label" : "text");
    int32_t label = -1;
    const int64_t first = (int64_t)r->c->tokens.n;
    if (intern_label(r, text, label_len, &label, err) < 0 ||
        encode(r, body, body_len, r->pending_offset + (body - r->line), err) < 0)
        return -1;
    if (r->utf8_count > 0)
        return d2v_fail(err, "%s:%lld: ill-formed UTF-8 at byte offset %lld", r->path, (long long)r->line_number,
                        (long long)r->utf8_offset);
    /* <s> text </s> must fit the sequence: keep the text's first tokens. */
    const int64_t keep = r->o->max_tokens - 1;
    if ((int64_t)r->c->tokens.n - first > keep)
        r->c->tokens.n = (size_t)(first + keep);
    if (append_token(r, r->specials.eos, err) < 0)
        return -1;
    return add_item(r, first, (int32_t)((int64_t)r->c->tokens.n - first), r->file, r->line_number, label, err);
}

static int finish_text_line(Reader *r, D2vError *err)
{
    size_t len = r->line_len;
    while (len > 0 && is_blank(r->line[len - 1]))
        len--;
    if (encode_line_text(r, r->line, len, r->pending_offset, err) < 0)
        return -1;
    const int64_t first = r->line_first_token;
    if ((int64_t)r->c->tokens.n == first) {
        r->new_document = 1; /* a blank line ends a document */
        return 0;
    }
    if (append_token(r, r->specials.eos, err) < 0)
        return -1;
    int64_t cap = r->cap_sentences;
    if (grow((void **)&r->sentences, sizeof *r->sentences, &cap, r->n_sentences + 1, err) < 0)
        return -1;
    r->cap_sentences = cap;
    const int64_t length = (int64_t)r->c->tokens.n - first;
    if (length > INT32_MAX)
        return d2v_fail(err, "%s:%lld: a line of more than %d tokens", r->path, (long long)r->line_number, INT32_MAX);
    r->sentences[r->n_sentences++] = (Sentence){first, r->line_number, (int32_t)length, r->file, r->new_document};
    r->new_document = 0;
    return 0;
}

/* After a line's newline (or the file's end): tokenize what is left of it
 * and start the next line at file offset next_offset. */
static int finish_line(Reader *r, int64_t next_offset, D2vError *err)
{
    if ((r->o->labeled ? finish_labeled_line(r, err) : finish_text_line(r, err)) < 0)
        return -1;
    r->line_len = 0;
    r->line_number++;
    r->pending_offset = next_offset;
    r->line_first_token = (int64_t)r->c->tokens.n;
    r->at_line_start = 1;
    r->overflowed = 0;
    return 0;
}

/* Adds bytes of the current line, tokenizing a piece whenever the buffer
 * fills (or, labeled, ignoring the rest of an over-long line). */
static int add_line_bytes(Reader *r, const char *bytes, size_t n, D2vError *err)
{
    while (n > 0) {
        if (r->line_len == PIECE_BYTES) {
            if (r->o->labeled) {
                r->overflowed = 1;
                return 0;
            }
            if (flush_piece(r, err) < 0)
                return -1;
        }
        size_t take = PIECE_BYTES - r->line_len < n ? PIECE_BYTES - r->line_len : n;
        memcpy(r->line + r->line_len, bytes, take);
        r->line_len += take;
        bytes += take;
        n -= take;
    }
    return 0;
}

/* Reads one file into the corpus. Returns 0 when it was used (possibly with
 * a repair noted), 1 when it was left out (a problem noted), -1 on a fatal
 * error (out of memory, or any problem of a labeled set). */
static int read_file(Reader *r, int file, char *buffer, D2vError *err)
{
    TextCorpus *c = r->c;
    r->file = file;
    r->path = c->paths[file];
    r->line_len = 0;
    r->line_number = 1;
    r->pending_offset = 0;
    r->at_line_start = 1;
    r->overflowed = 0;
    r->new_document = 1; /* a file never continues the previous one's document */
    r->utf8_count = 0;
    const size_t tokens_before = c->tokens.n;
    const int64_t sentences_before = r->n_sentences;
    const int items_before = c->n_items;
    r->line_first_token = (int64_t)tokens_before;

    FILE *fp = fopen(r->path, "rb");
    if (!fp)
        return add_problem(r, 1, err, "%s: cannot open: %s", r->path, strerror(errno)) < 0 ? -1 : 1;
    int64_t offset = 0;
    int rc = 0;
    size_t n;
    while (rc == 0 && (n = fread(buffer, 1, READ_BYTES, fp)) > 0) {
        const char *nul = memchr(buffer, 0, n);
        if (nul) {
            int64_t line = r->line_number;
            for (const char *p = buffer; p < nul; p++)
                line += *p == '\n';
            rc = add_problem(r, 1, err, "%s: a NUL byte at byte offset %lld (line %lld): not a text file", r->path,
                             (long long)(offset + (nul - buffer)), (long long)line) < 0 ? -1 : 1;
            break;
        }
        size_t i = 0;
        while (i < n && rc == 0) {
            const char *newline = memchr(buffer + i, '\n', n - i);
            size_t end = newline ? (size_t)(newline - buffer) : n;
            if (r->line_len == 0)
                r->pending_offset = offset + (int64_t)i;
            rc = add_line_bytes(r, buffer + i, end - i, err);
            if (rc == 0 && newline)
                rc = finish_line(r, offset + (int64_t)end + 1, err);
            i = end + 1;
        }
        offset += (int64_t)n;
    }
    if (rc == 0 && ferror(fp))
        rc = add_problem(r, 1, err, "%s: read error after byte offset %lld: %s", r->path, (long long)offset,
                         strerror(errno)) < 0 ? -1 : 1;
    fclose(fp);
    if (rc == 0 && (r->line_len > 0 || !r->at_line_start))
        rc = finish_line(r, offset, err); /* the last line had no newline */
    if (rc == 0 && r->n_sentences == sentences_before && c->n_items == items_before)
        rc = add_problem(r, 1, err, "%s: no text (%s)", r->path, offset == 0 ? "an empty file" : "only blank lines") < 0
                 ? -1 : 1;
    if (rc == 0 && r->utf8_count > 0)
        rc = add_problem(r, 0, err, "%s: %lld ill-formed UTF-8 sequence%s replaced by U+FFFD, the first at byte offset "
                         "%lld (line %lld)", r->path, (long long)r->utf8_count, r->utf8_count == 1 ? "" : "s",
                         (long long)r->utf8_offset, (long long)r->utf8_line) < 0 ? -1 : 0;
    if (rc == 1) {
        /* Leave the file out entirely. */
        c->tokens.n = tokens_before;
        r->n_sentences = sentences_before;
        c->n_items = items_before;
    }
    return rc;
}

/* ---- blocks (TokenBlockDataset) ------------------------------------------------------ */

static int pack_blocks(Reader *r, D2vError *err)
{
    const int max = r->o->max_tokens;
    const Sentence *s = r->sentences;
    if (r->o->break_mode == TEXT_BREAK_NONE) {
        const int64_t total = (int64_t)r->c->tokens.n;
        int64_t at = 0;
        for (int64_t start = 0; start < total; start += max) {
            while (at + 1 < r->n_sentences && s[at + 1].start <= start)
                at++;
            int32_t length = (int32_t)(total - start < max ? total - start : max);
            if (add_item(r, start, length, s[at].file, s[at].line, -1, err) < 0)
                return -1;
        }
        return 0;
    }
    /* Sentences lie back to back in the token array, so a run of them is
     * one contiguous block. */
    int64_t block_start = 0, block_line = 0;
    int32_t block_len = 0, block_file = 0;
    for (int64_t i = 0; i < r->n_sentences; i++) {
        for (int32_t off = 0; off < s[i].length; off += max) {
            const int32_t piece = s[i].length - off < max ? s[i].length - off : max;
            const int doc_start = s[i].doc_start && off == 0;
            const int flush = block_len > 0 &&
                              (r->o->break_mode == TEXT_BREAK_EOS || block_len + piece > max ||
                               (r->o->break_mode == TEXT_BREAK_COMPLETE_DOC && doc_start));
            if (flush && add_item(r, block_start, block_len, block_file, block_line, -1, err) < 0)
                return -1;
            if (flush || block_len == 0) {
                block_start = s[i].start + off;
                block_len = 0;
                block_file = s[i].file;
                block_line = s[i].line;
            }
            block_len += piece;
        }
    }
    return block_len > 0 ? add_item(r, block_start, block_len, block_file, block_line, -1, err) : 0;
}

/* ---- labels ------------------------------------------------------------------------- */

static int compare_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Class numbers in name order, as the image and speech sets number theirs. */
static int sort_labels(Reader *r, D2vError *err)
{
    TextCorpus *c = r->c;
    c->class_names = malloc((size_t)r->n_labels * sizeof *c->class_names);
    int *renumber = malloc((size_t)r->n_labels * sizeof *renumber);
    if (!c->class_names || !renumber) {
        free(renumber);
        return d2v_fail(err, "out of memory");
    }
    memcpy(c->class_names, r->labels, (size_t)r->n_labels * sizeof *c->class_names);
    qsort(c->class_names, (size_t)r->n_labels, sizeof *c->class_names, compare_names);
    for (int i = 0; i < r->n_labels; i++)
        for (int j = 0; j < r->n_labels; j++)
            if (c->class_names[j] == r->labels[i])
                renumber[i] = j;
    for (int i = 0; i < c->n_items; i++)
        c->items[i].label = renumber[c->items[i].label];
    c->n_classes = r->n_labels;
    free(renumber);
    free(r->labels); /* the names now belong to class_names */
    r->labels = NULL;
    r->n_labels = 0;
    return 0;
}

/* ---- the whole read --------------------------------------------------------------------- */

static int list_files(TextCorpus *c, const char *path, int labeled, D2vError *err)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return d2v_fail(err, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) {
        c->paths = malloc(sizeof *c->paths);
        if (!c->paths || !(c->paths[0] = strdup(path)))
            return d2v_fail(err, "out of memory");
        c->n_files = 1;
        return 0;
    }
    static const char *const text_extensions[] = {"txt", NULL}, *const labeled_extensions[] = {"tsv", NULL};
    FileList files;
    if (filelist_scan(path, labeled ? labeled_extensions : text_extensions, 0, &files, err) < 0)
        return -1;
    c->paths = files.paths; /* taken over: freed by text_corpus_free */
    c->n_files = files.n;
    files.paths = NULL;
    files.n = 0;
    filelist_free(&files);
    return 0;
}

int text_corpus_read(TextCorpus *c, const char *path, Tokenizer *tok, const TextReadOptions *o, D2vError *err)
{
    memset(c, 0, sizeof *c);
    if (o->max_tokens < 2)
        return d2v_fail(err, "a text item needs room for at least 2 tokens besides <s> (got %d)", o->max_tokens);
    Reader r = {.c = c, .tok = tok, .o = o, .specials = tokenizer_specials(tok)};
    char *buffer = malloc(READ_BYTES);
    r.line = malloc(PIECE_BYTES);
    int rc = buffer && r.line ? 0 : d2v_fail(err, "out of memory");
    if (rc == 0)
        rc = list_files(c, path, o->labeled, err);
    for (int f = 0; rc == 0 && f < c->n_files; f++)
        rc = read_file(&r, f, buffer, err) < 0 ? -1 : 0;
    if (rc == 0 && o->labeled) {
        if (c->n_items == 0)
            rc = d2v_fail(err, "%s: no label<TAB>text lines", path);
        else
            rc = sort_labels(&r, err);
    } else if (rc == 0) {
        if (r.n_sentences == 0)
            rc = d2v_fail(err, "%s: no usable text%s%s", path, c->n_problems ? "; the first problem: " : "",
                          c->n_problems ? c->problems[0].message : "");
        else
            rc = pack_blocks(&r, err);
    }
    for (int i = 0; i < r.n_labels; i++)
        free(r.labels[i]);
    free(r.labels);
    free(r.sentences);
    free(r.line);
    free(buffer);
    if (rc < 0)
        text_corpus_free(c);
    return rc;
}

void text_corpus_free(TextCorpus *c)
{
    for (int i = 0; i < c->n_files; i++)
        free(c->paths[i]);
    free(c->paths);
    tok_ids_free(&c->tokens);
    free(c->items);
    for (int i = 0; i < c->n_classes; i++)
        free(c->class_names[i]);
    free(c->class_names);
    free(c->problems);
    memset(c, 0, sizeof *c);
}
