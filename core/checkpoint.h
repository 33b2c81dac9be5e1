/* checkpoint.h — a training run in one safetensors file (DESIGN §5):
 *   <name>            student tensors
 *   teacher.<name>    the EMA teacher (Transformer tensors only)
 *   optim.m.<name>, optim.v.<name>   AdamW moments
 *   __metadata__      format, format_version, step, rng, world_size, the
 *                     resolved config text, d2v version, and, once a
 *                     periodic k-NN evaluation has run, best_knn and
 *                     best_knn_step (the best top-1 so far and its step)
 * Written atomically (safetensors.h): a crash leaves the previous file. */
#ifndef D2V_CHECKPOINT_H
#define D2V_CHECKPOINT_H

#include "params.h"
#include "rng.h"

#define CHECKPOINT_FORMAT "d2v-checkpoint"
#define CHECKPOINT_VERSION 1

typedef struct {
    int64_t step;   /* optimizer updates done */
    Rng rng;        /* the run's sequential RNG (masking, data order) */
    int world;      /* data-parallel ranks that wrote it; 0: not recorded
                       (metadata "world_size", absent before issue 8) */
    int64_t best_knn_step; /* step of the best periodic k-NN so far; 0: none yet */
    double best_knn;       /* its top-1 (eval.every, train.h) */
} TrainState;

/* Writes ps (student, teacher, moments), state and config_text to path, atomically. */
int checkpoint_save(const char *path, const ParamStore *ps, const TrainState *state, const char *config_text,
                    D2vError *err);

/* Reads only the embedded config text (to build the model before loading
 * tensors). Caller frees *config_text. */
int checkpoint_read_config(const char *path, char **config_text, D2vError *err);

/* Loads every tensor of ps (student, teacher, moments) and, when state is
 * not NULL, the training state. Every tensor must be present with its exact
 * shape and dtype F32; a tensor the model does not have is an error too (a
 * checkpoint of another model). */
int checkpoint_load(const char *path, ParamStore *ps, TrainState *state, D2vError *err);

/* Reads only the training state (step, rng, best k-NN) from the metadata. */
int checkpoint_read_state(const char *path, TrainState *state, D2vError *err);

#endif
