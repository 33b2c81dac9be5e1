/* gradcheck.h — the finite-difference kit of the gradient-check programs,
 * which are built against the double-precision core (-DD2V_DOUBLE).
 *
 * For a layer y = f(x, theta) a test checks the scalar s = sum(y * r) with a
 * fixed random r: the backward fed d_y = r must equal (s(v+h) - s(v-h)) / 2h
 * for every input and parameter entry v. */
#ifndef D2V_TEST_GRADCHECK_H
#define D2V_TEST_GRADCHECK_H

#include "check.h"
#include "rng.h"

#include <math.h>
#include <stdlib.h>

#ifndef D2V_DOUBLE
#error "gradient checks need the double-precision core"
#endif

#define STEP 1e-5
#define TOLERANCE 1e-6

typedef double (*ScalarFn)(void *ctx);

static Rng test_rng;

static double *random_array(size_t n, double scale)
{
    double *a = malloc(n * sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = scale * rng_normal(&test_rng);
    return a;
}

static double *zeros(size_t n) { return calloc(n, sizeof(double)); }

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Largest |analytic - numeric| relative to the largest |numeric|: a whole-
 * tensor measure, robust to entries whose gradient is ~0. */
static double grad_error(double *v, size_t n, const double *analytic, ScalarFn f, void *ctx)
{
    double max_diff = 0, max_ref = 1e-12;
    for (size_t i = 0; i < n; i++) {
        double keep = v[i];
        v[i] = keep + STEP;
        double plus = f(ctx);
        v[i] = keep - STEP;
        double minus = f(ctx);
        v[i] = keep;
        double numeric = (plus - minus) / (2 * STEP);
        max_diff = fmax(max_diff, fabs(numeric - analytic[i]));
        max_ref = fmax(max_ref, fabs(numeric));
    }
    return max_diff / max_ref;
}

static void expect_grad(const char *what, double *v, size_t n, const double *analytic, ScalarFn f, void *ctx)
{
    double e = grad_error(v, n, analytic, f, ctx);
    CHECK(e < TOLERANCE, "%s: relative gradient error %.3g (tolerance %.0g)", what, e, TOLERANCE);
}

#endif
