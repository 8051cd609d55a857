// Row-statistics kernel for the baseline ISA of the build (portable).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "row_stats_kernel_variants.h"

#define EF_KERNEL_NAMESPACE generic
#include "row_stats_kernel.h"
