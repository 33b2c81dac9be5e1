#include "optim.h"

#include <string.h>

int param_decays(const Param *p)
{
    return p->kind == PARAM_WEIGHT && p->ndim >= 2;
}

void adamw_step(ParamStore *ps, const AdamW *opt, double lr, int64_t t)
{
    const double bc1 = 1.0 - pow(opt->beta1, (double)t);
    const double bc2 = 1.0 - pow(opt->beta2, (double)t);
    const real b1 = (real)opt->beta1, b2 = (real)opt->beta2;
    const real step_size = (real)(lr / bc1);
    const real inv_sqrt_bc2 = (real)(1.0 / sqrt(bc2));
    const real eps = (real)opt->eps;
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->params[i];
        const real decay = param_decays(p) ? (real)(1.0 - lr * opt->weight_decay) : R(1);
        real *w = ps->value + p->offset, *g = ps->grad + p->offset;
        real *m = ps->adam_m + p->offset, *v = ps->adam_v + p->offset;
        const size_t n = p->numel;
#pragma omp parallel for simd schedule(static)
        for (size_t j = 0; j < n; j++) {
            m[j] = b1 * m[j] + (R(1) - b1) * g[j];
            v[j] = b2 * v[j] + (R(1) - b2) * g[j] * g[j];
            w[j] = w[j] * decay - step_size * m[j] / (sqrt(v[j]) * inv_sqrt_bc2 + eps);
        }
    }
}

/* The gradient is summed in this many contiguous parts, each in its own
 * eight double-precision lanes: a fixed order of additions whatever the
 * thread count, in vector lanes and on both threads. (One double chain
 * over all parameters was serial, latency-bound and the other core idle.) */
#define NORM_PARTS 64
#define NORM_LANES 8

double grad_global_norm(const ParamStore *ps)
{
    double part_sq[NORM_PARTS];
#pragma omp parallel for schedule(static)
    for (int part = 0; part < NORM_PARTS; part++) {
        const size_t first = ps->numel * (size_t)part / NORM_PARTS;
        const size_t last = ps->numel * (size_t)(part + 1) / NORM_PARTS;
        double lane[NORM_LANES] = {0};
        size_t i = first;
        for (; i + NORM_LANES <= last; i += NORM_LANES)
#pragma omp simd
            for (int l = 0; l < NORM_LANES; l++)
                lane[l] += (double)ps->grad[i + l] * (double)ps->grad[i + l];
        for (; i < last; i++)
            lane[0] += (double)ps->grad[i] * (double)ps->grad[i];
        double sq = 0;
        for (int l = 0; l < NORM_LANES; l++)
            sq += lane[l];
        part_sq[part] = sq;
    }
    double sq = 0;
    for (int part = 0; part < NORM_PARTS; part++)
        sq += part_sq[part];
    return sqrt(sq);
}

void clip_grad_to(ParamStore *ps, double norm, double max_norm)
{
    if (max_norm > 0 && norm > max_norm) {
        const real scale = (real)(max_norm / (norm + 1e-6));
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < ps->numel; i++)
            ps->grad[i] *= scale;
    }
}

double clip_grad_norm(ParamStore *ps, double max_norm)
{
    const double norm = grad_global_norm(ps);
    clip_grad_to(ps, norm, max_norm);
    return norm;
}

void schedule_from_config(Schedule *s, const D2vConfig *cfg)
{
    memset(s, 0, sizeof *s);
    const char *k = cfg->optim.schedule;
    s->kind = strcmp(k, "cosine") == 0 ? SCHEDULE_COSINE
            : strcmp(k, "tri_stage") == 0 ? SCHEDULE_TRI_STAGE : SCHEDULE_CONSTANT;
    s->peak_lr = cfg->optim.lr;
    s->total_steps = cfg->train.steps;
    s->warmup_steps = cfg->optim.warmup_steps > 0 ? cfg->optim.warmup_steps
                                                  : (int64_t)llround(cfg->optim.warmup_ratio * (double)s->total_steps);
    if (s->kind == SCHEDULE_TRI_STAGE) {
        s->hold_steps = (int64_t)llround(cfg->optim.hold_ratio * (double)s->total_steps);
        s->decay_steps = (int64_t)llround(cfg->optim.decay_ratio * (double)s->total_steps);
        s->init_lr = cfg->optim.init_lr_scale * s->peak_lr;
        s->final_lr = cfg->optim.final_lr_scale * s->peak_lr;
    }
    s->min_lr = cfg->optim.min_lr;
}

double schedule_lr(const Schedule *s, int64_t u)
{
    switch (s->kind) {
    case SCHEDULE_CONSTANT:
        if (u < s->warmup_steps)
            return s->peak_lr * (double)(u + 1) / (double)s->warmup_steps;
        return s->peak_lr;
    case SCHEDULE_COSINE: {
        if (u < s->warmup_steps)
            return s->peak_lr * (double)(u + 1) / (double)s->warmup_steps;
        const int64_t span = s->total_steps - s->warmup_steps;
        const double progress = span > 0 ? (double)(u - s->warmup_steps) / (double)span : 1.0;
        const double c = 0.5 * (1.0 + cos(3.14159265358979323846 * (progress < 1 ? progress : 1)));
        return s->min_lr + (s->peak_lr - s->min_lr) * c;
    }
    case SCHEDULE_TRI_STAGE: {
        /* wav2vec 2.0's schedule (fairseq tri_stage): linear warm-up from
         * init_lr to the peak, hold, then exponential decay to final_lr. */
        if (u < s->warmup_steps)
            return s->init_lr + (s->peak_lr - s->init_lr) * (double)(u + 1) / (double)s->warmup_steps;
        u -= s->warmup_steps;
        if (u < s->hold_steps)
            return s->peak_lr;
        u -= s->hold_steps;
        if (u < s->decay_steps) {
            const double decay_factor = -log(s->final_lr / s->peak_lr) / (double)s->decay_steps;
            return s->peak_lr * exp(-decay_factor * (double)(u + 1));
        }
        return s->final_lr;
    }
    }
    return s->peak_lr;
}
