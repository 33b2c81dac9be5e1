/* text.c — the text modality (DESIGN §4, text; issue 5): UTF-8 text in,
 * byte-level BPE (tokenizer.c), RoBERTa's embedding layer (token_embed.c),
 * BERT-style token masking (token_mask.c). Ties them into one Modality in the
 * shape of fairseq's data2vec_text:
 *
 *   tokens (B,S) -> mask ids -> E[ids] + P (+ LN when the layout has none) = x
 *   student: the masked ids embedded; teacher: the original ids embedded
 *   with the same tables (fairseq's ema_transformer_layers_only: the
 *   embeddings are shared, not averaged, so they have no teacher copy)
 *
 * The embedding's layer norm and dropout: in the post-LN layout the
 * Transformer's input layer norm and input dropout (core/transformer.c) are
 * exactly RoBERTa's layernorm_embedding and the dropout after it, so the
 * front-end adds no second norm there; in the pre-LN layout the Transformer
 * has no input norm and the front-end applies one (frontend.embed_norm).
 *
 * Thread safety: the dataset is tokenized completely in open(), on the
 * caller's thread, with a tokenizer loaded for that call alone; load_batch
 * (the loader thread) only copies token ids, so the tokenizer's encode cache
 * is never shared between threads.
 *
 * Shapes: B batch, S tokens per row (<= data.seq_len), D channels, V vocabulary. */
#include "registry.h"
#include "text_data.h"
#include "token_embed.h"
#include "token_mask.h"
#include "tokenizer.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Static_assert(sizeof(real) == sizeof(float), "modalities are built in float only");

typedef struct {
    struct {
        char embed_norm[CONFIG_STR_LEN]; /* auto | on | off */
    } frontend;
    struct {
        double prob, random_prob, keep_prob;
        int64_t span;
        char loss[CONFIG_STR_LEN]; /* mask_token | selected */
    } mask;
    struct {
        char tokenizer[CONFIG_STR_LEN];
        int64_t vocab_size, seq_len;
        char break_mode[CONFIG_STR_LEN];
    } data;
} TextConfig;

#define KEY(sec, field, type, def, lo, hi, choices, help) \
    {#sec, #field, type, offsetof(TextConfig, sec.field), def, lo, hi, choices, help}

static const ConfigKey text_keys[] = {
    KEY(frontend, embed_norm, CK_CHOICE, "auto", 0, 0, "auto|on|off",
        "layer norm of the embeddings (RoBERTa's layernorm_embedding); auto: the Transformer's input norm in "
        "post_ln, the front-end's own in pre_ln"),
    KEY(mask, prob, CK_FLOAT, "0.35", 0, 1, NULL,
        "share of tokens selected for masking, before span overlaps (data2vec text 0.35, BERT 0.15)"),
    KEY(mask, span, CK_INT, "4", 1, 1000, NULL, "consecutive tokens per selection (fairseq mask_multiple_length)"),
    KEY(mask, random_prob, CK_FLOAT, "0", 0, 1, NULL, "of the selected tokens, the share replaced by a random token"),
    KEY(mask, keep_prob, CK_FLOAT, "0", 0, 1, NULL, "of the selected tokens, the share left unchanged"),
    KEY(mask, loss, CK_CHOICE, "mask_token", 0, 0, "mask_token|selected",
        "positions that get the loss: those whose input is <mask> (data2vec) or every selected one (BERT)"),
    KEY(data, tokenizer, CK_STRING, "", 0, 0, NULL,
        "directory with vocab.json and merges.txt (d2v tokenizer train), relative to the working directory"),
    KEY(data, vocab_size, CK_INT, "0", 0, TOK_MAX_VOCAB, NULL,
        "the tokenizer's vocabulary size, checked when loading it; 0 takes whatever it has"),
    KEY(data, seq_len, CK_INT, "512", 4, 65536, NULL, "tokens per sequence, <s> and </s> included"),
    KEY(data, break_mode, CK_CHOICE, "complete_doc", 0, 0, "complete_doc|complete|none|eos",
        "how text is cut into sequences: whole sentences within a document, whole sentences, "
        "full blocks, one sentence each (fairseq sample_break_mode)"),
};

static TokenMaskSpec mask_spec_of(const TextConfig *c)
{
    return (TokenMaskSpec){c->mask.prob, (int)c->mask.span, c->mask.random_prob, c->mask.keep_prob,
                           strcmp(c->mask.loss, "selected") == 0};
}

/* The tokenizer of data.tokenizer, checked against data.vocab_size. */
static int load_tokenizer(const TextConfig *c, Tokenizer **tok, D2vError *err)
{
    if (!c->data.tokenizer[0])
        return d2v_fail(err, "data.tokenizer is not set: give the directory of a tokenizer "
                        "(d2v tokenizer train --vocab-size N --out DIR FILES...)");
    TokenMaskSpec spec = mask_spec_of(c);
    const char *problem = token_mask_spec_problem(&spec);
    if (problem)
        return d2v_fail(err, "mask.random_prob = %g, mask.keep_prob = %g: %s", c->mask.random_prob, c->mask.keep_prob,
                        problem);
    if (tokenizer_load(c->data.tokenizer, tok, err) < 0)
        return d2v_fail_prefix(err, "data.tokenizer = %s: ", c->data.tokenizer);
    const int V = tokenizer_vocab_size(*tok);
    if (c->data.vocab_size > 0 && c->data.vocab_size != V) {
        tokenizer_free(*tok);
        *tok = NULL;
        return d2v_fail(err, "data.vocab_size = %lld, but the tokenizer in %s has %d tokens (train one with "
                        "--vocab-size %lld, or set data.vocab_size = 0 to take the tokenizer's size)",
                        (long long)c->data.vocab_size, c->data.tokenizer, V, (long long)c->data.vocab_size);
    }
    return 0;
}

/* ---- front-end --------------------------------------------------------------- */

typedef struct {
    int D, V, S;
    int embed_norm;
    real eps;
    TokSpecials specials;
    uint8_t *special;    /* (V) never masked, never pooled */
    int32_t *random_ids; /* the non-special ids: random replacements */
    int n_random;
    TokenMaskSpec mask_spec;
    size_t tokens_w, pos_w, norm_w, norm_b; /* parameter offsets */
    /* activations, laid out for B x S; a batch uses a prefix */
    int32_t *student_ids;
    uint8_t *maskable, *loss_mask, *pad, *pool;
    int *mask_scratch, *first, *order;
    TextEmbedActs student, teacher;
    real *d_sum;
    /* this batch */
    int B, N;
} TextFrontend;

static void text_destroy(void *fe)
{
    TextFrontend *f = fe;
    if (!f)
        return;
    free(f->special);
    free(f->random_ids);
    free(f);
}

static void *text_create(const D2vConfig *cfg, const void *mcfg, ParamStore *ps, D2vError *err)
{
    const TextConfig *c = mcfg;
    Tokenizer *tok = NULL;
    /* Without a tokenizer on disk the front-end can still be built from
     * data.vocab_size alone (what `d2v bench` needs: the shapes, not the
     * text); reading data always loads the tokenizer (text_open). */
    const int synthetic = c->data.vocab_size > 0 && (!c->data.tokenizer[0] || access(c->data.tokenizer, F_OK) != 0);
    if (synthetic) {
        TokenMaskSpec spec = mask_spec_of(c);
        const char *problem = token_mask_spec_problem(&spec);
        if (problem) {
            d2v_fail(err, "mask.random_prob = %g, mask.keep_prob = %g: %s", c->mask.random_prob, c->mask.keep_prob,
                     problem);
            return NULL;
        }
    } else if (load_tokenizer(c, &tok, err) < 0) {
        return NULL;
    }
    TextFrontend *f = d2v_calloc(1, sizeof *f, err);
    if (!f) {
        tokenizer_free(tok);
        return NULL;
    }
    f->D = (int)cfg->model.dim;
    /* The synthetic vocabulary: <s> <pad> </s> <unk> first, as d2v's
     * tokenizer and fairseq's dictionary have them, <mask> last. */
    f->V = tok ? tokenizer_vocab_size(tok) : (int)c->data.vocab_size;
    f->S = (int)c->data.seq_len;
    f->eps = (real)cfg->model.layer_norm_eps;
    f->specials = tok ? tokenizer_specials(tok) : (TokSpecials){0, 1, 2, 3, f->V - 1};
    f->mask_spec = mask_spec_of(c);
    f->embed_norm = strcmp(c->frontend.embed_norm, "on") == 0 ||
                    (strcmp(c->frontend.embed_norm, "auto") == 0 && strcmp(cfg->model.layout, "pre_ln") == 0);
    f->special = d2v_malloc((size_t)f->V, err);
    f->random_ids = d2v_malloc((size_t)f->V * sizeof *f->random_ids, err);
    if (!f->special || !f->random_ids)
        goto fail;
    for (int v = 0; v < f->V; v++) {
        f->special[v] = (uint8_t)(tok ? tokenizer_is_special(tok, v) : v < 4 || v == f->specials.mask);
        if (!f->special[v])
            f->random_ids[f->n_random++] = v;
    }
    tokenizer_free(tok);
    tok = NULL;

    /* BERT's initialisation, as fairseq's init_bert_params: both tables
     * N(0, 0.02); the layer norm starts as the identity. */
    const int64_t table_shape[2] = {f->V, f->D}, pos_shape[2] = {f->S, f->D}, d_shape[1] = {f->D};
    const float std = (float)cfg->model.init_std;
    if (params_add(ps, "frontend.tokens", PARAM_EMBED, 0, INIT_NORMAL, std, 2, table_shape, err) < 0 ||
        params_add(ps, "frontend.pos", PARAM_EMBED, 0, INIT_NORMAL, std, 2, pos_shape, err) < 0)
        goto fail;
    if (f->embed_norm &&
        (params_add(ps, "frontend.embed_norm.weight", PARAM_NORM, 0, INIT_ONE, 0, 1, d_shape, err) < 0 ||
         params_add(ps, "frontend.embed_norm.bias", PARAM_NORM, 0, INIT_ZERO, 0, 1, d_shape, err) < 0))
        goto fail;
    return f;
fail:
    tokenizer_free(tok);
    text_destroy(f);
    return NULL;
}

static size_t offset_of(const ParamStore *ps, const char *name) { return ps->params[params_find(ps, name)].offset; }

static void text_bind(void *fe, const ParamStore *ps)
{
    TextFrontend *f = fe;
    f->tokens_w = offset_of(ps, "frontend.tokens");
    f->pos_w = offset_of(ps, "frontend.pos");
    if (f->embed_norm) {
        f->norm_w = offset_of(ps, "frontend.embed_norm.weight");
        f->norm_b = offset_of(ps, "frontend.embed_norm.bias");
    }
}

static int text_max_positions(const void *fe) { return ((const TextFrontend *)fe)->S; }

static void layout_embed_acts(TextEmbedActs *a, Arena *arena, size_t M, size_t D, int embed_norm)
{
    a->sum = arena_take(arena, M * D);
    a->mean = embed_norm ? arena_take(arena, M) : NULL;
    a->rstd = embed_norm ? arena_take(arena, M) : NULL;
    a->normed = embed_norm ? arena_take(arena, M * D) : NULL;
}

static void text_layout(void *fe, Arena *a, Arena *scratch, int B, int threads)
{
    (void)threads;
    TextFrontend *f = fe;
    const size_t M = (size_t)B * f->S, D = (size_t)f->D;
    f->student_ids = arena_take_bytes(a, M * sizeof(int32_t));
    f->maskable = arena_take_bytes(a, M);
    f->loss_mask = arena_take_bytes(a, M);
    f->pad = arena_take_bytes(a, M);
    f->pool = arena_take_bytes(a, M);
    f->mask_scratch = arena_take_bytes(a, (size_t)f->S * sizeof(int));
    f->first = arena_take_bytes(a, ((size_t)f->V + 1) * sizeof(int));
    f->order = arena_take_bytes(a, M * sizeof(int));
    layout_embed_acts(&f->student, a, M, D, f->embed_norm);
    layout_embed_acts(&f->teacher, a, M, D, f->embed_norm);
    f->d_sum = f->embed_norm ? arena_take(scratch, M * D) : NULL; /* backward only */
}

static TextEmbedParams embed_params(const TextFrontend *f, const real *w)
{
    return (TextEmbedParams){w + f->tokens_w, w + f->pos_w, f->embed_norm ? w + f->norm_w : NULL,
                             f->embed_norm ? w + f->norm_b : NULL};
}

static void text_forward(void *fe, const real *w, const Batch *batch, Rng *mask_rng, ForwardMode mode,
                         FrontendOut *out)
{
    TextFrontend *f = fe;
    const int B = batch->B, N = batch->T, D = f->D;
    const size_t M = (size_t)B * N;
    const int32_t *ids = batch->tokens;
    f->B = B;
    f->N = N;

    /* Padding past each row's length; special tokens (<s>, </s>) are never
     * masked and never part of a mean-pooled embedding. */
    int padded = 0;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < N; t++) {
            const size_t i = (size_t)b * N + t;
            f->pad[i] = t >= batch->lengths[b];
            padded |= f->pad[i];
            f->pool[i] = !f->pad[i] && !f->special[ids[i]];
            f->maskable[i] = f->pool[i];
        }

    /* Text masks ids before the embedding (DESIGN §3 step 2). */
    if (mode.train) {
        const TokenMaskVocab vocab = {f->specials.mask, f->random_ids, f->n_random};
        /* Row by row, each from its own sub-stream (Batch.row0), so a row's
         * mask does not depend on the rows drawn before it. */
        for (int b = 0; b < B; b++) {
            Rng row_rng;
            rng_substream(&row_rng, mask_rng, (uint64_t)(batch->row0 + b));
            const size_t at = (size_t)b * N;
            if (token_mask(f->student_ids + at, f->loss_mask + at, NULL, ids + at, f->maskable + at, 1, N,
                           &f->mask_spec, &vocab, f->mask_scratch, &row_rng) < 0)
                abort(); /* the spec was checked in create() */
        }
    } else {
        memset(f->loss_mask, 0, M);
    }

    /* The teacher embeds the original tokens, the student the masked ones
     * (DESIGN §3 step 3); without training they are the same. */
    const TextEmbedParams p = embed_params(f, w);
    text_embed_forward(&f->teacher, ids, &p, B, N, D, f->specials.pad, f->eps);
    const real *x_student = f->teacher.out;
    if (mode.train) {
        text_embed_forward(&f->student, f->student_ids, &p, B, N, D, f->specials.pad, f->eps);
        x_student = f->student.out;
    }
    *out = (FrontendOut){B, N, x_student, f->teacher.out, f->loss_mask, padded ? f->pad : NULL, f->pool, -1};
}

static void text_backward(void *fe, const real *w, real *g, const real *d_x_student, ForwardMode mode)
{
    (void)mode;
    TextFrontend *f = fe;
    const TextEmbedParams p = embed_params(f, w);
    const TextEmbedGrads grads = {g + f->tokens_w, g + f->pos_w, f->embed_norm ? g + f->norm_w : NULL,
                                  f->embed_norm ? g + f->norm_b : NULL};
    text_embed_backward(&grads, d_x_student, &f->student, f->student_ids, &p, f->B, f->N, f->D, f->V,
                        f->specials.pad, f->d_sum, f->first, f->order);
}

/* ---- data ---------------------------------------------------------------------- */

typedef struct {
    TextCorpus corpus;
    TokSpecials specials;
    int problems_reported; /* only the loader thread reads and sets it */
    char name[4200];       /* item_name's answer */
} TextDataset;

static int text_open(const void *mcfg, const char *path, int labeled, void **dataset, D2vError *err)
{
    const TextConfig *c = mcfg;
    TextBreakMode mode;
    if (text_break_mode_parse(c->data.break_mode, &mode) < 0)
        return d2v_fail(err, "data.break_mode = %s: unknown", c->data.break_mode);
    Tokenizer *tok;
    if (load_tokenizer(c, &tok, err) < 0)
        return -1;
    TextDataset *d = d2v_calloc(1, sizeof *d, err);
    if (!d) {
        tokenizer_free(tok);
        return -1;
    }
    d->specials = tokenizer_specials(tok);
    const TextReadOptions o = {labeled, (int)c->data.seq_len - 1, mode};
    int rc = text_corpus_read(&d->corpus, path, tok, &o, err);
    tokenizer_free(tok);
    if (rc < 0) {
        free(d);
        return -1;
    }
    *dataset = d;
    return 0;
}

static int text_dataset_size(const void *dataset) { return ((const TextDataset *)dataset)->corpus.n_items; }

static int text_dataset_classes(const void *dataset, const char *const **names)
{
    const TextDataset *d = dataset;
    *names = (const char *const *)d->corpus.class_names;
    return d->corpus.n_classes;
}

/* "FILE:LINE" of the item's first token; valid until the next call. */
static const char *text_item_name(const void *dataset, int item)
{
    TextDataset *d = (TextDataset *)dataset;
    const TextItem *it = &d->corpus.items[item];
    snprintf(d->name, sizeof d->name, "%s:%lld", d->corpus.paths[it->file], (long long)it->line);
    return d->name;
}

static void text_dataset_close(void *dataset)
{
    TextDataset *d = dataset;
    text_corpus_free(&d->corpus);
    free(d);
}

static int text_batch_alloc(const void *mcfg, int B, Batch *batch, D2vError *err)
{
    const TextConfig *c = mcfg;
    memset(batch, 0, sizeof *batch);
    batch->tokens = d2v_malloc((size_t)B * (size_t)c->data.seq_len * sizeof(int32_t), err);
    batch->lengths = d2v_malloc((size_t)B * sizeof(int), err);
    batch->labels = d2v_malloc((size_t)B * sizeof(int), err);
    batch->items = d2v_malloc((size_t)B * sizeof(int), err);
    return batch->tokens && batch->lengths && batch->labels && batch->items ? 0 : -1;
}

static void text_batch_free(Batch *batch)
{
    free(batch->tokens);
    free(batch->lengths);
    free(batch->labels);
    free(batch->items);
    memset(batch, 0, sizeof *batch);
}

/* Files left out or repaired while the dataset was read are reported once,
 * through the loader's channel, when the first batch is made: skipped files
 * are counted (or fatal under data.on_error = fail), repaired ones are
 * warnings. */
static int report_problems(TextDataset *d, int skip_bad, void (*warn)(void *ctx, const char *msg), void *warn_ctx,
                           Batch *batch, D2vError *err)
{
    if (d->problems_reported)
        return 0;
    d->problems_reported = 1;
    for (int i = 0; i < d->corpus.n_problems; i++) {
        const TextProblem *p = &d->corpus.problems[i];
        if (p->skipped && !skip_bad)
            return d2v_fail(err, "%s", p->message);
        batch->skipped += p->skipped;
        if (!warn)
            continue;
        if (p->skipped) {
            warn(warn_ctx, p->message);
        } else {
            char kept[D2V_ERR_LEN + 16];
            snprintf(kept, sizeof kept, "%s%s", MODALITY_WARNING_KEPT, p->message);
            warn(warn_ctx, kept);
        }
    }
    return 0;
}

/* Row i is <s> and the item's tokens, padded with <pad> to the longest row
 * of the (global) batch (fairseq's PrependTokenDataset + RightPadDataset). Text has
 * no augmentation: train and rng change nothing. */
static int text_load_batch(const void *mcfg, void *dataset, const int *items, int B, int train, Rng *rng,
                           int skip_bad, void (*warn)(void *ctx, const char *msg), void *warn_ctx, Batch *batch,
                           D2vError *err)
{
    (void)mcfg;
    (void)train;
    (void)rng;
    TextDataset *d = dataset;
    batch->B = B;
    batch->skipped = 0;
    if (report_problems(d, skip_bad, warn, warn_ctx, batch, err) < 0)
        return -1;
    /* Padded to the longest row of the step's whole batch when this is a
     * slice of it (Batch.global_items), so every rank and micro-batch has
     * the positions one batch would have. */
    const int *all = batch->global_items ? batch->global_items : items;
    const int n_all = batch->global_items ? batch->global_rows : B;
    int T = 0;
    for (int i = 0; i < n_all; i++) {
        const int length = 1 + d->corpus.items[all[i]].length;
        T = length > T ? length : T;
    }
    for (int i = 0; i < B; i++) {
        const TextItem *it = &d->corpus.items[items[i]];
        int32_t *row = batch->tokens + (size_t)i * T;
        row[0] = d->specials.bos;
        memcpy(row + 1, d->corpus.tokens.ids + it->start, (size_t)it->length * sizeof *row);
        for (int t = 1 + it->length; t < T; t++)
            row[t] = d->specials.pad;
        batch->lengths[i] = 1 + it->length;
        batch->items[i] = items[i];
        batch->labels[i] = it->label;
    }
    batch->T = T;
    return 0;
}

/* Full rows of seq_len: <s> then random ordinary tokens, no padding. */
static void text_synthetic_batch(const void *fe, const void *mcfg, int B, Rng *rng, Batch *batch)
{
    const TextFrontend *f = fe;
    (void)mcfg;
    const int S = f->S;
    for (int b = 0; b < B; b++) {
        int32_t *row = batch->tokens + (size_t)b * S;
        row[0] = f->specials.bos;
        for (int t = 1; t < S; t++)
            row[t] = f->random_ids[rng_below(rng, (uint32_t)f->n_random)];
        batch->lengths[b] = S;
        batch->labels[b] = batch->items[b] = -1;
    }
    batch->B = B;
    batch->T = S;
}

/* Embedding lookups and their scatter-add backward are not GEMMs. */
static void text_flops(const void *fe, int B, double *forward, double *backward)
{
    (void)fe;
    (void)B;
    *forward = *backward = 0;
}

static double text_batch_amount(const void *mcfg, const Batch *batch, const char **unit)
{
    (void)mcfg;
    double tokens = 0;
    for (int b = 0; b < batch->B; b++)
        tokens += batch->lengths[b];
    *unit = "tokens";
    return tokens;
}

/* `d2v show`: each token of the row as text (its bytes; special tokens as
 * written), from the tokenizer of data.tokenizer. */
static int text_view(const void *fe, const void *mcfg, const Batch *batch, int row, InputView *view, D2vError *err)
{
    (void)fe;
    Tokenizer *tok;
    if (load_tokenizer(mcfg, &tok, err) < 0)
        return -1;
    memset(view, 0, sizeof *view);
    view->kind = VIEW_TOKENS;
    const int n = batch->lengths[row];
    view->tokens = d2v_calloc((size_t)n, sizeof *view->tokens, err);
    if (!view->tokens) {
        tokenizer_free(tok);
        return -1;
    }
    view->n_positions = n;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        const int32_t id = batch->tokens[(size_t)row * batch->T + i];
        size_t len = 0;
        const char *text = (const char *)tokenizer_token_bytes(tok, id, &len);
        if (!text) {
            text = "?";
            len = 1;
        }
        view->tokens[i] = d2v_malloc(len + 1, err);
        if (!view->tokens[i]) {
            rc = -1;
            break;
        }
        memcpy(view->tokens[i], text, len);
        view->tokens[i][len] = 0;
    }
    tokenizer_free(tok);
    if (rc < 0)
        input_view_free(view);
    return rc;
}

const Modality text_modality = {
    .name = "text",
    .keys = text_keys,
    .n_keys = (int)(sizeof text_keys / sizeof *text_keys),
    .config_size = sizeof(TextConfig),
    .create = text_create,
    .bind = text_bind,
    .max_positions = text_max_positions,
    .layout = text_layout,
    .destroy = text_destroy,
    .open = text_open,
    .dataset_size = text_dataset_size,
    .dataset_classes = text_dataset_classes,
    .item_name = text_item_name,
    .dataset_close = text_dataset_close,
    .batch_alloc = text_batch_alloc,
    .batch_free = text_batch_free,
    .load_batch = text_load_batch,
    .synthetic_batch = text_synthetic_batch,
    .flops = text_flops,
    .batch_amount = text_batch_amount,
    .forward = text_forward,
    .backward = text_backward,
    .view = text_view,
};
