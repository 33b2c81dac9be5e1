/* plot.h — small-multiple line charts (`d2v plot`, `d2v compare`): one
 * panel per quantity, a title, axes with tick labels, one line per series. */
#ifndef D2V_PLOT_H
#define D2V_PLOT_H

#include "draw.h"

/* Panel geometry, in pixels (the tests compute pixel positions from these):
 * a panel is PLOT_PANEL_W x PLOT_PANEL_H; its plot area starts PLOT_LEFT
 * from the panel's left and PLOT_TOP from its top, and ends PLOT_RIGHT and
 * PLOT_BOTTOM before the other edges. */
#define PLOT_PANEL_W 320
#define PLOT_PANEL_H 220
#define PLOT_LEFT 62
#define PLOT_TOP 24
#define PLOT_RIGHT 14
#define PLOT_BOTTOM 30
/* Room above the panels for a title line (d2v plot, d2v compare). */
#define PLOT_HEADER_H 28

typedef struct {
    const char *name;   /* for the legend (NULL: no legend entry) */
    const double *x, *y; /* n points; non-finite y values are gaps */
    int n;
    Rgb color;
} Series;

/* The colours series take in turn. */
Rgb plot_color(int i);

/* Draws one panel with its top left at (x, y). The y range is the data's
 * [min, max] widened by 5% each way (a constant c: [c - 1, c + 1], so its
 * line sits in the middle); x from the smallest to the largest x. log_y
 * plots log10(y) (values <= 0 are gaps). */
void plot_panel(Canvas *c, int x, int y, const char *title, const char *x_label, const Series *series, int n_series,
                int log_y);

/* A legend row: a colour swatch and the name of each series, at (x, y). */
void plot_legend(Canvas *c, int x, int y, const Series *series, int n_series);

#endif
