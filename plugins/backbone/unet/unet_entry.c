/* The plugin's only exported symbol. */
#include "config.h"
#include "unet_net.h"

DF_PLUGIN_DEFINE("unet", PACKAGE_VERSION, "MIT", &unet_component)
