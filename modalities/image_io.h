/* image_io.h — JPEG decoding (libjpeg-turbo) and the image transforms of
 * DESIGN §4 / issue 3. Output tensors are float CHW, normalised by the
 * per-channel mean and std. */
#ifndef D2V_IMAGE_IO_H
#define D2V_IMAGE_IO_H

#include "common.h"
#include "rng.h"

typedef struct {
    int size;                      /* output is size x size */
    double scale_min, scale_max;   /* random resized crop: area fraction */
    double ratio_min, ratio_max;   /* and aspect ratio (w/h), sampled log-uniform */
    double flip_prob;              /* horizontal flip */
    double eval_crop_fraction;     /* eval: resize shorter side to size/fraction, center crop */
    float mean[3], std[3];         /* on [0,1] pixel values */
} ImageTransform;

typedef struct {
    int width, height;
    uint8_t *rgb; /* height x width x 3, interleaved */
} Image8;

/* Decodes a JPEG (grayscale and CMYK/YCCK become RGB). min_width/min_height:
 * the decoder may use libjpeg's DCT scaling (1/8 .. 1) to return the smallest
 * image that is still at least this large (0 = full size). Corrupt,
 * truncated, empty or non-JPEG input is an error naming the file and what
 * was wrong; libjpeg warnings (e.g. premature end of data) are errors too. */
int image_decode_jpeg(const char *path, int min_width, int min_height, Image8 *out, D2vError *err);
int image_decode_jpeg_mem(const uint8_t *data, size_t len, const char *what, int min_width, int min_height,
                          Image8 *out, D2vError *err);
void image_free(Image8 *img);

/* Training view: random resized crop (torchvision RandomResizedCrop's
 * sampling: 10 tries, then a center crop fallback), horizontal flip,
 * normalise. Reads the JPEG header first, samples the crop in full-size
 * coordinates, then decodes at the smallest DCT scale whose crop still
 * covers size x size. out: (3, size, size). */
int image_load_train(const char *path, const ImageTransform *t, Rng *rng, float *out, D2vError *err);
/* Evaluation view: shorter side resized to round(size / eval_crop_fraction),
 * center crop size x size, normalise. */
int image_load_eval(const char *path, const ImageTransform *t, float *out, D2vError *err);

/* The pieces, exposed for tests: bilinear resampling of a region of img to
 * out_w x out_h, antialiased when shrinking (a triangle filter whose support
 * widens with the scale factor, as PIL's BILINEAR), then flip/normalise into
 * CHW floats. (x0, y0, w, h) is the source region in pixels (may be
 * fractional). */
void image_resample_normalize(const Image8 *img, double x0, double y0, double w, double h, int out_w, int out_h,
                              int flip, const float mean[3], const float std[3], float *out);

/* The random part of the training view, on a width x height image: the crop
 * (x, y, w, h in pixels, always inside the image) and whether to flip. Draws
 * in a fixed order (per try: scale, then ratio; then top, left; then flip), so
 * the result depends only on the rng state. image_load_train calls it once
 * per image with the full-size dimensions. */
typedef struct {
    int x, y, w, h;
    int flip;
} ImageCrop;
ImageCrop image_sample_crop(const ImageTransform *t, Rng *rng, int width, int height);

#endif
