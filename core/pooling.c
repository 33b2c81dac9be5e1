#include "pooling.h"

#include "loader.h"

#include <string.h>

int pool_parse(const char *name, Pool *out)
{
    if (strcmp(name, "mean") == 0)
        *out = POOL_MEAN;
    else if (strcmp(name, "cls") == 0)
        *out = POOL_CLS;
    else if (strcmp(name, "topk") == 0)
        *out = POOL_TOPK;
    else
        return -1;
    return 0;
}

int extract_features(Model *m, const void *mcfg, void *dataset, int batch_size, Pool pool, float *features,
                     int *labels, D2vError *err)
{
    const int D = m->d2v.encoder.dim;
    Loader *loader;
    LoaderSpec spec = {m->mod, mcfg, dataset, batch_size, 0, 0, 0, 0, NULL, NULL, 0, 0, 0};
    if (loader_start(&loader, &spec, err) < 0)
        return -1;
    const ForwardMode eval = {.train = 0};
    int row = 0, rc;
    Batch *batch;
    while ((rc = loader_next(loader, &batch, err)) == 1) {
        FrontendOut fe;
        m->mod->forward(m->frontend, m->ps.value, batch, NULL, eval, &fe);
        if (pool == POOL_CLS && fe.cls_position < 0) {
            rc = d2v_fail(err, "--pool cls: the %s front-end has no CLS token (use mean or topk)", m->mod->name);
            break;
        }
        const real *h;
        if (pool == POOL_TOPK) {
            d2v_teacher_targets(&m->d2v, &m->ps, &m->acts, fe.x_teacher, fe.pad, fe.B, fe.N);
            h = m->acts.target_sum;
        } else {
            transformer_forward(&m->d2v.encoder, m->ps.value, &m->acts.student, fe.x_teacher, fe.pad, fe.B, fe.N,
                                eval);
            h = m->acts.student.output;
        }
        for (int b = 0; b < fe.B; b++, row++) {
            float *out = features + (size_t)row * D;
            labels[row] = batch->labels ? batch->labels[b] : -1;
            if (pool == POOL_CLS) {
                memcpy(out, h + ((size_t)b * fe.N + fe.cls_position) * D, (size_t)D * sizeof(float));
                continue;
            }
            double sum[D];
            memset(sum, 0, sizeof sum);
            int count = 0;
            for (int n = 0; n < fe.N; n++) {
                size_t i = (size_t)b * fe.N + n;
                if (!fe.pool[i] || (fe.pad && fe.pad[i]))
                    continue;
                for (int d = 0; d < D; d++)
                    sum[d] += h[i * D + d];
                count++;
            }
            for (int d = 0; d < D; d++)
                out[d] = count ? (float)(sum[d] / count) : 0.0f;
        }
    }
    loader_stop(loader);
    return rc < 0 ? -1 : 0;
}
