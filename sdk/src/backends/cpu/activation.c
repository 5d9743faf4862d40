#include "config.h"
#include "cpu.h"

void dfi_cpu_install_activation(df_backend *be)
{
	(void)be;
}
