/* gemm.h — the single-precision matrix multiply every layer runs on.
 *
 * d2v_sgemm has cblas_sgemm's signature and meaning (C = alpha op(A) op(B)
 * + beta C). On a CPU with AVX-512 it runs d2v's own blocked kernel
 * (core/gemm.c): this machine makes OpenBLAS use its AVX2 kernels
 * (OPENBLAS_CORETYPE=Haswell), which leave half of each vector unit idle.
 * Elsewhere, for column-major calls, or with D2V_GEMM=openblas in the
 * environment, it is cblas_sgemm itself. */
#ifndef D2V_GEMM_H
#define D2V_GEMM_H

#include <cblas.h>

/* Same arguments as cblas_sgemm. Every element of C is summed over k in one
 * fixed order whatever the thread count, so results do not depend on it.
 * Unlike BLAS, a row-major operand may have rows that overlap (lda < K
 * or ldb < N, lda < M or ldb < K where transposed): a strided
 * convolution's windows read in place. Fast where
 * d2v_sgemm_reads_overlapping_rows() says so, correct (one dot product at
 * a time) elsewhere. */
void d2v_sgemm(CBLAS_ORDER order, CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K, float alpha,
               const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);

/* C (M,N) = op(A) op(B) + bias, bias (N) added to every row: a Linear
 * layer's forward in one pass over C. Row-major. */
void d2v_sgemm_bias(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K, const float *A, int lda,
                    const float *B, int ldb, const float *bias, float *C, int ldc);

/* 1 where d2v_sgemm reads overlapping rows at full speed (its own kernel
 * packs them like any rows); 0 where a caller should copy them out first. */
int d2v_sgemm_reads_overlapping_rows(void);

/* "d2v avx512" or "openblas": which implementation d2v_sgemm runs here. */
const char *d2v_sgemm_name(void);

#endif
