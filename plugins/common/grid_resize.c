/* Bilinear grid resampling (grid_resize.h). */
#include "config.h"
#include <string.h>
#include "grid_resize.h"

/* Source position of output index i, PyTorch's half-pixel rule, clamped
 * below at 0 as it does. */
static void source_index(int i, int in, int out, int *i0, int *i1, float *frac)
{
	float src = ((float)i + 0.5f) * (float)in / (float)out - 0.5f;
	if (src < 0)
		src = 0;
	*i0 = (int)src;
	if (*i0 > in - 1)
		*i0 = in - 1;
	*i1 = *i0 + 1 < in ? *i0 + 1 : in - 1;
	*frac = src - (float)*i0;
}

void grid_resize_bilinear(const float *src, int64_t planes, int h, int w, float *dst, int H, int W)
{
	if (h == H && w == W) {
		memcpy(dst, src, (size_t)(planes * h * w) * sizeof *dst);
		return;
	}
	for (int y = 0; y < H; y++) {
		int y0, y1, x0, x1;
		float fy, fx;
		source_index(y, h, H, &y0, &y1, &fy);
		for (int x = 0; x < W; x++) {
			source_index(x, w, W, &x0, &x1, &fx);
			for (int64_t p = 0; p < planes; p++) {
				const float *s = src + p * h * w;
				float top = s[y0 * w + x0] * (1 - fx) + s[y0 * w + x1] * fx;
				float bottom = s[y1 * w + x0] * (1 - fx) + s[y1 * w + x1] * fx;
				dst[(p * H + y) * W + x] = top * (1 - fy) + bottom * fy;
			}
		}
	}
}
