/* The plugin's only exported symbol. */
#include "dit_net.h"

DF_PLUGIN_DEFINE("dit", "1.0", "MIT", &dit_component, &sit_component)
