#include "config.h"
#include "resample.h"

#include <math.h>
#include <string.h>

const char *const resample_filters[] = {"bilinear", "nearest", NULL};

int resample_filter_parse(const char *name, resample_filter *filter, df_error *err)
{
	for (int i = 0; name && resample_filters[i]; i++)
		if (strcmp(name, resample_filters[i]) == 0) {
			*filter = (resample_filter)i;
			return DF_OK;
		}
	return df_error_set(err, DF_EINVAL, "filter \"%s\" is neither bilinear nor nearest", name ? name : "");
}

int resample_init(resample_plan *r, int in_height, int in_width, int64_t pad_to, int64_t out_height,
                  int64_t out_width, resample_filter filter, df_error *err)
{
	if (in_height < 1 || in_width < 1)
		return df_error_set(err, DF_EINVAL, "an image of %dx%d pixels is empty", in_height, in_width);
	if (pad_to < 0 || pad_to > INT32_MAX)
		return df_error_set(err, DF_EINVAL, "pad_to %lld is out of range", (long long)pad_to);
	if (pad_to > 0 && (pad_to < in_height || pad_to < in_width))
		return df_error_set(err, DF_EINVAL, "pad_to %lld is smaller than the %dx%d images", (long long)pad_to,
		                    in_height, in_width);
	if (out_height < 0 || out_height > INT32_MAX || out_width < 0 || out_width > INT32_MAX)
		return df_error_set(err, DF_EINVAL, "an output size of %lldx%lld is out of range", (long long)out_height,
		                    (long long)out_width);
	r->in_height = in_height;
	r->in_width = in_width;
	r->pad_height = pad_to ? (int)pad_to : in_height;
	r->pad_width = pad_to ? (int)pad_to : in_width;
	r->out_height = out_height ? (int)out_height : r->pad_height;
	r->out_width = out_width ? (int)out_width : r->pad_width;
	r->filter = filter;
	return DF_OK;
}

/* Where output o of out samples lies on an axis of in (padded) pixels,
 * offset where the image starts: the two source pixels (-1: padding) and
 * the weight of the second. */
typedef struct resample_tap {
	int lo, hi;
	float w;
} resample_tap;

static int source_or_padding(int padded, int offset, int len)
{
	int s = padded - offset;
	return s >= 0 && s < len ? s : -1;
}

static resample_tap resample_tap_at(int o, int in, int out, int offset, int len, resample_filter filter)
{
	int lo, hi;
	float w = 0;
	if (in == out) {
		lo = hi = o;
	} else if (filter == RESAMPLE_NEAREST) {
		lo = hi = (int)((int64_t)o * in / out);
	} else {
		double x = (o + 0.5) * in / out - 0.5;
		if (x < 0)
			x = 0;
		lo = (int)floor(x);
		if (lo > in - 1)
			lo = in - 1;
		hi = lo + 1 < in ? lo + 1 : lo;
		w = (float)(x - lo);
	}
	return (resample_tap){source_or_padding(lo, offset, len), source_or_padding(hi, offset, len), w};
}

static float pixel(const uint8_t *src, int stride, int width, int y, int x)
{
	if (y < 0 || x < 0)
		return -1.0f;
	return src[((size_t)y * width + x) * stride] / 127.5f - 1.0f;
}

void resample_apply(const resample_plan *r, const uint8_t *src, int stride, float *dst)
{
	int off_y = (r->pad_height - r->in_height) / 2;
	int off_x = (r->pad_width - r->in_width) / 2;
	for (int oy = 0; oy < r->out_height; oy++) {
		resample_tap ty = resample_tap_at(oy, r->pad_height, r->out_height, off_y, r->in_height, r->filter);
		for (int ox = 0; ox < r->out_width; ox++) {
			resample_tap tx = resample_tap_at(ox, r->pad_width, r->out_width, off_x, r->in_width, r->filter);
			float top = (1 - tx.w) * pixel(src, stride, r->in_width, ty.lo, tx.lo) +
			            tx.w * pixel(src, stride, r->in_width, ty.lo, tx.hi);
			float bottom = (1 - tx.w) * pixel(src, stride, r->in_width, ty.hi, tx.lo) +
			               tx.w * pixel(src, stride, r->in_width, ty.hi, tx.hi);
			float v = (1 - ty.w) * top + ty.w * bottom;
			/* Rounding in the blend may step an ulp past the range. */
			dst[(size_t)oy * r->out_width + ox] = v < -1.0f ? -1.0f : v > 1.0f ? 1.0f : v;
		}
	}
}
