/* test_probe.c — the k-NN and linear probes on data whose answer is known,
 * their input checks, and the .npy writer's bytes.
 *
 * Standalone: prints each failure, ends with "N passed, M failed" and exits
 * nonzero if any check failed. Files go to a fresh mkdtemp directory under
 * /tmp that is removed at the end. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp */
#endif

#include "probe.h"
#include "rng.h"
#include "check.h"
#include "tempdir.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define PI 3.14159265358979323846

/* A 2-D point at `degrees` on a circle of radius `radius`. */
static void polar(float *out, double degrees, double radius)
{
    out[0] = (float)(radius * cos(degrees * PI / 180));
    out[1] = (float)(radius * sin(degrees * PI / 180));
}

/* k-NN's verdict on one test point: the ProbeResult of a one-row test set
 * labelled `label` (top1 is 1 exactly when `label` is the prediction). */
static ProbeResult knn_one(const float *train, const int *labels, int n_train, const float *point, int label,
                           int n_classes, int k, double temperature)
{
    ProbeResult r = {-1, -1};
    D2vError err = {{0}};
    int rc = knn_probe(train, labels, n_train, point, &label, 1, 2, n_classes, k, temperature, &r, &err);
    CHECK(rc == 0, "knn_probe failed: %s", err.msg);
    return r;
}

/* Three clusters of directions, 120 degrees apart, at varied radii: cosine
 * similarity must ignore the radius, and k = 3 must find the cluster. A zero
 * vector in the training set must neither crash nor win. */
static void test_knn_clusters(void)
{
    enum { PER = 4, N_TRAIN = 3 * PER + 1, N_TEST = 6 };
    static const double offsets[PER] = {-10, -4, 5, 11};
    static const double radii[PER] = {0.5, 3, 1, 20};
    float train[N_TRAIN * 2];
    int labels[N_TRAIN];
    for (int c = 0; c < 3; c++)
        for (int j = 0; j < PER; j++) {
            polar(train + 2 * (c * PER + j), 120.0 * c + offsets[j], radii[j]);
            labels[c * PER + j] = c;
        }
    train[2 * (N_TRAIN - 1)] = train[2 * (N_TRAIN - 1) + 1] = 0; /* the zero vector */
    labels[N_TRAIN - 1] = 1;

    float test[N_TEST * 2];
    static const double test_angle[N_TEST] = {2, 125, 236, -7, 100, 260};
    static const int test_label[N_TEST] = {0, 1, 2, 0, 1, 2};
    for (int i = 0; i < N_TEST; i++)
        polar(test + 2 * i, test_angle[i], 0.01 + i);

    ProbeResult r;
    D2vError err = {{0}};
    CHECK(knn_probe(train, labels, N_TRAIN, test, test_label, N_TEST, 2, 3, 3, 0.07, &r, &err) == 0, "%s",
          err.msg);
    CHECK(r.top1 == 1.0 && r.top5 == 1.0, "clusters: top1 %g top5 %g, expected 1 and 1", r.top1, r.top5);

    /* Each point's prediction, seen one at a time: the right label scores
     * top-1, every other label misses top-1 but (3 classes) is in top-5. */
    for (int i = 0; i < N_TEST; i++)
        for (int label = 0; label < 3; label++) {
            ProbeResult one = knn_one(train, labels, N_TRAIN, test + 2 * i, label, 3, 3, 0.07);
            double want = label == test_label[i] ? 1.0 : 0.0;
            CHECK(one.top1 == want && one.top5 == 1.0, "point %d label %d: top1 %g top5 %g", i, label, one.top1,
                  one.top5);
        }

    /* k larger than the training set is clamped, not an error: with all 13
     * neighbours and a sharp temperature the nearest cluster still wins. */
    ProbeResult all = knn_one(train, labels, N_TRAIN, test, 0, 3, 100, 0.07);
    CHECK(all.top1 == 1.0, "k > n_train: top1 %g", all.top1);
}

/* One neighbour of class 0 at similarity 1 against two of class 1 at 0.8.
 * A majority vote says class 1; exp(sim / T) votes say class 0 at T = 0.07
 * and class 1 at T = 1. */
static void test_knn_temperature(void)
{
    float train[4 * 2] = {1, 0, 0.8f, 0.6f, 0.8f, -0.6f, -1, 0};
    int labels[4] = {0, 1, 1, 2};
    float point[2] = {1, 0};

    /* By hand: the three nearest are rows 0, 1, 2 (cosines 1, 0.8, 0.8;
     * row 3 is at -1). */
    double sharp0 = exp(1.0 / 0.07), sharp1 = 2 * exp(0.8 / 0.07);
    double soft0 = exp(1.0 / 1.0), soft1 = 2 * exp(0.8 / 1.0);
    CHECK(sharp0 > sharp1, "hand computation: T=0.07 votes %g vs %g", sharp0, sharp1);
    CHECK(soft0 < soft1, "hand computation: T=1 votes %g vs %g", soft0, soft1);

    ProbeResult sharp = knn_one(train, labels, 4, point, 0, 3, 3, 0.07);
    CHECK(sharp.top1 == 1.0, "T=0.07: the close single neighbour should win, top1 %g", sharp.top1);
    ProbeResult soft = knn_one(train, labels, 4, point, 1, 3, 3, 1.0);
    CHECK(soft.top1 == 1.0, "T=1: the two farther neighbours should win, top1 %g", soft.top1);
    /* T = 1e-4 would overflow exp(sim / T) in double without the max shift. */
    ProbeResult tiny = knn_one(train, labels, 4, point, 0, 3, 3, 1e-4);
    CHECK(tiny.top1 == 1.0, "T=1e-4: top1 %g", tiny.top1);
}

/* Equal similarities go to the lower training index; equal class scores to
 * the lower class. */
static void test_knn_ties(void)
{
    float train[2 * 2] = {0, 1, 0, 2}; /* the same direction */
    float point[2] = {0, 5};
    int labels_a[2] = {1, 0}, labels_b[2] = {0, 1};
    CHECK(knn_one(train, labels_a, 2, point, 1, 2, 1, 0.07).top1 == 1.0, "k=1 tie should pick train row 0 (class 1)");
    CHECK(knn_one(train, labels_b, 2, point, 0, 2, 1, 0.07).top1 == 1.0, "k=1 tie should pick train row 0 (class 0)");
    /* k = 2: both classes get the same vote; the lower class is ranked first. */
    CHECK(knn_one(train, labels_a, 2, point, 0, 2, 2, 0.07).top1 == 1.0, "equal votes should pick class 0");
    CHECK(knn_one(train, labels_a, 2, point, 1, 2, 2, 0.07).top1 == 0.0, "equal votes: class 1 ranks second");
}

/* Seven classes, one training point each, at angles 0, 10, ..., 60 degrees
 * from the test point: with k = 7 the class ranking is 0, 1, ..., 6, so
 * classes 0-4 are in the top 5 and 5-6 are not. */
static void test_knn_top5(void)
{
    float train[7 * 2];
    int labels[7];
    for (int c = 0; c < 7; c++) {
        polar(train + 2 * c, 10.0 * c, 1);
        labels[c] = c;
    }
    float point[2] = {1, 0};
    for (int label = 0; label < 7; label++) {
        ProbeResult r = knn_one(train, labels, 7, point, label, 7, 7, 0.07);
        CHECK(r.top1 == (label == 0) && r.top5 == (label < 5), "7 classes, label %d: top1 %g top5 %g", label, r.top1,
              r.top5);
    }
}

/* More test rows than one similarity block (256): the whole-set accuracy
 * must equal the average of the one-row verdicts. */
static void test_knn_blocks(void)
{
    enum { DIM = 8, C = 7, N_TRAIN = 300, N_TEST = 600 };
    Rng rng;
    rng_init(&rng, 21, 0);
    static float train[N_TRAIN * DIM], test[N_TEST * DIM];
    static int train_y[N_TRAIN], test_y[N_TEST];
    for (int i = 0; i < N_TRAIN * DIM; i++)
        train[i] = rng_normal(&rng);
    for (int i = 0; i < N_TEST * DIM; i++)
        test[i] = rng_normal(&rng);
    for (int i = 0; i < N_TRAIN; i++)
        train_y[i] = (int)rng_below(&rng, C);
    for (int i = 0; i < N_TEST; i++)
        test_y[i] = (int)rng_below(&rng, C);

    ProbeResult all;
    D2vError err = {{0}};
    CHECK(knn_probe(train, train_y, N_TRAIN, test, test_y, N_TEST, DIM, C, 20, 0.07, &all, &err) == 0, "%s", err.msg);
    double hits1 = 0, hits5 = 0;
    int failed_calls = 0;
    for (int i = 0; i < N_TEST; i++) {
        ProbeResult one = {0, 0};
        failed_calls += knn_probe(train, train_y, N_TRAIN, test + i * DIM, test_y + i, 1, DIM, C, 20, 0.07, &one,
                                  &err) != 0;
        hits1 += one.top1;
        hits5 += one.top5;
    }
    CHECK(failed_calls == 0, "%d one-row calls failed: %s", failed_calls, err.msg);
    CHECK(fabs(all.top1 - hits1 / N_TEST) < 1e-12 && fabs(all.top5 - hits5 / N_TEST) < 1e-12,
          "blocked %g/%g vs row by row %g/%g", all.top1, all.top5, hits1 / N_TEST, hits5 / N_TEST);
    CHECK(all.top5 > all.top1 && all.top5 < 1, "random 7-class data: top1 %g top5 %g", all.top1, all.top5);
}

static void test_knn_errors(void)
{
    float train[3 * 2] = {1, 0, 0, 1, 1, 1}, test[2] = {1, 0};
    int labels[3] = {0, 1, 2}, bad_labels[3] = {0, 3, 1}, test_label = 0, bad_test_label = -1;
    ProbeResult r;
    D2vError err = {{0}};

    CHECK(knn_probe(train, bad_labels, 3, test, &test_label, 1, 2, 3, 3, 0.07, &r, &err) == -1 &&
              strstr(err.msg, "train label 3 at row 1"),
          "bad train label: %s", err.msg);
    CHECK(knn_probe(train, labels, 3, test, &bad_test_label, 1, 2, 3, 3, 0.07, &r, &err) == -1 &&
              strstr(err.msg, "test label -1"),
          "bad test label: %s", err.msg);
    CHECK(knn_probe(train, labels, 0, test, &test_label, 1, 2, 3, 3, 0.07, &r, &err) == -1 &&
              strstr(err.msg, "train split has 0 rows"),
          "zero train rows: %s", err.msg);
    CHECK(knn_probe(train, labels, 3, test, &test_label, 0, 2, 3, 3, 0.07, &r, &err) == -1 &&
              strstr(err.msg, "test split has 0 rows"),
          "zero test rows: %s", err.msg);
    CHECK(knn_probe(train, labels, 3, test, &test_label, 1, 0, 3, 3, 0.07, &r, &err) == -1 &&
              strstr(err.msg, "dimension"),
          "zero dim: %s", err.msg);
    CHECK(knn_probe(train, labels, 3, test, &test_label, 1, 2, 3, 0, 0.07, &r, &err) == -1 && strstr(err.msg, "k is 0"),
          "k = 0: %s", err.msg);
    CHECK(knn_probe(train, labels, 3, test, &test_label, 1, 2, 3, 3, 0, &r, &err) == -1 &&
              strstr(err.msg, "temperature"),
          "T = 0: %s", err.msg);
    float nan_train[3 * 2] = {1, 0, NAN, 1, 1, 1};
    CHECK(knn_probe(nan_train, labels, 3, test, &test_label, 1, 2, 3, 3, 0.07, &r, &err) == -1 &&
              strstr(err.msg, "row 1 has a non-finite value"),
          "NaN feature: %s", err.msg);
}

/* n rows of `dim` features and labels in [0, n_classes): class centres drawn
 * once (scale `separation`), each row its centre plus unit Gaussian noise.
 * With separation 0 the labels carry no information at all. */
static void make_blobs(Rng *rng, const float *centres, int n, int dim, int n_classes, float *x, int *y)
{
    for (int i = 0; i < n; i++) {
        y[i] = (int)rng_below(rng, (uint32_t)n_classes);
        for (int d = 0; d < dim; d++)
            x[(size_t)i * dim + d] = (centres ? centres[(size_t)y[i] * dim + d] : 0) + rng_normal(rng);
    }
}

static void test_linear_blobs(void)
{
    enum { DIM = 64, C = 10, N_TRAIN = 2000, N_TEST = 500 };
    Rng rng;
    rng_init(&rng, 11, 0);
    float *centres = malloc(sizeof(float) * C * DIM);
    float *train = malloc(sizeof(float) * N_TRAIN * DIM), *test = malloc(sizeof(float) * N_TEST * DIM);
    int *train_y = malloc(sizeof(int) * N_TRAIN), *test_y = malloc(sizeof(int) * N_TEST);
    /* Centres about 5.7 apart on average: separable by a linear model for
     * all but a few percent of rows. An offset and scale per feature check
     * that standardisation is applied. */
    for (int j = 0; j < C * DIM; j++)
        centres[j] = 0.5f * rng_normal(&rng);
    make_blobs(&rng, centres, N_TRAIN, DIM, C, train, train_y);
    make_blobs(&rng, centres, N_TEST, DIM, C, test, test_y);
    for (int i = 0; i < N_TRAIN + N_TEST; i++) {
        float *row = i < N_TRAIN ? train + (size_t)i * DIM : test + (size_t)(i - N_TRAIN) * DIM;
        for (int d = 0; d < DIM; d++)
            row[d] = row[d] * (1.0f + d) + 100.0f;
    }

    LinearProbeOptions opt = {.holdout_fraction = 0.2, .epochs = 300, .seed = 1, .verbose = 0};
    ProbeResult r = {0, 0}, again = {0, 0};
    double decay = -1, decay_again = -1;
    D2vError err = {{0}};
    CHECK(linear_probe(train, train_y, N_TRAIN, test, test_y, N_TEST, DIM, C, &opt, &r, &decay, &err) == 0, "%s",
          err.msg);
    CHECK(r.top1 > 0.95, "separable blobs: test top1 %g, expected > 0.95", r.top1);
    CHECK(r.top5 >= r.top1 && r.top5 > 0.99, "separable blobs: top5 %g (top1 %g)", r.top5, r.top1);
    int in_grid = 0;
    for (double g = 1e-6; g < 0.2; g *= 10)
        in_grid |= fabs(decay - g) < 1e-3 * g;
    CHECK(in_grid, "chosen decay %g is not on the grid", decay);

    /* Deterministic: the same call gives the same numbers. */
    CHECK(linear_probe(train, train_y, N_TRAIN, test, test_y, N_TEST, DIM, C, &opt, &again, &decay_again, &err) == 0,
          "%s", err.msg);
    CHECK(again.top1 == r.top1 && again.top5 == r.top5 && decay_again == decay,
          "repeat run differs: %g/%g/%g vs %g/%g/%g", again.top1, again.top5, decay_again, r.top1, r.top5, decay);

    /* No held-out part: the sweep is skipped, the result still good. */
    opt.holdout_fraction = 0;
    CHECK(linear_probe(train, train_y, N_TRAIN, test, test_y, N_TEST, DIM, C, &opt, &again, &decay_again, &err) == 0,
          "%s", err.msg);
    CHECK(again.top1 > 0.95 && decay_again == 1e-4, "no hold-out: top1 %g decay %g", again.top1, decay_again);

    free(centres);
    free(train);
    free(test);
    free(train_y);
    free(test_y);
}

/* Features that say nothing about the labels: whatever the training fit,
 * test accuracy must stay near chance (0.1 top-1, 0.5 top-5 for 10 classes;
 * 500 test rows put one standard deviation at about 0.013 and 0.022). */
static void test_linear_random_labels(void)
{
    enum { DIM = 64, C = 10, N_TRAIN = 2000, N_TEST = 500 };
    Rng rng;
    rng_init(&rng, 12, 0);
    float *train = malloc(sizeof(float) * N_TRAIN * DIM), *test = malloc(sizeof(float) * N_TEST * DIM);
    int *train_y = malloc(sizeof(int) * N_TRAIN), *test_y = malloc(sizeof(int) * N_TEST);
    make_blobs(&rng, NULL, N_TRAIN, DIM, C, train, train_y);
    make_blobs(&rng, NULL, N_TEST, DIM, C, test, test_y);

    LinearProbeOptions opt = {.holdout_fraction = 0.2, .epochs = 200, .seed = 3, .verbose = 0};
    ProbeResult r = {0, 0};
    double decay = -1;
    D2vError err = {{0}};
    CHECK(linear_probe(train, train_y, N_TRAIN, test, test_y, N_TEST, DIM, C, &opt, &r, &decay, &err) == 0, "%s",
          err.msg);
    CHECK(r.top1 > 0.05 && r.top1 < 0.16, "random labels: test top1 %g, expected near 0.1", r.top1);
    CHECK(r.top5 > 0.4 && r.top5 < 0.6, "random labels: test top5 %g, expected near 0.5", r.top5);

#ifdef _OPENMP
    /* One thread and three must agree exactly: probe.c runs every sgemm
     * on fixed blocks so that the thread count cannot change its bits. */
    int threads = omp_get_max_threads();
    ProbeResult one = {0, 0}, three = {0, 0};
    double decay_one = -1, decay_three = -1;
    omp_set_num_threads(1);
    CHECK(linear_probe(train, train_y, N_TRAIN, test, test_y, N_TEST, DIM, C, &opt, &one, &decay_one, &err) == 0,
          "%s", err.msg);
    omp_set_num_threads(3);
    CHECK(linear_probe(train, train_y, N_TRAIN, test, test_y, N_TEST, DIM, C, &opt, &three, &decay_three, &err) == 0,
          "%s", err.msg);
    omp_set_num_threads(threads);
    CHECK(one.top1 == three.top1 && one.top5 == three.top5 && decay_one == decay_three,
          "1 vs 3 threads: %g/%g/%g vs %g/%g/%g", one.top1, one.top5, decay_one, three.top1, three.top5, decay_three);
#endif

    free(train);
    free(test);
    free(train_y);
    free(test_y);
}

/* Standardisation, seen from outside: the only informative feature is on a
 * scale of 1e-4 (unstandardised, the weight it needs, ~1e4, costs more in
 * weight decay than it gains), and one feature is constant in train but
 * wild in test (its weight must stay exactly 0, so it changes nothing). */
static void test_linear_scales(void)
{
    enum { DIM = 8, N_TRAIN = 600, N_TEST = 200 };
    Rng rng;
    rng_init(&rng, 13, 0);
    float train[N_TRAIN * DIM], test[N_TEST * DIM];
    int train_y[N_TRAIN], test_y[N_TEST];
    for (int i = 0; i < N_TRAIN + N_TEST; i++) {
        int test_row = i >= N_TRAIN;
        float *row = test_row ? test + (i - N_TRAIN) * DIM : train + i * DIM;
        int label = (int)rng_below(&rng, 2);
        (test_row ? test_y : train_y)[test_row ? i - N_TRAIN : i] = label;
        row[0] = 1e-4f * ((label ? 1.0f : -1.0f) + 0.3f * rng_normal(&rng));
        row[1] = test_row ? 1e6f * rng_normal(&rng) : 5.0f;
        for (int d = 2; d < DIM; d++)
            row[d] = rng_normal(&rng);
    }
    LinearProbeOptions opt = {.holdout_fraction = 0.2, .epochs = 200, .seed = 4, .verbose = 0};
    ProbeResult r = {0, 0};
    D2vError err = {{0}};
    CHECK(linear_probe(train, train_y, N_TRAIN, test, test_y, N_TEST, DIM, 2, &opt, &r, NULL, &err) == 0, "%s",
          err.msg);
    CHECK(r.top1 > 0.95, "tiny-scale feature / constant feature: test top1 %g, expected > 0.95", r.top1);
}

static void test_linear_errors(void)
{
    float train[4 * 2] = {1, 0, 0, 1, 1, 1, 2, 0}, test[2] = {1, 0};
    int labels[4] = {0, 1, 0, 1}, bad_labels[4] = {0, 1, 2, 1}, test_label = 0;
    LinearProbeOptions opt = {.holdout_fraction = 0.2, .epochs = 50, .seed = 0, .verbose = 0};
    ProbeResult r;
    D2vError err = {{0}};

    CHECK(linear_probe(train, bad_labels, 4, test, &test_label, 1, 2, 2, &opt, &r, NULL, &err) == -1 &&
              strstr(err.msg, "train label 2 at row 2 is outside [0, 2)"),
          "bad label: %s", err.msg);
    CHECK(linear_probe(train, labels, 0, test, &test_label, 1, 2, 2, &opt, &r, NULL, &err) == -1 &&
              strstr(err.msg, "train split has 0 rows"),
          "zero rows: %s", err.msg);
    CHECK(linear_probe(train, labels, 4, test, &test_label, 0, 2, 2, &opt, &r, NULL, &err) == -1 &&
              strstr(err.msg, "test split has 0 rows"),
          "zero test rows: %s", err.msg);
    opt.epochs = 0;
    CHECK(linear_probe(train, labels, 4, test, &test_label, 1, 2, 2, &opt, &r, NULL, &err) == -1 &&
              strstr(err.msg, "epochs"),
          "zero epochs: %s", err.msg);
    opt.epochs = 50;
    opt.holdout_fraction = 1;
    CHECK(linear_probe(train, labels, 4, test, &test_label, 1, 2, 2, &opt, &r, NULL, &err) == -1 &&
              strstr(err.msg, "holdout_fraction"),
          "holdout 1: %s", err.msg);
    opt.holdout_fraction = 0.5;
    float nan_train[4 * 2] = {1, 0, 0, 1, INFINITY, 1, 2, 0};
    CHECK(linear_probe(nan_train, labels, 4, test, &test_label, 1, 2, 2, &opt, &r, NULL, &err) == -1 &&
              strstr(err.msg, "non-finite"),
          "infinite feature: %s", err.msg);
    /* A tiny but valid problem runs (chosen_decay may be NULL). */
    CHECK(linear_probe(train, labels, 4, test, &test_label, 1, 2, 2, &opt, &r, NULL, &err) == 0, "tiny: %s", err.msg);
}


/* Writes, reads the bytes back and checks them against format 1.0:
 * magic, version, little-endian header length, the dict, 64-byte alignment,
 * then the floats in order. */
static void check_npy(const char *name, int64_t rows, int64_t cols)
{
    char path[512], shape[64];
    snprintf(path, sizeof path, "%s/%s", tmp_dir, name);
    size_t count = (size_t)(rows * cols);
    float *data = malloc((count ? count : 1) * sizeof *data);
    for (size_t i = 0; i < count; i++)
        data[i] = (float)i * 0.25f - 3.0f;
    D2vError err = {{0}};
    CHECK(npy_write_f32(path, data, rows, cols, &err) == 0, "npy write: %s", err.msg);

    size_t len = 0;
    uint8_t *bytes = read_whole(path, &len);
    CHECK(bytes != NULL, "cannot read back %s", path);
    if (!bytes) {
        free(data);
        return;
    }
    CHECK(len >= 10 && memcmp(bytes, "\x93NUMPY", 6) == 0 && bytes[6] == 1 && bytes[7] == 0, "%s: bad magic/version",
          name);
    size_t header_len = len >= 10 ? (size_t)bytes[8] | (size_t)bytes[9] << 8 : 0;
    size_t data_start = 10 + header_len;
    CHECK(data_start % 64 == 0, "%s: data starts at %zu, not a multiple of 64", name, data_start);
    CHECK(len == data_start + 4 * count, "%s: file is %zu bytes, expected %zu", name, len, data_start + 4 * count);
    if (len == data_start + 4 * count) {
        char *dict = malloc(header_len + 1);
        memcpy(dict, bytes + 10, header_len);
        dict[header_len] = 0;
        snprintf(shape, sizeof shape, "'shape': (%lld, %lld), }", (long long)rows, (long long)cols);
        CHECK(strncmp(dict, "{'descr': '<f4', 'fortran_order': False, ", 41) == 0, "%s: dict is %s", name, dict);
        CHECK(strstr(dict, shape) != NULL, "%s: dict %s lacks %s", name, dict, shape);
        CHECK(dict[header_len - 1] == '\n', "%s: header does not end in a newline", name);
        size_t pad_from = strlen(shape) + (size_t)(strstr(dict, shape) - dict);
        int spaces_only = 1;
        for (size_t i = pad_from; i + 1 < header_len; i++)
            spaces_only &= dict[i] == ' ';
        CHECK(spaces_only, "%s: padding is not spaces", name);
        int same = 1;
        for (size_t i = 0; i < count; i++) {
            const uint8_t *b = bytes + data_start + 4 * i;
            uint32_t bits = (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
            float value;
            memcpy(&value, &bits, sizeof value);
            same &= value == data[i];
        }
        CHECK(same, "%s: data differs after the round trip", name);
        free(dict);
    }
    free(bytes);
    free(data);
}

static int count_dir_entries(void)
{
    DIR *dir = opendir(tmp_dir);
    int n = 0;
    for (struct dirent *e; dir && (e = readdir(dir));)
        n += e->d_name[0] != '.';
    if (dir)
        closedir(dir);
    return n;
}

static void test_npy(void)
{
    check_npy("small.npy", 3, 5);
    check_npy("wide.npy", 2, 1000);
    check_npy("empty.npy", 0, 7);
    check_npy("big_shape.npy", 100000, 3);
    /* Overwriting replaces the file and leaves no temporary behind. */
    check_npy("small.npy", 4, 2);
    CHECK(count_dir_entries() == 4, "expected exactly 4 files in %s, found %d", tmp_dir, count_dir_entries());

    D2vError err = {{0}};
    float x = 1;
    char path[512];
    snprintf(path, sizeof path, "%s/missing/out.npy", tmp_dir);
    CHECK(npy_write_f32(path, &x, 1, 1, &err) == -1 && strstr(err.msg, "writing ") &&
              strstr(err.msg, "No such file or directory"),
          "missing directory: %s", err.msg);
    CHECK(npy_write_f32(path, &x, -1, 1, &err) == -1 && strstr(err.msg, "negative shape"), "negative shape: %s",
          err.msg);
    CHECK(count_dir_entries() == 4, "a failed write left a file behind");
}


int main(void)
{
    if (tmp_dir_create("probe") < 0)
        return 1;
    test_knn_clusters();
    test_knn_temperature();
    test_knn_ties();
    test_knn_top5();
    test_knn_blocks();
    test_knn_errors();
    test_linear_blobs();
    test_linear_random_labels();
    test_linear_scales();
    test_linear_errors();
    test_npy();
    remove_tree(tmp_dir);
    return check_summary();
}
