/* The `cross-entropy` objective: trains a classifier backbone (such as
 * fmnist-net) on the batch labels. No noise: the model sees the clean
 * images at t = 0 and its output (N, classes) is scored against the labels.
 * The process it publishes is only there so the runtime's bookkeeping has
 * one; a classifier pipeline has no sampler. */
#include "config.h"
#include <stdlib.h>
#include <string.h>
#include "diffuse/plugin.h"
#include "diffuse/process.h"
#include "diffuse/tensor.h"

typedef struct ce_objective {
	df_process *process;
} ce_objective;

static int ce_create(const void *settings, df_ctx *ctx, void **self, df_error *err)
{
	(void)settings;
	(void)ctx;
	ce_objective *o = calloc(1, sizeof *o);
	if (!o)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int rc = df_process_create_path(&o->process, DF_PATH_LINEAR, DF_PRED_X0, -1, -1, err);
	if (rc) {
		free(o);
		return rc;
	}
	*self = o;
	return DF_OK;
}

static void ce_destroy(void *self)
{
	ce_objective *o = self;
	if (o)
		df_process_destroy(o->process);
	free(o);
}

static const df_process *ce_process(void *self)
{
	return ((ce_objective *)self)->process;
}

static int ce_out_channels(void *self, int channels)
{
	(void)self;
	return channels;
}

static int ce_loss(void *self, df_graph *g, const df_loss_batch *batch, const df_model_call *model, df_tensor **loss,
                   df_error *err)
{
	(void)self;
	if (!batch->y)
		return df_error_set(err, DF_EINVAL, "needs labels: the dataset is unlabelled");
	int64_t n = batch->x0->shape[0];
	df_tensor *t = df_tensor_zeros(g, DF_SHAPE(n));
	df_tensor *logits = NULL;
	int rc = model->forward(model->ctx, g, batch->x0, t, 0, NULL, &logits, err);
	if (rc)
		return rc;
	if (logits->ndim != 2 || logits->shape[0] != n)
		return df_error_set(err, DF_EINVAL, "the backbone must return logits (N, classes), not a %d-dim tensor",
		                    logits->ndim);
	for (int64_t i = 0; i < n; i++)
		if (batch->y[i] < 0 || batch->y[i] >= logits->shape[1])
			return df_error_set(err, DF_EINVAL,
			                    "label %d is not one of the %lld classes (the null class of "
			                    "train.class_dropout? set it to 0)",
			                    (int)batch->y[i], (long long)logits->shape[1]);
	df_tensor *each = df_cross_entropy(g, logits, batch->y);
	*loss = df_mean(g, each);
	if ((rc = df_graph_status(g, err)))
		return rc;
	if (batch->loss_out && (rc = df_tensor_read(each, batch->loss_out, err)))
		return rc;
	if (batch->t_out)
		memset(batch->t_out, 0, (size_t)n * sizeof *batch->t_out);
	return DF_OK;
}

static const df_objective_vtable ce_vtable = {
	sizeof(df_objective_vtable), ce_create, ce_destroy, ce_process, ce_out_channels, ce_loss, NULL, NULL,
};

static const df_component ce_component = {
	sizeof(df_component), DF_KIND_OBJECTIVE, "cross-entropy",
	"classifier training: mean cross-entropy of the backbone's logits against the batch labels (no noise)",
	NULL, 0, &ce_vtable,
};

DF_PLUGIN_DEFINE("cross-entropy", PACKAGE_VERSION, "MIT", &ce_component)
