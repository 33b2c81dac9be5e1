/* params.h — the parameter store: every trainable tensor is a named view into
 * one contiguous buffer, and gradients, Adam moments and the EMA teacher are
 * parallel buffers with the same layout (DESIGN §7), so AdamW and EMA are
 * single passes over flat arrays.
 *
 * Tensors registered with in_teacher=1 (the Transformer) are laid out first,
 * so the teacher's copy is simply value[0 .. teacher_numel). */
#ifndef D2V_PARAMS_H
#define D2V_PARAMS_H

#include "common.h"
#include "real.h"

#define PARAM_NAME_LEN 96
#define PARAM_MAX_DIMS 4

/* What a tensor is decides whether weight decay applies (optim.c): only
 * PARAM_WEIGHT matrices decay; biases, norm gains and embeddings do not. */
typedef enum { PARAM_WEIGHT, PARAM_BIAS, PARAM_NORM, PARAM_EMBED } ParamKind;

/* How a tensor is initialised (as the reference implementations do). */
typedef enum {
    INIT_ZERO,
    INIT_ONE,
    INIT_TRUNC_NORMAL, /* N(0, std) truncated to [-2std, 2std] (BERT/ViT) */
    INIT_NORMAL,       /* N(0, std) */
    INIT_UNIFORM,      /* U(-scale, scale); PyTorch's Linear default is
                          scale = 1/sqrt(fan_in) for weight and bias */
    INIT_UNIFORM_POSITIVE, /* U(0, scale): wav2vec 2.0's mask embedding
                              (torch.FloatTensor(D).uniform_()) */
} ParamInit;

typedef struct {
    char name[PARAM_NAME_LEN];
    ParamKind kind;
    ParamInit init;
    float init_scale;    /* std for the normal inits, half-width for uniform */
    int in_teacher;      /* averaged into the EMA teacher */
    int ndim;
    int64_t shape[PARAM_MAX_DIMS];
    size_t numel;
    size_t offset;       /* into every buffer, assigned by params_alloc */
} Param;

typedef struct {
    Param *params;
    int count, cap;
    size_t numel;          /* all tensors */
    size_t teacher_numel;  /* the leading in_teacher block */
    real *value, *grad, *adam_m, *adam_v, *teacher;
} ParamStore;

/* Registers a tensor; returns its index (>= 0) or -1. Names must be unique. */
int params_add(ParamStore *ps, const char *name, ParamKind kind, int in_teacher,
               ParamInit init, float init_scale, int ndim, const int64_t *shape,
               D2vError *err);
/* Assigns offsets (teacher tensors first) and allocates the five buffers. */
int params_alloc(ParamStore *ps, D2vError *err);
/* Frees the store's buffers and tensor list. */
void params_free(ParamStore *ps);

/* Index of a tensor by name, or -1. */
int params_find(const ParamStore *ps, const char *name);

/* The student's value of tensor i. */
static inline real *params_value(const ParamStore *ps, int i) { return ps->value + ps->params[i].offset; }
/* The gradient of tensor i. */
static inline real *params_grad(const ParamStore *ps, int i) { return ps->grad + ps->params[i].offset; }
/* The teacher's copy of tensor i; only valid for in_teacher tensors. */
static inline real *params_teacher(const ParamStore *ps, int i) { return ps->teacher + ps->params[i].offset; }

struct Rng;
/* Fills value by each tensor's init rule from rng, then copies the student's
 * Transformer into the teacher (the teacher starts as the student, §1). */
void params_init(ParamStore *ps, struct Rng *rng);
/* Zeroes the gradient buffer (every tensor) before a step. */
void params_zero_grad(ParamStore *ps);

/* The first tensor (in registration order) with a NaN or infinity in
 * `buffer` (ps->grad, ps->value, ... : any buffer laid out like value), or -1
 * when all are finite; *n_bad (if not NULL) gets how many tensors have one.
 * Names the culprit when the training loop meets a non-finite update. */
int params_first_nonfinite(const ParamStore *ps, const real *buffer, int *n_bad);

#endif
