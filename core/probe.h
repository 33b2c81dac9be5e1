/* probe.h — how good are frozen features? Two standard probes on feature
 * matrices, modality-free: cosine k-NN with temperature-weighted votes
 * (Wu et al. 2018, as DINO evaluates: k = 20, T = 0.07) and a linear probe
 * (multinomial logistic regression with a weight-decay sweep on a held-out
 * part of the training split). Features are (n, D) row-major float32. */
#ifndef D2V_PROBE_H
#define D2V_PROBE_H

#include "common.h"

typedef struct {
    double top1, top5;
} ProbeResult;

/* Features are L2-normalised (an all-zero row stays zero); each test row's
 * k most similar training rows (k clamped to n_train; equal similarities
 * prefer the lower training index) vote for their class with weight
 * exp(sim / T). top1/top5: the true class among the 1/5 highest class
 * scores, equal scores ranked by lower class index; with at most 5 classes
 * top5 is 1. Needs n_train, n_test, dim, k >= 1, T > 0, labels in
 * [0, n_classes) and finite features. */
int knn_probe(const float *train, const int *train_labels, int n_train, const float *test, const int *test_labels,
              int n_test, int dim, int n_classes, int k, double temperature, ProbeResult *out, D2vError *err);

typedef struct {
    double holdout_fraction;   /* of train, for choosing weight decay (0.2);
                                  in [0, 1), stratified by class */
    int epochs;                /* at most this many full-batch L-BFGS
                                  iterations per fit */
    uint64_t seed;             /* the held-out split */
    int verbose;               /* print the sweep */
} LinearProbeOptions;

/* Standardises features with the training split's mean/std, sweeps weight
 * decay over a fixed grid on the held-out part, retrains on all of train
 * with the best, reports test top-1/top-5 and the chosen decay.
 *
 * The grid is 1e-1 .. 1e-6 in decades; equal held-out accuracies go to the
 * larger decay. When nothing is held out (fraction 0, or one row per class)
 * the decay is 1e-4. The loss is mean cross-entropy + decay/2 ||W||^2 (the
 * bias is not decayed). Deterministic for a given seed. chosen_decay may be
 * NULL. */
int linear_probe(const float *train, const int *train_labels, int n_train, const float *test, const int *test_labels,
                 int n_test, int dim, int n_classes, const LinearProbeOptions *opt, ProbeResult *out,
                 double *chosen_decay, D2vError *err);

/* Writes a (rows, cols) float32 C-order NumPy .npy file (format 1.0),
 * atomically (temp file, fsync, rename). */
int npy_write_f32(const char *path, const float *data, int64_t rows, int64_t cols, D2vError *err);

#endif
