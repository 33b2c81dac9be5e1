/* audio_io.h — audio decoding (libsndfile), resampling (libsoxr), cropping
 * and normalisation for the audio modality: the counterpart of image_io.h.
 * The output of audio_load is one mono float waveform at the model's rate,
 * zero mean and unit variance (wav2vec 2.0 / data2vec's normalize=True). */
#ifndef D2V_AUDIO_IO_H
#define D2V_AUDIO_IO_H

#include "common.h"
#include "rng.h"

#include <stdint.h>

/* Limits on what a file may declare. More than 8 channels is a multitrack
 * session, not an utterance; a rate outside [1 kHz, 384 kHz] is a broken
 * header (no real recording chain produces it). */
#define AUDIO_MAX_CHANNELS 8
#define AUDIO_MIN_RATE 1000
#define AUDIO_MAX_RATE 384000

/* audio_load's return for an utterance shorter than min_samples: not a
 * broken file but one the dataset filters out (fairseq drops them by size),
 * so the loader skips it even under data.on_error = fail. */
#define AUDIO_TOO_SHORT (-2)

/* Reads the header only: sample rate, channel count and frame count (one
 * frame = one sample per channel). Rejects what audio_load would reject on
 * the header alone: unreadable files, zero frames, too many channels, absurd
 * rates. */
int audio_info(const char *path, int *rate, int *channels, int64_t *frames, D2vError *err);

/* Loads one utterance from any format libsndfile reads (WAV, FLAC, OGG, ...):
 *
 *   1. channels are averaged to mono;
 *   2. if the file's rate is not target_rate it is resampled with libsoxr
 *      (SOXR_HQ); its length at target_rate is n = floor(frames *
 *      target_rate / file_rate);
 *   3. n < min_samples is an error ("PATH: 0.20 s of audio, shorter than
 *      data.min_samples (0.50 s)") returned as AUDIO_TOO_SHORT, so the
 *      loader can skip and count it;
 *   4. if n > max_samples, a window of max_samples is cut out: for training
 *      (train != 0) starting at offset = rng_below(rng, n - max_samples + 1)
 *      (exactly one draw, nothing drawn when no crop is needed); for
 *      evaluation at offset 0, so evaluation is deterministic without an rng
 *      (rng may then be NULL). Only the source frames that window needs (plus
 *      a margin for the resampler's filter) are read, so a 10-hour file costs
 *      as much as a 15-second one;
 *   5. silence (variance below 1e-10 after removing the mean) is an error;
 *   6. the samples are normalised to zero mean and unit variance:
 *      (x - mean) / sqrt(var + 1e-5), var the population variance.
 *
 * out holds max_samples floats; *n_out = min(n, max_samples) are written. */
int audio_load(const char *path, int target_rate, int64_t max_samples, int64_t min_samples, int train, Rng *rng,
               float *out, int64_t *n_out, D2vError *err);

/* Resamples mono float samples from rate_in to rate_out with libsoxr
 * (SOXR_HQ, delay compensated, so output sample j is at time j / rate_out).
 * Writes at most n_out_cap samples; a full conversion gives about
 * n_in * rate_out / rate_in of them. Exposed for audio_load and tests. */
int audio_resample(const float *in, int64_t n_in, int rate_in, float *out, int64_t n_out_cap, int rate_out,
                   int64_t *n_out, D2vError *err);

#endif
