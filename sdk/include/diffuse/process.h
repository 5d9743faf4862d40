/* The noise process that objectives and samplers agree on.
 *
 * One time convention for the whole framework:
 *
 *     t in [0, 1],  t = 0 is data,  t = 1 is noise,
 *     x_t = alpha(t) * x0 + sigma(t) * eps,   eps ~ N(0, I).
 *
 * DDPM is the discrete case: index i = 0..T-1 of the original schedule sits
 * at t = (i + 1) / T with alpha = sqrt(abar_i), sigma = sqrt(1 - abar_i);
 * between the nodes (and from t = 0, where abar = 1) log abar is linear in
 * t, so continuous samplers run on it too. SiT's Linear, GVP and VP paths
 * are continuous; SiT's own code runs time the other way (tau = 1 - t) and
 * its networks receive tau, which model_time() hides.
 *
 * Prediction types, i.e. what the network outputs:
 *   eps       the noise eps;
 *   x0        the clean data;
 *   velocity  SiT's velocity, pointing from noise to data:
 *             v = dx/dtau = -(alpha'(t) x0 + sigma'(t) eps), so the
 *             probability-flow ODE in framework time is dx/dt = -v;
 *   score     grad_x log p_t(x) = -E[eps | x] / sigma.
 * Every one is a linear function of (x0, eps) at a given t, so any type
 * converts to any other given x_t (df_process_convert_coeffs).
 *
 * Objectives create the process (df_process_create_*) and keep it alive;
 * samplers read it. Schedule arithmetic is double precision. */
#ifndef DIFFUSE_PROCESS_H
#define DIFFUSE_PROCESS_H

#include <stddef.h>
#include <stdint.h>
#include "diffuse/error.h"
#include "diffuse/plugin.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum df_prediction {
	DF_PRED_EPS = 1,
	DF_PRED_X0 = 2,
	DF_PRED_VELOCITY = 3,
	DF_PRED_SCORE = 4,
} df_prediction;

/* "eps", "x0", "velocity", "score"; NULL for an unknown value. */
const char *df_prediction_name(df_prediction pred);
/* The value for a name above (also "noise" = eps), or 0. */
df_prediction df_prediction_from_name(const char *name);

typedef enum df_process_kind {
	DF_PROCESS_DISCRETE = 1,   /* a DDPM schedule of T steps */
	DF_PROCESS_CONTINUOUS = 2, /* an interpolant path on [0, 1] */
} df_process_kind;

typedef enum df_path {
	DF_PATH_LINEAR = 1, /* alpha = 1 - t, sigma = t */
	DF_PATH_GVP = 2,    /* alpha = cos(pi t / 2), sigma = sin(pi t / 2) */
	DF_PATH_VP = 3,     /* SiT's VP-SDE path, beta from 0.1 to 20 */
} df_path;

/* alpha, sigma and their derivatives d/dt (framework time) at one t. */
typedef struct df_coeffs {
	double t;
	double alpha, sigma;
	double dalpha, dsigma;
} df_coeffs;

/* ------------------------------------------------------------------ */
/* Creating processes (objectives do this). */

/* The DDPM beta schedules as DiT's code builds them, in double:
 *   "linear": linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T);
 *   "cosine" (squaredcos_cap_v2): 1 - abar(i + 1) / abar(i), capped at 0.999,
 *            abar(s) = cos^2((s / T + 0.008) / 1.008 * pi / 2). */
int df_ddpm_betas(const char *schedule, int T, double *betas, df_error *err);

/* A discrete process over betas[0..T). learned_variance: the model also
 * outputs C channels of DiT's learned-range interpolation value after its
 * C prediction channels (2C in all). */
int df_process_create_discrete(df_process **p, const char *name, const double *betas, int T,
                               df_prediction pred, int learned_variance, df_error *err);

/* A SiT path. train_eps and sample_eps < 0 take SiT's defaults (VP: 1e-5
 * and 1e-3; Linear and GVP: 0 for velocity, 1e-3 otherwise). */
int df_process_create_path(df_process **p, df_path path, df_prediction pred,
                           double train_eps, double sample_eps, df_error *err);

void df_process_destroy(df_process *p);

/* ------------------------------------------------------------------ */
/* What samplers read. */

df_process_kind df_process_get_kind(const df_process *p);
/* e.g. "ddpm-linear", "linear", "gvp", "vp". */
const char *df_process_name(const df_process *p);
df_prediction df_process_prediction(const df_process *p);
/* The SiT path, or 0 for a discrete process. */
df_path df_process_path(const df_process *p);
/* 1 when the model output carries DiT's learned-range variance channels. */
int df_process_learned_variance(const df_process *p);
/* Model output channels for data of `channels`: 2C with learned variance. */
int df_process_out_channels(const df_process *p, int channels);

/* Fills c at t (t is clamped to [0, 1]). */
void df_process_coeffs(const df_process *p, double t, df_coeffs *c);

/* What the network receives for framework time t: DDPM the schedule index
 * t * T - 1 (the ORIGINAL index, also after respacing: 999, 995, ...);
 * SiT paths 1 - t. */
double df_process_model_time(const df_process *p, double t);

typedef enum df_interval {
	DF_INTERVAL_TRAIN = 1,  /* where training draws t */
	DF_INTERVAL_SAMPLE = 2, /* where samplers integrate: from hi down to lo */
} df_interval;

/* The interval in framework time (SiT's eps rules, §4, mirrored):
 *   VP: train [train_eps, 1], sample [sample_eps, 1];
 *   Linear/GVP, velocity: [0, 1];
 *   Linear/GVP, other predictions: [eps, 1 - eps];
 *   DDPM: [1/T, 1] for training (the index grid), [0, 1] for sampling. */
void df_process_interval(const df_process *p, df_interval which, double *lo, double *hi);
double df_process_train_eps(const df_process *p);
double df_process_sample_eps(const df_process *p);

/* The smallest t at which the model may be evaluated (DDPM: 1/T, index 0;
 * paths: 0). A sampler step that ends below it (t = 0 on DDPM) is taken as
 * the denoised estimate x0 at the step's start. */
double df_process_t_min(const df_process *p);

/* SiT's w_SBDM(t) = sigma^2 * (-alpha'/alpha) + sigma * sigma' (framework
 * derivatives): the diffusion that makes the reverse SDE exact. */
double df_coeffs_w_sbdm(const df_coeffs *c);

/* ------------------------------------------------------------------ */
/* Converting model outputs. */

/* cx, cm such that to = cx * x_t + cm * out, where out is a model output
 * of type `from` at time t. Fails (DF_EINVAL) where the conversion is
 * singular, e.g. a score at sigma = 0 or x0 from eps at alpha = 0. */
int df_process_convert_coeffs(const df_process *p, double t, df_prediction from, df_prediction to,
                              double *cx, double *cm, df_error *err);
/* The same on host arrays of n floats: dst = cx * x + cm * out. dst may be out. */
int df_process_convert(const df_process *p, double t, df_prediction from, df_prediction to,
                       const float *x, const float *out, float *dst, int64_t n, df_error *err);
/* The model output of type `pred` that corresponds to (x0, eps) at t. */
void df_coeffs_target(const df_coeffs *c, df_prediction pred, double *c_x0, double *c_eps);

/* ------------------------------------------------------------------ */
/* Discrete (DDPM) schedules; these fail on a continuous process. */

/* T, or 0 for a continuous process. */
int df_process_T(const df_process *p);
/* beta_i and abar_i, i = 0..T-1, or NULL. */
const double *df_process_betas(const df_process *p);
const double *df_process_alphas_cumprod(const df_process *p);
/* Framework time of index i: (i + 1) / T. */
double df_process_index_time(const df_process *p, int index);

/* DiT's timestep respacing of T steps: spec "250" or "10,20,30" (equal
 * sections, each strided with round-half-even) or "ddim50" (the unique
 * integer stride giving 50 steps). Writes the kept ORIGINAL indices in
 * increasing order to indices[0..*n), at most max of them. */
int df_ddpm_respace(int T, const char *spec, int *indices, int max, int *n, df_error *err);

/* One step of a (possibly respaced) DDPM: the quantities of §3 of the
 * Gaussian-diffusion spec recomputed from beta'_k = 1 - abar_k / abar_{k-1}
 * over the kept indices. */
typedef struct df_ddpm_step {
	int index;                /* original index: the network's timestep */
	double t;                 /* framework time (index + 1) / T */
	double abar, abar_prev;   /* abar_prev = 1 for the first kept index */
	double beta;              /* respaced beta' */
	double post_var;          /* beta'(1 - abar_prev)/(1 - abar), 0 at k = 0 */
	double post_logvar;       /* log post_var, entry 0 replaced by entry 1 */
	double coef_x0, coef_xt;  /* posterior mean = coef_x0 * x0 + coef_xt * x_t */
} df_ddpm_step;

/* steps[k] for the kept indices[0..n) (increasing). */
int df_ddpm_steps(const df_process *p, const int *indices, int n, df_ddpm_step *steps, df_error *err);
/* DiT's learned range: log variance for interpolation value v (not clamped). */
double df_ddpm_learned_logvar(const df_ddpm_step *s, double v);

/* ------------------------------------------------------------------ */
/* Time grids for samplers: t[0] = hi > t[1] > ... > t[steps] = lo of the
 * sampling interval, each point computed from its own index.
 *   "uniform": linspace(hi, lo, steps + 1);
 *   "logsnr":  uniform in log(alpha / sigma) (capped at +-10 where alpha or
 *              sigma vanish) from hi down to lo, or to t_min then t = 0
 *              on DDPM schedules; the grid DPM-Solver is made for;
 *   "ddpm":    DiT's respacing to `steps` (discrete processes), then t = 0;
 *   "ddim":    the "ddimN" stride rule (discrete processes), then t = 0;
 *   "auto":    "ddpm" on discrete processes, "uniform" otherwise. */
int df_process_time_grid(const df_process *p, const char *spacing, int steps, double *t, df_error *err);

/* ------------------------------------------------------------------ */
/* What objectives share. */

/* Training draws for sample i of a batch, keyed by (seed, index[i], step)
 * so they do not depend on the batch's composition: u[i] uniform in (0, 1)
 * at index[i] on DF_STREAM_TRAIN_TIME, and eps[i * dim .. + dim) standard
 * normals at index[i] * dim + j on DF_STREAM_TRAIN_NOISE. Either output
 * may be NULL. */
void df_process_train_draws(uint64_t seed, uint64_t step, const int64_t *index, int64_t n, int64_t dim,
                            double *u, float *eps);

/* Per-sample scalars v[0..n) as an (n, 1, ..., 1) tensor of ndim dims on
 * g, which broadcasts against (n, ...) tensors; NULL (and the error on g)
 * on failure. */
df_tensor *df_per_sample_tensor(df_graph *g, const float *v, int64_t n, int ndim);

/* Philox streams used by the process code, so no two uses collide. */
#define DF_STREAM_TRAIN_TIME 0x74696d65u   /* objective: t per sample */
#define DF_STREAM_TRAIN_NOISE 0x6e6f6973u  /* objective: eps per sample */
#define DF_STREAM_SAMPLER 0x73616d70u      /* samplers: noise of stochastic steps */

#ifdef __cplusplus
}
#endif
#endif
