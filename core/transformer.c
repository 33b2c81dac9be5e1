#include "transformer.h"

#include <stdio.h>
#include <string.h>

/* Dropout sites: every dropout in the network draws from its own stream. */
enum { SITE_ATTN = 0, SITE_PROJ = 1, SITE_ACT = 2, SITE_FFN = 3, SITES_PER_LAYER = 4 };
#define SITE_INPUT (SITES_PER_LAYER * MAX_LAYERS)

/* width: elements per position of the tensor dropped (D, or F for the FFN
 * activation); N positions per row; H heads (attention); keep: where the
 * mask is recorded, or NULL. */
static DropoutSite site(ForwardMode mode, real p, int layer, int which, int N, int width, int H, uint8_t *keep)
{
    DropoutSite s = {mode.train ? p : 0, mode.seed, (uint64_t)(layer * SITES_PER_LAYER + which), mode.step,
                     mode.row0 * (uint64_t)N * (uint64_t)width, mode.row0 * (uint64_t)H, keep};
    return s;
}

/* A keep mask of `bits` bits, or NULL where that dropout is off. */
static uint8_t *take_keep(Arena *arena, real p, size_t bits)
{
    return p > 0 ? arena_take_bytes(arena, (bits + 7) / 8) : NULL;
}

/* ---- registration --------------------------------------------------------- */

static int add(ParamStore *ps, const char *prefix, const char *name, ParamKind kind, ParamInit init, float scale,
               int64_t d0, int64_t d1, D2vError *err)
{
    char full[PARAM_NAME_LEN];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    int64_t shape[2] = {d0, d1};
    return params_add(ps, full, kind, 1, init, scale, d1 ? 2 : 1, shape, err);
}

int transformer_register(Transformer *t, ParamStore *ps, ParamInit init, float std, D2vError *err)
{
    const int64_t D = t->dim, F = t->ffn_dim;
    if (t->layers < 1 || t->layers > MAX_LAYERS)
        return d2v_fail(err, "model.layers = %d: expected 1..%d", t->layers, MAX_LAYERS);
    if (D % t->heads)
        return d2v_fail(err, "model.dim = %d is not divisible by model.heads = %d", t->dim, t->heads);
    /* With PyTorch's default, a Linear's weight and bias are U(+-1/sqrt(fan_in)). */
    const int uniform = init == INIT_UNIFORM;
    const float s_in = uniform ? 1.0f / sqrtf((float)D) : std;
    const float s_ffn = uniform ? 1.0f / sqrtf((float)F) : std;
    const ParamInit bias_init = uniform ? INIT_UNIFORM : INIT_ZERO;
    for (int l = 0; l < t->layers; l++) {
        char p[32];
        snprintf(p, sizeof p, "blocks.%d.", l);
        if (add(ps, p, "attn.qkv.weight", PARAM_WEIGHT, init, s_in, 3 * D, 0 + D, err) < 0 ||
            add(ps, p, "attn.qkv.bias", PARAM_BIAS, bias_init, s_in, 3 * D, 0, err) < 0 ||
            add(ps, p, "attn.proj.weight", PARAM_WEIGHT, init, s_in, D, D, err) < 0 ||
            add(ps, p, "attn.proj.bias", PARAM_BIAS, bias_init, s_in, D, 0, err) < 0 ||
            add(ps, p, "ln1.weight", PARAM_NORM, INIT_ONE, 0, D, 0, err) < 0 ||
            add(ps, p, "ln1.bias", PARAM_NORM, INIT_ZERO, 0, D, 0, err) < 0 ||
            add(ps, p, "fc1.weight", PARAM_WEIGHT, init, s_in, F, D, err) < 0 ||
            add(ps, p, "fc1.bias", PARAM_BIAS, bias_init, s_in, F, 0, err) < 0 ||
            add(ps, p, "fc2.weight", PARAM_WEIGHT, init, s_ffn, D, F, err) < 0 ||
            add(ps, p, "fc2.bias", PARAM_BIAS, bias_init, s_ffn, D, 0, err) < 0 ||
            add(ps, p, "ln2.weight", PARAM_NORM, INIT_ONE, 0, D, 0, err) < 0 ||
            add(ps, p, "ln2.bias", PARAM_NORM, INIT_ZERO, 0, D, 0, err) < 0)
            return -1;
    }
    if (add(ps, "", "norm.weight", PARAM_NORM, INIT_ONE, 0, D, 0, err) < 0 ||
        add(ps, "", "norm.bias", PARAM_NORM, INIT_ZERO, 0, D, 0, err) < 0)
        return -1;
    return 0;
}

static size_t offset_of(const ParamStore *ps, const char *prefix, const char *name)
{
    char full[PARAM_NAME_LEN];
    snprintf(full, sizeof full, "%s%s", prefix, name);
    return ps->params[params_find(ps, full)].offset;
}

void transformer_bind(Transformer *t, const ParamStore *ps)
{
    for (int l = 0; l < t->layers; l++) {
        char p[32];
        snprintf(p, sizeof p, "blocks.%d.", l);
        BlockParams *b = &t->blocks[l];
        b->qkv_w = offset_of(ps, p, "attn.qkv.weight");
        b->qkv_b = offset_of(ps, p, "attn.qkv.bias");
        b->proj_w = offset_of(ps, p, "attn.proj.weight");
        b->proj_b = offset_of(ps, p, "attn.proj.bias");
        b->ln1_w = offset_of(ps, p, "ln1.weight");
        b->ln1_b = offset_of(ps, p, "ln1.bias");
        b->fc1_w = offset_of(ps, p, "fc1.weight");
        b->fc1_b = offset_of(ps, p, "fc1.bias");
        b->fc2_w = offset_of(ps, p, "fc2.weight");
        b->fc2_b = offset_of(ps, p, "fc2.bias");
        b->ln2_w = offset_of(ps, p, "ln2.weight");
        b->ln2_b = offset_of(ps, p, "ln2.bias");
    }
    t->norm_w = offset_of(ps, "", "norm.weight");
    t->norm_b = offset_of(ps, "", "norm.bias");
}

/* ---- activations -------------------------------------------------------------- */

static void layout_block(BlockActs *b, Arena *arena, const TransformerActs *shared, const Transformer *t, int l,
                         int B, int N, int keep_masks)
{
    const size_t M = (size_t)B * N, D = (size_t)t->dim, F = (size_t)t->ffn_dim;
    const int post = t->layout == LAYOUT_POST_LN;
    b->ln1_out = shared->ln1_scratch;
    b->ln1_mean = arena_take(arena, M);
    b->ln1_rstd = arena_take(arena, M);
    b->qkv = arena_take(arena, M * 3 * D);
    /* Not kept: nobody reads them after the block's forward (the backward
     * recomputes them), so they stay in the attention's per-thread scratch
     * (NULL). Written out, a teacher's went to memory: image_tiny 7.4 MB a
     * block. */
    b->probs = shared->keep_probs ? arena_take(arena, (size_t)B * t->heads * N * N) : NULL;
    b->att = shared->keep_att ? arena_take(arena, M * D) : shared->att_scratch;
    b->proj = shared->proj_scratch;
    b->res1 = arena_take(arena, M * D);
    /* Post-LN's ln2_out is the block's output, which only the next block
     * reads in the forward: two buffers in turn (the backward recomputes
     * it from res2). */
    b->ln2_out = post ? shared->out_scratch[l & 1] : shared->ln2_scratch;
    b->ln2_mean = arena_take(arena, M);
    b->ln2_rstd = arena_take(arena, M);
    b->fc1 = arena_take(arena, M * F);
    b->act = shared->act_scratch;
    b->ffn = shared->ffn_scratch;
    b->res2 = arena_take(arena, M * D);
    b->out = post ? b->ln2_out : b->res2;
    if (keep_masks) {
        b->attn_keep = take_keep(arena, t->attention_dropout, (size_t)B * t->heads * attention_keep_bytes(N) * 8);
        b->proj_keep = take_keep(arena, t->dropout, M * D);
        b->act_keep = take_keep(arena, t->activation_dropout, M * F);
        b->ffn_keep = take_keep(arena, t->dropout, M * D);
    }
}

void transformer_layout(TransformerActs *a, Arena *arena, const Transformer *t, int B, int N, int keep_all,
                        int threads)
{
    const size_t M = (size_t)B * N, D = (size_t)t->dim, F = (size_t)t->ffn_dim;
    const int post = t->layout == LAYOUT_POST_LN;
    memset(a, 0, sizeof *a);
    a->B = B;
    a->N = N;
    a->n_blocks = keep_all ? t->layers : 2;
    /* Pre-LN without dropout feeds block 0 the input itself. */
    a->input = post || t->dropout > 0 ? arena_take(arena, M * D) : NULL;
    a->norm_mean = arena_take(arena, M);
    a->norm_rstd = arena_take(arena, M);
    /* The student keeps every block's attention probabilities where they
     * fit in t->attention_memory: its backward then skips recomputing them
     * (a GEMM and a softmax per head; image_tiny: 4.6 -> 2.8 ms per block's
     * attention backward with the recomputed output skipped too, 2
     * threads). Otherwise they are not written out at all (BlockActs.probs
     * NULL) and the backward recomputes them. Where the attention outputs
     * fit in what is left, they are kept too, and the backward skips
     * recomputing them (a GEMM per head more: text_tiny, not image_tiny). */
    const size_t probs = (size_t)B * t->heads * N * N;
    const double probs_bytes = (double)probs * sizeof(real) * t->layers;
    const double att_bytes = (double)M * D * sizeof(real) * t->layers;
    a->keep_probs = keep_all && probs_bytes <= (double)t->attention_memory;
    a->keep_att = a->keep_probs && probs_bytes + att_bytes <= (double)t->attention_memory;
    /* Pre-LN's LN1 and LN2 outputs are never needed at the same time. */
    a->ln1_scratch = arena_take(arena, M * D);
    a->ln2_scratch = post ? NULL : a->ln1_scratch;
    a->out_scratch[0] = post ? arena_take(arena, M * D) : NULL;
    a->out_scratch[1] = post ? arena_take(arena, M * D) : NULL;
    a->att_scratch = a->keep_att ? NULL : arena_take(arena, M * D);
    a->proj_scratch = arena_take(arena, M * D);
    a->act_scratch = arena_take(arena, M * F);
    a->ffn_scratch = arena_take(arena, M * D);
    /* The encoder's output is read (gathered for the head) before the
     * backward, and the last block's ffn is spent by then. */
    a->output = a->ffn_scratch;
    for (int l = 0; l < a->n_blocks; l++)
        layout_block(&a->blocks[l], arena, a, t, l, B, N, keep_all);
    a->attn_scratch = arena_take(arena, attention_scratch_size(N, threads));
    if (!keep_all)
        return;
    a->input_keep = take_keep(arena, t->dropout, M * D);
    /* The backward's scratch: where it can, the forward's, which the
     * backward does not read (proj, ffn, probs) or reads just before
     * overwriting (act: fc2's input, then d of it). */
    a->d_a = a->ffn_scratch;
    a->d_b = arena_take(arena, M * D);
    a->d_c = a->proj_scratch;
    a->d_stream = arena_take(arena, M * D);
    a->d_f = a->act_scratch;
    a->d_qkv = arena_take(arena, 3 * M * D);
}

/* ---- one block -------------------------------------------------------------------- */

void block_forward(const Transformer *t, int layer, const real *w, BlockActs *a, const uint8_t *pad, int B,
                   int N, real *attn_scratch, ForwardMode mode)
{
    const BlockParams *p = &t->blocks[layer];
    const int M = B * N, D = t->dim, F = t->ffn_dim;
    const int post = t->layout == LAYOUT_POST_LN;
    const real *x = a->x;

    /* Attention sub-layer. Pre-LN normalises its input; post-LN its output. */
    const real *attn_in = x;
    if (!post) {
        layernorm_forward(a->ln1_out, a->ln1_mean, a->ln1_rstd, x, w + p->ln1_w, w + p->ln1_b, M, D, t->eps);
        attn_in = a->ln1_out;
    }
    linear_forward(a->qkv, attn_in, w + p->qkv_w, w + p->qkv_b, M, D, 3 * D);
    attention_forward(a->att, a->probs, a->qkv, pad, B, N, D, t->heads,
                      site(mode, t->attention_dropout, layer, SITE_ATTN, N, 0, t->heads, a->attn_keep), attn_scratch);
    linear_forward(a->proj, a->att, w + p->proj_w, w + p->proj_b, M, D, D);
    dropout_forward(a->proj, a->proj, (size_t)M * D, site(mode, t->dropout, layer, SITE_PROJ, N, D, 0, a->proj_keep));
    residual_forward(a->res1, x, a->proj, (size_t)M * D);

    /* Feed-forward sub-layer. */
    const real *ffn_in;
    if (post) {
        layernorm_forward(a->ln1_out, a->ln1_mean, a->ln1_rstd, a->res1, w + p->ln1_w, w + p->ln1_b, M, D, t->eps);
        ffn_in = a->ln1_out;
    } else {
        layernorm_forward(a->ln2_out, a->ln2_mean, a->ln2_rstd, a->res1, w + p->ln2_w, w + p->ln2_b, M, D, t->eps);
        ffn_in = a->ln2_out;
    }
    linear_forward(a->fc1, ffn_in, w + p->fc1_w, w + p->fc1_b, M, D, F);
    gelu_forward(a->act, a->fc1, (size_t)M * F);
    dropout_forward(a->act, a->act, (size_t)M * F, site(mode, t->activation_dropout, layer, SITE_ACT, N, F, 0, a->act_keep));
    linear_forward(a->ffn, a->act, w + p->fc2_w, w + p->fc2_b, M, F, D);
    dropout_forward(a->ffn, a->ffn, (size_t)M * D, site(mode, t->dropout, layer, SITE_FFN, N, D, 0, a->ffn_keep));

    /* The last residual (post-LN adds the FFN's input, pre-LN the stream h);
     * a->ffn stays as it is: the paper's target tap. */
    residual_forward(a->res2, post ? a->ln1_out : a->res1, a->ffn, (size_t)M * D);
    if (post)
        layernorm_forward(a->ln2_out, a->ln2_mean, a->ln2_rstd, a->res2, w + p->ln2_w, w + p->ln2_b, M, D, t->eps);
}

/* d of a dropout's input: its masked copy in buf, or d_out itself where
 * nothing is dropped (p = 0: image_tiny's 2.4 MB copies, on one thread,
 * were two a layer). */
static const real *dropout_grad(real *buf, const real *d_out, size_t n, DropoutSite site)
{
    if (site.p <= 0)
        return d_out;
    dropout_backward(buf, d_out, n, site);
    return buf;
}

void block_backward(const Transformer *t, int layer, const real *w, real *g, const BlockActs *a,
                    TransformerActs *s, real *d_stream, const uint8_t *pad, int B, int N, ForwardMode mode)
{
    const BlockParams *p = &t->blocks[layer];
    const int M = B * N, D = t->dim, F = t->ffn_dim;
    const size_t MD = (size_t)M * D;
    const int post = t->layout == LAYOUT_POST_LN;

    /* d_res1 collects the gradient w.r.t. the attention sub-layer's output
     * (post: through LN1; pre: the residual stream h). */
    real *d_res1 = s->d_b;
    const real *ffn_in = post ? a->ln1_out : a->ln2_out;
    /* d_end = d(block end before LN2) = d ffn = d(residual partner) */
    const real *d_end = d_stream; /* pre: y = h + ffn; d_stream is not written until the end */
    if (post) {
        /* y = LN2(h + ffn), h = ln1_out */
        layernorm_backward(s->d_a, g + p->ln2_w, g + p->ln2_b, d_stream, a->res2, a->ln2_mean, a->ln2_rstd,
                           w + p->ln2_w, M, D);
        d_end = s->d_a;
    }
    const real *d_ffn = dropout_grad(s->d_c, d_end, MD, site(mode, t->dropout, layer, SITE_FFN, N, D, 0, a->ffn_keep));
    /* fc2's input GELU(fc1) was not kept (act is shared by the blocks).
     * One pass recomputes it and takes d through GELU, both from one erf
     * and exp per element; it overwrites fc1, which nothing reads after
     * this. Dropout's mask is the forward's, read back from its bits. */
    const DropoutSite act_drop = site(mode, t->activation_dropout, layer, SITE_ACT, N, F, 0, a->act_keep);
    linear_backward(s->d_f, NULL, g + p->fc2_b, d_ffn, NULL, w + p->fc2_w, M, F, D, 0);
    dropout_backward(s->d_f, s->d_f, (size_t)M * F, act_drop);
    real *act = a->fc1;
    gelu_backward_recompute(act, s->d_f, s->d_f, a->fc1, (size_t)M * F);
    dropout_again(act, act, (size_t)M * F, act_drop);
    linear_backward_weight(g + p->fc2_w, d_ffn, act, M, F, D);
    /* The FFN's input was not kept: LN1(res1) (post) or LN2(res1) (pre). */
    if (post)
        layernorm_recompute(a->ln1_out, a->res1, a->ln1_mean, a->ln1_rstd, w + p->ln1_w, w + p->ln1_b, M, D);
    else
        layernorm_recompute(a->ln2_out, a->res1, a->ln2_mean, a->ln2_rstd, w + p->ln2_w, w + p->ln2_b, M, D);
    if (post) {
        /* d h = d_a (residual) + fc1 path; d_ffn (in d_c or d_a) is spent */
        linear_backward(s->d_a, g + p->fc1_w, g + p->fc1_b, s->d_f, ffn_in, w + p->fc1_w, M, D, F, 1);
        layernorm_backward(d_res1, g + p->ln1_w, g + p->ln1_b, s->d_a, a->res1, a->ln1_mean, a->ln1_rstd,
                           w + p->ln1_w, M, D);
    } else {
        linear_backward(s->d_c, g + p->fc1_w, g + p->fc1_b, s->d_f, ffn_in, w + p->fc1_w, M, D, F, 0);
        layernorm_backward(d_res1, g + p->ln2_w, g + p->ln2_b, s->d_c, a->res1, a->ln2_mean, a->ln2_rstd,
                           w + p->ln2_w, M, D);
        /* h also reaches y directly */
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < MD; i++)
            d_res1[i] += d_end[i];
    }

    /* res1 = x + dropout(proj(attention(qkv(attn_in)))). Where the
     * attention's output (proj's input) was not kept, attention_backward
     * recomputes it with the probabilities, so proj's weight gradient comes
     * after. */
    const real *d_proj = dropout_grad(s->d_a, d_res1, MD, site(mode, t->dropout, layer, SITE_PROJ, N, D, 0, a->proj_keep));
    linear_backward(s->d_c, NULL, g + p->proj_b, d_proj, NULL, w + p->proj_w, M, D, D, 0);
    attention_backward(s->d_qkv, s->keep_att ? NULL : a->att, s->d_c, a->qkv, a->probs, pad,
                       B, N, D, t->heads,
                       site(mode, t->attention_dropout, layer, SITE_ATTN, N, 0, t->heads, a->attn_keep), s->attn_scratch);
    linear_backward_weight(g + p->proj_w, d_proj, a->att, M, D, D);
    if (post) {
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < MD; i++)
            d_stream[i] = d_res1[i];
        linear_backward(d_stream, g + p->qkv_w, g + p->qkv_b, s->d_qkv, a->x, w + p->qkv_w, M, D, 3 * D, 1);
    } else {
        layernorm_recompute(a->ln1_out, a->x, a->ln1_mean, a->ln1_rstd, w + p->ln1_w, w + p->ln1_b, M, D);
        linear_backward(s->d_a, g + p->qkv_w, g + p->qkv_b, s->d_qkv, a->ln1_out, w + p->qkv_w, M, D, 3 * D, 0);
        layernorm_backward(d_stream, g + p->ln1_w, g + p->ln1_b, s->d_a, a->x, a->ln1_mean, a->ln1_rstd,
                           w + p->ln1_w, M, D);
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < MD; i++)
            d_stream[i] += d_res1[i];
    }
}

/* ---- the encoder ---------------------------------------------------------------- */

void transformer_forward(const Transformer *t, const real *w, TransformerActs *a, const real *x,
                         const uint8_t *pad, int B, int N, ForwardMode mode)
{
    const int M = B * N, D = t->dim;
    const DropoutSite input_drop = {mode.train ? t->dropout : 0, mode.seed, SITE_INPUT, mode.step,
                                    mode.row0 * (uint64_t)N * (uint64_t)D, 0, a->input_keep};
    if (t->layout == LAYOUT_POST_LN) {
        layernorm_forward(a->input, a->norm_mean, a->norm_rstd, x, w + t->norm_w, w + t->norm_b, M, D, t->eps);
        dropout_forward(a->input, a->input, (size_t)M * D, input_drop);
    } else if (a->input) {
        dropout_forward(a->input, x, (size_t)M * D, input_drop);
    }
    const real *h = a->input ? a->input : x;
    for (int l = 0; l < t->layers; l++) {
        BlockActs *b = &a->blocks[l];
        b->x = h;
        block_forward(t, l, w, b, pad, B, N, a->attn_scratch, mode);
        h = b->out;
    }
    if (t->layout == LAYOUT_POST_LN)
        memcpy(a->output, h, (size_t)M * D * sizeof(real));
    else
        layernorm_forward(a->output, a->norm_mean, a->norm_rstd, h, w + t->norm_w, w + t->norm_b, M, D, t->eps);
}

void transformer_backward(const Transformer *t, const real *w, real *g, TransformerActs *a, const real *x,
                          const uint8_t *pad, const real *d_out, real *d_x, int B, int N, ForwardMode mode)
{
    const int M = B * N, D = t->dim;
    const size_t MD = (size_t)M * D;
    const DropoutSite input_drop = {mode.train ? t->dropout : 0, mode.seed, SITE_INPUT, mode.step,
                                    mode.row0 * (uint64_t)N * (uint64_t)D, 0, a->input_keep};
    real *d = a->d_stream;
    if (t->layout == LAYOUT_PRE_LN)
        layernorm_backward(d, g + t->norm_w, g + t->norm_b, d_out, a->blocks[t->layers - 1].out, a->norm_mean,
                           a->norm_rstd, w + t->norm_w, M, D);
    else
        memcpy(d, d_out, MD * sizeof(real));
    for (int l = t->layers - 1; l >= 0; l--) {
        /* Post-LN: the block's input, the block below's LN2 output, was not
         * kept (two buffers served the forward): recompute it from res2. */
        if (t->layout == LAYOUT_POST_LN && l > 0) {
            const BlockActs *below = &a->blocks[l - 1];
            const BlockParams *p = &t->blocks[l - 1];
            layernorm_recompute(below->ln2_out, below->res2, below->ln2_mean, below->ln2_rstd, w + p->ln2_w,
                                w + p->ln2_b, M, D);
        }
        block_backward(t, l, w, g, &a->blocks[l], a, d, pad, B, N, mode);
    }
    if (t->layout == LAYOUT_POST_LN) {
        dropout_backward(d, d, MD, input_drop);
        layernorm_backward(d_x, g + t->norm_w, g + t->norm_b, d, x, a->norm_mean, a->norm_rstd, w + t->norm_w, M, D);
    } else {
        dropout_backward(d_x, d, MD, input_drop);
    }
}
