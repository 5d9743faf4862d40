/* safetensors reader (memory-mapped, fully validated) and atomic writer.
 *
 * Layout: 8-byte little-endian header length N, N bytes of JSON, then the
 * data section; each tensor's "data_offsets" [begin, end) are relative to
 * the start of the data section. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "io_private.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the safetensors reader and writer assume a little-endian host"
#endif

static const struct {
	const char *name;
	size_t size;
} dtype_info[] = {
	[DF_ST_BOOL] = { "BOOL", 1 }, [DF_ST_U8] = { "U8", 1 },     [DF_ST_I8] = { "I8", 1 },
	[DF_ST_I16] = { "I16", 2 },   [DF_ST_U16] = { "U16", 2 },   [DF_ST_F16] = { "F16", 2 },
	[DF_ST_BF16] = { "BF16", 2 }, [DF_ST_I32] = { "I32", 4 },   [DF_ST_U32] = { "U32", 4 },
	[DF_ST_F32] = { "F32", 4 },   [DF_ST_I64] = { "I64", 8 },   [DF_ST_U64] = { "U64", 8 },
	[DF_ST_F64] = { "F64", 8 },
};
#define DTYPE_COUNT (sizeof dtype_info / sizeof dtype_info[0])

const char *df_safetensors_dtype_name(df_safetensors_dtype dtype)
{
	return (unsigned)dtype < DTYPE_COUNT ? dtype_info[dtype].name : NULL;
}

size_t df_safetensors_dtype_size(df_safetensors_dtype dtype)
{
	return (unsigned)dtype < DTYPE_COUNT ? dtype_info[dtype].size : 0;
}

static int dtype_from_name(const char *name, df_safetensors_dtype *dtype)
{
	for (unsigned i = 0; i < DTYPE_COUNT; i++)
		if (strcmp(name, dtype_info[i].name) == 0) {
			*dtype = (df_safetensors_dtype)i;
			return 0;
		}
	return -1;
}

/* nelem * element size of a shape, or -1 on overflow of size_t. */
static int shape_size(const int64_t *shape, int ndim, size_t elem_size, size_t *nelem,
		      size_t *nbytes)
{
	size_t count = 1;
	for (int d = 0; d < ndim; d++) {
		if (shape[d] < 0 || (uint64_t)shape[d] > SIZE_MAX)
			return -1;
		size_t dim = (size_t)shape[d];
		if (dim != 0 && count > SIZE_MAX / dim)
			return -1;
		count *= dim;
	}
	if (elem_size != 0 && count > SIZE_MAX / elem_size)
		return -1;
	*nelem = count;
	*nbytes = count * elem_size;
	return 0;
}

/* ------------------------------------------------------------- reading */

struct df_safetensors {
	char *name;                       /* path or caller's name, for messages */
	const unsigned char *base;        /* the whole file */
	size_t size;
	int mapped;                       /* base is our mmap */
	df_safetensors_tensor *tensors;   /* file order */
	size_t count;
	const df_safetensors_tensor **by_name;
	df_safetensors_meta *meta;        /* key order; strings owned */
	size_t meta_count;
};

/* Data offsets kept beside each tensor while validating. */
struct span {
	uint64_t begin, end;
	size_t tensor;
};

static int cmp_span(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return 0;
}

static int cmp_tensor_name(const void *a, const void *b)
{
	const df_safetensors_tensor *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

static int cmp_meta_key(const void *a, const void *b)
{
	const df_safetensors_meta *x = a, *y = b;
	return strcmp(x->key, y->key);
}

/* A JSON integer >= 0, as uint64. */
static int json_uint(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int parse_metadata(df_safetensors *st, json_t *obj, df_error *err)
{
	if (!json_is_object(obj))
		return df__fail(err, -EINVAL, st->name, "__metadata__ is not an object of strings");
	size_t n = json_object_size(obj);
	st->meta = calloc(n ? n : 1, sizeof *st->meta);
	if (!st->meta)
		return df__fail(err, -ENOMEM, st->name, "out of memory");
	const char *key;
	json_t *value;
	json_object_foreach(obj, key, value) {
		if (!json_is_string(value))
			return df__fail(err, -EINVAL, st->name,
					"__metadata__ value of '%s' is not a string", key);
		df_safetensors_meta *m = &st->meta[st->meta_count];
		m->key = strdup(key);
		m->value = strdup(json_string_value(value));
		st->meta_count++;
		if (!m->key || !m->value)
			return df__fail(err, -ENOMEM, st->name, "out of memory");
	}
	qsort(st->meta, st->meta_count, sizeof *st->meta, cmp_meta_key);
	return 0;
}

/* Fills tensor t from its header entry; span gets its data offsets. */
static int parse_tensor(df_safetensors *st, const char *key, json_t *entry, size_t data_size,
			df_safetensors_tensor *t, struct span *span, df_error *err)
{
	const char *n = st->name;
	if (!json_is_object(entry))
		return df__fail(err, -EINVAL, n, "tensor '%s': header entry is not an object", key);
	t->name = strdup(key);
	if (!t->name)
		return df__fail(err, -ENOMEM, n, "out of memory");

	json_t *dtype = json_object_get(entry, "dtype");
	if (!json_is_string(dtype))
		return df__fail(err, -EINVAL, n, "tensor '%s' has no dtype string", key);
	if (dtype_from_name(json_string_value(dtype), &t->dtype) != 0)
		return df__fail(err, -EINVAL, n, "tensor '%s' has unknown dtype '%s'", key,
				json_string_value(dtype));

	json_t *shape = json_object_get(entry, "shape");
	if (!json_is_array(shape))
		return df__fail(err, -EINVAL, n, "tensor '%s' has no shape array", key);
	if (json_array_size(shape) > DF_SAFETENSORS_MAX_DIMS)
		return df__fail(err, -EINVAL, n, "tensor '%s' has %zu dimensions, at most %d are supported",
				key, json_array_size(shape), DF_SAFETENSORS_MAX_DIMS);
	t->ndim = (int)json_array_size(shape);
	for (int d = 0; d < t->ndim; d++) {
		uint64_t dim;
		if (json_uint(json_array_get(shape, (size_t)d), &dim) != 0)
			return df__fail(err, -EINVAL, n,
					"tensor '%s': shape[%d] is not a non-negative integer", key, d);
		t->shape[d] = (int64_t)dim;
	}
	if (shape_size(t->shape, t->ndim, dtype_info[t->dtype].size, &t->nelem, &t->nbytes) != 0)
		return df__fail(err, -EINVAL, n, "tensor '%s': the size of its shape overflows", key);

	json_t *offsets = json_object_get(entry, "data_offsets");
	if (!json_is_array(offsets) || json_array_size(offsets) != 2 ||
	    json_uint(json_array_get(offsets, 0), &span->begin) != 0 ||
	    json_uint(json_array_get(offsets, 1), &span->end) != 0)
		return df__fail(err, -EINVAL, n,
				"tensor '%s': data_offsets is not a pair of non-negative integers", key);
	if (span->begin > span->end)
		return df__fail(err, -EINVAL, n, "tensor '%s' data offsets [%llu, %llu] are reversed",
				key, (unsigned long long)span->begin, (unsigned long long)span->end);
	if (span->end > data_size)
		return df__fail(err, -EINVAL, n,
				"tensor '%s' data offsets [%llu, %llu] exceed the file's data section of %zu bytes",
				key, (unsigned long long)span->begin, (unsigned long long)span->end,
				data_size);
	if (span->end - span->begin != t->nbytes)
		return df__fail(err, -EINVAL, n,
				"tensor '%s' data offsets [%llu, %llu] hold %llu bytes, its dtype and shape need %zu",
				key, (unsigned long long)span->begin, (unsigned long long)span->end,
				(unsigned long long)(span->end - span->begin), t->nbytes);
	return 0;
}

static int parse_header(df_safetensors *st, df_error *err)
{
	const char *n = st->name;
	if (st->size < 8)
		return df__fail(err, -EINVAL, n,
				"file of %zu bytes is too short for a safetensors header length", st->size);
	uint64_t header_len;
	memcpy(&header_len, st->base, 8);
	if (header_len > DF_SAFETENSORS_MAX_HEADER)
		return df__fail(err, -EINVAL, n, "header length %llu exceeds the limit of %u bytes",
				(unsigned long long)header_len, DF_SAFETENSORS_MAX_HEADER);
	if (header_len > st->size - 8)
		return df__fail(err, -EINVAL, n, "header length %llu exceeds the file size of %zu bytes",
				(unsigned long long)header_len, st->size);
	const size_t data_start = 8 + (size_t)header_len;
	const size_t data_size = st->size - data_start;

	json_error_t jerr;
	json_t *root = json_loadb((const char *)st->base + 8, (size_t)header_len,
				  JSON_REJECT_DUPLICATES, &jerr);
	if (!root)
		return df__fail(err, -EINVAL, n, "header is not valid JSON: %s (at byte %d)",
				jerr.text, jerr.position);
	int rc = 0;
	struct span *spans = NULL;
	if (!json_is_object(root)) {
		rc = df__fail(err, -EINVAL, n, "header is not a JSON object");
		goto out;
	}

	size_t entries = json_object_size(root);
	st->tensors = calloc(entries ? entries : 1, sizeof *st->tensors);
	spans = calloc(entries ? entries : 1, sizeof *spans);
	if (!st->tensors || !spans) {
		rc = df__fail(err, -ENOMEM, n, "out of memory");
		goto out;
	}
	const char *key;
	json_t *value;
	json_object_foreach(root, key, value) {
		if (strcmp(key, "__metadata__") == 0) {
			if (st->meta) {
				rc = df__fail(err, -EINVAL, n, "__metadata__ appears twice");
				goto out;
			}
			rc = parse_metadata(st, value, err);
		} else {
			spans[st->count].tensor = st->count;
			rc = parse_tensor(st, key, value, data_size, &st->tensors[st->count],
					  &spans[st->count], err);
			st->count++;
		}
		if (rc != 0)
			goto out;
	}

	/* File order, and no byte of data shared by two tensors. */
	qsort(spans, st->count, sizeof *spans, cmp_span);
	for (size_t i = 1; i < st->count; i++)
		if (spans[i].begin < spans[i - 1].end) {
			rc = df__fail(err, -EINVAL, n, "tensors '%s' and '%s' overlap in the data section",
				      st->tensors[spans[i - 1].tensor].name,
				      st->tensors[spans[i].tensor].name);
			goto out;
		}
	df_safetensors_tensor *ordered = calloc(st->count ? st->count : 1, sizeof *ordered);
	st->by_name = calloc(st->count ? st->count : 1, sizeof *st->by_name);
	if (!ordered || !st->by_name) {
		free(ordered);
		rc = df__fail(err, -ENOMEM, n, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < st->count; i++) {
		ordered[i] = st->tensors[spans[i].tensor];
		ordered[i].data = st->base + data_start + spans[i].begin;
		st->by_name[i] = &ordered[i];
	}
	free(st->tensors);
	st->tensors = ordered;
	qsort(st->by_name, st->count, sizeof *st->by_name, cmp_tensor_name);
	for (size_t i = 1; i < st->count; i++)
		if (strcmp(st->by_name[i - 1]->name, st->by_name[i]->name) == 0) {
			rc = df__fail(err, -EINVAL, n, "tensor name '%s' appears twice",
				      st->by_name[i]->name);
			goto out;
		}
out:
	free(spans);
	json_decref(root);
	return rc;
}

static df_safetensors *new_handle(const char *name, df_error *err)
{
	df_safetensors *st = calloc(1, sizeof *st);
	if (st)
		st->name = strdup(name);
	if (!st || !st->name) {
		free(st);
		df__fail(err, -ENOMEM, name, "out of memory");
		return NULL;
	}
	return st;
}

static int finish_open(df_safetensors *st, df_safetensors **out, df_error *err)
{
	int rc = parse_header(st, err);
	if (rc != 0) {
		df_safetensors_close(st);
		return rc;
	}
	*out = st;
	return 0;
}

int df_safetensors_open_memory(df_safetensors **out, const void *data, size_t size,
			       const char *name, df_error *err)
{
	if (!name)
		name = "<memory>";
	if (!out || (!data && size > 0))
		return df__fail(err, -EINVAL, name, "no buffer given");
	*out = NULL;
	df_safetensors *st = new_handle(name, err);
	if (!st)
		return -ENOMEM;
	st->base = data;
	st->size = size;
	return finish_open(st, out, err);
}

int df_safetensors_open(df_safetensors **out, const char *path, df_error *err)
{
	if (!out || !path)
		return df__fail(err, -EINVAL, path, "no file given");
	*out = NULL;
	/* O_NONBLOCK: a FIFO given by mistake must not hang the open */
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;
		return df__fail(err, -e, path, "cannot open: %s", strerror(e));
	}
	struct stat sb;
	if (fstat(fd, &sb) != 0) {
		int e = errno;
		close(fd);
		return df__fail(err, -e, path, "cannot stat: %s", strerror(e));
	}
	if (!S_ISREG(sb.st_mode)) {
		close(fd);
		return df__fail(err, -EINVAL, path, "not a regular file");
	}
	df_safetensors *st = new_handle(path, err);
	if (!st) {
		close(fd);
		return -ENOMEM;
	}
	st->size = (size_t)sb.st_size;
	if (st->size > 0) {
		void *map = mmap(NULL, st->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (map == MAP_FAILED) {
			int e = errno;
			close(fd);
			df_safetensors_close(st);
			return df__fail(err, -e, path, "cannot map: %s", strerror(e));
		}
		st->base = map;
		st->mapped = 1;
	}
	close(fd);
	return finish_open(st, out, err);
}

void df_safetensors_close(df_safetensors *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->count; i++)
		free((char *)st->tensors[i].name);
	for (size_t i = 0; i < st->meta_count; i++) {
		free((char *)st->meta[i].key);
		free((char *)st->meta[i].value);
	}
	if (st->mapped)
		munmap((void *)st->base, st->size);
	free(st->tensors);
	free(st->by_name);
	free(st->meta);
	free(st->name);
	free(st);
}

size_t df_safetensors_count(const df_safetensors *st)
{
	return st ? st->count : 0;
}

const df_safetensors_tensor *df_safetensors_tensor_at(const df_safetensors *st, size_t i)
{
	return st && i < st->count ? &st->tensors[i] : NULL;
}

const df_safetensors_tensor *df_safetensors_find(const df_safetensors *st, const char *name)
{
	if (!st || !name)
		return NULL;
	df_safetensors_tensor probe = { .name = name };
	const df_safetensors_tensor *key = &probe;
	const df_safetensors_tensor **hit =
		bsearch(&key, st->by_name, st->count, sizeof *st->by_name, cmp_tensor_name);
	return hit ? *hit : NULL;
}

const char *df_safetensors_metadata(const df_safetensors *st, const char *key)
{
	if (!st || !key)
		return NULL;
	df_safetensors_meta probe = { .key = key };
	const df_safetensors_meta *hit =
		bsearch(&probe, st->meta, st->meta_count, sizeof *st->meta, cmp_meta_key);
	return hit ? hit->value : NULL;
}

size_t df_safetensors_metadata_count(const df_safetensors *st)
{
	return st ? st->meta_count : 0;
}

int df_safetensors_metadata_at(const df_safetensors *st, size_t i, const char **key,
			       const char **value)
{
	if (!st || i >= st->meta_count)
		return -EINVAL;
	if (key)
		*key = st->meta[i].key;
	if (value)
		*value = st->meta[i].value;
	return 0;
}

/* ---------------------------------------------------------- conversion */

static float half_to_float(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t exponent = (h >> 10) & 0x1fu;
	uint32_t mantissa = h & 0x3ffu;
	uint32_t bits;
	if (exponent == 0) {
		/* zero or subnormal: mantissa * 2^-24, exact in float */
		float magnitude = (float)mantissa * 0x1p-24f;
		return sign ? -magnitude : magnitude;
	}
	if (exponent == 31)
		bits = sign | 0x7f800000u | (mantissa << 13);
	else
		bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
	float f;
	memcpy(&f, &bits, sizeof f);
	return f;
}

static float bf16_to_float(uint16_t b)
{
	uint32_t bits = (uint32_t)b << 16;
	float f;
	memcpy(&f, &bits, sizeof f);
	return f;
}

/* Converting an out-of-range double to float is undefined in C. */
static float double_to_float(double d)
{
	if (d > FLT_MAX)
		return INFINITY;
	if (d < -FLT_MAX)
		return -INFINITY;
	return (float)d;
}

/* load_T(data, i): element i of raw little-endian data, which may be
 * unaligned inside the mapping. */
#define DEFINE_LOAD(type)                                                     \
	static inline type load_##type(const void *data, size_t i)            \
	{                                                                     \
		type v;                                                       \
		memcpy(&v, (const unsigned char *)data + i * sizeof v, sizeof v); \
		return v;                                                     \
	}
DEFINE_LOAD(uint8_t)
DEFINE_LOAD(int8_t)
DEFINE_LOAD(int16_t)
DEFINE_LOAD(uint16_t)
DEFINE_LOAD(int32_t)
DEFINE_LOAD(uint32_t)
DEFINE_LOAD(int64_t)
DEFINE_LOAD(uint64_t)
DEFINE_LOAD(float)
DEFINE_LOAD(double)
#define LOAD(type, data, i) load_##type(data, i)

static int check_read(const df_safetensors *st, const df_safetensors_tensor *t,
		      const void *dst, size_t count, df_error *err)
{
	const char *name = st ? st->name : "safetensors";
	if (!st || !t)
		return df__fail(err, -EINVAL, name, "no tensor given");
	if (count != t->nelem)
		return df__fail(err, -EINVAL, name,
				"tensor '%s' has %zu elements, the destination holds %zu", t->name,
				t->nelem, count);
	if (!dst && count > 0)
		return df__fail(err, -EINVAL, name, "tensor '%s': no destination", t->name);
	return 0;
}

/* Element i of a signed or unsigned integer (or BOOL) tensor of at most
 * 32 bits, or I64. U64 is handled by its callers (it may not fit). */
static int64_t load_integer(df_safetensors_dtype dtype, const void *src, size_t i)
{
	switch (dtype) {
	case DF_ST_BOOL: return LOAD(uint8_t, src, i) != 0;
	case DF_ST_U8: return LOAD(uint8_t, src, i);
	case DF_ST_I8: return LOAD(int8_t, src, i);
	case DF_ST_I16: return LOAD(int16_t, src, i);
	case DF_ST_U16: return LOAD(uint16_t, src, i);
	case DF_ST_I32: return LOAD(int32_t, src, i);
	case DF_ST_U32: return LOAD(uint32_t, src, i);
	case DF_ST_I64: return LOAD(int64_t, src, i);
	default: return 0;
	}
}

int df_safetensors_read_f32(const df_safetensors *st, const df_safetensors_tensor *t,
			    float *dst, size_t count, df_error *err)
{
	int rc = check_read(st, t, dst, count, err);
	if (rc != 0)
		return rc;
	const void *src = t->data;
	for (size_t i = 0; i < count; i++) {
		switch (t->dtype) {
		case DF_ST_F16: dst[i] = half_to_float(LOAD(uint16_t, src, i)); break;
		case DF_ST_BF16: dst[i] = bf16_to_float(LOAD(uint16_t, src, i)); break;
		case DF_ST_F32: dst[i] = LOAD(float, src, i); break;
		case DF_ST_F64: dst[i] = double_to_float(LOAD(double, src, i)); break;
		case DF_ST_U64: dst[i] = (float)LOAD(uint64_t, src, i); break;
		default: dst[i] = (float)load_integer(t->dtype, src, i); break;
		}
	}
	return 0;
}

int df_safetensors_read_i64(const df_safetensors *st, const df_safetensors_tensor *t,
			    int64_t *dst, size_t count, df_error *err)
{
	int rc = check_read(st, t, dst, count, err);
	if (rc != 0)
		return rc;
	const void *src = t->data;
	switch (t->dtype) {
	case DF_ST_F16: case DF_ST_BF16: case DF_ST_F32: case DF_ST_F64:
		return df__fail(err, -EINVAL, st->name,
				"tensor '%s' has dtype %s, an integer dtype is required", t->name,
				dtype_info[t->dtype].name);
	case DF_ST_U64:
		for (size_t i = 0; i < count; i++) {
			uint64_t v = LOAD(uint64_t, src, i);
			if (v > INT64_MAX)
				return df__fail(err, -ERANGE, st->name,
						"tensor '%s' element %zu (%llu) does not fit in int64",
						t->name, i, (unsigned long long)v);
			dst[i] = (int64_t)v;
		}
		return 0;
	default:
		for (size_t i = 0; i < count; i++)
			dst[i] = load_integer(t->dtype, src, i);
		return 0;
	}
}

/* ------------------------------------------------------------- writing */

/* The Python library (safetensors 0.4+) lays tensors out by dtype in this
 * order, largest first, then by byte-wise name; following it makes our
 * files byte-identical to its own for the same tensors. */
static const int python_dtype_rank[DTYPE_COUNT] = {
	[DF_ST_BOOL] = 0, [DF_ST_U8] = 1,  [DF_ST_I8] = 2,   [DF_ST_I16] = 3,  [DF_ST_U16] = 4,
	[DF_ST_F16] = 5,  [DF_ST_BF16] = 6, [DF_ST_I32] = 7, [DF_ST_U32] = 8,  [DF_ST_F32] = 9,
	[DF_ST_F64] = 10, [DF_ST_I64] = 11, [DF_ST_U64] = 12,
};

static int cmp_entry_layout(const void *a, const void *b)
{
	const df_safetensors_entry *const *x = a, *const *y = b;
	int rx = python_dtype_rank[(*x)->dtype], ry = python_dtype_rank[(*y)->dtype];
	if (rx != ry)
		return ry - rx;
	return strcmp((*x)->name, (*y)->name);
}

static int cmp_meta_ptr_key(const void *a, const void *b)
{
	const df_safetensors_meta *const *x = a, *const *y = b;
	return strcmp((*x)->key, (*y)->key);
}

/* Checks the entries and returns them in file order, with the data size
 * of each. */
static int plan_entries(const char *path, const df_safetensors_entry *entries, size_t count,
			const df_safetensors_entry **sorted, size_t *nbytes, df_error *err)
{
	for (size_t i = 0; i < count; i++) {
		const df_safetensors_entry *e = &entries[i];
		size_t nelem, size;
		if (!e->name || !e->name[0])
			return df__fail(err, -EINVAL, path, "tensor %zu has no name", i);
		if (strcmp(e->name, "__metadata__") == 0)
			return df__fail(err, -EINVAL, path, "'__metadata__' cannot name a tensor");
		if ((unsigned)e->dtype >= DTYPE_COUNT)
			return df__fail(err, -EINVAL, path, "tensor '%s' has an unknown dtype (%d)",
					e->name, (int)e->dtype);
		if (e->ndim < 0 || e->ndim > DF_SAFETENSORS_MAX_DIMS || (e->ndim > 0 && !e->shape))
			return df__fail(err, -EINVAL, path,
					"tensor '%s' has %d dimensions, 0 to %d are supported", e->name,
					e->ndim, DF_SAFETENSORS_MAX_DIMS);
		if (shape_size(e->shape, e->ndim, dtype_info[e->dtype].size, &nelem, &size) != 0)
			return df__fail(err, -EINVAL, path,
					"tensor '%s' has a negative dimension or a size that overflows",
					e->name);
		if (size > 0 && !e->data)
			return df__fail(err, -EINVAL, path, "tensor '%s' has no data", e->name);
		sorted[i] = e;
	}
	qsort(sorted, count, sizeof *sorted, cmp_entry_layout);
	for (size_t i = 0; i < count; i++) {
		size_t nelem;
		shape_size(sorted[i]->shape, sorted[i]->ndim, dtype_info[sorted[i]->dtype].size,
			   &nelem, &nbytes[i]);
	}
	return 0;
}

/* {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, keys in the
 * Python library's order. */
static json_t *tensor_entry(const df_safetensors_entry *e, uint64_t begin, uint64_t end)
{
	json_t *entry = json_object(), *shape = json_array();
	json_t *offsets = json_pack("[I, I]", (json_int_t)begin, (json_int_t)end);
	int bad = !entry || !shape || !offsets;
	for (int d = 0; !bad && d < e->ndim; d++)
		bad = json_array_append_new(shape, json_integer(e->shape[d])) != 0;
	if (!bad)
		bad = json_object_set_new(entry, "dtype", json_string(dtype_info[e->dtype].name)) ||
		      json_object_set(entry, "shape", shape) ||
		      json_object_set(entry, "data_offsets", offsets);
	json_decref(shape);
	json_decref(offsets);
	if (bad) {
		json_decref(entry);
		return NULL;
	}
	return entry;
}

/* The "__metadata__" object, keys in byte-wise order. */
static int metadata_object(const char *path, const df_safetensors_meta *metadata, size_t count,
			   json_t *meta, df_error *err)
{
	const df_safetensors_meta **sorted = calloc(count, sizeof *sorted);
	if (!sorted)
		return df__fail(err, -ENOMEM, path, "out of memory");
	int rc = 0;
	for (size_t i = 0; i < count && rc == 0; i++) {
		sorted[i] = &metadata[i];
		if (!metadata[i].key || !metadata[i].value)
			rc = df__fail(err, -EINVAL, path, "metadata entry %zu has no key or value", i);
	}
	if (rc == 0)
		qsort(sorted, count, sizeof *sorted, cmp_meta_ptr_key);
	for (size_t i = 0; i < count && rc == 0; i++) {
		const df_safetensors_meta *m = sorted[i];
		if (json_object_get(meta, m->key))
			rc = df__fail(err, -EINVAL, path, "metadata key '%s' appears twice", m->key);
		else if (json_object_set_new(meta, m->key, json_string(m->value)) != 0)
			rc = df__fail(err, -EINVAL, path, "metadata '%s' is not valid UTF-8 text",
				      m->key);
	}
	free(sorted);
	return rc;
}

/* The JSON header for the entries in file order, as a malloc'd string:
 * "__metadata__" first, then the tensors in file order. */
static int build_header(const char *path, const df_safetensors_entry **sorted,
			const size_t *nbytes, size_t count, const df_safetensors_meta *metadata,
			size_t metadata_count, char **text, df_error *err)
{
	json_t *root = json_object();
	int rc = 0;
	if (!root)
		return df__fail(err, -ENOMEM, path, "out of memory");
	if (metadata_count > 0) {
		json_t *meta = json_object();
		if (!meta || json_object_set_new(root, "__metadata__", meta) != 0) {
			rc = df__fail(err, -ENOMEM, path, "out of memory");
			goto out;
		}
		rc = metadata_object(path, metadata, metadata_count, meta, err);
		if (rc != 0)
			goto out;
	}
	uint64_t offset = 0;
	for (size_t i = 0; i < count; i++) {
		const df_safetensors_entry *e = sorted[i];
		if (nbytes[i] > (uint64_t)INT64_MAX - offset) {
			rc = df__fail(err, -EINVAL, path, "tensors larger than the format's offsets allow");
			goto out;
		}
		if (json_object_get(root, e->name)) {
			rc = df__fail(err, -EINVAL, path, "tensor name '%s' appears twice", e->name);
			goto out;
		}
		json_t *entry = tensor_entry(e, offset, offset + nbytes[i]);
		if (!entry) {
			rc = df__fail(err, -ENOMEM, path, "out of memory");
			goto out;
		}
		if (json_object_set_new(root, e->name, entry) != 0) {
			rc = df__fail(err, -EINVAL, path, "tensor name '%s' is not valid UTF-8", e->name);
			goto out;
		}
		offset += nbytes[i];
	}
	/* insertion order: jansson keeps it when keys are not sorted */
	*text = json_dumps(root, JSON_COMPACT);
	if (!*text)
		rc = df__fail(err, -ENOMEM, path, "cannot format the header");
out:
	json_decref(root);
	return rc;
}

int df_safetensors_write(const char *path, const df_safetensors_entry *entries, size_t count,
			 const df_safetensors_meta *metadata, size_t metadata_count,
			 df_error *err)
{
	if (!path)
		return df__fail(err, -EINVAL, "safetensors", "no path given");
	if ((count > 0 && !entries) || (metadata_count > 0 && !metadata))
		return df__fail(err, -EINVAL, path, "no entries given");

	const df_safetensors_entry **sorted = calloc(count ? count : 1, sizeof *sorted);
	size_t *nbytes = calloc(count ? count : 1, sizeof *nbytes);
	char *header = NULL;
	int rc;
	if (!sorted || !nbytes) {
		rc = df__fail(err, -ENOMEM, path, "out of memory");
		goto out;
	}
	rc = plan_entries(path, entries, count, sorted, nbytes, err);
	if (rc == 0)
		rc = build_header(path, sorted, nbytes, count, metadata, metadata_count, &header, err);
	if (rc != 0)
		goto out;

	/* Pad with spaces so the data section starts 8-byte aligned. */
	size_t header_len = strlen(header);
	size_t padded = (header_len + 7) / 8 * 8;
	uint64_t len_le = padded;

	df__atomic_file af;
	rc = df__atomic_open(&af, path, err);
	if (rc != 0)
		goto out;
	int ok = fwrite(&len_le, 8, 1, af.fp) == 1 &&
		 fwrite(header, 1, header_len, af.fp) == header_len;
	for (size_t i = header_len; ok && i < padded; i++)
		ok = fputc(' ', af.fp) != EOF;
	for (size_t i = 0; ok && i < count; i++)
		ok = nbytes[i] == 0 || fwrite(sorted[i]->data, 1, nbytes[i], af.fp) == nbytes[i];
	if (!ok) {
		int e = errno ? errno : EIO;
		df__atomic_abort(&af);
		rc = df__fail(err, -e, path, "cannot write: %s", strerror(e));
		goto out;
	}
	rc = df__atomic_commit(&af, err);
out:
	free(header);
	free(sorted);
	free(nbytes);
	return rc;
}
