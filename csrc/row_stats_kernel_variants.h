// The two compiled variants of the row-statistics kernel and the runtime choice between them.
#pragma once
#include <torch/extension.h>

namespace energyflow_cpu {

// Column padding that every variant accepts (a multiple of each variant's kLanes).
constexpr int64_t kPadColumns = 16;

namespace generic {
void compute(const at::Tensor& xc, const at::Tensor& y_t, const at::Tensor& bc, double beta,
             bool exclude_diag, bool want_grad, at::Tensor& rowsum, at::Tensor& wdiff);
}
namespace avx2 {
void compute(const at::Tensor& xc, const at::Tensor& y_t, const at::Tensor& bc, double beta,
             bool exclude_diag, bool want_grad, at::Tensor& rowsum, at::Tensor& wdiff);
}

inline bool cpu_has_avx2_fma() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
#else
  return false;
#endif
}

}  // namespace energyflow_cpu
