/* draw.h — the few drawing primitives the pictures of `d2v show`, `d2v plot`
 * and `d2v compare` need: a canvas of RGB bytes, rectangles, lines, a small
 * bitmap font for labels, colour maps and heatmaps. Deliberately minimal: no
 * anti-aliasing, integer pixel coordinates, (0,0) top left. */
#ifndef D2V_DRAW_H
#define D2V_DRAW_H

#include "common.h"

#include <stdint.h>

typedef struct {
    uint8_t r, g, b;
} Rgb;

typedef struct {
    int width, height;
    uint8_t *rgb; /* (height, width, 3) */
} Canvas;

#define RGB_WHITE ((Rgb){255, 255, 255})
#define RGB_BLACK ((Rgb){0, 0, 0})
#define RGB_GREY ((Rgb){128, 128, 128})
#define RGB_LIGHT ((Rgb){225, 225, 225})

/* A width x height canvas filled with `fill`. */
int canvas_init(Canvas *c, int width, int height, Rgb fill, D2vError *err);
void canvas_free(Canvas *c);
/* Writes the canvas as a PNG (png.h). */
int canvas_save(const Canvas *c, const char *path, D2vError *err);

/* One pixel; coordinates outside the canvas are ignored (so is everything
 * below). */
void draw_pixel(Canvas *c, int x, int y, Rgb color);
/* Blends color over the pixel with weight alpha in [0, 1]. */
void draw_blend(Canvas *c, int x, int y, Rgb color, double alpha);
/* The filled rectangle [x0, x1) x [y0, y1). */
void draw_fill(Canvas *c, int x0, int y0, int x1, int y1, Rgb color);
/* The rectangle's one-pixel outline. */
void draw_rect(Canvas *c, int x0, int y0, int x1, int y1, Rgb color);
/* A one-pixel line between two points (Bresenham). */
void draw_line(Canvas *c, int x0, int y0, int x1, int y1, Rgb color);

/* Text in a 3x5-pixel font (digits, letters shown upper case, and
 * . , - + : = _ / ( ) % < > [ ] ' # *; anything else is a box), each glyph
 * scaled by `scale`, top left at (x, y). Returns the width drawn. */
int draw_text(Canvas *c, int x, int y, const char *text, int scale, Rgb color);
/* The width draw_text would take. */
int text_width(const char *text, int scale);
#define TEXT_HEIGHT(scale) (5 * (scale))

/* Colour maps, t in [0, 1] (clamped): a perceptual dark-blue -> green ->
 * yellow ramp (viridis-like) and a diverging blue -> white -> red one. */
Rgb colormap_sequential(double t);
Rgb colormap_diverging(double t);

/* values (rows, cols) row-major, drawn at (x, y) with each cell
 * cell_w x cell_h pixels: t = (v - lo) / (hi - lo) through the colour map
 * (diverging or sequential). */
void draw_heatmap(Canvas *c, int x, int y, const float *values, int rows, int cols, int cell_w, int cell_h, double lo,
                  double hi, int diverging);

#endif
