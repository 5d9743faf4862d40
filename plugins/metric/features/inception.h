/* FID's Inception v3: the network of the PyTorch FID port (pytorch-fid's
 * InceptionV3 with its FID blocks), up to pool3, the 2048 features FID
 * compares. Weights come under the port's state_dict names
 * ("blocks.0.0.conv.weight", "blocks.2.0.branch1x1.bn.running_var", ...)
 * or torchvision's ("Conv2d_1a_3x3.conv.weight", "Mixed_5b.branch1x1...",
 * the names of the port's released .pth file); every BatchNorm (eval mode,
 * eps 0.001) is folded into its convolution when the weights load.
 *
 *   x (N, 3, 299, 299) in [-1, 1]
 *   stem: 3x3/2 32, 3x3 32, 3x3 64 (pad 1), max 3/2, 1x1 80, 3x3 192, max 3/2
 *   Mixed_5b..5d (A, average pool not counting padding), 6a (B),
 *   6b..6e (C, as A's pool), 7a (D), 7b (E, as A's pool), 7c (E, max pool)
 *   mean over the 8x8 map -> features (N, 2048) */
#ifndef DIFFUSE_METRIC_INCEPTION_H
#define DIFFUSE_METRIC_INCEPTION_H

#include <stdint.h>
#include "diffuse/tensor.h"

#define DFF_INCEPTION_SIZE 299
#define DFF_INCEPTION_FEATURES 2048

typedef struct dff_inception dff_inception;

/* Fills values (the product of shape) with the state_dict tensor `name`
 * of the port (a conv weight or a BatchNorm weight, bias, running_mean or
 * running_var); returns 0 or a df_status with err filled. */
typedef int (*dff_inception_source)(void *arg, const char *name, int ndim, const int64_t *shape, float *values,
                                    df_error *err);

int dff_inception_create(dff_inception **net, df_ctx *ctx, dff_inception_source source, void *arg, df_error *err);
/* The weights from a safetensors file under either naming. */
int dff_inception_create_from_file(dff_inception **net, df_ctx *ctx, const char *path, df_error *err);
void dff_inception_destroy(dff_inception *net);

/* features (N, 2048) of x. On a no-grad graph the memory of each block is
 * reused by the next. */
int dff_inception_forward(dff_inception *net, df_graph *g, df_tensor *x, df_tensor **features, df_error *err);

/* One image (channels 1 or 3, h, w) -> (3, 299, 299), bilinear as the
 * port resizes (PyTorch's interpolate, align_corners=False, no
 * antialiasing); one channel is repeated to three. */
void dff_inception_resize(const float *src, int channels, int h, int w, float *dst);

#endif
