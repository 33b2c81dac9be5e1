/* test_gemm — d2v_sgemm (core/gemm.c) against a double-precision product
 * computed here, over every transpose pair, edge sizes around its blocks
 * (MR 12, NR 32, KC 1024, MC 120, NC 1536), alpha and beta, d2v_sgemm_bias,
 * padded leading dimensions, and rows that overlap (lda < K, or < M
 * transposed); weight gradients run as their transpose; plus BLAS's beta = 0
 * rule, thread-count independence, and the D2V_GEMM=openblas switch. */
#include "check.h"
#include "gemm.h"

#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rng_state = 88172645463325252ull;
static float uniform(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (1.0 / 16777216.0)) - 0.5f;
}
static float *random_floats(size_t n)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = uniform();
    return p;
}

/* op(A) op(B) at (m, n) in double precision, and sum |a b| in *magnitude. */
static double exact_dot(int ta, int tb, const float *A, int lda, const float *B, int ldb, int m, int n, int K,
                        double *magnitude)
{
    double sum = 0;
    *magnitude = 0;
    for (int k = 0; k < K; k++) {
        const double a = ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k];
        const double b = tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
        sum += a * b;
        *magnitude += fabs(a * b);
    }
    return sum;
}

/* One product checked against double precision: every element within a
 * float rounding bound of sum |a||b|, and C's columns past N untouched. */
static void check_product(int ta, int tb, int M, int N, int K, float alpha, float beta, int pad, int with_bias)
{
    const int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    float *A = random_floats((size_t)lda * (ta ? K : M)), *B = random_floats((size_t)ldb * (tb ? N : K));
    float *C = random_floats((size_t)ldc * M), *C0 = malloc((size_t)ldc * M * sizeof *C0);
    float *bias = with_bias ? random_floats((size_t)N) : NULL;
    memcpy(C0, C, (size_t)ldc * M * sizeof *C);
    if (with_bias) {
        alpha = 1.0f; /* d2v_sgemm_bias: C = op(A) op(B) + bias */
        d2v_sgemm_bias(ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, A, lda, B, ldb, bias, C,
                       ldc);
    } else {
        d2v_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
                  lda, B, ldb, beta, C, ldc);
    }
    double worst = 0;
    int untouched = 1;
    for (int m = 0; m < M; m++) {
        for (int n = 0; n < ldc; n++) {
            const size_t at = (size_t)m * ldc + n;
            if (n >= N) {
                untouched &= C[at] == C0[at];
                continue;
            }
            double magnitude;
            const double sum = exact_dot(ta, tb, A, lda, B, ldb, m, n, K, &magnitude);
            const double added = with_bias ? bias[n] : beta != 0 ? beta * (double)C0[at] : 0;
            const double want = alpha * sum + added;
            const double bound = 4 * 6e-8 * (fabs(alpha) * magnitude * (K + 2) + fabs(added)) + 1e-30;
            const double err = fabs(C[at] - want) / bound;
            worst = err > worst ? err : worst;
        }
    }
    CHECK(worst <= 1, "%c%c M=%d N=%d K=%d alpha=%g beta=%g pad=%d bias=%d: error %.2f x the rounding bound",
          "NT"[ta], "NT"[tb], M, N, K, alpha, beta, pad, with_bias, worst);
    CHECK(untouched, "%c%c M=%d N=%d K=%d: wrote C past column N", "NT"[ta], "NT"[tb], M, N, K);
    free(A);
    free(B);
    free(C);
    free(C0);
    free(bias);
}

/* Rows that overlap, as a strided convolution's windows: A with row
 * stride lda < K (lda < M where it is transposed), or B with ldb < N (ldb
 * < K transposed). Checked against double precision like check_product. */
static void check_overlapping(int ta, int tb, int M, int N, int K, int lda, int ldb)
{
    const size_t a_size = ta ? (size_t)(K - 1) * lda + M : (size_t)(M - 1) * lda + K;
    const size_t b_size = tb ? (size_t)(N - 1) * ldb + K : (size_t)(K - 1) * ldb + N;
    float *A = random_floats(a_size), *B = random_floats(b_size), *C = malloc((size_t)M * N * sizeof *C);
    d2v_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B,
              ldb, 0.0f, C, N);
    double worst = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double magnitude;
            const double sum = exact_dot(ta, tb, A, lda, B, ldb, m, n, K, &magnitude);
            const double err = fabs(C[(size_t)m * N + n] - sum) / (4 * 6e-8 * magnitude * (K + 2) + 1e-30);
            worst = err > worst ? err : worst;
        }
    CHECK(worst <= 1, "overlapping rows (%s) %c%c M=%d N=%d K=%d lda=%d ldb=%d: error %.2f x the rounding bound",
          d2v_sgemm_name(), "NT"[ta], "NT"[tb], M, N, K, lda, ldb, worst);
    free(A);
    free(B);
    free(C);
}

static void check_overlapping_shapes(void)
{
    check_overlapping(0, 1, 300, 256, 768, 512, 768); /* a speech CNN layer: kernel 3, stride 2, 256 channels */
    check_overlapping(0, 1, 100, 64, 10, 5, 10);      /* the first layer: kernel 10, stride 5, one channel */
    check_overlapping(0, 0, 50, 40, 30, 12, 40);
    check_overlapping(1, 0, 256, 768, 300, 256, 512); /* its weight gradient: the windows as B */
    check_overlapping(0, 0, 64, 100, 40, 40, 20);
    check_overlapping(1, 0, 10, 256, 600, 5, 256); /* the first layer's, transposed: windows^T . d_conv */
    check_overlapping(1, 1, 30, 20, 50, 7, 9);
}

static int same_bits(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

int main(void)
{
    printf("d2v_sgemm runs %s here\n", d2v_sgemm_name());

    /* Sizes on both sides of each block edge, every transpose pair. */
    static const int sizes[][3] = {{1, 1, 1},     {12, 32, 1},    {13, 33, 7},   {11, 31, 256}, {25, 65, 257},
                                   {240, 64, 64}, {241, 97, 513}, {3, 1600, 9}, {500, 40, 300}, {37, 1537, 31},
                                   {11, 31, 1024}, {121, 33, 1025}, {25, 40, 2049}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int with_bias = 0; with_bias < 2; with_bias++)
                    check_product(ta, tb, sizes[s][0], sizes[s][1], sizes[s][2], 1.0f, 0.0f, 0, with_bias);
    /* alpha, beta and padded leading dimensions on random shapes. */
    static const float alphas[] = {1.0f, 0.5f, -2.0f}, betas[] = {0.0f, 1.0f, 0.25f};
    for (int t = 0; t < 60; t++) {
        const int M = 1 + (int)((uniform() + 0.5f) * 300), N = 1 + (int)((uniform() + 0.5f) * 300),
                  K = 1 + (int)((uniform() + 0.5f) * 600);
        check_product(t % 2, (t / 2) % 2, M, N, K, alphas[t % 3], betas[(t / 3) % 3], 1 + t % 3, t % 5 == 0);
    }

    check_overlapping_shapes();

    /* Weight gradients' shapes, which gemm.c runs as their transpose (A
     * transposed, B not, fewer rows than columns): beta in the scratch,
     * several passes over k, padded leading dimensions, overlapping rows. */
    check_product(1, 0, 64, 65, 256, 1.0f, 0.0f, 0, 0);
    check_product(1, 0, 130, 333, 1100, 0.5f, 0.25f, 3, 0);
    check_product(1, 0, 77, 1600, 2100, -2.0f, 1.0f, 1, 0);
    check_overlapping(1, 0, 96, 384, 700, 96, 256);
    /* ... and the same bits as the unswapped product, which the
     * transposed call (more rows than columns) computes. */
    {
        const int M = 150, N = 420, K = 1500;
        float *A = random_floats((size_t)K * M), *B = random_floats((size_t)K * N);
        float *C = random_floats((size_t)M * N), *C_t = malloc((size_t)M * N * sizeof *C_t);
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++)
                C_t[(size_t)n * M + m] = C[(size_t)m * N + n];
        d2v_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, M, N, K, 0.5f, A, M, B, N, 0.75f, C, N);
        d2v_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, N, M, K, 0.5f, B, N, A, M, 0.75f, C_t, M);
        int same = 1;
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++)
                same &= memcmp(&C[(size_t)m * N + n], &C_t[(size_t)n * M + m], sizeof *C) == 0;
        CHECK(same, "A^T B (run as its transpose) and (B^T A)^T gave different bits");
        free(A);
        free(B);
        free(C);
        free(C_t);
    }

    /* beta = 0 must not read C: NaN there does not reach the result. */
    {
        const int M = 30, N = 40, K = 50;
        float *A = random_floats((size_t)M * K), *B = random_floats((size_t)K * N), *C = malloc((size_t)M * N * 4);
        for (int i = 0; i < M * N; i++)
            C[i] = NAN;
        d2v_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, A, K, B, N, 0.0f, C, N);
        int finite = 1;
        for (int i = 0; i < M * N; i++)
            finite &= isfinite(C[i]) != 0;
        CHECK(finite, "beta = 0 read the NaN already in C");
        /* K = 0: C = beta C. */
        for (int i = 0; i < M * N; i++)
            C[i] = 2.0f;
        d2v_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, 0, 1.0f, A, 1, B, N, 0.5f, C, N);
        CHECK(C[0] == 1.0f && C[M * N - 1] == 1.0f, "K = 0 gave %g, want beta * C = 1", C[0]);
        free(A);
        free(B);
        free(C);
    }

    /* The same bits on 1 and 2 threads, and inside a parallel region (where
     * it runs on the calling thread alone): a C element is always summed in
     * one order. */
    {
        const int M = 700, N = 600, K = 900;
        float *A = random_floats((size_t)M * K), *B = random_floats((size_t)N * K);
        float *one = malloc((size_t)M * N * 4), *two = malloc((size_t)M * N * 4), *nested = malloc((size_t)M * N * 4);
        const int saved = omp_get_max_threads();
        omp_set_num_threads(1);
        d2v_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, one, N);
        omp_set_num_threads(2);
        d2v_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, two, N);
#pragma omp parallel num_threads(2)
        {
#pragma omp single
            d2v_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, nested, N);
        }
        omp_set_num_threads(saved);
        CHECK(same_bits(one, two, (size_t)M * N), "1 and 2 threads gave different bits");
        CHECK(same_bits(one, nested, (size_t)M * N), "a call inside a parallel region gave different bits");
        /* 3 threads on 2 cores, where rows are also taken from the tail of
         * another thread's share, and a transposed A (a weight gradient's
         * shape: many passes over k, each thread owning the same rows). */
        for (int ta = 0; ta < 2; ta++) {
            const int rows = ta ? 300 : M;
            for (int threads = 1; threads <= 3; threads++) {
                omp_set_num_threads(threads);
                d2v_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, ta ? CblasNoTrans : CblasTrans, rows, N, K,
                          1.0f, A, ta ? rows : K, B, ta ? N : K, 0.0f, threads == 1 ? one : two, N);
                CHECK(threads == 1 || same_bits(one, two, (size_t)rows * N),
                      "%s A: 1 and %d threads gave different bits", ta ? "transposed" : "row-major", threads);
            }
        }
        omp_set_num_threads(saved);

        /* D2V_GEMM=openblas hands the call to cblas_sgemm unchanged. */
        setenv("D2V_GEMM", "openblas", 1);
        CHECK(strcmp(d2v_sgemm_name(), "openblas") == 0, "D2V_GEMM=openblas: runs %s", d2v_sgemm_name());
        d2v_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, two, N);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, B, K, 0.0f, nested, N);
        CHECK(same_bits(two, nested, (size_t)M * N), "D2V_GEMM=openblas did not give cblas_sgemm's bits");
        /* and d2v_sgemm_bias's OpenBLAS path is still right */
        check_product(0, 1, 100, 70, 300, 1.0f, 0.0f, 2, 1);
        /* BLAS refuses overlapping rows: d2v_sgemm computes them itself */
        check_overlapping_shapes();
        unsetenv("D2V_GEMM");
        free(A);
        free(B);
        free(one);
        free(two);
        free(nested);
    }
    return check_summary();
}
