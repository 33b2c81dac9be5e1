/* cmd_version.c — `d2v version`: what this binary computes with. */
#include "cli.h"
#include "dist.h"
#include "real.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>

/* OpenBLAS's own introspection (declared in its cblas.h). */
static const char *blas_parallel_name(int mode)
{
    return mode == 2 ? "OpenMP" : mode == 1 ? "pthreads" : "sequential";
}

int cmd_version(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        printf("usage: d2v version\n\nPrints the d2v version, the BLAS library and its build, the CPU core type\n"
               "OpenBLAS selected, the matmul the training step runs on (d2v's AVX-512 kernel or\n"
               "OpenBLAS; D2V_GEMM=openblas forces OpenBLAS), and the thread counts BLAS and OpenMP\n"
               "will use.\n");
        return 0;
    }
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("d2v %s (%s build, C%ld)\n", D2V_VERSION, REAL_NAME, __STDC_VERSION__ / 100 % 100);
    printf("blas: %s\n", openblas_get_config());
    printf("blas core: %s%s%s%s\n", openblas_get_corename(), coretype ? " (OPENBLAS_CORETYPE=" : "",
           coretype ? coretype : "", coretype ? ")" : "");
    printf("matmul: %s\n", d2v_sgemm_name());
    printf("blas threading: %s, %d threads\n", blas_parallel_name(openblas_get_parallel()),
           openblas_get_num_threads());
    printf("openmp threads: %d (of %d processors)\n", omp_get_max_threads(), omp_get_num_procs());
    printf("data parallel: %s\n", dist_backend());
    return 0;
}
