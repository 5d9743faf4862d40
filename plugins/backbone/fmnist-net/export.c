/* fmnist-net-export CHECKPOINT WEIGHTS: keeps only the weights of a
 * training checkpoint (its EMA set when it has one), the small file the
 * metrics ship. */
#include "config.h"
#include <stdio.h>
#include "fmnist_net.h"

int main(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: %s CHECKPOINT WEIGHTS\n", argv[0]);
		return 2;
	}
	df_error err = {0};
	df_ctx *ctx = NULL;
	fmnist_net *net = NULL;
	int rc = df_ctx_create(&ctx, "cpu", 1, &err);
	if (!rc)
		rc = fmnist_net_create(&net, ctx, &err);
	if (!rc)
		rc = fmnist_net_load(net, argv[1], &err);
	if (!rc)
		rc = fmnist_net_save(net, argv[2], &err);
	if (rc)
		fprintf(stderr, "%s: %s\n", argv[0], err.msg);
	fmnist_net_destroy(net);
	df_ctx_destroy(ctx);
	return rc ? 1 : 0;
}
