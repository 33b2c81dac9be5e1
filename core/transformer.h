/* transformer.h — the shared Transformer encoder (DESIGN §2), in the two
 * layouts data2vec uses:
 *
 *   post-LN (wav2vec 2.0, RoBERTa):      pre-LN (BEiT, ViT):
 *     x = LN_in(x)                         h = x + Attn(LN1(x))
 *     h = LN1(x + Attn(x))                 y = h + FFN(LN2(h))
 *     y = LN2(h + FFN(h))                  ... after the last block: LN_out
 *
 * FFN(z) = fc2(GELU(fc1(z))). Each block keeps the FFN's output before the
 * last residual ("ffn", the paper's target, §3.2) and its end output
 * ("block", the released vision recipe's), so the teacher can take either.
 * Shapes: B batch, N positions, D channels, H heads, F FFN width, M = B*N. */
#ifndef D2V_TRANSFORMER_H
#define D2V_TRANSFORMER_H

#include "arena.h"
#include "layers.h"
#include "params.h"

typedef enum { LAYOUT_POST_LN, LAYOUT_PRE_LN } Layout;

/* Offsets of one block's tensors in the parameter buffers. */
typedef struct {
    size_t qkv_w, qkv_b, proj_w, proj_b;
    size_t ln1_w, ln1_b, fc1_w, fc1_b, fc2_w, fc2_b, ln2_w, ln2_b;
} BlockParams;

#define MAX_LAYERS 128

typedef struct {
    int dim, layers, heads, ffn_dim;
    Layout layout;
    real eps;
    real dropout, attention_dropout, activation_dropout;
    /* Bytes the student may spend keeping every block's attention
     * probabilities (and, where they fit too, outputs) for the backward,
     * which otherwise recomputes them (train.attention_memory_mb). */
    size_t attention_memory;
    BlockParams blocks[MAX_LAYERS];
    size_t norm_w, norm_b; /* LN_in (post-LN) or LN_out (pre-LN) */
} Transformer;

/* One block's saved activations (M = B*N rows). */
typedef struct {
    const real *x;           /* the block's input (not owned) */
    real *ln1_out, *ln1_mean, *ln1_rstd; /* ln1_out: shared, see below */
    real *qkv;               /* (M,3D) */
    real *probs;             /* (B,H,N,N) the block's own where the student keeps them
                              * (TransformerActs.keep_probs), else NULL: not written */
    real *att, *res1;        /* (M,D); att the block's own where kept (keep_att), else shared, see below */
    real *ln2_out, *ln2_mean, *ln2_rstd; /* ln2_out: shared, see below */
    real *fc1;               /* (M,F); block_backward leaves GELU(fc1) in it */
    /* Not kept for the backward, so shared by all blocks and valid only
     * until the next block's forward (the teacher reads its ffn tap in
     * between): att (M,D) the attention's output (attention_backward
     * recomputes it, unless kept: keep_att), proj (M,D) the attention
     * output projection, act (M,F) GELU(fc1), the largest tensor of a
     * block, recomputed by block_backward, and ffn (M,D) the FFN output
     * before the last residual. Likewise the layer norms' outputs: those
     * that are only GEMM inputs, and post-LN's block output ln2_out (two
     * buffers in turn: the next block reads it), each recomputed from its
     * input and the saved mean and 1/std. Issue 6: peak memory. */
    real *proj, *act, *ffn;
    real *res2;              /* (M,D) */
    real *out;               /* the block's end output: ln2_out (post) or res2 (pre) */
    /* Dropout keep masks, one bit per element, recorded by the forward so
     * the backward does not draw them again (NULL: no dropout there, or a
     * teacher, which has no backward). */
    uint8_t *attn_keep, *proj_keep, *act_keep, *ffn_keep;
} BlockActs;

typedef struct {
    int B, N;         /* capacity */
    int n_blocks;     /* layers (student) or 2 (teacher: ping-pong scratch) */
    int keep_probs;   /* each block keeps its attention probabilities for the backward */
    int keep_att;     /* and its attention output (only with keep_probs) */
    real *input;      /* (M,D) what block 0 sees (NULL: x itself, pre-LN without dropout) */
    uint8_t *input_keep; /* the input dropout's keep mask (as BlockActs') */
    real *norm_mean, *norm_rstd;
    real *output;     /* (M,D) the encoder's output, until the backward (it is scratch) */
    BlockActs blocks[MAX_LAYERS];
    real *attn_scratch;
    /* What every block's att, proj, act, ffn and ln1_out (and pre-LN's
     * ln2_out, post-LN's ln2_out in turn) point to. */
    real *att_scratch, *proj_scratch, *act_scratch, *ffn_scratch, *ln1_scratch, *ln2_scratch;
    real *out_scratch[2];
    /* backward scratch, shared by all blocks; some of it is the forward's
     * scratch above (transformer_layout) */
    real *d_a, *d_b, *d_c, *d_stream, *d_f, *d_qkv;
} TransformerActs;

typedef struct {
    uint64_t seed, step; /* dropout draws; dropout off when train == 0 */
    uint64_t row0;       /* global index of row 0 in the step's batch (data parallel) */
    int train;
} ForwardMode;

/* Registers the blocks' tensors as "blocks.<l>.<name>" plus "norm.*", all
 * in the teacher. init: INIT_TRUNC_NORMAL with std (BERT/ViT) or
 * INIT_UNIFORM (PyTorch's Linear default, wav2vec 2.0). */
int transformer_register(Transformer *t, ParamStore *ps, ParamInit init, float std, D2vError *err);
/* Resolves the tensors' offsets after params_alloc. */
void transformer_bind(Transformer *t, const ParamStore *ps);

/* Lays out activations for up to B x N inputs in the arena (see arena.h).
 * keep_all: every block's activations (student) or two scratch blocks
 * (teacher), with no backward buffers. */
void transformer_layout(TransformerActs *a, Arena *arena, const Transformer *t, int B, int N, int keep_all,
                        int threads);

/* One block: a->x must be set. w is the weight buffer (student's value or
 * the teacher's). pad (B,N) marks padding (may be NULL). */
void block_forward(const Transformer *t, int layer, const real *w, BlockActs *a, const uint8_t *pad, int B,
                   int N, real *attn_scratch, ForwardMode mode);
/* d_stream (M,D): in, gradient of the loss w.r.t. the block's output; out,
 * w.r.t. its input. g: the gradient buffer. */
void block_backward(const Transformer *t, int layer, const real *w, real *g, const BlockActs *a,
                    TransformerActs *scratch, real *d_stream, const uint8_t *pad, int B, int N, ForwardMode mode);

/* The student encoder: x (M,D) -> a->output (M,D), every activation kept. */
void transformer_forward(const Transformer *t, const real *w, TransformerActs *a, const real *x,
                         const uint8_t *pad, int B, int N, ForwardMode mode);
/* d_out (M,D) -> d_x (M,D) (overwritten), parameter gradients into g. */
void transformer_backward(const Transformer *t, const real *w, real *g, TransformerActs *a, const real *x,
                          const uint8_t *pad, const real *d_out, real *d_x, int B, int N, ForwardMode mode);

#endif
