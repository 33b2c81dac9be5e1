/* modality.h — what a modality plugs into the shared core (DESIGN §2).
 *
 * core/ never includes a modality's header: the training loop sees a
 * modality only through this table of functions. A modality binds a data
 * loader, a front-end (encoders/), a masker (masking/) and its target norm
 * defaults into one Modality value; cli/ finds it by name (modalities/
 * registry.c). Adding a modality means one file in each of encoders/,
 * masking/, modalities/ and a config — no edit to core/. */
#ifndef D2V_MODALITY_H
#define D2V_MODALITY_H

#include "arena.h"
#include "config.h"
#include "params.h"
#include "rng.h"
#include "transformer.h"

#include <stdlib.h>
#include <string.h>

/* A batch as the loader fills it. Which fields a modality uses is its own
 * business: images use data (B,3,H,W); audio data (B,T) and lengths; text
 * tokens (B,T) and lengths. */
typedef struct {
    int B, T;          /* rows, and the time/sequence extent of this batch */
    float *data;
    int32_t *tokens;
    int *lengths;
    int *labels;       /* evaluation sets; -1 when unlabeled */
    int *items;        /* which dataset items the rows are */
    int skipped;       /* unreadable items replaced while filling it */
    /* Where these rows sit in the step's global batch (data-parallel ranks
     * and accumulated micro-batches each hold a slice of it; the loader sets
     * these before load_batch, batch_alloc leaves them 0 / NULL). Row i's
     * random draws (augmentation in load_batch, the mask in forward) come
     * from rng_substream(rng, row0 + i), and load_batch may look at every
     * item of the global batch (global_items, global_rows) to shape the rows
     * as one batch would (text pads to the longest of them). */
    int row0, global_rows;
    const int *global_items;
    /* Set by the training loop before forward (NULL: this batch alone): the
     * smallest `value` over every rank's share of this forward, for a masker
     * whose rows must agree (speech's same-count masks). A collective: each
     * rank calls it once per forward. */
    int (*agree_min)(void *ctx, int value);
    void *agree_ctx;
} Batch;

/* What the front-end hands the Transformer for one batch (DESIGN §3 steps
 * 2-3): the masked input for the student, the unmasked one for the teacher,
 * where the loss goes, which positions are padding, and which positions a
 * mean-pooled embedding averages over. All point into the front-end's own
 * activations and stay valid until its next forward. */
typedef struct {
    int B, N;
    const real *x_student, *x_teacher; /* (B,N,D) */
    const uint8_t *loss_mask;          /* (B,N) 1 = masked, gets the loss */
    const uint8_t *pad;                /* (B,N) 1 = padding, or NULL */
    const uint8_t *pool;               /* (B,N) 1 = content (not CLS, not special) */
    int cls_position;                  /* -1 when there is no CLS token */
} FrontendOut;

#define MODALITY_WARNING_KEPT "kept: "

/* What one input looks like to a person, for `d2v show` (issue 9), and
 * where the front-end's positions sit in it. The modality's view callback
 * mallocs the arrays; input_view_free releases them. */
typedef enum { VIEW_IMAGE, VIEW_SIGNAL, VIEW_TOKENS } ViewKind;
typedef struct {
    ViewKind kind;
    int first_position;  /* the front-end position of cell, frame or token 0 (1 after a CLS) */
    int n_positions;     /* cells, frames or tokens */
    /* image: rgb (height, width, 3), the model's input un-normalised;
     * position first_position + i is patch i (row-major) of a grid_h x
     * grid_w grid of patch x patch pixels */
    uint8_t *rgb;
    int width, height, grid_h, grid_w, patch;
    /* signal: n_samples at sample_rate; frame i starts at sample i * hop and
     * its receptive field spans `window` samples */
    float *samples;
    int n_samples, sample_rate, hop, window;
    /* tokens: each token's text (UTF-8; special tokens as written, <s>) */
    char **tokens;
} InputView;

/* Frees the arrays of a view filled by a Modality's view callback. */
static inline void input_view_free(InputView *v)
{
    free(v->rgb);
    free(v->samples);
    if (v->tokens)
        for (int i = 0; i < v->n_positions; i++)
            free(v->tokens[i]);
    free(v->tokens);
    memset(v, 0, sizeof *v);
}

typedef struct Modality Modality;
struct Modality {
    const char *name;
    /* The modality's own config keys ([frontend], [mask], [data]) and the
     * struct they fill. */
    const ConfigKey *keys;
    int n_keys;
    size_t config_size;

    /* The front-end: create registers its tensors (not in the teacher) and
     * returns its state; max_positions is N at the configured input size.
     * layout lays out its activations for batches of up to B: in arena what
     * must live from forward to backward (and what the caller reads after
     * forward), in scratch what is used only inside one forward or one
     * backward call. scratch overlays the encoder's activations, which are
     * dead while the front-end runs (model.h). */
    void *(*create)(const D2vConfig *cfg, const void *mcfg, ParamStore *ps, D2vError *err);
    void (*bind)(void *fe, const ParamStore *ps);
    int (*max_positions)(const void *fe);
    void (*layout)(void *fe, Arena *arena, Arena *scratch, int B, int threads);
    void (*destroy)(void *fe);

    /* Data: open a dataset path (train split or evaluation), allocate a
     * batch, fill it with the given items. on_error skip: an unreadable item
     * is reported through warn and replaced (batch->skipped counts it);
     * fail: the error is returned. A warning that begins with
     * MODALITY_WARNING_KEPT is about input that was repaired and used, not
     * skipped (e.g. ill-formed UTF-8 replaced in a text file). Must be
     * thread-safe for one loader thread next to the training thread. */
    int (*open)(const void *mcfg, const char *path, int labeled, void **dataset, D2vError *err);
    int (*dataset_size)(const void *dataset);
    int (*dataset_classes)(const void *dataset, const char *const **names);
    const char *(*item_name)(const void *dataset, int item); /* its path, for reports */
    void (*dataset_close)(void *dataset);
    int (*batch_alloc)(const void *mcfg, int B, Batch *batch, D2vError *err);
    void (*batch_free)(Batch *batch);
    int (*load_batch)(const void *mcfg, void *dataset, const int *items, int B, int train, Rng *rng, int skip_bad,
                      void (*warn)(void *ctx, const char *msg), void *warn_ctx, Batch *batch, D2vError *err);

    /* Front-end forward for one batch: features, the mask (drawn from
     * mask_rng; no mask when mode.train == 0), positions. Then backward from
     * the gradient w.r.t. x_student into the front-end's tensors; the batch
     * must be unchanged in between (the backward may read its input again). */
    void (*forward)(void *fe, const real *w, const Batch *batch, Rng *mask_rng, ForwardMode mode, FrontendOut *out);
    void (*backward)(void *fe, const real *w, real *g, const real *d_x_student, ForwardMode mode);

    /* For `d2v bench` (both optional): fill a batch from batch_alloc with
     * random inputs of the configured full shape (no padding), without a
     * dataset; and the front-end's matmul FLOPs for B such rows, forward
     * and backward (2*M*N*K per GEMM or convolution). */
    void (*synthetic_batch)(const void *fe, const void *mcfg, int B, Rng *rng, Batch *batch);
    void (*flops)(const void *fe, int B, double *forward, double *backward);
    /* For `d2v bench --data` (optional): how much input a loaded batch
     * holds, in the modality's own unit (*unit: "images", "s of audio",
     * "tokens"), so the loader's rate reads in the unit users think in. */
    double (*batch_amount)(const void *mcfg, const Batch *batch, const char **unit);

    /* For `d2v show` (optional): row `row` of a batch the front-end has just
     * run forward on, as a person would look at it, and where its positions
     * are (InputView). Errors name what was missing (a tokenizer). */
    int (*view)(const void *fe, const void *mcfg, const Batch *batch, int row, InputView *view, D2vError *err);
};

#endif
