/* real.h — the one floating-point type of the numerical core.
 *
 * d2v trains in float. The same sources are compiled a second time with
 * -DD2V_DOUBLE for the gradient checks (tests/), so every backward is
 * compared with central finite differences in double precision, where the
 * differences are accurate to ~1e-8 instead of float's ~1e-3 (DESIGN §6).
 * <tgmath.h> makes exp(), sqrt(), erf() pick the float or double version
 * from their argument, so one line of code serves both builds. */
#ifndef D2V_REAL_H
#define D2V_REAL_H

#include "gemm.h"

#include <cblas.h>
#include <tgmath.h>

#ifdef D2V_DOUBLE
typedef double real;
#define gemm cblas_dgemm
#define gemm_reads_overlapping_rows() 0
#define REAL_NAME "f64"
#else
typedef float real;
#define gemm d2v_sgemm
#define gemm_reads_overlapping_rows() d2v_sgemm_reads_overlapping_rows()
#define REAL_NAME "f32"
#endif

/* A literal in the build's precision: R(0.5) is 0.5f or 0.5. */
#define R(x) ((real)(x))

#endif
