/* fmnist-net: the small Fashion-MNIST classifier whose penultimate layer
 * is the feature space of the FD-FMNIST metrics. One definition, used by
 * the backbone component (training) and by the metrics' feature
 * extractor (evaluation), so both always run the same network.
 *
 *   x (N, 1, 28, 28)
 *   conv1 3x3 1->16, GroupNorm, SiLU, avgpool 2   -> 14x14
 *   conv2 3x3 16->32, GroupNorm, SiLU, avgpool 2  -> 7x7
 *   conv3 3x3 32->64, GroupNorm, SiLU, avgpool 2  -> 3x3 (last row/column dropped)
 *   fc1 576->128, SiLU                            the features (128)
 *   fc2 128->10                                   the logits
 * About 99k parameters and 2 M multiply-adds per image, so the framework
 * trains it on a laptop CPU in minutes; GroupNorm (8 channels a group)
 * makes those few epochs enough. */
#ifndef DIFFUSE_FMNIST_NET_H
#define DIFFUSE_FMNIST_NET_H

#include "diffuse/plugin.h"
#include "diffuse/tensor.h"

#define FMNIST_NET_SIZE 28
#define FMNIST_NET_CLASSES 10
#define FMNIST_NET_FEATURES 128

typedef struct fmnist_net {
	df_params *params;
	df_tensor *conv_w[3], *conv_b[3], *norm_w[3], *norm_b[3];
	df_tensor *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} fmnist_net;

int fmnist_net_create(fmnist_net **net, df_ctx *ctx, df_error *err);
void fmnist_net_destroy(fmnist_net *net);
/* PyTorch's default initialisation (uniform +-1/sqrt(fan_in); norms 1
 * and 0), from a seed. */
int fmnist_net_init(fmnist_net *net, uint64_t seed, df_error *err);
/* x (N, 1, 28, 28) in [-1, 1] -> features (N, 128) and logits (N, 10);
 * either output may be NULL. */
int fmnist_net_forward(fmnist_net *net, df_graph *g, df_tensor *x, df_tensor **features, df_tensor **logits,
                       df_error *err);
/* The convolutional feature map after `stage` (1..3) conv-norm-SiLU
 * stages, before that stage's pooling: (N, 16, 28, 28), (N, 32, 14, 14)
 * or (N, 64, 7, 7) for 28x28 input (REPA's patch features). Sticky
 * graph errors, as the ops. */
df_tensor *fmnist_net_stage(fmnist_net *net, df_graph *g, df_tensor *x, int stage);
/* Loads the weights from a weights file or from a training checkpoint
 * (whose EMA set, "ema.<name>", is preferred over the raw weights). */
int fmnist_net_load(fmnist_net *net, const char *path, df_error *err);
/* Writes the weights alone, under their names. */
int fmnist_net_save(fmnist_net *net, const char *path, df_error *err);

#endif
