/* dist.h — the collectives of data-parallel training (issue 8), the one
 * place that knows whether d2v was built with MPI.
 *
 * Two implementations of this interface: dist_mpi.c (meson -Dmpi=enabled,
 * or auto with MPI found) and dist_none.c (one process, every collective an
 * identity). The training loop calls these and nothing else: no #ifdef in
 * core/. Every collective is called by every rank in the same order; a
 * failure (a rank died, a timeout) is a D2vError like any other, and only
 * cli/ decides to abort the job (dist_abort). */
#ifndef D2V_DIST_H
#define D2V_DIST_H

#include "common.h"

/* Joins the job when the process was started by an MPI launcher (mpirun,
 * srun: its environment says so); a plain `d2v pretrain` stays one process
 * without touching MPI. Call once, before any other dist_ function. */
int dist_init(int *argc, char ***argv, D2vError *err);
void dist_finalize(void);
/* Ends every rank of the job at once (MPI_Abort); no-op without MPI. */
void dist_abort(int code);

int dist_rank(void);        /* 0 .. world-1 */
int dist_world(void);       /* ranks in the job, 1 without MPI */
int dist_local_world(void); /* ranks on this host (they share its cores) */
/* "Open MPI v4.1.4, ..." or "none (built without MPI)" — for `d2v version`. */
const char *dist_backend(void);
int dist_compiled(void);    /* 1 when built with MPI */

/* A collective that has not completed after this many seconds (a rank
 * hangs, or died without the launcher noticing) fails instead of waiting
 * forever. <= 0: wait forever. */
void dist_set_timeout(double seconds);

/* In-place sums over all ranks, in buckets (so any n works). */
int dist_allreduce_sum_float(float *buf, size_t n, D2vError *err);
int dist_allreduce_sum_double(double *buf, size_t n, D2vError *err);
int dist_allreduce_max_double(double *buf, size_t n, D2vError *err);
int dist_allreduce_min_int(int *value, D2vError *err);
int dist_barrier(D2vError *err);

#endif
