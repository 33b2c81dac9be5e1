#include "arena.h"

#include <stdlib.h>
#include <string.h>

void *arena_take_bytes(Arena *a, size_t bytes)
{
    size_t start = (a->used + 63) & ~(size_t)63;
    a->used = start + bytes;
    if (!a->base)
        return NULL;
    /* A layout that outgrows its measured size is a bug in the caller, not a
     * runtime condition: stop loudly rather than write past the end. */
    if (a->used > a->capacity)
        abort();
    return a->base + start;
}

real *arena_take(Arena *a, size_t n)
{
    return arena_take_bytes(a, n * sizeof(real));
}

int arena_alloc(Arena *a, size_t capacity, D2vError *err)
{
    capacity = (capacity + 63) & ~(size_t)63;
    a->base = aligned_alloc(64, capacity ? capacity : 64);
    if (!a->base)
        return d2v_fail(err, "out of memory allocating %zu MiB of activations", capacity >> 20);
    memset(a->base, 0, capacity);
    a->capacity = capacity;
    a->used = 0;
    return 0;
}

void arena_free(Arena *a)
{
    free(a->base);
    memset(a, 0, sizeof *a);
}
