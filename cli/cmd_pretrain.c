/* cmd_pretrain.c — `d2v pretrain CONFIG --data PATH --run RUNDIR`. */
#include "cli.h"
#include "dist.h"
#include "setup.h"
#include "train.h"

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t stop_requested; /* the signal number, 0 if none */

/* SIGINT/SIGTERM: finish the step, save, exit. The handler is installed
 * with SA_RESETHAND, so a second Ctrl-C kills the process at once (nothing
 * is lost but the steps since the last checkpoint: writes are atomic). */
static void on_signal(int sig)
{
    static const char msg[] = "\nd2v pretrain: stopping after this step and saving a checkpoint "
                              "(signal again to quit at once without saving)\n";
    if (!stop_requested) {
        stop_requested = sig;
        ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1); /* async-signal-safe */
        (void)ignored;
    }
}

/* One argument quoted for a POSIX shell, so the printed resume command can
 * be pasted as is: 'it'\''s' for a value holding a quote. */
static void print_shell_word(FILE *out, const char *word)
{
    int plain = *word != 0;
    for (const char *c = word; *c && plain; c++)
        plain = strchr("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-+=./,:@%", *c) != NULL;
    if (plain) {
        fputs(word, out);
        return;
    }
    fputc('\'', out);
    for (const char *c = word; *c; c++)
        if (*c == '\'')
            fputs("'\\''", out);
        else
            fputc(*c, out);
    fputc('\'', out);
}

/* The command that continues this run: the same program, config, data,
 * run directory and --set overrides, plus --resume. */
static void print_resume_command(FILE *out, const char *config, const char *data, const char *run, int n_sets,
                                 char *const *sets)
{
    fputs("  ", out);
    print_shell_word(out, program_path);
    fputs(" pretrain ", out);
    print_shell_word(out, config);
    fputs(" --data ", out);
    print_shell_word(out, data);
    fputs(" --run ", out);
    print_shell_word(out, run);
    for (int i = 0; i < n_sets; i++) {
        fputs(" --set ", out);
        print_shell_word(out, sets[i]);
    }
    fputs(" --resume\n", out);
}

/* A bad file is met again every epoch; its warning is printed the first
 * time only (log.jsonl's `skipped` still counts every replacement). */
#define WARNED_CAPACITY 4096

typedef struct {
    int tty;
    const char *run_dir;
    uint64_t warned[WARNED_CAPACITY]; /* hashes of printed warnings */
    int n_warned;
} Progress;

static uint64_t message_hash(const char *s)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

static void print_log(void *ctx, const StepLog *s)
{
    Progress *p = ctx;
    double per_step = s->seconds / (double)s->step;
    double eta = per_step * (double)(s->total_steps - s->step);
    char knn[64] = "";
    if (s->has_knn)
        snprintf(knn, sizeof knn, "  knn %.4f%s", s->knn, s->new_best_knn ? " (best)" : "");
    /* On a terminal the line is rewritten in place, except one with a k-NN
     * score: that one stays. */
    fprintf(stderr, "%sstep %lld/%lld  loss %.4f  lr %.2e  tau %.5f  target_var %.3f  pred_var %.3f  frontend_var %.3f"
                    "  %.0f pos/s  eta %dm%02ds%s%s",
            p->tty ? "\r" : "", (long long)s->step, (long long)s->total_steps, s->loss, s->lr, s->tau, s->target_var,
            s->pred_var, s->frontend_var, s->positions_per_s, (int)eta / 60, (int)eta % 60, knn,
            p->tty && s->step < s->total_steps && !s->has_knn ? "" : "\n");
}

static void print_warning(void *ctx, const char *msg)
{
    Progress *p = ctx;
    const uint64_t h = message_hash(msg);
    for (int i = 0; i < p->n_warned && i < WARNED_CAPACITY; i++)
        if (p->warned[i] == h)
            return;
    if (p->n_warned < WARNED_CAPACITY)
        p->warned[p->n_warned++] = h;
    else if (p->n_warned++ == WARNED_CAPACITY)
        fprintf(stderr, "%sd2v pretrain: over %d distinct warnings; repeats are no longer recognised\n",
                p->tty ? "\n" : "", WARNED_CAPACITY);
    const size_t kept = strlen(MODALITY_WARNING_KEPT);
    if (strncmp(msg, MODALITY_WARNING_KEPT, kept) == 0)
        fprintf(stderr, "%sd2v pretrain: warning: %s\n", p->tty ? "\n" : "", msg + kept);
    else
        fprintf(stderr, "%sd2v pretrain: warning: %s (skipped)\n", p->tty ? "\n" : "", msg);
}

static void print_notice(void *ctx, const char *msg)
{
    Progress *p = ctx;
    fprintf(stderr, "%sd2v pretrain: %s\n", p->tty ? "\n" : "", msg);
}

/* Data parallel (mpirun): which rank speaks, when it is not rank 0. */
static const char *rank_tag(void)
{
    static char tag[32];
    if (dist_world() > 1)
        snprintf(tag, sizeof tag, "rank %d: ", dist_rank());
    return tag;
}

/* An error under mpirun: the other ranks may be waiting in a collective
 * for this one, so the whole job ends here (MPI_Abort; mpirun exits
 * non-zero and names the rank). One process: the usual message and 1. */
static int fail_job(D2vError *err)
{
    fprintf(stderr, "d2v pretrain: %s%s\n", dist_world() > 1 && strncmp(err->msg, "rank ", 5) != 0 ? rank_tag() : "",
            err->msg);
    fflush(stderr);
    dist_abort(1);
    dist_finalize();
    return 1;
}

static void print_checkpoint(void *ctx, const char *path)
{
    Progress *p = ctx;
    if (!p->tty)
        fprintf(stderr, "saved %s\n", path);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: d2v pretrain CONFIG --data PATH --run RUNDIR [--resume] [--set section.key=value]...\n"
            "                    [--eval-every N --eval-train PATH --eval-test PATH]\n"
            "\n"
            "Pretrains an encoder with data2vec on the files under PATH (a directory, searched\n"
            "recursively, or a manifest listing files; for text, a text file or a directory\n"
            "of *.txt files). Writes into RUNDIR: config.ini (the\n"
            "resolved config), log.jsonl (one JSON object per logged step), and checkpoints\n"
            "checkpoint-NNNNNNNN.safetensors every train.save_every steps and at the end, with\n"
            "last.safetensors pointing at the newest (pretrain.lock keeps a second process out).\n"
            "Ctrl-C or SIGTERM finishes the step, saves a checkpoint, prints the command that\n"
            "resumes the run, and exits with status 128 + the signal number (130, 143); a second\n"
            "signal quits at once. A failed write (a full disk) stops with the file named and\n"
            "the previous checkpoint intact.\n"
            "\n"
            "\n"
            "Data parallel: `mpirun -np N d2v pretrain ...` (a build with MPI) trains on N ranks;\n"
            "train.batch_size stays the batch of one update, each rank takes batch_size/N rows of\n"
            "it, gradients are summed with MPI_Allreduce, and rank 0 alone writes RUNDIR.\n"
            "\n"
            "  --resume            continue the run in RUNDIR from last.safetensors\n"
            "  --set k=v           override a config key, e.g. --set train.steps=200\n"
            "  --eval-every N      every N steps and at the end, k-NN-probe the student on the labeled\n"
            "  --eval-train PATH   sets PATH (as d2v eval knn --train/--test; eval.k, eval.batch and\n"
            "  --eval-test PATH    eval.pool as its --k, --batch, --pool), log it (\"knn\" in log.jsonl)\n"
            "                      and keep the best as RUNDIR/best-knn.safetensors; the same as\n"
            "                      --set eval.every=N --set eval.train=PATH --set eval.test=PATH\n");
}

static void free_args(char **sets, char *owned[3])
{
    for (int f = 0; f < 3; f++)
        free(owned[f]);
    free(sets);
}

int cmd_pretrain(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    const char *config = NULL, *data = NULL, *run = NULL;
    int resume = 0, n_sets = 0;
    char **sets = calloc((size_t)argc + 1, sizeof *sets);
    /* --eval-every N and friends are --set eval.every=N etc.: the resume
     * command reprints them as such. */
    static const char *const eval_flags[][2] = {
        {"--eval-every", "eval.every"}, {"--eval-train", "eval.train"}, {"--eval-test", "eval.test"}};
    char *owned[3] = {NULL, NULL, NULL};
    for (int i = 0; i < argc; i++) {
        int flag = -1;
        for (int f = 0; f < 3; f++)
            if (strcmp(argv[i], eval_flags[f][0]) == 0 && i + 1 < argc)
                flag = f;
        if (flag >= 0) {
            const char *value = argv[++i];
            size_t len = strlen(eval_flags[flag][1]) + strlen(value) + 2;
            char *assignment = malloc(len);
            if (!assignment) {
                fprintf(stderr, "d2v pretrain: out of memory\n");
                free_args(sets, owned);
                return 1;
            }
            snprintf(assignment, len, "%s=%s", eval_flags[flag][1], value);
            if (owned[flag]) { /* given twice: the last one counts, as with --set */
                for (int j = 0; j < n_sets; j++)
                    if (sets[j] == owned[flag])
                        sets[j] = assignment;
                free(owned[flag]);
            } else {
                sets[n_sets++] = assignment;
            }
            owned[flag] = assignment;
        } else if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
            data = argv[++i];
        else if (strcmp(argv[i], "--run") == 0 && i + 1 < argc)
            run = argv[++i];
        else if (strcmp(argv[i], "--resume") == 0)
            resume = 1;
        else if (strcmp(argv[i], "--set") == 0 && i + 1 < argc)
            sets[n_sets++] = argv[++i];
        else if (argv[i][0] != '-' && !config)
            config = argv[i];
        else {
            fprintf(stderr, "d2v pretrain: unexpected argument '%s'\n", argv[i]);
            usage(stderr);
            free_args(sets, owned);
            return 2;
        }
    }
    if (!config || !data || !run) {
        fprintf(stderr, "d2v pretrain: CONFIG, --data and --run are required\n");
        usage(stderr);
        free_args(sets, owned);
        return 2;
    }
    Setup s;
    D2vError err;
    if (dist_init(NULL, NULL, &err) < 0) {
        free_args(sets, owned);
        return fail_job(&err);
    }
    if (setup_from_file(&s, config, n_sets, sets, &err) < 0) {
        free_args(sets, owned);
        setup_free(&s);
        return fail_job(&err);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    /* SA_RESTART: a system call the signal lands in (a read in the data
     * loader) resumes instead of failing with EINTR and being mistaken for
     * a bad file. */
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A file-size limit (ulimit -f) would otherwise kill the process mid-
     * write; ignored, the write fails with EFBIG and is reported like a
     * full disk, leaving the previous checkpoint in place. */
    signal(SIGXFSZ, SIG_IGN);

    Progress progress = {.tty = isatty(STDERR_FILENO), .run_dir = run};
    TrainOptions opt = {.cfg = &s.cfg, .config_text = s.text, .mod = s.mod, .mcfg = s.mcfg, .data_path = data,
                        .run_dir = run, .resume = resume, .stop_requested = &stop_requested, .on_log = print_log,
                        .on_checkpoint = print_checkpoint, .warn = print_warning, .notice = print_notice,
                        .ctx = &progress};
    int rc = train_run(&opt, &err);
    setup_free(&s);
    if (rc < 0) {
        free_args(sets, owned);
        return fail_job(&err);
    }
    const int lead = dist_rank() == 0, world = dist_world();
    dist_finalize();
    if (rc == 1) {
        /* Under mpirun a signal reaches every rank; a rank that missed it
         * stopped because another got it (the stop flag is all-reduced). */
        const int sig = stop_requested ? stop_requested : SIGTERM;
        if (lead) {
            fprintf(stderr, "%sd2v pretrain: stopped by %s; checkpoint saved. Continue with%s:\n",
                    progress.tty ? "\n" : "", sig == SIGTERM ? "SIGTERM" : "SIGINT",
                    world > 1 ? " (under mpirun as before)" : "");
            print_resume_command(stderr, config, data, run, n_sets, sets);
        }
        free_args(sets, owned);
        return 128 + sig;
    }
    free_args(sets, owned);
    if (lead)
        fprintf(stderr, "d2v pretrain: done; the model is %s/last.safetensors\n", run);
    return 0;
}
