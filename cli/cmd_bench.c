/* cmd_bench.c — `d2v bench CONFIG`: full training steps on synthetic
 * inputs of the config's shape, timed by phase, with the step's analytic
 * FLOPs against an sgemm peak measured in the same process (issue 6). */
#include "args.h"
#include "cli.h"
#include "layers.h"
#include "loader.h"
#include "setup.h"
#include "train.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static void usage(FILE *out)
{
    fprintf(out,
            "usage: d2v bench CONFIG [--steps N] [--warmup W] [--threads T] [--data PATH]\n"
            "                        [--set section.key=value]...\n"
            "\n"
            "Builds the model of CONFIG and times W warm-up and N measured full training steps\n"
            "(front-end, teacher targets, student forward/backward with head and loss, clipping,\n"
            "AdamW, EMA: the step `d2v pretrain` runs) on random inputs of the configured shape\n"
            "and batch size; no dataset is read (text needs data.vocab_size when its tokenizer is\n"
            "absent). Prints the median step time with min and max, positions/s, the median time\n"
            "of each phase, the step's matmul FLOPs (2*M*N*K per GEMM, backward twice forward)\n"
            "and the GFLOP/s they make, the sgemm peak measured here (2048^3, best of 5 before\n"
            "and 5 after the steps, the better kept; same threads; with the matmul the step\n"
            "uses: d2v's AVX-512 kernel where the CPU has AVX-512, else OpenBLAS; OpenBLAS's\n"
            "own rate is printed beside it), MFU = achieved/peak, and the peak resident memory.\n"
            "The last line is machine-readable:\n"
            "  d2v step_ms=.. min_ms=.. max_ms=.. positions_per_s=.. gflops=.. mfu=.. rss_mb=..\n"
            "\n"
            "  --steps N      measured steps (default 10)\n"
            "  --warmup W     untimed steps first (default 2)\n"
            "  --threads T    OpenMP and OpenBLAS threads (default train.threads; 0 = all cores)\n"
            "  --data PATH    also time the data loader alone on this training data (what\n"
            "                 `d2v pretrain --data` reads): images/s, seconds of audio/s or\n"
            "                 tokens/s, against what the measured step consumes\n"
            "  --set k=v      override a config key, e.g. --set train.batch_size=8\n"
            "\n"
            "D2V_GEMM=openblas in the environment runs every matmul on OpenBLAS instead.\n");
}

static int compare_doubles(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median of n values; sorts a copy in scratch. */
static double median(const double *values, int n, double *scratch)
{
    memcpy(scratch, values, (size_t)n * sizeof *scratch);
    qsort(scratch, (size_t)n, sizeof *scratch, compare_doubles);
    return n % 2 ? scratch[n / 2] : 0.5 * (scratch[n / 2 - 1] + scratch[n / 2]);
}

/* An sgemm's rate at the current thread count: the best of a few 2048^3
 * products. The MFU is measured against the one the step runs on
 * (d2v_sgemm); OpenBLAS's is printed beside it. */
#define PEAK_N 2048
#define PEAK_TRIES 5
static int sgemm_peak_gflops(int openblas, double *gflops, D2vError *err)
{
    const size_t n = PEAK_N, elems = n * n;
    float *a = d2v_malloc(elems * sizeof(float), err), *b = d2v_malloc(elems * sizeof(float), err),
          *c = d2v_malloc(elems * sizeof(float), err);
    if (!a || !b || !c) {
        free(a);
        free(b);
        free(c);
        return -1;
    }
    for (size_t i = 0; i < elems; i++) {
        a[i] = (float)(i % 13) * 0.01f;
        b[i] = (float)(i % 7) * 0.02f;
        c[i] = 0;
    }
    double best = 1e30;
    for (int t = 0; t < PEAK_TRIES + 1; t++) { /* the first call warms up the BLAS threads */
        const double t0 = d2v_now_seconds();
        (openblas ? cblas_sgemm : d2v_sgemm)(CblasRowMajor, CblasNoTrans, CblasNoTrans, PEAK_N, PEAK_N, PEAK_N, 1.0f,
                                             a, PEAK_N, b, PEAK_N, 0.0f, c, PEAK_N);
        const double seconds = d2v_now_seconds() - t0;
        if (t > 0 && seconds < best)
            best = seconds;
    }
    free(a);
    free(b);
    free(c);
    *gflops = 2.0 * (double)n * n * n / best * 1e-9;
    return 0;
}

static int parse_count(const char *text, const char *name, int lo, int *out)
{
    char *end;
    long v = text ? strtol(text, &end, 10) : 0;
    if (!text || *end || v < lo || v > 1000000) {
        fprintf(stderr, "d2v bench: %s %s: expected an integer >= %d\n", name, text ? text : "(missing)", lo);
        return -1;
    }
    *out = (int)v;
    return 0;
}

#define N_PHASES 6

typedef struct {
    int steps, warmup, threads;
    const char *config, *data;
} BenchArgs;

/* The loader alone (background decoding and augmentation, as in training)
 * for at least LOADER_SECONDS and LOADER_BATCHES batches. */
#define LOADER_SECONDS 3.0
#define LOADER_BATCHES 5
static int loader_rate(Setup *s, const char *path, void *dataset, double open_s, double step_s, D2vError *err)
{
    const D2vConfig *cfg = &s->cfg;
    Loader *loader = NULL;
    const LoaderSpec spec = {.mod = s->mod, .mcfg = s->mcfg, .dataset = dataset,
                             .batch_size = (int)cfg->train.batch_size, .train = 1, .seed = (uint64_t)cfg->train.seed,
                             .skip_bad = strcmp(cfg->data.on_error, "skip") == 0};
    int rc = loader_start(&loader, &spec, err);
    double amount = 0, first_amount = 0;
    int batches = 0, items = 0;
    const char *unit = "items";
    double t0 = 0, seconds = 0;
    while (rc == 0) {
        Batch *batch;
        const int got = loader_next(loader, &batch, err);
        if (got < 0) {
            rc = -1;
            break;
        }
        if (got == 0)
            break;
        const double a = s->mod->batch_amount(s->mcfg, batch, &unit);
        if (batches == 0) { /* the clock starts once the first batch is in: start-up is not throughput */
            t0 = d2v_now_seconds();
            first_amount = a;
        }
        amount += a;
        items += batch->B;
        batches++;
        seconds = d2v_now_seconds() - t0;
        if (batches > LOADER_BATCHES && seconds >= LOADER_SECONDS)
            break;
    }
    if (loader)
        loader_stop(loader);
    if (rc < 0)
        return -1;
    if (batches < 2)
        return d2v_fail(err, "--data %s: fewer than two training batches of %lld", path,
                        (long long)cfg->train.batch_size);
    const double rate = (amount - first_amount) / seconds, per_batch = amount / batches;
    const double needed = per_batch / step_s;
    /* Opening scans a directory, or reads and tokenizes a whole text corpus
     * once (text batches are then slices of it). */
    printf("data opened     %9.2f s (%d items)\n", open_s, s->mod->dataset_size(dataset));
    printf("loader          %9.1f %s/s (%.1f batches/s, %d items in %d batches; background thread, as in "
           "training)\n", rate, unit, (double)(batches - 1) / seconds, items, batches);
    printf("step consumes   %9.1f %s/s: the loader is %.1fx ahead%s\n", needed, unit, rate / needed,
           rate < needed ? " (BEHIND: training would wait for data)" : "");
    return 0;
}

static int run_bench(Setup *s, const BenchArgs *args, D2vError *err)
{
    const D2vConfig *cfg = &s->cfg;
    const int threads = train_set_threads(args->threads >= 0 ? args->threads : cfg->train.threads);
    const int B = (int)cfg->train.batch_size;
    if (!s->mod->synthetic_batch || !s->mod->flops)
        return d2v_fail(err, "modality %s has no synthetic inputs for benchmarking", s->mod->name);
    Model m;
    Batch batch;
    memset(&m, 0, sizeof m);
    memset(&batch, 0, sizeof batch);
    int rc = -1;
    /* The data is opened first, so a wrong path fails before minutes of steps. */
    void *dataset = NULL;
    double open_s = 0;
    if (args->data) {
        if (!s->mod->batch_amount)
            return d2v_fail(err, "modality %s cannot report a loader rate", s->mod->name);
        const double t0 = d2v_now_seconds();
        if (s->mod->open(s->mcfg, args->data, 0, &dataset, err) < 0)
            return d2v_fail_prefix(err, "--data %s: ", args->data);
        open_s = d2v_now_seconds() - t0;
    }
    const int n = args->steps;
    double *totals = calloc((size_t)n, sizeof *totals), *phases = calloc((size_t)n * N_PHASES, sizeof *phases),
           *scratch = calloc((size_t)n, sizeof *scratch);
    if (!totals || !phases || !scratch) {
        d2v_fail(err, "out of memory");
        goto out;
    }
    /* The peak is measured before the steps and again after them, and the
     * better of the two kept: on a shared machine one window of a few
     * seconds can be slow, and a low peak flatters the MFU. Before the model
     * exists, its matrices do not raise the peak RSS the steps report. */
    double peak_before;
    if (sgemm_peak_gflops(0, &peak_before, err) < 0)
        goto out;
    if (model_build(&m, cfg, s->mod, s->mcfg, B, threads, err) < 0 || s->mod->batch_alloc(s->mcfg, B, &batch, err) < 0)
        goto out;
    Rng data_rng;
    rng_init(&data_rng, (uint64_t)cfg->train.seed, rng_stream(STREAM_SYNTHETIC, 0));
    s->mod->synthetic_batch(m.frontend, s->mcfg, B, &data_rng, &batch);

    AdamW adamw = {cfg->optim.lr, cfg->optim.beta1, cfg->optim.beta2, cfg->optim.eps, cfg->optim.weight_decay};
    Schedule sched;
    schedule_from_config(&sched, cfg);
    double loss_positions = 0;
    int N = m.N;
    for (int step = 0; step < args->warmup + n; step++) {
        StepResult r;
        StepTimes tm;
        const double t0 = d2v_now_seconds();
        train_forward_backward(&m, cfg, &batch, step, &r, &tm);
        if (!isfinite(r.loss) || !isfinite(r.grad_norm)) {
            d2v_fail(err, "step %d: the loss is %g and the gradient norm %g", step + 1, r.loss, r.grad_norm);
            goto out;
        }
        train_update(&m, cfg, &adamw, &sched, step, &r, &tm);
        const double seconds = d2v_now_seconds() - t0;
        const int i = step - args->warmup;
        if (i < 0)
            continue;
        totals[i] = seconds;
        const double p[N_PHASES] = {tm.frontend_forward, tm.frontend_backward, tm.teacher, tm.student, tm.optimizer,
                                    tm.ema};
        for (int k = 0; k < N_PHASES; k++)
            phases[(size_t)k * n + i] = p[k];
        loss_positions += r.n_loss;
        N = r.N;
    }
    /* Peak RSS of the training steps, before the peak measurement's own
     * matrices can raise it. */
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    const double rss_mb = (double)usage.ru_maxrss / 1024.0;
    double peak, openblas_peak;
    if (sgemm_peak_gflops(0, &peak, err) < 0 || sgemm_peak_gflops(1, &openblas_peak, err) < 0)
        goto out;
    peak = peak_before > peak ? peak_before : peak;

    const double step_s = median(totals, n, scratch);
    double lo = totals[0], hi = totals[0];
    for (int i = 1; i < n; i++) {
        lo = totals[i] < lo ? totals[i] : lo;
        hi = totals[i] > hi ? totals[i] : hi;
    }
    const int P = (int)(loss_positions / n + 0.5);
    const D2vFlops f = d2v_flops(&m.d2v, B, N, P);
    double fe_fwd, fe_bwd;
    s->mod->flops(m.frontend, B, &fe_fwd, &fe_bwd);
    const double flops = f.teacher + f.student + f.head + fe_fwd + fe_bwd;
    const double gflops = flops / step_s * 1e-9, mfu = gflops / peak;
    const double positions_per_s = (double)B * N / step_s;
    const Transformer *t = &m.d2v.encoder;

    printf("d2v bench %s: %s, B=%d N=%d D=%d layers=%d heads=%d ffn=%d, %d threads, %d steps after %d warm-up\n",
           args->config, s->mod->name, B, N, t->dim, t->layers, t->heads, t->ffn_dim, threads, n, args->warmup);
    printf("step            %9.1f ms median (min %.1f, max %.1f)\n", step_s * 1e3, lo * 1e3, hi * 1e3);
    printf("positions/s     %9.0f\n", positions_per_s);
    static const char *const phase_names[N_PHASES] = {"front-end fwd", "front-end bwd", "teacher fwd",
                                                       "student fwd+bwd", "optimizer", "EMA"};
    printf("phases (median ms, share of the median step):\n");
    for (int k = 0; k < N_PHASES; k++) {
        const double ms = median(phases + (size_t)k * n, n, scratch) * 1e3;
        printf("  %-16s %9.1f  %5.1f%%\n", phase_names[k], ms, 100 * ms / (step_s * 1e3));
    }
    printf("flops/step      %9.2f GFLOP (teacher %.2f, student fwd+bwd %.2f, head %.2f, front-end fwd %.2f bwd %.2f;"
           " %d loss positions)\n",
           flops * 1e-9, f.teacher * 1e-9, f.student * 1e-9, f.head * 1e-9, fe_fwd * 1e-9, fe_bwd * 1e-9, P);
    printf("achieved        %9.1f GFLOP/s\n", gflops);
    printf("sgemm peak      %9.1f GFLOP/s (%s, %d^3, best of %d before and %d after the steps, %d threads;"
           " OpenBLAS here %.1f)\n",
           peak, d2v_sgemm_name(), PEAK_N, PEAK_TRIES, PEAK_TRIES, threads, openblas_peak);
    printf("MFU             %9.3f\n", mfu);
    printf("peak RSS        %9.1f MB\n", rss_mb);
    if (dataset && loader_rate(s, args->data, dataset, open_s, step_s, err) < 0)
        goto out;
    printf("d2v step_ms=%.2f min_ms=%.2f max_ms=%.2f positions_per_s=%.1f gflops=%.2f mfu=%.4f rss_mb=%.1f\n",
           step_s * 1e3, lo * 1e3, hi * 1e3, positions_per_s, gflops, mfu, rss_mb);
    rc = 0;
out:
    if (batch.B || batch.data || batch.tokens)
        s->mod->batch_free(&batch);
    model_free(&m);
    if (dataset)
        s->mod->dataset_close(dataset);
    free(totals);
    free(phases);
    free(scratch);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    BenchArgs args = {10, 2, -1, NULL, NULL};
    int n_sets = 0;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    if (!sets) {
        fprintf(stderr, "d2v bench: out of memory\n");
        return 1;
    }
    for (int i = 0; i < argc; i++) {
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        int bad = 0;
        if (strcmp(argv[i], "--steps") == 0)
            bad = parse_count(value, "--steps", 1, &args.steps), i++;
        else if (strcmp(argv[i], "--warmup") == 0)
            bad = parse_count(value, "--warmup", 0, &args.warmup), i++;
        else if (strcmp(argv[i], "--threads") == 0)
            bad = parse_count(value, "--threads", 0, &args.threads), i++;
        else if (strcmp(argv[i], "--data") == 0 && value)
            args.data = argv[++i];
        else if (strcmp(argv[i], "--set") == 0 && value)
            sets[n_sets++] = argv[++i];
        else if (argv[i][0] != '-' && !args.config)
            args.config = argv[i];
        else {
            fprintf(stderr, "d2v bench: unexpected argument '%s' (see d2v bench --help)\n", argv[i]);
            bad = -1;
        }
        if (bad) {
            free(sets);
            return 2;
        }
    }
    if (!args.config) {
        fprintf(stderr, "d2v bench: CONFIG is required (see d2v bench --help)\n");
        free(sets);
        return 2;
    }
    Setup s;
    D2vError err;
    int rc = setup_from_file(&s, args.config, n_sets, sets, &err);
    free(sets);
    if (rc == 0)
        rc = run_bench(&s, &args, &err);
    setup_free(&s);
    return rc < 0 ? fail("bench", &err) : 0;
}
