/* Telling df_stage_options.output what a stage wrote (runtime.h). */
#include "config.h"
#include "stage_private.h"

void dfr_tell_samples(const df_stage_options *o, const dfr_model *m, df_weight_set which, const char *path,
                      int64_t count, int64_t nfe)
{
	if (!o || !o->output)
		return;
	df_guidance g;
	dfr_guidance_from_pipeline(m->pipeline, &g);
	df_stage_output out = {
		.struct_size = sizeof out,
		.kind = "samples",
		.path = path,
		.step = m->step,
		.count = count,
		.weights = which,
		.sampler = m->sampler_name,
		.nfe = nfe,
		/* an unconditional model has nothing to guide */
		.cfg_scale = m->data.num_classes > 0 ? g.scale : 1.0,
		.cfg_lo = g.t_lo,
		.cfg_hi = g.t_hi,
		.seed = m->seed,
	};
	o->output(o->ctx, &out);
}

void dfr_tell_checkpoint(const df_stage_options *o, const char *path, int64_t step)
{
	if (!o || !o->output)
		return;
	df_stage_output out = {.struct_size = sizeof out, .kind = "checkpoint", .path = path, .step = step};
	o->output(o->ctx, &out);
}
