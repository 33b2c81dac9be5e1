#include "rng.h"

#include <math.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Philox4x32-10 constants from Salmon et al., "Parallel random numbers: as
 * easy as 1, 2, 3" (SC'11). */
#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

void philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * c0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * c2;
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

static void philox_block(uint64_t seed, uint64_t stream, uint64_t position, uint32_t out[4])
{
    const uint32_t counter[4] = {(uint32_t)position, (uint32_t)(position >> 32),
                                 (uint32_t)stream, (uint32_t)(stream >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    philox4x32(counter, key, out);
}

void rng_init(Rng *r, uint64_t seed, uint64_t stream)
{
    r->seed = seed;
    r->stream = stream;
    r->position = 0;
    r->used = 4;
}

void rng_substream(Rng *out, const Rng *parent, uint64_t index)
{
    rng_init(out, parent->seed, parent->stream);
    out->position = index << 40;
}

uint32_t rng_u32(Rng *r)
{
    if (r->used == 4) {
        philox_block(r->seed, r->stream, r->position++, r->buffer);
        r->used = 0;
    }
    return r->buffer[r->used++];
}

uint64_t rng_u64(Rng *r)
{
    uint64_t hi = rng_u32(r);
    return (hi << 32) | rng_u32(r);
}

float rng_uniform(Rng *r)
{
    return (float)(rng_u32(r) >> 8) * (1.0f / 16777216.0f);
}

uint32_t rng_below(Rng *r, uint32_t n)
{
    if (n <= 1)
        return 0;
    /* Reject the top partial copy of [0, n) so every value is equally likely. */
    uint32_t limit = UINT32_MAX - UINT32_MAX % n;
    uint32_t x;
    do
        x = rng_u32(r);
    while (x >= limit);
    return x % n;
}

float rng_normal(Rng *r)
{
    /* Box-Muller; u1 is kept away from 0 so log() stays finite. */
    double u1 = ((double)(rng_u32(r) >> 8) + 0.5) / 16777216.0;
    double u2 = (double)(rng_u32(r) >> 8) / 16777216.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

float rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t step, uint64_t i)
{
    /* Four uniforms per block: element i uses word i%4 of block i/4. The key
     * is offset from the sequential streams' so the two never share blocks. */
    const uint64_t block = i >> 2;
    const uint32_t counter[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream, (uint32_t)step};
    const uint64_t k = seed ^ 0xD20D2017A5A5A5A5ull;
    const uint32_t key[2] = {(uint32_t)k, (uint32_t)(k >> 32)};
    uint32_t out[4];
    philox4x32(counter, key, out);
    return (float)(out[i & 3] >> 8) * (1.0f / 16777216.0f);
}

#if defined(__x86_64__) && !defined(D2V_DOUBLE)
/* (a * m) >> 32 for 16 unsigned lanes: even and odd lanes' 64-bit products. */
__attribute__((target("avx512f"))) static inline __m512i mulhi_u32(__m512i a, __m512i m)
{
    const __m512i even = _mm512_srli_epi64(_mm512_mul_epu32(a, m), 32);
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), _mm512_srli_epi64(m, 32));
    return _mm512_mask_blend_epi32(0xAAAA, even, odd);
}

/* The 64 uniforms of Philox blocks block0 .. block0+15 (four per block, in
 * order), 16 blocks at once in AVX-512 lanes: the same rounds and the same
 * bits as philox4x32 (dropout drew a tenth of a text step scalar). */
__attribute__((target("avx512f"))) static void uniforms_16_blocks(uint64_t block0, uint32_t stream, uint32_t step,
                                                                 const uint32_t key[2], float *out)
{
    const __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i base = _mm512_set1_epi32((int)(uint32_t)block0);
    __m512i c0 = _mm512_add_epi32(base, lanes);
    /* The block number's high word, plus the carry where the low one wrapped. */
    const __mmask16 wrapped = _mm512_cmplt_epu32_mask(c0, base);
    __m512i c1 = _mm512_mask_add_epi32(_mm512_set1_epi32((int)(uint32_t)(block0 >> 32)), wrapped,
                                       _mm512_set1_epi32((int)(uint32_t)(block0 >> 32)), _mm512_set1_epi32(1));
    __m512i c2 = _mm512_set1_epi32((int)stream), c3 = _mm512_set1_epi32((int)step);
    __m512i k0 = _mm512_set1_epi32((int)key[0]), k1 = _mm512_set1_epi32((int)key[1]);
    const __m512i m0 = _mm512_set1_epi32((int)PHILOX_M0), m1 = _mm512_set1_epi32((int)PHILOX_M1);
    const __m512i w0 = _mm512_set1_epi32((int)PHILOX_W0), w1 = _mm512_set1_epi32((int)PHILOX_W1);
    for (int round = 0; round < 10; round++) {
        const __m512i hi0 = mulhi_u32(c0, m0), lo0 = _mm512_mullo_epi32(c0, m0);
        const __m512i hi1 = mulhi_u32(c2, m1), lo1 = _mm512_mullo_epi32(c2, m1);
        c0 = _mm512_xor_si512(_mm512_xor_si512(hi1, c1), k0);
        c1 = lo1;
        c2 = _mm512_xor_si512(_mm512_xor_si512(hi0, c3), k1);
        c3 = lo0;
        k0 = _mm512_add_epi32(k0, w0);
        k1 = _mm512_add_epi32(k1, w1);
    }
    /* (float)(word >> 8) * 2^-24, exact as in the scalar code. */
    const __m512 scale = _mm512_set1_ps(1.0f / 16777216.0f);
    const __m512 u0 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c0, 8)), scale);
    const __m512 u1 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c1, 8)), scale);
    const __m512 u2 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c2, 8)), scale);
    const __m512 u3 = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(c3, 8)), scale);
    /* Lane j of u_w is uniform 4j + w: interleaved in registers (a
     * scalar copy of the 64 was a third of this function, perf). First each
     * 128-bit lane L gets blocks 4L .. 4L+3 whole, one per vector ... */
    const __m512 lo01 = _mm512_unpacklo_ps(u0, u1), hi01 = _mm512_unpackhi_ps(u0, u1);
    const __m512 lo23 = _mm512_unpacklo_ps(u2, u3), hi23 = _mm512_unpackhi_ps(u2, u3);
    const __m512 b0 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(lo01), _mm512_castps_pd(lo23)));
    const __m512 b1 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(lo01), _mm512_castps_pd(lo23)));
    const __m512 b2 = _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(hi01), _mm512_castps_pd(hi23)));
    const __m512 b3 = _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(hi01), _mm512_castps_pd(hi23)));
    /* ... then the 4 x 4 lanes transposed, so output vector L holds blocks
     * 4L .. 4L+3 in order. */
    const __m512 x0 = _mm512_shuffle_f32x4(b0, b1, 0x44), x1 = _mm512_shuffle_f32x4(b0, b1, 0xEE);
    const __m512 x2 = _mm512_shuffle_f32x4(b2, b3, 0x44), x3 = _mm512_shuffle_f32x4(b2, b3, 0xEE);
    _mm512_storeu_ps(out, _mm512_shuffle_f32x4(x0, x2, 0x88));
    _mm512_storeu_ps(out + 16, _mm512_shuffle_f32x4(x0, x2, 0xDD));
    _mm512_storeu_ps(out + 32, _mm512_shuffle_f32x4(x1, x3, 0x88));
    _mm512_storeu_ps(out + 48, _mm512_shuffle_f32x4(x1, x3, 0xDD));
}
#endif

void rng_uniforms_at(uint64_t seed, uint64_t stream, uint64_t step, uint64_t first, size_t n, float *out)
{
    const uint64_t k = seed ^ 0xD20D2017A5A5A5A5ull;
    const uint32_t key[2] = {(uint32_t)k, (uint32_t)(k >> 32)};
    uint64_t i = first;
#if defined(__x86_64__) && !defined(D2V_DOUBLE)
    if (__builtin_cpu_supports("avx512f")) {
        size_t done = 0;
        /* Up to a block boundary one by one, then 16 blocks at a time. */
        for (; done < n && (i & 3); done++, i++)
            out[done] = rng_uniform_at(seed, stream, step, i);
        for (; n - done >= 64; done += 64, i += 64)
            uniforms_16_blocks(i >> 2, (uint32_t)stream, (uint32_t)step, key, out + done);
        out += done;
        n -= done;
    }
#endif
    for (size_t done = 0; done < n;) {
        const uint64_t block = i >> 2;
        const uint32_t counter[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream, (uint32_t)step};
        uint32_t words[4];
        philox4x32(counter, key, words);
        /* Every word of the block is used: one Philox call per four values. */
        for (unsigned w = (unsigned)(i & 3); w < 4 && done < n; w++, i++, done++)
            out[done] = (float)(words[w] >> 8) * (1.0f / 16777216.0f);
    }
}
