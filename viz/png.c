/* png.c — PNG through libpng's simplified API (png_image_*), which does the
 * chunking, filtering and zlib for us; error handling stays in one place. */
#include "png.h"

#include <errno.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int png_write_rgb(const char *path, const uint8_t *rgb, int width, int height, D2vError *err)
{
    if (width < 1 || height < 1)
        return d2v_fail(err, "%s: cannot write a %d x %d picture", path, width, height);
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return d2v_fail(err, "path too long: %s", path);
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return d2v_fail(err, "cannot write %s: %s", path, strerror(errno));
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)width;
    image.height = (png_uint_32)height;
    image.format = PNG_FORMAT_RGB;
    int ok = png_image_write_to_stdio(&image, f, 0, rgb, width * 3, NULL) != 0;
    char why[256];
    snprintf(why, sizeof why, "%s", ok ? "" : image.message);
    png_image_free(&image);
    if (fclose(f) != 0 && ok) {
        ok = 0;
        snprintf(why, sizeof why, "%s", strerror(errno));
    }
    if (ok && rename(tmp, path) < 0) {
        ok = 0;
        snprintf(why, sizeof why, "%s", strerror(errno));
    }
    if (!ok) {
        unlink(tmp);
        return d2v_fail(err, "writing %s: %s", path, why);
    }
    return 0;
}

int png_read_rgb(const char *path, uint8_t **rgb, int *width, int *height, D2vError *err)
{
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    *rgb = NULL;
    if (!png_image_begin_read_from_file(&image, path))
        return d2v_fail(err, "%s: not a readable PNG (%s)", path, image.message);
    image.format = PNG_FORMAT_RGB;
    uint8_t *buf = malloc(PNG_IMAGE_SIZE(image));
    if (!buf) {
        png_image_free(&image);
        return d2v_fail(err, "%s: out of memory", path);
    }
    if (!png_image_finish_read(&image, NULL, buf, 0, NULL)) {
        free(buf);
        return d2v_fail(err, "%s: %s", path, image.message);
    }
    *rgb = buf;
    *width = (int)image.width;
    *height = (int)image.height;
    return 0;
}
