/* The plugin's only exported symbol. */
#include "config.h"
#include "vae_net.h"

DF_PLUGIN_DEFINE("vae", PACKAGE_VERSION, "MIT", &vae_component)
