/* cmd_plot.c — `d2v plot RUNDIR --out curves.png`: a run's log as small
 * multiples, one panel per logged quantity against steps. */
#include "args.h"
#include "cli.h"
#include "plot.h"
#include "runlog.h"
#include "setup.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: d2v plot RUNDIR --out CURVES.png\n"
                 "\n"
                 "Reads RUNDIR/log.jsonl (written by d2v pretrain) and draws loss, target_var,\n"
                 "pred_var, frontend_var, lr and tau against the step, one panel each (3 x 2\n"
                 "panels, %d x %d pixels). RUNDIR may also be the log.jsonl file itself.\n",
            3 * PLOT_PANEL_W, 2 * PLOT_PANEL_H + PLOT_HEADER_H);
}

int cmd_plot(int argc, char **argv)
{
    if (wants_help(argc, argv)) {
        usage(stdout);
        return 0;
    }
    if (argc < 1 || argv[0][0] == '-') {
        fprintf(stderr, "d2v plot: RUNDIR is required\n");
        usage(stderr);
        return 2;
    }
    Option o[] = {{"--out", 1, NULL}};
    if (parse_options("plot", argc - 1, argv + 1, o, 1) < 0)
        return 2;
    const char *out = option(o, 1, "--out");
    if (!out) {
        fprintf(stderr, "d2v plot: --out is required\n");
        usage(stderr);
        return 2;
    }
    char path[4200];
    const size_t n = strlen(argv[0]);
    if (n >= 6 && strcmp(argv[0] + n - 6, ".jsonl") == 0)
        snprintf(path, sizeof path, "%s", argv[0]);
    else
        snprintf(path, sizeof path, "%s/log.jsonl", argv[0]);
    RunLog log;
    D2vError err;
    if (runlog_read(path, &log, &err) < 0)
        return fail("plot", &err);
    static const struct {
        int key;
        const char *title;
        int log_y;
    } panels[6] = {{LOG_LOSS, "loss", 0},         {LOG_TARGET_VAR, "target_var", 0}, {LOG_PRED_VAR, "pred_var", 0},
                   {LOG_FRONTEND_VAR, "frontend_var", 0}, {LOG_LR, "lr", 0},      {LOG_TAU, "tau", 0}};
    Canvas c;
    int rc = canvas_init(&c, 3 * PLOT_PANEL_W, 2 * PLOT_PANEL_H + PLOT_HEADER_H, RGB_WHITE, &err);
    if (rc == 0) {
        char title[4300];
        snprintf(title, sizeof title, "%s: %d logged steps, last step %.0f", path, log.n, log.col[LOG_STEP][log.n - 1]);
        draw_text(&c, 8, 8, title, 2, RGB_BLACK);
        for (int i = 0; i < 6; i++) {
            Series s = {NULL, log.col[LOG_STEP], log.col[panels[i].key], log.n, plot_color(0)};
            plot_panel(&c, (i % 3) * PLOT_PANEL_W, PLOT_HEADER_H + (i / 3) * PLOT_PANEL_H, panels[i].title, "step",
                       &s, 1, panels[i].log_y);
        }
        rc = canvas_save(&c, out, &err);
        canvas_free(&c);
    }
    runlog_free(&log);
    if (rc < 0)
        return fail("plot", &err);
    fprintf(stderr, "d2v plot: wrote %s\n", out);
    return 0;
}
