/* test_safetensors.c — safetensors round trip, atomic save, and rejection of
 * malformed files, each with its own message.
 *
 * Standalone: prints each failure, ends with "N passed, M failed" and exits
 * nonzero if any check failed. Files go to a fresh mkdtemp directory under
 * /tmp that is removed at the end. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp, lstat, setrlimit */
#endif

#include "safetensors.h"
#include "check.h"
#include "tempdir.h"

#include <dirent.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>




/* Number of directory entries whose name contains ".tmp.": what a failed or
 * interrupted save would leave behind. */
static int count_temp_files(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strstr(e->d_name, ".tmp."))
            n++;
    closedir(d);
    return n;
}


/* ---- Round trip --------------------------------------------------------- */

static void test_dtypes(void)
{
    static const struct { StDtype d; const char *name; size_t size; } expected[] = {
        {ST_F32, "F32", 4}, {ST_F64, "F64", 8}, {ST_F16, "F16", 2}, {ST_BF16, "BF16", 2},
        {ST_I64, "I64", 8}, {ST_I32, "I32", 4}, {ST_I16, "I16", 2}, {ST_I8, "I8", 1},
        {ST_U8, "U8", 1},   {ST_BOOL, "BOOL", 1},
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        CHECK(strcmp(st_dtype_name(expected[i].d), expected[i].name) == 0, "st_dtype_name(%s)",
              expected[i].name);
        CHECK(st_dtype_size(expected[i].d) == expected[i].size, "st_dtype_size(%s)", expected[i].name);
    }
}

static void same_tensor(const StFile *f, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                       const void *data, uint64_t numel)
{
    const StTensor *t = st_find(f, name);
    CHECK(t != NULL, "tensor '%s' found after round trip", name);
    if (!t)
        return;
    CHECK(t->dtype == dtype, "'%s' dtype %s, expected %s", name, st_dtype_name(t->dtype),
          st_dtype_name(dtype));
    CHECK(t->ndim == ndim, "'%s' ndim %d, expected %d", name, t->ndim, ndim);
    int same_shape = t->ndim == ndim;
    for (int i = 0; i < ndim && same_shape; i++)
        same_shape = t->shape[i] == shape[i];
    CHECK(same_shape, "'%s' shape", name);
    CHECK(st_numel(t) == numel, "'%s' numel %llu, expected %llu", name, (unsigned long long)st_numel(t),
          (unsigned long long)numel);
    uint64_t bytes = numel * st_dtype_size(dtype);
    int in_bounds = t->end - t->begin == bytes && t->end <= f->data_len;
    CHECK(in_bounds, "'%s' spans [%llu, %llu), expected %llu bytes", name, (unsigned long long)t->begin,
          (unsigned long long)t->end, (unsigned long long)bytes);
    if (in_bounds && bytes > 0)
        CHECK(memcmp(f->data + t->begin, data, (size_t)bytes) == 0, "'%s' bytes identical", name);
}

static void test_round_trip(void)
{
    D2vError err = {{0}};
    char path[4096];
    path_in_dir(path, sizeof path, "round_trip.safetensors");

    /* Values whose bits are easy to lose: -0, a NaN with payload, a subnormal,
     * infinities; they must come back bit for bit. */
    float vector[6] = {1.5f, -0.0f, INFINITY, -INFINITY, 1e-45f, 0};
    uint32_t nan_bits = 0x7fc01234u;
    memcpy(&vector[5], &nan_bits, sizeof nan_bits);
    float matrix[2][3] = {{1, 2, 3}, {-4, 5.25f, 6e30f}};
    float scalar = 3.14159f;
    int64_t ids[4] = {INT64_MIN, -1, 0, INT64_MAX};
    uint8_t bytes[3] = {0, 127, 255}; /* odd length: the next tensor starts unaligned */
    float after_bytes[2] = {7, 8};
    const int64_t vector_shape[1] = {6}, matrix_shape[2] = {2, 3}, ids_shape[1] = {4}, bytes_shape[1] = {3},
                  after_shape[1] = {2}, empty_shape[2] = {0, 5};
    const char *config = "[model]\nmodality = image\n; \"quoted\" \\ back\\slash, caf\xc3\xa9\n";

    StWriter w;
    st_writer_init(&w);
    int ok = st_writer_add(&w, "vector", ST_F32, 1, vector_shape, vector, &err) == 0 &&
             st_writer_add(&w, "matrix", ST_F32, 2, matrix_shape, matrix, &err) == 0 &&
             st_writer_add(&w, "scalar", ST_F32, 0, NULL, &scalar, &err) == 0 &&
             st_writer_add(&w, "ids", ST_I64, 1, ids_shape, ids, &err) == 0 &&
             st_writer_add(&w, "bytes", ST_U8, 1, bytes_shape, bytes, &err) == 0 &&
             st_writer_add(&w, "after_bytes", ST_F32, 1, after_shape, after_bytes, &err) == 0 &&
             st_writer_add(&w, "empty", ST_F32, 2, empty_shape, NULL, &err) == 0 &&
             st_writer_meta(&w, "format", "d2v-1", &err) == 0 &&
             st_writer_meta(&w, "config", config, &err) == 0 &&
             st_writer_meta(&w, "step", "1234", &err) == 0;
    CHECK(ok, "writer accepts tensors and metadata [%s]", err.msg);
    CHECK(st_writer_save(&w, path, &err) == 0, "save %s [%s]", path, err.msg);
    st_writer_free(&w);
    CHECK(count_temp_files(tmp_dir) == 0, "no temporary file left after save");

    /* The data area must start 8-byte aligned, with the header padded by
     * spaces, as the reference writer does. */
    size_t file_len = 0;
    uint8_t *raw = read_whole(path, &file_len);
    CHECK(raw && file_len >= 8, "read back raw file %s", path);
    if (raw && file_len >= 8) {
        uint64_t header_len = 0;
        for (int i = 7; i >= 0; i--)
            header_len = header_len << 8 | raw[i];
        CHECK((8 + header_len) % 8 == 0, "data area starts at an 8-byte aligned offset (%llu)",
              (unsigned long long)(8 + header_len));
        CHECK(header_len <= file_len - 8 && raw[8] == '{', "header starts with '{'");
        char last = header_len < file_len - 8 ? (char)raw[8 + header_len - 1] : 0;
        CHECK(last == '}' || last == ' ', "header ends with '}' or padding");
    }

    StFile f;
    int rc = st_read(path, &f, &err);
    CHECK(rc == 0, "read back %s [%s]", path, err.msg);
    if (rc == 0) {
        CHECK(f.n_tensors == 7, "7 tensors read, got %d", f.n_tensors);
        static const char *order[] = {"vector", "matrix", "scalar", "ids", "bytes", "after_bytes", "empty"};
        uint64_t expect_begin = 0;
        for (int i = 0; i < f.n_tensors && i < 7; i++) {
            CHECK(strcmp(f.tensors[i].name, order[i]) == 0, "tensor %d is '%s'", i, order[i]);
            CHECK(f.tensors[i].begin == expect_begin, "'%s' starts where the previous one ends",
                  order[i]);
            expect_begin = f.tensors[i].end;
        }
        CHECK(expect_begin == f.data_len, "tensors cover the data area");
        same_tensor(&f, "vector", ST_F32, 1, vector_shape, vector, 6);
        same_tensor(&f, "matrix", ST_F32, 2, matrix_shape, matrix, 6);
        same_tensor(&f, "scalar", ST_F32, 0, NULL, &scalar, 1);
        same_tensor(&f, "ids", ST_I64, 1, ids_shape, ids, 4);
        same_tensor(&f, "bytes", ST_U8, 1, bytes_shape, bytes, 3);
        same_tensor(&f, "after_bytes", ST_F32, 1, after_shape, after_bytes, 2);
        same_tensor(&f, "empty", ST_F32, 2, empty_shape, NULL, 0);
        CHECK(f.n_meta == 3, "3 metadata entries, got %d", f.n_meta);
        const char *m = st_meta(&f, "config");
        CHECK(m && strcmp(m, config) == 0, "metadata 'config' identical");
        m = st_meta(&f, "step");
        CHECK(m && strcmp(m, "1234") == 0, "metadata 'step' identical");
        CHECK(st_meta(&f, "missing") == NULL, "absent metadata key gives NULL");
        CHECK(st_find(&f, "missing") == NULL, "absent tensor gives NULL");
        st_free(&f);
    }

    /* st_parse on the same bytes agrees, including with no name given. */
    if (raw) {
        CHECK(st_parse(raw, file_len, NULL, &f, &err) == 0, "st_parse of a written file [%s]", err.msg);
        CHECK(f.n_tensors == 7 && f.n_meta == 3, "st_parse sees the same entries");
        st_free(&f);

        /* Every proper prefix of a valid file is rejected (and read in bounds:
         * ASan watches). */
        int all_rejected = 1;
        for (size_t len = 0; len < file_len; len++) {
            uint8_t *copy = malloc(len ? len : 1); /* exact size so ASan sees any overread */
            memcpy(copy, raw, len);
            if (st_parse(copy, len, "prefix", &f, &err) == 0) {
                all_rejected = 0;
                st_free(&f);
            }
            free(copy);
        }
        CHECK(all_rejected, "every truncation of a valid file is rejected");

        /* Random byte corruption never crashes or reads out of bounds; what
         * is accepted stays inside its data area. */
        uint64_t state = 0x9e3779b97f4a7c15ull;
        int consistent = 1;
        for (int trial = 0; trial < 3000; trial++) {
            uint8_t *copy = malloc(file_len);
            memcpy(copy, raw, file_len);
            for (int flips = 0; flips < 1 + trial % 4; flips++) {
                state = state * 6364136223846793005ull + 1442695040888963407ull;
                copy[(state >> 33) % file_len] = (uint8_t)(state >> 20);
            }
            if (st_parse(copy, file_len, "mutated", &f, &err) == 0) {
                for (int i = 0; i < f.n_tensors; i++)
                    consistent &= f.tensors[i].end <= f.data_len;
                st_free(&f);
            } else {
                consistent &= strchr(err.msg, '\n') == NULL;
            }
            free(copy);
        }
        CHECK(consistent, "mutated files: accepted ones in bounds, rejected ones one-line");
    }
    free(raw);

    /* Saving again replaces the file atomically: new content, no temp file. */
    float replacement = 42;
    st_writer_init(&w);
    CHECK(st_writer_add(&w, "only", ST_F32, 0, NULL, &replacement, &err) == 0, "add 'only' [%s]", err.msg);
    CHECK(st_writer_save(&w, path, &err) == 0, "save over an existing file [%s]", err.msg);
    st_writer_free(&w);
    CHECK(count_temp_files(tmp_dir) == 0, "no temporary file left after overwrite");
    rc = st_read(path, &f, &err);
    CHECK(rc == 0, "read overwritten file [%s]", err.msg);
    if (rc == 0) {
        CHECK(f.n_tensors == 1 && f.n_meta == 0 && st_find(&f, "only"), "overwritten content");
        st_free(&f);
    }

    /* A writer with nothing in it gives a valid empty file. */
    path_in_dir(path, sizeof path, "empty.safetensors");
    st_writer_init(&w);
    CHECK(st_writer_save(&w, path, &err) == 0, "save empty file [%s]", err.msg);
    st_writer_free(&w);
    rc = st_read(path, &f, &err);
    CHECK(rc == 0, "read empty file [%s]", err.msg);
    if (rc == 0) {
        CHECK(f.n_tensors == 0 && f.n_meta == 0 && f.data_len == 0, "empty file has nothing");
        st_free(&f);
    }
}

/* ---- Writer errors ------------------------------------------------------ */

/* st_writer_add must refuse the tensor with a message containing `expect`. */
static void expect_add_error(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape,
                             const void *data, const char *expect)
{
    D2vError err = {{0}};
    int rc = st_writer_add(w, name, dtype, ndim, shape, data, &err);
    CHECK(rc != 0 && strstr(err.msg, expect), "st_writer_add('%s') fails with \"%s\" [%s]", name, expect,
          err.msg);
}

static void test_writer_errors(void)
{
    D2vError err = {{0}};
    float x[4] = {0};
    const int64_t shape[1] = {4}, negative[1] = {-1};
    StWriter w;
    st_writer_init(&w);
    CHECK(st_writer_add(&w, "x", ST_F32, 1, shape, x, &err) == 0, "add x [%s]", err.msg);
    expect_add_error(&w, "x", ST_F32, 1, shape, x, "duplicate tensor name 'x'");
    expect_add_error(&w, "", ST_F32, 1, shape, x, "name is empty");
    expect_add_error(&w, "__metadata__", ST_F32, 1, shape, x, "reserved");
    expect_add_error(&w, "bad\xff", ST_F32, 1, shape, x, "not valid UTF-8");
    expect_add_error(&w, "neg", ST_F32, 1, negative, x, "negative dimension");
    expect_add_error(&w, "null", ST_F32, 1, shape, NULL, "data is NULL");
    expect_add_error(&w, "dims", ST_F32, ST_MAX_DIMS + 1, shape, x, "9 dimensions");
    expect_add_error(&w, "dtype", (StDtype)99, 1, shape, x, "invalid dtype 99");
    CHECK(st_writer_meta(&w, "k", "v", &err) == 0, "add metadata [%s]", err.msg);
    CHECK(st_writer_meta(&w, "k", "v2", &err) != 0 && strstr(err.msg, "duplicate metadata key 'k'"),
          "duplicate metadata key rejected [%s]", err.msg);
    CHECK(w.n_tensors == 1 && w.n_meta == 1, "rejected entries were not added");

    /* A directory that does not exist: a clear message, nothing created. */
    char path[4096];
    path_in_dir(path, sizeof path, "no/such/dir/out.safetensors");
    int rc = st_writer_save(&w, path, &err);
    CHECK(rc != 0 && strncmp(err.msg, "writing ", 8) == 0 && strstr(err.msg, path) &&
              strstr(err.msg, "No such file or directory"),
          "save into a missing directory fails with a message [%s]", err.msg);
    st_writer_free(&w);
}

/* A write that fails midway (here the file size limit, standing in for a
 * full disk: both are write errors from the kernel) must leave the old file
 * untouched and no temporary file behind. */
static void test_failed_write_keeps_old_file(void)
{
    D2vError err = {{0}};
    char path[4096];
    path_in_dir(path, sizeof path, "keep.safetensors");
    float old_value = 1;
    StWriter w;
    st_writer_init(&w);
    st_writer_add(&w, "old", ST_F32, 0, NULL, &old_value, &err);
    CHECK(st_writer_save(&w, path, &err) == 0, "save the old file [%s]", err.msg);
    st_writer_free(&w);

    enum { N = 1 << 16 };
    float *big = calloc(N, sizeof *big);
    const int64_t shape[1] = {N};
    st_writer_init(&w);
    st_writer_add(&w, "big", ST_F32, 1, shape, big, &err);

    struct rlimit saved;
    getrlimit(RLIMIT_FSIZE, &saved);
    struct rlimit small = saved;
    small.rlim_cur = 4096;
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* get EFBIG instead of being killed */
    int limited = setrlimit(RLIMIT_FSIZE, &small) == 0;
    int rc = limited ? st_writer_save(&w, path, &err) : 0;
    setrlimit(RLIMIT_FSIZE, &saved);
    signal(SIGXFSZ, old_handler);
    st_writer_free(&w);
    free(big);

    CHECK(limited, "set RLIMIT_FSIZE for the failed-write test");
    if (!limited)
        return;
    char expected[4200];
    snprintf(expected, sizeof expected, "writing %s: File too large", path);
    CHECK(rc != 0 && strstr(err.msg, expected), "failed write reports '%s' [%s]", expected, err.msg);
    CHECK(count_temp_files(tmp_dir) == 0, "failed write removed its temporary file");
    StFile f;
    rc = st_read(path, &f, &err);
    CHECK(rc == 0, "old file still readable [%s]", err.msg);
    if (rc == 0) {
        const StTensor *t = st_find(&f, "old");
        CHECK(f.n_tensors == 1 && t && memcmp(f.data + t->begin, &old_value, 4) == 0,
              "old file unchanged after a failed write");
        st_free(&f);
    }
}

/* ---- Malformed files ---------------------------------------------------- */

typedef struct {
    const char *label;    /* also the file name */
    const char *header;   /* JSON text; NULL means the file is only `data_len` zero bytes */
    int set_length;       /* write `length` as the header length instead of strlen(header) */
    uint64_t length;
    size_t data_len;      /* bytes after the header */
    const char *expect;   /* distinctive part of the error */
} BadFile;

#define T(name, dtype, shape, begin, end) \
    "\"" name "\":{\"dtype\":\"" dtype "\",\"shape\":" shape ",\"data_offsets\":[" #begin "," #end "]}"

static const BadFile bad_files[] = {
    {"too_short", NULL, 0, 0, 5, "only 5 bytes, too short for the 8-byte header length"},
    {"empty_file", NULL, 0, 0, 0, "only 0 bytes, too short"},
    {"zero_header_length", "{}", 1, 0, 8, "header length is 0"},
    {"huge_header_length", "{}", 1, UINT64_MAX, 8, "header length 18446744073709551615 exceeds the"},
    {"header_beyond_file", "{}", 1, 1000, 10, "header length 1000 runs past the end of the file (only 12 bytes"},
    {"not_json", "{\"a\": oops}", 0, 0, 0, "header is not valid JSON: invalid token"},
    {"truncated_json", "{\"a\": {", 0, 0, 0, "header is not valid JSON"},
    {"garbage_after_json", "{} x", 0, 0, 0, "end of file expected"},
    {"array_header", "[1, 2]", 0, 0, 0, "header is an array, expected a JSON object"},
    {"scalar_header", "3", 0, 0, 0, "header is an integer, expected a JSON object"},
    {"entry_not_object", "{\"a\": 3}", 0, 0, 0, "tensor 'a' is an integer, expected an object"},
    {"missing_dtype", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 0, 4, "tensor 'a' has no \"dtype\""},
    {"dtype_not_string", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 0, 4,
     "tensor 'a': dtype is an integer, expected a string"},
    {"unknown_dtype", "{" T("a", "F8", "[1]", 0, 1) "}", 0, 0, 1, "tensor 'a' has unknown dtype 'F8'"},
    {"missing_shape", "{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 0, 0, 4, "tensor 'a' has no \"shape\""},
    {"shape_not_array", "{" T("a", "F32", "4", 0, 4) "}", 0, 0, 4, "shape is an integer, expected an array"},
    {"negative_dim", "{" T("a", "F32", "[-1]", 0, 4) "}", 0, 0, 4, "shape[0] is -1, expected a non-negative"},
    {"real_dim", "{" T("a", "F32", "[2, 1.5]", 0, 4) "}", 0, 0, 4, "shape[1] is a real number"},
    {"too_many_dims", "{" T("a", "F32", "[1,1,1,1,1,1,1,1,1]", 0, 4) "}", 0, 0, 4,
     "shape has 9 dimensions, at most 8"},
    {"size_overflow", "{" T("a", "F32", "[4294967296,4294967296]", 0, 4) "}", 0, 0, 4, "overflows 64 bits"},
    {"missing_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 0, 0, 4, "has no \"data_offsets\""},
    {"offsets_one_entry", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4]}}", 0, 0, 4,
     "data_offsets has 1 entries, expected 2"},
    {"offsets_negative", "{" T("a", "F32", "[1]", -4, 0) "}", 0, 0, 4, "data_offsets[0] is -4"},
    {"offsets_reversed", "{" T("a", "F32", "[1]", 8, 4) "}", 0, 0, 8, "data_offsets [8, 4] begin after they end"},
    {"unexpected_key", "{\"a\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[0,1],\"foo\":1}}", 0, 0, 1,
     "unexpected key 'foo'"},
    {"size_mismatch", "{" T("a", "F32", "[3]", 0, 8) "}", 0, 0, 8,
     "tensor 'a': shape [3] of F32 needs 12 bytes but data_offsets [0, 8] span 8"},
    {"offsets_out_of_range", "{" T("a", "F32", "[2]", 0, 8) "}", 0, 0, 4,
     "tensor 'a': data_offsets [0, 8] run past the end of the data area (4 bytes"},
    {"overlap", "{" T("a", "F32", "[2]", 0, 8) "," T("b", "F32", "[2]", 4, 12) "}", 0, 0, 12,
     "tensor 'b' [4, 12] overlaps tensor 'a' [0, 8]"},
    {"gap", "{" T("a", "F32", "[1]", 0, 4) "," T("b", "F32", "[1]", 8, 12) "}", 0, 0, 12,
     "gap of 4 unused bytes between tensor 'a' (ends at data byte 4) and tensor 'b'"},
    {"gap_at_start", "{" T("a", "F32", "[1]", 4, 8) "}", 0, 0, 8, "gap of 4 unused bytes before the first tensor 'a'"},
    {"trailing_bytes", "{" T("a", "F32", "[1]", 0, 4) "}", 0, 0, 7, "3 trailing bytes after the last tensor 'a'"},
    {"trailing_no_tensors", "{}", 0, 0, 2, "2 trailing bytes after the header, which lists no tensors"},
    {"empty_name", "{" T("", "U8", "[1]", 0, 1) "}", 0, 0, 1, "a tensor has an empty name"},
    {"duplicate_name", "{" T("a", "U8", "[1]", 0, 1) "," T("a", "U8", "[1]", 1, 2) "}", 0, 0, 2,
     "header repeats a key; tensor names and keys must be unique"},
    {"metadata_not_object", "{\"__metadata__\":[\"x\"]}", 0, 0, 0, "__metadata__ is an array, expected an object"},
    {"metadata_value_not_string", "{\"__metadata__\":{\"step\":5}}", 0, 0, 0,
     "__metadata__ key 'step' is an integer, expected a string"},
    /* A newline in a hostile name must not break the one-line message. */
    {"newline_in_name", "{" T("x\\ny", "Q", "[]", 0, 1) "}", 0, 0, 1, "tensor 'x?y' has unknown dtype 'Q'"},
};

static uint8_t *build_file(const BadFile *c, size_t *len)
{
    size_t header_len = c->header ? strlen(c->header) : 0;
    size_t prefix_len = c->header ? 8 : 0;
    *len = prefix_len + header_len + c->data_len;
    uint8_t *bytes = calloc(*len ? *len : 1, 1);
    if (c->header) {
        uint64_t n = c->set_length ? c->length : header_len;
        for (int i = 0; i < 8; i++)
            bytes[i] = (uint8_t)(n >> (8 * i));
        memcpy(bytes + 8, c->header, header_len);
    }
    for (size_t i = 0; i < c->data_len; i++)
        bytes[prefix_len + header_len + i] = (uint8_t)(c->header ? i * 37 : 0);
    return bytes;
}

static void test_bad_files(void)
{
    for (size_t i = 0; i < sizeof bad_files / sizeof bad_files[0]; i++) {
        const BadFile *c = &bad_files[i];
        char path[4096];
        path_in_dir(path, sizeof path, c->label);
        size_t len;
        uint8_t *bytes = build_file(c, &len);
        int written = write_file(path, bytes, len) == 0;
        CHECK(written, "%s: write test file", c->label);
        if (!written) {
            free(bytes);
            continue;
        }
        D2vError err = {{0}};
        StFile f;
        int rc = st_read(path, &f, &err);
        CHECK(rc != 0, "%s: rejected", c->label);
        if (rc == 0)
            st_free(&f);
        CHECK(rc != 0 && strstr(err.msg, c->expect), "%s: message contains \"%s\" [%s]", c->label, c->expect,
              err.msg);
        CHECK(strncmp(err.msg, path, strlen(path)) == 0 && err.msg[strlen(path)] == ':',
              "%s: message starts with the file name [%s]", c->label, err.msg);
        CHECK(strchr(err.msg, '\n') == NULL, "%s: message is one line [%s]", c->label, err.msg);
        CHECK(f.n_tensors == 0 && f.tensors == NULL && f.data == NULL, "%s: nothing left allocated",
              c->label);

        /* The in-memory parser gives the same verdict, with its own name. */
        D2vError perr = {{0}};
        rc = st_parse(bytes, len, "buffer", &f, &perr);
        if (rc == 0)
            st_free(&f);
        CHECK(rc != 0 && strncmp(perr.msg, "buffer: ", 8) == 0 && strstr(perr.msg, c->expect),
              "%s: st_parse rejects it the same way [%s]", c->label, perr.msg);
        free(bytes);
    }
}

/* What the reader must accept although our writer never produces it. */
static void test_accepted_variants(void)
{
    static const struct {
        const char *label, *header;
        size_t data_len;
        int n_tensors;
    } good[] = {
        {"unpadded_header", "{" T("a", "F32", "[1]", 0, 4) "}", 4, 1},
        {"whitespace_around_header", "\n { " T("a", "F32", "[1]", 0, 4) " }  \n\t ", 4, 1},
        {"zero_size_tensor_in_middle",
         "{" T("a", "U8", "[2]", 0, 2) "," T("z", "F32", "[0, 7]", 2, 2) "," T("b", "U8", "[1]", 2, 3) "}", 3, 3},
        {"zero_size_tensor_at_end", "{" T("a", "U8", "[2]", 0, 2) "," T("z", "F32", "[0]", 2, 2) "}", 2, 2},
        {"out_of_order_offsets", "{" T("b", "U8", "[1]", 1, 2) "," T("a", "U8", "[1]", 0, 1) "}", 2, 2},
        {"metadata_only", "{\"__metadata__\":{\"k\":\"v\"}}", 0, 0},
        {"all_dtypes",
         "{" T("f64", "F64", "[1]", 0, 8) "," T("i64", "I64", "[1]", 8, 16) "," T("f32", "F32", "[1]", 16, 20) ","
         T("i32", "I32", "[1]", 20, 24) "," T("f16", "F16", "[1]", 24, 26) "," T("bf16", "BF16", "[1]", 26, 28) ","
         T("i16", "I16", "[1]", 28, 30) "," T("i8", "I8", "[1]", 30, 31) "," T("u8", "U8", "[1]", 31, 32) ","
         T("bool", "BOOL", "[1]", 32, 33) "}", 33, 10},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        BadFile c = {good[i].label, good[i].header, 0, 0, good[i].data_len, ""};
        char path[4096];
        path_in_dir(path, sizeof path, c.label);
        size_t len;
        uint8_t *bytes = build_file(&c, &len);
        D2vError err = {{0}};
        StFile f;
        int accepted = write_file(path, bytes, len) == 0 && st_read(path, &f, &err) == 0;
        CHECK(accepted, "%s: accepted [%s]", c.label, err.msg);
        if (accepted) {
            CHECK(f.n_tensors == good[i].n_tensors && f.data_len == good[i].data_len,
                  "%s: %d tensors, %zu data bytes", c.label, good[i].n_tensors, good[i].data_len);
            st_free(&f);
        }
        free(bytes);
    }
}

static void test_not_a_file(void)
{
    D2vError err = {{0}};
    StFile f;
    CHECK(st_read(tmp_dir, &f, &err) != 0 && strstr(err.msg, "is a directory, expected a regular"),
          "a directory is rejected [%s]", err.msg);
    char path[4096];
    path_in_dir(path, sizeof path, "does_not_exist.safetensors");
    CHECK(st_read(path, &f, &err) != 0 && strstr(err.msg, "cannot open: No such file"),
          "a missing file is rejected [%s]", err.msg);
    CHECK(st_read("/dev/null", &f, &err) != 0 && strstr(err.msg, "character device"),
          "/dev/null is rejected as a device [%s]", err.msg);
    /* A FIFO with no writer: refused at once, not waited on. */
    path_in_dir(path, sizeof path, "pipe.safetensors");
    CHECK(mkfifo(path, 0644) == 0, "mkfifo");
    CHECK(st_read(path, &f, &err) != 0 && strstr(err.msg, "is a pipe"), "a FIFO is rejected [%s]", err.msg);
}

int main(void)
{
    if (tmp_dir_create("st") < 0)
        return 1;
    test_dtypes();
    test_round_trip();
    test_writer_errors();
    test_failed_write_keeps_old_file();
    test_bad_files();
    test_accepted_variants();
    test_not_a_file();
    remove_tree(tmp_dir);
    return check_summary();
}
