/* Settings internals shared by settings.c and the runtime's pipeline
 * reader: a value as read (from text or from a libconfig tree), before it
 * is checked against its declaration and stored. */
#ifndef DIFFUSE_SETTINGS_PRIVATE_H
#define DIFFUSE_SETTINGS_PRIVATE_H

#include "diffuse/runtime.h"

typedef struct dfr_value {
	df_setting_type type; /* what was written: INT, FLOAT, BOOL, STRING or LIST */
	int64_t i;
	double f;
	int b;
	const char *s;        /* borrowed */
	df_list list;
	int list_length;      /* items written, may exceed DF_LIST_MAX */
	int list_bad_item;    /* index + 1 of a non-number item, 0 if none */
} dfr_value;

/* Parses text as s's type. err says why not, without the setting's name. */
int dfr_value_parse(const df_setting *s, const char *text, dfr_value *v, df_error *err);
/* Checks v against s (type, range, choices) and stores it in values
 * (strings are copied). err says why not, without the setting's name. */
int dfr_value_store(const df_setting *s, void *values, const dfr_value *v, df_error *err);
/* Every declared setting's name, NULL-terminated, plus `extra` (may be
 * NULL) first; free() the array, not the names. */
const char **dfr_setting_names(const df_setting *decl, const char *extra);

#endif
