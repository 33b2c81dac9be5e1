/* fuzz_safetensors.c — the safetensors reader on arbitrary bytes. A file it
 * accepts must satisfy what its header promises (every span inside the data,
 * sized by its shape and dtype, names and metadata findable), and writing it
 * back with the writer and reading that must give the same tensors. */
#include "fuzz.h"
#include "safetensors.h"

static void check_accepted(const StFile *f)
{
    uint64_t covered = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const StTensor *t = &f->tensors[i];
        FUZZ_CHECK(t->begin <= t->end && t->end <= f->data_len, "tensor %d span [%llu, %llu) of %llu", i,
                   (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)f->data_len);
        FUZZ_CHECK(st_numel(t) * st_dtype_size(t->dtype) == t->end - t->begin, "tensor %d size", i);
        FUZZ_CHECK(st_find(f, t->name) == t, "tensor %d not found by name", i);
        covered += t->end - t->begin;
        /* Touch every byte: the sanitizer sees any span outside the buffer. */
        volatile uint8_t sum = 0;
        for (uint64_t b = t->begin; b < t->end; b++)
            sum ^= f->data[b];
        (void)sum;
    }
    FUZZ_CHECK(covered == f->data_len, "spans cover %llu of %llu data bytes", (unsigned long long)covered,
               (unsigned long long)f->data_len);
    for (int i = 0; i < f->n_meta; i++)
        FUZZ_CHECK(st_meta(f, f->meta[i].key) == f->meta[i].value, "metadata %d not found by key", i);
}

/* Write what was read, read it again: the same names, dtypes, shapes, bytes
 * and metadata. */
static void check_round_trip(const StFile *f)
{
    char path[128];
    snprintf(path, sizeof path, "%s/round_trip.safetensors", fuzz_temp_dir());
    StWriter w;
    st_writer_init(&w);
    D2vError err;
    for (int i = 0; i < f->n_tensors; i++) {
        const StTensor *t = &f->tensors[i];
        FUZZ_CHECK(st_writer_add(&w, t->name, t->dtype, t->ndim, t->shape, f->data + t->begin, &err) == 0,
                   "the writer refuses a tensor the reader accepted: %s", err.msg);
    }
    for (int i = 0; i < f->n_meta; i++)
        FUZZ_CHECK(st_writer_meta(&w, f->meta[i].key, f->meta[i].value, &err) == 0,
                   "the writer refuses metadata the reader accepted: %s", err.msg);
    FUZZ_CHECK(st_writer_save(&w, path, &err) == 0, "save: %s", err.msg);
    st_writer_free(&w);
    StFile g;
    FUZZ_CHECK(st_read(path, &g, &err) == 0, "the written file does not read back: %s", err.msg);
    FUZZ_CHECK(g.n_tensors == f->n_tensors && g.n_meta == f->n_meta, "counts differ after a round trip");
    for (int i = 0; i < f->n_tensors; i++) {
        const StTensor *a = &f->tensors[i], *b = st_find(&g, a->name);
        FUZZ_CHECK(b && b->dtype == a->dtype && b->ndim == a->ndim, "tensor %d changed", i);
        FUZZ_CHECK(memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof a->shape[0]) == 0, "shape %d changed", i);
        FUZZ_CHECK(memcmp(f->data + a->begin, g.data + b->begin, a->end - a->begin) == 0, "bytes of %d changed", i);
    }
    for (int i = 0; i < f->n_meta; i++) {
        const char *v = st_meta(&g, f->meta[i].key);
        FUZZ_CHECK(v && strcmp(v, f->meta[i].value) == 0, "metadata %d changed", i);
    }
    st_free(&g);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    StFile f;
    D2vError err;
    if (st_parse(data, size, "fuzz input", &f, &err) != 0) {
        FUZZ_CHECK(strlen(err.msg) > 0 && strchr(err.msg, '\n') == NULL, "an error must be one line: %s", err.msg);
        return 0;
    }
    check_accepted(&f);
    check_round_trip(&f);
    st_free(&f);
    return 0;
}
