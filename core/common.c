#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

double d2v_now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A message is one line even when it quotes the input that caused it (a JSON
 * parser's "near '...'" may hold a newline): control bytes become '?'. */
static void keep_one_line(char *msg)
{
    for (unsigned char *c = (unsigned char *)msg; *c; c++)
        if (*c < 0x20 || *c == 0x7f)
            *c = '?';
}

int d2v_fail(D2vError *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        keep_one_line(err->msg);
    }
    return -1;
}

int d2v_fail_prefix(D2vError *err, const char *fmt, ...)
{
    if (err) {
        char prefix[D2V_ERR_LEN];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(prefix, sizeof prefix, fmt, ap);
        va_end(ap);
        size_t plen = strlen(prefix), olen = strnlen(err->msg, D2V_ERR_LEN - 1);
        if (plen + olen > D2V_ERR_LEN - 1)
            olen = D2V_ERR_LEN - 1 - plen;
        memmove(err->msg + plen, err->msg, olen);
        memcpy(err->msg, prefix, plen);
        err->msg[plen + olen] = 0;
        keep_one_line(err->msg);
    }
    return -1;
}

void *d2v_malloc(size_t bytes, D2vError *err)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p)
        d2v_fail(err, "out of memory allocating %zu bytes", bytes);
    return p;
}

void *d2v_calloc(size_t count, size_t size, D2vError *err)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        d2v_fail(err, "out of memory allocating %zu x %zu bytes", count, size);
    return p;
}
