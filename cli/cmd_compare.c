/* cmd_compare.c — `d2v compare`: the identical data2vec objective on several
 * modalities for the same wall-clock budget, k-NN before and after, and one
 * side-by-side report (issue 9). Each modality in turn: time two synthetic
 * steps to size train.steps to the budget (so the LR and EMA schedules run
 * their whole course), k-NN of the initial weights, pretrain until the steps
 * are done or the budget is spent, k-NN of the result. Then report.md and
 * curves.png in the output directory, and the config diff on stdout. */
#include "args.h"
#include "checkpoint.h"
#include "cli.h"
#include "loader.h"
#include "plot.h"
#include "probe.h"
#include "runlog.h"
#include "setup.h"
#include "train.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define MAX_RUNS 8
#define MAX_KEYS 256

static void usage(FILE *out)
{
    fprintf(out,
            "usage: d2v compare --configs A.ini,B.ini,... --data DATA_A,DATA_B,...\n"
            "                   --eval TRAIN_A:TEST_A,TRAIN_B:TEST_B,... --minutes M --out DIR\n"
            "                   [--threads N] [--set section.key=value]...\n"
            "\n"
            "Pretrains each config (one per modality) for M minutes of wall clock on its\n"
            "DATA, with train.steps sized to the budget from two timed synthetic steps (so the\n"
            "learning-rate and EMA schedules run their whole course), and measures k-NN top-1\n"
            "(cosine, k 20, T 0.07, mean pooling) on its labeled TRAIN:TEST split with the\n"
            "initial weights and with the pretrained ones. Writes DIR/runs/<name>/ (the runs),\n"
            "DIR/report.md and DIR/curves.png: masked fraction, target_var, pred_var and loss\n"
            "against minutes, k-NN before/after, throughput, and the config diff (what\n"
            "differs between the modalities and what is identical), also printed.\n"
            "--set applies to every config (e.g. --set train.batch_size=16).\n");
}

/* "a,b,c" -> up to max pieces (the string is modified). */
static int split(char *s, char sep, char **out, int max)
{
    int n = 0;
    for (char *p = s; p && n < max;) {
        out[n++] = p;
        p = strchr(p, sep);
        if (p)
            *p++ = 0;
    }
    return n;
}

typedef struct {
    char name[64];
    const char *config, *data, *eval_train, *eval_test;
    Setup setup;
    double knn_before, knn_after, seconds, positions_per_s;
    int64_t steps_planned, steps_done;
    RunLog log;
} Run;

static volatile sig_atomic_t stop_flag;
static double budget_seconds;

static void on_log(void *ctx, const StepLog *s)
{
    (void)ctx;
    if (s->seconds >= budget_seconds)
        stop_flag = 1;
    fprintf(stderr, "\r  step %lld/%lld  loss %.4f  target_var %.3f  pred_var %.3f  %.0fs   ", (long long)s->step,
            (long long)s->total_steps, s->loss, s->target_var, s->pred_var, s->seconds);
}

static void on_warn(void *ctx, const char *msg)
{
    (void)ctx;
    fprintf(stderr, "\nd2v compare: warning: %s\n", msg);
}

/* Seconds per training step on synthetic inputs of the configured shape
 * (the median of two after one warm-up step). */
static int time_step(Setup *s, double *seconds, D2vError *err)
{
    const D2vConfig *cfg = &s->cfg;
    if (!s->mod->synthetic_batch)
        return d2v_fail(err, "modality %s has no synthetic inputs to time a step", s->mod->name);
    const int threads = train_set_threads(cfg->train.threads), B = (int)cfg->train.batch_size;
    Model m;
    Batch batch;
    memset(&batch, 0, sizeof batch);
    int rc = model_build(&m, cfg, s->mod, s->mcfg, B, threads, err) < 0 ||
             s->mod->batch_alloc(s->mcfg, B, &batch, err) < 0 ? -1 : 0;
    if (rc == 0) {
        Rng rng;
        rng_init(&rng, 1, rng_stream(STREAM_SYNTHETIC, 0));
        s->mod->synthetic_batch(m.frontend, s->mcfg, B, &rng, &batch);
        AdamW adamw = {cfg->optim.lr, cfg->optim.beta1, cfg->optim.beta2, cfg->optim.eps, cfg->optim.weight_decay};
        Schedule sched;
        schedule_from_config(&sched, cfg);
        double t[3];
        for (int i = 0; i < 3; i++) {
            StepResult r;
            const double t0 = d2v_now_seconds();
            train_forward_backward(&m, cfg, &batch, i, &r, NULL);
            train_update(&m, cfg, &adamw, &sched, i, &r, NULL);
            t[i] = d2v_now_seconds() - t0;
        }
        *seconds = fmin(t[1], t[2]) + 0.5 * fabs(t[1] - t[2]);
    }
    if (batch.B || batch.data || batch.tokens)
        s->mod->batch_free(&batch);
    model_free(&m);
    return rc;
}

/* The k-NN of `d2v eval knn` (mean pooling, k 20, batches of 64). */
static int knn(const Run *r, const char *checkpoint, double *top1, D2vError *err)
{
    Setup s;
    Model m;
    EvalSets sets = {0};
    ProbeResult p = {0, 0};
    int rc = setup_model(&s, &m, checkpoint, checkpoint ? NULL : r->config, 64, err) < 0 ||
             eval_sets_open(&sets, s.mod, s.mcfg, r->eval_train, r->eval_test, m.d2v.encoder.dim, err) < 0 ||
             eval_knn(&sets, &m, s.mcfg, POOL_MEAN, 64, 20, &p, err) < 0 ? -1 : 0;
    eval_sets_close(&sets);
    model_free(&m);
    setup_free(&s);
    *top1 = p.top1;
    return rc;
}

/* ---- the config diff ----------------------------------------------------------------- */

typedef struct {
    char key[200];
    char value[MAX_RUNS][256];
    int present[MAX_RUNS];
} KeyRow;

/* "section.key" -> value, from the resolved INI text of each run. */
static int collect_keys(Run *runs, int n, KeyRow *rows, int max)
{
    int n_rows = 0;
    for (int r = 0; r < n; r++) {
        char section[64] = "";
        for (const char *line = runs[r].setup.text; line && *line;) {
            const char *end = strchr(line, '\n');
            char buf[512], name[128], value[256];
            snprintf(buf, sizeof buf, "%.*s", (int)(end ? end - line : (long)strlen(line)), line);
            if (sscanf(buf, " [%63[^]]]", section) == 1) {
            } else if (sscanf(buf, " %127[^ =] = %255[^\n]", name, value) >= 1 && buf[0] != ';' && buf[0] != '#' &&
                       strchr(buf, '=')) {
                if (!strchr(buf, '=')[1] || sscanf(buf, " %127[^ =] = %255[^\n]", name, value) < 2)
                    value[0] = 0;
                char key[200];
                snprintf(key, sizeof key, "%s.%s", section, name);
                int i = 0;
                while (i < n_rows && strcmp(rows[i].key, key) != 0)
                    i++;
                if (i == n_rows && n_rows < max) {
                    memset(&rows[n_rows], 0, sizeof rows[n_rows]);
                    snprintf(rows[n_rows].key, sizeof rows[n_rows].key, "%s", key);
                    n_rows++;
                }
                if (i < n_rows) {
                    snprintf(rows[i].value[r], sizeof rows[i].value[r], "%s", value);
                    rows[i].present[r] = 1;
                }
            }
            line = end ? end + 1 : NULL;
        }
    }
    return n_rows;
}

static int row_identical(const KeyRow *k, int n)
{
    for (int r = 0; r < n; r++)
        if (!k->present[r] || strcmp(k->value[r], k->value[0]) != 0)
            return 0;
    return 1;
}

/* The diff as Markdown: a table of the keys that differ, then the list of
 * identical ones. Written to every stream in outs. */
static void write_diff(FILE *f, const Run *runs, int n, const KeyRow *rows, int n_rows)
{
    fprintf(f, "### What differs\n\n| key |");
    for (int r = 0; r < n; r++)
        fprintf(f, " %s |", runs[r].name);
    fprintf(f, "\n|---|");
    for (int r = 0; r < n; r++)
        fprintf(f, "---|");
    fprintf(f, "\n");
    for (int i = 0; i < n_rows; i++) {
        if (row_identical(&rows[i], n))
            continue;
        fprintf(f, "| `%s` |", rows[i].key);
        for (int r = 0; r < n; r++)
            fprintf(f, " %s |", rows[i].present[r] ? (rows[i].value[r][0] ? rows[i].value[r] : "\"\"") : "—");
        fprintf(f, "\n");
    }
    fprintf(f, "\n### What is identical\n\n");
    int first = 1;
    for (int i = 0; i < n_rows; i++)
        if (row_identical(&rows[i], n)) {
            fprintf(f, "%s`%s = %s`", first ? "" : ", ", rows[i].key, rows[i].value[0]);
            first = 0;
        }
    fprintf(f, "%s\n", first ? "(nothing)" : "");
}

/* ---- the pictures -------------------------------------------------------------------------- */

static int write_curves(const Run *runs, int n, const char *path, D2vError *err)
{
    Canvas c;
    if (canvas_init(&c, 2 * PLOT_PANEL_W, 2 * PLOT_PANEL_H + 2 * PLOT_HEADER_H, RGB_WHITE, err) < 0)
        return -1;
    Series s[MAX_RUNS];
    double *x[MAX_RUNS], *frac[MAX_RUNS];
    for (int r = 0; r < n; r++) {
        const RunLog *l = &runs[r].log;
        x[r] = malloc((size_t)l->n * sizeof(double));
        frac[r] = malloc((size_t)l->n * sizeof(double));
        for (int i = 0; i < l->n; i++) {
            x[r][i] = l->col[LOG_SECONDS][i] / 60.0;
            frac[r][i] = l->col[LOG_MASKED][i] / l->col[LOG_POSITIONS][i];
        }
    }
    const struct {
        const char *title;
        int key; /* -1: masked fraction */
    } panels[4] = {{"masked fraction", -1}, {"target_var", LOG_TARGET_VAR}, {"pred_var", LOG_PRED_VAR},
                   {"loss", LOG_LOSS}};
    for (int p = 0; p < 4; p++) {
        for (int r = 0; r < n; r++)
            s[r] = (Series){runs[r].name, x[r], panels[p].key < 0 ? frac[r] : runs[r].log.col[panels[p].key],
                            runs[r].log.n, plot_color(r)};
        plot_panel(&c, (p % 2) * PLOT_PANEL_W, PLOT_HEADER_H + (p / 2) * PLOT_PANEL_H, panels[p].title, "minutes", s,
                   n, 0);
    }
    plot_legend(&c, 8, 8, s, n);
    draw_text(&c, 8, 2 * PLOT_PANEL_H + PLOT_HEADER_H + 8, "same objective, same wall-clock budget; x: minutes", 2,
              RGB_GREY);
    for (int r = 0; r < n; r++) {
        free(x[r]);
        free(frac[r]);
    }
    int rc = canvas_save(&c, path, err);
    canvas_free(&c);
    return rc;
}

static double mean_of(const double *v, int n, int from)
{
    double sum = 0;
    int count = 0;
    for (int i = from; i < n; i++)
        if (isfinite(v[i])) {
            sum += v[i];
            count++;
        }
    return count ? sum / count : NAN;
}

int cmd_compare(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    char *sets[64];
    int n_sets = 0;
    char **rest = calloc((size_t)argc + 1, sizeof *rest);
    int n_rest = 0;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--set") == 0 && i + 1 < argc && n_sets < 60)
            sets[n_sets++] = argv[++i];
        else
            rest[n_rest++] = argv[i];
    }
    Option o[] = {{"--configs", 1, NULL}, {"--data", 1, NULL}, {"--eval", 1, NULL}, {"--minutes", 1, NULL},
                  {"--out", 1, NULL},     {"--threads", 1, NULL}};
    const int no = sizeof o / sizeof *o;
    int prc = parse_options("compare", n_rest, rest, o, no);
    free(rest);
    if (prc < 0)
        return 2;
    const char *configs = option(o, no, "--configs"), *data = option(o, no, "--data"), *eval = option(o, no, "--eval");
    const char *minutes = option(o, no, "--minutes"), *out = option(o, no, "--out"), *threads = option(o, no, "--threads");
    if (!configs || !data || !eval || !minutes || !out) {
        fprintf(stderr, "d2v compare: --configs, --data, --eval, --minutes and --out are required\n");
        usage(stderr);
        return 2;
    }
    char *end;
    budget_seconds = 60 * strtod(minutes, &end);
    if (*end || !(budget_seconds > 0)) {
        fprintf(stderr, "d2v compare: --minutes %s: expected a positive number\n", minutes);
        return 2;
    }
    char *cfg_copy = strdup(configs), *data_copy = strdup(data), *eval_copy = strdup(eval);
    char *cfg_list[MAX_RUNS], *data_list[MAX_RUNS], *eval_list[MAX_RUNS];
    const int n = split(cfg_copy, ',', cfg_list, MAX_RUNS);
    const int nd = split(data_copy, ',', data_list, MAX_RUNS), ne = split(eval_copy, ',', eval_list, MAX_RUNS);
    D2vError err;
    int rc = 0;
    if (nd != n || ne != n) {
        rc = d2v_fail(&err, "--configs names %d configs but --data has %d entries and --eval %d (one each, in order)",
                      n, nd, ne);
        goto done;
    }
    char thread_set[64];
    if (threads) {
        snprintf(thread_set, sizeof thread_set, "train.threads=%s", threads);
        sets[n_sets++] = thread_set;
    }
    if (mkdir(out, 0755) < 0 && errno != EEXIST) {
        rc = d2v_fail(&err, "cannot create %s: %s", out, strerror(errno));
        goto done;
    }
    Run *runs = calloc((size_t)n, sizeof *runs);
    for (int r = 0; r < n && rc == 0; r++) {
        Run *run = &runs[r];
        run->config = cfg_list[r];
        run->data = data_list[r];
        char *colon = strchr(eval_list[r], ':');
        if (!colon) {
            rc = d2v_fail(&err, "--eval entry '%s': expected TRAIN:TEST", eval_list[r]);
            break;
        }
        *colon = 0;
        run->eval_train = eval_list[r];
        run->eval_test = colon + 1;
        /* Time a step with the config as given, then size train.steps. */
        Setup probe;
        double per_step = 0;
        if (setup_from_file(&probe, run->config, n_sets, sets, &err) < 0 || time_step(&probe, &per_step, &err) < 0) {
            setup_free(&probe);
            rc = -1;
            break;
        }
        snprintf(run->name, sizeof run->name, "%s", probe.mod->name);
        for (int q = 0; q < r; q++)
            if (strcmp(runs[q].name, run->name) == 0)
                snprintf(run->name, sizeof run->name, "%s%d", probe.mod->name, r);
        setup_free(&probe);
        /* 15% of the budget is left for the data loader and logging. */
        run->steps_planned = (int64_t)(0.85 * budget_seconds / per_step);
        if (run->steps_planned < 10)
            run->steps_planned = 10;
        char steps_set[64], log_set[64] = "train.log_every=5", save_set[64];
        snprintf(steps_set, sizeof steps_set, "train.steps=%lld", (long long)run->steps_planned);
        snprintf(save_set, sizeof save_set, "train.save_every=%lld", (long long)run->steps_planned);
        char *all[80];
        int n_all = 0;
        for (int i = 0; i < n_sets; i++)
            all[n_all++] = sets[i];
        all[n_all++] = steps_set;
        all[n_all++] = log_set;
        all[n_all++] = save_set;
        if (setup_from_file(&run->setup, run->config, n_all, all, &err) < 0) {
            rc = -1;
            break;
        }
        fprintf(stderr, "d2v compare: %s (%s): %.3f s a step on synthetic input, so %lld steps for %.1f minutes\n",
                run->name, run->config, per_step, (long long)run->steps_planned, budget_seconds / 60);
        fprintf(stderr, "d2v compare: %s: k-NN of the initial weights on %s\n", run->name, run->eval_test);
        /* The initial weights are those model_build makes from train.seed:
         * the same the pretraining starts from. */
        if (knn(run, NULL, &run->knn_before, &err) < 0) {
            rc = -1;
            break;
        }
        char run_dir[4200], last[4300];
        snprintf(run_dir, sizeof run_dir, "%s/runs/%s", out, run->name);
        snprintf(last, sizeof last, "%s/last.safetensors", run_dir);
        if (access(last, F_OK) == 0) {
            rc = d2v_fail(&err, "%s already holds a run; choose another --out", run_dir);
            break;
        }
        stop_flag = 0;
        TrainOptions opt = {.cfg = &run->setup.cfg, .config_text = run->setup.text, .mod = run->setup.mod,
                            .mcfg = run->setup.mcfg, .data_path = run->data, .run_dir = run_dir,
                            .stop_requested = &stop_flag, .on_log = on_log, .warn = on_warn};
        const double t0 = d2v_now_seconds();
        if (train_run(&opt, &err) < 0) {
            rc = -1;
            break;
        }
        run->seconds = d2v_now_seconds() - t0;
        fprintf(stderr, "\nd2v compare: %s: trained %.1f s; k-NN of the result\n", run->name, run->seconds);
        char log_path[4300];
        snprintf(log_path, sizeof log_path, "%s/log.jsonl", run_dir);
        if (knn(run, last, &run->knn_after, &err) < 0 || runlog_read(log_path, &run->log, &err) < 0) {
            rc = -1;
            break;
        }
        run->steps_done = (int64_t)run->log.col[LOG_STEP][run->log.n - 1];
        run->positions_per_s = mean_of(run->log.col[LOG_POSITIONS_PER_S], run->log.n, 1);
    }
    if (rc == 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/curves.png", out);
        rc = write_curves(runs, n, path, &err);
    }
    if (rc == 0) {
        static KeyRow rows[MAX_KEYS];
        const int n_rows = collect_keys(runs, n, rows, MAX_KEYS);
        char path[4200];
        snprintf(path, sizeof path, "%s/report.md", out);
        FILE *f = fopen(path, "w");
        if (!f) {
            rc = d2v_fail(&err, "cannot write %s: %s", path, strerror(errno));
            goto free_runs;
        }
        fprintf(f, "# d2v compare: %d modalities, %.1f minutes each\n\n", n, budget_seconds / 60);
        fprintf(f, "The same data2vec objective (top-K averaged, normalised teacher layers; EMA teacher; "
                   "masked regression) on each modality for the same wall-clock budget of %.1f minutes, on this "
                   "machine, with train.steps sized to the budget from a timed step. k-NN: top-1, cosine, k 20, "
                   "T 0.07, mean-pooled last layer, before (the initial weights) and after pretraining. "
                   "A budget this short shows the dynamics, not what each recipe reaches.\n\n", budget_seconds / 60);
        fprintf(f, "| | ");
        for (int r = 0; r < n; r++)
            fprintf(f, "%s | ", runs[r].name);
        fprintf(f, "\n|---|");
        for (int r = 0; r < n; r++)
            fprintf(f, "---|");
        fprintf(f, "\n| config | ");
        for (int r = 0; r < n; r++)
            fprintf(f, "`%s` | ", runs[r].config);
        fprintf(f, "\n| pretraining data | ");
        for (int r = 0; r < n; r++)
            fprintf(f, "`%s` | ", runs[r].data);
        fprintf(f, "\n| k-NN split (train : test) | ");
        for (int r = 0; r < n; r++)
            fprintf(f, "`%s` : `%s` | ", runs[r].eval_train, runs[r].eval_test);
        fprintf(f, "\n| steps done / planned | ");
        for (int r = 0; r < n; r++)
            fprintf(f, "%lld / %lld | ", (long long)runs[r].steps_done, (long long)runs[r].steps_planned);
        fprintf(f, "\n| training seconds | ");
        for (int r = 0; r < n; r++)
            fprintf(f, "%.0f | ", runs[r].seconds);
        fprintf(f, "\n| throughput (positions/s, mean) | ");
        for (int r = 0; r < n; r++)
            fprintf(f, "%.0f | ", runs[r].positions_per_s);
        const struct {
            const char *what;
            int key;
        } last_rows[] = {{"masked fraction (last logged)", -1}, {"target_var (first → last)", LOG_TARGET_VAR},
                         {"pred_var (first → last)", LOG_PRED_VAR}, {"loss (first → last)", LOG_LOSS}};
        for (size_t k = 0; k < sizeof last_rows / sizeof *last_rows; k++) {
            fprintf(f, "\n| %s | ", last_rows[k].what);
            for (int r = 0; r < n; r++) {
                const RunLog *l = &runs[r].log;
                if (last_rows[k].key < 0)
                    fprintf(f, "%.3f | ", l->col[LOG_MASKED][l->n - 1] / l->col[LOG_POSITIONS][l->n - 1]);
                else
                    fprintf(f, "%.3f → %.3f | ", l->col[last_rows[k].key][0], l->col[last_rows[k].key][l->n - 1]);
            }
        }
        fprintf(f, "\n| **k-NN top-1 before → after** | ");
        for (int r = 0; r < n; r++)
            fprintf(f, "**%.3f → %.3f** | ", runs[r].knn_before, runs[r].knn_after);
        fprintf(f, "\n\nThe masked fraction is the share of all positions of a batch that get the loss (image: "
                   "the CLS position counts as a position; text: padding does).\n\n![curves](curves.png)\n\n");
        fprintf(f, "## The config diff\n\n");
        write_diff(f, runs, n, rows, n_rows);
        if (fclose(f) != 0)
            rc = d2v_fail(&err, "writing %s: %s", path, strerror(errno));
        printf("d2v compare: the config diff between");
        for (int r = 0; r < n; r++)
            printf(" %s", runs[r].name);
        printf("\n\n");
        write_diff(stdout, runs, n, rows, n_rows);
        printf("\nk-NN top-1 before -> after:");
        for (int r = 0; r < n; r++)
            printf("  %s %.3f -> %.3f", runs[r].name, runs[r].knn_before, runs[r].knn_after);
        printf("\nwrote %s and %s/curves.png\n", path, out);
    }
free_runs:
    for (int r = 0; r < n; r++) {
        setup_free(&runs[r].setup);
        runlog_free(&runs[r].log);
    }
    free(runs);
done:
    free(cfg_copy);
    free(data_copy);
    free(eval_copy);
    return rc < 0 ? fail("compare", &err) : 0;
}
