// Row-statistics kernel compiled for AVX2 + FMA; chosen at run time only on CPUs that have both.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <immintrin.h>
#include <type_traits>
#include <vector>

#include "row_stats_kernel_variants.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#pragma GCC target("avx2,fma")
#endif
#define EF_KERNEL_NAMESPACE avx2
#define EF_KERNEL_AVX2 1  // the hand-vectorised loops of row_stats_kernel.h
#include "row_stats_kernel.h"
