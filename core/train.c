#include "train.h"

#include "checkpoint.h"
#include "dist.h"
#include "ema.h"
#include "evaluate.h"
#include "loader.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int train_set_threads(int64_t threads)
{
    /* 0: this host's cores, shared by the ranks running on it. */
    int n = threads > 0 ? (int)threads : omp_get_num_procs() / dist_local_world();
    n = n > 0 ? n : 1;
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return n;
}

/* ---- the run directory ------------------------------------------------------ */

static int path_in(char *out, size_t len, const char *dir, const char *name, D2vError *err)
{
    if ((size_t)snprintf(out, len, "%s/%s", dir, name) >= len)
        return d2v_fail(err, "path too long: %s/%s", dir, name);
    return 0;
}

/* fsync of a directory, so a rename or unlink in it survives a power cut. */
static int sync_dir(const char *dir, D2vError *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return d2v_fail(err, "cannot open directory %s: %s", dir, strerror(errno));
    /* Some filesystems cannot fsync a directory (EINVAL); nothing to do then. */
    int rc = fsync(fd) == 0 || errno == EINVAL ? 0 : d2v_fail(err, "fsync of directory %s: %s", dir, strerror(errno));
    close(fd);
    return rc;
}

/* Points RUNDIR/last.safetensors at the newest checkpoint: a symlink made
 * under a temporary name and renamed over the old one, so `last` always
 * names a complete file. The directory is synced before older checkpoints
 * are deleted, so after a power cut `last` never names a deleted file. */
static int update_last(const char *run_dir, const char *file_name, D2vError *err)
{
    char link_path[4096], tmp[4200];
    if (path_in(link_path, sizeof link_path, run_dir, "last.safetensors", err) < 0)
        return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", link_path, (long)getpid());
    unlink(tmp);
    if (symlink(file_name, tmp) < 0 || rename(tmp, link_path) < 0) {
        int e = errno;
        unlink(tmp);
        return d2v_fail(err, "updating %s: %s", link_path, strerror(e));
    }
    return sync_dir(run_dir, err);
}

static void checkpoint_name(char *out, size_t len, int64_t step)
{
    snprintf(out, len, "checkpoint-%08lld.safetensors", (long long)step);
}

/* The checkpoints of this run directory on disk, oldest first: the ones an
 * earlier (interrupted) process wrote count toward train.keep_last too. */
typedef struct {
    int64_t *steps;
    int n, cap;
} KeptCheckpoints;

static int kept_insert(KeptCheckpoints *k, int64_t step, D2vError *err)
{
    int at = 0;
    while (at < k->n && k->steps[at] < step)
        at++;
    if (at < k->n && k->steps[at] == step)
        return 0;
    if (k->n == k->cap) {
        int cap = k->cap ? 2 * k->cap : 16;
        int64_t *grown = realloc(k->steps, (size_t)cap * sizeof *grown);
        if (!grown)
            return d2v_fail(err, "out of memory listing checkpoints");
        k->steps = grown;
        k->cap = cap;
    }
    memmove(k->steps + at + 1, k->steps + at, (size_t)(k->n - at) * sizeof *k->steps);
    k->steps[at] = step;
    k->n++;
    return 0;
}

/* Is `name` exactly checkpoint-<digits>.safetensors? (Not a .tmp.<pid> file
 * left by a killed writer: those are never checkpoints.) */
static int parse_checkpoint_name(const char *name, int64_t *step)
{
    long long value;
    int consumed = 0;
    if (strncmp(name, "checkpoint-", 11) != 0 || sscanf(name + 11, "%lld%n", &value, &consumed) != 1 ||
        consumed < 1 || name[11] < '0' || name[11] > '9' || strcmp(name + 11 + consumed, ".safetensors") != 0)
        return 0;
    *step = value;
    return 1;
}

/* A temporary file of one of our atomic writes: NAME.tmp.<pid> for a
 * checkpoint, last.safetensors, best-knn.safetensors or config.ini (nothing
 * else a user might keep in the directory). */
static int is_temp_name(const char *name)
{
    if (strncmp(name, "checkpoint-", 11) != 0 && strncmp(name, "last.safetensors.tmp.", 21) != 0 &&
        strncmp(name, "best-knn.safetensors.tmp.", 25) != 0 && strncmp(name, "config.ini.tmp.", 15) != 0)
        return 0;
    const char *t = strstr(name, ".tmp.");
    if (!t || !t[5])
        return 0;
    for (t += 5; *t; t++)
        if (*t < '0' || *t > '9')
            return 0;
    return 1;
}

/* Lists the checkpoints already on disk and deletes the temporary files an
 * interrupted writer left (a SIGKILL between create and rename). The run
 * directory lock makes sure no live writer owns them. */
static int scan_run_dir(const char *run_dir, KeptCheckpoints *kept, int *removed_temps, D2vError *err)
{
    DIR *d = opendir(run_dir);
    if (!d)
        return d2v_fail(err, "cannot list %s: %s", run_dir, strerror(errno));
    int rc = 0;
    *removed_temps = 0;
    for (struct dirent *e; rc == 0 && (e = readdir(d));) {
        int64_t step;
        char path[4096];
        if (parse_checkpoint_name(e->d_name, &step))
            rc = kept_insert(kept, step, err);
        else if (is_temp_name(e->d_name) && path_in(path, sizeof path, run_dir, e->d_name, NULL) == 0 &&
                 unlink(path) == 0)
            (*removed_temps)++;
    }
    closedir(d);
    return rc;
}

/* "RUNDIR/checkpoint-00000010.safetensors (step 10)", or a sentence saying
 * there is none: what every stopping message tells the user to go back to. */
static void describe_checkpoint(char *out, size_t len, const char *run_dir, int64_t step)
{
    char name[64];
    checkpoint_name(name, sizeof name, step);
    if (step < 0)
        snprintf(out, len, "none yet, this run has not saved a checkpoint");
    else
        snprintf(out, len, "%s/%s (step %lld)", run_dir, name, (long long)step);
}

/* What a checkpoint of this step stores besides tensors: the step, the
 * run's RNG and the best periodic k-NN so far. */
static TrainState train_state(const TrainOptions *opt, int64_t step, const TrainState *best)
{
    TrainState state = {.step = step, .world = dist_world(), .best_knn_step = best->best_knn_step,
                        .best_knn = best->best_knn};
    rng_init(&state.rng, (uint64_t)opt->cfg->train.seed, 0);
    return state;
}

static int save_checkpoint(const TrainOptions *opt, const Model *m, int64_t step, const TrainState *best,
                           KeptCheckpoints *kept, int64_t *last_saved, D2vError *err)
{
    char name[64], path[4096];
    checkpoint_name(name, sizeof name, step);
    if (path_in(path, sizeof path, opt->run_dir, name, err) < 0)
        return -1;
    TrainState state = train_state(opt, step, best);
    if (checkpoint_save(path, &m->ps, &state, opt->config_text, err) < 0 ||
        update_last(opt->run_dir, name, err) < 0) {
        /* A full disk ends here: the write went to a temporary file, so the
         * previous checkpoint is untouched; say which one that is. */
        char previous[4200];
        describe_checkpoint(previous, sizeof previous, opt->run_dir, *last_saved);
        char reason[D2V_ERR_LEN];
        snprintf(reason, sizeof reason, "%s", err->msg);
        return d2v_fail(err, "%s; stopping. The previous checkpoint is intact: %s", reason, previous);
    }
    *last_saved = step;
    if (opt->on_checkpoint)
        opt->on_checkpoint(opt->ctx, path);
    /* Keep the newest train.keep_last files, never the one just written:
     * `last` points at it. Only checkpoint-N files are counted, so
     * best-knn.safetensors is never rotated away. */
    if (kept_insert(kept, step, err) < 0)
        return -1;
    for (int i = 0; kept->n > opt->cfg->train.keep_last && i < kept->n;) {
        if (kept->steps[i] == step) {
            i++;
            continue;
        }
        checkpoint_name(name, sizeof name, kept->steps[i]);
        if (path_in(path, sizeof path, opt->run_dir, name, err) == 0)
            unlink(path);
        memmove(kept->steps + i, kept->steps + i + 1, (size_t)(kept->n - i - 1) * sizeof *kept->steps);
        kept->n--;
    }
    return 0;
}

/* mkdir -p: a run directory may be several levels deep (runs/image/a). */
static int make_dirs(const char *path, D2vError *err)
{
    char partial[4096];
    if (strlen(path) >= sizeof partial)
        return d2v_fail(err, "run directory path too long: %s", path);
    for (size_t i = 1; i <= strlen(path); i++) {
        if (path[i] != '/' && path[i] != 0)
            continue;
        memcpy(partial, path, i);
        partial[i] = 0;
        if (mkdir(partial, 0755) < 0 && errno != EEXIST)
            return d2v_fail(err, "cannot create run directory %s: %s", partial, strerror(errno));
    }
    struct stat st;
    if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode))
        return d2v_fail(err, "--run %s is not a directory", path);
    return 0;
}

/* One process per run directory: two writers would interleave checkpoints
 * and delete each other's temporary files. flock is released by the kernel
 * when the process dies, even by SIGKILL, so a crash never leaves a stale
 * lock behind. The fd stays open for the whole run. */
static int lock_run_dir(const char *run_dir, int *lock_fd, D2vError *err)
{
    char path[4096];
    if (path_in(path, sizeof path, run_dir, "pretrain.lock", err) < 0)
        return -1;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0)
        return d2v_fail(err, "cannot create %s: %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        char holder[32] = "";
        ssize_t n = pread(fd, holder, sizeof holder - 1, 0);
        holder[n > 0 ? n : 0] = 0;
        holder[strcspn(holder, "\n")] = 0;
        close(fd);
        if (e == EWOULDBLOCK)
            return d2v_fail(err, "%s is in use by another d2v pretrain (pid %s); one run directory takes one process",
                            run_dir, holder[0] ? holder : "unknown");
        return d2v_fail(err, "cannot lock %s: %s", path, strerror(e));
    }
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        int e = errno;
        close(fd);
        return d2v_fail(err, "writing %s: %s", path, strerror(e));
    }
    *lock_fd = fd;
    return 0;
}

/* RUNDIR/config.ini, replaced atomically: a kill while writing it must not
 * leave half a config next to good checkpoints. */
static int write_config_copy(const TrainOptions *opt, D2vError *err)
{
    char path[4096], tmp[4200];
    if (path_in(path, sizeof path, opt->run_dir, "config.ini", err) < 0)
        return -1;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    int ok = f && fputs(opt->config_text, f) >= 0;
    int e = errno;
    if (f && fclose(f) != 0 && ok) {
        ok = 0;
        e = errno;
    }
    if (ok && rename(tmp, path) < 0) {
        ok = 0;
        e = errno;
    }
    if (!ok) {
        unlink(tmp);
        return d2v_fail(err, "writing %s: %s", path, strerror(e));
    }
    return 0;
}

static int prepare_run_dir(const TrainOptions *opt, char *last_path, size_t len, int *lock_fd, KeptCheckpoints *kept,
                           D2vError *err)
{
    if (make_dirs(opt->run_dir, err) < 0 || lock_run_dir(opt->run_dir, lock_fd, err) < 0)
        return -1;
    if (path_in(last_path, len, opt->run_dir, "last.safetensors", err) < 0)
        return -1;
    int has_last = access(last_path, F_OK) == 0;
    char target[4096];
    ssize_t target_len = readlink(last_path, target, sizeof target - 1);
    if (!has_last && target_len > 0) {
        /* Only a hand-edited directory gets here: d2v never deletes the
         * file `last` points at. */
        target[target_len] = 0;
        return d2v_fail(err, "%s points to %s, which does not exist; point it at an existing checkpoint-N.safetensors "
                        "(ln -sf) to resume from there", last_path, target);
    }
    if (opt->resume && !has_last)
        return d2v_fail(err, "--resume: %s has no checkpoint to resume from (no last.safetensors)", opt->run_dir);
    if (!opt->resume && has_last)
        return d2v_fail(err, "%s already holds a run (last.safetensors); continue it with --resume or choose another --run",
                        opt->run_dir);
    int removed = 0;
    if (scan_run_dir(opt->run_dir, kept, &removed, err) < 0)
        return -1;
    if (removed > 0 && opt->notice) {
        char msg[4300];
        snprintf(msg, sizeof msg, "%s: removed %d temporary file%s an interrupted write left behind", opt->run_dir,
                 removed, removed == 1 ? "" : "s");
        opt->notice(opt->ctx, msg);
    }
    return write_config_copy(opt, err);
}

/* A process killed while appending leaves a last line without its newline;
 * cut it, so the resumed run's lines start on a line of their own and every
 * line of log.jsonl stays one complete JSON object. */
static int repair_log_tail(const char *path, D2vError *err)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : d2v_fail(err, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) < 0) {
        rc = d2v_fail(err, "cannot stat %s: %s", path, strerror(errno));
    } else {
        off_t end = st.st_size, keep = 0;
        char buf[4096];
        while (end > 0) {
            off_t start = end > (off_t)sizeof buf ? end - (off_t)sizeof buf : 0;
            ssize_t n = pread(fd, buf, (size_t)(end - start), start);
            if (n != end - start) {
                rc = d2v_fail(err, "reading %s: %s", path, n < 0 ? strerror(errno) : "short read");
                break;
            }
            ssize_t i = n - 1;
            while (i >= 0 && buf[i] != '\n')
                i--;
            if (i >= 0) {
                keep = start + i + 1;
                break;
            }
            end = start;
        }
        if (rc == 0 && keep != st.st_size && ftruncate(fd, keep) < 0)
            rc = d2v_fail(err, "truncating the incomplete last line of %s: %s", path, strerror(errno));
    }
    close(fd);
    return rc;
}

/* ---- logging ------------------------------------------------------------------ */

/* JSON has no NaN or infinity: a non-finite value (a skipped update's
 * loss) is written as null, so every line stays valid JSON. */
static json_t *json_number(double x)
{
    return isfinite(x) ? json_real(x) : json_null();
}

static int log_jsonl(FILE *f, const char *path, const StepLog *s, D2vError *err)
{
    json_t *o = json_object();
    int bad = o == NULL;
    bad = bad || json_object_set_new(o, "step", json_integer((json_int_t)s->step));
    const struct { const char *key; double value; } reals[] = {
        {"loss", s->loss}, {"lr", s->lr}, {"tau", s->tau}, {"target_var", s->target_var},
        {"pred_var", s->pred_var}, {"frontend_var", s->frontend_var}, {"grad_norm", s->grad_norm},
        {"positions_per_s", s->positions_per_s},
    };
    for (size_t i = 0; i < sizeof reals / sizeof reals[0]; i++)
        bad = bad || json_object_set_new(o, reals[i].key, json_number(reals[i].value));
    bad = bad || json_object_set_new(o, "masked", json_integer(s->n_loss)) ||
          json_object_set_new(o, "positions", json_integer((json_int_t)s->positions)) ||
          json_object_set_new(o, "skipped", json_integer((json_int_t)s->skipped)) ||
          json_object_set_new(o, "nonfinite_skipped", json_integer((json_int_t)s->nonfinite_skipped)) ||
          json_object_set_new(o, "seconds", json_number(s->seconds));
    if (s->has_knn)
        bad = bad || json_object_set_new(o, "knn", json_real(s->knn)) ||
              json_object_set_new(o, "knn_top5", json_real(s->knn_top5));
    errno = 0;
    int rc = !bad && json_dumpf(o, f, JSON_COMPACT) == 0 && fputc('\n', f) != EOF && fflush(f) == 0 ? 0 : -1;
    int e = errno;
    json_decref(o);
    if (rc < 0)
        return d2v_fail(err, "writing %s: %s", path, bad ? "out of memory" : strerror(e ? e : EIO));
    return 0;
}

/* ---- one step ------------------------------------------------------------------ */

static double seconds_since(double *mark)
{
    const double now = d2v_now_seconds(), elapsed = now - *mark;
    *mark = now;
    return elapsed;
}

/* What one step sums over its micro-batches and, data parallel, over its
 * ranks (one MPI_Allreduce of doubles): the loss summed over masked
 * positions, their count, and per-channel sums and sums of squares of the
 * front-end output, the targets and the predictions, from which the
 * variances are computed as fairseq's compute_var does under DDP. */
enum { SUM_LOSS, SUM_COUNT, SUM_FE_COUNT, SUM_POSITIONS, SUM_STOP, SUM_SKIPPED, SUM_HEAD };
enum { MOM_FE, MOM_TARGET, MOM_PRED, N_MOMENTS }; /* each 2*D: sums, then squares */

static size_t sums_len(int D) { return SUM_HEAD + (size_t)N_MOMENTS * 2 * D; }

static void add_moments(double *sums, int which, const real *rows, const uint8_t *skip, int P, int D)
{
    double *sum = sums + SUM_HEAD + (size_t)which * 2 * D, *sq = sum + D;
    for (int p = 0; p < P; p++) {
        if (skip && skip[p])
            continue;
        const real *row = rows + (size_t)p * D;
        for (int d = 0; d < D; d++) {
            sum[d] += row[d];
            sq[d] += (double)row[d] * row[d];
        }
    }
}

/* fairseq's compute_var from all-reduced sums: the mean over channels of
 * sqrt(unbiased variance + 1e-6); 0 below two rows (d2v_channel_std). */
static double std_from_moments(const double *sums, int which, double count, int D)
{
    if (count < 2)
        return 0;
    const double *sum = sums + SUM_HEAD + (size_t)which * 2 * D, *sq = sum + D;
    double total = 0;
    for (int d = 0; d < D; d++) {
        double var = (sq[d] - sum[d] * sum[d] / count) / (count - 1);
        total += sqrt((var > 0 ? var : 0) + 1e-6);
    }
    return total / D;
}

/* Forward and backward of one micro-batch (DESIGN §3 steps 2-5), adding
 * its gradient into ps->grad (not zeroed here) and its statistics into
 * sums. Nothing is updated yet, so a non-finite result can still be
 * refused. The phase clocks are a handful of clock_gettime calls per step:
 * always on, so training and `d2v bench` run exactly the same code. */
static void micro_forward_backward(Model *m, const D2vConfig *cfg, const Batch *batch, int64_t step, double *sums,
                                   StepTimes *tm)
{
    const ForwardMode mode = {.train = 1, .seed = (uint64_t)cfg->train.seed, .step = (uint64_t)step,
                              .row0 = (uint64_t)batch->row0};
    const int D = m->d2v.encoder.dim;
    double mark = d2v_now_seconds();
    Rng mask_rng;
    rng_init(&mask_rng, (uint64_t)cfg->train.seed, rng_stream(STREAM_MASK, (uint64_t)step));

    /* Front-end: features, the mask, the student's and the teacher's input. */
    FrontendOut fe;
    m->mod->forward(m->frontend, m->ps.value, batch, &mask_rng, mode, &fe);
    add_moments(sums, MOM_FE, fe.x_teacher, fe.pad, fe.B * fe.N, D);
    for (int i = 0; i < fe.B * fe.N; i++)
        sums[SUM_FE_COUNT] += !(fe.pad && fe.pad[i]);
    sums[SUM_POSITIONS] += (double)fe.B * fe.N;
    tm->frontend_forward += seconds_since(&mark);

    /* Teacher targets, student prediction, loss, backward to the input. */
    d2v_teacher_targets(&m->d2v, &m->ps, &m->acts, fe.x_teacher, fe.pad, fe.B, fe.N);
    tm->teacher += seconds_since(&mark);
    StepStats stats;
    d2v_student_step(&m->d2v, &m->ps, &m->acts, fe.x_student, fe.loss_mask, fe.pad, fe.B, fe.N, mode, m->d_x,
                     &stats);
    tm->student += seconds_since(&mark);
    m->mod->backward(m->frontend, m->ps.value, m->ps.grad, m->d_x, mode);
    tm->frontend_backward += seconds_since(&mark);
    sums[SUM_LOSS] += stats.loss * stats.n_loss;
    sums[SUM_COUNT] += stats.n_loss;
    add_moments(sums, MOM_TARGET, m->acts.targets, NULL, stats.n_loss, D);
    add_moments(sums, MOM_PRED, m->acts.pred, NULL, stats.n_loss, D);
}

/* After the micro-batches (and the all-reduce): the gradient of the mean
 * over every masked position of the step, its norm, and the statistics. */
static void finish_gradient(Model *m, const double *sums, int parts, StepResult *r)
{
    const int D = m->d2v.encoder.dim;
    const double count = sums[SUM_COUNT];
    if (parts > 1 && count > 0) {
        /* Each part's gradient was of its sum of losses (loss_denominator
         * 1): divide by the count over all of them, so N ranks with B/N rows
         * make the update one process makes with B. */
        const real inv = (real)(1.0 / count);
        real *g = m->ps.grad;
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < m->ps.numel; i++)
            g[i] *= inv;
    }
    r->grad_norm = grad_global_norm(&m->ps);
    r->loss = count > 0 ? sums[SUM_LOSS] / count : 0;
    r->n_loss = (int)count;
    r->target_var = std_from_moments(sums, MOM_TARGET, count, D);
    r->pred_var = std_from_moments(sums, MOM_PRED, count, D);
    r->frontend_var = std_from_moments(sums, MOM_FE, sums[SUM_FE_COUNT], D);
}

void train_forward_backward(Model *m, const D2vConfig *cfg, const Batch *batch, int64_t step, StepResult *r,
                            StepTimes *times)
{
    StepTimes local;
    StepTimes *tm = times ? times : &local;
    memset(tm, 0, sizeof *tm);
    const int D = m->d2v.encoder.dim;
    double *sums = calloc(sums_len(D), sizeof *sums);
    if (!sums)
        abort(); /* a few KB; bench and tests only */
    params_zero_grad(&m->ps);
    m->d2v.loss_denominator = 0;
    micro_forward_backward(m, cfg, batch, step, sums, tm);
    finish_gradient(m, sums, 1, r);
    r->N = (int)(sums[SUM_POSITIONS] / batch->B);
    free(sums);
}

/* DESIGN §3 step 6: update the student, then move the teacher toward it
 * (eq. 1). */
void train_update(Model *m, const D2vConfig *cfg, const AdamW *adamw, const Schedule *sched, int64_t step,
                  StepResult *r, StepTimes *times)
{
    StepTimes local;
    StepTimes *tm = times ? times : &local;
    double mark = d2v_now_seconds();
    clip_grad_to(&m->ps, r->grad_norm, cfg->optim.clip_norm);
    r->lr = schedule_lr(sched, step);
    adamw_step(&m->ps, adamw, r->lr, step + 1);
    tm->optimizer = seconds_since(&mark);
    r->tau = ema_tau(cfg->ema.decay, cfg->ema.end_decay, cfg->ema.anneal_steps, step + 1);
    ema_update(&m->ps, r->tau);
    tm->ema = seconds_since(&mark);
}

/* "" when the loss and every gradient are finite; otherwise what is not,
 * naming the first offending tensor: the loss, or the first parameter (in
 * registration order) whose gradient holds a NaN or infinity. */
static void describe_nonfinite(const Model *m, const StepResult *r, char *out, size_t len)
{
    out[0] = 0;
    if (!isfinite(r->loss)) {
        snprintf(out, len, "the loss is %g", r->loss);
        return;
    }
    if (isfinite(r->grad_norm))
        return;
    int n_bad = 0;
    const int first = params_first_nonfinite(&m->ps, m->ps.grad, &n_bad);
    if (first < 0) /* only possible if the norm's sum of squares overflowed */
        snprintf(out, len, "the gradient norm is %g (loss %g)", r->grad_norm, r->loss);
    else
        snprintf(out, len, "the gradient of %s is non-finite (the first of %d tensors with a NaN or infinite "
                 "gradient; the loss is %g)", m->ps.params[first].name, n_bad, r->loss);
}

/* After this many non-finite updates in a row, even train.on_nonfinite=skip
 * stops: the model, not one unlucky batch, is broken, and skipping would
 * silently spin through the rest of the run. */
#define MAX_CONSECUTIVE_NONFINITE 20

/* Representation collapse (DESIGN §3.7): every target, prediction or
 * front-end vector becoming the same shows as a per-channel std near 0. */
static int check_collapse(const D2vConfig *cfg, const StepResult *r, int64_t step, const char *last, D2vError *err)
{
    if (step < cfg->train.var_check_after)
        return 0;
    const struct { const char *what; double value, floor; } v[] = {
        {"target_var (the teacher's targets)", r->target_var, cfg->train.min_target_var},
        {"pred_var (the student's predictions)", r->pred_var, cfg->train.min_pred_var},
        {"frontend_var (the front-end's output)", r->frontend_var, cfg->train.min_frontend_var},
    };
    for (int i = 0; i < 3; i++)
        if (v[i].floor > 0 && v[i].value < v[i].floor)
            return d2v_fail(err, "step %lld: representation collapse: %s fell to %.4g, below its floor %.4g; "
                            "stopping (last checkpoint: %s). A lower optim.lr or a slower EMA anneal "
                            "(ema.anneal_steps) usually helps",
                            (long long)step, v[i].what, v[i].value, v[i].floor, last);
    return 0;
}

/* ---- the periodic k-NN (eval.every) ------------------------------------------ */

typedef struct {
    int on;
    Pool pool;
    EvalSets sets;  /* open for the whole run; features overwritten each time */
} PeriodicEval;

#define BEST_KNN_NAME "best-knn.safetensors"

/* Opens eval.train and eval.test and reads every item once, so a missing,
 * empty, mislabeled or unreadable evaluation set stops the run before its
 * first step rather than at step eval.every. */
static int periodic_eval_open(const TrainOptions *opt, PeriodicEval *pe, D2vError *err)
{
    const D2vConfig *cfg = opt->cfg;
    memset(pe, 0, sizeof *pe);
    if (cfg->eval.every <= 0)
        return 0;
    pe->on = 1;
    if (pool_parse(cfg->eval.pool, &pe->pool) < 0)
        return d2v_fail(err, "eval.pool = %s: expected mean, cls or topk", cfg->eval.pool);
    if (eval_sets_open(&pe->sets, opt->mod, opt->mcfg, cfg->eval.train, cfg->eval.test, (int)cfg->model.dim, err) < 0 ||
        feature_set_check(&pe->sets.train, opt->mcfg, (int)cfg->eval.batch, err) < 0 ||
        feature_set_check(&pe->sets.test, opt->mcfg, (int)cfg->eval.batch, err) < 0) {
        char reason[D2V_ERR_LEN];
        snprintf(reason, sizeof reason, "%s", err->msg);
        return d2v_fail(err, "the periodic k-NN's data (eval.train, eval.test; eval.every = %lld): %s",
                        (long long)cfg->eval.every, reason);
    }
    return 0;
}

/* On --resume: the best score so far is in the resumed checkpoint; a
 * best-knn.safetensors written after it (the process died between the two)
 * may hold a better one, which a later, worse evaluation must not replace. */
static void adopt_best_file(const TrainOptions *opt, TrainState *best)
{
    char path[4096];
    if (path_in(path, sizeof path, opt->run_dir, BEST_KNN_NAME, NULL) < 0 || access(path, F_OK) != 0)
        return;
    TrainState on_disk;
    D2vError e;
    char msg[D2V_ERR_LEN + 4400];
    if (checkpoint_read_state(path, &on_disk, &e) < 0) {
        snprintf(msg, sizeof msg, "%s; it will be replaced by the next k-NN evaluation that beats the resumed "
                 "checkpoint's best", e.msg);
        if (opt->notice)
            opt->notice(opt->ctx, msg);
    } else if (on_disk.best_knn_step > 0 && (best->best_knn_step == 0 || on_disk.best_knn > best->best_knn)) {
        best->best_knn = on_disk.best_knn;
        best->best_knn_step = on_disk.best_knn_step;
    }
    if (best->best_knn_step > 0 && opt->notice) {
        snprintf(msg, sizeof msg, "best k-NN so far: top-1 %.4f at step %lld (%s)", best->best_knn,
                 (long long)best->best_knn_step, path);
        opt->notice(opt->ctx, msg);
    }
}

/* The k-NN probe of the student as it is now, with the code and settings of
 * `d2v eval knn --checkpoint` (evaluate.h); when it beats every earlier
 * score, the whole training state goes to RUNDIR/best-knn.safetensors,
 * written atomically like every checkpoint. Ties keep the earlier file. */
static int periodic_eval(const TrainOptions *opt, PeriodicEval *pe, Model *m, int64_t step, TrainState *best,
                         StepLog *log, D2vError *err)
{
    const D2vConfig *cfg = opt->cfg;
    ProbeResult r;
    if (eval_knn(&pe->sets, m, opt->mcfg, pe->pool, (int)cfg->eval.batch, (int)cfg->eval.k, &r, err) < 0) {
        char reason[D2V_ERR_LEN];
        snprintf(reason, sizeof reason, "%s", err->msg);
        return d2v_fail(err, "step %lld: the periodic k-NN failed: %s", (long long)step, reason);
    }
    log->has_knn = 1;
    log->knn = r.top1;
    log->knn_top5 = r.top5;
    log->new_best_knn = 0;
    if (best->best_knn_step > 0 && !(r.top1 > best->best_knn))
        return 0;
    TrainState next = {.best_knn_step = step, .best_knn = r.top1};
    if (dist_rank() != 0) {
        *best = next; /* rank 0 writes the file (or stops the job if it cannot) */
        return 0;
    }
    char path[4096];
    if (path_in(path, sizeof path, opt->run_dir, BEST_KNN_NAME, err) < 0)
        return -1;
    TrainState state = train_state(opt, step, &next);
    if (checkpoint_save(path, &m->ps, &state, opt->config_text, err) < 0) {
        char reason[D2V_ERR_LEN], previous[200] = "there is none yet";
        snprintf(reason, sizeof reason, "%s", err->msg);
        if (best->best_knn_step > 0)
            snprintf(previous, sizeof previous, "it still holds step %lld (top-1 %.4f)",
                     (long long)best->best_knn_step, best->best_knn);
        return d2v_fail(err, "%s; stopping. %s is intact: %s", reason, BEST_KNN_NAME, previous);
    }
    *best = next;
    log->new_best_knn = 1;
    if (opt->on_checkpoint)
        opt->on_checkpoint(opt->ctx, path);
    return 0;
}

/* Data parallel: the speech masker's same-count rule over every rank's
 * rows (Batch.agree_min). A failed collective is remembered and reported
 * after the forward. */
typedef struct {
    D2vError err;
    int failed;
} AgreeCtx;

static int agree_min(void *ctx, int value)
{
    AgreeCtx *a = ctx;
    if (!a->failed && dist_allreduce_min_int(&value, &a->err) < 0)
        a->failed = 1;
    return value;
}

/* Every rank must hold the same student, teacher and moments after the same
 * updates; a cheap checksum (a position-weighted sum of the parameters and
 * the teacher, in double) compared across ranks catches a divergence
 * (different threads' rounding never enters: every update is element-wise
 * on the same all-reduced gradient). */
static int check_ranks_agree(const Model *m, int64_t step, D2vError *err)
{
    double sum = 0;
    for (size_t i = 0; i < m->ps.numel; i++)
        sum += (double)m->ps.value[i] * (double)(1 + i % 251);
    for (size_t i = 0; i < m->ps.teacher_numel; i++)
        sum += (double)m->ps.teacher[i] * (double)(1 + i % 241);
    double both[2] = {sum, -sum};
    if (dist_allreduce_max_double(both, 2, err) < 0)
        return -1;
    if (both[0] != -both[1])
        return d2v_fail(err, "step %lld: the ranks no longer hold the same parameters (checksums from %.17g to "
                        "%.17g; this rank %d: %.17g); stopping. Every rank must run the same binary and config",
                        (long long)step, -both[1], both[0], dist_rank(), sum);
    return 0;
}

/* Setup failed on some rank: every rank learns it here (one collective),
 * so none waits in the first step's all-reduce for a rank that has quit. */
static int agree_setup(int failed, D2vError *err)
{
    double any = failed;
    D2vError comm;
    if (dist_allreduce_sum_double(&any, 1, &comm) < 0)
        return failed ? -1 : (*err = comm, -1);
    if (any > 0 && !failed)
        return d2v_fail(err, "rank %d: stopping because %.0f other rank%s failed to start (see %s message)",
                        dist_rank(), any, any == 1 ? "" : "s", any == 1 ? "its" : "their");
    return failed ? -1 : 0;
}

int train_run(const TrainOptions *opt, D2vError *err)
{
    const D2vConfig *cfg = opt->cfg;
    const int rank = dist_rank(), world = dist_world(), lead = rank == 0;
    const int update_freq = (int)cfg->train.update_freq, parts = world * update_freq;
    dist_set_timeout(cfg->train.dist_timeout);
    const int threads = train_set_threads(cfg->train.threads);
    Model m;
    memset(&m, 0, sizeof m);
    void *dataset = NULL;
    Loader *loader = NULL;
    FILE *log = NULL;
    double *sums = NULL;
    int rc = -1, lock_fd = -1;
    KeptCheckpoints kept = {0};
    int64_t last_saved = -1; /* step of the newest complete checkpoint, -1: none */
    char last_path[4096];
    PeriodicEval pe = {0};
    TrainState best = {0};   /* the best periodic k-NN so far (best_knn_step 0: none) */
    /* Each rank takes batch_size / world rows of every batch, in
     * update_freq micro-batches. */
    const int64_t B = cfg->train.batch_size;
    int failed = 0;
    if (B % parts != 0) {
        failed = 1;
        d2v_fail(err, "train.batch_size = %lld is the batch of one update over all ranks and micro-batches; it "
                 "must divide by ranks (%d) x train.update_freq (%d)", (long long)B, world, update_freq);
    }
    const int micro_rows = (int)(B / parts);
    /* The activations fit a micro-batch and an evaluation batch (eval.batch,
     * like `d2v eval --batch`, so both embed in the same batches). */
    int64_t rows = micro_rows;
    if (cfg->eval.every > 0 && cfg->eval.batch > rows)
        rows = cfg->eval.batch;
    /* Cheap checks first: the data, then the memory, then the run directory,
     * so a mistake is reported before anything is written. Only rank 0
     * writes into the run directory; every rank runs the periodic k-NN (the
     * same parameters give every rank the same score, and nobody waits). */
    if (!failed && (opt->mod->open(opt->mcfg, opt->data_path, 0, &dataset, err) < 0 ||
                    periodic_eval_open(opt, &pe, err) < 0 ||
                    model_build(&m, cfg, opt->mod, opt->mcfg, (int)rows, threads, err) < 0 ||
                    (lead ? prepare_run_dir(opt, last_path, sizeof last_path, &lock_fd, &kept, err)
                          : path_in(last_path, sizeof last_path, opt->run_dir, "last.safetensors", err)) < 0))
        failed = 1;
    if (agree_setup(failed, err) < 0)
        goto out;
    int64_t step = 0;
    if (opt->resume) {
        /* Load the file `last` names, so every message names it too. */
        char target[4096], resume_path[8200];
        ssize_t n = readlink(last_path, target, sizeof target - 1);
        if (n > 0 && target[0] != '/') {
            target[n] = 0;
            snprintf(resume_path, sizeof resume_path, "%s/%s", opt->run_dir, target);
        } else {
            snprintf(resume_path, sizeof resume_path, "%s", last_path);
        }
        TrainState state;
        failed = checkpoint_load(resume_path, &m.ps, &state, err) < 0;
        if (agree_setup(failed, err) < 0)
            goto out;
        step = last_saved = state.step;
        best.best_knn_step = state.best_knn_step;
        best.best_knn = state.best_knn;
        if (opt->notice && lead) {
            char msg[8600];
            snprintf(msg, sizeof msg, "resuming from %s (step %lld)", resume_path, (long long)step);
            opt->notice(opt->ctx, msg);
            if (state.world > 0 && state.world != world) {
                snprintf(msg, sizeof msg, "warning: %s was written by %d rank%s, this run has %d: each batch holds "
                         "the same rows, but they are split and summed in another order, so the run continues "
                         "the curve within float rounding, not bit for bit", resume_path, state.world,
                         state.world == 1 ? "" : "s", world);
                opt->notice(opt->ctx, msg);
            }
        }
        if (pe.on)
            adopt_best_file(opt, &best);
    }
    char log_path[4096];
    if (path_in(log_path, sizeof log_path, opt->run_dir, "log.jsonl", err) < 0)
        goto out;
    if (lead) {
        failed = (opt->resume && repair_log_tail(log_path, err) < 0);
        if (!failed && !(log = fopen(log_path, opt->resume ? "a" : "w"))) {
            d2v_fail(err, "cannot open %s: %s", log_path, strerror(errno));
            failed = 1;
        }
    }
    LoaderSpec spec = {opt->mod, opt->mcfg, dataset, (int)B, 1, (uint64_t)cfg->train.seed,
                       strcmp(cfg->data.on_error, "skip") == 0, step, opt->warn, opt->ctx,
                       micro_rows, rank * update_freq, update_freq};
    if (!failed && loader_start(&loader, &spec, err) < 0)
        failed = 1;
    const int D = m.d2v.encoder.dim;
    const size_t n_sums = sums_len(D);
    if (!failed && !(sums = d2v_malloc(n_sums * sizeof *sums, err)))
        failed = 1;
    if (agree_setup(failed, err) < 0)
        goto out;

    AdamW adamw = {cfg->optim.lr, cfg->optim.beta1, cfg->optim.beta2, cfg->optim.eps, cfg->optim.weight_decay};
    Schedule sched;
    schedule_from_config(&sched, cfg);
    const int skip_nonfinite = strcmp(cfg->train.on_nonfinite, "skip") == 0;
    int64_t skipped = 0, nonfinite_skipped = 0;
    int nonfinite_in_a_row = 0, stopped = 0;
    AgreeCtx agree = {{{0}}, 0};
    /* One update spans several parts: each part's gradient is of its summed
     * loss, divided by the global count once all are in. */
    m.d2v.loss_denominator = parts > 1 ? 1 : 0;
    double started = d2v_now_seconds();
    while (step < cfg->train.steps) {
        double t0 = d2v_now_seconds();
        StepTimes tm;
        memset(&tm, 0, sizeof tm);
        memset(sums, 0, n_sums * sizeof *sums);
        params_zero_grad(&m.ps);
        for (int part = 0; part < update_freq; part++) {
            Batch *batch;
            int got = loader_next(loader, &batch, err);
            if (got <= 0) {
                if (got == 0)
                    d2v_fail(err, "the data loader ended early");
                goto out;
            }
            sums[SUM_SKIPPED] += batch->skipped;
            batch->agree_min = world > 1 ? agree_min : NULL;
            batch->agree_ctx = &agree;
            micro_forward_backward(&m, cfg, batch, step, sums, &tm);
            if (agree.failed) {
                *err = agree.err;
                goto out;
            }
        }
        /* Data parallel: sum the statistics (and the stop flag: a signal to
         * any rank stops all of them after this step) and the gradients. */
        sums[SUM_STOP] = opt->stop_requested && *opt->stop_requested;
        if (dist_allreduce_sum_double(sums, n_sums, err) < 0 ||
            dist_allreduce_sum_float(m.ps.grad, m.ps.numel, err) < 0)
            goto out;
        StepResult r;
        finish_gradient(&m, sums, parts, &r);
        skipped += (int64_t)sums[SUM_SKIPPED];
        char nonfinite[512], last[4200];
        describe_nonfinite(&m, &r, nonfinite, sizeof nonfinite);
        step++;
        describe_checkpoint(last, sizeof last, opt->run_dir, last_saved);
        /* Every decision below reads all-reduced values, so every rank
         * takes the same branch. */
        if (nonfinite[0]) {
            /* Nothing was applied: the student, teacher and moments are
             * still those of the previous step. */
            nonfinite_in_a_row++;
            if (!skip_nonfinite || nonfinite_in_a_row >= MAX_CONSECUTIVE_NONFINITE) {
                char why[160] = "stopping without applying this update";
                if (skip_nonfinite)
                    snprintf(why, sizeof why, "that makes %d non-finite updates in a row, so stopping even with "
                             "train.on_nonfinite=skip", nonfinite_in_a_row);
                d2v_fail(err, "step %lld: %s; %s (last good checkpoint: %s). "
                         "Try a lower optim.lr, a longer warm-up or optim.clip_norm%s",
                         (long long)step, nonfinite, why, last,
                         skip_nonfinite ? "" : "; train.on_nonfinite=skip skips such updates instead");
                goto out;
            }
            nonfinite_skipped++;
            r.lr = schedule_lr(&sched, step - 1);
            r.tau = ema_tau(cfg->ema.decay, cfg->ema.end_decay, cfg->ema.anneal_steps, step);
            if (opt->notice && lead) {
                char msg[700];
                snprintf(msg, sizeof msg, "step %lld: %s; update not applied (train.on_nonfinite=skip)",
                         (long long)step, nonfinite);
                opt->notice(opt->ctx, msg);
            }
        } else {
            nonfinite_in_a_row = 0;
            train_update(&m, cfg, &adamw, &sched, step - 1, &r, NULL);
            if (check_collapse(cfg, &r, step, last, err) < 0)
                goto out;
        }
        if (world > 1 && cfg->train.sync_check_every > 0 &&
            (step % cfg->train.sync_check_every == 0 || step == 1 || step == cfg->train.steps) &&
            check_ranks_agree(&m, step, err) < 0)
            goto out;
        double seconds = d2v_now_seconds() - t0;
        StepLog s = {.step = step, .total_steps = cfg->train.steps, .loss = r.loss, .lr = r.lr, .tau = r.tau,
                     .grad_norm = r.grad_norm, .target_var = r.target_var, .pred_var = r.pred_var,
                     .frontend_var = r.frontend_var, .positions_per_s = sums[SUM_POSITIONS] / seconds,
                     .n_loss = r.n_loss, .positions = (int64_t)sums[SUM_POSITIONS], .skipped = skipped,
                     .nonfinite_skipped = nonfinite_skipped};
        /* Before the checkpoint, so it stores the best score including this
         * one (a resumed run must not replace a better best-knn). */
        const int eval_now = pe.on && (step % cfg->eval.every == 0 || step == cfg->train.steps);
        if (eval_now && periodic_eval(opt, &pe, &m, step, &best, &s, err) < 0)
            goto out;
        if (lead && (step % cfg->train.log_every == 0 || step == cfg->train.steps || step == 1 || nonfinite[0] ||
                     eval_now)) {
            s.seconds = d2v_now_seconds() - started;
            if (log_jsonl(log, log_path, &s, err) < 0)
                goto out;
            if (opt->on_log)
                opt->on_log(opt->ctx, &s);
        }
        const int stopping = sums[SUM_STOP] > 0 && step < cfg->train.steps;
        if ((cfg->train.save_every > 0 && step % cfg->train.save_every == 0) || step == cfg->train.steps || stopping) {
            if (!lead)
                last_saved = step; /* rank 0 writes it (or stops the job if it cannot) */
            else if (save_checkpoint(opt, &m, step, &best, &kept, &last_saved, err) < 0)
                goto out;
        }
        if (stopping) {
            stopped = 1;
            break;
        }
    }
    /* The other ranks wait here for rank 0's last checkpoint. */
    if (dist_barrier(err) < 0)
        goto out;
    rc = stopped;
out:
    loader_stop(loader);
    if (dataset)
        opt->mod->dataset_close(dataset);
    eval_sets_close(&pe.sets);
    if (log)
        fclose(log);
    if (lock_fd >= 0)
        close(lock_fd);
    free(kept.steps);
    free(sums);
    model_free(&m);
    return rc;
}
