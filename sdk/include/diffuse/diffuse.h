/* diffuse: the umbrella header of the SDK. */
#ifndef DIFFUSE_DIFFUSE_H
#define DIFFUSE_DIFFUSE_H

#include "diffuse/error.h"
#include "diffuse/settings.h"
#include "diffuse/plugin.h"
#include "diffuse/tensor.h"
#include "diffuse/process.h"
#include "diffuse/sampling.h"
#include "diffuse/runtime.h"
#include "diffuse/io.h"
#include "diffuse/optim.h"
#include "diffuse/rng.h"
#include "diffuse/eval.h"
#include "diffuse/dist.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The package version, e.g. "0.1.0". */
const char *df_version_string(void);

#ifdef __cplusplus
}
#endif
#endif
