#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* open flags O_CLOEXEC/O_DIRECTORY, fdopen, fsync */
#endif

#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor bytes are stored little-endian and we read and write them as-is
 * (fread into the buffer, fwrite from the caller's arrays), so a big-endian
 * build would silently produce files no one else can read. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c writes tensor bytes as-is and needs a little-endian machine"
#endif

/* The 8-byte little-endian header length that starts every file. */
#define ST_PREFIX_LEN 8

static const struct {
    const char *name;
    size_t size;
} dtype_table[] = {
    [ST_F32] = {"F32", 4}, [ST_F64] = {"F64", 8}, [ST_F16] = {"F16", 2},
    [ST_BF16] = {"BF16", 2}, [ST_I64] = {"I64", 8}, [ST_I32] = {"I32", 4},
    [ST_I16] = {"I16", 2}, [ST_I8] = {"I8", 1}, [ST_U8] = {"U8", 1},
    [ST_BOOL] = {"BOOL", 1},
};
#define N_DTYPES ((int)(sizeof dtype_table / sizeof dtype_table[0]))
#define DTYPE_LIST "F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL"

static int dtype_valid(StDtype d)
{
    return (int)d >= 0 && (int)d < N_DTYPES;
}

const char *st_dtype_name(StDtype d)
{
    return dtype_valid(d) ? dtype_table[d].name : "INVALID";
}

size_t st_dtype_size(StDtype d)
{
    return dtype_valid(d) ? dtype_table[d].size : 0;
}

static int dtype_from_name(const char *name, StDtype *out)
{
    for (int d = 0; d < N_DTYPES; d++) {
        if (strcmp(name, dtype_table[d].name) == 0) {
            *out = (StDtype)d;
            return 0;
        }
    }
    return -1;
}

/* Sets *out = a * b and returns 0, or returns -1 if the product does not fit:
 * a hostile shape must not wrap around to a small, plausible byte count. */
static int mul_u64(uint64_t a, uint64_t b, uint64_t *out)
{
    if (a != 0 && b > UINT64_MAX / a)
        return -1;
    *out = a * b;
    return 0;
}

/* Bytes of a tensor of `ndim` dims of `dtype`, or -1 if they overflow. */
static int tensor_bytes(StDtype dtype, int ndim, const int64_t *shape, uint64_t *bytes)
{
    uint64_t total = st_dtype_size(dtype);
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 0 || mul_u64(total, (uint64_t)shape[i], &total))
            return -1;
    *bytes = total;
    return 0;
}

uint64_t st_numel(const StTensor *t)
{
    uint64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= (uint64_t)t->shape[i]; /* cannot overflow: the reader checked numel x size */
    return n;
}

/* ---- Message helpers ---------------------------------------------------- */

/* Names, dtypes and jansson's messages come from the file; a hostile one could
 * hold newlines or megabytes. A Shown is a short copy with control bytes
 * replaced, so every error stays one readable line. Returned by value so it
 * can be used inline: shown(name).s lives until the end of the statement. */
#define SHOWN_MAX 80
typedef struct {
    char s[SHOWN_MAX + 4];
} Shown;

static Shown shown(const char *text)
{
    Shown out;
    size_t i = 0;
    for (; text[i] && i < SHOWN_MAX; i++) {
        unsigned char c = (unsigned char)text[i];
        out.s[i] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
    }
    if (text[i]) {
        while (i > 0 && ((unsigned char)text[i] & 0xC0) == 0x80)
            i--; /* do not cut a UTF-8 character in half */
        memcpy(out.s + i, "...", 3);
        i += 3;
    }
    out.s[i] = '\0';
    return out;
}

/* "[2, 3]" for messages. */
typedef struct {
    char s[ST_MAX_DIMS * 22 + 4];
} ShapeText;

static ShapeText shape_text(const int64_t *shape, int ndim)
{
    ShapeText out;
    size_t used = 0;
    out.s[used++] = '[';
    for (int i = 0; i < ndim; i++)
        used += (size_t)snprintf(out.s + used, sizeof out.s - used, "%s%lld", i ? ", " : "",
                                 (long long)shape[i]);
    snprintf(out.s + used, sizeof out.s - used, "]");
    return out;
}

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a real number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "an unknown JSON value";
}

static char *copy_string(const char *s, D2vError *err)
{
    size_t n = strlen(s) + 1;
    char *copy = d2v_malloc(n, err);
    if (copy)
        memcpy(copy, s, n);
    return copy;
}

/* ---- Reading ------------------------------------------------------------ */

/* Decodes the header length from the first bytes of a file of file_len bytes
 * (prefix holds min(file_len, 8) of them) and checks it against the file. */
static int check_prefix(const uint8_t prefix[ST_PREFIX_LEN], uint64_t file_len, const char *what,
                        uint64_t *header_len, D2vError *err)
{
    if (file_len < ST_PREFIX_LEN)
        return d2v_fail(err, "%s: file is only %llu bytes, too short for the 8-byte header length "
                             "that starts a safetensors file", what, (unsigned long long)file_len);
    uint64_t n = 0;
    for (int i = ST_PREFIX_LEN - 1; i >= 0; i--)
        n = (n << 8) | prefix[i];
    if (n == 0)
        return d2v_fail(err, "%s: header length is 0, expected a JSON object of at least 2 bytes", what);
    if (n > ST_MAX_HEADER)
        return d2v_fail(err, "%s: header length %llu exceeds the %u-byte limit (corrupt or not a "
                             "safetensors file)", what, (unsigned long long)n, ST_MAX_HEADER);
    if (n > file_len - ST_PREFIX_LEN)
        return d2v_fail(err, "%s: header length %llu runs past the end of the file (only %llu bytes "
                             "follow the 8-byte length)", what, (unsigned long long)n,
                        (unsigned long long)(file_len - ST_PREFIX_LEN));
    *header_len = n;
    return 0;
}

static int parse_meta(const json_t *meta, const char *what, StFile *out, D2vError *err)
{
    if (!json_is_object(meta))
        return d2v_fail(err, "%s: __metadata__ is %s, expected an object of string values", what,
                        json_kind(meta));
    out->meta = d2v_calloc(json_object_size(meta), sizeof *out->meta, err);
    if (!out->meta)
        return -1;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)meta, key, value) {
        if (!json_is_string(value))
            return d2v_fail(err, "%s: __metadata__ key '%s' is %s, expected a string", what,
                            shown(key).s, json_kind(value));
        StMeta *m = &out->meta[out->n_meta];
        m->key = copy_string(key, err);
        if (!m->key)
            return -1;
        m->value = copy_string(json_string_value(value), err);
        if (!m->value) {
            free(m->key);
            m->key = NULL;
            return -1;
        }
        out->n_meta++;
    }
    return 0;
}

/* Reads one integer of a "shape" or "data_offsets" array; both must be
 * non-negative integers (JSON 2.0 or -1 are both errors). */
static int non_negative(const json_t *v, const char *what, const char *name, const char *field,
                        size_t index, json_int_t *out, D2vError *err)
{
    if (!json_is_integer(v))
        return d2v_fail(err, "%s: tensor '%s': %s[%zu] is %s, expected a non-negative integer", what,
                        name, field, index, json_kind(v));
    if (json_integer_value(v) < 0)
        return d2v_fail(err, "%s: tensor '%s': %s[%zu] is %lld, expected a non-negative integer", what,
                        name, field, index, (long long)json_integer_value(v));
    *out = json_integer_value(v);
    return 0;
}

/* Validates one header entry on its own: fields, dtype, shape, and a span that
 * matches the shape and lies inside the data area. Tiling is checked later. */
static int parse_tensor(const json_t *entry, uint64_t data_start, uint64_t data_len,
                        const char *what, StTensor *t, D2vError *err)
{
    Shown shown_name = shown(t->name);
    const char *name = shown_name.s;

    if (!json_is_object(entry))
        return d2v_fail(err, "%s: tensor '%s' is %s, expected an object with dtype, shape and "
                             "data_offsets", what, name, json_kind(entry));
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)entry, key, value) {
        if (strcmp(key, "dtype") != 0 && strcmp(key, "shape") != 0 && strcmp(key, "data_offsets") != 0)
            return d2v_fail(err, "%s: tensor '%s' has unexpected key '%s' (expected only dtype, shape, "
                                 "data_offsets)", what, name, shown(key).s);
    }

    const json_t *dtype = json_object_get(entry, "dtype");
    if (!dtype)
        return d2v_fail(err, "%s: tensor '%s' has no \"dtype\"", what, name);
    if (!json_is_string(dtype))
        return d2v_fail(err, "%s: tensor '%s': dtype is %s, expected a string such as \"F32\"", what,
                        name, json_kind(dtype));
    if (dtype_from_name(json_string_value(dtype), &t->dtype) != 0)
        return d2v_fail(err, "%s: tensor '%s' has unknown dtype '%s' (expected one of " DTYPE_LIST ")",
                        what, name, shown(json_string_value(dtype)).s);

    const json_t *shape = json_object_get(entry, "shape");
    if (!shape)
        return d2v_fail(err, "%s: tensor '%s' has no \"shape\"", what, name);
    if (!json_is_array(shape))
        return d2v_fail(err, "%s: tensor '%s': shape is %s, expected an array of non-negative integers",
                        what, name, json_kind(shape));
    size_t ndim = json_array_size(shape);
    if (ndim > ST_MAX_DIMS)
        return d2v_fail(err, "%s: tensor '%s': shape has %zu dimensions, at most %d are supported", what,
                        name, ndim, ST_MAX_DIMS);
    for (size_t i = 0; i < ndim; i++) {
        json_int_t dim = 0;
        if (non_negative(json_array_get(shape, i), what, name, "shape", i, &dim, err))
            return -1;
        t->shape[i] = dim;
    }
    t->ndim = (int)ndim;
    uint64_t bytes = 0;
    if (tensor_bytes(t->dtype, t->ndim, t->shape, &bytes) != 0)
        return d2v_fail(err, "%s: tensor '%s': shape %s of %s is too large (byte size overflows 64 bits)",
                        what, name, shape_text(t->shape, t->ndim).s, st_dtype_name(t->dtype));

    const json_t *offsets = json_object_get(entry, "data_offsets");
    if (!offsets)
        return d2v_fail(err, "%s: tensor '%s' has no \"data_offsets\"", what, name);
    if (!json_is_array(offsets))
        return d2v_fail(err, "%s: tensor '%s': data_offsets is %s, expected an array [begin, end]", what,
                        name, json_kind(offsets));
    if (json_array_size(offsets) != 2)
        return d2v_fail(err, "%s: tensor '%s': data_offsets has %zu entries, expected 2 [begin, end]",
                        what, name, json_array_size(offsets));
    json_int_t begin = 0, end = 0;
    if (non_negative(json_array_get(offsets, 0), what, name, "data_offsets", 0, &begin, err) ||
        non_negative(json_array_get(offsets, 1), what, name, "data_offsets", 1, &end, err))
        return -1;
    t->begin = (uint64_t)begin;
    t->end = (uint64_t)end;
    if (t->begin > t->end)
        return d2v_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu] begin after they end", what, name,
                        (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end - t->begin != bytes)
        return d2v_fail(err, "%s: tensor '%s': shape %s of %s needs %llu bytes but data_offsets [%llu, %llu] "
                             "span %llu", what, name, shape_text(t->shape, t->ndim).s,
                        st_dtype_name(t->dtype), (unsigned long long)bytes, (unsigned long long)t->begin,
                        (unsigned long long)t->end, (unsigned long long)(t->end - t->begin));
    if (t->end > data_len)
        return d2v_fail(err, "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of the data area "
                             "(%llu bytes, starting at file byte %llu)", what, name,
                        (unsigned long long)t->begin, (unsigned long long)t->end,
                        (unsigned long long)data_len, (unsigned long long)data_start);
    return 0;
}

static int compare_spans(const void *a, const void *b)
{
    const StTensor *x = *(const StTensor *const *)a, *y = *(const StTensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return 0;
}

/* The spans, sorted by begin, must follow each other with no gap and no
 * overlap from data byte 0 to the last byte of the file: every byte of the
 * data area belongs to exactly one tensor. (Zero-size tensors fit anywhere a
 * span starts or ends.) */
static int check_tiling(const StFile *f, uint64_t data_len, const char *what, D2vError *err)
{
    const StTensor **order = d2v_calloc((size_t)f->n_tensors, sizeof *order, err);
    if (!order)
        return -1;
    for (int i = 0; i < f->n_tensors; i++)
        order[i] = &f->tensors[i];
    qsort(order, (size_t)f->n_tensors, sizeof *order, compare_spans);

    int rc = 0;
    uint64_t covered = 0; /* data bytes [0, covered) belong to tensors seen so far */
    const StTensor *prev = NULL;
    for (int i = 0; i < f->n_tensors && rc == 0; i++) {
        const StTensor *t = order[i];
        if (t->begin > covered && !prev)
            rc = d2v_fail(err, "%s: gap of %llu unused bytes before the first tensor '%s' (it starts at "
                               "data byte %llu, expected 0)", what, (unsigned long long)t->begin,
                          shown(t->name).s, (unsigned long long)t->begin);
        else if (t->begin > covered)
            rc = d2v_fail(err, "%s: gap of %llu unused bytes between tensor '%s' (ends at data byte %llu) "
                               "and tensor '%s' (starts at %llu); expected them to be contiguous", what,
                          (unsigned long long)(t->begin - covered), shown(prev->name).s,
                          (unsigned long long)covered, shown(t->name).s, (unsigned long long)t->begin);
        else if (t->begin < covered)
            rc = d2v_fail(err, "%s: tensor '%s' [%llu, %llu] overlaps tensor '%s' [%llu, %llu]; expected it "
                               "to start at data byte %llu", what, shown(t->name).s,
                          (unsigned long long)t->begin, (unsigned long long)t->end, shown(prev->name).s,
                          (unsigned long long)prev->begin, (unsigned long long)prev->end,
                          (unsigned long long)covered);
        covered = t->end;
        prev = t;
    }
    if (rc == 0 && covered != data_len) {
        if (prev)
            rc = d2v_fail(err, "%s: %llu trailing bytes after the last tensor '%s' (tensors end at data "
                               "byte %llu, the data area is %llu bytes)", what,
                          (unsigned long long)(data_len - covered), shown(prev->name).s,
                          (unsigned long long)covered, (unsigned long long)data_len);
        else
            rc = d2v_fail(err, "%s: %llu trailing bytes after the header, which lists no tensors", what,
                          (unsigned long long)data_len);
    }
    free(order);
    return rc;
}

/* Validates the JSON header (header_len bytes) against a data area of
 * data_len bytes starting at file byte data_start, and fills the tensors and
 * metadata of `out` (not its data). On failure `out` holds partial results
 * for st_free. */
static int parse_header(const char *header, size_t header_len, uint64_t data_start, uint64_t data_len,
                        const char *what, StFile *out, D2vError *err)
{
    json_error_t jerr;
    /* DECODE_ANY so that a header of `3` or `"x"` gets the "not an object"
     * message below instead of a parser complaint. Trailing whitespace (the
     * writer's padding) is accepted by jansson; trailing garbage is not. */
    json_t *root = json_loadb(header, header_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!root) {
        if (json_error_code(&jerr) == json_error_duplicate_key)
            return d2v_fail(err, "%s: header repeats a key; tensor names and keys must be unique: %s "
                                 "(header byte %d)", what, shown(jerr.text).s, jerr.position);
        return d2v_fail(err, "%s: header is not valid JSON: %s (header byte %d, line %d, column %d)", what,
                        shown(jerr.text).s, jerr.position, jerr.line, jerr.column);
    }

    int rc = 0;
    if (!json_is_object(root)) {
        rc = d2v_fail(err, "%s: header is %s, expected a JSON object mapping tensor names to entries", what,
                      json_kind(root));
        goto done;
    }
    const json_t *meta = json_object_get(root, "__metadata__");
    size_t n_tensors = json_object_size(root) - (meta ? 1 : 0);
    if (n_tensors > INT_MAX) {
        rc = d2v_fail(err, "%s: header lists %zu tensors, more than supported", what, n_tensors);
        goto done;
    }
    out->tensors = d2v_calloc(n_tensors, sizeof *out->tensors, err);
    if (!out->tensors || (meta && parse_meta(meta, what, out, err) != 0)) {
        rc = -1;
        goto done;
    }
    const char *name;
    json_t *entry;
    json_object_foreach(root, name, entry) {
        if (strcmp(name, "__metadata__") == 0)
            continue;
        /* The writer refuses an empty name (no model has such a tensor), so
         * the reader does too: what one accepts the other can write back
         * (found by fuzz_safetensors). */
        if (name[0] == '\0') {
            rc = d2v_fail(err, "%s: a tensor has an empty name", what);
            goto done;
        }
        StTensor *t = &out->tensors[out->n_tensors];
        t->name = copy_string(name, err);
        if (!t->name) {
            rc = -1;
            goto done;
        }
        out->n_tensors++;
        if (parse_tensor(entry, data_start, data_len, what, t, err) != 0) {
            rc = -1;
            goto done;
        }
    }
    rc = check_tiling(out, data_len, what, err);
done:
    json_decref(root);
    return rc;
}

int st_parse(const uint8_t *bytes, uint64_t len, const char *what, StFile *out, D2vError *err)
{
    memset(out, 0, sizeof *out);
    if (!what)
        what = "safetensors buffer";
    uint8_t prefix[ST_PREFIX_LEN] = {0};
    if (len > 0)
        memcpy(prefix, bytes, len < ST_PREFIX_LEN ? (size_t)len : ST_PREFIX_LEN);
    uint64_t header_len = 0;
    if (check_prefix(prefix, len, what, &header_len, err) != 0)
        return -1;
    uint64_t data_start = ST_PREFIX_LEN + header_len, data_len = len - data_start;
    if (data_len > SIZE_MAX)
        return d2v_fail(err, "%s: data area of %llu bytes does not fit in memory", what,
                        (unsigned long long)data_len);
    if (parse_header((const char *)bytes + ST_PREFIX_LEN, (size_t)header_len, data_start, data_len, what,
                     out, err) != 0)
        goto fail;
    /* Copy: the caller's buffer may not outlive the StFile, and st_free frees data. */
    out->data = d2v_malloc((size_t)data_len, err);
    if (!out->data)
        goto fail;
    if (data_len)
        memcpy(out->data, bytes + data_start, (size_t)data_len);
    out->data_len = data_len;
    return 0;
fail:
    st_free(out);
    return -1;
}

static int read_exact(FILE *fp, void *buf, size_t n, const char *path, const char *part, D2vError *err)
{
    if (n == 0 || fread(buf, 1, n, fp) == n)
        return 0;
    if (ferror(fp))
        return d2v_fail(err, "%s: error reading %s: %s", path, part, strerror(errno));
    return d2v_fail(err, "%s: file ended while reading %s (did it shrink while being read?)", path, part);
}

/* Reads prefix, header and data in that order, each only after the previous
 * part checked out, so a file lying about its sizes costs no allocation
 * larger than the file itself. */
static int read_stream(FILE *fp, const char *path, uint64_t file_len, StFile *out, D2vError *err)
{
    uint8_t prefix[ST_PREFIX_LEN] = {0};
    size_t prefix_len = file_len < ST_PREFIX_LEN ? (size_t)file_len : ST_PREFIX_LEN;
    uint64_t header_len = 0;
    if (read_exact(fp, prefix, prefix_len, path, "the header length", err) != 0 ||
        check_prefix(prefix, file_len, path, &header_len, err) != 0)
        return -1;
    uint64_t data_start = ST_PREFIX_LEN + header_len, data_len = file_len - data_start;
    if (data_len > SIZE_MAX)
        return d2v_fail(err, "%s: data area of %llu bytes does not fit in memory", path,
                        (unsigned long long)data_len);

    char *header = d2v_malloc((size_t)header_len, err);
    if (!header)
        return -1;
    int rc = read_exact(fp, header, (size_t)header_len, path, "the header", err);
    if (rc == 0)
        rc = parse_header(header, (size_t)header_len, data_start, data_len, path, out, err);
    free(header);
    if (rc != 0)
        return -1;

    out->data = d2v_malloc((size_t)data_len, err);
    if (!out->data || read_exact(fp, out->data, (size_t)data_len, path, "tensor data", err) != 0)
        return -1;
    out->data_len = data_len;
    if (fgetc(fp) != EOF)
        return d2v_fail(err, "%s: file grew while being read (was %llu bytes)", path,
                        (unsigned long long)file_len);
    return 0;
}

static const char *file_kind(mode_t mode)
{
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISFIFO(mode)) return "a pipe";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    if (S_ISSOCK(mode)) return "a socket";
    return "a special file";
}

int st_read(const char *path, StFile *out, D2vError *err)
{
    memset(out, 0, sizeof *out);
    /* open + fdopen rather than fopen: O_NONBLOCK keeps a FIFO from hanging
     * the open before fstat can reject it (no effect on regular files). */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return d2v_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int saved = errno;
        close(fd);
        return d2v_fail(err, "%s: cannot stat: %s", path, strerror(saved));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return d2v_fail(err, "%s: is %s, expected a regular safetensors file", path, file_kind(st.st_mode));
    }
    FILE *fp = fdopen(fd, "rb");
    if (!fp) {
        int saved = errno;
        close(fd);
        return d2v_fail(err, "%s: cannot open: %s", path, strerror(saved));
    }
    int rc = read_stream(fp, path, (uint64_t)st.st_size, out, err);
    fclose(fp); /* read-only: nothing buffered to lose, so its result does not matter */
    if (rc != 0)
        st_free(out);
    return rc;
}

void st_free(StFile *f)
{
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    for (int i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    free(f->data);
    memset(f, 0, sizeof *f);
}

const StTensor *st_find(const StFile *f, const char *name)
{
    for (int i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0)
            return &f->tensors[i];
    return NULL;
}

const char *st_meta(const StFile *f, const char *key)
{
    for (int i = 0; i < f->n_meta; i++)
        if (strcmp(f->meta[i].key, key) == 0)
            return f->meta[i].value;
    return NULL;
}

/* ---- Writing ------------------------------------------------------------ */

void st_writer_init(StWriter *w)
{
    memset(w, 0, sizeof *w);
}

void st_writer_free(StWriter *w)
{
    for (int i = 0; i < w->n_meta; i++) {
        free(w->meta[i].key);
        free(w->meta[i].value);
    }
    free(w->meta);
    free(w->tensors);
    st_writer_init(w);
}

/* Returns `items` (capacity *cap) grown by doubling to hold `need` items, or
 * NULL with a message; the old buffer stays valid on failure. */
static void *grow_array(void *items, int *cap, int need, size_t item_size, D2vError *err)
{
    if (need <= *cap)
        return items;
    int new_cap = *cap ? *cap : 16;
    while (new_cap < need) {
        if (new_cap > INT_MAX / 2) {
            d2v_fail(err, "safetensors writer: too many entries");
            return NULL;
        }
        new_cap *= 2;
    }
    void *grown = realloc(items, (size_t)new_cap * item_size);
    if (!grown) {
        d2v_fail(err, "out of memory growing a list to %d entries", new_cap);
        return NULL;
    }
    *cap = new_cap;
    return grown;
}

/* jansson refuses keys and strings that are not UTF-8; catch that when the
 * caller adds them, not at save time far from the cause. */
static int is_utf8(const char *s)
{
    json_t *probe = json_string(s);
    json_decref(probe);
    return probe != NULL;
}

int st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                  const void *data, D2vError *err)
{
    if (!name || !*name)
        return d2v_fail(err, "safetensors writer: tensor name is empty");
    if (strcmp(name, "__metadata__") == 0)
        return d2v_fail(err, "safetensors writer: tensor name '__metadata__' is reserved by the format");
    if (!is_utf8(name))
        return d2v_fail(err, "safetensors writer: tensor name '%s' is not valid UTF-8", shown(name).s);
    for (int i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return d2v_fail(err, "safetensors writer: duplicate tensor name '%s'", shown(name).s);
    if (!dtype_valid(dtype))
        return d2v_fail(err, "safetensors writer: tensor '%s': invalid dtype %d", shown(name).s, (int)dtype);
    if (ndim < 0 || ndim > ST_MAX_DIMS || (ndim > 0 && !shape))
        return d2v_fail(err, "safetensors writer: tensor '%s': %d dimensions, expected 0 to %d with a shape",
                        shown(name).s, ndim, ST_MAX_DIMS);
    uint64_t bytes = 0;
    if (tensor_bytes(dtype, ndim, shape, &bytes) != 0)
        return d2v_fail(err, "safetensors writer: tensor '%s': shape %s has a negative dimension or "
                             "overflows 64 bits", shown(name).s, shape_text(shape, ndim).s);
    if (bytes > 0 && !data)
        return d2v_fail(err, "safetensors writer: tensor '%s': data is NULL", shown(name).s);

    StWriteTensor *tensors = grow_array(w->tensors, &w->cap_tensors, w->n_tensors + 1, sizeof *tensors, err);
    if (!tensors)
        return -1;
    w->tensors = tensors;
    StWriteTensor *t = &w->tensors[w->n_tensors++];
    memset(t, 0, sizeof *t);
    t->name = name;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        t->shape[i] = shape[i];
    t->data = data;
    return 0;
}

int st_writer_meta(StWriter *w, const char *key, const char *value, D2vError *err)
{
    if (!key || !value)
        return d2v_fail(err, "safetensors writer: metadata key or value is NULL");
    if (!is_utf8(key) || !is_utf8(value))
        return d2v_fail(err, "safetensors writer: metadata '%s' is not valid UTF-8", shown(key).s);
    for (int i = 0; i < w->n_meta; i++)
        if (strcmp(w->meta[i].key, key) == 0)
            return d2v_fail(err, "safetensors writer: duplicate metadata key '%s'", shown(key).s);

    StMeta *meta = grow_array(w->meta, &w->cap_meta, w->n_meta + 1, sizeof *meta, err);
    if (!meta)
        return -1;
    w->meta = meta;
    char *key_copy = copy_string(key, err);
    char *value_copy = key_copy ? copy_string(value, err) : NULL;
    if (!value_copy) {
        free(key_copy);
        return -1;
    }
    w->meta[w->n_meta].key = key_copy;
    w->meta[w->n_meta].value = value_copy;
    w->n_meta++;
    return 0;
}

/* Byte size of a tensor st_writer_add accepted, so it cannot overflow. */
static uint64_t added_tensor_bytes(const StWriteTensor *t)
{
    uint64_t bytes = 0;
    tensor_bytes(t->dtype, t->ndim, t->shape, &bytes);
    return bytes;
}

/* Builds the compact JSON header: __metadata__ first (as the reference writer
 * does), then tensors in the order added with contiguous offsets. jansson
 * keeps insertion order when dumping. json_*_set_new consumes its value even
 * on failure, so combining results with |= leaks nothing. */
static char *build_header(const StWriter *w, const char *path, D2vError *err)
{
    json_t *root = json_object();
    int bad = root == NULL;
    if (w->n_meta > 0) {
        json_t *meta = json_object();
        for (int i = 0; i < w->n_meta; i++)
            bad |= json_object_set_new(meta, w->meta[i].key, json_string(w->meta[i].value));
        bad |= json_object_set_new(root, "__metadata__", meta);
    }
    uint64_t offset = 0;
    for (int i = 0; i < w->n_tensors && !bad; i++) {
        const StWriteTensor *t = &w->tensors[i];
        uint64_t bytes = added_tensor_bytes(t);
        if (bytes > (uint64_t)INT64_MAX - offset) {
            json_decref(root);
            d2v_fail(err, "writing %s: total tensor data exceeds 2^63 bytes", path);
            return NULL;
        }
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            bad |= json_array_append_new(shape, json_integer((json_int_t)t->shape[d]));
        json_t *offsets = json_array();
        bad |= json_array_append_new(offsets, json_integer((json_int_t)offset));
        bad |= json_array_append_new(offsets, json_integer((json_int_t)(offset + bytes)));
        json_t *entry = json_object();
        bad |= json_object_set_new(entry, "dtype", json_string(st_dtype_name(t->dtype)));
        bad |= json_object_set_new(entry, "shape", shape);
        bad |= json_object_set_new(entry, "data_offsets", offsets);
        bad |= json_object_set_new(root, t->name, entry);
        offset += bytes;
    }
    char *text = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!text)
        d2v_fail(err, "writing %s: out of memory building the JSON header", path);
    return text;
}

/* Writes the whole file to `tmp` and makes it durable; the caller renames it
 * into place or removes it. */
static int write_temp(const StWriter *w, const char *tmp, const char *path, const char *header,
                      size_t header_len, uint64_t padded_len, D2vError *err)
{
    FILE *fp = fopen(tmp, "wb");
    if (!fp)
        return d2v_fail(err, "writing %s: cannot create temporary file %s: %s", path, tmp, strerror(errno));

    uint8_t prefix[ST_PREFIX_LEN];
    for (int i = 0; i < ST_PREFIX_LEN; i++)
        prefix[i] = (uint8_t)(padded_len >> (8 * i));
    /* Spaces pad the header so the data area starts 8-byte aligned in the
     * file, as the reference writer does; JSON ignores trailing whitespace. */
    static const char spaces[] = "       "; /* at most 7 are ever needed */
    size_t pad = (size_t)padded_len - header_len;

    errno = 0;
    int ok = fwrite(prefix, 1, sizeof prefix, fp) == sizeof prefix &&
             fwrite(header, 1, header_len, fp) == header_len &&
             (pad == 0 || fwrite(spaces, 1, pad, fp) == pad);
    for (int i = 0; i < w->n_tensors && ok; i++) {
        const StWriteTensor *t = &w->tensors[i];
        uint64_t bytes = added_tensor_bytes(t);
        ok = bytes == 0 || fwrite(t->data, 1, (size_t)bytes, fp) == bytes;
    }
    /* stdio buffers, so a full disk may only show at fflush; fsync makes the
     * bytes durable before the rename publishes them. */
    ok = ok && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int saved = errno;
    if (fclose(fp) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (!ok)
        return d2v_fail(err, "writing %s: %s", path, strerror(saved ? saved : EIO));
    return 0;
}

/* The rename is durable only once the directory entry is on disk too. */
static int sync_directory(const char *path, D2vError *err)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = copy_string(".", err);
    else if (slash == path)
        dir = copy_string("/", err);
    else {
        dir = d2v_malloc((size_t)(slash - path) + 1, err);
        if (dir) {
            memcpy(dir, path, (size_t)(slash - path));
            dir[slash - path] = '\0';
        }
    }
    if (!dir)
        return -1;
    int rc = 0;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        rc = d2v_fail(err, "writing %s: file saved, but cannot open its directory %s to fsync it: %s", path,
                      dir, strerror(errno));
    /* Some filesystems cannot fsync a directory and say EINVAL; the rename
     * has happened and there is nothing more we could do there. */
    else if (fsync(fd) != 0 && errno != EINVAL)
        rc = d2v_fail(err, "writing %s: file saved, but fsync of directory %s failed: %s", path, dir,
                      strerror(errno));
    if (fd >= 0)
        close(fd);
    free(dir);
    return rc;
}

int st_writer_save(const StWriter *w, const char *path, D2vError *err)
{
    char *header = build_header(w, path, err);
    if (!header)
        return -1;
    size_t header_len = strlen(header);
    uint64_t padded_len = ((uint64_t)header_len + 7) / 8 * 8;
    if (padded_len > ST_MAX_HEADER) {
        free(header);
        return d2v_fail(err, "writing %s: JSON header of %llu bytes exceeds the %u-byte limit readers accept",
                        path, (unsigned long long)padded_len, ST_MAX_HEADER);
    }

    int tmp_len = snprintf(NULL, 0, "%s.tmp.%ld", path, (long)getpid());
    char *tmp = tmp_len < 0 ? NULL : d2v_malloc((size_t)tmp_len + 1, err);
    if (!tmp) {
        free(header);
        return tmp_len < 0 ? d2v_fail(err, "writing %s: cannot format temporary file name", path) : -1;
    }
    snprintf(tmp, (size_t)tmp_len + 1, "%s.tmp.%ld", path, (long)getpid());

    int rc = write_temp(w, tmp, path, header, header_len, padded_len, err);
    if (rc == 0 && rename(tmp, path) != 0)
        rc = d2v_fail(err, "writing %s: cannot rename %s over it: %s", path, tmp, strerror(errno));
    if (rc != 0)
        unlink(tmp); /* best effort: the message above already says what went wrong */
    else
        rc = sync_directory(path, err);
    free(tmp);
    free(header);
    return rc;
}
