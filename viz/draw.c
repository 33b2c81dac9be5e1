/* draw.c — see draw.h. */
#include "draw.h"

#include "png.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int canvas_init(Canvas *c, int width, int height, Rgb fill, D2vError *err)
{
    c->width = width;
    c->height = height;
    c->rgb = d2v_malloc((size_t)width * height * 3, err);
    if (!c->rgb)
        return -1;
    draw_fill(c, 0, 0, width, height, fill);
    return 0;
}

void canvas_free(Canvas *c)
{
    free(c->rgb);
    c->rgb = NULL;
}

int canvas_save(const Canvas *c, const char *path, D2vError *err)
{
    return png_write_rgb(path, c->rgb, c->width, c->height, err);
}

void draw_pixel(Canvas *c, int x, int y, Rgb color)
{
    if (x < 0 || y < 0 || x >= c->width || y >= c->height)
        return;
    uint8_t *p = c->rgb + ((size_t)y * c->width + x) * 3;
    p[0] = color.r;
    p[1] = color.g;
    p[2] = color.b;
}

void draw_blend(Canvas *c, int x, int y, Rgb color, double alpha)
{
    if (x < 0 || y < 0 || x >= c->width || y >= c->height)
        return;
    uint8_t *p = c->rgb + ((size_t)y * c->width + x) * 3;
    const double a = alpha < 0 ? 0 : alpha > 1 ? 1 : alpha;
    p[0] = (uint8_t)lround(p[0] * (1 - a) + color.r * a);
    p[1] = (uint8_t)lround(p[1] * (1 - a) + color.g * a);
    p[2] = (uint8_t)lround(p[2] * (1 - a) + color.b * a);
}

void draw_fill(Canvas *c, int x0, int y0, int x1, int y1, Rgb color)
{
    for (int y = y0 < 0 ? 0 : y0; y < y1 && y < c->height; y++)
        for (int x = x0 < 0 ? 0 : x0; x < x1 && x < c->width; x++)
            draw_pixel(c, x, y, color);
}

void draw_rect(Canvas *c, int x0, int y0, int x1, int y1, Rgb color)
{
    draw_line(c, x0, y0, x1 - 1, y0, color);
    draw_line(c, x0, y1 - 1, x1 - 1, y1 - 1, color);
    draw_line(c, x0, y0, x0, y1 - 1, color);
    draw_line(c, x1 - 1, y0, x1 - 1, y1 - 1, color);
}

void draw_line(Canvas *c, int x0, int y0, int x1, int y1, Rgb color)
{
    const int dx = abs(x1 - x0), dy = -abs(y1 - y0), sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
    int e = dx + dy;
    for (;;) {
        draw_pixel(c, x0, y0, color);
        if (x0 == x1 && y0 == y1)
            break;
        const int e2 = 2 * e;
        if (e2 >= dy) {
            e += dy;
            x0 += sx;
        }
        if (e2 <= dx) {
            e += dx;
            y0 += sy;
        }
    }
}

/* ---- a 3x5 font ------------------------------------------------------------- */

/* Each glyph: five rows of three pixels, '#' on. Enough for axis ticks,
 * titles and legends; lower case is drawn as upper case. */
static const struct {
    char ch;
    const char *rows;
} glyphs[] = {
    {'0', "####.##.##.####"}, {'1', ".#.##..#..#.###"}, {'2', "###..#####..###"}, {'3', "###..####..####"},
    {'4', "#.##.####..#..#"}, {'5', "####..###..####"}, {'6', "####..####.####"}, {'7', "###..#..#..#..#"},
    {'8', "####.#####.####"}, {'9', "####.####..####"}, {'A', ".#.#.#####.##.#"}, {'B', "##.#.###.#.###."},
    {'C', ".###..#..#...##"}, {'D', "##.#.##.##.###."}, {'E', "####..####..###"}, {'F', "####..####..#.."},
    {'G', ".###..#.##.#.##"}, {'H', "#.##.#####.##.#"}, {'I', "###.#..#..#.###"}, {'J', "..#..#..##.#.#."},
    {'K', "#.##.###.#.##.#"}, {'L', "#..#..#..#..###"}, {'M', "#.########.##.#"}, {'N', "##.#.##.##.##.#"},
    {'O', "####.##.##.####"}, {'P', "##.#.###.#..#.."}, {'Q', ".#.#.##.###..##"}, {'R', "##.#.###.#.##.#"},
    {'S', ".###...#...###."}, {'T', "###.#..#..#..#."}, {'U', "#.##.##.##.####"}, {'V', "#.##.##.##.#.#."},
    {'W', "#.##.##.#####.#"}, {'X', "#.##.#.#.#.##.#"}, {'Y', "#.##.#.#..#..#."}, {'Z', "###..#.#.#..###"},
    {'.', "............#.."}, {',', "..........#.#.."}, {'-', "......###......"}, {'+', "....#.###.#...."},
    {':', "....#.....#...."}, {'=', "...###...###..."}, {'_', "............###"}, {'/', "..#..#.#.#..#.."},
    {'(', ".#.#..#..#...#."}, {')', ".#...#..#..#.#."}, {'%', "#.#..#.#.#..#.#"}, {'<', "..#.#.#...#...#"},
    {'>', "#...#...#.#.#.."}, {'[', "##.#..#..#..##."}, {']', ".##..#..#..#.##"}, {'\'', ".#..#.........."},
    {'#', "#.#####.#####.#"}, {';', "....#.....#.#.."}, {'*', "....#.###.#.#.."}, {' ', "..............."},
};

static const char *glyph_rows(char ch)
{
    if (ch >= 'a' && ch <= 'z')
        ch = (char)(ch - 'a' + 'A');
    for (size_t i = 0; i < sizeof glyphs / sizeof *glyphs; i++)
        if (glyphs[i].ch == ch)
            return glyphs[i].rows;
    return "####.##.##.####"; /* a box: a character the font lacks */
}

int text_width(const char *text, int scale)
{
    const size_t n = strlen(text);
    return n ? (int)(4 * n - 1) * scale : 0;
}

int draw_text(Canvas *c, int x, int y, const char *text, int scale, Rgb color)
{
    int at = x;
    for (const char *t = text; *t; t++, at += 4 * scale) {
        const char *rows = glyph_rows(*t);
        for (int r = 0; r < 5; r++)
            for (int col = 0; col < 3; col++)
                if (rows[r * 3 + col] == '#')
                    draw_fill(c, at + col * scale, y + r * scale, at + (col + 1) * scale, y + (r + 1) * scale, color);
    }
    return text_width(text, scale);
}

/* ---- colour ------------------------------------------------------------------- */

static Rgb lerp_stops(const Rgb *stops, int n, double t)
{
    t = t < 0 ? 0 : t > 1 ? 1 : isnan(t) ? 0 : t;
    const double pos = t * (n - 1);
    int i = (int)pos;
    if (i >= n - 1)
        i = n - 2;
    const double f = pos - i;
    const Rgb a = stops[i], b = stops[i + 1];
    return (Rgb){(uint8_t)lround(a.r + (b.r - a.r) * f), (uint8_t)lround(a.g + (b.g - a.g) * f),
                 (uint8_t)lround(a.b + (b.b - a.b) * f)};
}

Rgb colormap_sequential(double t)
{
    /* Five points sampled from viridis: dark blue, blue, teal, green, yellow. */
    static const Rgb stops[] = {{68, 1, 84}, {59, 82, 139}, {33, 145, 140}, {94, 201, 98}, {253, 231, 37}};
    return lerp_stops(stops, 5, t);
}

Rgb colormap_diverging(double t)
{
    static const Rgb stops[] = {{33, 102, 172}, {146, 197, 222}, {247, 247, 247}, {244, 165, 130}, {178, 24, 43}};
    return lerp_stops(stops, 5, t);
}

void draw_heatmap(Canvas *c, int x, int y, const float *values, int rows, int cols, int cell_w, int cell_h, double lo,
                  double hi, int diverging)
{
    const double span = hi > lo ? hi - lo : 1;
    for (int r = 0; r < rows; r++)
        for (int k = 0; k < cols; k++) {
            const double t = (values[(size_t)r * cols + k] - lo) / span;
            const Rgb color = diverging ? colormap_diverging(t) : colormap_sequential(t);
            draw_fill(c, x + k * cell_w, y + r * cell_h, x + (k + 1) * cell_w, y + (r + 1) * cell_h, color);
        }
}
