#include "config.h"
#include "diffuse/diffuse.h"

const char *df_version_string(void) { return PACKAGE_VERSION; }
