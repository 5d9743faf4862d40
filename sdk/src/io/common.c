/* Error messages and atomic file replacement for the file-format units. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io_private.h"

int df__fail(df_error *err, int status, const char *subject, const char *fmt, ...)
{
	if (!err)
		return status;
	int len = snprintf(err->msg, sizeof err->msg, "%s: ", subject ? subject : "(null)");
	if (len < 0 || (size_t)len >= sizeof err->msg)
		return status;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg + len, sizeof err->msg - (size_t)len, fmt, ap);
	va_end(ap);
	/* one line, whatever a file name or a library message contained */
	for (char *c = err->msg; *c; c++)
		if (*c == '\n' || *c == '\r')
			*c = ' ';
	return status;
}

int df__atomic_open(df__atomic_file *af, const char *path, df_error *err)
{
	static const char suffix[] = ".tmp.XXXXXX";
	af->fp = NULL;
	af->path = path;
	af->tmp_path = malloc(strlen(path) + sizeof suffix);
	if (!af->tmp_path)
		return df__fail(err, -ENOMEM, path, "out of memory");
	strcpy(af->tmp_path, path);
	strcat(af->tmp_path, suffix);

	int fd = mkstemp(af->tmp_path);
	if (fd < 0) {
		int e = errno;
		df__fail(err, -e, path, "cannot create a temporary file beside it: %s", strerror(e));
		free(af->tmp_path);
		af->tmp_path = NULL;
		return -e;
	}
	/* mkstemp creates 0600; outputs are meant to be shared like any file */
	(void)fchmod(fd, 0644);
	af->fp = fdopen(fd, "wb");
	if (!af->fp) {
		int e = errno;
		close(fd);
		unlink(af->tmp_path);
		free(af->tmp_path);
		af->tmp_path = NULL;
		return df__fail(err, -e, path, "cannot open a temporary file: %s", strerror(e));
	}
	return 0;
}

void df__atomic_abort(df__atomic_file *af)
{
	if (af->fp)
		fclose(af->fp);
	if (af->tmp_path) {
		unlink(af->tmp_path);
		free(af->tmp_path);
	}
	af->fp = NULL;
	af->tmp_path = NULL;
}

/* Makes the rename itself durable; failure here loses nothing already
 * written, so it is not reported. */
static void sync_parent_directory(const char *path)
{
	char *dir = strdup(path);
	if (!dir)
		return;
	char *slash = strrchr(dir, '/');
	const char *name = ".";
	if (slash == dir)
		name = "/";
	else if (slash) {
		*slash = '\0';
		name = dir;
	}
	int fd = open(name, O_RDONLY | O_DIRECTORY);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
	free(dir);
}

int df__atomic_commit(df__atomic_file *af, df_error *err)
{
	const char *what = NULL;
	int e = 0;
	if (fflush(af->fp) != 0 || ferror(af->fp))
		what = "cannot write";
	else if (fsync(fileno(af->fp)) != 0)
		what = "cannot sync";
	if (what)
		e = errno ? errno : EIO;
	int closed = fclose(af->fp);
	af->fp = NULL;
	if (!what && closed != 0) {
		what = "cannot close";
		e = errno;
	}
	if (!what && rename(af->tmp_path, af->path) != 0) {
		what = "cannot rename the temporary file over it";
		e = errno;
	}
	if (what) {
		df__fail(err, -e, af->path, "%s: %s", what, strerror(e));
		df__atomic_abort(af);
		return -e;
	}
	sync_parent_directory(af->path);
	free(af->tmp_path);
	af->tmp_path = NULL;
	return 0;
}
