/* test_token_mask.c — the text masker (masking/token_mask.c) against facts
 * that do not depend on which random numbers came out: the mean selected
 * share against its exact expectation (closed form below, not a re-run of
 * the sampler), the <mask> / random / unchanged split, where the loss goes,
 * specials and padding never touched, random replacements drawn only from
 * the allowed ids and evenly, determinism per seed. */
#include "check.h"
#include "rng.h"
#include "token_mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { MASK_ID = 99, DRAWS = 20000 };

/* Exact E[selected] in a row of m maskable positions (all maskable, T = m):
 * n starts drawn without replacement from the m positions, where n is
 * floor(x) or floor(x) + 1 with x = prob * m / span (the probabilistic
 * rounding). Position t is selected unless none of the c_t starts that
 * cover it (those in [t - span + 1, t]) was drawn:
 * P(none) = C(m - c, n) / C(m, n). */
static double expected_selected(int m, double prob, int span)
{
    double x = prob * m / span;
    int lo = (int)floor(x);
    double expect = 0;
    for (int pick = 0; pick < 2; pick++) {
        int n = lo + pick > m ? m : lo + pick;
        double weight = pick ? x - lo : 1 - (x - lo);
        double covered = 0;
        for (int t = 0; t < m; t++) {
            int c = t + 1 < span ? t + 1 : span;
            double none = 1;
            for (int i = 0; i < n; i++)
                none *= m - c - i > 0 ? (double)(m - c - i) / (m - i) : 0;
            covered += 1 - none;
        }
        expect += weight * covered;
    }
    return expect;
}

static int32_t random_ids[50];

static TokenMaskVocab vocab(void)
{
    for (int i = 0; i < 50; i++)
        random_ids[i] = 10 + i; /* ids 10..59: the "non-special" vocabulary */
    return (TokenMaskVocab){MASK_ID, random_ids, 50};
}

/* Mean selected share over many rows of length T with every position
 * maskable, against the closed form. */
static void test_selected_share(int T, double prob, int span)
{
    TokenMaskSpec spec = {prob, span, 0, 0, 1};
    TokenMaskVocab v = vocab();
    int32_t *ids = malloc(T * sizeof *ids), *out = malloc(T * sizeof *out);
    uint8_t *maskable = malloc(T), *loss = malloc(T), *selected = malloc(T);
    int *scratch = malloc(T * sizeof *scratch);
    for (int t = 0; t < T; t++) {
        ids[t] = 10 + t % 50;
        maskable[t] = 1;
    }
    Rng rng;
    rng_init(&rng, 7, 1);
    double total = 0, sq = 0;
    int loss_mismatch = 0;
    for (int i = 0; i < DRAWS; i++) {
        int n = token_mask(out, loss, selected, ids, maskable, 1, T, &spec, &v, scratch, &rng);
        int s = 0;
        for (int t = 0; t < T; t++)
            s += selected[t];
        loss_mismatch += n != s || memcmp(loss, selected, (size_t)T) != 0;
        total += s;
        sq += (double)s * s;
    }
    double mean = total / DRAWS, var = sq / DRAWS - mean * mean;
    double expect = expected_selected(T, prob, span), se = sqrt(var / DRAWS);
    CHECK(fabs(mean - expect) < 4 * se + 1e-9, "T=%d prob %.2f span %d: mean selected %.4f, expected %.4f (se %.4f)",
          T, prob, span, mean, expect, se);
    CHECK(loss_mismatch == 0, "T=%d: with loss at selected positions, loss != selected %d times", T, loss_mismatch);
    free(ids); free(out); free(maskable); free(loss); free(selected); free(scratch);
}

/* BERT's split: of the selected, 80% <mask>, 10% random, 10% unchanged;
 * the loss everywhere selected (selected mode) or only at <mask> inputs. */
static void test_replacement_split(int loss_on_selected)
{
    enum { B = 8, T = 128 };
    TokenMaskSpec spec = {0.15, 1, 0.1, 0.1, loss_on_selected};
    TokenMaskVocab v = vocab();
    int32_t ids[B * T], out[B * T];
    uint8_t maskable[B * T], loss[B * T], selected[B * T];
    int scratch[T];
    for (int i = 0; i < B * T; i++) {
        ids[i] = 10 + (i * 7) % 50;
        maskable[i] = 1;
    }
    Rng rng;
    rng_init(&rng, 11, 2);
    long n_sel = 0, n_mask = 0, n_random = 0, n_kept = 0, random_counts[50] = {0};
    int loss_wrong = 0, outside_changed = 0, bad_random = 0;
    for (int i = 0; i < DRAWS / 10; i++) {
        int n = token_mask(out, loss, selected, ids, maskable, B, T, &spec, &v, scratch, &rng);
        int n_loss = 0;
        for (int j = 0; j < B * T; j++) {
            n_loss += loss[j];
            if (!selected[j]) {
                outside_changed += out[j] != ids[j] || loss[j];
                continue;
            }
            n_sel++;
            if (out[j] == MASK_ID) {
                n_mask++;
            } else if (out[j] == ids[j]) {
                /* unchanged, or a random draw that hit the same id (1 in 50) */
                n_kept++;
            } else {
                n_random++;
                if (out[j] < 10 || out[j] >= 60)
                    bad_random++;
                else
                    random_counts[out[j] - 10]++;
            }
            loss_wrong += loss[j] != (loss_on_selected ? 1 : out[j] == MASK_ID);
        }
        loss_wrong += n != n_loss;
    }
    /* A random draw equal to the original counts as kept: 0.1 / 50 of the selected. */
    double p_mask = (double)n_mask / n_sel, p_random = (double)n_random / n_sel, p_kept = (double)n_kept / n_sel;
    double se = sqrt(0.25 / n_sel);
    CHECK(fabs((double)n_sel / (DRAWS / 10 * B * T) - 0.15) < 0.002, "selected share %.4f, expected 0.15",
          (double)n_sel / (DRAWS / 10 * B * T));
    CHECK(fabs(p_mask - 0.8) < 5 * se, "<mask> share %.4f, expected 0.8", p_mask);
    CHECK(fabs(p_random - 0.1 * 49 / 50) < 5 * se, "random share %.4f, expected %.4f", p_random, 0.1 * 49 / 50);
    CHECK(fabs(p_kept - (0.1 + 0.1 / 50)) < 5 * se, "unchanged share %.4f, expected %.4f", p_kept, 0.1 + 0.1 / 50);
    CHECK(loss_wrong == 0, "loss at the wrong positions (%s mode) %d times", loss_on_selected ? "selected" : "mask_token",
          loss_wrong);
    CHECK(outside_changed == 0, "an unselected position changed or got the loss %d times", outside_changed);
    CHECK(bad_random == 0, "a random replacement outside the allowed ids %d times", bad_random);
    /* Uniform over the 50 candidates: each within 5 standard errors. */
    int uneven = 0;
    /* The originals are spread evenly over the candidates, so each loses the
     * same share of its draws to "unchanged". */
    double each = (double)n_random / 50;
    for (int k = 0; k < 50; k++)
        uneven += fabs(random_counts[k] - each) > 5 * sqrt(each);
    CHECK(uneven == 0, "random replacements are not uniform over the candidates (%d ids off)", uneven);
}

/* Specials and padding (not maskable) are never selected, changed or in the
 * loss, whatever the spans would cover; the count follows the maskable
 * tokens, not the row length. */
static void test_exclusions(void)
{
    enum { B = 4, T = 40 };
    TokenMaskSpec spec = {0.5, 3, 0.2, 0.2, 1};
    TokenMaskVocab v = vocab();
    int32_t ids[B * T], out[B * T];
    uint8_t maskable[B * T], loss[B * T], selected[B * T];
    int scratch[T];
    const int lengths[B] = {40, 25, 3, 0};
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            int i = b * T + t;
            int pad = t >= lengths[b], special = t == 0 || t == lengths[b] - 1 || t % 9 == 4;
            ids[i] = pad ? 1 : special ? 2 : 10 + t % 50;
            maskable[i] = !pad && !special;
        }
    Rng rng;
    rng_init(&rng, 3, 3);
    int touched = 0, short_rows_masked = 0;
    long selected_total = 0, maskable_total = 0;
    for (int i = 0; i < 2000; i++) {
        token_mask(out, loss, selected, ids, maskable, B, T, &spec, &v, scratch, &rng);
        for (int j = 0; j < B * T; j++) {
            if (!maskable[j])
                touched += selected[j] || loss[j] || out[j] != ids[j];
            selected_total += selected[j];
            maskable_total += maskable[j];
        }
        for (int t = 0; t < T; t++)
            short_rows_masked += selected[3 * T + t];
    }
    CHECK(touched == 0, "a special or padded position was selected, changed or given the loss %d times", touched);
    CHECK(short_rows_masked == 0, "an empty row got a mask");
    CHECK(selected_total > 0.25 * maskable_total && selected_total < 0.5 * maskable_total,
          "selected %.3f of the maskable tokens with prob 0.5 span 3", (double)selected_total / maskable_total);
}

static void test_determinism_and_spec(void)
{
    enum { B = 3, T = 64 };
    TokenMaskSpec spec = {0.35, 4, 0.1, 0.1, 0};
    TokenMaskVocab v = vocab();
    int32_t ids[B * T], a[B * T], b2[B * T];
    uint8_t maskable[B * T], la[B * T], lb[B * T];
    int scratch[T];
    for (int i = 0; i < B * T; i++) {
        ids[i] = 10 + i % 50;
        maskable[i] = i % T != 0;
    }
    Rng r1, r2, r3;
    rng_init(&r1, 42, 9);
    rng_init(&r2, 42, 9);
    rng_init(&r3, 43, 9);
    token_mask(a, la, NULL, ids, maskable, B, T, &spec, &v, scratch, &r1);
    token_mask(b2, lb, NULL, ids, maskable, B, T, &spec, &v, scratch, &r2);
    CHECK(memcmp(a, b2, sizeof a) == 0 && memcmp(la, lb, sizeof la) == 0, "the same seed gave two masks");
    token_mask(b2, lb, NULL, ids, maskable, B, T, &spec, &v, scratch, &r3);
    CHECK(memcmp(a, b2, sizeof a) != 0, "two seeds gave the same mask");

    /* prob 0 masks nothing; bad specs are refused. */
    TokenMaskSpec none = {0, 4, 0, 0, 0};
    CHECK(token_mask(a, la, NULL, ids, maskable, B, T, &none, &v, scratch, &r1) == 0 && memcmp(a, ids, sizeof a) == 0,
          "prob 0 changed something");
    TokenMaskSpec bad_split = {0.3, 1, 0.6, 0.5, 0}, bad_span = {0.3, 0, 0, 0, 0}, bad_prob = {1.5, 1, 0, 0, 0};
    CHECK(token_mask(a, la, NULL, ids, maskable, B, T, &bad_split, &v, scratch, &r1) == -1 &&
              token_mask_spec_problem(&bad_split) != NULL,
          "random_prob + keep_prob > 1 was accepted");
    CHECK(token_mask(a, la, NULL, ids, maskable, B, T, &bad_span, &v, scratch, &r1) == -1, "span 0 was accepted");
    CHECK(token_mask(a, la, NULL, ids, maskable, B, T, &bad_prob, &v, scratch, &r1) == -1, "prob 1.5 was accepted");
    TokenMaskVocab empty = {MASK_ID, random_ids, 0};
    CHECK(token_mask(a, la, NULL, ids, maskable, B, T, &spec, &empty, scratch, &r1) == -1,
          "random replacement without candidates was accepted");
    /* prob 1, span 1: every maskable token selected. */
    TokenMaskSpec all = {1, 1, 0, 0, 0};
    int n = token_mask(a, la, NULL, ids, maskable, B, T, &all, &v, scratch, &r1);
    CHECK(n == B * (T - 1), "prob 1 span 1 masked %d of %d", n, B * (T - 1));
}

int main(void)
{
    /* data2vec text (0.35, spans of 4), BERT (0.15, single tokens), short rows. */
    test_selected_share(64, 0.35, 4);
    test_selected_share(510, 0.35, 4);
    test_selected_share(128, 0.15, 1);
    test_selected_share(7, 0.35, 4);
    test_selected_share(30, 0.8, 10);
    test_replacement_split(1);
    test_replacement_split(0);
    test_exclusions();
    test_determinism_and_spec();
    return check_summary();
}
