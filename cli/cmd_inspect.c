/* cmd_inspect.c — `d2v inspect FILE.safetensors`: what a checkpoint holds. */
#include "cli.h"
#include "safetensors.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

/* Tensor names and metadata come from the file: a control byte (a newline in
 * a name) is printed as '?' so each entry stays on its line. */
static void put_visible(const char *text, int width)
{
    int n = 0;
    for (const unsigned char *c = (const unsigned char *)text; *c; c++, n++)
        putchar(*c < 0x20 || *c == 0x7f ? '?' : *c);
    for (; n < width; n++)
        putchar(' ');
}

int cmd_inspect(int argc, char **argv)
{
    if (wants_help(argc, argv) || argc != 1) {
        fprintf(argc == 1 ? stdout : stderr,
                "usage: d2v inspect FILE.safetensors\n\n"
                "Lists every tensor (name, dtype, shape), the metadata, and the embedded\n"
                "config of a d2v checkpoint (or any safetensors file). The file is fully\n"
                "validated first; a malformed one is reported, never half-read.\n");
        return argc == 1 ? 0 : 2;
    }
    StFile f;
    D2vError err;
    if (st_read(argv[0], &f, &err) < 0) {
        fprintf(stderr, "d2v inspect: %s\n", err.msg);
        return 1;
    }
    uint64_t total = 0;
    printf("%s: %d tensors, %" PRIu64 " bytes of data\n\n", argv[0], f.n_tensors, f.data_len);
    for (int i = 0; i < f.n_tensors; i++) {
        const StTensor *t = &f.tensors[i];
        char shape[128] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%" PRId64, d ? ", " : "", t->shape[d]);
        printf("  ");
        put_visible(t->name, 48);
        printf(" %-4s (%s)\n", st_dtype_name(t->dtype), shape);
        if (strncmp(t->name, "teacher.", 8) != 0 && strncmp(t->name, "optim.", 6) != 0)
            total += st_numel(t);
    }
    printf("\nstudent parameters: %" PRIu64 "\n", total);
    const char *config = NULL;
    if (f.n_meta)
        printf("\nmetadata:\n");
    for (int i = 0; i < f.n_meta; i++) {
        if (strcmp(f.meta[i].key, "config") == 0) {
            config = f.meta[i].value;
            continue;
        }
        printf("  ");
        put_visible(f.meta[i].key, 0);
        printf(" = ");
        put_visible(f.meta[i].value, 0);
        printf("\n");
    }
    if (config)
        printf("\nembedded config:\n%s", config);
    st_free(&f);
    return 0;
}
