/* pooling.h — frozen features for downstream use: the whole dataset
 * through the front-end (no mask) and the encoder (eval mode, no dropout),
 * one pooled vector per item. */
#ifndef D2V_POOLING_H
#define D2V_POOLING_H

#include "model.h"

typedef enum {
    POOL_MEAN, /* mean over content positions of the student's last layer */
    POOL_CLS,  /* the CLS position (image) */
    POOL_TOPK, /* the teacher's averaged normalised top-K (the targets) */
} Pool;

/* "mean" | "cls" | "topk" -> *out; -1 for anything else. */
int pool_parse(const char *name, Pool *out);

/* features (n, D) and labels (n) for every item of the dataset, in order. */
int extract_features(Model *m, const void *mcfg, void *dataset, int batch_size, Pool pool, float *features,
                     int *labels, D2vError *err);

#endif
