/* The plugin's only exported symbol. */
#include "config.h"
#include "dit_net.h"

DF_PLUGIN_DEFINE("dit", PACKAGE_VERSION, "MIT", &dit_component, &sit_component)
