#include "ema.h"

double ema_tau(double tau0, double tau_end, int64_t anneal_steps, int64_t updates)
{
    if (updates >= anneal_steps)
        return tau_end;
    return tau0 + (tau_end - tau0) * (double)updates / (double)anneal_steps;
}

void ema_update(ParamStore *ps, double tau)
{
    const real a = (real)tau, b = (real)(1.0 - tau);
    real *teacher = ps->teacher;
    const real *student = ps->value;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < ps->teacher_numel; i++)
        teacher[i] = a * teacher[i] + b * student[i];
}
