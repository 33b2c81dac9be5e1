/* plot.c — see plot.h. */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

Rgb plot_color(int i)
{
    static const Rgb colors[] = {{31, 119, 180}, {214, 39, 40}, {44, 160, 44}, {148, 103, 189}, {255, 127, 14}};
    return colors[i % 5];
}

/* A "nice" tick step (1, 2 or 5 times a power of ten) giving about n ticks. */
static double nice_step(double span, int n)
{
    const double raw = span / n, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * p;
}

static void tick_label(char *out, size_t len, double v, double step)
{
    if (fabs(v) < step * 1e-6)
        v = 0;
    if ((fabs(v) >= 1e4 || (fabs(v) < 1e-2 && v != 0)))
        snprintf(out, len, "%.1e", v);
    else
        snprintf(out, len, "%.*f", step >= 1 ? 0 : (int)ceil(-log10(step)), v);
}

static double value(double y, int log_y) { return log_y ? (y > 0 ? log10(y) : NAN) : y; }

void plot_panel(Canvas *c, int x, int y, const char *title, const char *x_label, const Series *series, int n_series,
                int log_y)
{
    const int ax0 = x + PLOT_LEFT, ay0 = y + PLOT_TOP, ax1 = x + PLOT_PANEL_W - PLOT_RIGHT,
              ay1 = y + PLOT_PANEL_H - PLOT_BOTTOM;
    char label[64];
    snprintf(label, sizeof label, "%s%s", title, log_y ? " (log10)" : "");
    draw_text(c, ax0, y + 6, label, 2, RGB_BLACK);

    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (int s = 0; s < n_series; s++)
        for (int i = 0; i < series[s].n; i++) {
            const double v = value(series[s].y[i], log_y);
            if (!isfinite(v) || !isfinite(series[s].x[i]))
                continue;
            xmin = fmin(xmin, series[s].x[i]);
            xmax = fmax(xmax, series[s].x[i]);
            ymin = fmin(ymin, v);
            ymax = fmax(ymax, v);
        }
    draw_rect(c, ax0, ay0, ax1 + 1, ay1 + 1, RGB_BLACK);
    if (!isfinite(xmin)) {
        draw_text(c, ax0 + 8, ay0 + 8, "no data", 2, RGB_GREY);
        return;
    }
    if (ymax - ymin <= 1e-12 * fmax(1, fabs(ymax))) {
        ymin -= 1;
        ymax += 1;
    } else {
        const double pad = 0.05 * (ymax - ymin);
        ymin -= pad;
        ymax += pad;
    }
    if (xmax <= xmin)
        xmax = xmin + 1;
    const int W = ax1 - ax0, H = ay1 - ay0;
#define PX(v) (ax0 + (int)lround(((v) - xmin) / (xmax - xmin) * W))
#define PY(v) (ay1 - (int)lround(((v) - ymin) / (ymax - ymin) * H))

    /* Ticks and grid lines. */
    const double ys = nice_step(ymax - ymin, 4), xs = nice_step(xmax - xmin, 4);
    for (double t = ceil(ymin / ys) * ys; t <= ymax; t += ys) {
        const int py = PY(t);
        for (int px = ax0 + 1; px < ax1; px += 2)
            draw_pixel(c, px, py, RGB_LIGHT);
        draw_line(c, ax0 - 4, py, ax0, py, RGB_BLACK);
        tick_label(label, sizeof label, t, ys);
        draw_text(c, ax0 - 6 - text_width(label, 1) * 2, py - 5, label, 2, RGB_BLACK);
    }
    for (double t = ceil(xmin / xs) * xs; t <= xmax; t += xs) {
        const int px = PX(t);
        draw_line(c, px, ay1, px, ay1 + 4, RGB_BLACK);
        tick_label(label, sizeof label, t, xs);
        const int w = text_width(label, 2);
        draw_text(c, px - w / 2, ay1 + 7, label, 2, RGB_BLACK);
    }
    if (x_label)
        draw_text(c, ax1 - text_width(x_label, 1), ay1 + 20, x_label, 1, RGB_GREY);

    /* The lines; a non-finite value breaks the line. */
    for (int s = 0; s < n_series; s++) {
        int have = 0, lx = 0, ly = 0;
        for (int i = 0; i < series[s].n; i++) {
            const double v = value(series[s].y[i], log_y);
            if (!isfinite(v) || !isfinite(series[s].x[i])) {
                have = 0;
                continue;
            }
            const int px = PX(series[s].x[i]), py = PY(v);
            if (have)
                draw_line(c, lx, ly, px, py, series[s].color);
            else
                draw_pixel(c, px, py, series[s].color);
            lx = px;
            ly = py;
            have = 1;
        }
    }
#undef PX
#undef PY
}

void plot_legend(Canvas *c, int x, int y, const Series *series, int n_series)
{
    for (int s = 0; s < n_series; s++) {
        if (!series[s].name)
            continue;
        draw_fill(c, x, y, x + 14, y + 10, series[s].color);
        x += 20 + draw_text(c, x + 20, y, series[s].name, 2, RGB_BLACK) + 16;
    }
}
