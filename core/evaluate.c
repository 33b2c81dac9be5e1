#include "evaluate.h"

#include "loader.h"

#include <stdlib.h>
#include <string.h>

int feature_set_open(FeatureSet *f, const Modality *mod, const void *mcfg, const char *path, int labeled, int dim,
                     D2vError *err)
{
    memset(f, 0, sizeof *f);
    f->mod = mod;
    if (mod->open(mcfg, path, labeled, &f->dataset, err) < 0)
        return -1;
    f->n = mod->dataset_size(f->dataset);
    f->dim = dim;
    f->n_classes = mod->dataset_classes(f->dataset, &f->class_names);
    f->features = d2v_malloc((size_t)f->n * dim * sizeof(float), err);
    f->labels = d2v_malloc((size_t)f->n * sizeof(int), err);
    return f->features && f->labels ? 0 : -1;
}

int feature_set_embed(FeatureSet *f, Model *m, const void *mcfg, Pool pool, int batch_size, D2vError *err)
{
    if (batch_size > m->B)
        return d2v_fail(err, "batches of %d do not fit a model laid out for %d", batch_size, m->B);
    return extract_features(m, mcfg, f->dataset, batch_size, pool, f->features, f->labels, err);
}

int feature_set_check(FeatureSet *f, const void *mcfg, int batch_size, D2vError *err)
{
    Loader *loader;
    LoaderSpec spec = {f->mod, mcfg, f->dataset, batch_size, 0, 0, 0, 0, NULL, NULL, 0, 0, 0};
    if (loader_start(&loader, &spec, err) < 0)
        return -1;
    Batch *batch;
    int rc;
    while ((rc = loader_next(loader, &batch, err)) == 1)
        ;
    loader_stop(loader);
    return rc < 0 ? -1 : 0;
}

void feature_set_free(FeatureSet *f)
{
    if (f->dataset)
        f->mod->dataset_close(f->dataset);
    free(f->features);
    free(f->labels);
    memset(f, 0, sizeof *f);
}

int eval_sets_open(EvalSets *e, const Modality *mod, const void *mcfg, const char *train, const char *test, int dim,
                   D2vError *err)
{
    memset(e, 0, sizeof *e);
    if (feature_set_open(&e->train, mod, mcfg, train, 1, dim, err) < 0 ||
        feature_set_open(&e->test, mod, mcfg, test, 1, dim, err) < 0)
        return -1;
    if (e->train.n_classes != e->test.n_classes)
        return d2v_fail(err, "%s and %s have different classes (%d and %d of them)", train, test,
                        e->train.n_classes, e->test.n_classes);
    for (int i = 0; i < e->train.n_classes; i++)
        if (strcmp(e->train.class_names[i], e->test.class_names[i]) != 0)
            return d2v_fail(err, "%s and %s have different classes (class %d is %s in one, %s in the other)", train,
                            test, i + 1, e->train.class_names[i], e->test.class_names[i]);
    return 0;
}

int eval_sets_embed(EvalSets *e, Model *m, const void *mcfg, Pool pool, int batch_size, D2vError *err)
{
    return feature_set_embed(&e->train, m, mcfg, pool, batch_size, err) < 0 ||
                   feature_set_embed(&e->test, m, mcfg, pool, batch_size, err) < 0
               ? -1
               : 0;
}

int eval_knn(EvalSets *e, Model *m, const void *mcfg, Pool pool, int batch_size, int k, ProbeResult *out,
             D2vError *err)
{
    if (eval_sets_embed(e, m, mcfg, pool, batch_size, err) < 0)
        return -1;
    const FeatureSet *tr = &e->train, *te = &e->test;
    return knn_probe(tr->features, tr->labels, tr->n, te->features, te->labels, te->n, tr->dim, tr->n_classes, k,
                     KNN_TEMPERATURE, out, err);
}

void eval_sets_close(EvalSets *e)
{
    feature_set_free(&e->train);
    feature_set_free(&e->test);
}
