/* spectrogram.h — a log-mel spectrogram, for display only (`d2v show mask`
 * for speech): the model never sees it (it reads the waveform). The FFT is
 * FFTW's. */
#ifndef D2V_SPECTROGRAM_H
#define D2V_SPECTROGRAM_H

#include "common.h"

/* x (n samples at rate Hz) -> *out (*n_frames, n_mels), malloc'd: frame f
 * covers samples [f*hop, f*hop + win) under a Hann window (zero past the
 * end), |FFT|^2 on the next power of two >= win, triangular mel filters
 * (HTK mel scale) from 0 Hz to rate/2, then ln(energy + 1e-10). */
int log_mel(const float *x, int n, int rate, int win, int hop, int n_mels, float **out, int *n_frames,
            D2vError *err);

#endif
