/* optim.h — AdamW, gradient clipping and learning-rate schedules (DESIGN §4).
 * Each is one pass over the contiguous buffers of the parameter store. */
#ifndef D2V_OPTIM_H
#define D2V_OPTIM_H

#include "config.h"
#include "params.h"

typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
} AdamW;

/* Whether a tensor is decayed is a rule, not a list: matrices of weights
 * are; biases, norm gains and embeddings (positions, CLS, mask, tokens) are
 * not (as fairseq's and timm's no-decay groups). */
int param_decays(const Param *p);

/* One AdamW update (Loshchilov & Hutter), PyTorch's formula: decoupled decay
 * p -= lr*wd*p, then p -= lr * m_hat / (sqrt(v_hat) + eps). t counts updates
 * from 1 (bias correction). */
void adamw_step(ParamStore *ps, const AdamW *opt, double lr, int64_t t);

/* Global L2 norm of the gradient; when max_norm > 0 and the norm exceeds it,
 * scales the gradient by max_norm / (norm + 1e-6) (torch's clip_grad_norm_).
 * Returns the norm before clipping. */
double clip_grad_norm(ParamStore *ps, double max_norm);
/* The two halves of clip_grad_norm, for a caller that must look at the norm
 * (is it finite?) before anything is scaled. */
double grad_global_norm(const ParamStore *ps);
/* Scales every gradient by max_norm / norm when norm exceeds max_norm (0: no clipping). */
void clip_grad_to(ParamStore *ps, double norm, double max_norm);

typedef enum { SCHEDULE_COSINE, SCHEDULE_TRI_STAGE, SCHEDULE_CONSTANT } ScheduleKind;

typedef struct {
    ScheduleKind kind;
    double peak_lr;
    int64_t total_steps, warmup_steps, hold_steps, decay_steps;
    double init_lr, final_lr, min_lr;
} Schedule;

/* Fills the LR schedule (kind, peak, warm-up, hold, decay) from [optim] and train.steps. */
void schedule_from_config(Schedule *s, const D2vConfig *cfg);
/* Learning rate for update u (0-based). Warm-up is linear and reaches the
 * peak at its last step, (u+1)/warmup, so no update is spent at lr 0. */
double schedule_lr(const Schedule *s, int64_t u);

#endif
