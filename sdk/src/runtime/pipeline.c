/* Pipeline files: read with libconfig, apply -o overrides to the parsed
 * tree, resolve each section's component in the registry, then validate
 * every value against its declaration and fill the typed structs.
 *
 * Every error is one line "file:line: message"; values that came from the
 * command line say "<command line>" instead (their settings carry the
 * override text as libconfig hook). All errors are reported, not just the
 * first, so one `diffuse check` shows everything wrong with a file. */
#include "config.h"
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "diffuse/runtime.h"
#include "runtime_private.h"
#include "../settings_private.h"

#define COMMAND_LINE "<command line>"

/* Sections in the order a resolved pipeline lists them. */
static const char *const section_order[] = {
	"dataset", "encoder", "backbone", "objective", "sampler", "metric", "train", "sample", NULL,
};

struct df_pipeline {
	char *file;
	df_pipeline_settings top;
	df_pipeline_section sections[sizeof section_order / sizeof section_order[0]];
	size_t n_sections;
};

typedef struct loader {
	const char *path;
	config_t cfg;
	df_registry *reg;
	const df_pipeline_options *options;
	df_error *err;
	int errors;
	df_pipeline *p;
} loader;

/* ------------------------------------------------------------------ */
/* Reporting. */

static void report(loader *ld, const config_setting_t *where, const char *fmt, ...) DF_PRINTF(3, 4);

static void report(loader *ld, const config_setting_t *where, const char *fmt, ...)
{
	char location[PATH_MAX + 32];
	if (where && config_setting_get_hook(where))
		snprintf(location, sizeof location, "%s", COMMAND_LINE);
	else if (where && config_setting_source_line(where) > 0)
		snprintf(location, sizeof location, "%s:%u",
		         config_setting_source_file(where) ? config_setting_source_file(where) : ld->path,
		         config_setting_source_line(where));
	else
		snprintf(location, sizeof location, "%s", ld->path);
	char message[sizeof ld->err->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	df_error line;
	df_error_set(&line, DF_EINVAL, "%s: %s", location, message);
	if (ld->errors++ == 0)
		*ld->err = line;
	if (ld->options && ld->options->report)
		ld->options->report(ld->options->report_ctx, line.msg);
}

static void report_override(loader *ld, const char *override, const char *fmt, ...) DF_PRINTF(3, 4);

static void report_override(loader *ld, const char *override, const char *fmt, ...)
{
	char message[sizeof ld->err->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(message, sizeof message, fmt, ap);
	va_end(ap);
	df_error line;
	df_error_set(&line, DF_EINVAL, "%s: -o %s: %s", COMMAND_LINE, override, message);
	if (ld->errors++ == 0)
		*ld->err = line;
	if (ld->options && ld->options->report)
		ld->options->report(ld->options->report_ctx, line.msg);
}

/* ------------------------------------------------------------------ */
/* Names. */

static int is_component_section(const char *name) { return df_kind_from_name(name) != 0; }

static int is_section(const char *name)
{
	for (int i = 0; section_order[i]; i++)
		if (strcmp(section_order[i], name) == 0)
			return 1;
	return 0;
}

/* Suggests among the top-level names (settings and sections). */
static const char *suggest_top(const char *name)
{
	const df_setting *top = df_runtime_section("", NULL);
	const char *candidates[32];
	size_t n = 0;
	for (const df_setting *s = top; s->name && n < 20; s++)
		candidates[n++] = s->name;
	for (int i = 0; section_order[i]; i++)
		candidates[n++] = section_order[i];
	candidates[n] = NULL;
	return df_suggest(name, candidates);
}

/* The declaration a section is checked against. */
static const df_setting *section_decl(const df_pipeline_section *sec)
{
	return sec->component ? sec->component->component->settings : sec->settings;
}

static const char *section_label(const df_pipeline_section *sec, char *buf, size_t size)
{
	if (sec->component)
		snprintf(buf, size, "%s \"%s\"", sec->name, sec->component->component->name);
	else
		snprintf(buf, size, "section %s", sec->name);
	return buf;
}

/* ------------------------------------------------------------------ */
/* Reading values from the tree. */

static const char *config_type_name(int type)
{
	switch (type) {
	case CONFIG_TYPE_GROUP: return "group";
	case CONFIG_TYPE_INT: case CONFIG_TYPE_INT64: return "int";
	case CONFIG_TYPE_FLOAT: return "float";
	case CONFIG_TYPE_STRING: return "string";
	case CONFIG_TYPE_BOOL: return "bool";
	case CONFIG_TYPE_ARRAY: case CONFIG_TYPE_LIST: return "list";
	default: return "value";
	}
}

/* 0 and v filled, or -1 when the setting is a group (no value). */
static int read_value(const config_setting_t *cs, dfr_value *v)
{
	memset(v, 0, sizeof *v);
	switch (config_setting_type(cs)) {
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64:
		v->type = DF_SETTING_INT;
		v->i = config_setting_get_int64(cs);
		return 0;
	case CONFIG_TYPE_FLOAT:
		v->type = DF_SETTING_FLOAT;
		v->f = config_setting_get_float(cs);
		return 0;
	case CONFIG_TYPE_BOOL:
		v->type = DF_SETTING_BOOL;
		v->b = config_setting_get_bool(cs);
		return 0;
	case CONFIG_TYPE_STRING:
		v->type = DF_SETTING_STRING;
		v->s = config_setting_get_string(cs);
		return 0;
	case CONFIG_TYPE_ARRAY:
	case CONFIG_TYPE_LIST:
		v->type = DF_SETTING_LIST;
		v->list_length = config_setting_length(cs);
		for (int i = 0; i < v->list_length; i++) {
			const config_setting_t *item = config_setting_get_elem(cs, (unsigned)i);
			int type = config_setting_type(item);
			double x;
			if (type == CONFIG_TYPE_INT || type == CONFIG_TYPE_INT64)
				x = (double)config_setting_get_int64(item);
			else if (type == CONFIG_TYPE_FLOAT)
				x = config_setting_get_float(item);
			else {
				if (!v->list_bad_item)
					v->list_bad_item = i + 1;
				continue;
			}
			if (i < DF_LIST_MAX)
				v->list.v[v->list.n++] = x;
		}
		return 0;
	default:
		return -1;
	}
}

/* Checks and stores one value of a section, reporting where it is wrong. */
static void store_setting(loader *ld, const char *section, const df_setting *s, void *values,
                          const config_setting_t *cs)
{
	dfr_value v;
	df_error why;
	const char *dot = *section ? "." : "";
	if (read_value(cs, &v) != 0) {
		report(ld, cs, "%s%s%s: expected a %s, got a %s", section, dot, s->name, df_setting_type_name(s->type),
		       config_type_name(config_setting_type(cs)));
		return;
	}
	if (dfr_value_store(s, values, &v, &why) != DF_OK)
		report(ld, cs, "%s%s%s: %s", section, dot, s->name, why.msg);
}

/* Validates the members of a group against decl and fills values.
 * skip names a member that is not a setting ("plugin"), or NULL. */
static void fill_group(loader *ld, const char *section, const char *label, const config_setting_t *group,
                       const df_setting *decl, void *values, const char *skip)
{
	int n = config_setting_length(group);
	for (int i = 0; i < n; i++) {
		const config_setting_t *cs = config_setting_get_elem(group, (unsigned)i);
		const char *key = config_setting_name(cs);
		if (skip && strcmp(key, skip) == 0)
			continue;
		if (!*section && is_section(key))
			continue; /* the top level's sections are read on their own */
		const df_setting *s = df_settings_find(decl, key);
		if (s) {
			store_setting(ld, section, s, values, cs);
			continue;
		}
		const char **names = dfr_setting_names(decl, skip);
		const char *near = !*section ? suggest_top(key) : names ? df_suggest(key, names) : NULL;
		free(names);
		const char *dot = *section ? "." : "";
		if (near)
			report(ld, cs, "%s%s%s: unknown setting of %s; did you mean \"%s\"?", section, dot, key, label, near);
		else
			report(ld, cs, "%s%s%s: unknown setting of %s (`diffuse help %s` lists them)", section, dot, key,
			       label, *section ? section : "pipeline");
	}
	for (const df_setting *s = decl; s && s->name; s++)
		if (!s->default_value && !config_setting_get_member(group, s->name))
			report(ld, group, "%s%s%s: required setting missing (%s, no default)", section, *section ? "." : "",
			       s->name, s->help ? s->help : df_setting_type_name(s->type));
}

/* ------------------------------------------------------------------ */
/* Overrides: "section.key=value" or "key=value" (the top level). */

typedef struct override {
	const char *text;   /* as given, for messages and as the hook */
	char section[64];
	char key[64];
	const char *value;  /* points into text */
} override;

static int split_override(const char *text, override *o)
{
	memset(o, 0, sizeof *o);
	o->text = text;
	const char *eq = strchr(text, '=');
	if (!eq || eq == text)
		return -1;
	const char *dot = memchr(text, '.', (size_t)(eq - text));
	size_t key_len;
	if (dot) {
		size_t len = (size_t)(dot - text);
		if (!len || len >= sizeof o->section)
			return -1;
		memcpy(o->section, text, len);
		key_len = (size_t)(eq - dot - 1);
		if (!key_len || key_len >= sizeof o->key)
			return -1;
		memcpy(o->key, dot + 1, key_len);
	} else {
		key_len = (size_t)(eq - text);
		if (key_len >= sizeof o->key)
			return -1;
		memcpy(o->key, text, key_len);
	}
	o->value = eq + 1;
	return 0;
}

/* The group of a section, created (and marked as from the command line)
 * when the file has none. */
static config_setting_t *section_group(loader *ld, const override *o, int create)
{
	config_setting_t *root = config_root_setting(&ld->cfg);
	if (!*o->section)
		return root;
	config_setting_t *group = config_setting_get_member(root, o->section);
	if (group || !create)
		return group;
	group = config_setting_add(root, o->section, CONFIG_TYPE_GROUP);
	if (group)
		config_setting_set_hook(group, (void *)o->text);
	return group;
}

/* Writes the override's value into the tree as s's type (s NULL: string). */
static int tree_set(loader *ld, config_setting_t *group, const override *o, const df_setting *s)
{
	static const int config_types[] = {
		[DF_SETTING_INT] = CONFIG_TYPE_INT64, [DF_SETTING_FLOAT] = CONFIG_TYPE_FLOAT,
		[DF_SETTING_BOOL] = CONFIG_TYPE_BOOL, [DF_SETTING_STRING] = CONFIG_TYPE_STRING,
		[DF_SETTING_LIST] = CONFIG_TYPE_ARRAY,
	};
	dfr_value v;
	df_error why;
	if (s) {
		if (dfr_value_parse(s, o->value, &v, &why) != DF_OK) {
			report_override(ld, o->text, "%s", why.msg);
			return -1;
		}
	} else {
		memset(&v, 0, sizeof v);
		v.type = DF_SETTING_STRING;
		v.s = o->value;
	}
	int type = config_types[v.type];
	config_setting_t *cs = config_setting_get_member(group, o->key);
	if (cs && config_setting_type(cs) != type) {
		config_setting_remove(group, o->key);
		cs = NULL;
	}
	if (!cs && !(cs = config_setting_add(group, o->key, type))) {
		report_override(ld, o->text, "cannot set %s", o->key);
		return -1;
	}
	switch (v.type) {
	case DF_SETTING_INT: config_setting_set_int64(cs, v.i); break;
	case DF_SETTING_FLOAT: config_setting_set_float(cs, v.f); break;
	case DF_SETTING_BOOL: config_setting_set_bool(cs, v.b); break;
	case DF_SETTING_STRING: config_setting_set_string(cs, v.s); break;
	case DF_SETTING_LIST:
		while (config_setting_length(cs) > 0)
			config_setting_remove_elem(cs, 0);
		for (int i = 0; i < v.list.n; i++)
			config_setting_set_float_elem(cs, -1, v.list.v[i]);
		break;
	}
	config_setting_set_hook(cs, (void *)o->text);
	return 0;
}

/* Pass one: the top level and `section.plugin`, which decide what the
 * other keys mean. Pass two (component_pass = 1): every other key. */
static void apply_overrides(loader *ld, int component_pass)
{
	const df_pipeline_options *opt = ld->options;
	for (size_t i = 0; opt && i < opt->n_overrides; i++) {
		override o;
		if (split_override(opt->overrides[i], &o) != 0) {
			if (!component_pass)
				report_override(ld, opt->overrides[i], "expected section.key=value or key=value");
			continue;
		}
		/* Runtime sections have fixed declarations: they go in pass one. */
		int first_pass = !*o.section || strcmp(o.key, "plugin") == 0 || !is_component_section(o.section);
		if (first_pass == component_pass)
			continue;
		if (!*o.section) {
			const df_setting *s = df_settings_find(df_runtime_section("", NULL), o.key);
			if (!s) {
				const char *near = suggest_top(o.key);
				report_override(ld, o.text, "unknown top-level setting \"%s\"%s%s%s", o.key,
				                near ? "; did you mean \"" : "", near ? near : "", near ? "\"?" : "");
				continue;
			}
			tree_set(ld, section_group(ld, &o, 1), &o, s);
			continue;
		}
		if (!is_section(o.section)) {
			const char *near = df_suggest(o.section, section_order);
			report_override(ld, o.text, "unknown section \"%s\"%s%s%s", o.section,
			                near ? "; did you mean \"" : "", near ? near : "", near ? "\"?" : "");
			continue;
		}
		if (!component_pass && strcmp(o.key, "plugin") == 0) {
			if (!is_component_section(o.section)) {
				report_override(ld, o.text, "section %s has no plugin", o.section);
				continue;
			}
			config_setting_t *group = section_group(ld, &o, 1);
			if (!group || config_setting_type(group) != CONFIG_TYPE_GROUP) {
				report_override(ld, o.text, "%s is not a group in the file", o.section);
				continue;
			}
			tree_set(ld, group, &o, NULL);
			continue;
		}
		/* The section's declaration types the value. */
		const df_pipeline_section *sec = component_pass ? df_pipeline_get(ld->p, o.section) : NULL;
		if (!sec && component_pass) {
			if (!section_group(ld, &o, 0))
				report_override(ld, o.text, "the pipeline has no %s section: set -o %s.plugin=NAME first",
				                o.section, o.section);
			continue; /* else the section's own error was reported */
		}
		const df_setting *decl = sec ? section_decl(sec) : df_runtime_section(o.section, NULL);
		const df_setting *s = df_settings_find(decl, o.key);
		if (!s) {
			const char **names = dfr_setting_names(decl, NULL);
			const char *near = names ? df_suggest(o.key, names) : NULL;
			report_override(ld, o.text, "unknown setting \"%s\" of %s%s%s%s", o.key, o.section,
			                near ? "; did you mean \"" : "", near ? near : "", near ? "\"?" : "");
			free(names);
			continue;
		}
		config_setting_t *group = section_group(ld, &o, 1);
		if (group && config_setting_type(group) == CONFIG_TYPE_GROUP)
			tree_set(ld, group, &o, s);
	}
}

/* ------------------------------------------------------------------ */
/* Sections. */

static int has_prefix_match(const char *line, const char *name)
{
	/* A refusal line "dir/libname.so: ..." or one that quotes "name". */
	char quoted[96];
	snprintf(quoted, sizeof quoted, "\"%s\"", name);
	if (strstr(line, quoted))
		return 1;
	const char *colon = strstr(line, ".so:");
	if (!colon)
		return 0;
	const char *base = line;
	for (const char *c = line; c < colon; c++)
		if (*c == '/')
			base = c + 1;
	if (strncmp(base, "lib", 3) == 0)
		base += 3;
	size_t n = strlen(name);
	return (size_t)(colon - base) == n && strncmp(base, name, n) == 0;
}

static void report_missing_component(loader *ld, const config_setting_t *where, df_kind kind, const char *name)
{
	const char *kind_name = df_kind_name(kind);
	/* A refusal that explains it is the best answer. */
	for (size_t i = 0; i < df_registry_refusal_count(ld->reg); i++) {
		const char *line = df_registry_refusal(ld->reg, i);
		if (has_prefix_match(line, name)) {
			report(ld, where, "%s.plugin: no %s named \"%s\": %s", kind_name, kind_name, name, line);
			return;
		}
	}
	const df_component_info *other = df_registry_find(ld->reg, 0, name);
	if (other) {
		report(ld, where, "%s.plugin: \"%s\" is a %s, not %s %s", kind_name, name,
		       df_kind_name(other->component->kind), strchr("aeiou", kind_name[0]) ? "an" : "a", kind_name);
		return;
	}
	size_t n = df_registry_count(ld->reg), k = 0;
	const char **names = calloc(n + 1, sizeof *names);
	for (size_t i = 0; names && i < n; i++) {
		const df_component *c = df_registry_get(ld->reg, i)->component;
		if (c->kind == kind)
			names[k++] = c->name;
	}
	const char *near = names ? df_suggest(name, names) : NULL;
	size_t refused = df_registry_refusal_count(ld->reg);
	if (near)
		report(ld, where, "%s.plugin: no %s named \"%s\"; did you mean \"%s\"?", kind_name, kind_name, name, near);
	else if (refused)
		report(ld, where, "%s.plugin: no %s named \"%s\" (%zu plugin file%s refused: see `diffuse plugins`)",
		       kind_name, kind_name, name, refused, refused == 1 ? " was" : "s were");
	else
		report(ld, where, "%s.plugin: no %s named \"%s\" (`diffuse plugins` lists them)", kind_name, kind_name,
		       name);
	free(names);
}

static df_pipeline_section *add_section(df_pipeline *p, const char *name)
{
	df_pipeline_section *sec = &p->sections[p->n_sections++];
	memset(sec, 0, sizeof *sec);
	sec->name = name;
	return sec;
}

static void read_source(const config_setting_t *cs, df_source *src)
{
	if (config_setting_get_hook(cs)) {
		src->file = COMMAND_LINE;
		src->line = 0;
	} else {
		src->file = config_setting_source_file(cs);
		src->line = (int)config_setting_source_line(cs);
	}
}

/* Finds each component section's plugin; sections stay unfilled. */
static void resolve_sections(loader *ld)
{
	config_setting_t *root = config_root_setting(&ld->cfg);
	for (int i = 0; section_order[i]; i++) {
		const char *name = section_order[i];
		const config_setting_t *group = config_setting_get_member(root, name);
		if (!group)
			continue;
		if (config_setting_type(group) != CONFIG_TYPE_GROUP) {
			report(ld, group, "%s must be a group: %s = { ... };", name, name);
			continue;
		}
		df_kind kind = df_kind_from_name(name);
		if (!kind) {
			df_pipeline_section *sec = add_section(ld->p, name);
			sec->settings = df_runtime_section(name, &sec->settings_size);
			read_source(group, &sec->source);
			continue;
		}
		const config_setting_t *plugin = config_setting_get_member(group, "plugin");
		if (!plugin) {
			report(ld, group, "%s: no plugin = \"NAME\"; (`diffuse plugins` lists the %ss)", name, name);
			continue;
		}
		if (config_setting_type(plugin) != CONFIG_TYPE_STRING) {
			report(ld, plugin, "%s.plugin: expected a string, got a %s", name,
			       config_type_name(config_setting_type(plugin)));
			continue;
		}
		const char *wanted = config_setting_get_string(plugin);
		const df_component_info *info = df_registry_find(ld->reg, kind, wanted);
		if (!info) {
			report_missing_component(ld, plugin, kind, wanted);
			continue;
		}
		df_pipeline_section *sec = add_section(ld->p, name);
		sec->kind = kind;
		sec->component = info;
		sec->settings = info->component->settings;
		sec->settings_size = info->component->settings_size;
		read_source(group, &sec->source);
	}
}

static void fill_sections(loader *ld)
{
	config_setting_t *root = config_root_setting(&ld->cfg);
	for (size_t i = 0; i < ld->p->n_sections; i++) {
		df_pipeline_section *sec = &ld->p->sections[i];
		sec->values = calloc(1, sec->settings_size ? sec->settings_size : 1);
		if (!sec->values) {
			report(ld, NULL, "out of memory");
			return;
		}
		df_error why;
		if (df_settings_defaults(sec->settings, sec->values, &why) != DF_OK) {
			report(ld, NULL, "%s: %s", sec->name, why.msg);
			continue;
		}
		char label[128];
		fill_group(ld, sec->name, section_label(sec, label, sizeof label), config_setting_get_member(root, sec->name),
		           sec->settings, sec->values, sec->kind ? "plugin" : NULL);
	}
}

/* ------------------------------------------------------------------ */
/* The top level. */

static int valid_run_name(const char *name)
{
	if (!*name || name[0] == '.')
		return 0;
	for (const char *c = name; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') || *c == '-' ||
		      *c == '_' || *c == '.'))
			return 0;
	return 1;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

/* Checks name and turns plugin_path into absolute directories, so the
 * resolved file works from anywhere. */
static void resolve_top(loader *ld, const char *base_dir)
{
	config_setting_t *root = config_root_setting(&ld->cfg);
	df_pipeline_settings *top = &ld->p->top;
	df_error why;
	if (!*top->name) {
		const char *base = strrchr(ld->path, '/');
		base = base ? base + 1 : ld->path;
		size_t len = strcspn(base, ".");
		char name[256];
		snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), base);
		df_settings_set(df_runtime_section("", NULL), top, "name", name, &why);
	}
	if (!valid_run_name(top->name))
		report(ld, config_setting_get_member(root, "name"),
		       "name: \"%s\" is not a folder name (letters, digits, '-', '_', '.'; not starting with '.')",
		       top->name);
	if (!*top->plugin_path)
		return;
	const config_setting_t *where = config_setting_get_member(root, "plugin_path");
	char resolved[4096];
	size_t used = 0;
	resolved[0] = '\0';
	char *copy = strdup(top->plugin_path);
	char *save = NULL;
	for (char *item = copy ? strtok_r(copy, ":", &save) : NULL; item; item = strtok_r(NULL, ":", &save)) {
		char full[PATH_MAX], real[PATH_MAX];
		snprintf(full, sizeof full, "%s%s%s", item[0] == '/' ? "" : base_dir, item[0] == '/' ? "" : "/", item);
		if (!realpath(full, real)) {
			report(ld, where, "plugin_path: %s: %s", full, strerror(errno));
			continue;
		}
		used += (size_t)snprintf(resolved + used, used < sizeof resolved ? sizeof resolved - used : 0, "%s%s",
		                         used ? ":" : "", real);
	}
	free(copy);
	if (used < sizeof resolved) {
		df_settings_set(df_runtime_section("", NULL), top, "plugin_path", resolved, &why);
		df_error load_err;
		if (df_registry_load_path(ld->reg, resolved, NULL, &load_err) != DF_OK)
			report(ld, where, "plugin_path: %s", load_err.msg);
	}
}

/* ------------------------------------------------------------------ */

static void free_sections(df_pipeline *p)
{
	for (size_t i = 0; i < p->n_sections; i++) {
		df_settings_release(p->sections[i].settings, p->sections[i].values);
		free(p->sections[i].values);
	}
	p->n_sections = 0;
}

void df_pipeline_destroy(df_pipeline *p)
{
	if (!p)
		return;
	free_sections(p);
	df_settings_release(df_runtime_section("", NULL), &p->top);
	free(p->file);
	free(p);
}

int df_pipeline_load(df_registry *reg, const char *path, const df_pipeline_options *options,
                     df_pipeline **pipeline, df_error *err)
{
	df_error local;
	if (!err)
		err = &local;
	*pipeline = NULL;
	if (options && options->struct_size < offsetof(df_pipeline_options, report_ctx) + sizeof(void *))
		return df_error_set(err, DF_EINVAL, "df_pipeline_load: options->struct_size is too small");
	loader ld = {.path = path, .reg = reg, .options = options, .err = err};
	ld.p = calloc(1, sizeof *ld.p);
	char *base_dir = dir_of(path);
	if (!ld.p || !base_dir || !(ld.p->file = strdup(path))) {
		free(base_dir);
		df_pipeline_destroy(ld.p);
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
	}
	config_init(&ld.cfg);
	config_set_options(&ld.cfg, CONFIG_OPTION_AUTOCONVERT);
	config_set_include_dir(&ld.cfg, base_dir);
	int status = DF_OK;
	if (config_read_file(&ld.cfg, path) != CONFIG_TRUE) {
		if (config_error_type(&ld.cfg) == CONFIG_ERR_FILE_IO) {
			status = df_error_set(err, DF_EIO, "%s: cannot read: %s", path, strerror(errno ? errno : ENOENT));
			if (options && options->report)
				options->report(options->report_ctx, err->msg);
		} else {
			const char *file = config_error_file(&ld.cfg);
			ld.errors++;
			const char *text = config_error_text(&ld.cfg);
			/* libconfig 1.5 cannot redefine a setting, not even one from @include. */
			const char *hint = strstr(text, "duplicate setting")
				? " (a setting, even an @included one, can be given once: change it with -o or move it out of the shared file)"
				: "";
			df_error_set(err, DF_EINVAL, "%s:%d: %s%s", file ? file : path, config_error_line(&ld.cfg), text, hint);
			if (options && options->report)
				options->report(options->report_ctx, err->msg);
		}
	}
	if (!status && !ld.errors) {
		config_setting_t *root = config_root_setting(&ld.cfg);
		apply_overrides(&ld, 0);
		/* Top level first: plugin_path may bring the components. */
		const df_setting *top_decl = df_runtime_section("", NULL);
		df_error why;
		df_settings_defaults(top_decl, &ld.p->top, &why);
		for (int i = 0; i < config_setting_length(root); i++) {
			const config_setting_t *cs = config_setting_get_elem(root, (unsigned)i);
			const char *key = config_setting_name(cs);
			if (is_section(key) || df_settings_find(top_decl, key))
				continue;
			const char *near = suggest_top(key);
			if (near)
				report(&ld, cs, "%s: unknown %s; did you mean \"%s\"?", key,
				       config_setting_is_group(cs) ? "section" : "setting", near);
			else
				report(&ld, cs, "%s: unknown %s", key, config_setting_is_group(cs) ? "section" : "setting");
		}
		for (const df_setting *s = top_decl; s->name; s++) {
			const config_setting_t *cs = config_setting_get_member(root, s->name);
			if (cs)
				store_setting(&ld, "", s, &ld.p->top, cs);
		}
		resolve_top(&ld, base_dir);
		resolve_sections(&ld);
		apply_overrides(&ld, 1);
		fill_sections(&ld);
		if (ld.errors)
			status = DF_EINVAL;
	} else if (!status) {
		status = DF_EINVAL;
	}
	config_destroy(&ld.cfg);
	free(base_dir);
	if (status) {
		df_pipeline_destroy(ld.p);
		return status;
	}
	*pipeline = ld.p;
	return DF_OK;
}

/* ------------------------------------------------------------------ */
/* Accessors. */

const char *df_pipeline_file(const df_pipeline *p) { return p->file; }
const df_pipeline_settings *df_pipeline_top(const df_pipeline *p) { return &p->top; }
size_t df_pipeline_section_count(const df_pipeline *p) { return p->n_sections; }

const df_pipeline_section *df_pipeline_section_at(const df_pipeline *p, size_t index)
{
	return index < p->n_sections ? &p->sections[index] : NULL;
}

const df_pipeline_section *df_pipeline_get(const df_pipeline *p, const char *name)
{
	for (size_t i = 0; p && i < p->n_sections; i++)
		if (strcmp(p->sections[i].name, name) == 0)
			return &p->sections[i];
	return NULL;
}

int df_pipeline_has_stage(const df_pipeline *p, const char *stage)
{
	const df_pipeline_section *sec = df_pipeline_get(p, stage);
	return sec && !sec->kind;
}

/* ------------------------------------------------------------------ */
/* Writing the resolved pipeline. */

static void write_settings(FILE *out, const df_setting *decl, const void *values, const char *indent)
{
	for (const df_setting *s = decl; s && s->name; s++) {
		int n = df_settings_format(s, values, NULL, 0);
		char *text = malloc((size_t)n + 1);
		if (!text)
			continue;
		df_settings_format(s, values, text, (size_t)n + 1);
		fprintf(out, "%s%s = %s;\n", indent, s->name, text);
		free(text);
	}
}

int df_pipeline_write(const df_pipeline *p, FILE *out, df_error *err)
{
	fprintf(out, "# %s, resolved by diffuse %s: every setting written out.\n", p->file, PACKAGE_VERSION);
	write_settings(out, df_runtime_section("", NULL), &p->top, "");
	for (size_t i = 0; i < p->n_sections; i++) {
		const df_pipeline_section *sec = &p->sections[i];
		fprintf(out, "\n%s = {\n", sec->name);
		if (sec->component)
			fprintf(out, "\tplugin = \"%s\"; # %s %s, %s\n", sec->component->component->name,
			        sec->component->plugin, sec->component->version, sec->component->file);
		write_settings(out, sec->settings, sec->values, "\t");
		fprintf(out, "};\n");
	}
	if (ferror(out))
		return df_error_set(err, DF_EIO, "%s: write error", p->file);
	return DF_OK;
}

int dfr_write_atomically(const char *path, int (*write)(const void *obj, FILE *out, df_error *err),
                         const void *obj, df_error *err)
{
	size_t len = strlen(path) + 16;
	char *tmp = malloc(len);
	if (!tmp)
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
	snprintf(tmp, len, "%s.tmp.XXXXXX", path);
	int fd = mkstemp(tmp);
	if (fd < 0) {
		int status = df_error_set(err, DF_EIO, "%s: %s", path, strerror(errno));
		free(tmp);
		return status;
	}
	FILE *out = fdopen(fd, "w");
	int status = out ? write(obj, out, err) : df_error_set(err, DF_EIO, "%s: %s", path, strerror(errno));
	if (out) {
		if (!status && (fflush(out) != 0 || fsync(fd) != 0))
			status = df_error_set(err, DF_EIO, "%s: %s", path, strerror(errno));
		if (fclose(out) != 0 && !status)
			status = df_error_set(err, DF_EIO, "%s: %s", path, strerror(errno));
	} else {
		close(fd);
	}
	if (!status && rename(tmp, path) != 0)
		status = df_error_set(err, DF_EIO, "%s: %s", path, strerror(errno));
	if (status)
		unlink(tmp);
	free(tmp);
	return status;
}

static int write_pipeline(const void *p, FILE *out, df_error *err) { return df_pipeline_write(p, out, err); }

int df_pipeline_write_file(const df_pipeline *p, const char *path, df_error *err)
{
	return dfr_write_atomically(path, write_pipeline, p, err);
}
