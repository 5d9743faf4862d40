/* Run folders: runs/<name>/ holds everything a run makes, starting with
 * the resolved pipeline it was made from. */
#include "config.h"
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "diffuse/runtime.h"
#include "runtime_private.h"

/* mkdir -p: creates each missing parent. */
static int make_dirs(const char *path, df_error *err)
{
	char *copy = strdup(path);
	if (!copy)
		return df_error_set(err, DF_ENOMEM, "%s: out of memory", path);
	int status = DF_OK;
	for (char *p = copy + 1; ; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char saved = *p;
		*p = '\0';
		if (mkdir(copy, 0777) != 0 && errno != EEXIST) {
			status = df_error_set(err, DF_EIO, "%s: cannot create: %s", copy, strerror(errno));
			break;
		}
		struct stat st;
		if (stat(copy, &st) != 0 || !S_ISDIR(st.st_mode)) {
			status = df_error_set(err, DF_EIO, "%s: not a directory", copy);
			break;
		}
		*p = saved;
		if (!saved)
			break;
	}
	free(copy);
	return status;
}

int df_run_prepare(const df_pipeline *p, const char *runs_dir, char **run_dir, df_error *err)
{
	*run_dir = NULL;
	const char *name = df_pipeline_top(p)->name;
	size_t len = strlen(runs_dir) + strlen(name) + 2;
	char *dir = malloc(len);
	if (!dir)
		return df_error_set(err, DF_ENOMEM, "out of memory");
	snprintf(dir, len, "%s/%s", runs_dir, name);
	int status = make_dirs(dir, err);
	if (!status) {
		size_t cfg_len = len + sizeof "/pipeline.cfg";
		char *cfg = malloc(cfg_len);
		if (!cfg) {
			status = df_error_set(err, DF_ENOMEM, "out of memory");
		} else {
			snprintf(cfg, cfg_len, "%s/pipeline.cfg", dir);
			status = df_pipeline_write_file(p, cfg, err);
			free(cfg);
		}
	}
	if (status) {
		free(dir);
		return status;
	}
	*run_dir = dir;
	return DF_OK;
}
