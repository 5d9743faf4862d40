/* Errors in the SDK: every fallible function returns an int status (0 on
 * success, a negative df_status otherwise) and fills a caller-provided
 * df_error with one line of text. The library never exits or aborts on bad
 * input; the host prefixes the message with plugin and file:line context. */
#ifndef DIFFUSE_ERROR_H
#define DIFFUSE_ERROR_H

#include <stdarg.h>

#ifdef __cplusplus
extern "C" {
#endif

enum df_status {
	DF_OK = 0,
	DF_EINVAL = -1,   /* bad argument, setting, shape or file content */
	DF_EIO = -2,      /* a file or device could not be read or written */
	DF_ENOMEM = -3,   /* an allocation failed */
	DF_ENOTSUP = -4,  /* valid, but this build or component cannot do it */
	DF_EINTR = -5,    /* interrupted (Ctrl-C); state was saved */
	DF_ENUMERIC = -6, /* a non-finite loss, gradient or tensor */
};

#ifndef DF_ERROR_DEFINED
#define DF_ERROR_DEFINED
typedef struct df_error {
	char msg[512];
} df_error;
#endif

#if defined(__GNUC__)
#define DF_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define DF_PRINTF(fmt, args)
#endif

/* Formats the message into err (if not NULL) and returns status, so a
 * failure is one line: `return df_error_set(err, DF_EINVAL, "...", ...);` */
int df_error_set(df_error *err, int status, const char *fmt, ...) DF_PRINTF(3, 4);
int df_error_vset(df_error *err, int status, const char *fmt, va_list ap);
/* Prepends "prefix: " to the message already in err; returns status. */
int df_error_prefix(df_error *err, int status, const char *fmt, ...) DF_PRINTF(3, 4);
/* A short name for a status, e.g. "invalid input". */
const char *df_status_string(int status);

#ifdef __cplusplus
}
#endif
#endif
