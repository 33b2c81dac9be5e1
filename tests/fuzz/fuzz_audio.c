/* fuzz_audio.c — the audio loader on arbitrary bytes (any format libsndfile
 * recognises: WAV, AIFF, AU, FLAC, OGG, ...), from an in-memory file:
 * audio_info, then audio_load as training reads it (random crop) and as
 * evaluation does. What it returns must be finite samples, no more than
 * asked for, normalised. */
#include "audio_io.h"
#include "fuzz.h"

#include <math.h>

enum { RATE = 16000, MAX_SAMPLES = 8000 };

static void check_loaded(const float *out, int64_t n, const char *which)
{
    FUZZ_CHECK(n >= 1 && n <= MAX_SAMPLES, "%s: %lld samples", which, (long long)n);
    double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        FUZZ_CHECK(isfinite(out[i]), "%s: sample %lld is %g", which, (long long)i, out[i]);
        sum += out[i];
    }
    FUZZ_CHECK(fabs(sum / (double)n) < 1e-2, "%s: mean %g after normalisation", which, sum / (double)n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_as_file(data, size);
    D2vError err;
    int rate = 0, channels = 0;
    int64_t frames = 0;
    if (audio_info(path, &rate, &channels, &frames, &err) == 0)
        FUZZ_CHECK(rate >= AUDIO_MIN_RATE && rate <= AUDIO_MAX_RATE && channels >= 1 &&
                   channels <= AUDIO_MAX_CHANNELS && frames > 0, "info: %d Hz, %d channels, %lld frames", rate,
                   channels, (long long)frames);
    else
        FUZZ_CHECK(strlen(err.msg) > 0 && strchr(err.msg, '\n') == NULL, "an error must be one line: %s", err.msg);

    static float out[MAX_SAMPLES];
    int64_t n = 0;
    Rng rng;
    rng_init(&rng, size, 0);
    if (audio_load(path, RATE, MAX_SAMPLES, 1, 1, &rng, out, &n, &err) == 0)
        check_loaded(out, n, "train");
    if (audio_load(path, RATE, MAX_SAMPLES, 1, 0, NULL, out, &n, &err) == 0)
        check_loaded(out, n, "eval");
    return 0;
}
