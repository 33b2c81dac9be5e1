/* arena.h — one allocation for all activations of a run (DESIGN §7).
 *
 * Layers lay out their buffers by calling arena_take() in a fixed order.
 * The same layout code runs twice: once on a measuring arena (base == NULL,
 * it only adds up sizes) and once on the real one, so the size can never
 * disagree with the layout and no step ever calls malloc. */
#ifndef D2V_ARENA_H
#define D2V_ARENA_H

#include "common.h"
#include "real.h"

typedef struct {
    char *base;     /* NULL while measuring; 64-byte aligned */
    size_t used, capacity;
    void *block;    /* what arena_alloc allocated (base is inside it) */
} Arena;

/* n reals, 64-byte aligned; NULL while measuring. */
real *arena_take(Arena *a, size_t n);
/* Same for bytes (masks, indices). */
void *arena_take_bytes(Arena *a, size_t bytes);
/* Allocates capacity bytes (the size a measuring pass reported). */
int arena_alloc(Arena *a, size_t capacity, D2vError *err);
/* Releases the arena's one allocation. */
void arena_free(Arena *a);

#endif
