/* dist_mpi.c — dist.h over MPI (Open MPI on Debian: libopenmpi-dev).
 *
 * One communicator, a duplicate of MPI_COMM_WORLD with MPI_ERRORS_RETURN,
 * so a failed collective comes back as an error code (turned into a
 * D2vError naming the operation) instead of MPI's default of aborting
 * with a stack of internals. Collectives are non-blocking calls polled to
 * completion against a deadline (dist_set_timeout), so a peer that hangs
 * or dies unnoticed ends in an error, not a hang. Only the training thread
 * calls MPI (MPI_THREAD_FUNNELED): the data loader thread and OpenMP
 * workers never do. */
#include "dist.h"

#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct {
    int active;       /* MPI_Init was called */
    int rank, world, local_world;
    double timeout;
    MPI_Comm comm;
    char backend[MPI_MAX_LIBRARY_VERSION_STRING];
} d = {0, 0, 1, 1, 600, MPI_COMM_NULL, ""};

/* Elements per MPI call: counts are ints, and a bucket at a time keeps each
 * message a size the network stacks like. */
#define BUCKET ((size_t)1 << 22)

static int launched_by_mpi(void)
{
    static const char *const vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"};
    for (size_t i = 0; i < sizeof vars / sizeof *vars; i++)
        if (getenv(vars[i]))
            return 1;
    return 0;
}

static int mpi_fail(int code, const char *what, D2vError *err)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error %d", code);
    return d2v_fail(err, "rank %d of %d: %s failed: %s; another rank has probably died (see the launcher's "
                    "message about it)", d.rank, d.world, what, text);
}

int dist_init(int *argc, char ***argv, D2vError *err)
{
    if (!launched_by_mpi())
        return 0;
    int provided = 0, rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS)
        return d2v_fail(err, "MPI_Init_thread failed (code %d)", rc);
    d.active = 1;
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if ((rc = MPI_Comm_dup(MPI_COMM_WORLD, &d.comm)) != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Comm_dup", err);
    MPI_Comm_set_errhandler(d.comm, MPI_ERRORS_RETURN);
    MPI_Comm_rank(d.comm, &d.rank);
    MPI_Comm_size(d.comm, &d.world);
    MPI_Comm local;
    if (MPI_Comm_split_type(d.comm, MPI_COMM_TYPE_SHARED, d.rank, MPI_INFO_NULL, &local) == MPI_SUCCESS) {
        MPI_Comm_size(local, &d.local_world);
        MPI_Comm_free(&local);
    }
    return 0;
}

void dist_finalize(void)
{
    if (!d.active)
        return;
    if (d.comm != MPI_COMM_NULL)
        MPI_Comm_free(&d.comm);
    MPI_Finalize();
    d.active = 0;
}

void dist_abort(int code)
{
    if (d.active && d.world > 1)
        MPI_Abort(MPI_COMM_WORLD, code);
}

int dist_rank(void) { return d.rank; }
int dist_world(void) { return d.world; }
int dist_local_world(void) { return d.local_world; }
const char *dist_backend(void)
{
    if (!d.backend[0]) { /* allowed before MPI_Init */
        int len = 0;
        if (MPI_Get_library_version(d.backend, &len) != MPI_SUCCESS)
            snprintf(d.backend, sizeof d.backend, "MPI");
        d.backend[strcspn(d.backend, "\n,")] = 0;
    }
    return d.backend;
}
int dist_compiled(void) { return 1; }
void dist_set_timeout(double seconds) { d.timeout = seconds; }

/* Polls the requests to completion: MPI_Test in a loop, sleeping 20 us
 * between polls once the first thousand found nothing (a rank waiting for a
 * slower one should not take a core from it), failing past the deadline. */
static int wait_all(MPI_Request *reqs, int n, const char *what, D2vError *err)
{
    const double start = MPI_Wtime();
    long polls = 0;
    for (;;) {
        int done = 0, rc = MPI_Testall(n, reqs, &done, MPI_STATUSES_IGNORE);
        if (rc != MPI_SUCCESS)
            return mpi_fail(rc, what, err);
        if (done)
            return 0;
        if (++polls > 1000)
            nanosleep(&(struct timespec){0, 20000}, NULL);
        if (d.timeout > 0 && MPI_Wtime() - start > d.timeout)
            return d2v_fail(err, "rank %d of %d: %s: no answer from the other ranks in %.0f s (a rank hangs or "
                            "died; train.dist_timeout sets the limit)", d.rank, d.world, what, d.timeout);
    }
}

static int allreduce(void *buf, size_t n, MPI_Datatype type, size_t elem, MPI_Op op, const char *what,
                     D2vError *err)
{
    if (!d.active || d.world == 1 || n == 0)
        return 0;
    MPI_Request reqs[64];
    /* Up to 64 buckets in flight at once. */
    for (size_t done = 0; done < n;) {
        int k = 0;
        for (; k < 64 && done < n; k++) {
            const size_t count = n - done < BUCKET ? n - done : BUCKET;
            int rc = MPI_Iallreduce(MPI_IN_PLACE, (char *)buf + done * elem, (int)count, type, op, d.comm, &reqs[k]);
            if (rc != MPI_SUCCESS)
                return mpi_fail(rc, what, err);
            done += count;
        }
        if (wait_all(reqs, k, what, err) < 0)
            return -1;
    }
    return 0;
}

int dist_allreduce_sum_float(float *buf, size_t n, D2vError *err)
{
    return allreduce(buf, n, MPI_FLOAT, sizeof *buf, MPI_SUM, "MPI_Allreduce of the gradients", err);
}

int dist_allreduce_sum_double(double *buf, size_t n, D2vError *err)
{
    return allreduce(buf, n, MPI_DOUBLE, sizeof *buf, MPI_SUM, "MPI_Allreduce of the step's sums", err);
}

int dist_allreduce_max_double(double *buf, size_t n, D2vError *err)
{
    return allreduce(buf, n, MPI_DOUBLE, sizeof *buf, MPI_MAX, "MPI_Allreduce (max)", err);
}

int dist_allreduce_min_int(int *value, D2vError *err)
{
    return allreduce(value, 1, MPI_INT, sizeof *value, MPI_MIN, "MPI_Allreduce (min)", err);
}

int dist_barrier(D2vError *err)
{
    if (!d.active || d.world == 1)
        return 0;
    MPI_Request req;
    int rc = MPI_Ibarrier(d.comm, &req);
    if (rc != MPI_SUCCESS)
        return mpi_fail(rc, "MPI_Barrier", err);
    return wait_all(&req, 1, "MPI_Barrier", err);
}
