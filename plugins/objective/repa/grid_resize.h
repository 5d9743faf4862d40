/* Resampling of feature grids on the host, shared by the repa objective
 * (matching the encoder's patch grid to the backbone's tokens) and the
 * representation encoders (image size, positional embeddings). */
#ifndef DIFFUSE_REPA_GRID_RESIZE_H
#define DIFFUSE_REPA_GRID_RESIZE_H

#include <stdint.h>

/* planes (P, h, w) -> (P, H, W), bilinear as PyTorch's
 * interpolate(mode="bilinear", align_corners=False) without antialiasing;
 * equal sizes copy. */
void repa_resize_bilinear(const float *src, int64_t planes, int h, int w, float *dst, int H, int W);

#endif
