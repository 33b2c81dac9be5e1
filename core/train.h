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
    int64_t skipped;       /* unreadable inputs replaced so far */
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
    void (*warn)(void *ctx, const char *msg);
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

/* One full training step (DESIGN §3 steps 2-6): front-end forward with the
 * mask, teacher targets, student forward/backward with head and loss,
 * front-end backward, clipping, AdamW, EMA. The one step function both
 * `d2v pretrain` and `d2v bench` run; times may be NULL. */
void train_step(Model *m, const D2vConfig *cfg, const AdamW *adamw, const Schedule *sched, const Batch *batch,
                int64_t step, StepResult *r, StepTimes *times);

/* Runs until train.steps updates are done (or a stop is requested, after
 * which it checkpoints and returns 0). Errors (bad data with on_error=fail,
 * a non-finite loss, collapse, a failed write) return -1 with a message. */
int train_run(const TrainOptions *opt, D2vError *err);

/* Applies train.threads to OpenMP and OpenBLAS; returns the count used. */
int train_set_threads(int64_t threads);

#endif
