/* common.h — the error convention every d2v function follows.
 *
 * A function that can fail returns 0 on success and -1 on failure, and on
 * failure writes a one-line, human-readable message into a caller-provided
 * D2vError. Only cli/ decides to print it and exit. */
#ifndef D2V_COMMON_H
#define D2V_COMMON_H

#include <stddef.h>
#include <stdint.h>

#define D2V_ERR_LEN 1024

typedef struct {
    char msg[D2V_ERR_LEN];
} D2vError;

/* Formats the message into err (if non-NULL) and returns -1, so a failing
 * path reads `return d2v_fail(err, "...", ...);`. */
int d2v_fail(D2vError *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Prefixes an existing message, e.g. with the file it came from. */
int d2v_fail_prefix(D2vError *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Seconds on the monotonic clock: for durations (steps, phases, budgets). */
double d2v_now_seconds(void);

/* malloc/calloc that fail with a message instead of returning NULL silently. */
void *d2v_malloc(size_t bytes, D2vError *err);
/* calloc of count x size bytes; on failure fills err and returns NULL. */
void *d2v_calloc(size_t count, size_t size, D2vError *err);

#endif
