/* probe.c — k-NN and linear probes on frozen features, and .npy export.
 *
 * Both probes give the same numbers whatever the thread count. A threaded
 * sgemm splits its work differently for different thread counts, which
 * changes the last bits of its result, and over a few hundred optimiser
 * iterations those bits change accuracies. So every sgemm here is called
 * on a block of fixed boundaries from inside our own OpenMP loop, where
 * the OpenMP build of OpenBLAS (the one meson links) runs it
 * single-threaded; other sums over rows are taken serially in row order,
 * and every tie goes to the lower index. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L /* fsync, O_DIRECTORY, O_CLOEXEC */
#endif

#include "probe.h"

#include "rng.h"

#include <cblas.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* Shared pieces                                                             */

static int check_split(const char *which, const float *x, const int *labels, int n, int n_classes,
                       D2vError *err)
{
    if (n < 1)
        return d2v_fail(err, "%s split has %d rows; need at least 1", which, n);
    if (!x || !labels)
        return d2v_fail(err, "%s split: features or labels pointer is NULL", which);
    for (int i = 0; i < n; i++)
        if (labels[i] < 0 || labels[i] >= n_classes)
            return d2v_fail(err, "%s label %d at row %d is outside [0, %d)", which, labels[i], i, n_classes);
    return 0;
}

static int check_shape(int dim, int n_classes, D2vError *err)
{
    if (dim < 1)
        return d2v_fail(err, "feature dimension is %d; need at least 1", dim);
    if (n_classes < 1)
        return d2v_fail(err, "number of classes is %d; need at least 1", n_classes);
    return 0;
}

/* How many classes rank above `label` when classes are ordered by score,
 * higher first, equal scores by lower index first. 0 means a correct top-1
 * prediction, < 5 a correct top-5 one; with five or fewer classes the count
 * can never reach 5, which is the "label is among them" convention. */
static int classes_above(const double *score, int n_classes, int label)
{
    int above = 0;
    for (int c = 0; c < n_classes; c++)
        if (score[c] > score[label] || (score[c] == score[label] && c < label))
            above++;
    return above;
}

/* ------------------------------------------------------------------------ */
/* k-NN probe                                                                */

/* Test rows per similarity block: enough rows for sgemm to run at speed,
 * while the block's (rows x n_train) similarities stay within a fixed
 * budget however large the training split is. Each block is cut into
 * pieces of KNN_PIECE_ROWS, one single-threaded sgemm each. */
#define KNN_BLOCK_ROWS 256
#define KNN_PIECE_ROWS 16
#define KNN_MAX_BLOCK_FLOATS ((size_t)1 << 24) /* 64 MiB of similarities */

/* Copies rows scaled to unit L2 norm, so a dot product is the cosine. An
 * all-zero row stays zero: it is equally dissimilar to everything rather
 * than a division by zero. */
static float *unit_rows(const char *which, const float *x, int n, int dim, D2vError *err)
{
    float *out = d2v_malloc((size_t)n * (size_t)dim * sizeof *out, err);
    if (!out)
        return NULL;
    for (int i = 0; i < n; i++) {
        const float *row = x + (size_t)i * dim;
        float *dst = out + (size_t)i * dim;
        double squares = 0;
        for (int d = 0; d < dim; d++)
            squares += (double)row[d] * row[d];
        if (!isfinite(squares)) {
            free(out);
            d2v_fail(err, "%s features: row %d has a non-finite value", which, i);
            return NULL;
        }
        float scale = squares > 0 ? (float)(1.0 / sqrt(squares)) : 0.0f;
        for (int d = 0; d < dim; d++)
            dst[d] = row[d] * scale;
    }
    return out;
}

/* Keeps the k largest of sims[0..n) in val/idx, best first. Rows arrive in
 * index order and a candidate has to beat the current k-th strictly, so
 * among equal similarities the lower training index keeps its place. */
static void top_k(const float *sims, int n, int k, int *idx, float *val)
{
    int have = 0;
    for (int j = 0; j < n; j++) {
        float s = sims[j];
        if (have == k && !(s > val[k - 1]))
            continue;
        int pos = have < k ? have++ : k - 1;
        while (pos > 0 && val[pos - 1] < s) {
            val[pos] = val[pos - 1];
            idx[pos] = idx[pos - 1];
            pos--;
        }
        val[pos] = s;
        idx[pos] = j;
    }
}

int knn_probe(const float *train, const int *train_labels, int n_train, const float *test, const int *test_labels,
              int n_test, int dim, int n_classes, int k, double temperature, ProbeResult *out, D2vError *err)
{
    if (check_shape(dim, n_classes, err) || check_split("train", train, train_labels, n_train, n_classes, err) ||
        check_split("test", test, test_labels, n_test, n_classes, err))
        return -1;
    if (k < 1)
        return d2v_fail(err, "k-NN: k is %d; need at least 1", k);
    if (!(temperature > 0) || !isfinite(temperature))
        return d2v_fail(err, "k-NN: temperature is %g; need a positive finite number", temperature);
    if (!out)
        return d2v_fail(err, "k-NN: result pointer is NULL");
    if (k > n_train)
        k = n_train;

    size_t rows_in_budget = KNN_MAX_BLOCK_FLOATS / (size_t)n_train;
    int block = rows_in_budget < KNN_BLOCK_ROWS ? (int)rows_in_budget : KNN_BLOCK_ROWS;
    if (block < 1)
        block = 1;
    if (block > n_test)
        block = n_test;

    int rc = -1;
    float *train_unit = unit_rows("train", train, n_train, dim, err);
    float *test_unit = train_unit ? unit_rows("test", test, n_test, dim, err) : NULL;
    float *sims = NULL, *nbr_sim = NULL;
    int *nbr_idx = NULL;
    double *votes = NULL;
    long long hits1 = 0, hits5 = 0;
    if (!test_unit)
        goto done;
    sims = d2v_malloc((size_t)block * (size_t)n_train * sizeof *sims, err);
    nbr_sim = sims ? d2v_malloc((size_t)block * (size_t)k * sizeof *nbr_sim, err) : NULL;
    nbr_idx = nbr_sim ? d2v_malloc((size_t)block * (size_t)k * sizeof *nbr_idx, err) : NULL;
    votes = nbr_idx ? d2v_malloc((size_t)block * (size_t)n_classes * sizeof *votes, err) : NULL;
    if (!votes)
        goto done;

    for (int start = 0; start < n_test; start += block) {
        int rows = n_test - start < block ? n_test - start : block;
        int pieces = (rows + KNN_PIECE_ROWS - 1) / KNN_PIECE_ROWS;
#pragma omp parallel for schedule(static) reduction(+ : hits1, hits5)
        for (int piece = 0; piece < pieces; piece++) {
            int first = piece * KNN_PIECE_ROWS;
            int last = first + KNN_PIECE_ROWS < rows ? first + KNN_PIECE_ROWS : rows;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, last - first, n_train, dim, 1.0f,
                        test_unit + (size_t)(start + first) * dim, dim, train_unit, dim, 0.0f,
                        sims + (size_t)first * n_train, n_train);
            for (int r = first; r < last; r++) {
                int *idx = nbr_idx + (size_t)r * k;
                float *val = nbr_sim + (size_t)r * k;
                double *score = votes + (size_t)r * n_classes;
                top_k(sims + (size_t)r * n_train, n_train, k, idx, val);
                for (int c = 0; c < n_classes; c++)
                    score[c] = 0;
                /* Weight exp(sim / T) as DINO's eval_knn, measured from the
                 * best neighbour: dividing every weight by exp(best / T)
                 * leaves the class ranking unchanged and keeps a small T
                 * from overflowing. */
                for (int j = 0; j < k; j++)
                    score[train_labels[idx[j]]] += exp(((double)val[j] - val[0]) / temperature);
                int above = classes_above(score, n_classes, test_labels[start + r]);
                hits1 += above == 0;
                hits5 += above < 5;
            }
        }
    }
    out->top1 = (double)hits1 / n_test;
    out->top5 = (double)hits5 / n_test;
    rc = 0;
done:
    free(votes);
    free(nbr_idx);
    free(nbr_sim);
    free(sims);
    free(test_unit);
    free(train_unit);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Linear probe                                                              */

/* The weight-decay grid, swept from strong to weak so each fit starts from
 * the previous solution (a regularisation path: neighbouring optima are
 * close, so warm starts save most of the iterations). */
static const double decay_grid[] = {1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6};
#define DECAY_GRID_SIZE ((int)(sizeof decay_grid / sizeof decay_grid[0]))
/* Used when the held-out part is empty (holdout_fraction 0, or every class
 * has a single row), so there is nothing to choose with. */
#define FALLBACK_DECAY 1e-4

#define STD_FLOOR 1e-6
/* Its own RNG stream, in the (kind << 48) numbering the loader uses for its
 * streams, so the split never shares random numbers with other uses of a seed. */
#define SPLIT_STREAM ((uint64_t)5 << 48)

/* L-BFGS settings. The history of 10 pairs is the usual choice. A fit stops
 * when the loss is within about LBFGS_LOSS_GAP of its minimum: the decay
 * makes the loss strongly convex with modulus `decay` in W, so loss -
 * minimum <= |g|^2 / (2 decay) (the undecayed bias is left to the
 * cross-entropy's own curvature). A fixed gradient tolerance instead would
 * end the weak-decay fits at once, where the gradient is tiny long before
 * the optimum. A fit also stops when a step gains less than float logits
 * can resolve, and after max_iter iterations. */
#define LBFGS_HISTORY 10
#define LBFGS_ARMIJO 1e-4
#define LBFGS_MAX_HALVINGS 40
#define LBFGS_LOSS_GAP 1e-6
#define LBFGS_LOSS_TOL 1e-9 /* on the relative decrease of the loss */

/* Fixed sgemm blocks for the linear probe (see the top of the file): the
 * logits in blocks of rows, the weight gradient in blocks of feature
 * columns, so each gradient entry is summed over all rows by one call. */
#define GEMM_ROW_BLOCK 256
#define GEMM_COL_BLOCK 32

/* Rows and labels of one part of the data, rows contiguous for sgemm. */
typedef struct {
    const float *x;
    const int *y;
    int n;
} Part;

/* Parameters are one vector theta = [W (C x D) row-major | b (C)], so the
 * optimiser can treat them as a flat vector. */
typedef struct {
    int dim, n_classes;
    size_t n_params;
    float *grad, *grad_new, *theta_new, *dir;
    float *hist_s, *hist_y;   /* LBFGS_HISTORY x n_params, a ring */
    double *hist_rho, *alpha;
    float *logits;            /* rows x C, for the largest part evaluated */
    double *row_loss;
    double *bias_sum;         /* C */
} Logreg;

/* On failure lr keeps what was allocated; logreg_free releases it. */
static int logreg_init(Logreg *lr, int dim, int n_classes, int max_rows, D2vError *err)
{
    lr->dim = dim;
    lr->n_classes = n_classes;
    lr->n_params = (size_t)n_classes * dim + n_classes;
    size_t p = lr->n_params;
    if (!(lr->grad = d2v_malloc(p * sizeof(float), err)) || !(lr->grad_new = d2v_malloc(p * sizeof(float), err)) ||
        !(lr->theta_new = d2v_malloc(p * sizeof(float), err)) || !(lr->dir = d2v_malloc(p * sizeof(float), err)) ||
        !(lr->hist_s = d2v_malloc(LBFGS_HISTORY * p * sizeof(float), err)) ||
        !(lr->hist_y = d2v_malloc(LBFGS_HISTORY * p * sizeof(float), err)) ||
        !(lr->hist_rho = d2v_malloc(LBFGS_HISTORY * sizeof(double), err)) ||
        !(lr->alpha = d2v_malloc(LBFGS_HISTORY * sizeof(double), err)) ||
        !(lr->logits = d2v_malloc((size_t)max_rows * n_classes * sizeof(float), err)) ||
        !(lr->row_loss = d2v_malloc((size_t)max_rows * sizeof(double), err)) ||
        !(lr->bias_sum = d2v_malloc((size_t)n_classes * sizeof(double), err)))
        return -1;
    return 0;
}

static void logreg_free(Logreg *lr)
{
    free(lr->grad);
    free(lr->grad_new);
    free(lr->theta_new);
    free(lr->dir);
    free(lr->hist_s);
    free(lr->hist_y);
    free(lr->hist_rho);
    free(lr->alpha);
    free(lr->logits);
    free(lr->row_loss);
    free(lr->bias_sum);
}

static double dot(const float *a, const float *b, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)a[i] * b[i];
    return sum;
}

/* logits = x W^T + b for row block b of n rows; returns its row count. */
static int block_logits(const Logreg *lr, const float *theta, const float *x, int n, int b)
{
    int C = lr->n_classes, D = lr->dim;
    int first = b * GEMM_ROW_BLOCK, rows = n - first < GEMM_ROW_BLOCK ? n - first : GEMM_ROW_BLOCK;
    const float *bias = theta + (size_t)C * D;
    float *out = lr->logits + (size_t)first * C;
    for (int i = 0; i < rows; i++)
        memcpy(out + (size_t)i * C, bias, (size_t)C * sizeof(float));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, C, D, 1.0f, x + (size_t)first * D, D, theta, D, 1.0f,
                out, C);
    return rows;
}

static int row_blocks(int n) { return (n + GEMM_ROW_BLOCK - 1) / GEMM_ROW_BLOCK; }

/* Mean cross-entropy + decay/2 ||W||^2 at theta, and its gradient into
 * grad. The bias is not decayed, as usual. */
static double objective(Logreg *lr, const float *theta, float *grad, const Part *part, double decay)
{
    int C = lr->n_classes, D = lr->dim, n = part->n;
    double inv_n = 1.0 / n;
    int blocks = row_blocks(n);
    /* Each row's logits become (softmax - onehot) / n in place: that is
     * d loss / d logits, which the gradient sgemm below needs. Done in the
     * same loop as the logits, so the pass has one parallel region. */
#pragma omp parallel for schedule(static)
    for (int b = 0; b < blocks; b++) {
        int rows = block_logits(lr, theta, part->x, n, b);
        for (int i = b * GEMM_ROW_BLOCK; i < b * GEMM_ROW_BLOCK + rows; i++) {
            float *z = lr->logits + (size_t)i * C;
            float top = z[0];
            for (int c = 1; c < C; c++)
                top = z[c] > top ? z[c] : top;
            double total = 0;
            for (int c = 0; c < C; c++)
                total += exp((double)z[c] - top);
            int label = part->y[i];
            lr->row_loss[i] = log(total) - ((double)z[label] - top);
            for (int c = 0; c < C; c++) {
                double p = exp((double)z[c] - top) / total;
                z[c] = (float)((p - (c == label)) * inv_n);
            }
        }
    }
    double loss = 0;
    for (int i = 0; i < n; i++) /* serially, so the sum has one order */
        loss += lr->row_loss[i];
    loss *= inv_n;

    /* grad W = dlogits^T x, one block of feature columns per call. */
    int col_blocks = (D + GEMM_COL_BLOCK - 1) / GEMM_COL_BLOCK;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < col_blocks; b++) {
        int first = b * GEMM_COL_BLOCK, cols = D - first < GEMM_COL_BLOCK ? D - first : GEMM_COL_BLOCK;
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, cols, n, 1.0f, lr->logits, C, part->x + first, D,
                    0.0f, grad + first, D);
    }
    for (int c = 0; c < C; c++)
        lr->bias_sum[c] = 0;
    for (int i = 0; i < n; i++)
        for (int c = 0; c < C; c++)
            lr->bias_sum[c] += lr->logits[(size_t)i * C + c];
    float *grad_bias = grad + (size_t)C * D;
    for (int c = 0; c < C; c++)
        grad_bias[c] = (float)lr->bias_sum[c];
    size_t n_weights = (size_t)C * D;
    loss += 0.5 * decay * dot(theta, theta, n_weights);
    for (size_t j = 0; j < n_weights; j++)
        grad[j] += (float)(decay * theta[j]);
    return loss;
}

/* Minimises the objective over `part` from the starting point in theta (a
 * warm start) by L-BFGS with a backtracking Armijo line search, for at most
 * max_iter iterations. The problem is smooth and, with decay > 0, strongly
 * convex, which is where L-BFGS converges in tens of iterations where
 * gradient descent would need thousands. Returns the iterations used. */
static int fit(Logreg *lr, float *theta, const Part *part, double decay, int max_iter)
{
    size_t P = lr->n_params;
    float *x = theta, *x_new = lr->theta_new, *g = lr->grad, *g_new = lr->grad_new, *d = lr->dir;
    double f = objective(lr, x, g, part, decay);
    int stored = 0, newest = -1; /* ring of (s, y) pairs */
    int iter = 0;
    for (; iter < max_iter; iter++) {
        if (dot(g, g, P) <= 2 * decay * LBFGS_LOSS_GAP)
            break;

        /* Two-loop recursion: d = -H g, with H the inverse-Hessian estimate
         * built from the stored pairs and scaled by s'y / y'y of the newest
         * one. With no pairs yet the step is -g scaled to unit length, so
         * the first trial is a sensible size whatever the gradient's. */
        for (size_t j = 0; j < P; j++)
            d[j] = -g[j];
        for (int m = 0; m < stored; m++) {
            int slot = (newest - m + LBFGS_HISTORY) % LBFGS_HISTORY;
            const float *s = lr->hist_s + (size_t)slot * P, *y = lr->hist_y + (size_t)slot * P;
            lr->alpha[slot] = lr->hist_rho[slot] * dot(s, d, P);
            float a = (float)lr->alpha[slot];
            for (size_t j = 0; j < P; j++)
                d[j] -= a * y[j];
        }
        double gamma;
        if (stored > 0) {
            const float *y = lr->hist_y + (size_t)newest * P;
            gamma = 1.0 / (lr->hist_rho[newest] * dot(y, y, P));
        } else {
            gamma = 1.0 / sqrt(dot(g, g, P));
        }
        for (size_t j = 0; j < P; j++)
            d[j] = (float)(gamma * d[j]);
        for (int m = stored - 1; m >= 0; m--) {
            int slot = (newest - m + LBFGS_HISTORY) % LBFGS_HISTORY;
            const float *s = lr->hist_s + (size_t)slot * P, *y = lr->hist_y + (size_t)slot * P;
            float b = (float)(lr->alpha[slot] - lr->hist_rho[slot] * dot(y, d, P));
            for (size_t j = 0; j < P; j++)
                d[j] += b * s[j];
        }
        double slope = dot(g, d, P);
        if (!(slope < 0)) {
            /* Rounding spoiled the estimate; start the history over. */
            stored = 0;
            gamma = 1.0 / sqrt(dot(g, g, P));
            for (size_t j = 0; j < P; j++)
                d[j] = (float)(-gamma * g[j]);
            slope = dot(g, d, P);
        }

        double step = 1.0, f_new = f;
        int accepted = 0;
        for (int halving = 0; halving < LBFGS_MAX_HALVINGS; halving++, step *= 0.5) {
            for (size_t j = 0; j < P; j++)
                x_new[j] = x[j] + (float)step * d[j];
            f_new = objective(lr, x_new, g_new, part, decay);
            if (f_new <= f + LBFGS_ARMIJO * step * slope) {
                accepted = 1;
                break;
            }
        }
        if (!accepted)
            break; /* no decrease float precision can show: as good as it gets */

        /* Keep the pair only if it has positive curvature, which keeps H
         * positive definite (it always holds for a convex loss up to
         * rounding). */
        int slot = (newest + 1) % LBFGS_HISTORY;
        float *s = lr->hist_s + (size_t)slot * P, *y = lr->hist_y + (size_t)slot * P;
        for (size_t j = 0; j < P; j++) {
            s[j] = x_new[j] - x[j];
            y[j] = g_new[j] - g[j];
        }
        double sy = dot(s, y, P), yy = dot(y, y, P);
        if (sy > 1e-10 * yy && yy > 0) {
            lr->hist_rho[slot] = 1.0 / sy;
            newest = slot;
            stored += stored < LBFGS_HISTORY;
        }

        double decrease = f - f_new;
        float *swap = x;
        x = x_new;
        x_new = swap;
        swap = g;
        g = g_new;
        g_new = swap;
        f = f_new;
        if (decrease <= LBFGS_LOSS_TOL * (fabs(f) > 1 ? fabs(f) : 1)) {
            iter++;
            break;
        }
    }
    /* x and x_new traded places at every step, so the result may sit in
     * the scratch buffer. */
    if (x != theta)
        memcpy(theta, x, P * sizeof(float));
    return iter;
}

/* classes_above for a row of float logits, same order and tie rule. */
static int logits_above(const float *z, int n_classes, int label)
{
    int above = 0;
    for (int c = 0; c < n_classes; c++)
        if (z[c] > z[label] || (z[c] == z[label] && c < label))
            above++;
    return above;
}

/* Top-1 and top-5 accuracy of the model on `part`. */
static void evaluate(Logreg *lr, const float *theta, const Part *part, double *top1, double *top5)
{
    int C = lr->n_classes, blocks = row_blocks(part->n);
    long long hits1 = 0, hits5 = 0;
#pragma omp parallel for schedule(static) reduction(+ : hits1, hits5)
    for (int b = 0; b < blocks; b++) {
        int rows = block_logits(lr, theta, part->x, part->n, b);
        for (int i = b * GEMM_ROW_BLOCK; i < b * GEMM_ROW_BLOCK + rows; i++) {
            int above = logits_above(lr->logits + (size_t)i * C, C, part->y[i]);
            hits1 += above == 0;
            hits5 += above < 5;
        }
    }
    *top1 = part->n ? (double)hits1 / part->n : 0;
    *top5 = part->n ? (double)hits5 / part->n : 0;
}

/* Copies of train and test standardised by the training mean and std. A
 * constant training feature gets std = STD_FLOOR; it is then 0 on every
 * training row, so its weights get no gradient and stay exactly 0, and
 * whatever it is on test rows cannot reach the logits. */
static int standardize(const float *train, int n_train, const float *test, int n_test, int dim, float **train_out,
                       float **test_out, D2vError *err)
{
    double *mean = d2v_calloc((size_t)dim, sizeof *mean, err);
    double *scale = mean ? d2v_calloc((size_t)dim, sizeof *scale, err) : NULL; /* first the variance */
    float *a = scale ? d2v_malloc((size_t)n_train * dim * sizeof *a, err) : NULL;
    float *b = a ? d2v_malloc((size_t)n_test * dim * sizeof *b, err) : NULL;
    int rc = -1;
    if (!b)
        goto done;
    for (int i = 0; i < n_train; i++)
        for (int d = 0; d < dim; d++)
            mean[d] += train[(size_t)i * dim + d];
    for (int d = 0; d < dim; d++)
        mean[d] /= n_train;
    /* Two passes: subtracting the mean first avoids the cancellation of
     * E[x^2] - E[x]^2 on features with a large offset. */
    for (int i = 0; i < n_train; i++)
        for (int d = 0; d < dim; d++) {
            double centred = train[(size_t)i * dim + d] - mean[d];
            scale[d] += centred * centred;
        }
    for (int d = 0; d < dim; d++) {
        if (!isfinite(scale[d])) {
            d2v_fail(err, "linear probe: train feature %d has a non-finite value", d);
            goto done;
        }
        double std = sqrt(scale[d] / n_train);
        scale[d] = 1.0 / (std > STD_FLOOR ? std : STD_FLOOR);
    }
    for (size_t j = 0; j < (size_t)n_train * dim; j++)
        a[j] = (float)((train[j] - mean[j % dim]) * scale[j % dim]);
    for (size_t j = 0; j < (size_t)n_test * dim; j++) {
        if (!isfinite(test[j])) {
            d2v_fail(err, "linear probe: test row %zu has a non-finite value", j / dim);
            goto done;
        }
        b[j] = (float)((test[j] - mean[j % dim]) * scale[j % dim]);
    }
    *train_out = a;
    *test_out = b;
    a = b = NULL;
    rc = 0;
done:
    free(b);
    free(a);
    free(scale);
    free(mean);
    return rc;
}

/* Marks about `fraction` of each class's rows as held out. The rows of a
 * class are shuffled with the seed and the first ones taken, so the held-out
 * part keeps the class balance of the whole and depends only on (seed,
 * labels). Every class keeps at least one row for training. */
static int choose_holdout(const int *labels, int n, int n_classes, double fraction, uint64_t seed,
                          unsigned char *held, D2vError *err)
{
    int *count = d2v_calloc((size_t)n_classes + 1, sizeof *count, err);
    int *order = count ? d2v_malloc((size_t)n * sizeof *order, err) : NULL;
    if (!order) {
        free(count);
        return -1;
    }
    /* Counting sort by class, rows of a class in index order. */
    for (int i = 0; i < n; i++)
        count[labels[i] + 1]++;
    for (int c = 0; c < n_classes; c++)
        count[c + 1] += count[c];
    int *fill = d2v_malloc((size_t)n_classes * sizeof *fill, err);
    if (!fill) {
        free(order);
        free(count);
        return -1;
    }
    memcpy(fill, count, (size_t)n_classes * sizeof *fill);
    for (int i = 0; i < n; i++)
        order[fill[labels[i]]++] = i;
    free(fill);

    memset(held, 0, (size_t)n);
    Rng rng;
    rng_init(&rng, seed, SPLIT_STREAM);
    for (int c = 0; c < n_classes; c++) {
        int *rows = order + count[c], n_rows = count[c + 1] - count[c];
        for (int i = n_rows - 1; i > 0; i--) { /* Fisher-Yates */
            int j = (int)rng_below(&rng, (uint32_t)i + 1);
            int t = rows[i];
            rows[i] = rows[j];
            rows[j] = t;
        }
        int n_held = (int)floor(fraction * n_rows + 0.5);
        if (n_held > n_rows - 1)
            n_held = n_rows - 1;
        for (int i = 0; i < n_held; i++)
            held[rows[i]] = 1;
    }
    free(order);
    free(count);
    return 0;
}

/* Copies of the rows whose `held` flag equals `want`, in index order. */
typedef struct {
    float *x;
    int *y;
    int n;
} Gathered;

static int gather(const float *x, const int *y, int n, int dim, const unsigned char *held, int want,
                  Gathered *out, D2vError *err)
{
    int m = 0;
    for (int i = 0; i < n; i++)
        m += held[i] == want;
    out->n = m;
    out->x = d2v_malloc((size_t)m * dim * sizeof *out->x, err);
    out->y = out->x ? d2v_malloc((size_t)m * sizeof *out->y, err) : NULL;
    if (!out->y)
        return -1;
    for (int i = 0, r = 0; i < n; i++)
        if (held[i] == want) {
            memcpy(out->x + (size_t)r * dim, x + (size_t)i * dim, (size_t)dim * sizeof *out->x);
            out->y[r++] = y[i];
        }
    return 0;
}

int linear_probe(const float *train, const int *train_labels, int n_train, const float *test, const int *test_labels,
                 int n_test, int dim, int n_classes, const LinearProbeOptions *opt, ProbeResult *out,
                 double *chosen_decay, D2vError *err)
{
    if (check_shape(dim, n_classes, err) || check_split("train", train, train_labels, n_train, n_classes, err) ||
        check_split("test", test, test_labels, n_test, n_classes, err))
        return -1;
    if (!opt || !out)
        return d2v_fail(err, "linear probe: options or result pointer is NULL");
    if (!(opt->holdout_fraction >= 0 && opt->holdout_fraction < 1))
        return d2v_fail(err, "linear probe: holdout_fraction is %g; need 0 <= fraction < 1", opt->holdout_fraction);
    if (opt->epochs < 1)
        return d2v_fail(err, "linear probe: epochs is %d; need at least 1", opt->epochs);
    if ((size_t)n_classes * (size_t)dim > (size_t)INT32_MAX)
        return d2v_fail(err, "linear probe: %d classes x %d features is too many weights", n_classes, dim);

    int rc = -1;
    float *train_std = NULL, *test_std = NULL, *theta = NULL, *best_theta = NULL;
    unsigned char *held = NULL;
    Gathered fit_rows = {0}, held_rows = {0};
    Logreg lr = {0}; /* freeable whatever logreg_init managed */
    Part fit_part, held_part, all_train, all_test;
    double decay = FALLBACK_DECAY, best_acc = -1;
    int iters;
    if (standardize(train, n_train, test, n_test, dim, &train_std, &test_std, err) != 0)
        goto done;
    held = d2v_malloc((size_t)n_train, err);
    if (!held || choose_holdout(train_labels, n_train, n_classes, opt->holdout_fraction, opt->seed, held, err) ||
        gather(train_std, train_labels, n_train, dim, held, 0, &fit_rows, err) ||
        gather(train_std, train_labels, n_train, dim, held, 1, &held_rows, err))
        goto done;
    if (logreg_init(&lr, dim, n_classes, n_train > n_test ? n_train : n_test, err) != 0)
        goto done;
    theta = d2v_calloc(lr.n_params, sizeof *theta, err);
    best_theta = theta ? d2v_calloc(lr.n_params, sizeof *best_theta, err) : NULL;
    if (!best_theta)
        goto done;

    fit_part = (Part){fit_rows.x, fit_rows.y, fit_rows.n};
    held_part = (Part){held_rows.x, held_rows.y, held_rows.n};
    all_train = (Part){train_std, train_labels, n_train};
    all_test = (Part){test_std, test_labels, n_test};
    if (held_part.n > 0) {
        for (int g = 0; g < DECAY_GRID_SIZE; g++) {
            iters = fit(&lr, theta, &fit_part, decay_grid[g], opt->epochs);
            double acc, unused;
            evaluate(&lr, theta, &held_part, &acc, &unused);
            if (opt->verbose)
                fprintf(stderr, "linear probe: decay %-6g held-out top-1 %.4f (%d iterations, %d fit / %d held out)\n",
                        decay_grid[g], acc, iters, fit_part.n, held_part.n);
            /* The grid runs from strong to weak, so keeping the first of
             * equal accuracies prefers the larger decay. */
            if (acc > best_acc) {
                best_acc = acc;
                decay = decay_grid[g];
                memcpy(best_theta, theta, lr.n_params * sizeof *theta);
            }
        }
    } else if (opt->verbose) {
        fprintf(stderr, "linear probe: nothing held out, using decay %g\n", decay);
    }

    /* Retrain on the whole training split, warm-started at the chosen fit. */
    iters = fit(&lr, best_theta, &all_train, decay, opt->epochs);
    evaluate(&lr, best_theta, &all_test, &out->top1, &out->top5);
    if (opt->verbose)
        fprintf(stderr, "linear probe: decay %g on all %d rows (%d iterations): test top-1 %.4f top-5 %.4f\n", decay,
                n_train, iters, out->top1, out->top5);
    if (chosen_decay)
        *chosen_decay = decay;
    rc = 0;
done:
    logreg_free(&lr);
    free(best_theta);
    free(theta);
    free(held_rows.x);
    free(held_rows.y);
    free(fit_rows.x);
    free(fit_rows.y);
    free(held);
    free(test_std);
    free(train_std);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* .npy export                                                               */

#define NPY_ALIGN 64
#define NPY_PREAMBLE 10 /* magic (6) + version (2) + header length (2) */

/* Writes floats as little-endian bytes whatever the host's byte order, in
 * chunks so no copy of the whole array is needed. */
static int write_f32_le(FILE *fp, const float *data, size_t count)
{
    enum { CHUNK = 4096 };
    unsigned char bytes[4 * CHUNK];
    for (size_t done = 0; done < count;) {
        size_t m = count - done < CHUNK ? count - done : CHUNK;
        for (size_t i = 0; i < m; i++) {
            uint32_t bits;
            memcpy(&bits, data + done + i, sizeof bits);
            bytes[4 * i + 0] = (unsigned char)bits;
            bytes[4 * i + 1] = (unsigned char)(bits >> 8);
            bytes[4 * i + 2] = (unsigned char)(bits >> 16);
            bytes[4 * i + 3] = (unsigned char)(bits >> 24);
        }
        if (fwrite(bytes, 4, m, fp) != m)
            return -1;
        done += m;
    }
    return 0;
}

/* The rename is durable only once the directory entry is on disk too. */
static int fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash)
        dir = strdup(".");
    else if (slash == path)
        dir = strdup("/");
    else
        dir = strndup(path, (size_t)(slash - path));
    if (!dir)
        return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -1;
    /* Some filesystems cannot fsync a directory and say EINVAL; the rename
     * has happened and there is nothing more to do there. */
    int rc = (fsync(fd) == 0 || errno == EINVAL) ? 0 : -1;
    int saved = errno;
    close(fd);
    errno = saved;
    return rc;
}

int npy_write_f32(const char *path, const float *data, int64_t rows, int64_t cols, D2vError *err)
{
    if (!path || !*path)
        return d2v_fail(err, "writing .npy: empty path");
    if (rows < 0 || cols < 0)
        return d2v_fail(err, "writing %s: negative shape (%" PRId64 ", %" PRId64 ")", path, rows, cols);
    if (cols > 0 && (uint64_t)rows > (uint64_t)(SIZE_MAX / 4) / (uint64_t)cols)
        return d2v_fail(err, "writing %s: shape (%" PRId64 ", %" PRId64 ") is too large", path, rows, cols);
    size_t count = (size_t)rows * (size_t)cols;
    if (!data && count > 0)
        return d2v_fail(err, "writing %s: data pointer is NULL", path);

    /* The header dict as NumPy writes it, then spaces and a newline so that
     * the data starts at a multiple of 64 bytes, as format 1.0 asks. */
    char header[256];
    int dict_len = snprintf(header + NPY_PREAMBLE, sizeof header - NPY_PREAMBLE,
                            "{'descr': '<f4', 'fortran_order': False, 'shape': (%" PRId64 ", %" PRId64 "), }", rows,
                            cols);
    size_t total = ((size_t)NPY_PREAMBLE + (size_t)dict_len + 1 + NPY_ALIGN - 1) / NPY_ALIGN * NPY_ALIGN;
    memcpy(header, "\x93NUMPY\x01\x00", 8);
    header[8] = (char)((total - NPY_PREAMBLE) & 0xff);
    header[9] = (char)((total - NPY_PREAMBLE) >> 8);
    memset(header + NPY_PREAMBLE + dict_len, ' ', total - NPY_PREAMBLE - (size_t)dict_len - 1);
    header[total - 1] = '\n';

    int tmp_len = snprintf(NULL, 0, "%s.tmp.%ld", path, (long)getpid());
    char *tmp = d2v_malloc((size_t)tmp_len + 1, err);
    if (!tmp)
        return -1;
    snprintf(tmp, (size_t)tmp_len + 1, "%s.tmp.%ld", path, (long)getpid());

    errno = 0;
    FILE *fp = fopen(tmp, "wb");
    int ok = fp != NULL;
    ok = ok && fwrite(header, 1, total, fp) == total && write_f32_le(fp, data, count) == 0;
    /* stdio buffers, so a full disk may only show at fflush; fsync makes the
     * bytes durable before the rename publishes them. */
    ok = ok && fflush(fp) == 0 && fsync(fileno(fp)) == 0;
    int saved = errno;
    if (fp && fclose(fp) != 0 && ok) {
        ok = 0;
        saved = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = 0;
        saved = errno;
    }
    if (!ok) {
        unlink(tmp); /* best effort: the message says what went wrong */
        free(tmp);
        return d2v_fail(err, "writing %s: %s", path, strerror(saved ? saved : EIO));
    }
    free(tmp);
    if (fsync_parent(path) != 0)
        return d2v_fail(err, "writing %s: %s", path, strerror(errno ? errno : EIO));
    return 0;
}
