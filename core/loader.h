/* loader.h — batches prepared on a background thread while the step runs
 * (DESIGN §3 step 1), in an order fixed by the seed alone.
 *
 * Batch k of a training run holds items perm_e[j*B .. j*B+B) where e = k /
 * batches_per_epoch, j = k mod batches_per_epoch and perm_e is epoch e's
 * shuffle; its augmentation draws from its own RNG stream (seed, k). So
 * batch k is the same whatever the thread timing, and a resumed run only
 * needs k to continue the exact data order. */
#ifndef D2V_LOADER_H
#define D2V_LOADER_H

#include "modality.h"

typedef struct {
    const Modality *mod;
    const void *mcfg;
    void *dataset;
    int batch_size;
    int train;           /* shuffle, augment, drop the last partial batch, endless */
    uint64_t seed;
    int skip_bad;        /* data.on_error = skip */
    int64_t first_batch; /* resume: the first step's batch k */
    void (*warn)(void *ctx, const char *msg);
    void *warn_ctx;
    /* A slice of each training batch (data-parallel ranks, gradient
     * accumulation): batch k is cut into chunks of micro_rows rows, and
     * this loader hands out chunks first_chunk .. first_chunk + chunks - 1
     * of each, in order, as separate batches (so `chunks` per step). 0, 0, 0:
     * the whole batch. Row r of chunk c is row c * micro_rows + r of batch k
     * (Batch.row0), so the union over ranks is the batch one process draws. */
    int micro_rows, first_chunk, chunks;
} LoaderSpec;

typedef struct Loader Loader;

/* Starts the background thread that fills batches of spec (train: endless shuffled; eval: one pass in order). */
int loader_start(Loader **out, const LoaderSpec *spec, D2vError *err);
/* Waits for the next batch. Returns 1 and sets *batch (valid until the next
 * call), 0 at the end of an evaluation pass, -1 on error. */
int loader_next(Loader *l, Batch **batch, D2vError *err);
/* Stops the thread and frees the loader (NULL is fine). */
void loader_stop(Loader *l);

/* The items of training batch k (exposed for tests). */
void loader_train_items(uint64_t seed, int n_items, int batch_size, int64_t k, int *items);

/* RNG stream kinds: a stream is (kind << 48) | index, so the uses of one
 * seed never share random numbers. */
enum { STREAM_INIT = 1, STREAM_ORDER = 2, STREAM_AUGMENT = 3, STREAM_MASK = 4, STREAM_SYNTHETIC = 5 };
/* The stream number of use `kind`, instance `index` (a step, a batch). */
static inline uint64_t rng_stream(uint64_t kind, uint64_t index) { return (kind << 48) | index; }

#endif
