/* dist_none.c — dist.h for a build without MPI: one process, world of 1,
 * every collective leaves its buffer as it is. */
#include "dist.h"

#include <stdlib.h>

int dist_init(int *argc, char ***argv, D2vError *err)
{
    (void)argc;
    (void)argv;
    /* Started by mpirun but built without MPI: N independent copies would
     * each train the whole run into the same directory. Refuse. */
    const char *size = getenv("OMPI_COMM_WORLD_SIZE");
    if (!size)
        size = getenv("PMI_SIZE");
    if (size && atoi(size) > 1)
        return d2v_fail(err, "started as one of %s MPI ranks, but this d2v was built without MPI "
                        "(meson setup -Dmpi=enabled, with libopenmpi-dev installed)", size);
    return 0;
}

void dist_finalize(void) {}
void dist_abort(int code) { (void)code; }
int dist_rank(void) { return 0; }
int dist_world(void) { return 1; }
int dist_local_world(void) { return 1; }
const char *dist_backend(void) { return "none (built without MPI)"; }
int dist_compiled(void) { return 0; }
void dist_set_timeout(double seconds) { (void)seconds; }

int dist_allreduce_sum_float(float *buf, size_t n, D2vError *err)
{
    (void)buf, (void)n, (void)err;
    return 0;
}

int dist_allreduce_sum_double(double *buf, size_t n, D2vError *err)
{
    (void)buf, (void)n, (void)err;
    return 0;
}

int dist_allreduce_max_double(double *buf, size_t n, D2vError *err)
{
    (void)buf, (void)n, (void)err;
    return 0;
}

int dist_allreduce_min_int(int *value, D2vError *err)
{
    (void)value, (void)err;
    return 0;
}

int dist_barrier(D2vError *err)
{
    (void)err;
    return 0;
}
