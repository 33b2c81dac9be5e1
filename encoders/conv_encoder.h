/* conv_encoder.h — the speech front-end (wav2vec 2.0 §2, data2vec audio):
 *
 *  1. the feature encoder: raw waveform -> frames, a stack of 1-D convs
 *     without bias, each followed by layer norm over channels (affine) and
 *     GELU — fairseq's ConvFeatureExtractionModel in "layer_norm" mode;
 *  2. the convolutional positional encoder: `depth` x (grouped conv over
 *     time with "same" padding and bias, layer norm without affine, GELU) —
 *     data2vec audio's pos_conv. The caller adds the result: x + pos(x).
 *
 * Shapes: B batch, T time (samples or frames), C channels, K kernel,
 * S stride, G groups, D model width. Activations are time-major with
 * channels last, (B, T, C), so frames feed the Transformer's (B, N, D)
 * layout directly. Conv weights are stored as PyTorch's Conv1d
 * (C_out, C_in/G, K), i.e. flattened (C_out, C_in/G * K).
 *
 * Both encoders leave memory to the caller: a plan gives the size of every
 * buffer (in reals, for the whole batch), the caller points a buffers
 * struct into its arena, and forward/backward only read and write there.
 * Backward conventions as layers.h: d_input overwritten, parameter
 * gradients accumulated. */
#ifndef D2V_CONV_ENCODER_H
#define D2V_CONV_ENCODER_H

#include "common.h"
#include "real.h"

#include <stddef.h>

#define CONV_MAX_LAYERS 32
#define POS_CONV_MAX_DEPTH 16

/* fairseq's LayerNorm / Fp32LayerNorm default. */
#define CONV_LN_EPS R(1e-5)

/* ---- feature encoder ------------------------------------------------------------------ */

typedef struct {
    int channels, kernel, stride;
} ConvLayerSpec;

typedef struct {
    int n_layers;
    ConvLayerSpec layer[CONV_MAX_LAYERS];
} ConvSpec;

/* Parses "512x10x5,512x3x2*4,512x2x2*2" (channels x kernel x stride, `*n`
 * repeats the layer n times; wav2vec 2.0's default). Returns -1 with a
 * message naming the offending position on a malformed spec. */
int conv_spec_parse(ConvSpec *spec, const char *text, D2vError *err);

/* Frames out of a valid (unpadded) conv: floor((T - K)/S) + 1, or 0 when
 * the input is shorter than the kernel. */
static inline int conv_out_length(int T, int K, int S) { return T < K ? 0 : (T - K) / S + 1; }

/* Per-layer shapes for a batch of B waveforms of T samples. */
typedef struct {
    int n_layers, B;
    int c_in[CONV_MAX_LAYERS], c_out[CONV_MAX_LAYERS];
    int kernel[CONV_MAX_LAYERS], stride[CONV_MAX_LAYERS];
    int t_in[CONV_MAX_LAYERS], t_out[CONV_MAX_LAYERS];
    /* Sizes in reals for the whole batch. */
    size_t act_size[CONV_MAX_LAYERS];  /* B * t_out * c_out: conv (and output) of layer l */
    size_t stat_size[CONV_MAX_LAYERS]; /* B * t_out: mean, rstd of layer l */
    size_t cols_size;                  /* max_l B * t_out * c_in * K: im2col scratch, shared */
    size_t act_max;                    /* max_l act_size: the act scratch */
    size_t grad_size;                  /* max B * T * C of any activation incl. the waveform */
    size_t weight_size[CONV_MAX_LAYERS]; /* c_out * c_in * K */
    size_t weight_max;                   /* max_l weight_size: the weight_kc scratch holds two */
} ConvEncoderPlan;

/* Fails if some layer would get no frames (T too short). */
int conv_encoder_plan(ConvEncoderPlan *plan, const ConvSpec *spec, int B, int T, D2vError *err);

static inline int conv_encoder_frames(const ConvEncoderPlan *p) { return p->t_out[p->n_layers - 1]; }
static inline int conv_encoder_channels(const ConvEncoderPlan *p) { return p->c_out[p->n_layers - 1]; }

/* Parameters (or their gradients, same layout) of layer l: weight
 * (c_out, c_in*K), layer-norm gain and bias (c_out). */
typedef struct {
    real *weight[CONV_MAX_LAYERS];
    real *ln_gain[CONV_MAX_LAYERS], *ln_bias[CONV_MAX_LAYERS];
} ConvEncoderParams;

/* Kept from the forward for the backward: each layer's conv output (the
 * layer norm's input, act_size[l]) with its mean and 1/std (stat_size[l]),
 * and the encoder's output `out` (act_size of the last layer). A layer's
 * layer-norm and GELU outputs are not kept: the backward recomputes them
 * from conv, mean and 1/std (issue 6: at 2 s crops they were two thirds of
 * the CNN's memory); layernorm_gelu_backward does so per element, and the
 * layer below's GELU output, the conv's input, goes through act.
 * Scratch, free between forward and backward: act and grad (act_max,
 * grad_size: the layers' GELU outputs in turn in the forward; in the
 * backward, grad d(conv output) and act a layer's recomputed input, then
 * the gradient of it), cols (cols_size: the windows copied out, where the
 * matmul cannot read them in place), weight_kc (2 * weight_max: a layer's
 * weight and its gradient in the windows' order). */
typedef struct {
    real *conv[CONV_MAX_LAYERS];
    real *mean[CONV_MAX_LAYERS], *rstd[CONV_MAX_LAYERS];
    real *out;
    real *act, *cols, *grad, *weight_kc;
} ConvEncoderBuffers;

/* wave (B, T) -> buf->out (B, T_out, C). */
void conv_encoder_forward(ConvEncoderBuffers *buf, const real *wave, const ConvEncoderParams *params,
                          const ConvEncoderPlan *plan);
/* d_out (B, T_out, C) -> grads (accumulated); d_wave (B, T) overwritten, may
 * be NULL (the waveform learns nothing; skips the first layer's d_cols). */
void conv_encoder_backward(real *d_wave, const ConvEncoderParams *grads, const real *d_out, const real *wave,
                           const ConvEncoderParams *params, ConvEncoderBuffers *buf, const ConvEncoderPlan *plan);

/* One conv's pieces, exposed for the tests.
 * x (B, T_in, C_in) -> cols (B*T_out, K*C_in), column k*C_in + c holding
 * x[b, t*S + k, c]: in channels-last x a window's K frames are contiguous,
 * so a row is one copy. The weight, (C_out, C_in, K) as in PyTorch, is
 * permuted to (C_out, K, C_in) to match (conv_weight_kc). */
void conv1d_im2col(real *cols, const real *x, int B, int T_in, int C_in, int K, int S);
/* The adjoint: d_x (B, T_in, C_in) = sum of d_cols over the windows that
 * read each input frame (overlapping when S < K). Overwrites d_x. */
void conv1d_col2im(real *d_x, const real *d_cols, int B, int T_in, int C_in, int K, int S);
/* w (C_out, C_in, K) -> w_kc (C_out, K, C_in). */
void conv_weight_kc(real *w_kc, const real *w, int C_out, int C_in, int K);

/* ---- convolutional positional encoder ------------------------------------------------- */

typedef struct {
    int dim, kernel, groups, depth;
} PosConvShape;

typedef struct {
    int B, T;
    PosConvShape shape;
    size_t act_size;    /* B * T * D: each saved activation, and grad_a / grad_b */
    size_t stat_size;   /* B * T: mean, rstd per layer */
    size_t cols_size;   /* B * T * (D/G) * K: one group's im2col scratch */
    size_t weight_size; /* D * (D/G) * K per layer */
    size_t group_weight_size; /* (D/G) * (D/G) * K: the weight_kc scratch holds two per lane */
    int lanes; /* groups computed at once, one per thread: the scratch holds this many cols and weight_kc pairs */
} PosConvPlan;

/* Fails unless groups divides dim and 1 <= depth <= POS_CONV_MAX_DEPTH.
 * lanes is min(groups, threads): the forward and backward run on that many
 * threads whatever OpenMP's count is then, so buffers sized by one plan fit
 * any plan made with the same threads. */
int pos_conv_plan(PosConvPlan *plan, PosConvShape shape, int B, int T, int threads, D2vError *err);

/* Layer l: weight (D, D/G * K), bias (D). The layer norm has no affine. */
typedef struct {
    real *weight[POS_CONV_MAX_DEPTH], *bias[POS_CONV_MAX_DEPTH];
} PosConvParams;

/* layer_in[0] is the (padding-zeroed) input, layer_in[l+1] layer l's GELU
 * output; layer_in[depth] is pos(x). All act_size except mean/rstd. */
typedef struct {
    real *layer_in[POS_CONV_MAX_DEPTH + 1];
    real *conv[POS_CONV_MAX_DEPTH];
    real *mean[POS_CONV_MAX_DEPTH], *rstd[POS_CONV_MAX_DEPTH];
    real *normed[POS_CONV_MAX_DEPTH];
    real *cols, *weight_kc; /* lanes * cols_size and lanes * 2 * group_weight_size */
    real *grad_a, *grad_b;
} PosConvBuffers;

/* x (B, T, D) -> buf->layer_in[depth] = pos(x) (B, T, D).
 * lengths (B) gives each row's valid frames, or NULL for none padded. As
 * fairseq's TransformerEncoder.extract_features (index_put(x, padding_mask,
 * 0) before pos_conv), padded frames are zeroed once, at the input of the
 * stack, not between layers; the caller should zero them in its own x too,
 * so x + pos(x) matches fairseq. */
void pos_conv_forward(PosConvBuffers *buf, const real *x, const int *lengths, const PosConvParams *params,
                      const PosConvPlan *plan);
/* d_out (B, T, D) -> d_x (B, T, D) overwritten (zero on padded frames);
 * parameter gradients accumulated. Only pos(x)'s part: the caller adds the
 * identity path of x + pos(x). */
void pos_conv_backward(real *d_x, const PosConvParams *grads, const real *d_out, const int *lengths,
                       const PosConvParams *params, PosConvBuffers *buf, const PosConvPlan *plan);

#endif
