/* train.h — the pretraining loop: load a batch, one data2vec step, clip,
 * AdamW, EMA, log, checkpoint (DESIGN §3). */
#ifndef D2V_TRAIN_H
#define D2V_TRAIN_H

#include "model.h"
#include "optim.h"

#include <signal.h>

typedef struct {
    int64_t step;          /* updates done, counting this one */
    int64_t total_steps;
    double loss, lr, tau, grad_norm;
    double target_var, pred_var, frontend_var;
    double positions_per_s, seconds;
    int n_loss;
    int64_t positions;     /* B x N of this step's batch (padding included): n_loss / positions is the masked share */
    int64_t skipped;       /* unreadable inputs replaced so far */
    int64_t nonfinite_skipped; /* updates not applied (train.on_nonfinite=skip) */
    int has_knn;           /* the periodic k-NN ran at this step (eval.every): */
    double knn, knn_top5;  /* its top-1 and top-5 */
    int new_best_knn;      /* knn beat every earlier one: best-knn.safetensors was written */
} StepLog;

typedef struct {
    const D2vConfig *cfg;
    const char *config_text;      /* the resolved config, stored in checkpoints */
    const Modality *mod;
    const void *mcfg;
    const char *data_path, *run_dir;
    int resume;
    volatile sig_atomic_t *stop_requested; /* set by cli/'s signal handler */
    void (*on_log)(void *ctx, const StepLog *log);
    void (*on_checkpoint)(void *ctx, const char *path);
    void (*warn)(void *ctx, const char *msg);   /* an input skipped (data.on_error=skip) */
    void (*notice)(void *ctx, const char *msg); /* anything else worth a line: a skipped update, cleanup */
    void *ctx;
} TrainOptions;

/* What one step reports (train_step). */
typedef struct {
    double loss, target_var, pred_var, frontend_var, grad_norm, lr, tau;
    int n_loss;  /* positions that got the loss */
    int N;       /* positions per row in this batch */
} StepResult;

/* Wall-clock seconds of each phase of one step. */
typedef struct {
    double frontend_forward, teacher, student, frontend_backward, optimizer, ema;
} StepTimes;

/* One training step is these two calls (DESIGN §3): train_forward_backward
 * does steps 2-5 (front-end forward with the mask, teacher targets, student
 * forward and backward with head and loss, front-end backward) and sets
 * r->grad_norm; train_update does step 6 (clipping, AdamW, EMA) and sets
 * r->lr, r->tau. Between them the caller may refuse a non-finite step. Both
 * `d2v pretrain` and `d2v bench` run them; times may be NULL. */
void train_forward_backward(Model *m, const D2vConfig *cfg, const Batch *batch, int64_t step, StepResult *r,
                            StepTimes *times);
/* Step 6: clip, AdamW at the scheduled LR, then the EMA of the teacher (eq. 1). */
void train_update(Model *m, const D2vConfig *cfg, const AdamW *adamw, const Schedule *sched, int64_t step,
                  StepResult *r, StepTimes *times);

/* Data parallel (core/dist.h; one process when not under mpirun): each of
 * the N ranks takes batch_size / N rows of every step's batch, in
 * train.update_freq micro-batches; gradients and the step's statistics are
 * all-reduced, the loss normalised by the masked count over all ranks and
 * micro-batches, and every rank takes the same update. Only rank 0 writes
 * the run directory; a signal to any rank stops all of them after the same
 * step. A failed collective (a rank died, train.dist_timeout) is an error
 * like any other; cli/ then ends the whole job (dist_abort).
 *
 * Runs until train.steps updates are done and returns 0, or until a stop is
 * requested (*stop_requested set): then it finishes the step, checkpoints
 * and returns 1. Errors (bad data with on_error=fail, a non-finite loss or
 * gradient with on_nonfinite=stop, collapse, a failed write) return -1 with
 * a message naming the step and the last good checkpoint where it applies.
 * Counts in StepLog (skipped, nonfinite_skipped) start at 0 in each process.
 *
 * The run directory holds config.ini, log.jsonl, checkpoint-N.safetensors,
 * last.safetensors, pretrain.lock (held while a process trains there) and,
 * with eval.every > 0, best-knn.safetensors: every eval.every steps and at
 * the end the student is k-NN-probed on eval.train/eval.test exactly as
 * `d2v eval knn --checkpoint` would (evaluate.h), the score goes on that
 * step's log line, and a new best is saved there. The evaluation sets are
 * opened and read before the first step, so bad ones fail at once.
 * Starting, it deletes the NAME.tmp.<pid> files an interrupted write left,
 * counts the checkpoints on disk toward train.keep_last, and on --resume
 * cuts an incomplete last line from log.jsonl. */
int train_run(const TrainOptions *opt, D2vError *err);

/* Applies train.threads to OpenMP and OpenBLAS; returns the count used. */
int train_set_threads(int64_t threads);

#endif
