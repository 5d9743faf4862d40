/* bench/report-plot: the PNG plot of bench/report (FD against training
 * time, one line per trainer), drawn by the same code as target-quality's.
 *
 *   report-plot IN.json OUT.png
 *
 * IN.json: {"series": [{"rgb": [R, G, B], "x": [...], "y": [...]}, ...]}.
 * Both axes start at 0 and end at a round number above the largest value;
 * the program prints the ranges, as the image holds no text. */
#include "config.h"
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include "plot.h"

#define MAX_SERIES 8
#define MAX_POINTS 256

/* A round step (1, 2 or 5 times a power of ten) giving about `parts` parts of hi. */
static double round_step(double hi, int parts)
{
	double raw = hi / parts, decade = pow(10, floor(log10(raw)));
	double mult = raw <= decade ? 1 : raw <= 2 * decade ? 2 : raw <= 5 * decade ? 5 : 10;
	return mult * decade;
}

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: report-plot IN.json OUT.png\n");
		return 2;
	}
	json_error_t jerr;
	json_t *root = json_load_file(argv[1], 0, &jerr);
	json_t *list = root ? json_object_get(root, "series") : NULL;
	if (!json_is_array(list) || json_array_size(list) < 1 || json_array_size(list) > MAX_SERIES) {
		fprintf(stderr, "report-plot: %s: %s\n", argv[1], root ? "needs 1 to 8 series" : jerr.text);
		json_decref(root);
		return 1;
	}
	static double xs[MAX_SERIES][MAX_POINTS], ys[MAX_SERIES][MAX_POINTS];
	bench_series series[MAX_SERIES];
	int n_series = (int)json_array_size(list);
	double x_max = 0, y_max = 0;
	for (int s = 0; s < n_series; s++) {
		json_t *item = json_array_get(list, (size_t)s), *x = json_object_get(item, "x");
		json_t *y = json_object_get(item, "y"), *rgb = json_object_get(item, "rgb");
		size_t n = json_array_size(x);
		if (n < 1 || n > MAX_POINTS || json_array_size(y) != n || json_array_size(rgb) != 3) {
			fprintf(stderr, "report-plot: %s: series %d needs x and y of one length (1 to %d) and rgb\n",
			        argv[1], s, MAX_POINTS);
			json_decref(root);
			return 1;
		}
		series[s] = (bench_series){.x = xs[s], .y = ys[s], .n = (int)n};
		for (int c = 0; c < 3; c++)
			series[s].rgb[c] = (uint8_t)json_integer_value(json_array_get(rgb, (size_t)c));
		for (size_t i = 0; i < n; i++) {
			xs[s][i] = json_number_value(json_array_get(x, i));
			ys[s][i] = json_number_value(json_array_get(y, i));
			x_max = xs[s][i] > x_max ? xs[s][i] : x_max;
			y_max = ys[s][i] > y_max ? ys[s][i] : y_max;
		}
	}
	json_decref(root);
	double x_step = round_step(x_max > 0 ? x_max : 1, 10), y_step = round_step(y_max > 0 ? y_max : 1, 8);
	bench_axes axes = {.x_lo = 0, .x_hi = ceil(x_max / x_step) * x_step, .y_lo = 0,
	                   .y_hi = ceil(y_max / y_step) * y_step, .y_grid = y_step};
	if (axes.x_hi <= 0)
		axes.x_hi = x_step;
	if (axes.y_hi <= 0)
		axes.y_hi = y_step;
	axes.x_ticks = (int)lround(axes.x_hi / x_step);
	df_error err;
	if (bench_plot(argv[2], &axes, series, n_series, &err) != 0) {
		fprintf(stderr, "report-plot: %s\n", err.msg);
		return 1;
	}
	printf("plot: %s (x from 0 to %g, a tick every %g; y from 0 to %g, a gridline every %g)\n", argv[2], axes.x_hi,
	       x_step, axes.y_hi, y_step);
	return 0;
}
