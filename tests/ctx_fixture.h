/* One CPU context for all the tests of a binary, as CMocka group fixtures:
 * cmocka_run_group_tests(tests, ctx_setup, ctx_teardown). */
#ifndef DIFFUSE_TESTS_CTX_FIXTURE_H
#define DIFFUSE_TESTS_CTX_FIXTURE_H

#include "diffuse/tensor.h"

static df_ctx *ctx;

static int ctx_setup(void **state)
{
	(void)state;
	df_error err;
	return df_ctx_create(&ctx, "cpu", 0, &err);
}

static int ctx_teardown(void **state)
{
	(void)state;
	df_ctx_destroy(ctx);
	return 0;
}

#endif
