/* Line plots as PNG (plot.h), written through df_png_write (libpng). */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "diffuse/io.h"
#include "plot.h"

enum { W = 720, H = 440, L = 50, R = 20, T = 20, B = 40 };

static void put(uint8_t *px, int x, int y, const uint8_t rgb[3])
{
	if (x >= 0 && x < W && y >= 0 && y < H)
		memcpy(px + ((size_t)y * W + (size_t)x) * 3, rgb, 3);
}

static int to_x(const bench_axes *a, double x)
{
	return (int)(L + (x - a->x_lo) / (a->x_hi - a->x_lo) * (W - L - R));
}

static int to_y(const bench_axes *a, double y)
{
	return (int)(H - B - (y - a->y_lo) / (a->y_hi - a->y_lo) * (H - T - B));
}

static void polyline(uint8_t *px, const bench_axes *a, const bench_series *s)
{
	int x0 = 0, y0 = 0;
	for (int i = 0; i < s->n; i++) {
		int x = to_x(a, s->x[i]), y = to_y(a, s->y[i]);
		for (int dy = -3; dy <= 3; dy++)
			for (int dx = -3; dx <= 3; dx++)
				put(px, x + dx, y + dy, s->rgb);
		if (i > 0) {
			int steps = abs(x - x0) > abs(y - y0) ? abs(x - x0) : abs(y - y0);
			for (int k = 0; k <= steps; k++)
				for (int w = -1; w <= 1; w++)
					put(px, x0 + (x - x0) * k / (steps ? steps : 1),
					    y0 + (y - y0) * k / (steps ? steps : 1) + w, s->rgb);
		}
		x0 = x, y0 = y;
	}
}

int bench_plot(const char *path, const bench_axes *a, const bench_series *series, int n_series, df_error *err)
{
	static const uint8_t grid[3] = {210, 210, 210}, tick_grid[3] = {235, 235, 235}, black[3] = {0, 0, 0};
	if (!(a->x_hi > a->x_lo) || !(a->y_hi > a->y_lo) || a->x_ticks < 1 || !(a->y_grid > 0))
		return df_error_set(err, DF_EINVAL, "%s: an empty range to plot", path);
	uint8_t *px = malloc((size_t)W * H * 3);
	if (!px)
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
	memset(px, 255, (size_t)W * H * 3);
	for (double v = a->y_lo; v <= a->y_hi + 1e-9 * (a->y_hi - a->y_lo); v += a->y_grid)
		for (int x = L; x < W - R; x++)
			put(px, x, to_y(a, v), grid);
	for (int k = 0; k <= a->x_ticks; k++) {
		int x = L + k * (W - L - R) / a->x_ticks;
		for (int y = T; y < H - B; y++)
			put(px, x, y, tick_grid);
		for (int y = H - B; y < H - B + 6; y++)
			put(px, x, y, black);
	}
	for (int x = L; x < W - R; x++)
		put(px, x, H - B, black);
	for (int y = T; y <= H - B; y++)
		put(px, L, y, black);
	for (int s = 0; s < n_series; s++)
		polyline(px, a, &series[s]);
	int rc = df_png_write(path, px, W, H, 3, err);
	free(px);
	return rc;
}
