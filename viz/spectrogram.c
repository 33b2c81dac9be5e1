/* spectrogram.c — see spectrogram.h. */
#include "spectrogram.h"

#include <fftw3.h>
#include <math.h>
#include <stdlib.h>

static double hz_to_mel(double hz) { return 2595.0 * log10(1.0 + hz / 700.0); }
static double mel_to_hz(double mel) { return 700.0 * (pow(10.0, mel / 2595.0) - 1.0); }

int log_mel(const float *x, int n, int rate, int win, int hop, int n_mels, float **out, int *n_frames,
            D2vError *err)
{
    *out = NULL;
    if (n < 1 || rate < 1 || win < 2 || hop < 1 || n_mels < 1)
        return d2v_fail(err, "log_mel: bad shape (%d samples, rate %d, window %d, hop %d, %d mels)", n, rate, win, hop,
                        n_mels);
    int n_fft = 1;
    while (n_fft < win)
        n_fft *= 2;
    const int bins = n_fft / 2 + 1;
    const int frames = n < win ? 1 : 1 + (n - win) / hop;
    float *buf = fftwf_alloc_real((size_t)n_fft);
    fftwf_complex *spec = fftwf_alloc_complex((size_t)bins);
    float *mel = malloc((size_t)frames * n_mels * sizeof *mel);
    double *fb = calloc((size_t)n_mels * bins, sizeof *fb);
    if (!buf || !spec || !mel || !fb) {
        fftwf_free(buf);
        fftwf_free(spec);
        free(mel);
        free(fb);
        return d2v_fail(err, "log_mel: out of memory");
    }
    /* Triangular filters, centres evenly spaced on the mel scale. */
    const double top = hz_to_mel(rate / 2.0);
    for (int m = 0; m < n_mels; m++) {
        const double lo = mel_to_hz(top * m / (n_mels + 1)), mid = mel_to_hz(top * (m + 1) / (n_mels + 1)),
                     hi = mel_to_hz(top * (m + 2) / (n_mels + 1));
        for (int k = 0; k < bins; k++) {
            const double hz = (double)k * rate / n_fft;
            double w = hz <= lo || hz >= hi ? 0 : hz <= mid ? (hz - lo) / (mid - lo) : (hi - hz) / (hi - mid);
            fb[(size_t)m * bins + k] = w;
        }
    }
    fftwf_plan plan = fftwf_plan_dft_r2c_1d(n_fft, buf, spec, FFTW_ESTIMATE);
    for (int f = 0; f < frames; f++) {
        for (int i = 0; i < n_fft; i++) {
            const int at = f * hop + i;
            const double hann = 0.5 - 0.5 * cos(2 * M_PI * i / (win - 1));
            buf[i] = i < win && at < n ? (float)(x[at] * hann) : 0.0f;
        }
        fftwf_execute(plan);
        for (int m = 0; m < n_mels; m++) {
            double e = 0;
            for (int k = 0; k < bins; k++) {
                const double p = (double)spec[k][0] * spec[k][0] + (double)spec[k][1] * spec[k][1];
                e += fb[(size_t)m * bins + k] * p;
            }
            mel[(size_t)f * n_mels + m] = (float)log(e + 1e-10);
        }
    }
    fftwf_destroy_plan(plan);
    fftwf_free(buf);
    fftwf_free(spec);
    free(fb);
    *out = mel;
    *n_frames = frames;
    return 0;
}
