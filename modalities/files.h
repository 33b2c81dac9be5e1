/* files.h — what a dataset path names: a directory (searched recursively) or
 * a manifest (a text file, one path per line, relative to the manifest's
 * directory). Labeled sets are class-named subdirectories: the label is the
 * name of the first directory level below the root. Order is sorted and so
 * deterministic. Shared by the image and speech modalities. */
#ifndef D2V_FILES_H
#define D2V_FILES_H

#include "common.h"
#include "modality.h"

#include <stdio.h>

typedef struct {
    char **paths;
    int *labels;        /* -1 when unlabeled */
    int n;
    char **class_names; /* sorted; labels index into this */
    int n_classes;
} FileList;

/* extensions: NULL-terminated, lower-case, without the dot ("jpg", "jpeg");
 * matched case-insensitively. labeled: derive labels from subdirectories
 * (an error if a file sits directly in the root). An empty result is an
 * error that names the path and the extensions looked for. */
int filelist_scan(const char *path, const char *const *extensions, int labeled, FileList *out, D2vError *err);
/* Details of the scan: symlinks are followed but every directory is entered
 * once (loops end); names starting with '.' are skipped; a class is a
 * first-level directory holding at least one matching file. A path ending in
 * one of the extensions is refused as a dataset. Manifests: blank lines and
 * '#' comments are skipped, blanks around entries stripped; an entry is
 * `path` or `path<TAB>label` (extra columns are ignored when unlabeled); a
 * labeled entry without a label takes its first directory component; every
 * entry must end in one of the extensions; paths are not checked for
 * existence here (the decoder reports a missing file). */
void filelist_free(FileList *f);

/* Reads one line of a text file (manifest, merges.txt) into buf, which holds
 * cap + 1 bytes: without its '\n' (and a '\r' before it). Returns 1 for a
 * line, 0 at end of file, -1 naming "PATH:LINE" for a NUL byte (`what` is
 * the kind of file expected, for the message) or a line over cap bytes. */
int read_text_line(FILE *fp, char *buf, size_t cap, size_t *len, const char *path, long line_no, const char *what,
                   D2vError *err);

/* A dataset that is one file per item (image, speech): the Modality data
 * callbacks those plug-ins share. The dataset is a FileList. */
int file_dataset_open(const char *path, const char *const *extensions, int labeled, void **dataset, D2vError *err);
int file_dataset_size(const void *dataset);
int file_dataset_classes(const void *dataset, const char *const **names);
const char *file_dataset_item_name(const void *dataset, int item);
void file_dataset_close(void *dataset);

/* Frees every array of a batch (data, tokens, lengths, labels, items; the
 * ones a plug-in left NULL cost nothing) and zeroes it: a batch_free. */
void batch_free_arrays(Batch *batch);

#endif
