/* The settings structs of the fixture plugins, shared with the tests that
 * read what the runtime filled in. */
#ifndef DIFFUSE_TEST_FIXTURE_H
#define DIFFUSE_TEST_FIXTURE_H

#include "diffuse/diffuse.h"

typedef struct sampler_settings {
	int64_t steps;
	double scale;
	const char *method;
	int guidance;
	df_list interval;
	const char *label;
} sampler_settings;

typedef struct data_settings {
	const char *path;
	int64_t size;
} data_settings;

#endif
