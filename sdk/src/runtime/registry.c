/* The plugin registry: finds plugin files, loads them, checks their ABI and
 * descriptors, and keeps host-sized copies of their components.
 *
 * Every refusal is one line "file: reason", recorded in the registry, and
 * loading goes on with the next file. Copies follow the append-only rule
 * of plugin.h: struct_size bytes of the plugin's struct go into a zeroed
 * struct of the host's size, so slots the plugin never knew read NULL. */
#include "config.h"
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "diffuse/runtime.h"
#include "runtime_private.h"

typedef struct loaded_plugin {
	void *handle;
	char *file;      /* as given */
	char *real_path; /* to notice the same file seen twice */
	df_plugin descriptor;
} loaded_plugin;

typedef struct registry_entry {
	df_component_info info;
	df_component component; /* host-sized copy */
	void *vtable;           /* host-sized copy */
} registry_entry;

struct df_registry {
	loaded_plugin **plugins;
	size_t n_plugins, cap_plugins;
	registry_entry **entries;
	size_t n_entries, cap_entries;
	char **refusals;
	size_t n_refusals, cap_refusals;
};

/* ------------------------------------------------------------------ */
/* What the host knows of each kind's vtable. */

typedef struct required_slot {
	const char *name;
	size_t offset;
} required_slot;

typedef struct kind_table {
	df_kind kind;
	const char *name;
	size_t vtable_size;
	required_slot required[6];
} kind_table;

#define SLOT(T, f) { #f, offsetof(T, f) }

static const kind_table kinds[] = {
	{DF_KIND_DATASET, "dataset", sizeof(df_dataset_vtable),
	 {SLOT(df_dataset_vtable, open), SLOT(df_dataset_vtable, close), SLOT(df_dataset_vtable, info),
	  SLOT(df_dataset_vtable, fetch)}},
	{DF_KIND_ENCODER, "encoder", sizeof(df_encoder_vtable),
	 {SLOT(df_encoder_vtable, create), SLOT(df_encoder_vtable, destroy), SLOT(df_encoder_vtable, latent_shape),
	  SLOT(df_encoder_vtable, encode), SLOT(df_encoder_vtable, decode)}},
	{DF_KIND_BACKBONE, "backbone", sizeof(df_backbone_vtable),
	 {SLOT(df_backbone_vtable, create), SLOT(df_backbone_vtable, destroy), SLOT(df_backbone_vtable, params),
	  SLOT(df_backbone_vtable, init), SLOT(df_backbone_vtable, forward)}},
	{DF_KIND_OBJECTIVE, "objective", sizeof(df_objective_vtable),
	 {SLOT(df_objective_vtable, create), SLOT(df_objective_vtable, destroy), SLOT(df_objective_vtable, process),
	  SLOT(df_objective_vtable, out_channels), SLOT(df_objective_vtable, loss)}},
	{DF_KIND_SAMPLER, "sampler", sizeof(df_sampler_vtable),
	 {SLOT(df_sampler_vtable, create), SLOT(df_sampler_vtable, destroy), SLOT(df_sampler_vtable, check),
	  SLOT(df_sampler_vtable, sample)}},
	{DF_KIND_METRIC, "metric", sizeof(df_metric_vtable),
	 {SLOT(df_metric_vtable, create), SLOT(df_metric_vtable, destroy), SLOT(df_metric_vtable, update),
	  SLOT(df_metric_vtable, result)}},
};

static const kind_table *kind_lookup(df_kind kind)
{
	for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
		if (kinds[i].kind == kind)
			return &kinds[i];
	return NULL;
}

const char *df_kind_name(df_kind kind)
{
	const kind_table *k = kind_lookup(kind);
	return k ? k->name : NULL;
}

df_kind df_kind_from_name(const char *name)
{
	for (size_t i = 0; name && i < sizeof kinds / sizeof kinds[0]; i++)
		if (strcmp(kinds[i].name, name) == 0)
			return kinds[i].kind;
	return 0;
}

/* ------------------------------------------------------------------ */

int df_registry_create(df_registry **reg, df_error *err)
{
	*reg = calloc(1, sizeof **reg);
	if (!*reg)
		return df_error_set(err, DF_ENOMEM, "registry: out of memory");
	return DF_OK;
}

void df_registry_destroy(df_registry *reg)
{
	if (!reg)
		return;
	for (size_t i = 0; i < reg->n_entries; i++) {
		free(reg->entries[i]->vtable);
		free(reg->entries[i]);
	}
	for (size_t i = 0; i < reg->n_plugins; i++) {
		if (reg->plugins[i]->handle)
			dlclose(reg->plugins[i]->handle);
		free(reg->plugins[i]->file);
		free(reg->plugins[i]->real_path);
		free(reg->plugins[i]);
	}
	for (size_t i = 0; i < reg->n_refusals; i++)
		free(reg->refusals[i]);
	free(reg->entries);
	free(reg->plugins);
	free(reg->refusals);
	free(reg);
}

int dfr_grow(void **array, size_t *cap, size_t need, size_t item_size)
{
	if (need <= *cap)
		return 0;
	size_t n = *cap ? *cap * 2 : 8;
	while (n < need)
		n *= 2;
	void *p = realloc(*array, n * item_size);
	if (!p)
		return -1;
	*array = p;
	*cap = n;
	return 0;
}

/* Records "file: reason" (the reason is in err) and returns status. */
static int refuse(df_registry *reg, const char *file, int status, df_error *err)
{
	df_error_prefix(err, status, "%s", file);
	if (dfr_grow((void **)&reg->refusals, &reg->cap_refusals, reg->n_refusals + 1, sizeof(char *)) == 0) {
		char *line = strdup(err->msg);
		if (line)
			reg->refusals[reg->n_refusals++] = line;
	}
	return status;
}

size_t df_registry_refusal_count(const df_registry *reg) { return reg->n_refusals; }

const char *df_registry_refusal(const df_registry *reg, size_t index)
{
	return index < reg->n_refusals ? reg->refusals[index] : NULL;
}

size_t df_registry_count(const df_registry *reg) { return reg->n_entries; }

const df_component_info *df_registry_get(const df_registry *reg, size_t index)
{
	return index < reg->n_entries ? &reg->entries[index]->info : NULL;
}

const df_component_info *df_registry_find(const df_registry *reg, df_kind kind, const char *name)
{
	for (size_t i = 0; name && i < reg->n_entries; i++) {
		const df_component *c = reg->entries[i]->info.component;
		if ((kind == 0 || c->kind == kind) && strcmp(c->name, name) == 0)
			return &reg->entries[i]->info;
	}
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Checking one descriptor. */

static int valid_component_name(const char *name)
{
	if (!name || !*name || strlen(name) > 64)
		return 0;
	for (const char *p = name; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' || *p == '+'))
			return 0;
	return 1;
}

/* Copies and checks one component into entry (which owns the vtable copy). */
static int take_component(const df_component *given, registry_entry *entry, df_error *err)
{
	const size_t frozen = offsetof(df_component, vtable) + sizeof(given->vtable);
	if (given->struct_size < frozen)
		return df_error_set(err, DF_EINVAL, "component struct_size %zu is smaller than ABI 1.0's %zu",
		                    given->struct_size, frozen);
	memset(&entry->component, 0, sizeof entry->component);
	memcpy(&entry->component, given,
	       given->struct_size < sizeof entry->component ? given->struct_size : sizeof entry->component);
	df_component *c = &entry->component;
	c->struct_size = sizeof *c;
	if (!valid_component_name(c->name))
		return df_error_set(err, DF_EINVAL, "component name \"%s\" is not made of a-z, 0-9, '-', '_', '.', '+'",
		                    c->name ? c->name : "(null)");
	const kind_table *k = kind_lookup(c->kind);
	if (!k)
		return df_error_set(err, DF_EINVAL, "component \"%s\": unknown kind %d", c->name, (int)c->kind);
	if (!c->summary)
		c->summary = "";
	int status = df_settings_check(c->settings, c->settings_size, err);
	if (status)
		return df_error_prefix(err, status, "%s \"%s\"", k->name, c->name);
	if (!c->vtable)
		return df_error_set(err, DF_EINVAL, "%s \"%s\": no vtable", k->name, c->name);
	size_t given_size;
	memcpy(&given_size, c->vtable, sizeof given_size);
	if (given_size < sizeof(size_t))
		return df_error_set(err, DF_EINVAL, "%s \"%s\": vtable struct_size %zu is too small", k->name,
		                    c->name, given_size);
	entry->vtable = calloc(1, k->vtable_size);
	if (!entry->vtable)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	memcpy(entry->vtable, c->vtable, given_size < k->vtable_size ? given_size : k->vtable_size);
	size_t host_size = k->vtable_size;
	memcpy(entry->vtable, &host_size, sizeof host_size);
	for (const required_slot *slot = k->required; slot->name; slot++) {
		void (*fn)(void);
		memcpy(&fn, (char *)entry->vtable + slot->offset, sizeof fn);
		if (!fn)
			return df_error_set(err, DF_EINVAL, "%s \"%s\": the vtable has no '%s' slot, which is required",
			                    k->name, c->name, slot->name);
	}
	c->vtable = entry->vtable;
	return DF_OK;
}

static int check_descriptor(const df_plugin *given, df_plugin *out, df_error *err)
{
	if (given->abi_major != DF_ABI_MAJOR)
		return df_error_set(err, DF_EINVAL, "plugin ABI %u.%u, host ABI %d.%d: rebuild the plugin against this diffuse",
		                    given->abi_major, given->abi_minor, DF_ABI_MAJOR, DF_ABI_MINOR);
	if (given->abi_minor > DF_ABI_MINOR)
		return df_error_set(err, DF_EINVAL, "plugin ABI %u.%u is newer than the host's ABI %d.%d: update diffuse",
		                    given->abi_major, given->abi_minor, DF_ABI_MAJOR, DF_ABI_MINOR);
	const size_t frozen = offsetof(df_plugin, components) + sizeof(given->components);
	if (given->struct_size < frozen)
		return df_error_set(err, DF_EINVAL, "descriptor struct_size %zu is smaller than ABI 1.0's %zu",
		                    given->struct_size, frozen);
	memset(out, 0, sizeof *out);
	memcpy(out, given, given->struct_size < sizeof *out ? given->struct_size : sizeof *out);
	out->struct_size = sizeof *out;
	if (!out->name || !*out->name)
		return df_error_set(err, DF_EINVAL, "the descriptor has no plugin name");
	if (!out->version)
		out->version = "";
	if (!out->license)
		out->license = "";
	if (!out->components || !out->components[0])
		return df_error_set(err, DF_EINVAL, "plugin \"%s\" has no components", out->name);
	return DF_OK;
}

/* ------------------------------------------------------------------ */
/* Loading. */

static int world_writable(const char *path, df_error *err)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return df_error_set(err, DF_EIO, "%s", strerror(errno));
	return (st.st_mode & S_IWOTH) != 0;
}

/* Refuses files anyone could replace: the file itself or its directory. */
static int check_location(const char *real_path, df_error *err)
{
	struct stat st;
	if (stat(real_path, &st) != 0)
		return df_error_set(err, DF_EIO, "%s", strerror(errno));
	if (!S_ISREG(st.st_mode))
		return df_error_set(err, DF_EINVAL, "not a regular file");
	if (st.st_mode & S_IWOTH)
		return df_error_set(err, DF_EINVAL, "the file is world-writable, refusing to load it (chmod o-w)");
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s", real_path);
	char *slash = strrchr(dir, '/');
	if (slash == dir)
		slash[1] = '\0';
	else if (slash)
		*slash = '\0';
	else
		snprintf(dir, sizeof dir, ".");
	int ww = world_writable(dir, err);
	if (ww < 0)
		return ww;
	if (ww)
		return df_error_set(err, DF_EINVAL, "its directory %s is world-writable, refusing to load it (chmod o-w)",
		                    dir);
	return DF_OK;
}

static const loaded_plugin *plugin_of_real_path(const df_registry *reg, const char *real_path)
{
	for (size_t i = 0; i < reg->n_plugins; i++)
		if (strcmp(reg->plugins[i]->real_path, real_path) == 0)
			return reg->plugins[i];
	return NULL;
}

/* dlerror() usually starts with the file name; the line already has it. */
static const char *strip_file(const char *message, const char *file)
{
	size_t n = strlen(file);
	if (strncmp(message, file, n) == 0 && message[n] == ':')
		message += n + 1;
	while (*message == ' ')
		message++;
	return message;
}

static void free_plugin(loaded_plugin *p)
{
	if (!p)
		return;
	if (p->handle)
		dlclose(p->handle);
	free(p->file);
	free(p->real_path);
	free(p);
}

static void free_entries(registry_entry **entries, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (entries[i])
			free(entries[i]->vtable);
		free(entries[i]);
	}
	free(entries);
}

/* Finds the other file that already provides kind+name, if any. */
static const char *provider_of(const df_registry *reg, registry_entry **fresh, size_t n_fresh, df_kind kind,
                               const char *name)
{
	const df_component_info *old = df_registry_find(reg, kind, name);
	if (old)
		return old->file;
	for (size_t i = 0; i < n_fresh; i++)
		if (fresh[i] && fresh[i]->component.kind == kind && strcmp(fresh[i]->component.name, name) == 0)
			return fresh[i]->info.file;
	return NULL;
}

int df_registry_load_file(df_registry *reg, const char *file, df_error *err)
{
	df_error local;
	if (!err)
		err = &local;
	char real_path[PATH_MAX];
	if (!realpath(file, real_path))
		return refuse(reg, file, df_error_set(err, DF_EIO, "%s", strerror(errno)), err);
	if (plugin_of_real_path(reg, real_path))
		return DF_OK;
	int status = check_location(real_path, err);
	if (status)
		return refuse(reg, file, status, err);

	loaded_plugin *p = calloc(1, sizeof *p);
	if (!p || !(p->file = strdup(file)) || !(p->real_path = strdup(real_path))) {
		free_plugin(p);
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", file);
	}
	dlerror();
	p->handle = dlopen(real_path, RTLD_NOW | RTLD_LOCAL);
	if (!p->handle) {
		const char *why = dlerror();
		df_error_set(err, DF_EINVAL, "cannot load: %s (check missing dependencies with ldd)",
		             why ? strip_file(why, real_path) : "unknown error");
		free_plugin(p);
		return refuse(reg, file, DF_EINVAL, err);
	}
	df_plugin_entry_fn entry;
	void *sym = dlsym(p->handle, DF_PLUGIN_ENTRY_SYMBOL);
	if (!sym) {
		free_plugin(p);
		return refuse(reg, file,
		              df_error_set(err, DF_EINVAL, "no %s symbol: not a diffuse plugin", DF_PLUGIN_ENTRY_SYMBOL),
		              err);
	}
	memcpy(&entry, &sym, sizeof entry);
	const df_plugin *given = entry();
	if (!given) {
		free_plugin(p);
		return refuse(reg, file, df_error_set(err, DF_EINVAL, "%s returned NULL", DF_PLUGIN_ENTRY_SYMBOL), err);
	}
	status = check_descriptor(given, &p->descriptor, err);
	if (status) {
		free_plugin(p);
		return refuse(reg, file, status, err);
	}

	/* Check every component before keeping any: a malformed one refuses the file. */
	size_t n = 0;
	while (p->descriptor.components[n])
		n++;
	registry_entry **fresh = calloc(n, sizeof *fresh);
	if (!fresh) {
		free_plugin(p);
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", file);
	}
	for (size_t i = 0; i < n && !status; i++) {
		fresh[i] = calloc(1, sizeof *fresh[i]);
		if (!fresh[i]) {
			status = df_error_set(err, DF_ENOMEM, "out of memory");
			break;
		}
		status = take_component(p->descriptor.components[i], fresh[i], err);
		fresh[i]->info = (df_component_info){&fresh[i]->component, p->descriptor.name, p->descriptor.version,
		                                     p->descriptor.license, p->file};
	}
	if (status) {
		free_entries(fresh, n);
		free_plugin(p);
		return refuse(reg, file, status, err);
	}

	/* Duplicates are refused one by one; the file's other components stay. */
	size_t kept = 0;
	for (size_t i = 0; i < n; i++) {
		const df_component *c = &fresh[i]->component;
		const char *other = provider_of(reg, fresh, kept, c->kind, c->name);
		if (other) {
			df_error dup;
			df_error_set(&dup, DF_EINVAL, "%s \"%s\" is already provided by %s; this one is ignored",
			             df_kind_name(c->kind), c->name, other);
			refuse(reg, file, DF_EINVAL, &dup);
			free(fresh[i]->vtable);
			free(fresh[i]);
			fresh[i] = NULL;
			continue;
		}
		fresh[kept++] = fresh[i];
	}
	if (!kept ||
	    dfr_grow((void **)&reg->entries, &reg->cap_entries, reg->n_entries + kept, sizeof(registry_entry *)) ||
	    dfr_grow((void **)&reg->plugins, &reg->cap_plugins, reg->n_plugins + 1, sizeof(loaded_plugin *))) {
		free_entries(fresh, kept);
		free_plugin(p);
		return kept ? df_error_set(err, DF_ENOMEM, "%s: out of memory", file) : DF_OK;
	}
	for (size_t i = 0; i < kept; i++)
		reg->entries[reg->n_entries++] = fresh[i];
	free(fresh);
	reg->plugins[reg->n_plugins++] = p;
	return DF_OK;
}

static int compare_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);
	return n > m && strcmp(s + n - m, suffix) == 0;
}

int df_registry_load_dir(df_registry *reg, const char *dir, df_error *err)
{
	DIR *d = opendir(dir);
	if (!d)
		return DF_OK;
	char **names = NULL;
	size_t n = 0, cap = 0;
	int status = DF_OK;
	for (struct dirent *e; (e = readdir(d));) {
		if (e->d_name[0] == '.' || !ends_with(e->d_name, ".so"))
			continue;
		char *name = strdup(e->d_name);
		if (!name || dfr_grow((void **)&names, &cap, n + 1, sizeof *names)) {
			free(name);
			status = df_error_set(err, DF_ENOMEM, "%s: out of memory", dir);
			break;
		}
		names[n++] = name;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof *names, compare_names);
	for (size_t i = 0; i < n; i++) {
		if (!status) {
			size_t len = strlen(dir) + strlen(names[i]) + 2;
			char *path = malloc(len);
			if (!path) {
				status = df_error_set(err, DF_ENOMEM, "%s: out of memory", dir);
			} else {
				snprintf(path, len, "%s/%s", dir, names[i]);
				df_error ignored;
				if (df_registry_load_file(reg, path, &ignored) == DF_ENOMEM)
					status = df_error_set(err, DF_ENOMEM, "%s", ignored.msg);
				free(path);
			}
		}
		free(names[i]);
	}
	free(names);
	return status;
}

int df_registry_load_path(df_registry *reg, const char *path, const char *base_dir, df_error *err)
{
	if (!path)
		return DF_OK;
	char *copy = strdup(path);
	if (!copy)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	int status = DF_OK;
	char *save = NULL;
	for (char *item = strtok_r(copy, ":", &save); item && !status; item = strtok_r(NULL, ":", &save)) {
		char full[PATH_MAX];
		if (item[0] != '/' && base_dir)
			snprintf(full, sizeof full, "%s/%s", base_dir, item);
		else
			snprintf(full, sizeof full, "%s", item);
		struct stat st;
		if (stat(full, &st) != 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			status = df_registry_load_dir(reg, full, err);
		} else {
			df_error ignored;
			if (df_registry_load_file(reg, full, &ignored) == DF_ENOMEM)
				status = df_error_set(err, DF_ENOMEM, "%s", ignored.msg);
		}
	}
	free(copy);
	return status;
}

const char *df_registry_system_dir(void) { return DF_PLUGIN_DIR; }

int df_registry_load_default(df_registry *reg, df_error *err)
{
	const char *system = getenv("DIFFUSE_PLUGIN_SYSTEM_PATH");
	int status = df_registry_load_path(reg, system ? system : DF_PLUGIN_DIR, NULL, err);
	if (!status)
		status = df_registry_load_path(reg, getenv("DIFFUSE_PLUGIN_PATH"), NULL, err);
	return status;
}
