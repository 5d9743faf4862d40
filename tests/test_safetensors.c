/* safetensors: round trips, files written by PyTorch, the committed file
 * the C writer produces, and every kind of malformed header. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "diffuse/io.h"
#include "test_tmpdir.h"

#define REFERENCE_DIR DF_TEST_SRCDIR "/tests/reference/data"

/* Deterministic content shared with tests/reference/safetensors_interop.py. */
static float c_value(size_t i)
{
	return (float)i * 0.25f - 3.0f;
}

static unsigned char *read_whole(const char *path, size_t *size)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	fseek(fp, 0, SEEK_END);
	long len = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	unsigned char *buf = malloc(len > 0 ? (size_t)len : 1);
	if (buf && fread(buf, 1, (size_t)len, fp) != (size_t)len) {
		free(buf);
		buf = NULL;
	}
	fclose(fp);
	*size = (size_t)len;
	return buf;
}

/* The tensors of c_written.safetensors. */
#define C_VALUES 60
#define C_COUNTS 7
static float c_values[C_VALUES];
static int64_t c_counts[C_COUNTS];
static const int64_t values_shape[] = { 3, 4, 5 }, counts_shape[] = { 7 }, empty_shape[] = { 0, 3 };
static const char pipeline_text[] = "name = \"interop\";\nseed = 0;\nbackbone = { plugin = \"dit\"; };\n";

static int write_c_file(const char *path, df_error *err)
{
	for (size_t i = 0; i < C_VALUES; i++)
		c_values[i] = c_value(i);
	for (size_t i = 0; i < C_COUNTS; i++)
		c_counts[i] = (int64_t)(i * i) - 10;
	const df_safetensors_entry entries[] = {
		{ "values", DF_ST_F32, 3, values_shape, c_values },
		{ "counts", DF_ST_I64, 1, counts_shape, c_counts },
		{ "empty", DF_ST_F32, 2, empty_shape, NULL },
	};
	const df_safetensors_meta meta[] = {
		{ "pipeline", pipeline_text },
		{ "format", "pt" },
	};
	return df_safetensors_write(path, entries, 3, meta, 2, err);
}

static void test_round_trip(void **state)
{
	(void)state;
	char path[4096];
	df_error err;
	test_path(path, sizeof path, "round.safetensors");
	expect_ok(write_c_file(path, &err), &err);

	/* header: padded to 8 bytes, keys in byte order */
	size_t size;
	unsigned char *raw = read_whole(path, &size);
	assert_non_null(raw);
	uint64_t header_len;
	memcpy(&header_len, raw, 8);
	assert_int_equal((8 + header_len) % 8, 0);
	char *header = strndup((const char *)raw + 8, header_len);
	const char *meta_at = strstr(header, "\"__metadata__\"");
	const char *counts_at = strstr(header, "\"counts\"");
	const char *empty_at = strstr(header, "\"empty\"");
	const char *values_at = strstr(header, "\"values\"");
	assert_true(meta_at && counts_at && empty_at && values_at);
	assert_true(meta_at < counts_at && counts_at < empty_at && empty_at < values_at);
	free(header);
	free(raw);

	df_safetensors *st;
	expect_ok(df_safetensors_open(&st, path, &err), &err);
	assert_int_equal(df_safetensors_count(st), 3);
	/* file order: the writer lays data out in name order */
	assert_string_equal(df_safetensors_tensor_at(st, 0)->name, "counts");
	assert_string_equal(df_safetensors_tensor_at(st, 1)->name, "empty");
	assert_string_equal(df_safetensors_tensor_at(st, 2)->name, "values");
	assert_null(df_safetensors_tensor_at(st, 3));

	const df_safetensors_tensor *v = df_safetensors_find(st, "values");
	assert_non_null(v);
	assert_int_equal(v->dtype, DF_ST_F32);
	assert_int_equal(v->ndim, 3);
	assert_int_equal(v->shape[2], 5);
	assert_int_equal(v->nelem, C_VALUES);
	float got[C_VALUES];
	expect_ok(df_safetensors_read_f32(st, v, got, C_VALUES, &err), &err);
	assert_memory_equal(got, c_values, sizeof got);

	int64_t counts[C_COUNTS];
	expect_ok(df_safetensors_read_i64(st, df_safetensors_find(st, "counts"), counts, C_COUNTS, &err),
		  &err);
	assert_memory_equal(counts, c_counts, sizeof counts);
	const df_safetensors_tensor *e = df_safetensors_find(st, "empty");
	assert_int_equal(e->nelem, 0);
	expect_ok(df_safetensors_read_f32(st, e, NULL, 0, &err), &err);
	assert_null(df_safetensors_find(st, "missing"));

	assert_int_equal(df_safetensors_metadata_count(st), 2);
	assert_string_equal(df_safetensors_metadata(st, "pipeline"), pipeline_text);
	const char *key, *value;
	assert_int_equal(df_safetensors_metadata_at(st, 0, &key, &value), 0);
	assert_string_equal(key, "format");
	assert_string_equal(value, "pt");
	assert_null(df_safetensors_metadata(st, "absent"));

	/* conversions that are refused */
	assert_int_equal(df_safetensors_read_i64(st, v, (int64_t[C_VALUES]){ 0 }, C_VALUES, &err),
			 -EINVAL);
	assert_non_null(strstr(err.msg, "integer dtype"));
	assert_int_equal(df_safetensors_read_f32(st, v, got, 3, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "has 60 elements"));
	df_safetensors_close(st);
}

/* The committed c_written.safetensors is exactly what the writer produces;
 * tests/reference/safetensors_interop.py checks PyTorch reads it. Setting
 * DF_TEST_GOLDEN_OUT to a path rewrites the golden file there. */
static void test_writer_matches_golden_file(void **state)
{
	(void)state;
	char path[4096];
	df_error err;
	const char *golden_out = getenv("DF_TEST_GOLDEN_OUT");
	if (golden_out)
		expect_ok(write_c_file(golden_out, &err), &err);
	test_path(path, sizeof path, "c_written.safetensors");
	expect_ok(write_c_file(path, &err), &err);
	size_t got_size, want_size;
	unsigned char *got = read_whole(path, &got_size);
	unsigned char *want = read_whole(REFERENCE_DIR "/c_written.safetensors", &want_size);
	assert_non_null(got);
	assert_non_null(want);
	assert_int_equal(got_size, want_size);
	assert_memory_equal(got, want, got_size);
	free(got);
	free(want);
}

/* torch_written.safetensors, from tests/reference/safetensors_interop.py. */
static void test_reads_torch_file(void **state)
{
	(void)state;
	df_error err;
	df_safetensors *st;
	expect_ok(df_safetensors_open(&st, REFERENCE_DIR "/torch_written.safetensors", &err), &err);
	assert_string_equal(df_safetensors_metadata(st, "format"), "pt");
	assert_string_equal(df_safetensors_metadata(st, "writer"), "torch");

	static const struct {
		const char *name;
		df_safetensors_dtype dtype;
		int ndim;
		int64_t shape[3];
	} expect[] = {
		{ "f32_odd", DF_ST_F32, 3, { 3, 5, 7 } },
		{ "f16", DF_ST_F16, 2, { 7, 3 } },
		{ "bf16", DF_ST_BF16, 1, { 5 } },
		{ "i64", DF_ST_I64, 3, { 2, 3, 1 } },
		{ "f64", DF_ST_F64, 1, { 4 } },
		{ "i32", DF_ST_I32, 1, { 6 } },
		{ "u8", DF_ST_U8, 2, { 2, 2 } },
		{ "scalar", DF_ST_F32, 0, { 0 } },
	};
	assert_int_equal(df_safetensors_count(st), sizeof expect / sizeof expect[0]);
	for (size_t k = 0; k < sizeof expect / sizeof expect[0]; k++) {
		const df_safetensors_tensor *t = df_safetensors_find(st, expect[k].name);
		assert_non_null(t);
		assert_int_equal(t->dtype, expect[k].dtype);
		assert_int_equal(t->ndim, expect[k].ndim);
		for (int d = 0; d < t->ndim; d++)
			assert_int_equal(t->shape[d], expect[k].shape[d]);
		float *f = malloc((t->nelem ? t->nelem : 1) * sizeof *f);
		assert_non_null(f);
		expect_ok(df_safetensors_read_f32(st, t, f, t->nelem, &err), &err);
		for (size_t i = 0; i < t->nelem; i++) {
			float want;
			switch (k) {
			case 0: want = c_value(i); break;
			case 1: want = (float)(i % 64) * 0.125f - 4.0f; break;
			case 2: want = (float)i * 0.5f - 1.0f; break;
			case 3: want = (float)((int64_t)i * 1099511627776LL + (int64_t)i - 3); break;
			case 4: want = (float)((double)i / 3.0); break;
			case 5: want = -7.0f * (float)i; break;
			case 6: want = 60.0f * (float)i; break;
			default: want = 3.5f; break;
			}
			if (f[i] != want) {
				print_error("%s[%zu] = %.9g, expected %.9g\n", t->name, i, f[i], want);
				fail();
			}
		}
		free(f);
	}
	/* integers exactly through read_i64 */
	int64_t i64[6];
	expect_ok(df_safetensors_read_i64(st, df_safetensors_find(st, "i64"), i64, 6, &err), &err);
	for (int64_t i = 0; i < 6; i++)
		assert_int_equal(i64[i], i * 1099511627776LL + i - 3);
	df_safetensors_close(st);
}

/* A safetensors image in memory: length, header text, data_len zero bytes. */
static unsigned char *make_file(const char *header, size_t data_len, size_t *size)
{
	size_t header_len = strlen(header);
	*size = 8 + header_len + data_len;
	unsigned char *buf = calloc(1, *size);
	uint64_t len = header_len;
	memcpy(buf, &len, 8);
	memcpy(buf + 8, header, header_len);
	return buf;
}

static void expect_rejected(const unsigned char *buf, size_t size, const char *fragment)
{
	df_error err = { "" };
	df_safetensors *st = (df_safetensors *)1;
	int rc = df_safetensors_open_memory(&st, buf, size, "bad.safetensors", &err);
	if (rc == 0 || st != NULL || !strstr(err.msg, fragment) ||
	    strncmp(err.msg, "bad.safetensors: ", 17) != 0) {
		print_error("rc %d, message '%s', expected one containing '%s'\n", rc, err.msg, fragment);
		fail();
	}
}

static void expect_header_rejected(const char *header, size_t data_len, const char *fragment)
{
	size_t size;
	unsigned char *buf = make_file(header, data_len, &size);
	expect_rejected(buf, size, fragment);
	free(buf);
}

static void test_malformed_headers(void **state)
{
	(void)state;
	const unsigned char tiny[5] = { 0 };
	expect_rejected(tiny, sizeof tiny, "too short");

	unsigned char big[16] = { 0 };
	uint64_t huge = (uint64_t)DF_SAFETENSORS_MAX_HEADER + 1;
	memcpy(big, &huge, 8);
	expect_rejected(big, sizeof big, "exceeds the limit");
	huge = 9;
	memcpy(big, &huge, 8);
	expect_rejected(big, sizeof big, "exceeds the file size of 16 bytes");

	expect_header_rejected("{\"a\": ", 0, "not valid JSON");
	expect_header_rejected("[1, 2]", 0, "not a JSON object");
	expect_header_rejected("{\"a\": 3}", 0, "not an object");
	expect_header_rejected("{\"a\": {\"shape\": [1], \"data_offsets\": [0, 4]}}", 4, "no dtype");
	expect_header_rejected("{\"a\": {\"dtype\": \"F8\", \"shape\": [1], \"data_offsets\": [0, 1]}}", 1,
			       "unknown dtype 'F8'");
	expect_header_rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", 4,
			       "shape[0] is not a non-negative integer");
	expect_header_rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [1.5], \"data_offsets\": [0, 4]}}", 4,
			       "shape[0]");
	expect_header_rejected("{\"a\": {\"dtype\": \"U8\", \"shape\": [1,1,1,1,1,1,1,1,1], "
			       "\"data_offsets\": [0, 1]}}", 1, "9 dimensions");
	expect_header_rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904, 4611686018427387904], "
			       "\"data_offsets\": [0, 4]}}", 4, "overflows");
	expect_header_rejected("{\"a\": {\"dtype\": \"F64\", \"shape\": [2305843009213693952], "
			       "\"data_offsets\": [0, 0]}}", 0, "overflows");
	expect_header_rejected("{\"x\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [10, 99999]}}",
			       4096, "tensor 'x' data offsets [10, 99999] exceed the file's data section of 4096 bytes");
	expect_header_rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 4]}}", 8,
			       "reversed");
	expect_header_rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", 8,
			       "hold 4 bytes, its dtype and shape need 8");
	expect_header_rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0]}}", 8,
			       "data_offsets");
	expect_header_rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
			       " \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8,
			       "overlap");
	expect_header_rejected("{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]},"
			       " \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", 8,
			       "duplicate");
	expect_header_rejected("{\"__metadata__\": {\"k\": 1}}", 0, "value of 'k' is not a string");
	expect_header_rejected("{\"__metadata__\": [1]}", 0, "__metadata__ is not an object");

	/* accepted: empty header object, zero-size tensors sharing an offset */
	size_t size;
	unsigned char *buf = make_file("{\"a\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [0, 0]},"
				       " \"b\": {\"dtype\": \"F32\", \"shape\": [], \"data_offsets\": [0, 4]}}  ",
				       4, &size);
	df_error err;
	df_safetensors *st;
	expect_ok(df_safetensors_open_memory(&st, buf, size, NULL, &err), &err);
	assert_int_equal(df_safetensors_count(st), 2);
	assert_int_equal(df_safetensors_find(st, "b")->nelem, 1);
	df_safetensors_close(st);
	free(buf);

	/* missing and non-regular files */
	assert_int_equal(df_safetensors_open(&st, "no/such/file.safetensors", &err), -ENOENT);
	assert_string_equal(err.msg, "no/such/file.safetensors: cannot open: No such file or directory");
	assert_true(df_safetensors_open(&st, ".", &err) < 0);
}

static void test_writer_errors_leave_nothing(void **state)
{
	(void)state;
	df_error err;
	const float x[2] = { 1, 2 };
	const int64_t shape[] = { 2 };
	const df_safetensors_entry dup[] = {
		{ "x", DF_ST_F32, 1, shape, x },
		{ "x", DF_ST_F32, 1, shape, x },
	};
	char path[4096];
	test_path(path, sizeof path, "dup.safetensors");
	assert_int_equal(df_safetensors_write(path, dup, 2, NULL, 0, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "appears twice"));

	const df_safetensors_entry bad_ndim[] = { { "x", DF_ST_F32, 9, shape, x } };
	assert_int_equal(df_safetensors_write(path, bad_ndim, 1, NULL, 0, &err), -EINVAL);
	const df_safetensors_entry reserved[] = { { "__metadata__", DF_ST_F32, 1, shape, x } };
	assert_int_equal(df_safetensors_write(path, reserved, 1, NULL, 0, &err), -EINVAL);
	const df_safetensors_meta bad_utf8[] = { { "k", "\xff\xfe" } };
	const df_safetensors_entry one[] = { { "x", DF_ST_F32, 1, shape, x } };
	assert_int_equal(df_safetensors_write(path, one, 1, bad_utf8, 1, &err), -EINVAL);
	assert_non_null(strstr(err.msg, "UTF-8"));

	/* the target is a directory: the rename fails after the data is
	 * written, and the temporary file must be gone */
	test_path(path, sizeof path, "a_directory");
	assert_int_equal(mkdir(path, 0755), 0);
	assert_true(df_safetensors_write(path, one, 1, NULL, 0, &err) < 0);
	assert_non_null(strstr(err.msg, "rename"));
	assert_int_equal(test_count_entries(test_dir, ".tmp."), 0);
	assert_int_equal(test_count_entries(test_dir, "dup.safetensors"), 0);

	assert_true(df_safetensors_write("no/such/dir/x.safetensors", one, 1, NULL, 0, &err) < 0);
	assert_non_null(strstr(err.msg, "no/such/dir/x.safetensors: cannot create"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_writer_matches_golden_file),
		cmocka_unit_test(test_reads_torch_file),
		cmocka_unit_test(test_malformed_headers),
		cmocka_unit_test(test_writer_errors_leave_nothing),
	};
	return cmocka_run_group_tests(tests, test_tmpdir_setup, test_tmpdir_teardown);
}
