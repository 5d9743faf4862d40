/* Line plots as PNG for the bench programs (target-quality, report-plot):
 * a white canvas, light gridlines, black axes, one coloured polyline with
 * square markers per series. No text: the programs print what the axes
 * and colours mean. */
#ifndef DIFFUSE_BENCH_PLOT_H
#define DIFFUSE_BENCH_PLOT_H

#include <stdint.h>
#include "diffuse/error.h"

typedef struct bench_series {
	const double *x, *y;
	int n;
	uint8_t rgb[3];
} bench_series;

typedef struct bench_axes {
	double x_lo, x_hi;  /* the x range drawn */
	int x_ticks;        /* vertical gridlines (and ticks) dividing it */
	double y_lo, y_hi;  /* the y range drawn */
	double y_grid;      /* a horizontal gridline every y_grid from y_lo */
} bench_axes;

/* Writes the plot to path (720 x 440 RGB). */
int bench_plot(const char *path, const bench_axes *axes, const bench_series *series, int n_series, df_error *err);

#endif
