#include "common.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int d2v_fail(D2vError *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
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
