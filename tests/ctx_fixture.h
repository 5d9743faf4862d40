/* One CPU context for all the tests of a binary, as CMocka group fixtures.
 * run_on_one_and_three_threads() runs a table twice: on one thread (the
 * serial paths) and on three (uneven splits, more threads than tasks in
 * the small cases). */
#ifndef DIFFUSE_TESTS_CTX_FIXTURE_H
#define DIFFUSE_TESTS_CTX_FIXTURE_H

#include "diffuse/tensor.h"

static df_ctx *ctx;

static int ctx_setup_threads(int threads)
{
	df_error err;
	return df_ctx_create(&ctx, "cpu", threads, &err);
}

static int ctx_setup_one(void **state)
{
	(void)state;
	return ctx_setup_threads(1);
}

static int ctx_setup_three(void **state)
{
	(void)state;
	return ctx_setup_threads(3);
}

static int ctx_teardown(void **state)
{
	(void)state;
	df_ctx_destroy(ctx);
	return 0;
}

#define run_on_one_and_three_threads(tests)                                                              \
	(cmocka_run_group_tests_name("one thread", tests, ctx_setup_one, ctx_teardown) +                 \
	 cmocka_run_group_tests_name("three threads", tests, ctx_setup_three, ctx_teardown))

#endif
