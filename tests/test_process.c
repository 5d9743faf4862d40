/* The noise process: DDPM check values from DiT's code, SiT's VP values,
 * respacing lists, conversions, time grids. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include "diffuse/process.h"

#define T_STEPS 1000

static df_process *make_ddpm(const char *schedule, df_prediction pred, int learned)
{
	double betas[T_STEPS];
	df_error err;
	df_process *p = NULL;
	assert_int_equal(df_ddpm_betas(schedule, T_STEPS, betas, &err), 0);
	assert_int_equal(df_process_create_discrete(&p, "ddpm", betas, T_STEPS, pred, learned, &err), 0);
	return p;
}

static df_process *make_path(df_path path, df_prediction pred)
{
	df_error err;
	df_process *p = NULL;
	assert_int_equal(df_process_create_path(&p, path, pred, -1, -1, &err), 0);
	return p;
}

static void assert_rel(double got, double want, double rel)
{
	if (!(fabs(got - want) <= rel * fabs(want))) {
		print_error("got %.9g, want %.9g (relative tolerance %g)\n", got, want, rel);
		fail();
	}
}

static void test_linear_schedule_check_values(void **state)
{
	(void)state;
	df_process *p = make_ddpm("linear", DF_PRED_EPS, 0);
	const double *abar = df_process_alphas_cumprod(p);
	assert_rel(abar[0], 0.9999, 1e-12);
	assert_rel(abar[499], 0.0785872, 1e-6);
	assert_rel(abar[999], 4.03583e-5, 1e-5);
	assert_rel(sqrt(abar[999]), 0.00635282, 1e-5);

	int all[T_STEPS];
	for (int i = 0; i < T_STEPS; i++)
		all[i] = i;
	static df_ddpm_step steps[T_STEPS];
	df_error err;
	assert_int_equal(df_ddpm_steps(p, all, T_STEPS, steps, &err), 0);
	assert_rel(steps[1].post_var, 5.45319e-5, 1e-5);
	assert_rel(steps[0].post_logvar, -9.816725, 1e-6);
	assert_rel(steps[1].post_logvar, -9.816725, 1e-6);
	assert_rel(steps[999].post_var, 0.0199999835, 1e-8);
	assert_true(steps[0].post_var == 0.0);
	assert_rel(steps[0].beta, 1e-4, 1e-12);
	assert_rel(steps[999].beta, 0.02, 1e-9);
	/* the posterior mean of x0 at t = 0 is x0 itself */
	assert_rel(steps[0].coef_x0, 1.0, 1e-12);
	assert_true(fabs(steps[0].coef_xt) < 1e-15);
	/* learned range: v = -1 is the clipped posterior, v = +1 is beta */
	assert_rel(df_ddpm_learned_logvar(&steps[500], -1), steps[500].post_logvar, 1e-12);
	assert_rel(df_ddpm_learned_logvar(&steps[500], 1), log(steps[500].beta), 1e-12);
	df_process_destroy(p);
}

static void test_cosine_schedule(void **state)
{
	(void)state;
	double betas[T_STEPS];
	df_error err;
	assert_int_equal(df_ddpm_betas("cosine", T_STEPS, betas, &err), 0);
	assert_rel(betas[T_STEPS - 1], 0.999, 1e-12); /* the cap */
	double cum = 1;
	for (int i = 0; i < T_STEPS; i++) {
		assert_true(betas[i] > 0 && betas[i] <= 0.999);
		cum *= 1 - betas[i];
	}
	/* abar(i) = f(i + 1) / f(0) with f(s) = cos^2((s / T + 0.008) / 1.008 pi / 2), before the cap */
	double f0 = cos(0.008 / 1.008 * M_PI / 2), f500 = cos((0.5 + 0.008) / 1.008 * M_PI / 2);
	double abar = 1;
	for (int i = 0; i < 500; i++)
		abar *= 1 - betas[i];
	assert_rel(abar, (f500 * f500) / (f0 * f0), 1e-9);
	assert_int_equal(df_ddpm_betas("quadratic", T_STEPS, betas, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "quadratic"));
}

static void test_respacing_check_values(void **state)
{
	(void)state;
	int idx[T_STEPS], n;
	df_error err;
	assert_int_equal(df_ddpm_respace(T_STEPS, "250", idx, T_STEPS, &n, &err), 0);
	assert_int_equal(n, 250);
	const int head250[] = {0, 4, 8, 12, 16, 20, 24, 28, 32, 36};
	const int tail250[] = {983, 987, 991, 995, 999};
	for (int k = 0; k < 10; k++)
		assert_int_equal(idx[k], head250[k]);
	for (int k = 0; k < 5; k++)
		assert_int_equal(idx[245 + k], tail250[k]);

	df_process *p = make_ddpm("linear", DF_PRED_EPS, 1);
	df_ddpm_step steps[250];
	assert_int_equal(df_ddpm_steps(p, idx, n, steps, &err), 0);
	assert_rel(steps[0].beta, 1e-4, 1e-9);
	assert_rel(steps[1].beta, 5.99066e-4, 1e-5);
	assert_rel(steps[2].beta, 9.17603e-4, 1e-5);
	assert_rel(steps[249].beta, 0.0775193, 1e-5);
	assert_int_equal(steps[249].index, 999);
	assert_rel(df_process_model_time(p, steps[249].t), 999, 1e-12);
	assert_rel(df_process_model_time(p, steps[248].t), 995, 1e-12);
	df_process_destroy(p);

	assert_int_equal(df_ddpm_respace(T_STEPS, "100", idx, T_STEPS, &n, &err), 0);
	assert_int_equal(n, 100);
	assert_int_equal(idx[0], 0);
	assert_int_equal(idx[1], 10);
	assert_int_equal(idx[97], 979);
	assert_int_equal(idx[98], 989);
	assert_int_equal(idx[99], 999);

	assert_int_equal(df_ddpm_respace(T_STEPS, "50", idx, T_STEPS, &n, &err), 0);
	assert_int_equal(n, 50);
	const int head50[] = {0, 20, 41, 61, 82, 102};
	for (int k = 0; k < 6; k++)
		assert_int_equal(idx[k], head50[k]);
	assert_int_equal(idx[47], 958);
	assert_int_equal(idx[48], 979);
	assert_int_equal(idx[49], 999);

	assert_int_equal(df_ddpm_respace(T_STEPS, "ddim50", idx, T_STEPS, &n, &err), 0);
	assert_int_equal(n, 50);
	assert_int_equal(idx[1], 20);
	assert_int_equal(idx[49], 980);

	/* sections: 10 steps, "2,3" -> sections of 5: {0, 4} and {5, 7, 9} */
	assert_int_equal(df_ddpm_respace(10, "2,3", idx, 10, &n, &err), 0);
	assert_int_equal(n, 5);
	const int sec[] = {0, 4, 5, 7, 9};
	for (int k = 0; k < 5; k++)
		assert_int_equal(idx[k], sec[k]);

	assert_int_equal(df_ddpm_respace(T_STEPS, "ddim37", idx, T_STEPS, &n, &err), DF_EINVAL);
	assert_int_equal(df_ddpm_respace(T_STEPS, "1001", idx, T_STEPS, &n, &err), DF_EINVAL);
	assert_int_equal(df_ddpm_respace(T_STEPS, "25x", idx, T_STEPS, &n, &err), DF_EINVAL);
	assert_int_equal(df_ddpm_respace(T_STEPS, "", idx, T_STEPS, &n, &err), DF_EINVAL);
}

/* Every spacing, every step count: strictly decreasing, no duplicates,
 * from the top of the interval down to its bottom. */
static void check_grid(const df_process *p, const char *spacing, int steps)
{
	double t[T_STEPS + 1], lo, hi;
	df_error err;
	assert_int_equal(df_process_time_grid(p, spacing, steps, t, &err), 0);
	df_process_interval(p, DF_INTERVAL_SAMPLE, &lo, &hi);
	/* the ddimN stride rule and DiT's rule for 1 step need not reach the last index */
	assert_true(strcmp(spacing, "uniform") ? t[0] <= hi : t[0] == hi);
	assert_true(t[steps] == lo);
	for (int k = 0; k < steps; k++)
		if (!(t[k] > t[k + 1])) {
			print_error("%s %s, %d steps: t[%d] = %.17g, t[%d] = %.17g\n", df_process_name(p), spacing,
			            steps, k, t[k], k + 1, t[k + 1]);
			fail();
		}
}

static void test_time_grids(void **state)
{
	(void)state;
	df_process *ddpm = make_ddpm("linear", DF_PRED_EPS, 0);
	df_process *lin = make_path(DF_PATH_LINEAR, DF_PRED_VELOCITY);
	df_process *vp = make_path(DF_PATH_VP, DF_PRED_SCORE);
	df_error err;
	for (int steps = 1; steps <= T_STEPS; steps++) {
		check_grid(ddpm, "ddpm", steps);
		check_grid(ddpm, "uniform", steps);
		check_grid(lin, "uniform", steps);
		check_grid(vp, "auto", steps);
		check_grid(vp, "logsnr", steps);
		check_grid(lin, "logsnr", steps);
		check_grid(ddpm, "logsnr", steps);
		int idx[T_STEPS], n;
		char spec[16];
		snprintf(spec, sizeof spec, "ddim%d", steps);
		if (df_ddpm_respace(T_STEPS, spec, idx, T_STEPS, &n, &err) == 0)
			check_grid(ddpm, "ddim", steps);
	}
	/* the network sees the original indices on a respaced grid */
	double t[251];
	assert_int_equal(df_process_time_grid(ddpm, "ddpm", 250, t, &err), 0);
	assert_rel(df_process_model_time(ddpm, t[0]), 999, 1e-12);
	assert_rel(df_process_model_time(ddpm, t[249]), 0, 1e-12);
	assert_int_equal(df_process_time_grid(lin, "ddpm", 10, t, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "continuous"));
	assert_int_equal(df_process_time_grid(ddpm, "ddpm", 1001, t, &err), DF_EINVAL);
	assert_int_equal(df_process_time_grid(ddpm, "karras", 10, t, &err), DF_EINVAL);
	df_process_destroy(ddpm);
	df_process_destroy(lin);
	df_process_destroy(vp);
}

static void test_vp_check_values(void **state)
{
	(void)state;
	df_process *p = make_path(DF_PATH_VP, DF_PRED_VELOCITY);
	df_coeffs c;
	/* SiT's code times 0, 0.5 and 1 - 1e-5 are framework times 1, 0.5, 1e-5 */
	df_process_coeffs(p, 1.0, &c);
	assert_rel(c.alpha, 0.0065715865, 1e-7);
	assert_rel(c.sigma, 0.99997841, 1e-7);
	df_process_coeffs(p, 0.5, &c);
	assert_rel(c.alpha, 0.28118288, 1e-7);
	assert_rel(c.sigma, 0.9596542, 1e-6);
	df_process_coeffs(p, 1e-5, &c);
	assert_rel(c.alpha, 0.9999995, 1e-7);
	assert_rel(c.sigma, 0.0010004971, 1e-6);
	/* VP's w_SBDM is beta(t) / 2 */
	df_process_coeffs(p, 0.3, &c);
	assert_rel(df_coeffs_w_sbdm(&c), 0.5 * (0.1 + 0.3 * 19.9), 1e-12);
	df_process_destroy(p);

	p = make_path(DF_PATH_LINEAR, DF_PRED_SCORE);
	df_process_coeffs(p, 0.3, &c);
	assert_rel(df_coeffs_w_sbdm(&c), 0.3 / 0.7, 1e-12);
	df_process_destroy(p);
}

/* The derivatives published are those of alpha and sigma. */
static void test_derivatives(void **state)
{
	(void)state;
	df_process *ps[] = {make_path(DF_PATH_LINEAR, DF_PRED_VELOCITY), make_path(DF_PATH_GVP, DF_PRED_VELOCITY),
	                    make_path(DF_PATH_VP, DF_PRED_VELOCITY), make_ddpm("linear", DF_PRED_EPS, 0)};
	const double ts[] = {0.1234, 0.5003, 0.7771}; /* off the DDPM nodes, where the slope jumps */
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 3; j++) {
			df_coeffs c, a, b;
			double h = 1e-7;
			df_process_coeffs(ps[i], ts[j], &c);
			df_process_coeffs(ps[i], ts[j] - h, &a);
			df_process_coeffs(ps[i], ts[j] + h, &b);
			assert_rel(c.dalpha, (b.alpha - a.alpha) / (2 * h), 1e-5);
			assert_rel(c.dsigma, (b.sigma - a.sigma) / (2 * h), 1e-5);
			assert_true(fabs(df_process_model_time(ps[i], ts[j]) -
			                 (i == 3 ? ts[j] * 1000 - 1 : 1 - ts[j])) < 1e-9);
		}
	for (int i = 0; i < 4; i++)
		df_process_destroy(ps[i]);
}

static void test_intervals(void **state)
{
	(void)state;
	double lo, hi;
	df_process *p = make_path(DF_PATH_LINEAR, DF_PRED_VELOCITY);
	df_process_interval(p, DF_INTERVAL_TRAIN, &lo, &hi);
	assert_true(lo == 0 && hi == 1);
	df_process_destroy(p);
	p = make_path(DF_PATH_GVP, DF_PRED_SCORE);
	df_process_interval(p, DF_INTERVAL_SAMPLE, &lo, &hi);
	assert_true(lo == 1e-3 && hi == 1 - 1e-3);
	df_process_destroy(p);
	p = make_path(DF_PATH_VP, DF_PRED_VELOCITY);
	df_process_interval(p, DF_INTERVAL_TRAIN, &lo, &hi);
	assert_true(lo == 1e-5 && hi == 1);
	df_process_interval(p, DF_INTERVAL_SAMPLE, &lo, &hi);
	assert_true(lo == 1e-3 && hi == 1);
	df_process_destroy(p);
	df_error err;
	assert_int_equal(df_process_create_path(&p, DF_PATH_LINEAR, DF_PRED_EPS, 0.2, 0.1, &err), 0);
	df_process_interval(p, DF_INTERVAL_TRAIN, &lo, &hi);
	assert_true(lo == 0.2 && hi == 0.8);
	df_process_destroy(p);
	assert_int_equal(df_process_create_path(&p, DF_PATH_LINEAR, DF_PRED_EPS, 0.7, 0.1, &err), DF_EINVAL);
	assert_null(p);
	p = make_ddpm("linear", DF_PRED_EPS, 1);
	df_process_interval(p, DF_INTERVAL_TRAIN, &lo, &hi);
	assert_true(lo == 1e-3 && hi == 1);
	assert_int_equal(df_process_out_channels(p, 4), 8);
	df_process_destroy(p);
}

static const df_prediction all_preds[] = {DF_PRED_EPS, DF_PRED_X0, DF_PRED_VELOCITY, DF_PRED_SCORE};

/* From known (x0, eps), every prediction type converts to every other. */
static void test_conversions(void **state)
{
	(void)state;
	df_process *ps[] = {make_path(DF_PATH_LINEAR, DF_PRED_VELOCITY), make_path(DF_PATH_GVP, DF_PRED_VELOCITY),
	                    make_path(DF_PATH_VP, DF_PRED_VELOCITY), make_ddpm("linear", DF_PRED_EPS, 0),
	                    make_ddpm("cosine", DF_PRED_EPS, 0)};
	const double ts[] = {0.01, 0.3, 0.6, 0.99};
	const double x0 = 0.7, eps = -1.3;
	df_error err;
	for (int i = 0; i < 5; i++)
		for (int j = 0; j < 4; j++) {
			df_coeffs c;
			df_process_coeffs(ps[i], ts[j], &c);
			double x = c.alpha * x0 + c.sigma * eps;
			for (int a = 0; a < 4; a++)
				for (int b = 0; b < 4; b++) {
					double pa, qa, pb, qb, cx, cm;
					df_coeffs_target(&c, all_preds[a], &pa, &qa);
					df_coeffs_target(&c, all_preds[b], &pb, &qb);
					double from = pa * x0 + qa * eps, want = pb * x0 + qb * eps;
					assert_int_equal(df_process_convert_coeffs(ps[i], ts[j], all_preds[a], all_preds[b],
					                                           &cx, &cm, &err), 0);
					double got = cx * x + cm * from;
					if (!(fabs(got - want) <= 1e-9 * (1 + fabs(want)))) {
						print_error("%s t=%g %s->%s: %.12g vs %.12g\n", df_process_name(ps[i]), ts[j],
						            df_prediction_name(all_preds[a]), df_prediction_name(all_preds[b]),
						            got, want);
						fail();
					}
					/* and back: the round trip is the identity */
					double cx2, cm2;
					assert_int_equal(df_process_convert_coeffs(ps[i], ts[j], all_preds[b], all_preds[a],
					                                           &cx2, &cm2, &err), 0);
					double back = cx2 * x + cm2 * got;
					assert_true(fabs(back - from) <= 1e-9 * (1 + fabs(from)));
				}
		}
	for (int i = 0; i < 5; i++)
		df_process_destroy(ps[i]);
}

/* Hand-written targets, independent of the row algebra: SiT's velocity
 * points from noise to data, the score is -eps / sigma. */
static void test_conversion_hand_values(void **state)
{
	(void)state;
	df_process *lin = make_path(DF_PATH_LINEAR, DF_PRED_VELOCITY);
	df_process *gvp = make_path(DF_PATH_GVP, DF_PRED_VELOCITY);
	df_error err;
	const double x0 = 0.7, eps = -1.3, t = 0.3;
	float x = (float)((1 - t) * x0 + t * eps), v = (float)(x0 - eps), out;
	assert_int_equal(df_process_convert(lin, t, DF_PRED_X0, DF_PRED_VELOCITY, &x, &(float){(float)x0}, &out, 1,
	                                    &err), 0);
	assert_rel(out, v, 1e-6);
	assert_int_equal(df_process_convert(lin, t, DF_PRED_VELOCITY, DF_PRED_SCORE, &x, &v, &out, 1, &err), 0);
	assert_rel(out, -eps / t, 1e-6);
	/* SiT code time tau = 1 - t: alpha = sin(pi tau / 2), u = alpha'(tau) x_data + sigma'(tau) noise */
	double tau = 1 - t, h = M_PI / 2;
	float xg = (float)(sin(h * tau) * x0 + cos(h * tau) * eps);
	float ug = (float)(h * cos(h * tau) * x0 - h * sin(h * tau) * eps);
	assert_int_equal(df_process_convert(gvp, t, DF_PRED_EPS, DF_PRED_VELOCITY, &xg, &(float){(float)eps}, &out,
	                                    1, &err), 0);
	assert_rel(out, ug, 1e-6);
	/* singular: a score where sigma = 0, x0 from eps where alpha = 0 */
	double cx, cm;
	assert_int_equal(df_process_convert_coeffs(lin, 0.0, DF_PRED_SCORE, DF_PRED_X0, &cx, &cm, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "singular"));
	assert_int_equal(df_process_convert_coeffs(lin, 1.0, DF_PRED_EPS, DF_PRED_X0, &cx, &cm, &err), DF_EINVAL);
	/* ... but the velocity converts everywhere on Linear */
	assert_int_equal(df_process_convert_coeffs(lin, 1.0, DF_PRED_VELOCITY, DF_PRED_X0, &cx, &cm, &err), 0);
	assert_int_equal(df_process_convert_coeffs(lin, 0.0, DF_PRED_VELOCITY, DF_PRED_EPS, &cx, &cm, &err), 0);
	df_process_destroy(lin);
	df_process_destroy(gvp);
}

static void test_names_and_errors(void **state)
{
	(void)state;
	for (int a = 0; a < 4; a++)
		assert_int_equal(df_prediction_from_name(df_prediction_name(all_preds[a])), all_preds[a]);
	assert_int_equal(df_prediction_from_name("noise"), DF_PRED_EPS);
	assert_int_equal(df_prediction_from_name("v"), 0);
	double betas[3] = {0.1, 1.5, 0.2};
	df_process *p = NULL;
	df_error err;
	assert_int_equal(df_process_create_discrete(&p, "x", betas, 3, DF_PRED_EPS, 0, &err), DF_EINVAL);
	assert_non_null(strstr(err.msg, "beta[1]"));
	assert_int_equal(df_process_create_path(&p, (df_path)9, DF_PRED_EPS, -1, -1, &err), DF_EINVAL);
	df_process *lin = make_path(DF_PATH_LINEAR, DF_PRED_VELOCITY);
	df_ddpm_step s;
	int idx = 0;
	assert_int_equal(df_ddpm_steps(lin, &idx, 1, &s, &err), DF_EINVAL);
	assert_null(df_process_betas(lin));
	assert_int_equal(df_process_T(lin), 0);
	df_process_destroy(lin);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_linear_schedule_check_values),
		cmocka_unit_test(test_cosine_schedule),
		cmocka_unit_test(test_respacing_check_values),
		cmocka_unit_test(test_time_grids),
		cmocka_unit_test(test_vp_check_values),
		cmocka_unit_test(test_derivatives),
		cmocka_unit_test(test_intervals),
		cmocka_unit_test(test_conversions),
		cmocka_unit_test(test_conversion_hand_values),
		cmocka_unit_test(test_names_and_errors),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
