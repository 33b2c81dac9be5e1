#include "loader.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* The batch being trained on plus up to two prepared ahead. */
enum { SLOTS = 3 };

struct Loader {
    LoaderSpec spec;
    int n_items;
    int64_t n_batches;          /* evaluation: one pass; training: unbounded */
    Batch slots[SLOTS];
    int64_t next_to_fill, next_to_take;
    int failed, stopping;
    D2vError error;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int *items;        /* the global batch's items */
    int rows, chunks;  /* rows per handed-out batch; batches per step */
};

static void shuffle(int *perm, int n, uint64_t seed, int64_t epoch)
{
    Rng r;
    rng_init(&r, seed, rng_stream(STREAM_ORDER, (uint64_t)epoch));
    for (int i = 0; i < n; i++)
        perm[i] = i;
    for (int i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int j = (int)rng_below(&r, (uint32_t)i + 1);
        int t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
}

void loader_train_items(uint64_t seed, int n_items, int batch_size, int64_t k, int *items)
{
    int *perm = malloc((size_t)n_items * sizeof *perm);
    const int64_t per_epoch = n_items / batch_size;
    shuffle(perm, n_items, seed, k / per_epoch);
    memcpy(items, perm + (k % per_epoch) * batch_size, (size_t)batch_size * sizeof *items);
    free(perm);
}

static void *produce(void *arg)
{
    Loader *l = arg;
    const LoaderSpec *s = &l->spec;
    const int B = s->batch_size;
    const int64_t per_epoch = s->train ? l->n_items / B : 0;
    int *perm = s->train ? malloc((size_t)l->n_items * sizeof *perm) : NULL;
    int64_t perm_epoch = -1;
    for (;;) {
        pthread_mutex_lock(&l->lock);
        /* Slot (next_to_take - 1) is still in use by the training thread. */
        while (!l->stopping && l->next_to_fill - l->next_to_take >= SLOTS - 1)
            pthread_cond_wait(&l->changed, &l->lock);
        int64_t k = l->next_to_fill;
        int done = l->stopping || (l->n_batches >= 0 && k >= l->n_batches);
        pthread_mutex_unlock(&l->lock);
        if (done)
            break;

        int rows = B, row0 = 0;
        const int64_t batch_k = s->train ? k / l->chunks : k; /* k counts handed-out slices */
        if (s->train) {
            if (batch_k / per_epoch != perm_epoch) {
                perm_epoch = batch_k / per_epoch;
                shuffle(perm, l->n_items, s->seed, perm_epoch);
            }
            memcpy(l->items, perm + (batch_k % per_epoch) * B, (size_t)B * sizeof *l->items);
            rows = l->rows;
            row0 = (s->first_chunk + (int)(k % l->chunks)) * l->rows;
        } else {
            int64_t first = k * B;
            rows = (int)(l->n_items - first < B ? l->n_items - first : B);
            for (int i = 0; i < rows; i++)
                l->items[i] = (int)(first + i);
        }
        Rng r;
        rng_init(&r, s->seed, rng_stream(STREAM_AUGMENT, (uint64_t)batch_k));
        Batch *b = &l->slots[k % SLOTS];
        b->row0 = row0;
        b->global_items = s->train ? l->items : NULL;
        b->global_rows = s->train ? B : rows;
        D2vError err;
        int rc = s->mod->load_batch(s->mcfg, s->dataset, l->items + row0, rows, s->train, &r, s->skip_bad, s->warn,
                                    s->warn_ctx, b, &err);
        b->global_items = NULL; /* l->items is refilled for the next slice */
        pthread_mutex_lock(&l->lock);
        if (rc < 0) {
            l->failed = 1;
            l->error = err;
        } else {
            l->next_to_fill = k + 1;
        }
        pthread_cond_broadcast(&l->changed);
        pthread_mutex_unlock(&l->lock);
        if (rc < 0)
            break;
    }
    free(perm);
    return NULL;
}

int loader_start(Loader **out, const LoaderSpec *spec, D2vError *err)
{
    Loader *l = d2v_calloc(1, sizeof *l, err);
    if (!l)
        return -1;
    l->spec = *spec;
    l->n_items = spec->mod->dataset_size(spec->dataset);
    if (spec->train && l->n_items < spec->batch_size) {
        d2v_fail(err, "the dataset has %d items, fewer than train.batch_size = %d", l->n_items, spec->batch_size);
        free(l);
        return -1;
    }
    l->rows = spec->train && spec->micro_rows > 0 ? spec->micro_rows : spec->batch_size;
    l->chunks = spec->train && spec->chunks > 0 ? spec->chunks : 1;
    if (spec->train && (int64_t)(spec->first_chunk + l->chunks) * l->rows > spec->batch_size) {
        d2v_fail(err, "loader: chunks %d..%d of %d rows do not fit a batch of %d", spec->first_chunk,
                 spec->first_chunk + l->chunks - 1, l->rows, spec->batch_size);
        free(l);
        return -1;
    }
    l->n_batches = spec->train ? -1 : (l->n_items + spec->batch_size - 1) / spec->batch_size;
    l->next_to_fill = l->next_to_take = spec->first_batch * l->chunks;
    l->items = d2v_malloc((size_t)spec->batch_size * sizeof *l->items, err);
    int allocated = 0;
    int rc = l->items ? 0 : -1;
    for (; allocated < SLOTS && rc == 0; allocated++)
        rc = spec->mod->batch_alloc(spec->mcfg, l->rows, &l->slots[allocated], err);
    if (rc == 0) {
        pthread_mutex_init(&l->lock, NULL);
        pthread_cond_init(&l->changed, NULL);
        if (pthread_create(&l->thread, NULL, produce, l) != 0)
            rc = d2v_fail(err, "cannot start the data loader thread");
    }
    if (rc < 0) {
        for (int i = 0; i < allocated; i++)
            spec->mod->batch_free(&l->slots[i]);
        free(l->items);
        free(l);
        return -1;
    }
    *out = l;
    return 0;
}

int loader_next(Loader *l, Batch **batch, D2vError *err)
{
    pthread_mutex_lock(&l->lock);
    while (!l->failed && l->next_to_fill <= l->next_to_take &&
           !(l->n_batches >= 0 && l->next_to_take >= l->n_batches))
        pthread_cond_wait(&l->changed, &l->lock);
    int rc;
    if (l->next_to_fill > l->next_to_take) {
        *batch = &l->slots[l->next_to_take % SLOTS];
        l->next_to_take++;
        rc = 1;
    } else if (l->failed) {
        *err = l->error;
        rc = -1;
    } else {
        rc = 0;
    }
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
    return rc;
}

void loader_stop(Loader *l)
{
    if (!l)
        return;
    pthread_mutex_lock(&l->lock);
    l->stopping = 1;
    pthread_cond_broadcast(&l->changed);
    pthread_mutex_unlock(&l->lock);
    pthread_join(l->thread, NULL);
    for (int i = 0; i < SLOTS; i++)
        l->spec.mod->batch_free(&l->slots[i]);
    pthread_mutex_destroy(&l->lock);
    pthread_cond_destroy(&l->changed);
    free(l->items);
    free(l);
}
