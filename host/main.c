#include <stdio.h>
#include <string.h>
#include "diffuse/diffuse.h"

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--version") == 0) {
		printf("diffuse %s\n", df_version_string());
		return 0;
	}
	fprintf(stderr, "usage: diffuse COMMAND ...\n");
	return 2;
}
