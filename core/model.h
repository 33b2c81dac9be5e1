/* model.h — one data2vec model put together: the objective (Transformer +
 * head, data2vec.h), a modality's front-end, their parameters in one store
 * and their activations in one arena, sized once for B x N. The front-end's
 * scratch shares the arena's tail with the encoder's activations. */
#ifndef D2V_MODEL_H
#define D2V_MODEL_H

#include "data2vec.h"
#include "modality.h"

typedef struct {
    Data2vec d2v;
    ParamStore ps;
    const Modality *mod;
    void *frontend;
    Arena arena;
    Data2vecActs acts;
    real *d_x;         /* (B,N,D) gradient into the front-end */
    int B, N;
} Model;

/* Registers, allocates and initialises (seeded by train.seed), and lays out
 * activations for batches of up to B. */
int model_build(Model *m, const D2vConfig *cfg, const Modality *mod, const void *mcfg, int B, int threads,
                D2vError *err);
/* Frees the front-end, parameters and arena (a zeroed Model is fine). */
void model_free(Model *m);

#endif
