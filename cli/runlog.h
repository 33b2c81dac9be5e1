/* runlog.h — RUNDIR/log.jsonl read back into columns (for `d2v plot` and
 * `d2v compare`): one row per logged step, one column per known key. */
#ifndef D2V_CLI_RUNLOG_H
#define D2V_CLI_RUNLOG_H

#include "common.h"

/* The keys train.c logs that are read; a key missing from a line (an older
 * log) or null (a skipped update's loss) is NaN. */
enum {
    LOG_STEP, LOG_LOSS, LOG_LR, LOG_TAU, LOG_TARGET_VAR, LOG_PRED_VAR, LOG_FRONTEND_VAR, LOG_GRAD_NORM,
    LOG_POSITIONS_PER_S, LOG_MASKED, LOG_POSITIONS, LOG_SECONDS, LOG_KEYS
};
extern const char *const runlog_keys[LOG_KEYS];

typedef struct {
    int n;
    double *col[LOG_KEYS]; /* each n values */
} RunLog;

/* Reads a log.jsonl. Errors name the file and line: a line that is not a
 * JSON object with a numeric "step", or an empty log. */
int runlog_read(const char *path, RunLog *log, D2vError *err);
void runlog_free(RunLog *log);

#endif
