/* Resampling of float planes on the host, shared by the repa objective
 * (matching the encoder's patch grid to the backbone's tokens), the
 * representation encoders (image size, positional embeddings) and the
 * Inception features (the resize to 299). */
#ifndef DIFFUSE_GRID_RESIZE_H
#define DIFFUSE_GRID_RESIZE_H

#include <stdint.h>

/* planes (P, h, w) -> (P, H, W), bilinear as PyTorch's
 * interpolate(mode="bilinear", align_corners=False) without antialiasing;
 * equal sizes copy. */
void grid_resize_bilinear(const float *src, int64_t planes, int h, int w, float *dst, int H, int W);

#endif
