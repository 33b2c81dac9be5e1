#include "audio_io.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sndfile.h>
#include <soxr.h>

/* Frames per sf_readf_float call when mixing down: 4096 frames x 8 channels
 * is a 128 KB buffer, whatever the length of the window being read. */
#define AUDIO_READ_CHUNK 4096
/* Extra source audio read on each side of a cropped window before
 * resampling. soxr pads with zeros past the ends of what it is given, so
 * output samples within one filter half-length of an edge would differ from
 * a resampling of the whole file; SOXR_HQ's filter spans a few milliseconds
 * at speech rates, and 50 ms leaves a wide safety factor for low rates. */
#define AUDIO_RESAMPLE_MARGIN_SECONDS 0.05
#define AUDIO_RESAMPLE_MARGIN_MIN_FRAMES 256
/* wav2vec 2.0 normalises with F.layer_norm, whose eps sits inside the sqrt. */
#define AUDIO_NORM_EPS 1e-5
#define AUDIO_SILENCE_VARIANCE 1e-10

static int64_t gcd64(int64_t a, int64_t b)
{
    while (b) {
        int64_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* Opens path for reading and validates the header. Everything audio_info
 * and audio_load refuse on the header alone is refused here, so the two
 * agree. On success the caller owns the returned handle. */
static SNDFILE *open_checked(const char *path, SF_INFO *info, D2vError *err)
{
    memset(info, 0, sizeof *info); /* sf_open requires format = 0 for reading */
    /* Opened here, not by sf_open: O_NONBLOCK keeps a FIFO (a manifest can
     * name one) from blocking the loader thread forever in open(), and
     * fstat refuses anything but a regular file before libsndfile reads. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        d2v_fail(err, "%s: cannot open audio (%s)", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        int saved = errno;
        d2v_fail(err, "%s: cannot open audio (%s)", path,
                 S_ISDIR(st.st_mode) ? "a directory" : !S_ISREG(st.st_mode) ? "not a regular file" : strerror(saved));
        close(fd);
        return NULL;
    }
    if (st.st_size == 0) { /* libsndfile would call it "Format not recognised" */
        d2v_fail(err, "%s: empty file", path);
        close(fd);
        return NULL;
    }
    SNDFILE *file = sf_open_fd(fd, SFM_READ, info, SF_TRUE); /* closes fd when done, or on failure */
    if (!file) {
        /* sf_strerror(NULL) is the error of the last failed sf_open. */
        d2v_fail(err, "%s: cannot open audio (%s)", path, sf_strerror(NULL));
        return NULL;
    }
    const char *problem = NULL;
    char detail[128];
    if (info->frames <= 0) {
        problem = "empty audio";
    } else if (info->channels < 1 || info->channels > AUDIO_MAX_CHANNELS) {
        snprintf(detail, sizeof detail, "%d channels, expected 1 to %d", info->channels, AUDIO_MAX_CHANNELS);
        problem = detail;
    } else if (info->samplerate < AUDIO_MIN_RATE || info->samplerate > AUDIO_MAX_RATE) {
        snprintf(detail, sizeof detail, "sample rate %d Hz, expected %d to %d", info->samplerate, AUDIO_MIN_RATE,
                 AUDIO_MAX_RATE);
        problem = detail;
    } else if (info->frames > INT64_MAX / AUDIO_MAX_RATE) {
        /* keeps frames * rate arithmetic below from overflowing */
        problem = "absurd frame count in header";
    }
    if (problem) {
        d2v_fail(err, "%s: %s", path, problem);
        sf_close(file);
        return NULL;
    }
    return file;
}

int audio_info(const char *path, int *rate, int *channels, int64_t *frames, D2vError *err)
{
    SF_INFO info;
    SNDFILE *file = open_checked(path, &info, err);
    if (!file)
        return -1;
    if (rate)
        *rate = info.samplerate;
    if (channels)
        *channels = info.channels;
    if (frames)
        *frames = (int64_t)info.frames;
    sf_close(file);
    return 0;
}

/* Reads frames [start, start + count) and averages the channels into mono.
 * A short read is an error rather than silently fewer samples: the crop was
 * planned from the header's frame count, and a file that cannot deliver it
 * is damaged. (libsndfile already clamps a WAV header that claims more data
 * than the file holds, so such WAVs read consistently and never get here.) */
static int read_mono(SNDFILE *file, const char *path, int channels, int64_t start, int64_t count, float *mono,
                     D2vError *err)
{
    if (sf_seek(file, (sf_count_t)start, SEEK_SET) < 0)
        return d2v_fail(err, "%s: cannot seek to frame %lld (%s)", path, (long long)start, sf_strerror(file));
    float *chunk = d2v_malloc(sizeof(float) * AUDIO_READ_CHUNK * (size_t)channels, err);
    if (!chunk)
        return -1;
    int64_t done = 0;
    while (done < count) {
        int64_t want = count - done < AUDIO_READ_CHUNK ? count - done : AUDIO_READ_CHUNK;
        sf_count_t got = sf_readf_float(file, chunk, (sf_count_t)want);
        if (got <= 0)
            break;
        for (sf_count_t f = 0; f < got; f++) {
            double sum = 0;
            for (int c = 0; c < channels; c++)
                sum += chunk[f * channels + c];
            mono[done + f] = (float)(sum / channels);
        }
        done += got;
    }
    free(chunk);
    if (done < count) {
        int code = sf_error(file);
        return d2v_fail(err, "%s: read only %lld of %lld frames from frame %lld (%s)", path, (long long)done,
                        (long long)count, (long long)start, code ? sf_strerror(file) : "truncated file?");
    }
    return 0;
}

int audio_resample(const float *in, int64_t n_in, int rate_in, float *out, int64_t n_out_cap, int rate_out,
                   int64_t *n_out, D2vError *err)
{
    *n_out = 0;
    if (rate_in < AUDIO_MIN_RATE || rate_in > AUDIO_MAX_RATE || rate_out < AUDIO_MIN_RATE ||
        rate_out > AUDIO_MAX_RATE)
        return d2v_fail(err, "audio_resample: rates %d -> %d Hz, expected %d to %d", rate_in, rate_out,
                        AUDIO_MIN_RATE, AUDIO_MAX_RATE);
    if (n_in < 0 || n_out_cap < 0)
        return d2v_fail(err, "audio_resample: negative length (%lld in, %lld out)", (long long)n_in,
                        (long long)n_out_cap);
    if (n_in == 0 || n_out_cap == 0)
        return 0;
    /* soxr_oneshot defaults to low quality; ask for HQ explicitly. */
    soxr_io_spec_t io = soxr_io_spec(SOXR_FLOAT32_I, SOXR_FLOAT32_I);
    soxr_quality_spec_t quality = soxr_quality_spec(SOXR_HQ, 0);
    size_t done_out = 0;
    soxr_error_t problem = soxr_oneshot(rate_in, rate_out, 1, in, (size_t)n_in, NULL, out, (size_t)n_out_cap,
                                        &done_out, &io, &quality, NULL);
    if (problem)
        return d2v_fail(err, "audio_resample: soxr failed (%s)", problem);
    *n_out = (int64_t)done_out;
    return 0;
}

/* Zero mean, unit variance in place; -1 (no message) if the samples are
 * silent, -2 if one is NaN or infinite (a float file's garbage, which would
 * otherwise turn the whole batch's loss into NaN). Double accumulators: a 15 s utterance is 240k samples, enough for
 * a float sum to lose the small variance of quiet recordings. */
static int normalize_or_silent(float *x, int64_t n)
{
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += x[i];
    double mean = sum / (double)n;
    double sq = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i] - mean;
        sq += d * d;
    }
    double var = sq / (double)n;
    if (!isfinite(var))
        return -2;
    if (!(var >= AUDIO_SILENCE_VARIANCE))
        return -1;
    double inv = 1.0 / sqrt(var + AUDIO_NORM_EPS);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)((x[i] - mean) * inv);
    return 0;
}

int audio_load(const char *path, int target_rate, int64_t max_samples, int64_t min_samples, int train, Rng *rng,
               float *out, int64_t *n_out, D2vError *err)
{
    *n_out = 0;
    if (target_rate < AUDIO_MIN_RATE || target_rate > AUDIO_MAX_RATE)
        return d2v_fail(err, "%s: target rate %d Hz, expected %d to %d", path, target_rate, AUDIO_MIN_RATE,
                        AUDIO_MAX_RATE);
    if (max_samples <= 0 || min_samples < 0)
        return d2v_fail(err, "%s: max_samples %lld and min_samples %lld, expected max > 0 and min >= 0", path,
                        (long long)max_samples, (long long)min_samples);
    if (train && !rng)
        return d2v_fail(err, "%s: a training crop needs an rng", path);

    SF_INFO info;
    SNDFILE *file = open_checked(path, &info, err);
    if (!file)
        return -1;
    const int64_t frames = (int64_t)info.frames;
    const int file_rate = info.samplerate;

    /* src_step source frames last exactly as long as dst_step target
     * samples; a resampled window that starts on a multiple of src_step
     * therefore lines up sample for sample with a resampling of the whole
     * file (output j of the window is output j0 + j of the whole). */
    const int64_t g = gcd64(file_rate, target_rate);
    const int64_t src_step = file_rate / g, dst_step = target_rate / g;
    const int64_t n_full = (frames / src_step) * dst_step + (frames % src_step) * dst_step / src_step;

    if (n_full < min_samples || n_full <= 0) {
        d2v_fail(err, "%s: %.2f s of audio, shorter than data.min_samples (%.2f s)", path,
                 (double)n_full / target_rate, (double)min_samples / target_rate);
        sf_close(file);
        return AUDIO_TOO_SHORT;
    }

    /* The window [offset, offset + len) in target samples. Evaluation takes
     * the start: deterministic without an rng, and the beginning of an
     * utterance is as representative as its middle for speech. */
    const int64_t len = n_full < max_samples ? n_full : max_samples;
    int64_t offset = 0;
    if (train && n_full > max_samples) {
        int64_t choices = n_full - max_samples + 1;
        if (choices > (int64_t)UINT32_MAX) { /* over 74 hours at 16 kHz: two draws */
            offset = (int64_t)(rng_u64(rng) % (uint64_t)choices);
        } else {
            offset = rng_below(rng, (uint32_t)choices);
        }
    }

    int rc = 0;
    int64_t got = 0;
    if (file_rate == target_rate) {
        rc = read_mono(file, path, info.channels, offset, len, out, err);
        got = len;
    } else {
        int64_t margin = (int64_t)(file_rate * AUDIO_RESAMPLE_MARGIN_SECONDS);
        if (margin < AUDIO_RESAMPLE_MARGIN_MIN_FRAMES)
            margin = AUDIO_RESAMPLE_MARGIN_MIN_FRAMES;
        int64_t src_lo = offset * src_step / dst_step;                            /* floor */
        int64_t src_hi = ((offset + len) * src_step + dst_step - 1) / dst_step;   /* ceil */
        int64_t s0 = src_lo - margin > 0 ? (src_lo - margin) / src_step * src_step : 0;
        int64_t s1 = src_hi + margin < frames ? src_hi + margin : frames;
        int64_t j0 = s0 / src_step * dst_step; /* target index of the window's first output */
        int64_t skip = offset - j0;
        int64_t n_src = s1 - s0;
        int64_t cap = (n_src * dst_step + src_step - 1) / src_step + 16;

        float *src = d2v_malloc(sizeof(float) * (size_t)n_src, err);
        float *dst = src ? d2v_malloc(sizeof(float) * (size_t)cap, err) : NULL;
        int64_t n_dst = 0;
        rc = (src && dst) ? 0 : -1;
        if (rc == 0)
            rc = read_mono(file, path, info.channels, s0, n_src, src, err);
        if (rc == 0) {
            rc = audio_resample(src, n_src, file_rate, dst, cap, target_rate, &n_dst, err);
            if (rc != 0)
                d2v_fail_prefix(err, "%s: ", path);
        }
        if (rc == 0) {
            /* soxr may round the last sample of the file differently from
             * n_full; take what it produced rather than pad. */
            got = n_dst - skip < len ? n_dst - skip : len;
            if (got <= 0)
                rc = d2v_fail(err, "%s: resampler produced %lld samples, expected %lld", path,
                              (long long)n_dst, (long long)(skip + len));
            else
                memcpy(out, dst + skip, sizeof(float) * (size_t)got);
        }
        free(dst);
        free(src);
    }
    sf_close(file);
    if (rc != 0)
        return -1;

    const int normalized = normalize_or_silent(out, got);
    if (normalized == -2)
        return d2v_fail(err, "%s: holds NaN or infinite samples (a corrupt float file)", path);
    if (normalized != 0)
        return d2v_fail(err, "%s: silent", path);
    *n_out = got;
    return 0;
}
