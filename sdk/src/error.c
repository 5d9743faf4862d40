#include "config.h"
#include <stdio.h>
#include <string.h>
#include "diffuse/error.h"

int df_error_vset(df_error *err, int status, const char *fmt, va_list ap)
{
	if (err)
		vsnprintf(err->msg, sizeof err->msg, fmt, ap);
	return status;
}

int df_error_set(df_error *err, int status, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	df_error_vset(err, status, fmt, ap);
	va_end(ap);
	return status;
}

int df_error_prefix(df_error *err, int status, const char *fmt, ...)
{
	if (!err)
		return status;
	char prefix[sizeof err->msg];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof prefix, fmt, ap);
	va_end(ap);
	char old[sizeof err->msg];
	memcpy(old, err->msg, sizeof old);
	snprintf(err->msg, sizeof err->msg, "%s: %s", prefix, old);
	return status;
}

const char *df_status_string(int status)
{
	switch (status) {
	case DF_OK: return "success";
	case DF_EINVAL: return "invalid input";
	case DF_EIO: return "input/output error";
	case DF_ENOMEM: return "out of memory";
	case DF_ENOTSUP: return "not supported";
	case DF_EINTR: return "interrupted";
	case DF_ENUMERIC: return "non-finite value";
	default: return "unknown error";
	}
}
