#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* lstat, strdup, strcasecmp, getc_unlocked */
#endif

#include "files.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* A bound rather than "unbounded": a mistaken --data / (or a manifest gone
 * wrong) should stop with a message, not eat all memory first. ImageNet-21k
 * is ~14M files, so this leaves ample room. */
#define FILES_MAX 100000000
/* Longer manifest lines are almost certainly a binary file given by mistake. */
#define MANIFEST_LINE_MAX 4096

/* One file found so far. label points into the same allocation as path (just
 * after its terminator), so an entry is one malloc and freeing path frees
 * both; it is NULL for unlabeled sets. */
typedef struct {
    char *path;
    const char *label;
} Entry;

typedef struct {
    Entry *items;
    int n, cap;
} EntryList;

/* The (device, inode) of every directory entered so far: a directory reached a
 * second time (a symlink loop such as a/loop -> .., or two links to the same
 * tree) is skipped, so the scan terminates and lists each file once. Open
 * addressing, grown at half load. */
typedef struct {
    dev_t dev;
    ino_t ino;
    int used;
} DirKey;

typedef struct {
    DirKey *slots;
    size_t cap, count;
} DirSet;

typedef struct {
    const char *const *extensions;
    int labeled;
    const char *shown_root; /* the path as the caller gave it, for messages */
    EntryList entries;
    DirSet visited;
    D2vError *err;
} Scan;

/* ---- small helpers ---------------------------------------------------- */

static int has_extension(const char *name, const char *const *extensions)
{
    const char *slash = strrchr(name, '/');
    const char *base = slash ? slash + 1 : name;
    const char *dot = strrchr(base, '.');
    if (!dot || dot == base)
        return 0;
    for (int i = 0; extensions[i]; i++)
        if (strcasecmp(dot + 1, extensions[i]) == 0)
            return 1;
    return 0;
}

/* ".jpg/.jpeg", for messages. */
static void describe_extensions(const char *const *extensions, char *out, size_t size)
{
    size_t used = 0;
    out[0] = 0;
    for (int i = 0; extensions[i] && used < size; i++) {
        int n = snprintf(out + used, size - used, "%s.%s", i ? "/" : "", extensions[i]);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}

/* Joins dir and name with one '/'; dir may be "" (meaning the root "/" with its
 * trailing slash stripped, or no directory at all when with_slash is 0). */
static char *join_path(const char *dir, int with_slash, const char *name, const char *label, D2vError *err)
{
    size_t dlen = strlen(dir), nlen = strlen(name), llen = label ? strlen(label) + 1 : 0;
    char *p = d2v_malloc(dlen + 1 + nlen + 1 + llen, err);
    if (!p)
        return NULL;
    memcpy(p, dir, dlen);
    size_t at = dlen;
    if (with_slash)
        p[at++] = '/';
    memcpy(p + at, name, nlen + 1);
    if (label)
        memcpy(p + at + nlen + 1, label, llen);
    return p;
}

static int entries_push(EntryList *l, char *path, int labeled, const char *shown_root, D2vError *err)
{
    if (l->n >= FILES_MAX) {
        free(path);
        return d2v_fail(err, "%s: more than %d files; is this the right dataset path?", shown_root, FILES_MAX);
    }
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 1024;
        if (cap > FILES_MAX)
            cap = FILES_MAX;
        Entry *items = realloc(l->items, (size_t)cap * sizeof *items);
        if (!items) {
            free(path);
            return d2v_fail(err, "out of memory listing %s (%d files so far)", shown_root, l->n);
        }
        l->items = items;
        l->cap = cap;
    }
    l->items[l->n].path = path;
    l->items[l->n].label = labeled ? path + strlen(path) + 1 : NULL;
    l->n++;
    return 0;
}

static void entries_free(EntryList *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->items[i].path);
    free(l->items);
    l->items = NULL;
    l->n = l->cap = 0;
}

static size_t dirkey_hash(dev_t dev, ino_t ino)
{
    uint64_t h = (uint64_t)ino * 0x9E3779B97F4A7C15ull ^ (uint64_t)dev * 0xC2B2AE3D27D4EB4Full;
    return (size_t)(h ^ (h >> 29));
}

/* Returns 1 if (dev, ino) was new and is now recorded, 0 if seen before, -1
 * when out of memory. */
static int dirset_insert(DirSet *s, dev_t dev, ino_t ino)
{
    if (2 * (s->count + 1) > s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        DirKey *slots = calloc(cap, sizeof *slots);
        if (!slots)
            return -1;
        for (size_t i = 0; i < s->cap; i++) {
            if (!s->slots[i].used)
                continue;
            size_t j = dirkey_hash(s->slots[i].dev, s->slots[i].ino) & (cap - 1);
            while (slots[j].used)
                j = (j + 1) & (cap - 1);
            slots[j] = s->slots[i];
        }
        free(s->slots);
        s->slots = slots;
        s->cap = cap;
    }
    size_t j = dirkey_hash(dev, ino) & (s->cap - 1);
    while (s->slots[j].used) {
        if (s->slots[j].dev == dev && s->slots[j].ino == ino)
            return 0;
        j = (j + 1) & (s->cap - 1);
    }
    s->slots[j] = (DirKey){dev, ino, 1};
    s->count++;
    return 1;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const Entry *)a)->path, ((const Entry *)b)->path);
}

/* ---- directory scan --------------------------------------------------- */

typedef struct {
    char *name;
    int is_file; /* known from d_type to be a regular file; else ask stat */
} DirItem;

static int compare_dir_items(const void *a, const void *b)
{
    return strcmp(((const DirItem *)a)->name, ((const DirItem *)b)->name);
}

static void free_dir_items(DirItem *items, int n)
{
    for (int i = 0; i < n; i++)
        free(items[i].name);
    free(items);
}

/* Reads all names of one directory and closes it before the caller descends,
 * so a deep tree holds one file descriptor at a time instead of one per
 * level. Names starting with '.' are skipped: ".", "..", and the hidden
 * clutter of real datasets (.git, .DS_Store, macOS "._x.jpg" resource forks
 * that would match the extension yet are not images). */
static int read_dir_items(const char *dir, DirItem **out, int *count, D2vError *err)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir[0] ? dir : "/");
    if (!d)
        return d2v_fail(err, "cannot read directory %s: %s", dir[0] ? dir : "/", strerror(errno));
    DirItem *items = NULL;
    int n = 0, cap = 0;
    for (;;) {
        errno = 0;
        struct dirent *e = readdir(d);
        if (!e) {
            if (errno) {
                int saved = errno;
                free_dir_items(items, n);
                closedir(d);
                return d2v_fail(err, "cannot read directory %s: %s", dir[0] ? dir : "/", strerror(saved));
            }
            break;
        }
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            DirItem *grown = realloc(items, (size_t)(cap ? cap * 2 : 64) * sizeof *grown);
            if (!grown)
                goto out_of_memory;
            items = grown;
            cap = cap ? cap * 2 : 64;
        }
        if (!(items[n].name = strdup(e->d_name)))
            goto out_of_memory;
        items[n].is_file = 0;
#ifdef DT_REG
        /* d_type saves a stat per file on the filesystems that fill it in;
         * directories are stat'ed anyway for their inode. */
        items[n].is_file = e->d_type == DT_REG;
#endif
        n++;
    }
    closedir(d);
    /* Sorted so that the first error met, and the visit order that decides
     * which of two aliases of a directory is listed, are deterministic. */
    if (n > 1)
        qsort(items, (size_t)n, sizeof *items, compare_dir_items);
    *out = items;
    *count = n;
    return 0;

out_of_memory:
    free_dir_items(items, n);
    closedir(d);
    return d2v_fail(err, "out of memory reading directory %s", dir);
}

/* Scans dir (already recorded in the visited set). class_name is the
 * first-level directory this one lies in, NULL at the root. */
static int scan_dir(Scan *s, const char *dir, const char *class_name)
{
    DirItem *items;
    int n;
    if (read_dir_items(dir, &items, &n, s->err))
        return -1;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const char *name = items[i].name;
        if (items[i].is_file && !has_extension(name, s->extensions))
            continue;
        /* The label rides along in the same allocation (see Entry); at the
         * root there is none yet, and a labeled file there is an error. */
        const char *label = s->labeled ? class_name : NULL;
        char *child = join_path(dir, 1, name, label, s->err);
        if (!child) {
            rc = -1;
            break;
        }
        struct stat st;
        int is_file = items[i].is_file, is_dir = 0;
        if (!is_file) {
            /* stat, not lstat: symlinked files and directories are followed
             * (datasets are often assembled from links); the visited set is
             * what keeps a directory link from being entered twice. */
            if (stat(child, &st) != 0) {
                /* A dangling link or a file that vanished: only an error if it
                 * would have been one of ours. */
                if (has_extension(name, s->extensions))
                    rc = d2v_fail(s->err, "cannot read %s: %s", child, strerror(errno));
                free(child);
                continue;
            }
            is_dir = S_ISDIR(st.st_mode);
            is_file = S_ISREG(st.st_mode);
        }
        if (is_dir) {
            int fresh = dirset_insert(&s->visited, st.st_dev, st.st_ino);
            if (fresh < 0)
                rc = d2v_fail(s->err, "out of memory scanning %s", s->shown_root);
            else if (fresh)
                rc = scan_dir(s, child, class_name ? class_name : name);
            free(child);
        } else if (is_file && has_extension(name, s->extensions)) {
            if (s->labeled && !class_name) {
                rc = d2v_fail(s->err,
                              "%s: a labeled dataset keeps its files in class subdirectories (%s/CLASS/...), "
                              "not directly in the root",
                              child, s->shown_root);
                free(child);
            } else {
                rc = entries_push(&s->entries, child, s->labeled, s->shown_root, s->err);
            }
        } else {
            free(child);
        }
    }
    free_dir_items(items, n);
    return rc;
}

/* ---- manifest --------------------------------------------------------- */

static int is_blank(int c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Trims blanks at both ends of [*begin, *end). */
static void trim(char **begin, char **end)
{
    while (*begin < *end && is_blank((unsigned char)**begin))
        (*begin)++;
    while (*end > *begin && is_blank((unsigned char)(*end)[-1]))
        (*end)--;
}

int read_text_line(FILE *fp, char *buf, size_t cap, size_t *len, const char *path, long line_no, const char *what,
                   D2vError *err)
{
    size_t n = 0;
    int c, any = 0;
    while ((c = getc_unlocked(fp)) != EOF) {
        any = 1;
        if (c == '\n')
            break;
        if (c == 0)
            return d2v_fail(err, "%s:%ld: NUL byte (not a %s?)", path, line_no, what);
        if (n == cap)
            return d2v_fail(err, "%s:%ld: line longer than %zu bytes", path, line_no, cap);
        buf[n++] = (char)c;
    }
    if (ferror(fp))
        return d2v_fail(err, "cannot read %s: %s", path, strerror(errno));
    if (n > 0 && buf[n - 1] == '\r') /* CRLF files */
        n--;
    buf[n] = 0;
    *len = n;
    return any;
}

/* The first directory component of a relative path ("cat" of "cat/x.jpg",
 * skipping "./" prefixes), written into out; 0 if there is none. */
static int first_component(const char *path, char *out, size_t size)
{
    while (path[0] == '.' && path[1] == '/') {
        path += 2;
        while (*path == '/')
            path++;
    }
    const char *slash = strchr(path, '/');
    if (!slash || slash == path || (size_t)(slash - path) >= size)
        return 0;
    memcpy(out, path, (size_t)(slash - path));
    out[slash - path] = 0;
    return 1;
}

static int scan_manifest(Scan *s, const char *manifest)
{
    FILE *fp = fopen(manifest, "r");
    if (!fp)
        return d2v_fail(s->err, "cannot open manifest %s: %s", manifest, strerror(errno));

    /* Relative entries are relative to the manifest's directory, so a
     * manifest works wherever it is read from. */
    const char *slash = strrchr(manifest, '/');
    size_t dir_len = slash ? (size_t)(slash - manifest) : 0;
    char *dir = d2v_malloc(dir_len + 1, s->err);
    if (!dir) {
        fclose(fp);
        return -1;
    }
    memcpy(dir, manifest, dir_len);
    dir[dir_len] = 0;
    int dir_is_root = slash == manifest; /* "/list.txt": dir "" still needs a slash */

    char line[MANIFEST_LINE_MAX + 1];
    char label_buf[MANIFEST_LINE_MAX + 1];
    char exts[256];
    size_t len = 0;
    long line_no = 0;
    int rc = 0, got;
    while (rc == 0 &&
           (got = read_text_line(fp, line, MANIFEST_LINE_MAX, &len, manifest, line_no + 1, "manifest", s->err)) != 0) {
        if (got < 0) {
            rc = -1;
            break;
        }
        line_no++;
        char *begin = line, *end = line + len;
        trim(&begin, &end);
        if (begin == end || *begin == '#')
            continue;
        *end = 0;

        /* path[<TAB>label or other columns] */
        char *tab = memchr(begin, '\t', (size_t)(end - begin));
        char *path_end = tab ? tab : end, *rest = tab ? tab + 1 : end;
        trim(&begin, &path_end);
        trim(&rest, &end);
        *path_end = 0;
        *end = 0;

        if (!has_extension(begin, s->extensions)) {
            describe_extensions(s->extensions, exts, sizeof exts);
            rc = d2v_fail(s->err, "%s:%ld: '%s' does not end in %s", manifest, line_no, begin, exts);
            break;
        }
        const char *label = NULL;
        if (s->labeled) {
            /* The label is the second column; anything after it is ignored. */
            char *label_end = strchr(rest, '\t');
            if (label_end) {
                *label_end = 0;
                trim(&rest, &label_end);
                *label_end = 0;
            }
            if (*rest) {
                label = rest;
            } else if (begin[0] != '/' && first_component(begin, label_buf, sizeof label_buf)) {
                label = label_buf;
            } else {
                rc = d2v_fail(s->err,
                              "%s:%ld: no label for '%s' (write path<TAB>label, or put it under a class "
                              "directory)",
                              manifest, line_no, begin);
                break;
            }
        }
        char *path = begin[0] == '/' ? join_path("", 0, begin, label, s->err)
                                      : join_path(dir, dir_len > 0 || dir_is_root, begin, label, s->err);
        rc = path ? entries_push(&s->entries, path, s->labeled, s->shown_root, s->err) : -1;
    }
    free(dir);
    fclose(fp);
    return rc;
}

/* ---- result ----------------------------------------------------------- */

/* Sorts the entries and turns them into out, taking ownership of the paths. */
static int build_result(Scan *s, FileList *out)
{
    EntryList *l = &s->entries;
    qsort(l->items, (size_t)l->n, sizeof *l->items, compare_entries);

    FileList f = {0};
    f.paths = d2v_malloc((size_t)l->n * sizeof *f.paths, s->err);
    f.labels = d2v_malloc((size_t)l->n * sizeof *f.labels, s->err);
    if (!f.paths || !f.labels)
        goto fail;

    if (s->labeled) {
        /* Class names: the distinct labels, sorted, so label i means the same
         * class for every listing of the same set of class names. */
        const char **names = d2v_malloc((size_t)l->n * sizeof *names, s->err);
        if (!names)
            goto fail;
        for (int i = 0; i < l->n; i++)
            names[i] = l->items[i].label;
        qsort(names, (size_t)l->n, sizeof *names, compare_strings);
        int distinct = 0;
        for (int i = 0; i < l->n; i++)
            if (i == 0 || strcmp(names[i], names[distinct - 1]) != 0)
                names[distinct++] = names[i];
        f.class_names = d2v_calloc((size_t)distinct, sizeof *f.class_names, s->err);
        if (!f.class_names) {
            free(names);
            goto fail;
        }
        f.n_classes = distinct;
        for (int c = 0; c < distinct; c++) {
            if (!(f.class_names[c] = strdup(names[c]))) {
                free(names);
                d2v_fail(s->err, "out of memory listing %s", s->shown_root);
                goto fail;
            }
        }
        for (int i = 0; i < l->n; i++) {
            const char *key = l->items[i].label;
            const char **hit = bsearch(&key, names, (size_t)distinct, sizeof *names, compare_strings);
            f.labels[i] = (int)(hit - names);
        }
        free(names);
    } else {
        for (int i = 0; i < l->n; i++)
            f.labels[i] = -1;
    }
    for (int i = 0; i < l->n; i++)
        f.paths[i] = l->items[i].path;
    f.n = l->n;
    free(l->items);
    l->items = NULL;
    l->n = l->cap = 0;
    *out = f;
    return 0;

fail:
    for (int c = 0; c < f.n_classes; c++)
        free(f.class_names[c]);
    free(f.class_names);
    free(f.paths);
    free(f.labels);
    return -1;
}

int filelist_scan(const char *path, const char *const *extensions, int labeled, FileList *out, D2vError *err)
{
    *out = (FileList){0};
    if (!path || !*path)
        return d2v_fail(err, "empty dataset path");
    if (!extensions || !extensions[0])
        return d2v_fail(err, "%s: no file extensions given to look for", path);

    struct stat st;
    if (stat(path, &st) != 0)
        return d2v_fail(err, "%s: %s", path, strerror(errno));

    Scan s = {.extensions = extensions, .labeled = labeled, .shown_root = path, .err = err};
    int rc;
    if (S_ISDIR(st.st_mode)) {
        /* "data/" and "data" list the same paths; "/" becomes "" + "/name". */
        size_t len = strlen(path);
        while (len > 0 && path[len - 1] == '/')
            len--;
        char *root = d2v_malloc(len + 1, err);
        if (!root)
            return -1;
        memcpy(root, path, len);
        root[len] = 0;
        rc = dirset_insert(&s.visited, st.st_dev, st.st_ino) < 0
                 ? d2v_fail(err, "out of memory scanning %s", path)
                 : scan_dir(&s, root, NULL);
        free(root);
    } else if (S_ISREG(st.st_mode)) {
        if (has_extension(path, extensions))
            return d2v_fail(err, "%s: a single data file; give a directory or a manifest listing files", path);
        rc = scan_manifest(&s, path);
    } else {
        return d2v_fail(err, "%s: neither a directory nor a manifest file", path);
    }
    free(s.visited.slots);

    if (rc == 0 && s.entries.n == 0) {
        char exts[256];
        describe_extensions(extensions, exts, sizeof exts);
        rc = d2v_fail(err, S_ISDIR(st.st_mode) ? "%s: no %s files found (searched recursively)"
                                               : "%s: manifest lists no %s files",
                      path, exts);
    }
    if (rc == 0)
        rc = build_result(&s, out);
    entries_free(&s.entries);
    return rc;
}

void filelist_free(FileList *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        free(f->paths[i]);
    for (int c = 0; c < f->n_classes; c++)
        free(f->class_names[c]);
    free(f->paths);
    free(f->labels);
    free(f->class_names);
    *f = (FileList){0};
}

int file_dataset_open(const char *path, const char *const *extensions, int labeled, void **dataset, D2vError *err)
{
    FileList *files = d2v_calloc(1, sizeof *files, err);
    if (!files)
        return -1;
    if (filelist_scan(path, extensions, labeled, files, err) < 0) {
        free(files);
        return -1;
    }
    *dataset = files;
    return 0;
}

int file_dataset_size(const void *dataset) { return ((const FileList *)dataset)->n; }

int file_dataset_classes(const void *dataset, const char *const **names)
{
    const FileList *files = dataset;
    *names = (const char *const *)files->class_names;
    return files->n_classes;
}

const char *file_dataset_item_name(const void *dataset, int item) { return ((const FileList *)dataset)->paths[item]; }

void file_dataset_close(void *dataset)
{
    filelist_free(dataset);
    free(dataset);
}

void batch_free_arrays(Batch *batch)
{
    free(batch->data);
    free(batch->tokens);
    free(batch->lengths);
    free(batch->labels);
    free(batch->items);
    memset(batch, 0, sizeof *batch);
}
