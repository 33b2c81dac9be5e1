#include "runlog.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const runlog_keys[LOG_KEYS] = {"step", "loss", "lr", "tau", "target_var", "pred_var", "frontend_var",
                                           "grad_norm", "positions_per_s", "masked", "positions", "seconds"};

void runlog_free(RunLog *log)
{
    for (int k = 0; k < LOG_KEYS; k++)
        free(log->col[k]);
    memset(log, 0, sizeof *log);
}

int runlog_read(const char *path, RunLog *log, D2vError *err)
{
    memset(log, 0, sizeof *log);
    FILE *f = fopen(path, "r");
    if (!f)
        return d2v_fail(err, "cannot open %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0, rows = 0;
    ssize_t len;
    long line_no = 0;
    int rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        line_no++;
        if (len == 0 || (len == 1 && line[0] == '\n'))
            continue;
        json_error_t je;
        json_t *o = json_loadb(line, (size_t)len, 0, &je);
        if (!o || !json_is_object(o) || !json_is_number(json_object_get(o, "step"))) {
            rc = d2v_fail(err, "%s:%ld: expected a JSON object with a numeric \"step\" (a d2v pretrain log line)",
                          path, line_no);
            json_decref(o);
            break;
        }
        if ((size_t)log->n == rows) {
            rows = rows ? 2 * rows : 256;
            for (int k = 0; k < LOG_KEYS && rc == 0; k++) {
                double *grown = realloc(log->col[k], rows * sizeof(double));
                if (!grown)
                    rc = d2v_fail(err, "%s: out of memory", path);
                else
                    log->col[k] = grown;
            }
            if (rc < 0) {
                json_decref(o);
                break;
            }
        }
        for (int k = 0; k < LOG_KEYS; k++) {
            json_t *v = json_object_get(o, runlog_keys[k]);
            log->col[k][log->n] = json_is_number(v) ? json_number_value(v) : NAN;
        }
        log->n++;
        json_decref(o);
    }
    free(line);
    fclose(f);
    if (rc == 0 && log->n == 0)
        rc = d2v_fail(err, "%s: no logged steps (expected one JSON object per line)", path);
    if (rc < 0)
        runlog_free(log);
    return rc;
}
