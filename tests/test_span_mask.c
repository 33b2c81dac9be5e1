/* test_span_mask.c — the span masker against facts that do not depend on
 * which random numbers came out: the mean masked fraction against the exact
 * expectation of fairseq's procedure (computed in closed form below, not by
 * re-running the sampler), equal counts across rows, padding left alone,
 * the shape of the masked runs, min_masks, degenerate rows, determinism. */
#include "check.h"
#include "rng.h"
#include "span_mask.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Exact E[masked frames] of one row (no same-count cut), straight from the
 * definition: n starts drawn without replacement from range(N), frame t is
 * masked unless none of the c_t starts that would cover it was drawn, and
 * P(none of c given values among n of N) = C(N-c, n) / C(N, n). The span
 * count n is floor(x) or floor(x)+1 with probability given by frac(x), then
 * raised to min_masks; N follows fairseq's widening for short rows. */
static double expected_row_coverage(int sz, const SpanMaskSpec *spec)
{
    double x = spec->prob * sz / spec->span;
    int lo = (int)floor(x);
    double p_hi = x - lo;
    double expect = 0;
    for (int pick = 0; pick < 2; pick++) {
        int n = lo + pick;
        double weight = pick ? p_hi : 1 - p_hi;
        if (n < spec->min_masks)
            n = spec->min_masks;
        int N = sz - spec->span;
        if (N <= n)
            N = n + 1;
        double covered = 0;
        for (int t = 0; t < sz; t++) {
            int first = t - spec->span + 1 > 0 ? t - spec->span + 1 : 0;
            int last = t < N - 1 ? t : N - 1;
            int c = last >= first ? last - first + 1 : 0;
            double none_drawn = 1;
            for (int i = 0; i < n; i++)
                none_drawn *= N - c - i > 0 ? (double)(N - c - i) / (N - i) : 0;
            covered += 1 - none_drawn;
        }
        expect += weight * covered;
    }
    return expect;
}

static int count_row(const uint8_t *row, int T)
{
    int n = 0;
    for (int t = 0; t < T; t++)
        n += row[t];
    return n;
}

/* Mean masked frames of a single row over many draws, against the formula. */
static void test_mean_matches_expectation(int T, int valid, SpanMaskSpec spec, double band_lo, double band_hi)
{
    enum { DRAWS = 20000 };
    uint8_t mask[64];
    Rng rng;
    rng_init(&rng, 11, 3);
    const int *valid_len = valid < T ? &valid : NULL;
    double total = 0;
    for (int d = 0; d < DRAWS; d++) {
        int n = span_mask(mask, 1, T, valid_len, &spec, &rng);
        total += n;
    }
    double mean = total / DRAWS;
    double expect = expected_row_coverage(valid, &spec);
    /* The per-draw count has sd well under `valid` frames, so the mean's sd is
     * under valid / sqrt(20000) ~ valid * 0.007; 0.02 * valid is ~3 sd. */
    CHECK(fabs(mean - expect) < 0.02 * valid, "T=%d sz=%d: mean %.3f vs exact %.3f", T, valid, mean, expect);
    CHECK(mean / valid >= band_lo && mean / valid <= band_hi, "sz=%d: fraction %.3f outside [%.2f, %.2f]", valid,
          mean / valid, band_lo, band_hi);
}

/* With one row there is no thinning, so every maximal masked run is a union
 * of whole spans: at least `span` long unless cut by the end of the row. And
 * fairseq's start range (sz - span values) never reaches the last frame. */
static void test_runs_are_whole_spans(void)
{
    const int T = 50;
    SpanMaskSpec spec = {0.65, 10, 0};
    uint8_t mask[50];
    Rng rng;
    rng_init(&rng, 21, 0);
    int short_runs = 0, last_frame_masked = 0;
    for (int d = 0; d < 2000; d++) {
        span_mask(mask, 1, T, NULL, &spec, &rng);
        for (int t = 0; t < T;) {
            if (!mask[t]) {
                t++;
                continue;
            }
            int end = t;
            while (end < T && mask[end])
                end++;
            if (end - t < spec.span && end < T)
                short_runs++;
            t = end;
        }
        last_frame_masked += mask[T - 1];
    }
    CHECK(short_runs == 0, "%d masked runs shorter than a span", short_runs);
    CHECK(last_frame_masked == 0, "last frame masked %d times", last_frame_masked);
}

/* Rows of different lengths: one count for all, returned, padding untouched
 * (the buffer starts dirty to show every element is written). */
static void test_same_count_and_padding(void)
{
    enum { B = 6, T = 80 };
    const int valid_len[B] = {80, 73, 40, 65, 80, 52};
    SpanMaskSpec spec = {0.65, 10, 2};
    uint8_t mask[B * T];
    Rng rng;
    rng_init(&rng, 7, 1);
    int bad_count = 0, padding_hits = 0, positive = 0;
    for (int d = 0; d < 500; d++) {
        memset(mask, 0xAA, sizeof mask);
        int n = span_mask(mask, B, T, valid_len, &spec, &rng);
        positive += n > 0;
        for (int b = 0; b < B; b++) {
            bad_count += count_row(mask + b * T, T) != n;
            for (int t = valid_len[b]; t < T; t++)
                padding_hits += mask[b * T + t] != 0;
            for (int t = 0; t < valid_len[b]; t++)
                bad_count += mask[b * T + t] > 1;
        }
    }
    CHECK(bad_count == 0, "%d rows with a count other than the returned one", bad_count);
    CHECK(padding_hits == 0, "%d padded frames masked", padding_hits);
    CHECK(positive == 500, "only %d of 500 batches masked anything", positive);

    /* No valid_len: every row has T frames and still the same count. */
    int n = span_mask(mask, B, T, NULL, &spec, &rng);
    for (int b = 0; b < B; b++)
        CHECK(count_row(mask + b * T, T) == n, "row %d: %d masked, returned %d", b, count_row(mask + b * T, T), n);
}

static void test_determinism(void)
{
    enum { B = 4, T = 100 };
    const int valid_len[B] = {100, 90, 80, 70};
    SpanMaskSpec spec = {0.65, 10, 2};
    uint8_t first[B * T], again[B * T], other[B * T];
    Rng rng;
    rng_init(&rng, 1234, 0);
    span_mask(first, B, T, valid_len, &spec, &rng);
    rng_init(&rng, 1234, 0);
    span_mask(again, B, T, valid_len, &spec, &rng);
    rng_init(&rng, 1235, 0);
    span_mask(other, B, T, valid_len, &spec, &rng);
    CHECK(memcmp(first, again, sizeof first) == 0, "same seed gave a different mask");
    CHECK(memcmp(first, other, sizeof first) != 0, "different seed gave the same mask");
}

/* prob 0: fairseq asks for int(0 + U) = 0 spans, then min_masks. Two distinct
 * starts in range(30 - 5) each mask 5 frames inside the row: 6..10 frames. */
static void test_min_masks(void)
{
    const int T = 40, valid = 30;
    SpanMaskSpec spec = {0.0, 5, 2};
    uint8_t mask[40];
    Rng rng;
    rng_init(&rng, 3, 0);
    int out_of_range = 0;
    for (int d = 0; d < 1000; d++) {
        int n = span_mask(mask, 1, T, &valid, &spec, &rng);
        out_of_range += n < 6 || n > 10 || count_row(mask, T) != n;
    }
    CHECK(out_of_range == 0, "%d draws outside 6..10 masked frames", out_of_range);
}

static void test_prob_zero(void)
{
    enum { B = 3, T = 50 };
    SpanMaskSpec spec = {0.0, 10, 0};
    uint8_t mask[B * T];
    Rng rng;
    rng_init(&rng, 5, 0);
    int any = 0;
    for (int d = 0; d < 200; d++) {
        memset(mask, 1, sizeof mask);
        any += span_mask(mask, B, T, NULL, &spec, &rng) != 0;
        any += count_row(mask, B * T) != 0;
    }
    CHECK(any == 0, "prob 0, min_masks 0 masked something %d times", any);
}

/* Rows no longer than a span, and an empty row: fairseq's widened start range
 * with starts past the row dropped. An empty row forces the batch count to 0. */
static void test_short_rows(void)
{
    enum { B = 3, T = 8 };
    SpanMaskSpec spec = {0.65, 10, 2};
    uint8_t mask[B * T];
    Rng rng;
    rng_init(&rng, 9, 0);
    const int lens[B] = {3, 8, 1};
    /* The 1-frame row asks for 2 spans; its start range widens to {0, 1, 2}
     * and frame 0 is masked only if start 0 is drawn, so the batch count is
     * 0 or 1 and every row is cut to it. */
    int padding_hits = 0, wrong = 0;
    for (int d = 0; d < 500; d++) {
        int n = span_mask(mask, B, T, lens, &spec, &rng);
        wrong += n < 0 || n > 1;
        for (int b = 0; b < B; b++) {
            wrong += count_row(mask + b * T, T) != n;
            for (int t = lens[b]; t < T; t++)
                padding_hits += mask[b * T + t];
        }
    }
    CHECK(wrong == 0, "short rows: %d wrong counts", wrong);
    CHECK(padding_hits == 0, "short rows: %d padded frames masked", padding_hits);

    const int with_empty[B] = {8, 0, 5};
    int n = span_mask(mask, B, T, with_empty, &spec, &rng);
    CHECK(n == 0 && count_row(mask, B * T) == 0, "an empty row must force 0 masked, got %d", n);
}

static void test_bad_arguments(void)
{
    uint8_t mask[20];
    Rng rng;
    rng_init(&rng, 1, 0);
    SpanMaskSpec zero_span = {0.5, 0, 0}, big_prob = {1.5, 5, 0}, ok = {0.5, 5, 0};
    const int too_long = 11;
    CHECK(span_mask(mask, 2, 10, NULL, &zero_span, &rng) == -1, "span 0 accepted");
    CHECK(span_mask(mask, 2, 10, NULL, &big_prob, &rng) == -1, "prob > 1 accepted");
    CHECK(span_mask(mask, 1, 10, &too_long, &ok, &rng) == -1, "valid_len > T accepted");
    CHECK(span_mask(mask, 0, 10, NULL, &ok, &rng) == 0, "empty batch");
}

int main(void)
{
    /* The brief's setting: 3.25 spans of 10 on 50 frames, heavy overlap. */
    test_mean_matches_expectation(50, 50, (SpanMaskSpec){0.65, 10, 0}, 0.40, 0.60);
    /* data2vec audio's setting on a padded row. */
    test_mean_matches_expectation(64, 49, (SpanMaskSpec){0.65, 10, 2}, 0.30, 0.65);
    /* Short row: 2 spans forced, start range widened to 3 values. */
    test_mean_matches_expectation(16, 12, (SpanMaskSpec){0.65, 10, 2}, 0.80, 1.00);
    test_runs_are_whole_spans();
    test_same_count_and_padding();
    test_determinism();
    test_min_masks();
    test_prob_zero();
    test_short_rows();
    test_bad_arguments();
    return check_summary();
}
