/* A training step allocates nothing on the heap after the first: the graph
 * arena, the data buffers and the optimiser state are all made once. The
 * allocator is interposed here (glibc's __libc_* entry points do the real
 * work) and counted between the steps the progress callback reports. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "diffuse/diffuse.h"
#include "testutil.h"

#if defined(__SANITIZE_ADDRESS__)
#define TRAIN_ALLOC_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TRAIN_ALLOC_ASAN 1
#endif
#endif

static volatile long allocations;

#ifndef TRAIN_ALLOC_ASAN
extern void *__libc_malloc(size_t size);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t size);
extern void *__libc_memalign(size_t align, size_t size);

void *malloc(size_t size)
{
	allocations++;
	return __libc_malloc(size);
}

void *calloc(size_t n, size_t size)
{
	allocations++;
	return __libc_calloc(n, size);
}

void *realloc(void *p, size_t size)
{
	allocations++;
	return __libc_realloc(p, size);
}

int posix_memalign(void **out, size_t align, size_t size)
{
	allocations++;
	*out = __libc_memalign(align, size);
	return *out ? 0 : 12;
}

void *aligned_alloc(size_t align, size_t size)
{
	allocations++;
	return __libc_memalign(align, size);
}
#endif

typedef struct counts {
	long at_step[64];
	int64_t last;
} counts;

static void on_step(void *ctx, const df_train_report *r)
{
	counts *c = ctx;
	if (r->step < 64)
		c->at_step[r->step] = allocations;
	c->last = r->step;
}

static void test_no_allocation_per_step(void **state)
{
	(void)state;
	char *dir = make_temp_dir();
	char *cfg = path_join(dir, "alloc.cfg");
	FILE *f = fopen(cfg, "w");
	assert_non_null(f);
	fprintf(f, "seed = 3; threads = 1;\n"
	           "dataset = { plugin = \"shapes\"; size = 8; count = 12; };\n"
	           "backbone = { plugin = \"pixel-mlp\"; hidden = 8; };\n"
	           "objective = { plugin = \"flow-fixture\"; };\n"
	           "train = { batch = 4; steps = 14; ema = 0.99; log_every = 1000; checkpoint_every = 0; };\n");
	fclose(f);
	df_registry *reg = NULL;
	df_error err;
	assert_int_equal(df_registry_create(&reg, &err), DF_OK);
	assert_int_equal(df_registry_load_default(reg, &err), DF_OK);
	char *fixture = path_join(getenv("DF_FIXTURE_DIR"), "stage_fixture.so");
	assert_int_equal(df_registry_load_file(reg, fixture, &err), DF_OK);
	df_pipeline *p = NULL;
	df_pipeline_options options = {.struct_size = sizeof options};
	int rc = df_pipeline_load(reg, cfg, &options, &p, &err);
	if (rc)
		fail_msg("%s", err.msg);
	counts c = {0};
	df_stage_options o = {.struct_size = sizeof o, .run_dir = dir, .progress = on_step, .ctx = &c};
	rc = df_train_run(p, &o, &err);
	if (rc)
		fail_msg("%s", err.msg);
	assert_int_equal(c.last, 14);
	/* Steps 3..13: the first steps may size the arena; the last one writes
	 * its log line. */
	for (int s = 3; s <= 13; s++)
		if (c.at_step[s] != c.at_step[s - 1])
			fail_msg("step %d made %ld heap allocations", s, c.at_step[s] - c.at_step[s - 1]);
	df_pipeline_destroy(p);
	df_registry_destroy(reg);
	remove_tree(dir);
	free(fixture);
	free(cfg);
	free(dir);
}

int main(void)
{
#ifdef TRAIN_ALLOC_ASAN
	return 77; /* the sanitizer owns the allocator */
#endif
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_allocation_per_step),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
