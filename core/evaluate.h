/* evaluate.h — a labeled train/test pair embedded by a frozen model and
 * probed: what `d2v eval`, `d2v embed` and the periodic k-NN of
 * `d2v pretrain` (eval.every) share, so the number pretraining logs for a
 * checkpoint is the number `d2v eval knn --checkpoint` prints for it. */
#ifndef D2V_EVALUATE_H
#define D2V_EVALUATE_H

#include "pooling.h"
#include "probe.h"

/* The k-NN vote temperature (DINO's protocol). */
#define KNN_TEMPERATURE 0.07

/* One dataset and a feature row per item. */
typedef struct {
    const Modality *mod;
    void *dataset;
    int n, dim, n_classes;
    const char *const *class_names;
    float *features;
    int *labels;
} FeatureSet;

/* Opens path (labeled: class subdirectories, or label<TAB>text for text) and
 * allocates n rows of dim features. */
int feature_set_open(FeatureSet *f, const Modality *mod, const void *mcfg, const char *path, int labeled, int dim,
                     D2vError *err);
/* Every item through the model (extract_features), batch_size <= m->B. */
int feature_set_embed(FeatureSet *f, Model *m, const void *mcfg, Pool pool, int batch_size, D2vError *err);
/* Reads every item once without a model (the evaluation transform), so an
 * unreadable file is an error now rather than at the first embedding. */
int feature_set_check(FeatureSet *f, const void *mcfg, int batch_size, D2vError *err);
void feature_set_free(FeatureSet *f);

typedef struct {
    FeatureSet train, test;
} EvalSets;

/* Opens both sets; they must have the same classes. */
int eval_sets_open(EvalSets *e, const Modality *mod, const void *mcfg, const char *train, const char *test, int dim,
                   D2vError *err);
int eval_sets_embed(EvalSets *e, Model *m, const void *mcfg, Pool pool, int batch_size, D2vError *err);
/* Embeds both sets and runs the cosine k-NN probe (KNN_TEMPERATURE). */
int eval_knn(EvalSets *e, Model *m, const void *mcfg, Pool pool, int batch_size, int k, ProbeResult *out,
             D2vError *err);
void eval_sets_close(EvalSets *e);

#endif
