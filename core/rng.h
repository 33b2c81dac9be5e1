/* rng.h — counter-based random numbers (Philox4x32-10, Salmon et al. 2011).
 *
 * A counter-based generator maps (key, counter) to random bits with no hidden
 * sequence state, so a number never depends on which thread asked first:
 * dropout bit i of a tensor is philox(key, {i, site, step}) whatever the
 * OpenMP schedule. The stream struct below is the sequential convenience on
 * top of it (maskers, initialisation), and its whole state is four integers,
 * which checkpoints store. */
#ifndef D2V_RNG_H
#define D2V_RNG_H

#include <stddef.h>
#include <stdint.h>

/* One Philox4x32-10 block: 128 random bits from a 128-bit counter and a
 * 64-bit key. */
void philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

typedef struct Rng {
    uint64_t seed;     /* key */
    uint64_t stream;   /* counter words 2..3: separates independent uses */
    uint64_t position; /* counter words 0..1: blocks consumed so far */
    uint32_t buffer[4];
    int used;          /* words of buffer already handed out (4 = empty) */
} Rng;

/* A generator for (seed, stream), at position 0. */
void rng_init(Rng *r, uint64_t seed, uint64_t stream);
/* The next 32 random bits. */
uint32_t rng_u32(Rng *r);
/* The next 64 random bits. */
uint64_t rng_u64(Rng *r);
/* Uniform in [0, 1) with 24 random bits (exactly representable as float). */
float rng_uniform(Rng *r);
/* Uniform integer in [0, n), unbiased (rejection sampling). */
uint32_t rng_below(Rng *r, uint32_t n);
/* Standard normal (Box-Muller). */
float rng_normal(Rng *r);

/* Sub-stream `index` (< 2^24) of a freshly initialised generator: the same
 * key and stream, counter positions from index << 40. One step's per-row
 * draws (augmentation, masks) come from the sub-stream of the row's index in
 * the step's global batch, so a row gets the same random numbers whichever
 * rank or micro-batch draws it (data parallel training, accumulation). */
void rng_substream(Rng *out, const Rng *parent, uint64_t index);

/* Stateless: the uniform in [0,1) at element index i of (seed, stream, step),
 * stream and step below 2^32. Used for dropout masks so they can be
 * regenerated in any order. */
float rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t step, uint64_t i);

/* out[k] = rng_uniform_at(seed, stream, step, first + k) for k < n, at a
 * quarter of the cost (each Philox block's four words are all used). */
void rng_uniforms_at(uint64_t seed, uint64_t stream, uint64_t step, uint64_t first, size_t n, float *out);

#endif
