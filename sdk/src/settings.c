/* Declared settings: parse, check, store, format and release values of a
 * component's settings struct. The pipeline reader (runtime/pipeline.c)
 * feeds values it reads from libconfig through the same checks. */
#include "config.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "diffuse/runtime.h"
#include "settings_private.h"

int df_choice_index(const char *const *choices, const char *value)
{
	if (!choices || !value)
		return -1;
	for (int i = 0; choices[i]; i++)
		if (strcmp(choices[i], value) == 0)
			return i;
	return -1;
}

const char *df_setting_type_name(df_setting_type type)
{
	switch (type) {
	case DF_SETTING_INT: return "int";
	case DF_SETTING_FLOAT: return "float";
	case DF_SETTING_BOOL: return "bool";
	case DF_SETTING_STRING: return "string";
	case DF_SETTING_LIST: return "list";
	default: return "?";
	}
}

const df_setting *df_settings_find(const df_setting *decl, const char *name)
{
	for (const df_setting *s = decl; s && s->name; s++)
		if (strcmp(s->name, name) == 0)
			return s;
	return NULL;
}

static size_t field_size(df_setting_type type)
{
	switch (type) {
	case DF_SETTING_INT: return sizeof(int64_t);
	case DF_SETTING_FLOAT: return sizeof(double);
	case DF_SETTING_BOOL: return sizeof(int);
	case DF_SETTING_STRING: return sizeof(const char *);
	case DF_SETTING_LIST: return sizeof(df_list);
	default: return 0;
	}
}

/* ------------------------------------------------------------------ */
/* Suggestions: optimal string alignment distance (Levenshtein plus
 * adjacent transposition, the usual typing slips). */

static int edit_distance(const char *a, const char *b)
{
	size_t n = strlen(a), m = strlen(b);
	if (n > 64 || m > 64)
		return 1000;
	int d[65][65];
	for (size_t i = 0; i <= n; i++)
		d[i][0] = (int)i;
	for (size_t j = 0; j <= m; j++)
		d[0][j] = (int)j;
	for (size_t i = 1; i <= n; i++) {
		for (size_t j = 1; j <= m; j++) {
			int cost = tolower((unsigned char)a[i - 1]) != tolower((unsigned char)b[j - 1]);
			int best = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < best)
				best = d[i][j - 1] + 1;
			if (d[i - 1][j - 1] + cost < best)
				best = d[i - 1][j - 1] + cost;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < best)
				best = d[i - 2][j - 2] + 1;
			d[i][j] = best;
		}
	}
	return d[n][m];
}

const char *df_suggest(const char *name, const char *const *candidates)
{
	if (!name || !candidates)
		return NULL;
	int len = (int)strlen(name);
	int limit = len <= 3 ? 1 : (len + 2) / 3;
	const char *best = NULL;
	int best_distance = limit + 1;
	for (size_t i = 0; candidates[i]; i++) {
		int d = edit_distance(name, candidates[i]);
		/* A prefix ("batch" for "batch_size") is a likely intent too. */
		size_t clen = strlen(candidates[i]);
		if (d > limit && clen >= 3 && (size_t)len > clen &&
		    strncasecmp(name, candidates[i], clen) == 0)
			d = limit;
		if (d < best_distance) {
			best = candidates[i];
			best_distance = d;
		}
	}
	return best;
}

const char **dfr_setting_names(const df_setting *decl, const char *extra)
{
	size_t n = 0;
	for (const df_setting *s = decl; s && s->name; s++)
		n++;
	const char **names = calloc(n + 2, sizeof *names);
	if (!names)
		return NULL;
	size_t k = 0;
	if (extra)
		names[k++] = extra;
	for (const df_setting *s = decl; s && s->name; s++)
		names[k++] = s->name;
	return names;
}

/* ------------------------------------------------------------------ */
/* Parsing text (defaults and -o overrides). */

static const char *skip_space(const char *p)
{
	while (isspace((unsigned char)*p))
		p++;
	return p;
}

static int parse_int(const char *text, int64_t *out)
{
	const char *p = skip_space(text);
	char *end;
	errno = 0;
	long long v = strtoll(p, &end, 10);
	if (end == p || errno)
		return -1;
	if (*skip_space(end))
		return -1;
	*out = v;
	return 0;
}

static int parse_float(const char *text, double *out)
{
	const char *p = skip_space(text);
	char *end;
	errno = 0;
	double v = strtod(p, &end);
	if (end == p || errno == ERANGE || !isfinite(v))
		return -1;
	if (*skip_space(end))
		return -1;
	*out = v;
	return 0;
}

static int parse_bool(const char *text, int *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1", NULL};
	static const char *const no[] = {"false", "no", "off", "0", NULL};
	for (int i = 0; yes[i]; i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	return -1;
}

/* "[1, 2.5]" or "1,2.5"; "[]" is an empty list. */
static int parse_list(const char *text, dfr_value *v, df_error *err)
{
	char buf[1024];
	const char *p = skip_space(text);
	size_t len = strlen(p);
	while (len && isspace((unsigned char)p[len - 1]))
		len--;
	if (len && p[0] == '[') {
		if (p[len - 1] != ']')
			return df_error_set(err, DF_EINVAL, "\"%s\" is not a list of numbers (missing ']')", text);
		p++;
		len -= 2;
	}
	if (len >= sizeof buf)
		return df_error_set(err, DF_EINVAL, "list too long");
	memcpy(buf, p, len);
	buf[len] = '\0';
	v->list.n = 0;
	v->list_length = 0;
	if (!*skip_space(buf))
		return DF_OK;
	char *save = NULL;
	for (char *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		double x;
		if (parse_float(item, &x) != 0)
			return df_error_set(err, DF_EINVAL, "list item \"%s\" is not a number", skip_space(item));
		if (v->list_length < DF_LIST_MAX)
			v->list.v[v->list.n++] = x;
		v->list_length++;
	}
	return DF_OK;
}

int dfr_value_parse(const df_setting *s, const char *text, dfr_value *v, df_error *err)
{
	memset(v, 0, sizeof *v);
	v->type = s->type;
	switch (s->type) {
	case DF_SETTING_INT:
		if (parse_int(text, &v->i) != 0)
			return df_error_set(err, DF_EINVAL, "\"%s\" is not an integer", text);
		return DF_OK;
	case DF_SETTING_FLOAT:
		if (parse_float(text, &v->f) != 0)
			return df_error_set(err, DF_EINVAL, "\"%s\" is not a number", text);
		return DF_OK;
	case DF_SETTING_BOOL:
		if (parse_bool(text, &v->b) != 0)
			return df_error_set(err, DF_EINVAL, "\"%s\" is not true or false", text);
		return DF_OK;
	case DF_SETTING_STRING:
		v->s = text;
		return DF_OK;
	case DF_SETTING_LIST:
		return parse_list(text, v, err);
	default:
		return df_error_set(err, DF_EINVAL, "undeclared type %d", (int)s->type);
	}
}

/* ------------------------------------------------------------------ */
/* Checking and storing. */

static void describe_range(const df_setting *s, char *buf, size_t size)
{
	int has_min = s->min > DF_ANY_MIN, has_max = s->max < DF_ANY_MAX;
	if (has_min && has_max)
		snprintf(buf, size, "[%.15g, %.15g]", s->min, s->max);
	else if (has_min)
		snprintf(buf, size, ">= %.15g", s->min);
	else if (has_max)
		snprintf(buf, size, "<= %.15g", s->max);
	else
		snprintf(buf, size, "any");
}

static int check_range(const df_setting *s, double x, const char *what, df_error *err)
{
	if (x >= s->min && x <= s->max)
		return DF_OK;
	char range[96];
	describe_range(s, range, sizeof range);
	return df_error_set(err, DF_EINVAL, "%s%.15g is out of range %s", what, x, range);
}

static void describe_choices(const char *const *choices, char *buf, size_t size)
{
	size_t used = 0;
	buf[0] = '\0';
	for (int i = 0; choices[i] && used < size; i++)
		used += (size_t)snprintf(buf + used, size - used, "%s\"%s\"", i ? ", " : "", choices[i]);
}

int dfr_value_store(const df_setting *s, void *values, const dfr_value *v, df_error *err)
{
	char *field = (char *)values + s->offset;
	const char *want = df_setting_type_name(s->type);
	switch (s->type) {
	case DF_SETTING_INT: {
		if (v->type != DF_SETTING_INT) {
			if (v->type == DF_SETTING_FLOAT)
				return df_error_set(err, DF_EINVAL, "expected an int, got the float %g", v->f);
			return df_error_set(err, DF_EINVAL, "expected an int, got a %s", df_setting_type_name(v->type));
		}
		int status = check_range(s, (double)v->i, "", err);
		if (status)
			return status;
		memcpy(field, &v->i, sizeof v->i);
		return DF_OK;
	}
	case DF_SETTING_FLOAT: {
		double x;
		if (v->type == DF_SETTING_FLOAT)
			x = v->f;
		else if (v->type == DF_SETTING_INT)
			x = (double)v->i;
		else
			return df_error_set(err, DF_EINVAL, "expected a float, got a %s", df_setting_type_name(v->type));
		int status = check_range(s, x, "", err);
		if (status)
			return status;
		memcpy(field, &x, sizeof x);
		return DF_OK;
	}
	case DF_SETTING_BOOL: {
		if (v->type != DF_SETTING_BOOL)
			return df_error_set(err, DF_EINVAL, "expected a bool (true or false), got a %s",
			                    df_setting_type_name(v->type));
		int b = v->b ? 1 : 0;
		memcpy(field, &b, sizeof b);
		return DF_OK;
	}
	case DF_SETTING_STRING: {
		if (v->type != DF_SETTING_STRING)
			return df_error_set(err, DF_EINVAL, "expected a string, got a %s", df_setting_type_name(v->type));
		if (s->choices && df_choice_index(s->choices, v->s) < 0) {
			char list[400];
			describe_choices(s->choices, list, sizeof list);
			const char *near = df_suggest(v->s, s->choices);
			if (near)
				return df_error_set(err, DF_EINVAL, "\"%s\" is not one of %s; did you mean \"%s\"?",
				                    v->s, list, near);
			return df_error_set(err, DF_EINVAL, "\"%s\" is not one of %s", v->s, list);
		}
		char *copy = strdup(v->s);
		if (!copy)
			return df_error_set(err, DF_ENOMEM, "out of memory");
		char *old;
		memcpy(&old, field, sizeof old);
		free(old);
		memcpy(field, &copy, sizeof copy);
		return DF_OK;
	}
	case DF_SETTING_LIST: {
		if (v->type != DF_SETTING_LIST)
			return df_error_set(err, DF_EINVAL, "expected a list of numbers such as [1, 2], got a %s",
			                    df_setting_type_name(v->type));
		if (v->list_bad_item)
			return df_error_set(err, DF_EINVAL, "list item %d is not a number", v->list_bad_item);
		if (v->list_length > DF_LIST_MAX)
			return df_error_set(err, DF_EINVAL, "%d items, at most %d allowed", v->list_length, DF_LIST_MAX);
		for (int i = 0; i < v->list.n; i++) {
			char what[48];
			snprintf(what, sizeof what, "item %d: ", i + 1);
			int status = check_range(s, v->list.v[i], what, err);
			if (status)
				return status;
		}
		memcpy(field, &v->list, sizeof v->list);
		return DF_OK;
	}
	default:
		return df_error_set(err, DF_EINVAL, "undeclared type %d (expected %s)", (int)s->type, want);
	}
}

/* ------------------------------------------------------------------ */
/* The public face. */

int df_settings_set(const df_setting *decl, void *values, const char *name, const char *text,
                    df_error *err)
{
	const df_setting *s = df_settings_find(decl, name);
	if (!s) {
		const char **names = dfr_setting_names(decl, NULL);
		const char *near = names ? df_suggest(name, names) : NULL;
		int status;
		if (near)
			status = df_error_set(err, DF_EINVAL, "%s: unknown setting; did you mean \"%s\"?", name, near);
		else
			status = df_error_set(err, DF_EINVAL, "%s: unknown setting", name);
		free(names);
		return status;
	}
	dfr_value v;
	int status = dfr_value_parse(s, text, &v, err);
	if (!status)
		status = dfr_value_store(s, values, &v, err);
	if (status)
		return df_error_prefix(err, status, "%s", name);
	return DF_OK;
}

static int valid_name(const char *name)
{
	if (!name || !*name)
		return 0;
	for (const char *p = name; *p; p++)
		if (!(islower((unsigned char)*p) || isdigit((unsigned char)*p) || *p == '_'))
			return 0;
	return !isdigit((unsigned char)name[0]);
}

int df_settings_check(const df_setting *decl, size_t settings_size, df_error *err)
{
	if (!decl)
		return DF_OK;
	void *scratch = calloc(1, settings_size ? settings_size : 1);
	if (!scratch)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int status = DF_OK;
	for (const df_setting *s = decl; s->name && !status; s++) {
		size_t size = field_size(s->type);
		if (!valid_name(s->name))
			status = df_error_set(err, DF_EINVAL, "setting \"%s\": names are lower-case letters, digits and _",
			                      s->name);
		else if (df_settings_find(decl, s->name) != s)
			status = df_error_set(err, DF_EINVAL, "setting \"%s\" declared twice", s->name);
		else if (!size)
			status = df_error_set(err, DF_EINVAL, "setting \"%s\": unknown type %d", s->name, (int)s->type);
		else if (s->offset > settings_size || settings_size - s->offset < size)
			status = df_error_set(err, DF_EINVAL, "setting \"%s\": offset %zu is outside the %zu-byte settings struct",
			                      s->name, s->offset, settings_size);
		else if (!(s->min <= s->max))
			status = df_error_set(err, DF_EINVAL, "setting \"%s\": empty range", s->name);
		else if (s->choices && (s->type != DF_SETTING_STRING || !s->choices[0]))
			status = df_error_set(err, DF_EINVAL, "setting \"%s\": choices need a string with at least one choice",
			                      s->name);
		else if (s->default_value) {
			dfr_value v;
			status = dfr_value_parse(s, s->default_value, &v, err);
			if (!status)
				status = dfr_value_store(s, scratch, &v, err);
			if (status)
				df_error_prefix(err, status, "setting \"%s\": default", s->name);
		}
	}
	df_settings_release(decl, scratch);
	free(scratch);
	return status;
}

int df_settings_defaults(const df_setting *decl, void *values, df_error *err)
{
	/* Only the declared fields are ours to touch: zero them, then fill. */
	for (const df_setting *s = decl; s && s->name; s++)
		memset((char *)values + s->offset, 0, field_size(s->type));
	for (const df_setting *s = decl; s && s->name; s++) {
		if (!s->default_value)
			continue;
		dfr_value v;
		int status = dfr_value_parse(s, s->default_value, &v, err);
		if (!status)
			status = dfr_value_store(s, values, &v, err);
		if (status)
			return df_error_prefix(err, status, "%s: default", s->name);
	}
	return DF_OK;
}

static int format_double(double x, char *buf, size_t size)
{
	if (!isfinite(x))
		return snprintf(buf, size, "%g", x);
	char tmp[64];
	for (int precision = 1; precision <= 17; precision++) {
		snprintf(tmp, sizeof tmp, "%.*g", precision, x);
		if (strtod(tmp, NULL) == x)
			break;
	}
	/* libconfig reads "1" as an int: keep floats recognisable. */
	if (!strpbrk(tmp, ".eE"))
		return snprintf(buf, size, "%s.0", tmp);
	return snprintf(buf, size, "%s", tmp);
}

static int format_string(const char *str, char *buf, size_t size)
{
	size_t used = 0;
	int total = 0;
#define PUT(c) do { if (used + 1 < size) buf[used++] = (c); total++; } while (0)
	PUT('"');
	for (const unsigned char *p = (const unsigned char *)str; *p; p++) {
		switch (*p) {
		case '"': PUT('\\'); PUT('"'); break;
		case '\\': PUT('\\'); PUT('\\'); break;
		case '\n': PUT('\\'); PUT('n'); break;
		case '\t': PUT('\\'); PUT('t'); break;
		case '\r': PUT('\\'); PUT('r'); break;
		default:
			if (*p < 0x20) {
				char hex[5];
				snprintf(hex, sizeof hex, "\\x%02x", *p);
				for (int i = 0; hex[i]; i++)
					PUT(hex[i]);
			} else {
				PUT((char)*p);
			}
		}
	}
	PUT('"');
#undef PUT
	if (size)
		buf[used < size ? used : size - 1] = '\0';
	return total;
}

int df_settings_format(const df_setting *s, const void *values, char *buf, size_t size)
{
	const char *field = (const char *)values + s->offset;
	switch (s->type) {
	case DF_SETTING_INT: {
		int64_t v;
		memcpy(&v, field, sizeof v);
		return snprintf(buf, size, "%lld", (long long)v);
	}
	case DF_SETTING_FLOAT: {
		double v;
		memcpy(&v, field, sizeof v);
		return format_double(v, buf, size);
	}
	case DF_SETTING_BOOL: {
		int v;
		memcpy(&v, field, sizeof v);
		return snprintf(buf, size, "%s", v ? "true" : "false");
	}
	case DF_SETTING_STRING: {
		const char *v;
		memcpy(&v, field, sizeof v);
		return format_string(v ? v : "", buf, size);
	}
	case DF_SETTING_LIST: {
		df_list v;
		memcpy(&v, field, sizeof v);
		int total = 0;
		size_t used = 0;
		char item[64];
		for (int i = -1; i <= v.n; i++) {
			if (i < 0)
				snprintf(item, sizeof item, "[");
			else if (i == v.n)
				snprintf(item, sizeof item, "]");
			else {
				char num[48];
				format_double(v.v[i], num, sizeof num);
				snprintf(item, sizeof item, "%s%s", i ? ", " : "", num);
			}
			int n = snprintf(used < size ? buf + used : NULL, used < size ? size - used : 0, "%s", item);
			total += n;
			used += (size_t)n;
		}
		return total;
	}
	default:
		return snprintf(buf, size, "?");
	}
}

void df_settings_release(const df_setting *decl, void *values)
{
	if (!values)
		return;
	for (const df_setting *s = decl; s && s->name; s++) {
		if (s->type != DF_SETTING_STRING)
			continue;
		char *field = (char *)values + s->offset;
		char *str;
		memcpy(&str, field, sizeof str);
		free(str);
		str = NULL;
		memcpy(field, &str, sizeof str);
	}
}
