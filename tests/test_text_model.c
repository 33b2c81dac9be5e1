/* test_text_model.c — the text front-end (encoders/token_embed.c): token
 * lookup with padding, learned positions and the embedding layer norm
 * against central finite differences, and the scatter-add backward against
 * a plain serial loop, for several thread counts.
 *
 * Built against the double-precision core (-DD2V_DOUBLE): the scalar
 * s = sum(y * r) for a fixed random r, so the backward fed d_y = r must
 * match central differences of s (tests/gradcheck.h). */
#include "gradcheck.h"
#include "token_embed.h"

#include <omp.h>
#include <string.h>

/* ---- forward ----------------------------------------------------------------------- */

static void test_lookup(void)
{
    enum { V = 5, D = 3, B = 2, S = 3, PAD = 1 };
    double table[V * D], pos[S * D], sum[B * S * D];
    for (int i = 0; i < V * D; i++)
        table[i] = 1 + i;
    for (int i = 0; i < S * D; i++)
        pos[i] = 100 * (1 + i);
    const int32_t ids[B * S] = {0, 4, 2, 3, PAD, PAD};
    TextEmbedActs a = {sum, NULL, NULL, NULL, NULL};
    TextEmbedParams p = {table, pos, NULL, NULL};
    text_embed_forward(&a, ids, &p, B, S, D, PAD, 1e-5);
    CHECK(a.out == sum, "without a norm the output is the sum itself");
    int ok = 1;
    for (int b = 0; b < B; b++)
        for (int s = 0; s < S; s++)
            for (int d = 0; d < D; d++) {
                const int32_t id = ids[b * S + s];
                double expect = (id == PAD ? 0 : table[id * D + d]) + pos[s * D + d];
                ok &= sum[(b * S + s) * D + d] == expect;
            }
    CHECK(ok, "E[ids] + P: a row differs (or padding was not a zero embedding)");
}

/* ---- gradients ------------------------------------------------------------------------ */

typedef struct {
    int B, S, D, V;
    int32_t pad;
    int32_t *ids;
    double *table, *pos, *norm_w, *norm_b, *r;
    TextEmbedActs acts;
    int with_norm;
} EmbedCase;

static double embed_scalar(void *ctx)
{
    EmbedCase *c = ctx;
    TextEmbedParams p = {c->table, c->pos, c->with_norm ? c->norm_w : NULL, c->with_norm ? c->norm_b : NULL};
    text_embed_forward(&c->acts, c->ids, &p, c->B, c->S, c->D, c->pad, 1e-5);
    return dot(c->acts.out, c->r, (size_t)c->B * c->S * c->D);
}

static void test_embed_gradients(int with_norm)
{
    const char *what = with_norm ? "embedding + layer norm" : "embedding";
    EmbedCase c = {.B = 3, .S = 5, .D = 6, .V = 7, .pad = 1, .with_norm = with_norm};
    const size_t M = (size_t)c.B * c.S, MD = M * c.D, VD = (size_t)c.V * c.D, SD = (size_t)c.S * c.D;
    /* Repeated ids (3 three times, 0 twice), a padded tail, and ids 5 and 6
     * absent, whose rows must get no gradient. */
    int32_t ids[15] = {0, 3, 2, 3, 4, 3, 0, 2, 1, 1, 4, 2, 3, 1, 1};
    c.ids = ids;
    c.table = random_array(VD, 1);
    c.pos = random_array(SD, 1);
    c.norm_w = random_array((size_t)c.D, 1);
    c.norm_b = random_array((size_t)c.D, 1);
    c.r = random_array(MD, 1);
    c.acts = (TextEmbedActs){zeros(MD), zeros(M), zeros(M), zeros(MD), NULL};

    double *g_table = zeros(VD), *g_pos = zeros(SD), *g_w = zeros((size_t)c.D), *g_b = zeros((size_t)c.D);
    double *d_sum = zeros(MD);
    int *first = calloc((size_t)c.V + 1, sizeof(int)), *order = calloc(M, sizeof(int));
    TextEmbedParams p = {c.table, c.pos, with_norm ? c.norm_w : NULL, with_norm ? c.norm_b : NULL};
    TextEmbedGrads g = {g_table, g_pos, g_w, g_b};
    embed_scalar(&c);
    text_embed_backward(&g, c.r, &c.acts, c.ids, &p, c.B, c.S, c.D, c.V, c.pad, d_sum, first, order);

    char name[96];
    snprintf(name, sizeof name, "%s: d_table", what);
    expect_grad(name, c.table, VD, g_table, embed_scalar, &c);
    snprintf(name, sizeof name, "%s: d_pos", what);
    expect_grad(name, c.pos, SD, g_pos, embed_scalar, &c);
    if (with_norm) {
        expect_grad("embedding + layer norm: d_norm_w", c.norm_w, (size_t)c.D, g_w, embed_scalar, &c);
        expect_grad("embedding + layer norm: d_norm_b", c.norm_b, (size_t)c.D, g_b, embed_scalar, &c);
    }
    int untouched = 1;
    for (int v = 5; v < 7; v++)
        for (int d = 0; d < c.D; d++)
            untouched &= g_table[v * c.D + d] == 0;
    for (int d = 0; d < c.D; d++)
        untouched &= g_table[c.pad * c.D + d] == 0;
    CHECK(untouched, "%s: the padding row or an absent id's row got a gradient", what);

    /* Parameter gradients accumulate: a second backward doubles them. */
    double *t1 = malloc(VD * sizeof(double)), *p1 = malloc(SD * sizeof(double));
    memcpy(t1, g_table, VD * sizeof(double));
    memcpy(p1, g_pos, SD * sizeof(double));
    text_embed_backward(&g, c.r, &c.acts, c.ids, &p, c.B, c.S, c.D, c.V, c.pad, d_sum, first, order);
    double diff = 0;
    for (size_t i = 0; i < VD; i++)
        diff = fmax(diff, fabs(g_table[i] - 2 * t1[i]));
    for (size_t i = 0; i < SD; i++)
        diff = fmax(diff, fabs(g_pos[i] - 2 * p1[i]));
    CHECK(diff < 1e-12, "%s: the backward overwrote instead of accumulating (%.3g)", what, diff);

    /* The checker must notice a gradient 1% off in one entry. */
    t1[3 * c.D + 2] *= 1.01;
    CHECK(grad_error(c.table, VD, t1, embed_scalar, &c) > 100 * TOLERANCE,
          "%s: the gradient checker did not notice a 1%% error", what);
    free(c.table); free(c.pos); free(c.norm_w); free(c.norm_b); free(c.r);
    free(c.acts.sum); free(c.acts.mean); free(c.acts.rstd); free(c.acts.normed);
    free(g_table); free(g_pos); free(g_w); free(g_b); free(d_sum); free(first); free(order); free(t1); free(p1);
}

/* ---- the scatter: race-free and the same for every thread count ------------------------ */

static void test_scatter_determinism(void)
{
    enum { M = 4096, V = 300, D = 24, PAD = 1 };
    int32_t *ids = malloc(M * sizeof *ids);
    /* Zipf-like ids, as text has: a few very frequent rows, many rare ones. */
    for (int m = 0; m < M; m++) {
        uint32_t u = rng_u32(&test_rng);
        ids[m] = (int32_t)((u % 7 == 0) ? PAD : (u % 3 == 0) ? (u >> 8) % 5 : (u >> 8) % V);
    }
    double *d_out = random_array((size_t)M * D, 1), *base = random_array((size_t)V * D, 1);
    double *serial = malloc((size_t)V * D * sizeof(double)), *parallel = malloc((size_t)V * D * sizeof(double));
    int *first = malloc((V + 1) * sizeof(int)), *order = malloc(M * sizeof(int));

    /* The definition: every position's row added to its id's row, in
     * position order. */
    memcpy(serial, base, (size_t)V * D * sizeof(double));
    for (int m = 0; m < M; m++)
        if (ids[m] != PAD)
            for (int d = 0; d < D; d++)
                serial[(size_t)ids[m] * D + d] += d_out[(size_t)m * D + d];

    const int saved = omp_get_max_threads();
    int identical = 1;
    for (int threads = 1; threads <= 4; threads++) {
        omp_set_num_threads(threads);
        memcpy(parallel, base, (size_t)V * D * sizeof(double));
        token_embed_backward(parallel, d_out, ids, M, V, D, PAD, first, order);
        identical &= memcmp(parallel, serial, (size_t)V * D * sizeof(double)) == 0;
    }
    omp_set_num_threads(saved);
    CHECK(identical, "the scatter-add differs from the serial loop (bit for bit) for some thread count");
    int pad_row_kept = 1;
    for (int d = 0; d < D; d++)
        pad_row_kept &= parallel[PAD * D + d] == base[PAD * D + d];
    CHECK(pad_row_kept, "the padding row changed");
    free(ids); free(d_out); free(base); free(serial); free(parallel); free(first); free(order);
}

int main(void)
{
    rng_init(&test_rng, 2024, 5);
    test_lookup();
    test_embed_gradients(0);
    test_embed_gradients(1);
    test_scatter_determinism();
    return check_summary();
}
