#include "data2vec.h"

#include <string.h>

static TargetNorm parse_norm(const char *s)
{
    return strcmp(s, "instance") == 0 ? NORM_INSTANCE : strcmp(s, "layer") == 0 ? NORM_LAYER : NORM_NONE;
}

int d2v_register(Data2vec *m, ParamStore *ps, const D2vConfig *cfg, D2vError *err)
{
    memset(m, 0, sizeof *m);
    Transformer *t = &m->encoder;
    t->dim = (int)cfg->model.dim;
    t->layers = (int)cfg->model.layers;
    t->heads = (int)cfg->model.heads;
    t->ffn_dim = (int)cfg->model.ffn_dim;
    t->layout = strcmp(cfg->model.layout, "pre_ln") == 0 ? LAYOUT_PRE_LN : LAYOUT_POST_LN;
    t->eps = (real)cfg->model.layer_norm_eps;
    t->dropout = (real)cfg->model.dropout;
    t->attention_dropout = (real)cfg->model.attention_dropout;
    t->activation_dropout = (real)cfg->model.activation_dropout;
    t->attention_memory = (size_t)(cfg->train.attention_memory_mb * 1024 * 1024);
    m->top_k = (int)cfg->target.top_k;
    m->layer_norm = parse_norm(cfg->target.layer_norm);
    m->final_norm = parse_norm(cfg->target.final_norm);
    m->tap_block_end = strcmp(cfg->target.layer_output, "block") == 0;
    m->loss_beta = (real)cfg->loss.beta;
    m->loss_scale = cfg->loss.scale > 0 ? (real)cfg->loss.scale : R(1) / sqrt((real)t->dim);
    m->head_mlp = strcmp(cfg->loss.head, "mlp") == 0;
    if (m->top_k < 1 || m->top_k > t->layers)
        return d2v_fail(err, "target.top_k = %d: expected 1..model.layers (%d)", m->top_k, t->layers);

    const int bert = strcmp(cfg->model.init, "bert") == 0;
    const ParamInit init = bert ? INIT_TRUNC_NORMAL : INIT_UNIFORM;
    const float std = (float)cfg->model.init_std;
    if (transformer_register(t, ps, init, std, err) < 0)
        return -1;
    /* The regression head is the student's alone (not in the teacher). */
    const int64_t D = t->dim, hidden = m->head_mlp ? 2 * D : D;
    const int64_t w1[2] = {hidden, D}, b1[1] = {hidden}, w2[2] = {D, hidden}, b2[1] = {D};
    const float s1 = bert ? std : 1.0f / sqrtf((float)D), s2 = bert ? std : 1.0f / sqrtf((float)hidden);
    const ParamInit bias_init = bert ? INIT_ZERO : INIT_UNIFORM;
    if (params_add(ps, "head.fc1.weight", PARAM_WEIGHT, 0, init, s1, 2, w1, err) < 0 ||
        params_add(ps, "head.fc1.bias", PARAM_BIAS, 0, bias_init, s1, 1, b1, err) < 0)
        return -1;
    if (m->head_mlp && (params_add(ps, "head.fc2.weight", PARAM_WEIGHT, 0, init, s2, 2, w2, err) < 0 ||
                        params_add(ps, "head.fc2.bias", PARAM_BIAS, 0, bias_init, s2, 1, b2, err) < 0))
        return -1;
    return 0;
}

void d2v_bind(Data2vec *m, const ParamStore *ps)
{
    transformer_bind(&m->encoder, ps);
    m->head_w1 = ps->params[params_find(ps, "head.fc1.weight")].offset;
    m->head_b1 = ps->params[params_find(ps, "head.fc1.bias")].offset;
    if (m->head_mlp) {
        m->head_w2 = ps->params[params_find(ps, "head.fc2.weight")].offset;
        m->head_b2 = ps->params[params_find(ps, "head.fc2.bias")].offset;
    }
}

size_t d2v_layout(Data2vecActs *a, Arena *arena, const Data2vec *m, int B, int N, int threads)
{
    const size_t M = (size_t)B * N, D = (size_t)m->encoder.dim;
    /* The head's buffers: P <= M rows, sized for M (rows past P are never
     * written, so never resident: arena_alloc). */
    a->loss_rows = arena_take_bytes(arena, M * sizeof(int));
    a->targets = arena_take(arena, M * D);
    a->head_in = arena_take(arena, M * D);
    a->pred = arena_take(arena, M * D);
    a->d_pred = arena_take(arena, M * D);
    if (m->head_mlp) {
        a->head_hidden = arena_take(arena, M * 2 * D);
        a->head_act = arena_take(arena, M * 2 * D);
        a->d_hidden = arena_take(arena, M * 2 * D);
        a->d_head_in = a->d_pred; /* d_pred is spent once d_hidden is made */
    } else {
        a->head_hidden = a->head_act = a->d_hidden = NULL;
        a->d_head_in = arena_take(arena, M * D);
    }
    a->d_output = a->head_in; /* head_in is spent once the head's backward ran */

    /* The encoder's activations last, so the front-end's scratch can overlay
     * them (model.c). The teacher's scratch and its targets overlay the
     * student's activations: the teacher runs first, and the student step
     * gathers the targets it needs before its forward writes anything
     * (issue 6: peak memory). */
    const size_t start = (arena->used + 63) & ~(size_t)63;
    arena->used = start;
    transformer_layout(&a->student, arena, &m->encoder, B, N, 1, threads);
    const size_t student_end = arena->used;
    arena->used = start;
    transformer_layout(&a->teacher, arena, &m->encoder, B, N, 0, threads);
    a->target_sum = arena_take(arena, M * D);
    a->tap_norm = arena_take(arena, M * D);
    /* Layer norm keeps M statistics, instance norm B*D. */
    a->norm_mean = arena_take(arena, M > B * D ? M : B * D);
    a->norm_rstd = arena_take(arena, M > B * D ? M : B * D);
    if (arena->used < student_end)
        arena->used = student_end;
    return start;
}

/* out = norm(in) over channels (layer) or over positions (instance). */
static void target_norm(TargetNorm kind, real *out, const real *in, Data2vecActs *a, const uint8_t *pad, int B,
                        int N, int D, real eps)
{
    const size_t MD = (size_t)B * N * D;
    if (kind == NORM_LAYER)
        layernorm_forward(out, a->norm_mean, a->norm_rstd, in, NULL, NULL, B * N, D, eps);
    else if (kind == NORM_INSTANCE)
        instancenorm_forward(out, a->norm_mean, a->norm_rstd, in, pad, B, N, D, eps);
    else if (out != in)
        memcpy(out, in, MD * sizeof(real));
}

void d2v_teacher_targets(const Data2vec *m, const ParamStore *ps, Data2vecActs *a, const real *x_teacher,
                         const uint8_t *pad, int B, int N)
{
    d2v_teacher_targets_layers(m, ps, a, x_teacher, pad, B, N, NULL);
}

void d2v_teacher_targets_layers(const Data2vec *m, const ParamStore *ps, Data2vecActs *a, const real *x_teacher,
                                const uint8_t *pad, int B, int N, real *layers)
{
    const Transformer *t = &m->encoder;
    const int M = B * N, D = t->dim, L = t->layers, K = m->top_k;
    const size_t MD = (size_t)M * D;
    const real *w = ps->teacher;
    const ForwardMode eval = {.train = 0}; /* the teacher never uses dropout (§1) */
    TransformerActs *ta = &a->teacher;

    const real *h = x_teacher;
    if (t->layout == LAYOUT_POST_LN) {
        layernorm_forward(ta->input, ta->norm_mean, ta->norm_rstd, x_teacher, w + t->norm_w, w + t->norm_b, M, D,
                          t->eps);
        h = ta->input;
    }
    memset(a->target_sum, 0, MD * sizeof(real));
    for (int l = 0; l < L; l++) {
        /* Two scratch blocks in turn: block l reads block l-1's output. */
        BlockActs *b = &ta->blocks[l & 1];
        b->x = h;
        block_forward(t, l, w, b, pad, B, N, ta->attn_scratch, eval);
        h = b->out;
        if (l < L - K)
            continue;
        /* eq. 2: y += norm(a^l) over the top K blocks */
        const real *tap = m->tap_block_end ? b->out : b->ffn;
        target_norm(m->layer_norm, a->tap_norm, tap, a, pad, B, N, D, t->eps);
        if (layers)
            memcpy(layers + (size_t)(l - (L - K)) * MD, a->tap_norm, MD * sizeof(real));
#pragma omp parallel for simd schedule(static)
        for (size_t i = 0; i < MD; i++)
            a->target_sum[i] += a->tap_norm[i];
    }
    const real inv_k = R(1) / (real)K;
#pragma omp parallel for simd schedule(static)
    for (size_t i = 0; i < MD; i++)
        a->target_sum[i] *= inv_k;
    if (m->final_norm != NORM_NONE) {
        target_norm(m->final_norm, a->tap_norm, a->target_sum, a, pad, B, N, D, t->eps);
        memcpy(a->target_sum, a->tap_norm, MD * sizeof(real));
    }
}

double d2v_channel_std(const real *rows, const uint8_t *skip, int P, int D)
{
    int count = 0;
    for (int p = 0; p < P; p++)
        count += !(skip && skip[p]);
    if (count < 2)
        return 0;
    double total = 0;
    for (int d = 0; d < D; d++) {
        double mean = 0, sq = 0;
        for (int p = 0; p < P; p++)
            if (!(skip && skip[p]))
                mean += rows[(size_t)p * D + d];
        mean /= count;
        for (int p = 0; p < P; p++)
            if (!(skip && skip[p])) {
                double diff = rows[(size_t)p * D + d] - mean;
                sq += diff * diff;
            }
        total += sqrt(sq / (count - 1) + 1e-6);
    }
    return total / D;
}

static void head_forward(const Data2vec *m, const real *w, Data2vecActs *a, int P)
{
    const int D = m->encoder.dim;
    if (!m->head_mlp) {
        linear_forward(a->pred, a->head_in, w + m->head_w1, w + m->head_b1, P, D, D);
        return;
    }
    linear_forward(a->head_hidden, a->head_in, w + m->head_w1, w + m->head_b1, P, D, 2 * D);
    gelu_forward(a->head_act, a->head_hidden, (size_t)P * 2 * D);
    linear_forward(a->pred, a->head_act, w + m->head_w2, w + m->head_b2, P, 2 * D, D);
}

static void head_backward(const Data2vec *m, const real *w, real *g, Data2vecActs *a, int P)
{
    const int D = m->encoder.dim;
    if (!m->head_mlp) {
        linear_backward(a->d_head_in, g + m->head_w1, g + m->head_b1, a->d_pred, a->head_in, w + m->head_w1, P, D,
                        D, 0);
        return;
    }
    linear_backward(a->d_hidden, g + m->head_w2, g + m->head_b2, a->d_pred, a->head_act, w + m->head_w2, P, 2 * D,
                    D, 0);
    gelu_backward(a->d_hidden, a->d_hidden, a->head_hidden, (size_t)P * 2 * D);
    linear_backward(a->d_head_in, g + m->head_w1, g + m->head_b1, a->d_hidden, a->head_in, w + m->head_w1, P, D,
                    2 * D, 0);
}

void d2v_step(const Data2vec *m, ParamStore *ps, Data2vecActs *a, const real *x_student, const real *x_teacher,
              const uint8_t *loss_mask, const uint8_t *pad, int B, int N, ForwardMode mode, real *d_x_student,
              StepStats *stats)
{
    /* Teacher: targets y for every position (eq. 2). */
    d2v_teacher_targets(m, ps, a, x_teacher, pad, B, N);
    d2v_student_step(m, ps, a, x_student, loss_mask, pad, B, N, mode, d_x_student, stats);
}

void d2v_student_step(const Data2vec *m, ParamStore *ps, Data2vecActs *a, const real *x_student,
                      const uint8_t *loss_mask, const uint8_t *pad, int B, int N, ForwardMode mode, real *d_x_student,
                      StepStats *stats)
{
    const Transformer *t = &m->encoder;
    const int M = B * N, D = t->dim;
    const real *w = ps->value;
    real *g = ps->grad;

    /* The loss is taken only where the input was masked (§3.3). The
     * targets first: target_sum lies under the student's activations. */
    int P = 0;
    for (int i = 0; i < M; i++)
        if (loss_mask[i] && !(pad && pad[i]))
            a->loss_rows[P++] = i;
    for (int p = 0; p < P; p++)
        memcpy(a->targets + (size_t)p * D, a->target_sum + (size_t)a->loss_rows[p] * D, (size_t)D * sizeof(real));

    /* Student: the masked view, every activation kept for the backward. */
    transformer_forward(t, w, &a->student, x_student, pad, B, N, mode);
    for (int p = 0; p < P; p++)
        memcpy(a->head_in + (size_t)p * D, a->student.output + (size_t)a->loss_rows[p] * D, (size_t)D * sizeof(real));
    head_forward(m, w, a, P);

    /* eq. 3: Smooth L1 (beta) summed over channels, scaled, averaged over P. */
    stats->loss = regression_loss_forward(a->pred, a->targets, P, D, m->loss_beta, m->loss_scale);
    stats->n_loss = P;
    stats->target_var = d2v_channel_std(a->targets, NULL, P, D);
    stats->pred_var = d2v_channel_std(a->pred, NULL, P, D);

    /* Backward, in reverse: loss -> head -> scatter to positions -> encoder. */
    const real grad_scale = m->loss_denominator > 0 ? (real)((double)m->loss_scale * P / m->loss_denominator)
                                                    : m->loss_scale;
    regression_loss_backward(a->d_pred, a->pred, a->targets, P, D, m->loss_beta, grad_scale);
    head_backward(m, w, g, a, P);
    memset(a->d_output, 0, (size_t)M * D * sizeof(real));
    for (int p = 0; p < P; p++)
        memcpy(a->d_output + (size_t)a->loss_rows[p] * D, a->d_head_in + (size_t)p * D, (size_t)D * sizeof(real));
    transformer_backward(t, w, g, &a->student, x_student, pad, a->d_output, d_x_student, B, N, mode);
}

/* Forward FLOPs of one block on B rows of N positions: the four projections
 * and the two FFN matrices (2*M*N*K each), plus QK^T and AV per head. */
static double block_forward_flops(const Transformer *t, int B, int N)
{
    const double M = (double)B * N, D = t->dim, F = t->ffn_dim;
    return 2 * M * D * (3 * D) + 2 * M * D * D + 2 * 2 * M * D * F + 2 * 2 * (double)B * N * N * D;
}

D2vFlops d2v_flops(const Data2vec *m, int B, int N, int P)
{
    const Transformer *t = &m->encoder;
    const double D = t->dim, hidden = m->head_mlp ? 2 * D : D;
    const double encoder = t->layers * block_forward_flops(t, B, N);
    const double head = 2 * (double)P * D * hidden + (m->head_mlp ? 2 * (double)P * hidden * D : 0);
    /* Backward of a GEMM is two GEMMs of the same size (input and weight
     * gradients); the teacher runs forward only. */
    return (D2vFlops){.teacher = encoder, .student = 3 * encoder, .head = 3 * head};
}
