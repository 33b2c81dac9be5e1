/* fuzz.h — what the libFuzzer targets share: a property check that turns a
 * violated invariant into a crash libFuzzer records, and an in-memory file
 * (memfd) so loaders that take a path read the fuzzer's bytes without disk
 * I/O. */
#ifndef D2V_FUZZ_H
#define D2V_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* A broken invariant is a finding: print it and abort so libFuzzer saves the
 * input as a crash. */
#define FUZZ_CHECK(cond, ...)                                                   \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "fuzz invariant failed at %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
            abort();                                                            \
        }                                                                       \
    } while (0)

/* One memfd per process, refilled for each input; its path is
 * /proc/self/fd/N, which open() follows to the same in-memory file. */
static int fuzz_memfd = -1;
static char fuzz_memfd_path[64];

static inline const char *fuzz_as_file(const uint8_t *data, size_t size)
{
    if (fuzz_memfd < 0) {
        fuzz_memfd = memfd_create("d2v-fuzz", 0);
        if (fuzz_memfd < 0) {
            perror("memfd_create");
            abort();
        }
        snprintf(fuzz_memfd_path, sizeof fuzz_memfd_path, "/proc/self/fd/%d", fuzz_memfd);
    }
    if (ftruncate(fuzz_memfd, 0) != 0 || (size > 0 && pwrite(fuzz_memfd, data, size, 0) != (ssize_t)size)) {
        perror("filling the memfd");
        abort();
    }
    return fuzz_memfd_path;
}

/* A fresh directory for targets whose code under test wants several files. */
static inline const char *fuzz_temp_dir(void)
{
    static char dir[64];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/d2v_fuzz_XXXXXX");
        if (!mkdtemp(dir)) {
            perror("mkdtemp");
            abort();
        }
    }
    return dir;
}

static inline void fuzz_write_file(const char *path, const uint8_t *data, size_t size)
{
    FILE *fp = fopen(path, "wb");
    if (!fp || (size > 0 && fwrite(data, 1, size, fp) != size) || fclose(fp) != 0) {
        perror(path);
        abort();
    }
}

#endif
