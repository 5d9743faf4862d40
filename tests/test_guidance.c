/* Classifier-free guidance as the runtime applies it for every sampler:
 * scale 1 is the conditional output, the legacy setting touches only
 * channels 0..2, learned-variance channels are never guided, and outside
 * the time interval nothing is guided. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include "diffuse/diffuse.h"

enum { N = 2, OUT_C = 8, PRED_C = 4, PLANE = 3, TOTAL = N * OUT_C * PLANE };

static float cond[TOTAL], uncond[TOTAL], out[TOTAL];

static void fill(void)
{
	for (int i = 0; i < TOTAL; i++) {
		cond[i] = 0.5f + 0.25f * (float)(i % 7);
		uncond[i] = -1.0f + 0.125f * (float)(i % 5);
	}
}

static int channel_of(int i) { return (i / PLANE) % OUT_C; }

static void test_scale_one_is_conditional(void **state)
{
	(void)state;
	fill();
	df_guidance g = {1.0, 0.0, 1.0, 0};
	df_guidance_combine(&g, 0.5, cond, uncond, out, N, OUT_C, PRED_C, PLANE);
	for (int i = 0; i < TOTAL; i++)
		assert_true(out[i] == cond[i]);
}

static void test_all_prediction_channels(void **state)
{
	(void)state;
	fill();
	df_guidance g = {4.0, 0.0, 1.0, 0};
	df_guidance_combine(&g, 0.5, cond, uncond, out, N, OUT_C, PRED_C, PLANE);
	for (int i = 0; i < TOTAL; i++) {
		float guided = uncond[i] + 4.0f * (cond[i] - uncond[i]);
		if (channel_of(i) < PRED_C)
			assert_float_equal(out[i], guided, 1e-6);
		else
			assert_true(out[i] == cond[i]); /* learned variance: conditional */
	}
}

static void test_legacy_first_three(void **state)
{
	(void)state;
	fill();
	df_guidance g = {4.0, 0.0, 1.0, 3};
	df_guidance_combine(&g, 0.5, cond, uncond, out, N, OUT_C, PRED_C, PLANE);
	for (int i = 0; i < TOTAL; i++) {
		if (channel_of(i) < 3)
			assert_float_equal(out[i], uncond[i] + 4.0f * (cond[i] - uncond[i]), 1e-6);
		else
			assert_true(out[i] == cond[i]);
	}
}

static void test_interval(void **state)
{
	(void)state;
	fill();
	df_guidance g = {4.0, 0.1, 0.7, 0};
	df_guidance_combine(&g, 0.8, cond, uncond, out, N, OUT_C, PRED_C, PLANE);
	for (int i = 0; i < TOTAL; i++)
		assert_true(out[i] == cond[i]);
	df_guidance_combine(&g, 0.7, cond, uncond, out, N, OUT_C, PRED_C, PLANE);
	assert_float_equal(out[0], uncond[0] + 4.0f * (cond[0] - uncond[0]), 1e-6);
}

static void test_in_place(void **state)
{
	(void)state;
	fill();
	float copy[TOTAL];
	memcpy(copy, cond, sizeof copy);
	df_guidance g = {2.0, 0.0, 1.0, 0};
	df_guidance_combine(&g, 0.5, copy, uncond, copy, N, OUT_C, PRED_C, PLANE);
	assert_float_equal(copy[0], uncond[0] + 2.0f * (cond[0] - uncond[0]), 1e-6);
	assert_true(copy[PRED_C * PLANE] == cond[PRED_C * PLANE]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scale_one_is_conditional),
		cmocka_unit_test(test_all_prediction_channels),
		cmocka_unit_test(test_legacy_first_three),
		cmocka_unit_test(test_interval),
		cmocka_unit_test(test_in_place),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
