/* tempdir.h — a fresh directory under /tmp for a test program's files, and
 * the few file helpers the tests share. Create it first thing in main(),
 * remove it (recursively) last. Callers define _XOPEN_SOURCE 700 (mkdtemp,
 * lstat) before any include. */
#ifndef D2V_TEST_TEMPDIR_H
#define D2V_TEST_TEMPDIR_H

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmp_dir[256];

/* /tmp/d2v_test_<name>_XXXXXX; prints why and returns -1 on failure. */
static inline int tmp_dir_create(const char *name)
{
    snprintf(tmp_dir, sizeof tmp_dir, "/tmp/d2v_test_%s_XXXXXX", name);
    if (mkdtemp(tmp_dir))
        return 0;
    perror("mkdtemp");
    return -1;
}

static inline void path_in_dir(char *out, size_t size, const char *name)
{
    snprintf(out, size, "%s/%s", tmp_dir, name);
}

static inline int write_file(const char *path, const void *bytes, size_t len)
{
    FILE *fp = fopen(path, "wb");
    if (!fp)
        return -1;
    int ok = (len == 0 || fwrite(bytes, 1, len, fp) == len);
    return (fclose(fp) == 0 && ok) ? 0 : -1;
}

/* The whole file (NULL if unreadable); *len its size. */
static inline uint8_t *read_whole(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    long size = fseek(fp, 0, SEEK_END) == 0 ? ftell(fp) : -1;
    if (size < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        fclose(fp);
        return NULL;
    }
    uint8_t *bytes = malloc(size > 0 ? (size_t)size : 1);
    if (bytes && size > 0 && fread(bytes, 1, (size_t)size, fp) != (size_t)size) {
        free(bytes);
        bytes = NULL;
    }
    fclose(fp);
    *len = (size_t)size;
    return bytes;
}

/* rm -rf dir, without following symlinks (tests make symlink loops). */
static inline void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    char path[8192];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= sizeof path)
            continue;
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
            chmod(path, 0700); /* a test may have made it unreadable */
            remove_tree(path);
        } else {
            unlink(path);
        }
    }
    closedir(d);
    rmdir(dir);
}

#endif
