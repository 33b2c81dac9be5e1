/* safetensors.h — read and write the safetensors format (DESIGN §5):
 *   8-byte little-endian header length n, n bytes of JSON header
 *   {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
 *   {str: str}}, then the raw little-endian tensor bytes.
 *
 * The reader trusts nothing: header length is capped, the JSON is parsed with
 * jansson, every dtype is known, shape x element size equals the byte span,
 * the spans tile the data area exactly (no gaps, no overlaps) and the file
 * has no trailing bytes. A hostile file gets a one-line error, never an
 * out-of-bounds read or an unbounded allocation. */
#ifndef D2V_SAFETENSORS_H
#define D2V_SAFETENSORS_H

#include "common.h"

#define ST_MAX_DIMS 8
#define ST_MAX_HEADER (100u << 20) /* 100 MiB, as the reference library caps it */

typedef enum { ST_F32, ST_F64, ST_F16, ST_BF16, ST_I64, ST_I32, ST_I16, ST_I8, ST_U8, ST_BOOL } StDtype;

typedef struct {
    char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets into the data area */
} StTensor;

typedef struct {
    char *key, *value;
} StMeta;

/* A file opened for reading: header parsed and validated, data read into
 * memory (data, data_len) so tensors are plain pointers. */
typedef struct {
    StTensor *tensors;
    int n_tensors;
    StMeta *meta;
    int n_meta;
    uint8_t *data;
    uint64_t data_len;
} StFile;

/* "F32", "I64", ...: the dtype as the header spells it. */
const char *st_dtype_name(StDtype d);
/* Bytes per element of the dtype. */
size_t st_dtype_size(StDtype d);

/* Reads and validates a whole .safetensors file (header, offsets, sizes); errors name the file. */
int st_read(const char *path, StFile *out, D2vError *err);
/* Same validation on a buffer already in memory (used by the fuzzer). */
int st_parse(const uint8_t *bytes, uint64_t len, const char *what, StFile *out, D2vError *err);
/* Frees what st_read or st_parse allocated. */
void st_free(StFile *f);

/* The tensor called name, or NULL. */
const StTensor *st_find(const StFile *f, const char *name);
/* The __metadata__ value of key, or NULL. */
const char *st_meta(const StFile *f, const char *key);
/* Number of elements of a tensor (product of its shape). */
uint64_t st_numel(const StTensor *t);

/* Writing: collect tensors (pointers, not copies) and metadata, then write.
 * The file appears atomically: it is written to PATH.tmp.<pid> in the same
 * directory, fsynced, renamed over PATH, and the directory is fsynced, so a
 * crash leaves either the old file or the new one, never a truncated one. */
typedef struct {
    const char *name;
    StDtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
} StWriteTensor;

typedef struct {
    StWriteTensor *tensors;
    int n_tensors, cap_tensors;
    StMeta *meta;           /* owned copies */
    int n_meta, cap_meta;
} StWriter;

/* An empty writer. */
void st_writer_init(StWriter *w);
/* name and data are borrowed: keep them alive until st_writer_save returns.
 * Offsets follow the order of adding, so a tensor added after one of odd byte
 * size (a U8 [3], say) starts unaligned in StFile.data; add wide dtypes first
 * or memcpy out when reading. */
int st_writer_add(StWriter *w, const char *name, StDtype dtype, int ndim, const int64_t *shape, const void *data, D2vError *err);
/* Adds a __metadata__ string (copied). */
int st_writer_meta(StWriter *w, const char *key, const char *value, D2vError *err);
/* Writes header and tensors to path atomically (temp file, fsync, rename). */
int st_writer_save(const StWriter *w, const char *path, D2vError *err);
/* Frees the writer's own copies. */
void st_writer_free(StWriter *w);

#endif
