/* test_audio_io.c — audio decoding, mixdown, resampling, cropping and
 * normalisation, and the rejection of broken files with messages naming them.
 *
 * Standalone: prints each failure, ends with "N passed, M failed" and exits
 * nonzero if any check failed. Test files are written here with libsndfile
 * itself into a fresh mkdtemp directory under /tmp, removed at the end. */
#if !defined(_GNU_SOURCE) && !defined(_XOPEN_SOURCE)
#define _XOPEN_SOURCE 700 /* mkdtemp, truncate */
#endif

#include "audio_io.h"
#include "check.h"
#include "tempdir.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sndfile.h>

static const double PI = 3.14159265358979323846;


/* Signals are functions of (frame, channel) so every test can recompute the
 * exact samples it wrote. */
typedef double (*SignalFn)(int64_t frame, int channel, int rate);

static double sine_440(int64_t i, int c, int rate)
{
    (void)c;
    return 0.5 * sin(2 * PI * 440.0 * (double)i / rate);
}

static double sine_440_antiphase(int64_t i, int c, int rate)
{
    return c == 0 ? sine_440(i, c, rate) : -sine_440(i, c, rate);
}

/* A float file's garbage: a sine with one NaN, or one infinity, in it. */
static double sine_with_nan(int64_t i, int c, int rate)
{
    return i == 700 ? NAN : 0.5 * sin(2 * M_PI * 440 * (double)i / rate + c);
}

static double sine_with_inf(int64_t i, int c, int rate)
{
    return i == 700 ? INFINITY : 0.5 * sin(2 * M_PI * 440 * (double)i / rate + c);
}

static double zero_signal(int64_t i, int c, int rate)
{
    (void)i, (void)c, (void)rate;
    return 0;
}

/* Deterministic noise-like signal with no period, so crops at different
 * offsets are distinguishable: a Philox uniform per frame, low-passed only
 * by being mixed with a slow sine (content well below 4 kHz would make the
 * resampled comparison easy; white noise makes it a fair test). */
static double noise_signal(int64_t i, int c, int rate)
{
    (void)c;
    return 0.3 * (rng_uniform_at(1234, 7, 0, (uint64_t)i) - 0.5) + 0.2 * sin(2 * PI * 3.0 * (double)i / rate);
}

static int write_audio(const char *path, int format, int rate, int channels, int64_t frames, SignalFn fn)
{
    SF_INFO info = {0};
    info.samplerate = rate;
    info.channels = channels;
    info.format = format;
    SNDFILE *f = sf_open(path, SFM_WRITE, &info);
    if (!f) {
        fprintf(stderr, "cannot write %s: %s\n", path, sf_strerror(NULL));
        return -1;
    }
    float buf[1024 * 10];
    int64_t done = 0;
    while (done < frames) {
        int64_t n = frames - done < 1024 ? frames - done : 1024;
        for (int64_t i = 0; i < n; i++)
            for (int c = 0; c < channels; c++)
                buf[i * channels + c] = (float)fn(done + i, c, rate);
        if (sf_writef_float(f, buf, n) != n) {
            sf_close(f);
            return -1;
        }
        done += n;
    }
    return sf_close(f) == 0 ? 0 : -1;
}

static void stats(const float *x, int64_t n, double *mean, double *var)
{
    double s = 0, sq = 0;
    for (int64_t i = 0; i < n; i++)
        s += x[i];
    *mean = s / (double)n;
    for (int64_t i = 0; i < n; i++)
        sq += (x[i] - *mean) * (x[i] - *mean);
    *var = sq / (double)n;
}

/* The normalisation audio_load promises, applied to a reference. eps = 0
 * gives the exact standardisation, for comparing two signals that were
 * normalised over different spans (the eps term then differs between them). */
static void normalize_with_eps(float *x, int64_t n, double eps)
{
    double mean, var;
    stats(x, n, &mean, &var);
    double inv = 1.0 / sqrt(var + eps);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)((x[i] - mean) * inv);
}

static void normalize_ref(float *x, int64_t n)
{
    normalize_with_eps(x, n, 1e-5);
}

static double max_abs_diff(const float *a, const float *b, int64_t n)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > m)
            m = d;
    }
    return m;
}

/* Amplitude of the freq component of x (sampled at rate), by projecting on
 * sin and cos over [from, to). */
static double amplitude_at(const float *x, int64_t from, int64_t to, double freq, int rate)
{
    double s = 0, c = 0;
    for (int64_t i = from; i < to; i++) {
        s += x[i] * sin(2 * PI * freq * (double)i / rate);
        c += x[i] * cos(2 * PI * freq * (double)i / rate);
    }
    return 2 * sqrt(s * s + c * c) / (double)(to - from);
}

static int64_t zero_crossings(const float *x, int64_t from, int64_t to)
{
    int64_t n = 0;
    for (int64_t i = from + 1; i < to; i++)
        if ((x[i - 1] < 0) != (x[i] < 0))
            n++;
    return n;
}

/* The error message must exist and name the file. */
static int names_path(const D2vError *err, const char *path)
{
    return strstr(err->msg, path) != NULL;
}

/* ---- tests ---------------------------------------------------------------- */

static void test_resample_round_trip(void)
{
    const int64_t n = 16000;
    float *x = malloc(sizeof(float) * n), *up = malloc(sizeof(float) * 50000), *back = malloc(sizeof(float) * 20000);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)sine_440(i, 0, 16000);
    D2vError err = {{0}};
    int64_t n_up = 0, n_back = 0;
    CHECK(audio_resample(x, n, 16000, up, 50000, 44100, &n_up, &err) == 0, "resample up: %s", err.msg);
    CHECK(llabs(n_up - 44100) <= 1, "16k -> 44.1k of 1 s gives %lld samples", (long long)n_up);
    CHECK(audio_resample(up, n_up, 44100, back, 20000, 16000, &n_back, &err) == 0, "resample down: %s", err.msg);
    CHECK(llabs(n_back - n) <= 1, "44.1k -> 16k gives %lld samples", (long long)n_back);

    /* Interior only: the ends see soxr's zero padding. 0.5 amplitude, so
     * 5e-3 absolute is 1e-2 relative. */
    double e = max_abs_diff(x + 500, back + 500, n - 1000);
    CHECK(e < 5e-3, "round trip max error %g", e);

    /* Frequency preserved: 440 Hz at 44.1 kHz still has amplitude 0.5, and
     * about 880 zero crossings per second. */
    double a = amplitude_at(up, 2205, 44100 - 2205, 440.0, 44100);
    CHECK(fabs(a - 0.5) < 5e-3, "440 Hz amplitude after upsampling %g", a);
    double off = amplitude_at(up, 2205, 44100 - 2205, 480.0, 44100);
    CHECK(off < 0.02, "no energy at 480 Hz: %g", off);
    int64_t zc = zero_crossings(up, 0, n_up);
    CHECK(llabs(zc - 880) <= 2, "zero crossings after upsampling %lld", (long long)zc);

    /* Bad arguments are errors, not crashes. */
    CHECK(audio_resample(x, n, 500, up, 50000, 16000, &n_up, &err) == -1, "rate 500 rejected");
    CHECK(audio_resample(x, 0, 16000, up, 50000, 8000, &n_up, &err) == 0 && n_up == 0, "empty input");
    free(x), free(up), free(back);
}

static void test_info_and_formats(void)
{
    char wav16[512], wav44[512], flac[512], wav8[512];
    path_in_dir(wav16, sizeof wav16, "mono16k.wav");
    path_in_dir(wav44, sizeof wav44, "stereo44k.wav");
    path_in_dir(flac, sizeof flac, "mono16k.flac");
    path_in_dir(wav8, sizeof wav8, "mono8k.wav");
    CHECK(write_audio(wav16, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, 32000, sine_440) == 0, "write wav16");
    CHECK(write_audio(wav44, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 44100, 2, 44100, sine_440) == 0, "write wav44");
    CHECK(write_audio(flac, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, 24000, sine_440) == 0, "write flac");
    CHECK(write_audio(wav8, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, 8000, sine_440) == 0, "write wav8");

    D2vError err = {{0}};
    int rate = 0, channels = 0;
    int64_t frames = 0;
    CHECK(audio_info(wav44, &rate, &channels, &frames, &err) == 0, "info: %s", err.msg);
    CHECK(rate == 44100 && channels == 2 && frames == 44100, "info %d Hz %d ch %lld", rate, channels,
          (long long)frames);
    CHECK(audio_info(flac, &rate, &channels, &frames, &err) == 0, "info flac: %s", err.msg);
    CHECK(rate == 16000 && channels == 1 && frames == 24000, "flac info %d Hz %d ch %lld", rate, channels,
          (long long)frames);

    const int64_t cap = 100000;
    float *out = malloc(sizeof(float) * cap);
    int64_t n = 0;
    double mean, var;

    /* Same rate: samples are the written sine, normalised: sqrt(2) sin. */
    CHECK(audio_load(wav16, 16000, cap, 0, 0, NULL, out, &n, &err) == 0, "load wav16: %s", err.msg);
    CHECK(n == 32000, "wav16 length %lld", (long long)n);
    stats(out, n, &mean, &var);
    CHECK(fabs(mean) < 1e-5 && fabs(var - 1) < 1e-3, "normalised: mean %g var %g", mean, var);
    double scale = 1.0 / sqrt(0.125 + 1e-5); /* the sine's variance is 0.5^2 / 2 */
    double worst = 0;
    for (int64_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(out[i] - scale * sine_440(i, 0, 16000)));
    CHECK(worst < 1e-3, "wav16 content error %g", worst);

    /* 44.1 kHz stereo with L = R: the mono signal, resampled to 16 kHz. */
    CHECK(audio_load(wav44, 16000, cap, 0, 0, NULL, out, &n, &err) == 0, "load wav44: %s", err.msg);
    CHECK(llabs(n - 16000) <= 1, "wav44 resampled length %lld", (long long)n);
    stats(out, n, &mean, &var);
    CHECK(fabs(mean) < 1e-4 && fabs(var - 1) < 1e-3, "wav44 normalised: mean %g var %g", mean, var);
    worst = 0;
    for (int64_t i = 400; i < n - 400; i++)
        worst = fmax(worst, fabs(out[i] - scale * sine_440(i, 0, 16000)));
    CHECK(worst < 2e-2, "wav44 -> 16k content error %g", worst);
    double a = amplitude_at(out, 400, n - 400, 440.0, 16000);
    CHECK(fabs(a - sqrt(2)) < 1e-2, "wav44 -> 16k 440 Hz amplitude %g", a);

    /* FLAC reads like the WAV. */
    CHECK(audio_load(flac, 16000, cap, 0, 0, NULL, out, &n, &err) == 0, "load flac: %s", err.msg);
    CHECK(n == 24000, "flac length %lld", (long long)n);
    worst = 0;
    for (int64_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(out[i] - scale * sine_440(i, 0, 16000)));
    CHECK(worst < 1e-3, "flac content error %g", worst);

    /* 8 kHz upsampled: twice the samples, same frequency. */
    CHECK(audio_load(wav8, 16000, cap, 0, 0, NULL, out, &n, &err) == 0, "load wav8: %s", err.msg);
    CHECK(llabs(n - 16000) <= 1, "wav8 -> 16k length %lld", (long long)n);
    a = amplitude_at(out, 400, n - 400, 440.0, 16000);
    CHECK(fabs(a - sqrt(2)) < 1e-2, "wav8 -> 16k 440 Hz amplitude %g", a);
    int64_t zc = zero_crossings(out, 0, n);
    CHECK(llabs(zc - 880) <= 2, "wav8 -> 16k zero crossings %lld", (long long)zc);
    free(out);
}

static void test_mixdown(void)
{
    char same[512], anti[512];
    path_in_dir(same, sizeof same, "stereo_same.wav");
    path_in_dir(anti, sizeof anti, "stereo_anti.wav");
    CHECK(write_audio(same, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 2, 16000, sine_440) == 0, "write");
    CHECK(write_audio(anti, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 2, 16000, sine_440_antiphase) == 0, "write");
    float *out = malloc(sizeof(float) * 16000);
    int64_t n = 0;
    D2vError err = {{0}};
    CHECK(audio_load(same, 16000, 16000, 0, 0, NULL, out, &n, &err) == 0, "L = R: %s", err.msg);
    double scale = 1.0 / sqrt(0.125 + 1e-5), worst = 0;
    for (int64_t i = 0; i < n; i++)
        worst = fmax(worst, fabs(out[i] - scale * sine_440(i, 0, 16000)));
    CHECK(n == 16000 && worst < 1e-3, "L = R gives the signal: n %lld error %g", (long long)n, worst);

    CHECK(audio_load(anti, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1, "L = -R is silent");
    CHECK(names_path(&err, anti) && strstr(err.msg, "silent"), "message: %s", err.msg);
    CHECK(n == 0, "nothing written on error");
    free(out);
}

/* A resampled crop (file at file_rate, 16 kHz target) against the matching
 * window of a full read. The full read is normalised over the whole file and
 * the crop over its 1 s, so both are standardised without eps before the
 * comparison: what remains is the resampler's edge effects, which the read
 * margin must keep out of the window. Covers random offsets, the start
 * (eval) and a window ending at the last sample. full: room for 20 s. */
static void check_resampled_crop(const char *path, int file_rate, int64_t frames, float *full)
{
    const int64_t max = 16000;
    float *a = malloc(sizeof(float) * max), *ref = malloc(sizeof(float) * max);
    int64_t na = 0, nfull = 0;
    D2vError err = {{0}};
    int64_t g = file_rate % 16000 == 0 ? 16000 : (file_rate == 44100 ? 100 : 8000);
    int64_t n_target = frames / (file_rate / g) * (16000 / g);
    CHECK(audio_load(path, 16000, 20 * 16000, 0, 0, NULL, full, &nfull, &err) == 0, "full read: %s", err.msg);
    CHECK(llabs(nfull - n_target) <= 1, "%d Hz: full read length %lld, expected %lld", file_rate, (long long)nfull,
          (long long)n_target);
    double worst = 0;
    int compared = 0;
    for (uint64_t seed = 0; seed <= 7; seed++) {
        Rng r, twin;
        rng_init(&r, seed, 0);
        rng_init(&twin, seed, 0);
        int64_t off = rng_below(&twin, (uint32_t)(n_target - max + 1));
        if (seed == 7) /* eval: offset 0 */
            off = 0;
        CHECK(audio_load(path, 16000, max, 0, seed != 7, &r, a, &na, &err) == 0, "resampled crop: %s", err.msg);
        if (off + max > nfull) /* soxr ended a sample short of n_target */
            continue;
        CHECK(na == max, "resampled crop length %lld", (long long)na);
        memcpy(ref, full + off, sizeof(float) * max);
        normalize_with_eps(ref, max, 0);
        normalize_with_eps(a, max, 0);
        worst = fmax(worst, max_abs_diff(a, ref, max));
        compared++;
    }
    CHECK(compared >= 6 && worst < 1e-4, "%d Hz: crop equals the window of the full read (%d compared, error %g)",
          file_rate, compared, worst);

    /* A window ending at the last sample: max = n - 1 leaves offsets 0 and 1;
     * find the seed drawing 1. */
    int64_t big = nfull - 1;
    float *b = malloc(sizeof(float) * big);
    for (uint64_t seed = 0; seed < 64; seed++) {
        Rng r, twin;
        rng_init(&r, seed, 0);
        rng_init(&twin, seed, 0);
        if (rng_below(&twin, (uint32_t)(n_target - big + 1)) != 1)
            continue;
        CHECK(audio_load(path, 16000, big, 0, 1, &r, b, &na, &err) == 0, "end crop: %s", err.msg);
        CHECK(na == big, "%d Hz: end crop length %lld of %lld", file_rate, (long long)na, (long long)big);
        if (na == big) {
            normalize_with_eps(b, big, 0);
            float *tail = malloc(sizeof(float) * big);
            memcpy(tail, full + 1, sizeof(float) * big);
            normalize_with_eps(tail, big, 0);
            double e = max_abs_diff(b, tail, big);
            CHECK(e < 1e-4, "%d Hz: end crop error %g", file_rate, e);
            free(tail);
        }
        break;
    }
    free(b), free(a), free(ref);
}

/* Cropping: length, determinism per seed, the documented offset draw, and
 * equality with the matching window of a full read (which also shows the
 * windowed read seeks correctly instead of reading from the start). */
static void test_crop(void)
{
    char p16[512];
    path_in_dir(p16, sizeof p16, "long16k.wav");
    const int64_t frames16 = 60 * 16000;
    CHECK(write_audio(p16, SF_FORMAT_WAV | SF_FORMAT_FLOAT, 16000, 1, frames16, noise_signal) == 0, "write");

    const int64_t max = 16000;
    float *a = malloc(sizeof(float) * max), *b = malloc(sizeof(float) * max), *ref = malloc(sizeof(float) * max);
    float *full = malloc(sizeof(float) * 20 * 16000);
    int64_t na = 0, nb = 0;
    D2vError err = {{0}};
    Rng r1, r2;

    /* Same seed, same crop; the offset is the documented single draw. */
    rng_init(&r1, 42, 3);
    rng_init(&r2, 42, 3);
    CHECK(audio_load(p16, 16000, max, 8000, 1, &r1, a, &na, &err) == 0, "train crop: %s", err.msg);
    CHECK(audio_load(p16, 16000, max, 8000, 1, &r2, b, &nb, &err) == 0, "train crop: %s", err.msg);
    CHECK(na == max && nb == max, "crop length %lld %lld", (long long)na, (long long)nb);
    CHECK(memcmp(a, b, sizeof(float) * max) == 0, "same seed, same crop");
    Rng r3;
    rng_init(&r3, 42, 3);
    int64_t offset = rng_below(&r3, (uint32_t)(frames16 - max + 1));
    for (int64_t i = 0; i < max; i++)
        ref[i] = (float)noise_signal(offset + i, 0, 16000);
    normalize_ref(ref, max);
    double e = max_abs_diff(a, ref, max);
    CHECK(e < 1e-4, "train crop is the window at offset %lld (error %g)", (long long)offset, e);

    /* A different seed gives a different crop (two offsets out of 944001). */
    rng_init(&r2, 43, 3);
    CHECK(audio_load(p16, 16000, max, 8000, 1, &r2, b, &nb, &err) == 0, "train crop: %s", err.msg);
    CHECK(memcmp(a, b, sizeof(float) * max) != 0, "different seed, different crop");

    /* Eval: from the start, the same every time, no rng needed. */
    CHECK(audio_load(p16, 16000, max, 8000, 0, NULL, a, &na, &err) == 0, "eval crop: %s", err.msg);
    CHECK(audio_load(p16, 16000, max, 8000, 0, NULL, b, &nb, &err) == 0, "eval crop: %s", err.msg);
    CHECK(na == max && memcmp(a, b, sizeof(float) * max) == 0, "eval crop deterministic");
    for (int64_t i = 0; i < max; i++)
        ref[i] = (float)noise_signal(i, 0, 16000);
    normalize_ref(ref, max);
    CHECK(max_abs_diff(a, ref, max) < 1e-4, "eval crop is the start");

    for (int k = 0; k < 3; k++) {
        static const int rates[3] = {44100, 8000, 48000};
        char name[64], p[512];
        snprintf(name, sizeof name, "long%d.wav", rates[k]);
        path_in_dir(p, sizeof p, name);
        CHECK(write_audio(p, SF_FORMAT_WAV | SF_FORMAT_FLOAT, rates[k], 1, 20 * (int64_t)rates[k], noise_signal) == 0,
              "write");
        check_resampled_crop(p, rates[k], 20 * (int64_t)rates[k], full);
    }

    free(a), free(b), free(ref), free(full);
}

/* A 10-hour 16 kHz PCM WAV, sparse on disk (only the header and the first
 * second are written; the rest is a hole that reads as zeros). An eval crop
 * of 1 s must come back fast and equal the first second: reading the whole
 * file would mean 1.15 GB of I/O and a 2.3 GB buffer. */
static void test_ten_hour_file(void)
{
    char path[512];
    path_in_dir(path, sizeof path, "ten_hours.wav");
    const uint32_t rate = 16000, frames = 10u * 3600u * rate, data_bytes = frames * 2;
    uint8_t header[44];
    memcpy(header, "RIFF", 4);
    uint32_t riff = 36 + data_bytes, fmt_len = 16, byte_rate = rate * 2;
    uint16_t pcm = 1, mono = 1, align = 2, bits = 16;
    memcpy(header + 4, &riff, 4); /* little-endian host assumed, as x86/arm */
    memcpy(header + 8, "WAVEfmt ", 8);
    memcpy(header + 16, &fmt_len, 4);
    memcpy(header + 20, &pcm, 2);
    memcpy(header + 22, &mono, 2);
    memcpy(header + 24, &rate, 4);
    memcpy(header + 28, &byte_rate, 4);
    memcpy(header + 32, &align, 2);
    memcpy(header + 34, &bits, 2);
    memcpy(header + 36, "data", 4);
    memcpy(header + 40, &data_bytes, 4);
    FILE *fp = fopen(path, "wb");
    CHECK(fp != NULL, "create %s", path);
    if (!fp)
        return;
    fwrite(header, 1, sizeof header, fp);
    int16_t second[16000];
    for (int i = 0; i < 16000; i++)
        second[i] = (int16_t)lrint(20000 * noise_signal(i, 0, 16000));
    fwrite(second, sizeof second[0], 16000, fp);
    fclose(fp);
    CHECK(truncate(path, 44 + (off_t)data_bytes) == 0, "extend sparse");

    int64_t info_frames = 0;
    D2vError err = {{0}};
    CHECK(audio_info(path, NULL, NULL, &info_frames, &err) == 0 && info_frames == frames, "10 h info: %s %lld",
          err.msg, (long long)info_frames);
    float *out = malloc(sizeof(float) * 16000), *ref = malloc(sizeof(float) * 16000);
    int64_t n = 0;
    clock_t t0 = clock();
    CHECK(audio_load(path, 16000, 16000, 8000, 0, NULL, out, &n, &err) == 0, "10 h eval crop: %s", err.msg);
    double seconds = (double)(clock() - t0) / CLOCKS_PER_SEC;
    CHECK(seconds < 0.5, "1 s crop of a 10 h file took %.3f s of CPU", seconds);
    for (int i = 0; i < 16000; i++)
        ref[i] = second[i] / 32768.0f;
    normalize_ref(ref, 16000);
    double e = max_abs_diff(out, ref, 16000);
    CHECK(n == 16000 && e < 1e-4, "10 h eval crop is the first second (n %lld, error %g)", (long long)n, e);
    /* A training crop lands in the hole: silent, reported as such. */
    Rng r;
    rng_init(&r, 5, 0);
    CHECK(audio_load(path, 16000, 16000, 8000, 1, &r, out, &n, &err) == -1 && strstr(err.msg, "silent"),
          "10 h train crop in the zero region: %s", err.msg);
    free(out), free(ref);
}

static void test_errors(void)
{
    char path[512];
    float out[16000];
    int64_t n = 0;
    D2vError err = {{0}};

    /* Nonexistent. */
    path_in_dir(path, sizeof path, "missing.wav");
    CHECK(audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1, "missing file");
    CHECK(names_path(&err, path), "message: %s", err.msg);
    CHECK(audio_info(path, NULL, NULL, NULL, &err) == -1 && names_path(&err, path), "info: %s", err.msg);

    /* A FIFO (a manifest can list one) and a directory: refused at once;
     * opening a FIFO for reading would block until a writer came. */
    path_in_dir(path, sizeof path, "a_fifo.wav");
    CHECK(mkfifo(path, 0644) == 0, "mkfifo");
    CHECK(audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1 && names_path(&err, path) &&
              strstr(err.msg, "not a regular file"), "FIFO: %s", err.msg);
    path_in_dir(path, sizeof path, "a_directory.wav");
    CHECK(mkdir(path, 0755) == 0, "mkdir");
    CHECK(audio_info(path, NULL, NULL, NULL, &err) == -1 && names_path(&err, path) && strstr(err.msg, "directory"),
          "directory: %s", err.msg);

    /* Mislabeled: a JPEG (its first bytes) named .wav. */
    path_in_dir(path, sizeof path, "picture.wav");
    static const uint8_t jpeg_start[] = {0xFF, 0xD8, 0xFF, 0xE0, 0, 16, 'J', 'F', 'I', 'F', 0, 1, 1, 0, 0, 1, 0, 1, 0, 0};
    CHECK(write_file(path, jpeg_start, sizeof jpeg_start) == 0, "write");
    CHECK(audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1 && names_path(&err, path) &&
              strstr(err.msg, "cannot open audio"), "JPEG named .wav: %s", err.msg);

    /* Unreadable (root reads everything, so only checked for other users). */
    if (geteuid() != 0) {
        path_in_dir(path, sizeof path, "locked.wav");
        CHECK(write_file(path, "x", 1) == 0 && chmod(path, 0) == 0, "write");
        CHECK(audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1 && strstr(err.msg, "Permission denied"),
              "unreadable: %s", err.msg);
        chmod(path, 0644);
    }

    /* Zero frames. */
    path_in_dir(path, sizeof path, "empty.wav");
    CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 0, sine_440) == 0, "write empty");
    CHECK(audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1, "empty file");
    CHECK(names_path(&err, path) && strstr(err.msg, "empty audio"), "message: %s", err.msg);

    /* Text named .wav. */
    path_in_dir(path, sizeof path, "text.wav");
    FILE *fp = fopen(path, "w");
    fputs("this is not audio, just a line of text that happens to end in .wav\n", fp);
    fclose(fp);
    CHECK(audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1, "text file");
    CHECK(names_path(&err, path), "message: %s", err.msg);

    /* Truncated WAV: the header claims 16000 frames, half the data is cut.
     * libsndfile clamps the data length to the file, so the loader must
     * either return exactly what the file holds or fail naming it. */
    path_in_dir(path, sizeof path, "truncated.wav");
    CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 16000, sine_440) == 0, "write");
    CHECK(truncate(path, 44 + 8000 * 2 + 1) == 0, "truncate"); /* canonical 44-byte header, half a sample extra */
    int rate = 0, channels = 0;
    int64_t frames = 0;
    int info_rc = audio_info(path, &rate, &channels, &frames, &err);
    int load_rc = audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err);
    if (info_rc == 0 && load_rc == 0) {
        CHECK(frames < 16000 && n == frames, "truncated: header frames %lld, loaded %lld", (long long)frames,
              (long long)n);
        double scale = 1.0 / sqrt(0.125 + 1e-5), worst = 0;
        for (int64_t i = 0; i < n; i++)
            worst = fmax(worst, fabs(out[i] - scale * sine_440(i, 0, 16000)));
        CHECK(worst < 1e-2, "truncated: what is there is the signal (error %g)", worst);
    } else {
        CHECK(names_path(&err, path), "truncated message: %s", err.msg);
    }

    /* Too short, with the exact message the loader counts. */
    path_in_dir(path, sizeof path, "short.wav");
    CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 1, 3200, sine_440) == 0, "write");
    CHECK(audio_load(path, 16000, 16000, 8000, 0, NULL, out, &n, &err) == AUDIO_TOO_SHORT, "too short");
    char expected[1024];
    snprintf(expected, sizeof expected, "%s: 0.20 s of audio, shorter than data.min_samples (0.50 s)", path);
    CHECK(strcmp(err.msg, expected) == 0, "message: %s", err.msg);
    /* Shortness is judged after resampling: 0.2 s at 8 kHz is 3200 samples at 16 kHz. */
    path_in_dir(path, sizeof path, "short8k.wav");
    CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 8000, 1, 1600, sine_440) == 0, "write");
    CHECK(audio_load(path, 16000, 16000, 3200, 0, NULL, out, &n, &err) == 0 && llabs(n - 3200) <= 1,
          "0.2 s at 8 kHz meets min 3200 at 16 kHz: %s", err.msg);
    CHECK(audio_load(path, 16000, 16000, 3201, 0, NULL, out, &n, &err) == AUDIO_TOO_SHORT && names_path(&err, path),
          "0.2 s at 8 kHz is below 3201 at 16 kHz");

    /* Silent. */
    path_in_dir(path, sizeof path, "silent.flac");
    CHECK(write_audio(path, SF_FORMAT_FLAC | SF_FORMAT_PCM_16, 16000, 1, 16000, zero_signal) == 0, "write");
    CHECK(audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1, "silent");
    CHECK(names_path(&err, path) && strstr(err.msg, "silent"), "message: %s", err.msg);

    /* NaN or infinite samples in a float WAV, at the model's rate and
     * resampled: refused with a message that says so (not "silent"), so one
     * bad file cannot make a batch's loss NaN. */
    const struct { const char *name; double (*fn)(int64_t, int, int); int rate; } bad_floats[] = {
        {"nan16k.wav", sine_with_nan, 16000}, {"inf16k.wav", sine_with_inf, 16000}, {"nan8k.wav", sine_with_nan, 8000}};
    for (int i = 0; i < 3; i++) {
        path_in_dir(path, sizeof path, bad_floats[i].name);
        CHECK(write_audio(path, SF_FORMAT_WAV | SF_FORMAT_FLOAT, bad_floats[i].rate, 1, 4000, bad_floats[i].fn) == 0,
              "write %s", bad_floats[i].name);
        CHECK(audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1 && names_path(&err, path) &&
                  strstr(err.msg, "NaN or infinite samples"), "%s: %s", bad_floats[i].name, err.msg);
    }

    /* Too many channels, absurd rate. */
    path_in_dir(path, sizeof path, "ten_channels.wav");
    if (write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 16000, 10, 1600, sine_440) == 0) {
        CHECK(audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1, "10 channels");
        CHECK(names_path(&err, path) && strstr(err.msg, "channels"), "message: %s", err.msg);
    }
    path_in_dir(path, sizeof path, "rate500.wav");
    if (write_audio(path, SF_FORMAT_WAV | SF_FORMAT_PCM_16, 500, 1, 1600, sine_440) == 0) {
        CHECK(audio_load(path, 16000, 16000, 0, 0, NULL, out, &n, &err) == -1, "500 Hz");
        CHECK(names_path(&err, path) && strstr(err.msg, "sample rate"), "message: %s", err.msg);
    }

    /* Training without an rng is a caller bug, reported not crashed. */
    path_in_dir(path, sizeof path, "mono16k.wav");
    CHECK(audio_load(path, 16000, 1000, 0, 1, NULL, out, &n, &err) == -1, "train without rng");
}


int main(void)
{
    if (tmp_dir_create("audio") < 0)
        return 1;
    test_resample_round_trip();
    test_info_and_formats();
    test_mixdown();
    test_crop();
    test_ten_hour_file();
    test_errors();
    remove_tree(tmp_dir);
    return check_summary();
}
