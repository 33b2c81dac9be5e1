/* config.c — typed INI configuration on top of inih (DESIGN §5).
 *
 * inih splits lines into section / key / value; everything else is here:
 * finding the key in the tables, checking the value, remembering which keys a
 * file already set, and saying precisely what went wrong and where.
 *
 * We feed inih through our own line reader (ini_parse_stream) instead of
 * letting it open the file, because that reader is where several of inih's
 * defaults are made predictable:
 *   - it counts lines, so every error can name its line (the installed inih
 *     is built without INI_HANDLER_LINENO);
 *   - it strips leading whitespace, so an indented key is an ordinary key
 *     and not a "continuation line" of the key above (INI_ALLOW_MULTILINE);
 *   - it strips comments, both full-line and inline, for ';' and '#' alike
 *     (inih only knows inline ';');
 *   - it rejects lines longer than inih's line buffer, which inih would
 *     otherwise silently split into two lines;
 *   - it checks [section] headers as they appear, so an unknown section is
 *     reported even when it holds no keys. */
#include "config.h"

#include <ini.h>

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The longest line content inih reads whole: its buffer holds INI_MAX_LINE
 * bytes including '\n' and '\0', and its documentation asks for one more
 * byte of slack for '\r'. */
#define CONFIG_LINE_MAX (INI_MAX_LINE - 3)

/* How much of an offending value an error message quotes. */
#define QUOTE_MAX 80
/* Room for a quoted value: each character may become a 4-byte escape. */
#define QUOTED_LEN (4 * QUOTE_MAX + 8)

/* ---- small string helpers ------------------------------------------------- */

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

/* Copies [start, start+len) into out without leading and trailing blanks. */
static void copy_trimmed(const char *start, size_t len, char *out, size_t out_len)
{
    while (len > 0 && is_blank(*start)) {
        start++;
        len--;
    }
    while (len > 0 && is_blank(start[len - 1]))
        len--;
    if (len >= out_len)
        len = out_len - 1;
    memcpy(out, start, len);
    out[len] = '\0';
}

static int equals_ignoring_case(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char ca = (*a >= 'A' && *a <= 'Z') ? (char)(*a - 'A' + 'a') : *a;
        char cb = (*b >= 'A' && *b <= 'Z') ? (char)(*b - 'A' + 'a') : *b;
        if (ca != cb)
            return 0;
    }
    return *a == *b;
}

/* A value is shown in messages as "...", with line breaks and other control
 * characters escaped and long values cut, so the message stays one line. */
static void quote_value(const char *value, char *out, size_t out_len)
{
    size_t used = 0, shown = 0;
    out[used++] = '"';
    for (const char *c = value; *c && used + 8 < out_len; c++, shown++) {
        if (shown == QUOTE_MAX) {
            used += (size_t)snprintf(out + used, out_len - used, "...");
            break;
        }
        unsigned char u = (unsigned char)*c;
        if (u == '\n')
            used += (size_t)snprintf(out + used, out_len - used, "\\n");
        else if (u == '\r')
            used += (size_t)snprintf(out + used, out_len - used, "\\r");
        else if (u < 0x20 || u == 0x7f)
            used += (size_t)snprintf(out + used, out_len - used, "\\x%02x", u);
        else
            out[used++] = *c;
    }
    out[used++] = '"';
    out[used] = '\0';
}

/* A name as typed when it is printable, else quoted with escapes (see
 * quote_value), so a message quoting it stays on one line. */
static void show_name(const char *name, char *out, size_t out_len)
{
    for (const char *c = name; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) {
            quote_value(name, out, out_len);
            return;
        }
    snprintf(out, out_len, "%s", name);
}

/* A growing text buffer for config_dump. Once an allocation fails it stays
 * failed, so the caller checks once at the end. */
typedef struct {
    char *text;
    size_t len, cap;
    int out_of_memory;
} TextBuffer;

static void text_append(TextBuffer *tb, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void text_append(TextBuffer *tb, const char *fmt, ...)
{
    if (tb->out_of_memory)
        return;
    va_list ap;
    va_start(ap, fmt);
    int needed = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (needed < 0) {
        tb->out_of_memory = 1;
        return;
    }
    if (tb->len + (size_t)needed + 1 > tb->cap) {
        size_t cap = tb->cap ? tb->cap : 1024;
        while (tb->len + (size_t)needed + 1 > cap)
            cap *= 2;
        char *grown = realloc(tb->text, cap);
        if (!grown) {
            tb->out_of_memory = 1;
            return;
        }
        tb->text = grown;
        tb->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(tb->text + tb->len, tb->cap - tb->len, fmt, ap);
    va_end(ap);
    tb->len += (size_t)needed;
}

/* ---- finding keys in the tables ------------------------------------------- */

typedef struct {
    const ConfigKey *key;
    void *base;
    int index; /* position among all keys of all tables, for per-parse state */
} KeyRef;

static int count_keys(const ConfigTable *tables, int n_tables)
{
    int n = 0;
    for (int t = 0; t < n_tables; t++)
        n += tables[t].n_keys;
    return n;
}

static int find_key(const ConfigTable *tables, int n_tables, const char *section,
                    const char *name, KeyRef *ref)
{
    int index = 0;
    for (int t = 0; t < n_tables; t++) {
        for (int i = 0; i < tables[t].n_keys; i++, index++) {
            const ConfigKey *k = &tables[t].keys[i];
            if (strcmp(k->section, section) == 0 && strcmp(k->key, name) == 0) {
                ref->key = k;
                ref->base = tables[t].base;
                ref->index = index;
                return 1;
            }
        }
    }
    return 0;
}

static int section_known(const ConfigTable *tables, int n_tables, const char *section)
{
    for (int t = 0; t < n_tables; t++)
        for (int i = 0; i < tables[t].n_keys; i++)
            if (strcmp(tables[t].keys[i].section, section) == 0)
                return 1;
    return 0;
}

/* Whether keys[t][i] is the first key of its section across all tables, so a
 * section is listed (and dumped) once, in the order it first appears. */
static int first_of_section(const ConfigTable *tables, int t, int i)
{
    const char *section = tables[t].keys[i].section;
    for (int pt = 0; pt <= t; pt++) {
        int end = pt == t ? i : tables[pt].n_keys;
        for (int pi = 0; pi < end; pi++)
            if (strcmp(tables[pt].keys[pi].section, section) == 0)
                return 0;
    }
    return 1;
}

/* "modality, dim, layers, ..." for one section, or the section names when
 * section is NULL; cut to fit out. */
static void list_names(const ConfigTable *tables, int n_tables, const char *section,
                       char *out, size_t out_len)
{
    size_t used = 0;
    out[0] = '\0';
    for (int t = 0; t < n_tables; t++) {
        for (int i = 0; i < tables[t].n_keys; i++) {
            const ConfigKey *k = &tables[t].keys[i];
            const char *name;
            if (section) {
                if (strcmp(k->section, section) != 0)
                    continue;
                name = k->key;
            } else {
                if (!first_of_section(tables, t, i))
                    continue;
                name = k->section;
            }
            const char *sep = used ? ", " : "";
            size_t need = strlen(sep) + strlen(name);
            if (used + need + sizeof ", ..." > out_len) {
                snprintf(out + used, out_len - used, "%s...", sep);
                return;
            }
            used += (size_t)snprintf(out + used, out_len - used, "%s%s", sep, name);
        }
    }
}

/* ---- values: parse, check, store, format ---------------------------------- */

/* The longest string value that still fits "key = value" on one line, so a
 * dump of any accepted value can be read back. */
static size_t string_limit(const ConfigKey *k)
{
    size_t limit = CONFIG_STR_LEN - 1;
    size_t used = strlen(k->key) + 3; /* "key = " */
    size_t line_room = used < CONFIG_LINE_MAX ? CONFIG_LINE_MAX - used : 0;
    return line_room < limit ? line_room : limit;
}

void config_describe_allowed(const ConfigKey *k, char *out, size_t out_len)
{
    switch (k->type) {
    case CK_INT:
        snprintf(out, out_len, "an integer in [%.0f, %.0f]", k->min, k->max);
        break;
    case CK_FLOAT:
        snprintf(out, out_len, "a number in [%g, %g]", k->min, k->max);
        break;
    case CK_BOOL:
        snprintf(out, out_len, "true or false (or yes/no, 1/0)");
        break;
    case CK_STRING:
        snprintf(out, out_len, "text of at most %zu characters", string_limit(k));
        break;
    case CK_CHOICE:
        snprintf(out, out_len, "one of %s", k->choices);
        break;
    default:
        snprintf(out, out_len, "nothing (unknown key type %d)", (int)k->type);
        break;
    }
}

static int parse_int(const char *text, int64_t *out)
{
    /* strtoll skips leading blanks and stops at the first non-digit, so it
     * reads "12abc" as 12: insist on a digit first and nothing after. */
    const char *digits = (text[0] == '-' || text[0] == '+') ? text + 1 : text;
    if (*digits < '0' || *digits > '9')
        return 0;
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno == ERANGE || *end != '\0')
        return 0;
    *out = (int64_t)v;
    return 1;
}

static int parse_double(const char *text, double *out)
{
    if (text[0] == '\0' || is_blank(text[0]))
        return 0;
    char *end;
    double v = strtod(text, &end);
    /* Underflow to a denormal or zero is fine; overflow gives inf, which
     * isfinite rejects, as it does "nan" and "inf" themselves. */
    if (*end != '\0' || !isfinite(v))
        return 0;
    *out = v;
    return 1;
}

static int parse_bool(const char *text, int *out)
{
    static const char *const truthy[] = {"true", "yes", "1", "on"};
    static const char *const falsy[] = {"false", "no", "0", "off"};
    for (size_t i = 0; i < sizeof truthy / sizeof truthy[0]; i++) {
        if (equals_ignoring_case(text, truthy[i])) {
            *out = 1;
            return 1;
        }
        if (equals_ignoring_case(text, falsy[i])) {
            *out = 0;
            return 1;
        }
    }
    return 0;
}

static int is_choice(const char *choices, const char *value)
{
    size_t len = strlen(value);
    const char *c = choices;
    while (*c) {
        const char *bar = strchr(c, '|');
        size_t n = bar ? (size_t)(bar - c) : strlen(c);
        if (n == len && strncmp(c, value, n) == 0)
            return 1;
        if (!bar)
            break;
        c = bar + 1;
    }
    return 0;
}

/* Text that the INI reader would change — a comment start, a line break —
 * cannot come from a file, only from --set, and would not survive a dump. */
static const char *string_problem(const char *value)
{
    for (const char *c = value; *c; c++) {
        if (*c == '\n' || *c == '\r')
            return "a line break";
        if ((*c == ';' || *c == '#') && (c == value || is_blank(c[-1])))
            return "a ';' or '#' at the start or after a space (that starts a comment)";
    }
    if (value[0] && (is_blank(value[0]) || is_blank(value[strlen(value) - 1])))
        return "leading or trailing spaces";
    return NULL;
}

/* Checks value against k and stores it into base. The message names the key
 * and what is allowed; callers prefix where the value came from. */
static int set_value(const ConfigKey *k, void *base, const char *value, D2vError *err)
{
    char *field = (char *)base + k->offset;
    char allowed[256], quoted[QUOTED_LEN];
    config_describe_allowed(k, allowed, sizeof allowed);
    quote_value(value, quoted, sizeof quoted);

    switch (k->type) {
    case CK_INT: {
        int64_t v;
        if (!parse_int(value, &v) || (double)v < k->min || (double)v > k->max)
            return d2v_fail(err, "%s.%s = %s: expected %s", k->section, k->key, quoted, allowed);
        memcpy(field, &v, sizeof v);
        return 0;
    }
    case CK_FLOAT: {
        double v;
        if (!parse_double(value, &v) || v < k->min || v > k->max)
            return d2v_fail(err, "%s.%s = %s: expected %s", k->section, k->key, quoted, allowed);
        memcpy(field, &v, sizeof v);
        return 0;
    }
    case CK_BOOL: {
        int v;
        if (!parse_bool(value, &v))
            return d2v_fail(err, "%s.%s = %s: expected %s", k->section, k->key, quoted, allowed);
        memcpy(field, &v, sizeof v);
        return 0;
    }
    case CK_STRING: {
        const char *problem = string_problem(value);
        if (problem)
            return d2v_fail(err, "%s.%s = %s: text may not contain %s", k->section, k->key,
                            quoted, problem);
        if (strlen(value) > string_limit(k))
            return d2v_fail(err, "%s.%s = %s: expected %s", k->section, k->key, quoted, allowed);
        strcpy(field, value);
        return 0;
    }
    case CK_CHOICE:
        if (!is_choice(k->choices, value))
            return d2v_fail(err, "%s.%s = %s: expected %s", k->section, k->key, quoted, allowed);
        strcpy(field, value); /* fits: it equals one of the choices */
        return 0;
    }
    return d2v_fail(err, "%s.%s: unknown key type %d", k->section, k->key, (int)k->type);
}

/* The shortest decimal that reads back as exactly v, so dumps stay readable
 * ("0.0005", not "0.00050000000000000001") and still round-trip. */
static void format_double(double v, char *out, size_t out_len)
{
    /* Whole numbers print as such: "30000", not "3e+04". */
    if (v > -1e15 && v < 1e15 && v == (double)(long long)v) {
        snprintf(out, out_len, "%.0f", v);
        return;
    }
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(out, out_len, "%.*g", precision, v);
        if (strtod(out, NULL) == v)
            return;
    }
}

void config_format_value(const ConfigKey *k, const void *base, char *out, size_t out_len)
{
    const char *field = (const char *)base + k->offset;
    switch (k->type) {
    case CK_INT: {
        int64_t v;
        memcpy(&v, field, sizeof v);
        snprintf(out, out_len, "%lld", (long long)v);
        break;
    }
    case CK_FLOAT: {
        double v;
        memcpy(&v, field, sizeof v);
        format_double(v, out, out_len);
        break;
    }
    case CK_BOOL: {
        int v;
        memcpy(&v, field, sizeof v);
        snprintf(out, out_len, "%s", v ? "true" : "false");
        break;
    }
    case CK_STRING:
    case CK_CHOICE:
        snprintf(out, out_len, "%s", field);
        break;
    default:
        snprintf(out, out_len, "?");
        break;
    }
}

/* ---- defaults --------------------------------------------------------------- */

int config_defaults(const ConfigTable *tables, int n_tables, D2vError *err)
{
    int index = 0;
    for (int t = 0; t < n_tables; t++) {
        for (int i = 0; i < tables[t].n_keys; i++, index++) {
            const ConfigKey *k = &tables[t].keys[i];
            /* Two tables claiming one key would make the second unreachable;
             * that is a bug in a table, caught the first time it is used. */
            KeyRef first = {NULL, NULL, -1};
            find_key(tables, n_tables, k->section, k->key, &first);
            if (first.index != index)
                return d2v_fail(err, "config tables define %s.%s twice", k->section, k->key);
            /* Defaults go through the same checks as file values, so a table
             * whose default breaks its own range fails here, loudly. */
            if (set_value(k, tables[t].base, k->def ? k->def : "", err))
                return d2v_fail_prefix(err, "default of ");
        }
    }
    return 0;
}

/* ---- parsing ---------------------------------------------------------------- */

typedef struct {
    const ConfigTable *tables;
    int n_tables;
    const char *where;  /* file path or name, for messages */
    const char *text;   /* the whole INI text, NUL-terminated */
    size_t pos;         /* next unread byte of text */
    int line;           /* number of the line last handed to inih */
    int *set_on_line;   /* per key: line that set it in this parse, 0 = not yet */
    int failed_line;    /* line of the first error, 0 = none */
    D2vError *err;
    /* config_peek: collect one key's raw value and check nothing. */
    int peeking;
    const char *peek_section, *peek_key;
    char peek_value[CONFIG_STR_LEN];
    int peek_too_long;
} Parse;

static int parse_fail(Parse *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int parse_fail(Parse *p, const char *fmt, ...)
{
    if (p->peeking)
        return 0; /* a peek reports nothing: the real parse says it better */
    p->failed_line = p->line;
    if (p->err) {
        char msg[D2V_ERR_LEN];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        d2v_fail(p->err, "%s:%d: %s", p->where, p->line, msg);
    }
    return 0; /* what inih expects from a failing handler */
}

/* Checks a "[name]" line and hands inih the trimmed form, since inih keeps
 * the blanks of "[ model ]" in the section name. Returns 0 on an error. */
static int check_section_line(Parse *p, char *clean)
{
    char *close = strchr(clean, ']');
    if (!close)
        return parse_fail(p, "section header %s has no closing ']'", clean);
    if (close[1] != '\0')
        return parse_fail(p, "unexpected text after %.*s", (int)(close - clean + 1), clean);
    char name[CONFIG_LINE_MAX + 1];
    copy_trimmed(clean + 1, (size_t)(close - clean - 1), name, sizeof name);
    if (!p->peeking && !section_known(p->tables, p->n_tables, name)) {
        char known[600];
        list_names(p->tables, p->n_tables, NULL, known, sizeof known);
        return parse_fail(p, "unknown section [%s] (known sections: %s)", name, known);
    }
    sprintf(clean, "[%s]", name); /* never longer than what it replaces */
    return 1;
}

/* inih's line reader (see the top of this file for why we have one). */
static char *read_line(char *buf, int buf_len, void *stream)
{
    Parse *p = stream;
    if (p->failed_line || p->text[p->pos] == '\0')
        return NULL; /* stop at the first error: later ones may be echoes */

    const char *start = p->text + p->pos;
    const char *newline = strchr(start, '\n');
    size_t len = newline ? (size_t)(newline - start) : strlen(start);
    p->pos += len + (newline ? 1 : 0);
    p->line++;

    if (p->line == 1 && len >= 3 && memcmp(start, "\xEF\xBB\xBF", 3) == 0) {
        start += 3; /* UTF-8 byte-order mark, as editors on Windows write it */
        len -= 3;
    }
    while (len > 0 && is_blank(*start)) {
        start++;
        len--;
    }
    /* A comment runs from ';' or '#' at the start of the line or after a
     * blank, to the end of the line; "a;b" keeps its ';'. */
    for (size_t i = 0; i < len; i++) {
        if ((start[i] == ';' || start[i] == '#') && (i == 0 || is_blank(start[i - 1]))) {
            len = i;
            break;
        }
    }
    while (len > 0 && is_blank(start[len - 1]))
        len--;

    if (len + 2 > (size_t)buf_len || len > CONFIG_LINE_MAX) {
        parse_fail(p, "line is %zu characters long; at most %d fit (comments excluded)", len,
                   CONFIG_LINE_MAX);
        len = 0;
    }
    memcpy(buf, start, len);
    buf[len] = '\0';

    if (buf[0] == '[') {
        if (!check_section_line(p, buf))
            buf[0] = '\0';
    } else if (buf[0] && !strchr(buf, '=') && !strchr(buf, ':')) {
        /* inih would flag this line too, but only by number. */
        parse_fail(p, "expected [section] or key = value, found \"%s\"", buf);
    }
    if (p->failed_line)
        return NULL;
    strcat(buf, "\n");
    return buf;
}

/* inih's callback for each key = value. */
static int on_key_value(void *user, const char *section, const char *name, const char *value)
{
    Parse *p = user;
    if (p->peeking) {
        if (strcmp(section, p->peek_section) == 0 && strcmp(name, p->peek_key) == 0) {
            p->peek_too_long = strlen(value) >= sizeof p->peek_value;
            snprintf(p->peek_value, sizeof p->peek_value, "%s", value);
        }
        return 1;
    }
    if (section[0] == '\0')
        return parse_fail(p, "key %s is outside any section (put a [section] line above it)",
                          name);

    if (name[0] == '\0')
        return parse_fail(p, "expected key = value, found no key before '='");
    KeyRef ref;
    if (!find_key(p->tables, p->n_tables, section, name, &ref)) {
        char known[600];
        list_names(p->tables, p->n_tables, section, known, sizeof known);
        return parse_fail(p, "unknown key [%s] %s (known keys in [%s]: %s)", section, name,
                          section, known);
    }
    if (p->set_on_line[ref.index])
        return parse_fail(p, "duplicate key %s.%s (first set on line %d)", section, name,
                          p->set_on_line[ref.index]);
    if (set_value(ref.key, ref.base, value, p->err)) {
        p->failed_line = p->line;
        d2v_fail_prefix(p->err, "%s:%d: ", p->where, p->line);
        return 0;
    }
    p->set_on_line[ref.index] = p->line;
    return 1;
}

/* Runs inih over p->text and turns its result into ours. */
static int run_parse(Parse *p, D2vError *err)
{
    int ini_result = ini_parse_stream(read_line, p, on_key_value, p);
    /* inih returns the first line any error happened on; ours are reported
     * with words, anything only inih noticed is reported by line. */
    if (ini_result > 0 && (!p->failed_line || ini_result < p->failed_line))
        return d2v_fail(err, "%s:%d: cannot read this line (expected [section] or key = value)",
                        p->where, ini_result);
    if (p->failed_line)
        return -1;
    if (ini_result < 0)
        return d2v_fail(err, "%s: inih failed to parse (code %d)", p->where, ini_result);
    return 0;
}

static int load_text(const ConfigTable *tables, int n_tables, const char *text, const char *where,
                     D2vError *err)
{
    Parse p;
    memset(&p, 0, sizeof p);
    p.tables = tables;
    p.n_tables = n_tables;
    p.where = where;
    p.text = text;
    p.err = err;
    p.set_on_line = d2v_calloc((size_t)count_keys(tables, n_tables), sizeof(int), err);
    if (!p.set_on_line)
        return -1;
    int rc = run_parse(&p, err);
    free(p.set_on_line);
    return rc;
}

/* The whole file as one NUL-terminated string; caller frees. */
static char *read_file(const char *path, D2vError *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        d2v_fail(err, "cannot open config %s: %s", path, strerror(errno));
        return NULL;
    }
    size_t len = 0, cap = 4096;
    char *text = d2v_malloc(cap, err);
    while (text) {
        len += fread(text + len, 1, cap - len - 1, f);
        if (len < cap - 1)
            break; /* end of file or an error; ferror tells which */
        char *grown = realloc(text, 2 * cap);
        if (!grown) {
            d2v_fail(err, "out of memory reading config %s", path);
            free(text);
            text = NULL;
            break;
        }
        text = grown;
        cap *= 2;
    }
    if (text && ferror(f)) {
        d2v_fail(err, "cannot read config %s: %s", path, strerror(errno));
        free(text);
        text = NULL;
    }
    fclose(f);
    if (!text)
        return NULL;
    text[len] = '\0';
    if (memchr(text, '\0', len)) {
        d2v_fail(err, "%s: contains a NUL byte; a config is a text file", path);
        free(text);
        return NULL;
    }
    return text;
}

int config_load_file(const ConfigTable *tables, int n_tables, const char *path, D2vError *err)
{
    char *text = read_file(path, err);
    if (!text)
        return -1;
    int rc = load_text(tables, n_tables, text, path, err);
    free(text);
    return rc;
}

int config_load_string(const ConfigTable *tables, int n_tables, const char *text, const char *what,
                       D2vError *err)
{
    if (!what)
        what = "config text";
    if (!text)
        return d2v_fail(err, "%s: no text", what);
    return load_text(tables, n_tables, text, what, err);
}

/* ---- --set ------------------------------------------------------------------ */

/* Splits "section.key=value" (blanks around the parts allowed). Returns 0 if
 * the assignment does not have that shape. */
static int split_assignment(const char *assignment, char *section, char *key, char *value,
                            size_t len)
{
    const char *eq = strchr(assignment, '=');
    if (!eq)
        return 0;
    const char *dot = memchr(assignment, '.', (size_t)(eq - assignment));
    if (!dot)
        return 0;
    copy_trimmed(assignment, (size_t)(dot - assignment), section, len);
    copy_trimmed(dot + 1, (size_t)(eq - dot - 1), key, len);
    copy_trimmed(eq + 1, strlen(eq + 1), value, len);
    return section[0] != '\0' && key[0] != '\0';
}

int config_set(const ConfigTable *tables, int n_tables, const char *assignment, D2vError *err)
{
    if (!assignment)
        return d2v_fail(err, "--set: no assignment given; expected section.key=value");
    size_t len = strlen(assignment) + 1;
    char *section = d2v_malloc(3 * len, err);
    if (!section)
        return -1;
    char *key = section + len, *value = key + len;
    char quoted[QUOTED_LEN];
    int rc = 0;
    quote_value(assignment, quoted, sizeof quoted);

    KeyRef ref;
    if (!split_assignment(assignment, section, key, value, len)) {
        rc = d2v_fail(err, "--set: %s: expected the form section.key=value", quoted);
    } else if (!section_known(tables, n_tables, section)) {
        /* Unlike a file's lines, an argument can hold a newline: the names
         * are quoted with escapes so the message stays one line. */
        char known[600], shown_section[QUOTED_LEN];
        list_names(tables, n_tables, NULL, known, sizeof known);
        show_name(section, shown_section, sizeof shown_section);
        rc = d2v_fail(err, "--set: unknown section [%s] (known sections: %s)", shown_section, known);
    } else if (!find_key(tables, n_tables, section, key, &ref)) {
        char known[600], shown_key[QUOTED_LEN];
        list_names(tables, n_tables, section, known, sizeof known);
        show_name(key, shown_key, sizeof shown_key);
        rc = d2v_fail(err, "--set: unknown key [%s] %s (known keys in [%s]: %s)", section, shown_key,
                      section, known);
    } else if (set_value(ref.key, ref.base, value, err)) {
        rc = d2v_fail_prefix(err, "--set: ");
    }
    free(section);
    return rc;
}

/* ---- dump and peek ---------------------------------------------------------- */

char *config_dump(const ConfigTable *tables, int n_tables)
{
    TextBuffer tb = {0};
    char value[CONFIG_STR_LEN + 64];
    for (int t = 0; t < n_tables; t++) {
        for (int i = 0; i < tables[t].n_keys; i++) {
            if (!first_of_section(tables, t, i))
                continue;
            /* This key opens its section: write every key of the section,
             * from whichever table it comes. */
            const char *section = tables[t].keys[i].section;
            text_append(&tb, "%s[%s]\n", tb.len ? "\n" : "", section);
            for (int st = t; st < n_tables; st++) {
                for (int si = 0; si < tables[st].n_keys; si++) {
                    const ConfigKey *k = &tables[st].keys[si];
                    if (strcmp(k->section, section) != 0)
                        continue;
                    config_format_value(k, tables[st].base, value, sizeof value);
                    /* "key =" for an empty value: no trailing blank. */
                    text_append(&tb, "%s =%s%s\n", k->key, value[0] ? " " : "", value);
                }
            }
        }
    }
    if (!tb.text && !tb.out_of_memory)
        text_append(&tb, "%s", ""); /* no keys at all: still a string */
    if (tb.out_of_memory) {
        free(tb.text);
        return NULL;
    }
    return tb.text;
}

int config_peek(const char *path, int n_sets, char *const *sets, const char *section_key,
                char *out, size_t out_len, D2vError *err)
{
    if (out_len == 0)
        return d2v_fail(err, "config_peek: no room for the value");
    out[0] = '\0';

    char section[CONFIG_STR_LEN], key[CONFIG_STR_LEN];
    const char *dot = strchr(section_key, '.');
    if (!dot)
        return d2v_fail(err, "config_peek: \"%s\" is not of the form section.key", section_key);
    copy_trimmed(section_key, (size_t)(dot - section_key), section, sizeof section);
    copy_trimmed(dot + 1, strlen(dot + 1), key, sizeof key);

    Parse p;
    memset(&p, 0, sizeof p);
    p.peeking = 1;
    p.peek_section = section;
    p.peek_key = key;
    if (path) {
        char *text = read_file(path, err);
        if (!text)
            return -1;
        p.where = path;
        p.text = text;
        /* Whatever is wrong with the file, the real parse says it better. */
        ini_parse_stream(read_line, &p, on_key_value, &p);
        free(text);
    }

    /* --set entries come after the file; the last one wins, as in the real
     * parse. Malformed ones are left for config_set to report. */
    for (int i = 0; i < n_sets; i++) {
        size_t len = strlen(sets[i]) + 1;
        char *set_section = d2v_malloc(3 * len, err);
        if (!set_section)
            return -1;
        char *set_key = set_section + len, *set_value_text = set_key + len;
        if (split_assignment(sets[i], set_section, set_key, set_value_text, len) &&
            strcmp(set_section, section) == 0 && strcmp(set_key, key) == 0) {
            p.peek_too_long = strlen(set_value_text) >= sizeof p.peek_value;
            snprintf(p.peek_value, sizeof p.peek_value, "%s", set_value_text);
        }
        free(set_section);
    }

    if (p.peek_too_long || strlen(p.peek_value) >= out_len)
        return d2v_fail(err, "%s.%s: value is too long to read", section, key);
    strcpy(out, p.peek_value);
    return 0;
}

/* ---- the core table ----------------------------------------------------------- */

/* Section and key names are the D2vConfig member names, so one macro gives
 * both the name and the offset and they cannot drift apart. */
#define KEY(sec, name, type, def, lo, hi, choices, help) \
    { #sec, #name, type, offsetof(D2vConfig, sec.name), def, lo, hi, choices, help }

/* Counts of updates or batches: large, but exact in a double. */
#define MANY 1e12

/* Defaults are the speech "base" recipe (DESIGN §4) wherever modalities
 * differ; the image and text configs override them. Open intervals such as
 * "dropout < 1" are written as the nearest sensible closed bound, since a
 * range is inclusive. */
static const ConfigKey core_keys[] = {
    KEY(model, modality, CK_STRING, "", 0, 0, NULL,
        "which modality plug-in to train: image | speech | text (no default)"),
    KEY(model, dim, CK_INT, "768", 8, 65536, NULL,
        "width D of the Transformer (channels per position)"),
    KEY(model, layers, CK_INT, "12", 1, 256, NULL, "number of Transformer blocks L"),
    KEY(model, heads, CK_INT, "12", 1, 256, NULL, "attention heads per block; must divide dim"),
    KEY(model, ffn_dim, CK_INT, "3072", 1, 1048576, NULL,
        "hidden width of each block's feed-forward network"),
    KEY(model, layout, CK_CHOICE, "post_ln", 0, 0, "post_ln|pre_ln",
        "where layer norm sits in a block: after the residual (BERT) or before (ViT)"),
    KEY(model, dropout, CK_FLOAT, "0.1", 0, 0.99, NULL,
        "dropout on block outputs (student only; the teacher runs without dropout)"),
    KEY(model, attention_dropout, CK_FLOAT, "0.1", 0, 0.99, NULL,
        "dropout on attention probabilities (student only)"),
    KEY(model, activation_dropout, CK_FLOAT, "0", 0, 0.99, NULL,
        "dropout after the feed-forward activation (student only)"),
    KEY(model, layer_norm_eps, CK_FLOAT, "1e-5", 1e-30, 0.1, NULL,
        "epsilon added to the variance in every layer norm"),
    KEY(model, init, CK_CHOICE, "bert", 0, 0, "bert|torch",
        "weight initialisation: truncated normal with init_std (bert) or PyTorch's default"),
    KEY(model, init_std, CK_FLOAT, "0.02", 0, 10, NULL,
        "standard deviation of the bert initialisation"),

    KEY(target, top_k, CK_INT, "8", 1, 256, NULL,
        "teacher targets average the top K blocks' outputs (K <= model.layers)"),
    KEY(target, layer_norm, CK_CHOICE, "instance", 0, 0, "instance|layer|none",
        "normalisation of each block's output before averaging: over time or over channels"),
    KEY(target, final_norm, CK_CHOICE, "none", 0, 0, "none|layer|instance",
        "normalisation applied to the averaged target"),
    KEY(target, layer_output, CK_CHOICE, "ffn", 0, 0, "ffn|block",
        "block output averaged: its FFN before the last residual (ffn), or its end (block)"),

    KEY(loss, beta, CK_FLOAT, "0", 0, 1e6, NULL, "Smooth L1 beta; 0 means squared error"),
    KEY(loss, scale, CK_FLOAT, "0", 0, 1e6, NULL,
        "loss scale; 0 means 1/sqrt(model.dim)"),
    KEY(loss, head, CK_CHOICE, "linear", 0, 0, "linear|mlp",
        "regression head: one linear layer, or Linear(D,2D)-GELU-Linear(2D,D)"),

    KEY(optim, lr, CK_FLOAT, "5e-4", 1e-12, 10, NULL, "peak learning rate of AdamW"),
    KEY(optim, beta1, CK_FLOAT, "0.9", 0, 0.999999, NULL, "AdamW first-moment decay"),
    KEY(optim, beta2, CK_FLOAT, "0.98", 0, 0.999999, NULL, "AdamW second-moment decay"),
    KEY(optim, eps, CK_FLOAT, "1e-6", 1e-30, 0.1, NULL, "AdamW epsilon"),
    KEY(optim, weight_decay, CK_FLOAT, "0.01", 0, 10, NULL,
        "decoupled weight decay (weight matrices only)"),
    KEY(optim, clip_norm, CK_FLOAT, "0", 0, 1e6, NULL,
        "clip the global gradient norm to this; 0 means no clipping"),
    KEY(optim, schedule, CK_CHOICE, "tri_stage", 0, 0, "cosine|tri_stage|constant",
        "learning-rate schedule"),
    KEY(optim, warmup_steps, CK_INT, "0", 0, MANY, NULL,
        "linear warm-up in updates; 0 means warmup_ratio * train.steps"),
    KEY(optim, warmup_ratio, CK_FLOAT, "0.03", 0, 1, NULL,
        "warm-up as a fraction of train.steps (when warmup_steps is 0)"),
    KEY(optim, hold_ratio, CK_FLOAT, "0.9", 0, 1, NULL,
        "tri_stage: fraction of train.steps held at the peak lr"),
    KEY(optim, decay_ratio, CK_FLOAT, "0.07", 0, 1, NULL,
        "tri_stage: fraction of train.steps of exponential decay"),
    KEY(optim, init_lr_scale, CK_FLOAT, "0.01", 0, 1, NULL,
        "tri_stage: warm-up starts at lr * init_lr_scale"),
    KEY(optim, final_lr_scale, CK_FLOAT, "0.01", 0, 1, NULL,
        "tri_stage: decay ends at lr * final_lr_scale"),
    KEY(optim, min_lr, CK_FLOAT, "0", 0, 10, NULL, "cosine: the lr the schedule decays to"),

    KEY(ema, decay, CK_FLOAT, "0.999", 0, 1, NULL, "teacher EMA decay tau at the start"),
    KEY(ema, end_decay, CK_FLOAT, "0.9999", 0, 1, NULL,
        "teacher EMA decay after anneal_steps (>= decay)"),
    KEY(ema, anneal_steps, CK_INT, "30000", 0, MANY, NULL,
        "updates over which tau moves linearly from decay to end_decay"),

    KEY(train, steps, CK_INT, "400000", 1, MANY, NULL, "number of updates to train for"),
    KEY(train, batch_size, CK_INT, "8", 1, 1048576, NULL,
        "examples per update, over all data-parallel ranks and update_freq micro-batches"),
    KEY(train, seed, CK_INT, "1", 0, 9007199254740991.0, NULL,
        "seed of every random choice (initialisation, masks, dropout, data order)"),
    KEY(train, threads, CK_INT, "0", 0, 1024, NULL, "worker threads; 0 means all cores"),
    KEY(train, attention_memory_mb, CK_FLOAT, "96", 0, 1e9, NULL,
        "memory (MiB) for keeping every block's attention probabilities (and, where they fit too, "
        "outputs) for the backward, which otherwise recomputes them (slower); 0 always recomputes"),
    KEY(train, log_every, CK_INT, "100", 1, MANY, NULL, "updates between log lines"),
    KEY(train, save_every, CK_INT, "5000", 0, MANY, NULL,
        "updates between checkpoints; 0 means only at the end"),
    KEY(train, keep_last, CK_INT, "3", 1, 1000, NULL,
        "how many periodic checkpoints to keep on disk"),
    KEY(train, min_target_var, CK_FLOAT, "0.01", 0, 1e6, NULL,
        "stop if the teacher targets' variance falls below this (collapse); 0 turns it off"),
    KEY(train, min_pred_var, CK_FLOAT, "0.01", 0, 1e6, NULL,
        "stop if the predictions' variance falls below this (collapse); 0 turns it off"),
    KEY(train, min_frontend_var, CK_FLOAT, "0", 0, 1e6, NULL,
        "stop if the front-end output's variance falls below this; 0 turns it off"),
    KEY(train, var_check_after, CK_INT, "1000", 0, MANY, NULL,
        "updates before the variance floors are checked"),
    KEY(train, on_nonfinite, CK_CHOICE, "stop", 0, 0, "stop|skip",
        "a NaN/inf loss or gradient stops the run, or its update is skipped and counted"),
    KEY(train, update_freq, CK_INT, "1", 1, 4096, NULL,
        "micro-batches per update (gradient accumulation); batch_size is the whole update's batch"),
    KEY(train, sync_check_every, CK_INT, "100", 0, MANY, NULL,
        "data parallel: steps between checks that every rank holds the same parameters; 0 turns it off"),
    KEY(train, dist_timeout, CK_FLOAT, "600", 0, 1e7, NULL,
        "data parallel: seconds a rank waits for the others before failing; 0 waits forever"),

    KEY(data, on_error, CK_CHOICE, "skip", 0, 0, "skip|fail",
        "an unreadable example is skipped with a warning, or stops the run"),

    KEY(eval, every, CK_INT, "0", 0, MANY, NULL,
        "k-NN evaluation every this many updates and at the end, keeping best-knn.safetensors; 0 = off"),
    KEY(eval, train, CK_STRING, "", 0, 0, NULL,
        "labeled training set of the periodic k-NN (as d2v eval knn --train)"),
    KEY(eval, test, CK_STRING, "", 0, 0, NULL,
        "labeled test set of the periodic k-NN (as d2v eval knn --test)"),
    KEY(eval, k, CK_INT, "20", 1, 100000, NULL, "neighbours of the periodic k-NN (as d2v eval knn --k)"),
    KEY(eval, batch, CK_INT, "64", 1, 1048576, NULL,
        "items per forward pass of the periodic k-NN (as d2v eval knn --batch)"),
    KEY(eval, pool, CK_CHOICE, "mean", 0, 0, "mean|cls|topk",
        "pooling of the periodic k-NN's features (as d2v eval knn --pool)"),
};

ConfigTable d2v_config_table(D2vConfig *cfg)
{
    ConfigTable table = {core_keys, (int)(sizeof core_keys / sizeof core_keys[0]), cfg};
    return table;
}

int d2v_config_validate(const D2vConfig *cfg, D2vError *err)
{
    if (cfg->model.modality[0] == '\0')
        return d2v_fail(err, "model.modality is not set (expected image|speech|text)");
    if (cfg->model.heads < 1 || cfg->model.dim % cfg->model.heads != 0)
        return d2v_fail(err, "model.dim = %lld is not divisible by model.heads = %lld",
                        (long long)cfg->model.dim, (long long)cfg->model.heads);
    if (cfg->target.top_k > cfg->model.layers)
        return d2v_fail(err, "target.top_k = %lld exceeds model.layers = %lld",
                        (long long)cfg->target.top_k, (long long)cfg->model.layers);
    if (strcmp(cfg->optim.schedule, "tri_stage") == 0) {
        double sum = cfg->optim.warmup_ratio + cfg->optim.hold_ratio + cfg->optim.decay_ratio;
        if (sum > 1 + 1e-9)
            return d2v_fail(err,
                            "optim.warmup_ratio + optim.hold_ratio + optim.decay_ratio = %g "
                            "exceeds 1 (optim.schedule = tri_stage)",
                            sum);
    }
    if (cfg->train.batch_size % cfg->train.update_freq != 0)
        return d2v_fail(err, "train.batch_size = %lld is not divisible by train.update_freq = %lld",
                        (long long)cfg->train.batch_size, (long long)cfg->train.update_freq);
    if (cfg->optim.min_lr > cfg->optim.lr)
        return d2v_fail(err, "optim.min_lr = %g exceeds optim.lr = %g", cfg->optim.min_lr,
                        cfg->optim.lr);
    if (cfg->ema.end_decay < cfg->ema.decay)
        return d2v_fail(err, "ema.end_decay = %g is below ema.decay = %g", cfg->ema.end_decay,
                        cfg->ema.decay);
    if (cfg->eval.every > 0 && (!cfg->eval.train[0] || !cfg->eval.test[0]))
        return d2v_fail(err, "eval.every = %lld needs eval.train and eval.test (labeled sets, as d2v eval knn "
                        "--train/--test)", (long long)cfg->eval.every);
    return 0;
}
