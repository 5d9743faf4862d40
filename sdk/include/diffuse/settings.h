/* Declared, typed settings. A component lists its settings once (name,
 * type, where the value lives in its settings struct, default, range or
 * choices, help). The runtime validates a pipeline section against that
 * list, fills defaults, applies `-o` overrides and hands the component a
 * filled struct: plugins never see libconfig. `diffuse help NAME` prints
 * the same list. */
#ifndef DIFFUSE_SETTINGS_H
#define DIFFUSE_SETTINGS_H

#include <stddef.h>
#include <stdint.h>
#include <float.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum df_setting_type {
	DF_SETTING_INT = 1,    /* stored as int64_t */
	DF_SETTING_FLOAT = 2,  /* stored as double; integers in files are accepted */
	DF_SETTING_BOOL = 3,   /* stored as int (0 or 1) */
	DF_SETTING_STRING = 4, /* stored as const char *, owned by the runtime */
	DF_SETTING_LIST = 5,   /* stored as df_list: up to DF_LIST_MAX numbers */
} df_setting_type;

#define DF_LIST_MAX 16
typedef struct df_list {
	int n;
	double v[DF_LIST_MAX];
} df_list;

/* One declared setting. Arrays of these end with an entry whose name is
 * NULL. The layout of this struct is frozen for ABI major 1. */
typedef struct df_setting {
	const char *name;
	df_setting_type type;
	size_t offset;              /* offsetof(settings struct, field) */
	const char *default_value;  /* as written in a pipeline: "0.1", "true", "linear", "[1, 2]"; NULL = required */
	double min, max;            /* inclusive range for numbers and list items; -DBL_MAX..DBL_MAX = any */
	const char *const *choices; /* strings: NULL-terminated allowed values, or NULL for free text */
	const char *help;           /* one line */
} df_setting;

#define DF_ANY_MIN (-DBL_MAX)
#define DF_ANY_MAX (DBL_MAX)

/* Declaration helpers: `DF_SETTING_FLOAT(my_settings, lr, "1e-4", 0, 1, "learning rate")`. */
#define DF_SETTING_INT(S, field, def, lo, hi, help) \
	{ #field, DF_SETTING_INT, offsetof(S, field), def, lo, hi, NULL, help }
#define DF_SETTING_FLOAT(S, field, def, lo, hi, help) \
	{ #field, DF_SETTING_FLOAT, offsetof(S, field), def, lo, hi, NULL, help }
#define DF_SETTING_BOOL(S, field, def, help) \
	{ #field, DF_SETTING_BOOL, offsetof(S, field), def, 0, 1, NULL, help }
#define DF_SETTING_STRING(S, field, def, help) \
	{ #field, DF_SETTING_STRING, offsetof(S, field), def, DF_ANY_MIN, DF_ANY_MAX, NULL, help }
#define DF_SETTING_CHOICE(S, field, def, choices, help) \
	{ #field, DF_SETTING_STRING, offsetof(S, field), def, DF_ANY_MIN, DF_ANY_MAX, choices, help }
#define DF_SETTING_LIST(S, field, def, lo, hi, help) \
	{ #field, DF_SETTING_LIST, offsetof(S, field), def, lo, hi, NULL, help }
#define DF_SETTINGS_END { NULL, 0, 0, NULL, 0, 0, NULL, NULL }

/* Index of a string setting's value among its choices (-1 if absent). */
int df_choice_index(const char *const *choices, const char *value);

#ifdef __cplusplus
}
#endif
#endif
