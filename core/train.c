#include "train.h"

#include "checkpoint.h"
#include "ema.h"
#include "loader.h"

#include <errno.h>
#include <jansson.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int train_set_threads(int64_t threads)
{
    int n = threads > 0 ? (int)threads : omp_get_num_procs();
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

/* Points RUNDIR/last.safetensors at the newest checkpoint: a symlink made
 * under a temporary name and renamed over the old one, so `last` always
 * names a complete file. */
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
    return 0;
}

static int save_checkpoint(const TrainOptions *opt, const Model *m, int64_t step, int64_t *kept, int *n_kept,
                           D2vError *err)
{
    char name[64], path[4096];
    snprintf(name, sizeof name, "checkpoint-%08lld.safetensors", (long long)step);
    if (path_in(path, sizeof path, opt->run_dir, name, err) < 0)
        return -1;
    TrainState state = {step, {0}};
    rng_init(&state.rng, (uint64_t)opt->cfg->train.seed, 0);
    if (checkpoint_save(path, &m->ps, &state, opt->config_text, err) < 0 ||
        update_last(opt->run_dir, name, err) < 0)
        return -1;
    if (opt->on_checkpoint)
        opt->on_checkpoint(opt->ctx, path);
    /* Keep the newest train.keep_last files; `last` always points at one. */
    if (*n_kept > 0 && kept[*n_kept - 1] == step)
        return 0;
    kept[(*n_kept)++] = step;
    while (*n_kept > opt->cfg->train.keep_last) {
        snprintf(name, sizeof name, "checkpoint-%08lld.safetensors", (long long)kept[0]);
        if (path_in(path, sizeof path, opt->run_dir, name, err) == 0)
            unlink(path);
        memmove(kept, kept + 1, (size_t)(*n_kept - 1) * sizeof *kept);
        (*n_kept)--;
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

static int prepare_run_dir(const TrainOptions *opt, char *last_path, size_t len, D2vError *err)
{
    if (make_dirs(opt->run_dir, err) < 0)
        return -1;
    if (path_in(last_path, len, opt->run_dir, "last.safetensors", err) < 0)
        return -1;
    int has_last = access(last_path, F_OK) == 0;
    if (opt->resume && !has_last)
        return d2v_fail(err, "--resume: %s has no checkpoint to resume from (no last.safetensors)", opt->run_dir);
    if (!opt->resume && has_last)
        return d2v_fail(err, "%s already holds a run (last.safetensors); continue it with --resume or choose another --run",
                        opt->run_dir);
    char config_path[4096];
    if (path_in(config_path, sizeof config_path, opt->run_dir, "config.ini", err) < 0)
        return -1;
    FILE *f = fopen(config_path, "w");
    if (!f || fputs(opt->config_text, f) < 0 || fclose(f) != 0)
        return d2v_fail(err, "writing %s: %s", config_path, strerror(errno));
    return 0;
}

/* ---- logging ------------------------------------------------------------------ */

static int log_jsonl(FILE *f, const StepLog *s, D2vError *err)
{
    json_t *o = json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:i, s:I, s:f}", "step", (json_int_t)s->step,
                          "loss", s->loss, "lr", s->lr, "tau", s->tau, "target_var", s->target_var, "pred_var",
                          s->pred_var, "frontend_var", s->frontend_var, "grad_norm", s->grad_norm,
                          "positions_per_s", s->positions_per_s, "masked", s->n_loss, "skipped",
                          (json_int_t)s->skipped, "seconds", s->seconds);
    int rc = o && json_dumpf(o, f, JSON_COMPACT) == 0 && fputc('\n', f) != EOF && fflush(f) == 0 ? 0 : -1;
    json_decref(o);
    return rc < 0 ? d2v_fail(err, "writing the training log: %s", strerror(errno)) : 0;
}

/* ---- one step ------------------------------------------------------------------ */

static double seconds_since(double *mark)
{
    const double now = now_seconds(), elapsed = now - *mark;
    *mark = now;
    return elapsed;
}

/* DESIGN §3 steps 2-6 for one batch. The phase clocks are a handful of
 * clock_gettime calls per step: always on, so training and `d2v bench`
 * run exactly the same code. */
void train_step(Model *m, const D2vConfig *cfg, const AdamW *adamw, const Schedule *sched, const Batch *batch,
                int64_t step, StepResult *r, StepTimes *times)
{
    const ForwardMode mode = {.train = 1, .seed = (uint64_t)cfg->train.seed, .step = (uint64_t)step};
    StepTimes local;
    StepTimes *tm = times ? times : &local;
    double mark = now_seconds();
    Rng mask_rng;
    rng_init(&mask_rng, (uint64_t)cfg->train.seed, rng_stream(STREAM_MASK, (uint64_t)step));
    params_zero_grad(&m->ps);

    /* Front-end: features, the mask, the student's and the teacher's input. */
    FrontendOut fe;
    m->mod->forward(m->frontend, m->ps.value, batch, &mask_rng, mode, &fe);
    r->frontend_var = d2v_channel_std(fe.x_teacher, fe.pad, fe.B * fe.N, m->d2v.encoder.dim);
    tm->frontend_forward = seconds_since(&mark);

    /* Teacher targets, student prediction, loss, backward to the input. */
    d2v_teacher_targets(&m->d2v, &m->ps, &m->acts, fe.x_teacher, fe.pad, fe.B, fe.N);
    tm->teacher = seconds_since(&mark);
    StepStats stats;
    d2v_student_step(&m->d2v, &m->ps, &m->acts, fe.x_student, fe.loss_mask, fe.pad, fe.B, fe.N, mode, m->d_x,
                     &stats);
    tm->student = seconds_since(&mark);
    m->mod->backward(m->frontend, m->ps.value, m->ps.grad, m->d_x, mode);
    tm->frontend_backward = seconds_since(&mark);

    /* Update the student, then move the teacher toward it (eq. 1). */
    r->grad_norm = clip_grad_norm(&m->ps, cfg->optim.clip_norm);
    r->lr = schedule_lr(sched, step);
    adamw_step(&m->ps, adamw, r->lr, step + 1);
    tm->optimizer = seconds_since(&mark);
    r->tau = ema_tau(cfg->ema.decay, cfg->ema.end_decay, cfg->ema.anneal_steps, step + 1);
    ema_update(&m->ps, r->tau);
    tm->ema = seconds_since(&mark);

    r->loss = stats.loss;
    r->target_var = stats.target_var;
    r->pred_var = stats.pred_var;
    r->n_loss = stats.n_loss;
    r->N = fe.N;
}

/* Representation collapse (DESIGN §3.7): every target, prediction or
 * front-end vector becoming the same shows as a per-channel std near 0. */
static int check_health(const D2vConfig *cfg, const StepResult *r, int64_t step, const char *last, D2vError *err)
{
    if (!isfinite(r->loss) || !isfinite(r->grad_norm))
        return d2v_fail(err, "step %lld: the loss is %g and the gradient norm %g; stopping (last good checkpoint: %s). "
                        "Try a lower optim.lr or a longer warm-up",
                        (long long)step, r->loss, r->grad_norm, last);
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

int train_run(const TrainOptions *opt, D2vError *err)
{
    const D2vConfig *cfg = opt->cfg;
    const int threads = train_set_threads(cfg->train.threads);
    Model m;
    memset(&m, 0, sizeof m);
    void *dataset = NULL;
    Loader *loader = NULL;
    FILE *log = NULL;
    int rc = -1;
    int64_t kept[1024]; /* train.keep_last is at most 1000 (config.c) */
    int n_kept = 0;
    char last_path[4096];
    /* Cheap checks first: the data, then the memory, then the run directory,
     * so a mistake is reported before anything is written. */
    if (opt->mod->open(opt->mcfg, opt->data_path, 0, &dataset, err) < 0 ||
        model_build(&m, cfg, opt->mod, opt->mcfg, (int)cfg->train.batch_size, threads, err) < 0 ||
        prepare_run_dir(opt, last_path, sizeof last_path, err) < 0)
        goto out;
    int64_t step = 0;
    if (opt->resume) {
        TrainState state;
        if (checkpoint_load(last_path, &m.ps, &state, err) < 0)
            goto out;
        step = state.step;
    }
    char log_path[4096];
    if (path_in(log_path, sizeof log_path, opt->run_dir, "log.jsonl", err) < 0)
        goto out;
    if (!(log = fopen(log_path, opt->resume ? "a" : "w"))) {
        d2v_fail(err, "cannot open %s: %s", log_path, strerror(errno));
        goto out;
    }
    LoaderSpec spec = {opt->mod, opt->mcfg, dataset, (int)cfg->train.batch_size, 1, (uint64_t)cfg->train.seed,
                       strcmp(cfg->data.on_error, "skip") == 0, step, opt->warn, opt->ctx};
    if (loader_start(&loader, &spec, err) < 0)
        goto out;

    AdamW adamw = {cfg->optim.lr, cfg->optim.beta1, cfg->optim.beta2, cfg->optim.eps, cfg->optim.weight_decay};
    Schedule sched;
    schedule_from_config(&sched, cfg);
    int64_t skipped = 0;
    double started = now_seconds();
    while (step < cfg->train.steps) {
        Batch *batch;
        int got = loader_next(loader, &batch, err);
        if (got <= 0) {
            if (got == 0)
                d2v_fail(err, "the data loader ended early");
            goto out;
        }
        skipped += batch->skipped;
        double t0 = now_seconds();
        StepResult r;
        train_step(&m, cfg, &adamw, &sched, batch, step, &r, NULL);
        step++;
        double seconds = now_seconds() - t0;
        if (check_health(cfg, &r, step, last_path, err) < 0)
            goto out;
        if (step % cfg->train.log_every == 0 || step == cfg->train.steps || step == 1) {
            StepLog s = {step, cfg->train.steps, r.loss, r.lr, r.tau, r.grad_norm, r.target_var, r.pred_var,
                         r.frontend_var, (double)batch->B * m.N / seconds, now_seconds() - started, r.n_loss,
                         skipped};
            if (log_jsonl(log, &s, err) < 0)
                goto out;
            if (opt->on_log)
                opt->on_log(opt->ctx, &s);
        }
        int stopping = opt->stop_requested && *opt->stop_requested;
        if ((cfg->train.save_every > 0 && step % cfg->train.save_every == 0) || step == cfg->train.steps || stopping)
            if (save_checkpoint(opt, &m, step, kept, &n_kept, err) < 0)
                goto out;
        if (stopping)
            break;
    }
    rc = 0;
out:
    loader_stop(loader);
    if (dataset)
        opt->mod->dataset_close(dataset);
    if (log)
        fclose(log);
    model_free(&m);
    return rc;
}
