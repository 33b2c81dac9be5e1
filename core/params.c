#include "params.h"

#include "rng.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int params_add(ParamStore *ps, const char *name, ParamKind kind, int in_teacher,
               ParamInit init, float init_scale, int ndim, const int64_t *shape,
               D2vError *err)
{
    if (ps->value)
        return d2v_fail(err, "parameter %s registered after the store was allocated", name);
    if (strlen(name) >= PARAM_NAME_LEN)
        return d2v_fail(err, "parameter name too long: %s", name);
    if (ndim < 1 || ndim > PARAM_MAX_DIMS)
        return d2v_fail(err, "parameter %s: %d dimensions (1..%d allowed)", name, ndim, PARAM_MAX_DIMS);
    if (params_find(ps, name) >= 0)
        return d2v_fail(err, "parameter %s registered twice", name);
    if (ps->count == ps->cap) {
        int cap = ps->cap ? 2 * ps->cap : 64;
        Param *grown = realloc(ps->params, (size_t)cap * sizeof *grown);
        if (!grown)
            return d2v_fail(err, "out of memory registering parameter %s", name);
        ps->params = grown;
        ps->cap = cap;
    }
    Param *p = &ps->params[ps->count];
    memset(p, 0, sizeof *p);
    strcpy(p->name, name);
    p->kind = kind;
    p->init = init;
    p->init_scale = init_scale;
    p->in_teacher = in_teacher;
    p->ndim = ndim;
    p->numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1)
            return d2v_fail(err, "parameter %s: dimension %d is %lld", name, d, (long long)shape[d]);
        p->shape[d] = shape[d];
        p->numel *= (size_t)shape[d];
    }
    return ps->count++;
}

int params_find(const ParamStore *ps, const char *name)
{
    for (int i = 0; i < ps->count; i++)
        if (strcmp(ps->params[i].name, name) == 0)
            return i;
    return -1;
}

int params_alloc(ParamStore *ps, D2vError *err)
{
    /* Teacher tensors first: the EMA then touches one leading range. Each
     * tensor starts on a 16-float boundary so SIMD loads stay aligned. */
    size_t offset = 0;
    for (int pass = 1; pass >= 0; pass--) {
        for (int i = 0; i < ps->count; i++) {
            Param *p = &ps->params[i];
            if (p->in_teacher != pass)
                continue;
            p->offset = offset;
            offset += (p->numel + 15) & ~(size_t)15;
        }
        if (pass == 1)
            ps->teacher_numel = offset;
    }
    ps->numel = offset;
    size_t bytes = (ps->numel ? ps->numel : 16) * sizeof(real);
    real **buffers[] = {&ps->value, &ps->grad, &ps->adam_m, &ps->adam_v};
    for (size_t b = 0; b < sizeof buffers / sizeof *buffers; b++) {
        *buffers[b] = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!*buffers[b])
            return d2v_fail(err, "out of memory allocating %zu parameters", ps->numel);
        memset(*buffers[b], 0, bytes);
    }
    size_t teacher_bytes = ((ps->teacher_numel ? ps->teacher_numel : 16) * sizeof(real) + 63) & ~(size_t)63;
    ps->teacher = aligned_alloc(64, teacher_bytes);
    if (!ps->teacher)
        return d2v_fail(err, "out of memory allocating the teacher");
    memset(ps->teacher, 0, teacher_bytes);
    return 0;
}

void params_free(ParamStore *ps)
{
    free(ps->params);
    free(ps->value);
    free(ps->grad);
    free(ps->adam_m);
    free(ps->adam_v);
    free(ps->teacher);
    memset(ps, 0, sizeof *ps);
}

static float trunc_normal(Rng *rng, float std)
{
    /* Redraw outside two standard deviations, as timm's trunc_normal_ with
     * a = -2std, b = 2std truncates. */
    for (;;) {
        float z = rng_normal(rng);
        if (z >= -2.0f && z <= 2.0f)
            return z * std;
    }
}

void params_init(ParamStore *ps, Rng *rng)
{
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->params[i];
        real *w = params_value(ps, i);
        for (size_t j = 0; j < p->numel; j++) {
            switch (p->init) {
            case INIT_ZERO: w[j] = 0; break;
            case INIT_ONE: w[j] = 1; break;
            case INIT_TRUNC_NORMAL: w[j] = trunc_normal(rng, p->init_scale); break;
            case INIT_NORMAL: w[j] = rng_normal(rng) * p->init_scale; break;
            case INIT_UNIFORM: w[j] = (2.0f * rng_uniform(rng) - 1.0f) * p->init_scale; break;
            case INIT_UNIFORM_POSITIVE: w[j] = rng_uniform(rng) * p->init_scale; break;
            }
        }
    }
    memcpy(ps->teacher, ps->value, ps->teacher_numel * sizeof(real));
}

void params_zero_grad(ParamStore *ps)
{
    memset(ps->grad, 0, ps->numel * sizeof(real));
}

int params_first_nonfinite(const ParamStore *ps, const real *buffer, int *n_bad)
{
    int first = -1, bad = 0;
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->params[i];
        const real *x = buffer + p->offset;
        for (size_t j = 0; j < p->numel; j++)
            if (!isfinite(x[j])) {
                if (first < 0)
                    first = i;
                bad++;
                break;
            }
    }
    if (n_bad)
        *n_bad = bad;
    return first;
}
