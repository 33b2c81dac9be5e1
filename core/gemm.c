/* gemm.c — C = alpha op(A) op(B) + beta C, row-major, with AVX-512.
 *
 * Why d2v has its own: on this machine OpenBLAS is pinned to its AVX2
 * (Haswell) kernels, so every matmul of the step ran on 8-float vectors on
 * a CPU with 16-float ones. Measured on the image_tiny shapes with 2 threads
 * (issue 6): OpenBLAS 84-162 GFLOP/s, this kernel 160-300.
 *
 * The layout is the classic one of BLIS and OpenBLAS (Goto's algorithm):
 *   - B is copied, KC rows by NC columns at a time, into panels of NR = 32
 *     columns stored k-major ("packing"), so the kernel reads it with unit
 *     stride whatever op(B) was;
 *   - A is copied, MC rows at a time per thread, into panels of MR = 12 rows
 *     (rows kept as rows, or a transposed A's columns k-major: both are
 *     copies of contiguous floats), except that an A not transposed is read
 *     in place where its rows do not crowd into a few L1 sets (only a last
 *     panel short of 12 rows is copied, padded);
 *   - the microkernel keeps a 12 x 32 block of C in 24 vector registers
 *     and, per k, does 24 fused multiply-adds from two loads of B and twelve
 *     broadcasts of A, then writes the block to C once.
 * Packing pads panels with zeros, so the kernel has no edge cases; only the
 * final store is masked to the rows and columns that exist.
 *
 * Each thread owns a contiguous range of C's row panels, the same in every
 * pass over k, and takes it a chunk at a time; a thread that runs out
 * takes chunks from the far end of another's range. A C element is always
 * summed by one thread, k in increasing order, KC at a time, so results
 * are the same for any thread count. */
#include "gemm.h"

#include <immintrin.h>
#include <omp.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MR 12   /* rows of the register block: 2 x 12 accumulators + 2 of B fit 32 zmm */
#define NR 32   /* columns: two 16-float vectors */
/* Depth per pass. 256 would keep a 12-row A panel and a 32-column B panel
 * together in L1 (48 KB); 1024 leaves the kernel reading both from L2,
 * which keeps up, and makes a deep product 4x fewer passes (C read and
 * written again, B packed, a barrier, per pass). Measured on this Zen 5
 * machine (1 MB L2 per core), 2 threads, the operands cold: the step's
 * K = 768/1024 products 426 -> 469 GFLOP/s, the weight gradients (K = 2048)
 * 1-5% faster, 2048^3 408 -> 473; whole steps 1-4% faster. */
#define KC 1024
#define MC 120  /* rows packed per thread at a time: their 500 KB of A stay in L2 */
#define NC 1536 /* columns of B packed at a time: 1.5 MB shared by the threads */

/* Below this many multiply-adds a parallel region costs more than it saves. */
#define GEMM_PARALLEL_MIN 1000000.0

typedef struct {
    const float *data;
    int ld;
    int transposed;
    int in_place; /* A only: the microkernel reads its whole panels where they are */
    int depth;    /* K: where packing a transposed A or a B stops prefetching rows ahead */
} Operand;

/* op(A)[m0 .. m0+rows) x [k0 .. k0+kc) into one MR-row panel. Rows of A
 * stay rows (panel[i * A_STRIDE + k]: one copy each); columns of a
 * transposed A become k-major (panel[k * MR + i]): either way every copy
 * is of contiguous floats, and the microkernel reads both layouts. Padded
 * rows are zero. */
#define A_STRIDE (KC + 16) /* a row's stride in the panel: not a multiple of 4 KB, so rows do not alias in L1 */
#define A_PANEL (MR * A_STRIDE)

/* dst[0 .. n) = src[0 .. n), or zeros where src is NULL, in 16-float
 * vectors (gcc turns a memcpy of this size into a slow `rep movsq`). */
__attribute__((target("avx512f"))) static void copy_floats(float *dst, const float *src, int n)
{
    int k = 0;
    for (; k + 16 <= n; k += 16)
        _mm512_storeu_ps(dst + k, src ? _mm512_loadu_ps(src + k) : _mm512_setzero_ps());
    if (k < n) {
        const __mmask16 tail = (__mmask16)((1u << (n - k)) - 1);
        _mm512_mask_storeu_ps(dst + k, tail, src ? _mm512_maskz_loadu_ps(tail, src + k) : _mm512_setzero_ps());
    }
}

/* Panels q0 .. q1 of op(A) (rows q*MR .. q*MR+MR, fewer in the last),
 * depth k0 .. k0+kc, into dst, one A_PANEL apart. A transposed A is read
 * 16 whole rows (all the panels' columns) at a time, so memory is read in
 * order rather than 12 floats per row down a column. */
__attribute__((target("avx512f"))) static void pack_a_block(float *dst, Operand a, int q0, int q1, int M, int k0,
                                                           int kc)
{
    if (!a.transposed) {
        for (int q = q0; q < q1; q++)
            for (int i = 0; i < MR; i++) {
                const int m = q * MR + i;
                copy_floats(dst + (size_t)(q - q0) * A_PANEL + i * A_STRIDE,
                            m < M ? a.data + (size_t)m * a.ld + k0 : NULL, kc);
            }
        return;
    }
    /* 16 rows of A at a time (the panels' 16 k): each panel then gets 768
     * contiguous bytes, whole cache lines, rather than 48 bytes in each of
     * MC/MR panels per row (measured: 0.82-0.89 -> 0.54-0.55 ms to pack a
     * 3152 x 768 A, one thread).
     * A transposed A is a weight gradient's d_out, read once and usually
     * from memory, a block's 960 bytes per row: too short a run for the
     * hardware to prefetch. So each copy asks for the same columns 16 rows
     * on, which the next kb (or the next pass) copies. Measured on the
     * step's weight-gradient shapes with cold operands, 2 threads: 256 x 256
     * x 2048 from 312-331 to 394-400 GFLOP/s, 768 x 256 x 2048 from 378-382
     * to 440-445, the others 5-7% faster. */
    for (int kb = 0; kb < kc; kb += 16) {
        const int k_end = kb + 16 < kc ? kb + 16 : kc;
        for (int q = q0; q < q1; q++) {
            const int rows = M - q * MR < MR ? M - q * MR : MR;
            for (int k = kb; k < k_end; k++) {
                if (k0 + k + 16 < a.depth)
                    _mm_prefetch((const char *)(a.data + (size_t)(k0 + k + 16) * a.ld + q * MR), _MM_HINT_T0);
                /* A whole vector stored, not 12 floats through a mask
                 * (masked stores are slow on these cores): its last 4 are
                 * the next k's, stored after this, or, past the panel's
                 * last k, spare room in A_PANEL. Lanes from `rows` on are
                 * the padding's zeros. Attention's dV = P^T dO, 197 x 64 x
                 * 197 on one core: 24.3-25.0 -> 23.2-23.6 us. */
                float *panel_row = dst + (size_t)(q - q0) * A_PANEL + k * MR;
                const __mmask16 in_a = (__mmask16)((1u << rows) - 1);
                _mm512_storeu_ps(panel_row, _mm512_maskz_loadu_ps(in_a, a.data + (size_t)(k0 + k) * a.ld + q * MR));
            }
        }
    }
}

/* r[0 .. 16) as a 16 x 16 matrix, transposed in registers: 4 x 4 blocks
 * inside each 128-bit lane (unpack, shuffle), then the lanes across
 * registers (two rounds of shuffle_f32x4). */
__attribute__((target("avx512f"), always_inline)) static inline void transpose_16x16(__m512 r[16])
{
    __m512 t[16], u[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* u[4i + c]: in lane L, column 4L + c of rows 4i .. 4i+3 */
    for (int i = 0; i < 4; i++) {
        u[4 * i + 0] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
        u[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
        u[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
        u[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {
        const __m512 even_lo = _mm512_shuffle_f32x4(u[c], u[4 + c], 0x88);
        const __m512 odd_lo = _mm512_shuffle_f32x4(u[c], u[4 + c], 0xDD);
        const __m512 even_hi = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0x88);
        const __m512 odd_hi = _mm512_shuffle_f32x4(u[8 + c], u[12 + c], 0xDD);
        r[c] = _mm512_shuffle_f32x4(even_lo, even_hi, 0x88);
        r[c + 8] = _mm512_shuffle_f32x4(even_lo, even_hi, 0xDD);
        r[c + 4] = _mm512_shuffle_f32x4(odd_lo, odd_hi, 0x88);
        r[c + 12] = _mm512_shuffle_f32x4(odd_lo, odd_hi, 0xDD);
    }
}

/* Half a panel of a transposed B: dst[k * NR + j] = src[j * ld + k] for
 * j < 16, k < kc, with zeros for j >= rows (rows may be <= 0: all zero).
 * 16 x 16 blocks transposed in registers; a scalar gather down 16 rows
 * was a tenth of the packing time of a text step (perf). */
__attribute__((target("avx512f"))) static void pack_b_transposed_half(float *dst, const float *src, int ld,
                                                                     int rows, int kc)
{
    for (int k = 0; k < kc; k += 16) {
        const int width = kc - k < 16 ? kc - k : 16;
        const __mmask16 in_k = (__mmask16)(width == 16 ? 0xffff : (1u << width) - 1);
        __m512 r[16];
        for (int j = 0; j < 16; j++)
            r[j] = j < rows ? _mm512_maskz_loadu_ps(in_k, src + (size_t)j * ld + k) : _mm512_setzero_ps();
        transpose_16x16(r);
        for (int kk = 0; kk < width; kk++)
            _mm512_store_ps(dst + (size_t)(k + kk) * NR, r[kk]);
    }
}

/* op(B) depth k0 .. k0+kc, columns n0 .. n0+nc, into panels of NR columns
 * (panel[k * NR + j], zero past nc), kc * NR floats apart: thread t of
 * `threads` packs its equal part (the caller waits for all of them). A B
 * that is not transposed is read row by row across all panels. */
static void pack_b_block(float *b_pack, Operand b, int n0, int nc, int k0, int kc, int t, int threads)
{
    const int panels = (nc + NR - 1) / NR;
    if (!b.transposed) {
        for (int k = kc * t / threads; k < kc * (t + 1) / threads; k++) {
            const float *src = b.data + (size_t)(k0 + k) * b.ld + n0;
            /* The row 8 on, as for a transposed A (pack_a_block): a weight
             * gradient's B is an activation read once, from memory. Cold
             * operands, 2 threads: 192 x 192 x 3152 375 -> 401 GFLOP/s,
             * 576 x 192 x 3152 402 -> 422, 256 x 256 x 2048 388 -> 400;
             * rows of 768 and more columns, which the hardware already
             * prefetches, unchanged. */
            if (k0 + k + 8 < b.depth)
                for (int c = 0; c < nc; c += 16)
                    _mm_prefetch((const char *)(src + (size_t)8 * b.ld + c), _MM_HINT_T0);
            for (int jp = 0; jp < panels; jp++) {
                const int cols = nc - jp * NR < NR ? nc - jp * NR : NR;
                float *panel_row = b_pack + (size_t)jp * NR * kc + (size_t)k * NR;
                copy_floats(panel_row, src + jp * NR, cols);
                for (int j = cols; j < NR; j++)
                    panel_row[j] = 0;
            }
        }
        return;
    }
    for (int jp = panels * t / threads; jp < panels * (t + 1) / threads; jp++) {
        const int cols = nc - jp * NR < NR ? nc - jp * NR : NR;
        float *panel = b_pack + (size_t)jp * NR * kc;
        for (int j0 = 0; j0 < NR; j0 += 16) {
            /* op(B)'s columns are B's rows: 16 at a time, fewer (zeros) past nc */
            const float *rows = j0 < cols ? b.data + (size_t)(n0 + jp * NR + j0) * b.ld + k0 : b.data;
            pack_b_transposed_half(panel + j0, rows, b.ld, cols - j0, kc);
        }
    }
}

/* The 12 x 32 block of A panel . B panel in 24 registers; A's element
 * (i, k) is at a[i * row_stride + k * k_stride] (one of the two layouts). */
/* The microkernel is left out of the sanitizers' instrumentation: it reads
 * the packed panels, whose bounds are set by the packing, and whole
 * 12-row panels of an A read in place, whose bounds multiply_panels sets
 * (both checked by tests/test_gemm.c); a shadow check on every load of its
 * inner loop kept the accumulators out of registers, making sanitizer
 * builds five times slower than with OpenBLAS (uninstrumented). The
 * packing, which reads the caller's matrices, stays instrumented. */
#if defined(__has_attribute)
#if __has_attribute(no_sanitize)
#define KERNEL_NOT_SANITIZED __attribute__((no_sanitize("address", "undefined")))
#endif
#endif
#ifndef KERNEL_NOT_SANITIZED
#define KERNEL_NOT_SANITIZED
#endif

/* halves: 2, or 1 where the panel has at most 16 columns and its second
 * vector would be all padding: attention's 197 keys end in a panel of 5
 * (QK^T and dP, 197 x 197 x 64 on one thread: 24.4 -> 23.4 us). */
__attribute__((target("avx512f"), always_inline)) KERNEL_NOT_SANITIZED static inline void
block_product(__m512 acc[MR][2], int kc, const float *restrict a, int row_stride, int k_stride,
              const float *restrict b_panel, int halves)
{
    for (int i = 0; i < MR; i++)
        acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        const __m512 b0 = _mm512_load_ps(b_panel + k * NR);
        const __m512 b1 = halves == 2 ? _mm512_load_ps(b_panel + k * NR + 16) : _mm512_setzero_ps();
#pragma GCC unroll 12
        for (int i = 0; i < MR; i++) {
            const __m512 x = _mm512_set1_ps(a[i * row_stride + k * k_stride]);
            acc[i][0] = _mm512_fmadd_ps(x, b0, acc[i][0]);
            if (halves == 2)
                acc[i][1] = _mm512_fmadd_ps(x, b1, acc[i][1]);
        }
    }
}

/* block_product for the A panel's layout (microkernel's a_row_stride), the
 * strides constant where they are known, so those loops have fixed offsets. */
__attribute__((target("avx512f"), always_inline)) KERNEL_NOT_SANITIZED static inline void
block_product_of_panel(__m512 acc[MR][2], int kc, const float *restrict a_panel, int a_row_stride,
                       const float *restrict b_panel, int halves)
{
    if (a_row_stride == A_STRIDE)
        block_product(acc, kc, a_panel, A_STRIDE, 1, b_panel, halves);
    else if (a_row_stride == 0)
        block_product(acc, kc, a_panel, 1, MR, b_panel, halves);
    else
        block_product(acc, kc, a_panel, a_row_stride, 1, b_panel, halves);
}

/* C[rows x cols] = alpha * (A panel . B panel) + beta * C, rows <= MR, cols <= NR,
 * or, where bias is given, + bias (one value per column) instead of beta C.
 * beta == 0 never reads C (BLAS semantics: C may hold anything, NaN included).
 * a_row_stride: A_STRIDE for a packed panel of rows, 0 for a packed panel
 * of a transposed A's columns (k-major), anything else for 12 whole rows
 * read in place. */
__attribute__((target("avx512f"))) KERNEL_NOT_SANITIZED static void microkernel(int kc, const float *restrict a_panel, int a_row_stride,
                                                            const float *restrict b_panel, float *c, int ldc,
                                                            int rows, int cols, float alpha, float beta,
                                                            const float *bias)
{
    __m512 acc[MR][2];
    /* C's block is asked for (for writing) now and stored after the kc
     * steps below, by when it has arrived. Otherwise the stores wait on
     * its misses: an activation the step last touched long ago comes from
     * memory, and rows 4 KB apart (1024 floats: text_tiny's FFN) all miss
     * at once. Measured on the step's shapes with cold operands, 2 threads:
     * 2048 x 1024 x 256 from 378 to 478 GFLOP/s, the others 0-5% faster. */
    for (int i = 0; i < rows; i++) {
        _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_ET0);
        _mm_prefetch((const char *)(c + (size_t)i * ldc + cols - 1), _MM_HINT_ET0);
    }
    if (cols > 16)
        block_product_of_panel(acc, kc, a_panel, a_row_stride, b_panel, 2);
    else
        block_product_of_panel(acc, kc, a_panel, a_row_stride, b_panel, 1);
    const __mmask16 lo = cols >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << cols) - 1);
    const __mmask16 hi = cols >= NR ? (__mmask16)0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __m512 bias0 = bias ? _mm512_maskz_loadu_ps(lo, bias) : _mm512_setzero_ps();
    const __m512 bias1 = bias ? _mm512_maskz_loadu_ps(hi, bias + 16) : _mm512_setzero_ps();
    for (int i = 0; i < rows; i++) {
        float *row = c + (size_t)i * ldc;
        __m512 r0 = _mm512_mul_ps(va, acc[i][0]), r1 = _mm512_mul_ps(va, acc[i][1]);
        if (bias) {
            r0 = _mm512_add_ps(r0, bias0);
            r1 = _mm512_add_ps(r1, bias1);
        } else if (beta != 0) {
            r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(lo, row), r0);
            r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(hi, row + 16), r1);
        }
        _mm512_mask_storeu_ps(row, lo, r0);
        _mm512_mask_storeu_ps(row + 16, hi, r1);
    }
}

/* C = beta C: what a product with K == 0 or alpha == 0 leaves. */
static void scale_c(float *C, int ldc, int M, int N, float beta)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++)
            C[(size_t)m * ldc + n] = beta == 0 ? 0 : beta * C[(size_t)m * ldc + n];
}

static int use_avx512(void)
{
    const char *choice = getenv("D2V_GEMM");
    if (choice && strcmp(choice, "openblas") == 0)
        return 0;
    /* valgrind's emulated CPU reports no AVX-512, so memcheck runs take the
     * OpenBLAS path rather than meeting instructions it cannot decode. */
    return __builtin_cpu_supports("avx512f");
}

const char *d2v_sgemm_name(void)
{
    return use_avx512() ? "d2v avx512" : "openblas";
}

/* One KC x NC pass of the product: depth pc .. pc+kc, columns jc .. jc+nc. */
typedef struct {
    int pc, kc, jc, nc;
    float pass_beta;
    const float *pass_bias;
} Pass;

/* C's rows of A's panels first .. last in pass p: alpha op(A) op(B) +
 * pass_beta C (or + pass_bias), A packed MC rows at a time into my_a or
 * read in place. */
static void multiply_panels(Operand a, int first, int last, int M, Pass p, const float *b_pack, float *my_a,
                            float *C, int ldc, float alpha)
{
    const int b_panels = (p.nc + NR - 1) / NR;
    for (int ip = first; ip < last; ip += MC / MR) {
        const int ip_end = ip + MC / MR < last ? ip + MC / MR : last;
        if (!a.in_place)
            pack_a_block(my_a, a, ip, ip_end, M, p.pc, p.kc);
        else if (ip_end * MR > M) /* the last panel, short of rows: padded with zeros */
            pack_a_block(my_a + (size_t)(ip_end - 1 - ip) * A_PANEL, a, ip_end - 1, ip_end, M, p.pc, p.kc);
        for (int jp = 0; jp < b_panels; jp++) {
            const int cols = p.nc - jp * NR < NR ? p.nc - jp * NR : NR;
            for (int q = ip; q < ip_end; q++) {
                const int rows = M - q * MR < MR ? M - q * MR : MR;
                const int whole_in_place = a.in_place && rows == MR;
                const float *a_panel = whole_in_place ? a.data + (size_t)q * MR * a.ld + p.pc
                                                      : my_a + (size_t)(q - ip) * A_PANEL;
                microkernel(p.kc, a_panel, whole_in_place ? a.ld : a.transposed ? 0 : A_STRIDE, b_pack + (size_t)jp * NR * p.kc,
                            C + (size_t)q * MR * ldc + p.jc + jp * NR, ldc, rows, cols, alpha, p.pass_beta,
                            p.pass_bias ? p.pass_bias + p.jc + jp * NR : NULL);
            }
        }
    }
}

/* Whether 12 rows lda floats apart can be read in place rather than
 * packed: not when they fall into 1 or 2 of L1's 64 sets (an lda that is a
 * multiple of 512 floats, 2 KB), where with the B panel's 8 lines a set
 * they would overflow its 12 ways. In place, a Linear layer's input is
 * not copied before its product: the image_tiny shapes with 192 columns of
 * C ran 4-10% faster (one thread, alternating), and packing fell from 9.7%
 * to 6.5% of an image_tiny profile. */
static int rows_spread_over_l1(int lda)
{
    if (lda % 16 != 0)
        return 1; /* rows start at different offsets within their lines */
    const int set_step = (lda / 16) % 64;
    int g = 64, x = set_step; /* gcd(64, set_step): the sets the rows cycle through are 64 / g */
    while (x != 0) {
        const int r = g % x;
        g = x;
        x = r;
    }
    return 64 / g >= 4;
}

/* Panels of C's rows taken at a time: 48 rows, or more where a pass is
 * shallow or narrow, so a chunk is at least ~2M multiply-adds and taking
 * one (an atomic on a line another core may write) stays a small part of
 * it (the speech CNN's first layer has 10 of depth). */
static int row_chunk(int nc, int kc)
{
    const double work = (double)MR * nc * kc;
    int chunk = 4;
    while (chunk * work < 2e6 && chunk < 256)
        chunk *= 2;
    return chunk;
}

/* A thread's share of C's row panels in one pass, [head, tail) packed in
 * one word: its owner takes chunks from the head, a thread that has run
 * out of its own takes them from the tail. On one line of its own, so
 * owners do not fight over a cache line. */
typedef struct {
    _Alignas(64) uint64_t range;
} Share;

static uint64_t share_range(uint32_t head, uint32_t tail)
{
    return (uint64_t)tail << 32 | head;
}

/* Takes up to `chunk` panels from the head (own) or the tail (stealing)
 * into [*lo, *hi); 0 when the share is empty. */
static int share_take(Share *share, int chunk, int from_tail, int *lo, int *hi)
{
    uint64_t now = __atomic_load_n(&share->range, __ATOMIC_ACQUIRE);
    for (;;) {
        const uint32_t head = (uint32_t)now, tail = (uint32_t)(now >> 32);
        if (head >= tail)
            return 0;
        const uint32_t size = tail - head < (uint32_t)chunk ? tail - head : (uint32_t)chunk;
        const uint64_t next = from_tail ? share_range(head, tail - size) : share_range(head + size, tail);
        if (__atomic_compare_exchange_n(&share->range, &now, next, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
            *lo = (int)(from_tail ? tail - size : head);
            *hi = *lo + (int)size;
            return 1;
        }
    }
}

/* Thread t's part of the product, called by each of `threads` threads of
 * one parallel region, or on its own (threads = 1) with no region at all. */
static void blocked_sgemm_thread(int t, int threads, Operand a, Operand b, int M, int N, int K, float alpha,
                                 float beta, const float *bias, float *C, int ldc, float *b_pack, float *a_pack,
                                 Share *shares)
{
    const int panels = (M + MR - 1) / MR;
    float *my_a = a_pack + (size_t)t * (MC / MR) * A_PANEL;
    const int first = (int)((long long)panels * t / threads), last = (int)((long long)panels * (t + 1) / threads);
    for (int jc = 0; jc < N; jc += NC) {
        const int nc = N - jc < NC ? N - jc : NC;
        for (int pc = 0; pc < K; pc += KC) {
            const int kc = K - pc < KC ? K - pc : KC;
            /* The first pass over k applies beta (or the bias); later
             * ones add to it. */
            const float pass_beta = pc == 0 ? beta : 1.0f;
            const float *pass_bias = pc == 0 ? bias : NULL;
            /* Each thread owns the same rows in every pass, so its
             * rows of C stay in its own L2 from pass to pass; set
             * before the packing's barrier, so no thread takes from
             * a share left over from the last pass. */
            __atomic_store_n(&shares[t].range, share_range((uint32_t)first, (uint32_t)last), __ATOMIC_RELEASE);
            /* Every thread's microkernels read all of B: packed by
             * all, and all of it before anyone reads it. */
            pack_b_block(b_pack, b, jc, nc, pc, kc, t, threads);
            if (threads > 1) {
#pragma omp barrier
            }
            const Pass pass = {pc, kc, jc, nc, pass_beta, pass_bias};
            /* A transposed A is packed 16 of its rows at a time across
             * all the block's panels: its owner takes whole blocks
             * (MC rows), so those copies stay long. */
            const int chunk = row_chunk(nc, kc), own_chunk = a.transposed ? MC / MR : chunk;
            int lo, hi;
            while (share_take(&shares[t], own_chunk, 0, &lo, &hi))
                multiply_panels(a, lo, hi, M, pass, b_pack, my_a, C, ldc, alpha);
            /* Then the others' rows, from the far end: on this shared
             * machine one core often runs slower for a while, and with
             * fixed halves the other waited at the barrier (issue 6:
             * 2 threads, forward and input-gradient shapes, 195-215 ->
             * 230-255 GFLOP/s in slow spells, equal in quiet ones).
             * Which thread computes a block does not change its bits. */
            for (int v = 1; v < threads; v++)
                while (share_take(&shares[(t + v) % threads], chunk, 1, &lo, &hi))
                    multiply_panels(a, lo, hi, M, pass, b_pack, my_a, C, ldc, alpha);
            /* Nobody repacks B while another thread still reads it. After
             * the last pass the parallel region's own end waits for all. */
            if (threads > 1 && !(jc + NC >= N && pc + KC >= K)) {
#pragma omp barrier
            }
        }
    }
}

static void blocked_sgemm(Operand a, Operand b, int M, int N, int K, float alpha, float beta, const float *bias,
                          float *C, int ldc, float *b_pack, float *a_pack, Share *shares, int threads)
{
    /* One thread (attention's per-(batch, head) products, each inside the
     * caller's parallel loop) opens no region: a nested region of one
     * thread cost 0.7 us to open and close, and a step makes thousands
     * (image_tiny: 48 (b,h) x ~9 products x 12 blocks). */
    if (threads == 1) {
        blocked_sgemm_thread(0, 1, a, b, M, N, K, alpha, beta, bias, C, ldc, b_pack, a_pack, shares);
        return;
    }
    /* The team's own size: a region may get fewer threads than asked. */
#pragma omp parallel num_threads(threads)
    blocked_sgemm_thread(omp_get_thread_num(), omp_get_num_threads(), a, b, M, N, K, alpha, beta, bias, C, ldc,
                         b_pack, a_pack, shares);
}

/* The AVX-512 path of d2v_sgemm and d2v_sgemm_bias; 0 when it cannot run
 * (no memory for the packed copies: the caller falls back on OpenBLAS). */
/* Packing space, kept per calling thread between calls. Allocating it per
 * call cost nothing with glibc, which reuses the freed block, but under
 * AddressSanitizer every call mapped and unmapped megabytes (page faults and
 * TLB shootdowns: sanitizer builds ran three times slower than with
 * OpenBLAS). A thread-specific key rather than a global: attention calls
 * the matmul from several threads at once, and the key's destructor frees
 * a thread's space when the thread ends. */
typedef struct {
    float *data;
    size_t floats;
} PackSpace;

static pthread_key_t pack_key;
static pthread_once_t pack_key_once = PTHREAD_ONCE_INIT;
static int pack_key_ok;

static void pack_space_free(void *space)
{
    free(((PackSpace *)space)->data);
    free(space);
}

static void pack_key_create(void)
{
    pack_key_ok = pthread_key_create(&pack_key, pack_space_free) == 0;
}

/* At least `floats` floats, 64-byte aligned, for this thread; NULL if out of memory. */
static float *pack_space(size_t floats)
{
    pthread_once(&pack_key_once, pack_key_create);
    if (!pack_key_ok)
        return NULL;
    PackSpace *space = pthread_getspecific(pack_key);
    if (!space) {
        space = calloc(1, sizeof *space);
        if (!space)
            return NULL;
        if (pthread_setspecific(pack_key, space) != 0) {
            free(space);
            return NULL;
        }
    }
    if (space->floats < floats) {
        free(space->data);
        /* aligned_alloc wants a size that is a multiple of the alignment. */
        const size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
        space->data = aligned_alloc(64, bytes);
        space->floats = space->data ? floats : 0;
    }
    return space->data;
}

/* dst (cols x rows) = src (rows x cols)^T, 16 x 16 tiles transposed in
 * registers (masked at the edges). */
__attribute__((target("avx512f"))) static void transpose_matrix(float *dst, int ld_dst, const float *src, int ld_src,
                                                               int rows, int cols, int threads)
{
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int i0 = 0; i0 < rows; i0 += 16) {
        const int height = rows - i0 < 16 ? rows - i0 : 16;
        const __mmask16 down = (__mmask16)((1u << height) - 1);
        for (int j0 = 0; j0 < cols; j0 += 16) {
            const int width = cols - j0 < 16 ? cols - j0 : 16;
            const __mmask16 across = (__mmask16)((1u << width) - 1);
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = i < height ? _mm512_maskz_loadu_ps(across, src + (size_t)(i0 + i) * ld_src + j0)
                                  : _mm512_setzero_ps();
            transpose_16x16(r);
            for (int j = 0; j < width; j++)
                _mm512_mask_storeu_ps(dst + (size_t)(j0 + j) * ld_dst + i0, down, r[j]);
        }
    }
}

/* Whether C = alpha A^T B + beta C runs as its transpose, C^T = alpha B^T A
 * + beta C^T, in scratch. This is a weight gradient's shape (K the batch's
 * positions, long), and B is the operand every thread reads, packed KC rows
 * by up to NC columns at a time into memory they share, while each thread
 * packs its own rows of A into its L2. Where C has fewer rows than columns
 * (fc2's gradient, d_out^T GELU(fc1), the speech CNN's d_conv^T windows)
 * the swap makes the wide operand A. Measured on those shapes, 2 threads,
 * operands cold, C's transposes included (two where beta is not 0):
 * 256 x 1024 x 2048 341 -> 406 GFLOP/s, 192 x 768 x 3152 324-328 -> 406,
 * 256 x 768 x 3199 346-348 -> 411, 256 x 1024 x 792 336-340 -> 373. In the
 * step their operands are often still in cache and the gain is smaller
 * (text_tiny's 256 x 1024 x 2048 from 0.90 to 0.95 of the rate of its
 * 1024 x 256 x 2048 in the same run). Every element is the same
 * multiply-adds in the same order (a b = b a), so the swap gives the
 * unswapped product's bits (test_gemm checks). */
static int runs_transposed(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K, const float *bias)
{
    return trans_a != CblasNoTrans && trans_b == CblasNoTrans && !bias && M >= 64 && N > M && K >= 256;
}

static int avx512_sgemm(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, const float *bias, float *C,
                        int ldc)
{
    /* Inside a parallel region (attention runs one (batch, head) per thread)
     * the caller already uses every core. */
    int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
    if ((double)M * N * K < GEMM_PARALLEL_MIN)
        threads = 1;
    const int swap = runs_transposed(trans_a, trans_b, M, N, K, bias);
    const int cols = swap ? M : N; /* of the C the kernel writes */
    const int kc_max = K < KC ? K : KC, nc_max = cols < NC ? cols : NC;
    const size_t b_floats = (size_t)kc_max * ((nc_max + NR - 1) / NR) * NR;
    const size_t a_floats = (size_t)threads * (MC / MR) * A_PANEL;
    const size_t c_floats = swap ? (size_t)M * N : 0;
    /* B's panels first, then each thread's A panels, then the transposed C:
     * b_floats is a multiple of NR = 32 floats and A_PANEL of 16, so each
     * part stays 64-byte aligned. */
    float *b_pack = pack_space(b_floats + a_floats + c_floats);
    if (!b_pack)
        return 0;
    float *a_pack = b_pack + b_floats;
    Operand a = {A, lda, trans_a != CblasNoTrans, 0, K}, b = {B, ldb, trans_b != CblasNoTrans, 0, K};
    a.in_place = !a.transposed && rows_spread_over_l1(lda);
    Share shares[threads];
    if (!swap) {
        blocked_sgemm(a, b, M, N, K, alpha, beta, bias, C, ldc, b_pack, a_pack, shares, threads);
        return 1;
    }
    /* C^T (N,M) = B^T A: B becomes the transposed A, A the B. */
    float *c_t = a_pack + a_floats;
    const Operand a_t = {B, ldb, 1, 0, K}, b_t = {A, lda, 0, 0, K};
    if (beta != 0)
        transpose_matrix(c_t, M, C, ldc, M, N, threads);
    blocked_sgemm(a_t, b_t, N, M, K, alpha, beta, NULL, c_t, M, b_pack, a_pack, shares, threads);
    transpose_matrix(C, ldc, c_t, M, N, M, threads);
    return 1;
}

int d2v_sgemm_reads_overlapping_rows(void)
{
    return use_avx512();
}

/* Row-major C = alpha op(A) op(B) + beta C, one dot product at a time: what
 * is left for operands BLAS refuses (rows that overlap) when the AVX-512
 * path cannot run. Slow, and reached only then. */
static void plain_sgemm(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K, float alpha,
                        const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            float sum = 0;
            for (int k = 0; k < K; k++) {
                const float a = trans_a == CblasNoTrans ? A[(size_t)m * lda + k] : A[(size_t)k * lda + m];
                const float b = trans_b == CblasNoTrans ? B[(size_t)k * ldb + n] : B[(size_t)n * ldb + k];
                sum += a * b;
            }
            float *c = C + (size_t)m * ldc + n;
            *c = alpha * sum + (beta == 0 ? 0 : beta * *c);
        }
}

void d2v_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (order == CblasRowMajor && use_avx512()) {
        if (K <= 0 || alpha == 0) {
            scale_c(C, ldc, M, N, beta);
            return;
        }
        if (avx512_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, NULL, C, ldc))
            return;
    }
    const int overlapping = order == CblasRowMajor && (lda < (trans_a == CblasNoTrans ? K : M) ||
                                                       ldb < (trans_b == CblasNoTrans ? N : K));
    if (overlapping) {
        plain_sgemm(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(order, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void d2v_sgemm_bias(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K, const float *A, int lda,
                    const float *B, int ldb, const float *bias, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (K > 0 && use_avx512() && avx512_sgemm(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, bias, C, ldc))
        return;
    /* OpenBLAS: the bias goes in first and the product accumulates onto
     * it (beta = 1). */
#pragma omp parallel for schedule(static)
    for (int m = 0; m < M; m++)
        memcpy(C + (size_t)m * ldc, bias, (size_t)N * sizeof(float));
    if (K > 0)
        cblas_sgemm(CblasRowMajor, trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
}
