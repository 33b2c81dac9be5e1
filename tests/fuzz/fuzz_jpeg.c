/* fuzz_jpeg.c — the JPEG loader on arbitrary bytes, through the paths the
 * data pipeline takes: image_decode_jpeg_mem at full size and at a reduced
 * DCT scale, and image_load_train / image_load_eval on a file (a memfd),
 * which read the header first and sample a crop. A decoded image must have
 * the size it says; a loaded view must be finite. */
#include "fuzz.h"
#include "image_io.h"

#include <math.h>

enum { VIEW = 16 };

static ImageTransform transform(void)
{
    ImageTransform t = {.size = VIEW, .scale_min = 0.08, .scale_max = 1, .ratio_min = 0.75, .ratio_max = 4.0 / 3,
                        .flip_prob = 0.5, .eval_crop_fraction = 0.875,
                        .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f}};
    return t;
}

static void check_view(const float *view, const char *which)
{
    for (int i = 0; i < 3 * VIEW * VIEW; i++)
        FUZZ_CHECK(isfinite(view[i]), "%s view: element %d is %g", which, i, view[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    D2vError err;
    Image8 img;
    /* Inputs declaring huge images cost the fuzzer time, not coverage: the
     * reduced-scale decode below covers the same code on them. */
    if (image_decode_jpeg_mem(data, size, "fuzz", VIEW, VIEW, &img, &err) == 0) {
        FUZZ_CHECK(img.width >= 1 && img.height >= 1 && img.rgb, "decoded %dx%d", img.width, img.height);
        volatile uint8_t sum = 0;
        for (size_t i = 0; i < (size_t)img.width * img.height * 3; i++)
            sum ^= img.rgb[i];
        (void)sum;
        const int small = (size_t)img.width * img.height <= (1u << 20);
        image_free(&img);
        if (small && image_decode_jpeg_mem(data, size, "fuzz", 0, 0, &img, &err) == 0)
            image_free(&img);
    } else {
        FUZZ_CHECK(strlen(err.msg) > 0 && strchr(err.msg, '\n') == NULL, "an error must be one line: %s", err.msg);
    }

    const char *path = fuzz_as_file(data, size);
    const ImageTransform t = transform();
    static float view[3 * VIEW * VIEW];
    uint64_t seed = 1469598103934665603ULL;
    for (size_t i = 0; i < size && i < 64; i++)
        seed = (seed ^ data[i]) * 1099511628211ULL;
    Rng rng;
    rng_init(&rng, seed, 0);
    if (image_load_train(path, &t, &rng, view, &err) == 0)
        check_view(view, "train");
    if (image_load_eval(path, &t, view, &err) == 0)
        check_view(view, "eval");
    return 0;
}
