/* json_check FILE [KEY=JSON | KEY]...: FILE holds exactly one line, one
 * JSON object (a --json summary), and each KEY (a dotted path; numbers
 * index arrays: samples.0.sampler.name) is present, with the value JSON
 * when given (compared as compact JSON text, "euler" with its quotes).
 * Prints what differs; exit 0 when all hold, 1 otherwise. */
#include "config.h"
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static json_t *lookup(json_t *node, const char *path)
{
	char *copy = strdup(path), *save = NULL;
	for (char *key = strtok_r(copy, ".", &save); key && node; key = strtok_r(NULL, ".", &save)) {
		char *end;
		long index = strtol(key, &end, 10);
		node = json_is_array(node) && *end == '\0' ? json_array_get(node, (size_t)index)
		                                           : json_object_get(node, key);
	}
	free(copy);
	return node;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: json_check FILE [KEY=JSON | KEY]...\n");
		return 2;
	}
	FILE *f = fopen(argv[1], "r");
	if (!f) {
		printf("json_check: cannot open %s\n", argv[1]);
		return 1;
	}
	static char text[1 << 20];
	size_t n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = '\0';
	char *newline = strchr(text, '\n');
	if (!newline || newline[1] != '\0') {
		printf("json_check: %s is not exactly one line\n", argv[1]);
		return 1;
	}
	json_error_t err;
	json_t *root = json_loads(text, 0, &err);
	if (!json_is_object(root)) {
		printf("json_check: %s: not one JSON object (%s)\n", argv[1], root ? "another value" : err.text);
		return 1;
	}
	int failures = 0;
	for (int i = 2; i < argc; i++) {
		char *key = strdup(argv[i]), *want = strchr(key, '=');
		if (want)
			*want++ = '\0';
		json_t *node = lookup(root, key);
		char *got = node ? json_dumps(node, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
		if (!node) {
			printf("json_check: no %s\n", key);
			failures++;
		} else if (want && strcmp(got, want) != 0) {
			printf("json_check: %s is %s, expected %s\n", key, got, want);
			failures++;
		}
		free(got);
		free(key);
	}
	json_decref(root);
	return failures ? 1 : 0;
}
