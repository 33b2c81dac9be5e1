/* ema.h — the teacher follows the student (paper §3.2, DESIGN §1):
 *     theta_teacher <- tau theta_teacher + (1 - tau) theta_student
 * over the Transformer only (the leading in_teacher range of the parameter
 * store), with tau annealed linearly from tau0 to tau_end over anneal_steps
 * updates and then held. */
#ifndef D2V_EMA_H
#define D2V_EMA_H

#include "params.h"

/* tau after `updates` optimizer updates (fairseq's get_annealed_rate). */
double ema_tau(double tau0, double tau_end, int64_t anneal_steps, int64_t updates);
/* One fused pass over the teacher range. */
void ema_update(ParamStore *ps, double tau);

#endif
