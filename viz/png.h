/* png.h — PNG files through libpng (issue 9): the one place d2v writes a
 * picture. An RGB image is (height, width, 3) bytes, row-major. */
#ifndef D2V_PNG_H
#define D2V_PNG_H

#include "common.h"

#include <stdint.h>

/* Writes rgb (height, width, 3) to path as an 8-bit RGB PNG, atomically
 * (a temporary file renamed over path), so a failed write never leaves half
 * a picture. Errors name the file. */
int png_write_rgb(const char *path, const uint8_t *rgb, int width, int height, D2vError *err);

/* Reads an 8-bit RGB or gray PNG into *rgb (height, width, 3), malloc'd
 * (caller frees); other formats are converted by libpng. For the tests. */
int png_read_rgb(const char *path, uint8_t **rgb, int *width, int *height, D2vError *err);

#endif
