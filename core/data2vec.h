/* data2vec.h — the objective (Baevski et al. 2022, §3; DESIGN §1, §3).
 *
 * A student encoder sees the masked input; an EMA teacher sees the whole
 * input. The target at position t is the average of the teacher's top K
 * block outputs, each normalised first (paper eq. 2):
 *     y_t = 1/K sum_{l=L-K+1..L} norm(a_t^l)
 * and the student regresses y at the masked positions through a small head
 * with Smooth L1 (eq. 3). Only the student gets gradients; the teacher
 * follows by EMA (ema.h). This file knows nothing about any modality: it
 * takes the front-end's output x (B,N,D) and gives back dLoss/dx. */
#ifndef D2V_DATA2VEC_H
#define D2V_DATA2VEC_H

#include "config.h"
#include "transformer.h"

typedef enum { NORM_NONE, NORM_LAYER, NORM_INSTANCE } TargetNorm;

typedef struct {
    Transformer encoder;
    int top_k;
    TargetNorm layer_norm;  /* per averaged layer */
    TargetNorm final_norm;  /* on the average */
    int tap_block_end;      /* 0: FFN output before the last residual (paper); 1: block end */
    real loss_beta, loss_scale;
    int head_mlp;           /* 0: Linear(D,D); 1: Linear(D,2D)-GELU-Linear(2D,D) (text) */
    /* 0 (d2v_register's default): the gradient is that of the loss as a
     * mean over this batch's masked positions. > 0: of the per-position sum
     * divided by this instead. The training loop uses 1 (the sum) when a step
     * spans ranks or micro-batches and divides by the global count after
     * the all-reduce. stats->loss is always this batch's mean. */
    double loss_denominator;
    size_t head_w1, head_b1, head_w2, head_b2;
} Data2vec;

typedef struct {
    TransformerActs student, teacher;
    real *target_sum;          /* (M,D) the teacher's y at every position, until a student forward */
    real *tap_norm;            /* (M,D) one normalised layer */
    real *norm_mean, *norm_rstd;
    int *loss_rows;            /* the P rows that get the loss */
    real *targets, *head_in;   /* (P,D) gathered */
    real *head_hidden, *head_act; /* (P,2D) mlp head */
    real *pred;                /* (P,D) */
    real *d_pred, *d_head_in, *d_hidden, *d_output; /* d_head_in, d_output may share memory with
                                                      * d_pred, head_in */
} Data2vecActs;

typedef struct {
    double loss;
    double target_var, pred_var; /* mean over channels of the per-channel std */
    int n_loss;                  /* positions that got the loss */
} StepStats;

/* Builds the encoder and head from the config and registers their tensors. */
int d2v_register(Data2vec *m, ParamStore *ps, const D2vConfig *cfg, D2vError *err);
/* Resolves the encoder's and head's tensor offsets after params_alloc. */
void d2v_bind(Data2vec *m, const ParamStore *ps);
/* Lays out the activations for B x N inputs: the head's, then the
 * encoder's last; returns the arena offset where the encoder's begin (what
 * lies past it holds nothing between steps). The teacher's scratch and
 * target_sum share memory with the student's activations: run the teacher
 * (targets) before the student, as a step does; a student forward clobbers
 * the teacher's. */
size_t d2v_layout(Data2vecActs *a, Arena *arena, const Data2vec *m, int B, int N, int threads);

/* Step 4 of DESIGN §3: the teacher (weights ps->teacher, eval mode) on the
 * unmasked x_teacher (B,N,D) -> a->target_sum (B,N,D), eq. 2 with the
 * per-layer and final norms. Keeps nothing but two blocks of scratch. */
void d2v_teacher_targets(const Data2vec *m, const ParamStore *ps, Data2vecActs *a, const real *x_teacher,
                         const uint8_t *pad, int B, int N);
/* The same, also copying each of the top K normalised layers norm(a^l) into
 * layers (K,B,N,D), lowest layer first, when layers is not NULL (`d2v show
 * targets`: what is averaged). */
void d2v_teacher_targets_layers(const Data2vec *m, const ParamStore *ps, Data2vecActs *a, const real *x_teacher,
                                const uint8_t *pad, int B, int N, real *layers);

/* One forward and backward of the objective. x_student is the masked input
 * (B,N,D) and x_teacher the unmasked one; loss_mask (B,N) marks the positions
 * that get the loss; pad (B,N) marks padding (may be NULL). Accumulates the
 * parameter gradients into ps->grad and writes d_x_student (B,N,D) for the
 * front-end's backward. */
void d2v_step(const Data2vec *m, ParamStore *ps, Data2vecActs *a, const real *x_student, const real *x_teacher,
              const uint8_t *loss_mask, const uint8_t *pad, int B, int N, ForwardMode mode, real *d_x_student,
              StepStats *stats);

/* d2v_step without the teacher: the student's part, with a->target_sum
 * already filled by d2v_teacher_targets (so the two can be timed apart). */
void d2v_student_step(const Data2vec *m, ParamStore *ps, Data2vecActs *a, const real *x_student,
                      const uint8_t *loss_mask, const uint8_t *pad, int B, int N, ForwardMode mode, real *d_x_student,
                      StepStats *stats);

/* The matmul-dominated FLOPs of one step of the objective on B x N
 * positions with P of them in the loss (2*M*N*K per GEMM; the element-wise
 * work - norms, GELU, softmax, the optimizer - is left out). */
typedef struct {
    double teacher;  /* Transformer forward */
    double student;  /* Transformer forward + backward */
    double head;     /* regression head forward + backward */
} D2vFlops;
/* FLOPs of one objective step: B x N positions, P of them in the loss. */
D2vFlops d2v_flops(const Data2vec *m, int B, int N, int P);

/* fairseq's compute_var: mean over channels of sqrt(unbiased var + 1e-6)
 * over P rows (D,); rows with skip[i] != 0 are left out (skip may be NULL). */
double d2v_channel_std(const real *rows, const uint8_t *skip, int P, int D);

#endif
