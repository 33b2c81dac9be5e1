#include "arena.h"

#include <stdint.h>
#include <stdlib.h>

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
    /* calloc, not aligned_alloc + memset: the arena still reads as zeros,
     * but a large calloc is fresh zero pages from the kernel that become
     * resident only when written. The layout is sized for the worst case
     * (the head for every position, the longest crop); the pages a run
     * never writes - rows past the masked count, say - cost no memory
     * (issue 6: peak RSS). */
    a->block = calloc(1, (capacity ? capacity : 64) + 63);
    if (!a->block)
        return d2v_fail(err, "out of memory allocating %zu MiB of activations", capacity >> 20);
    a->base = (char *)(((uintptr_t)a->block + 63) & ~(uintptr_t)63);
    a->capacity = capacity;
    a->used = 0;
    return 0;
}

void arena_free(Arena *a)
{
    free(a->block);
    *a = (Arena){0};
}
