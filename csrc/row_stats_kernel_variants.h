// The two compiled variants of the CPU kernels and the runtime choice between them.
#pragma once
#include <torch/extension.h>

#include <cstdlib>
#include <string>

namespace energyflow_cpu {

// Column (and, for the GEMM path, feature) padding that every variant accepts.
constexpr int64_t kPadColumns = 16;

// The column side of a two-sided pass of rows x_i (weights a) against columns y_j: colsum_j =
// sum_i a_i r_ij^beta (B, M) and col_wdiff_j = sum_i a_i r_ij^(beta-2) (y_j - x_i) (B, M, D),
// both written by the pass.
struct ColumnSide {
  at::Tensor a;          // (B, N), contiguous
  at::Tensor colsum;     // (B, M)
  at::Tensor col_wdiff;  // (B, M, D)
};

#define EF_DECLARE_KERNELS                                                                    \
  void exact(const at::Tensor& xc, const at::Tensor& y_t, const at::Tensor& bc, double beta, \
             bool exclude_diag, bool want_grad, at::Tensor& rowsum, at::Tensor& wdiff,       \
             const ColumnSide* column_side);                                                 \
  void gemm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& centre,             \
            const at::Tensor& bc, double beta, double tol, bool exclude_diag, bool want_grad, \
            at::Tensor& rowsum, at::Tensor& wdiff, const ColumnSide* column_side);           \
  void energy_score_direct(const at::Tensor& samples, const at::Tensor& target, double beta, \
                           bool want_grad, at::Tensor& scores, at::Tensor& grad_samples,     \
                           at::Tensor& grad_target);

namespace generic {
EF_DECLARE_KERNELS
}
namespace avx2 {
EF_DECLARE_KERNELS
}
#undef EF_DECLARE_KERNELS

// The AVX2 + FMA variant runs where the CPU has both, unless the environment variable
// ENERGYFLOW_CPU_KERNEL is "generic" when the extension first runs (the tests check the
// portable variant that way).
inline bool use_avx2_fma() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const bool use = [] {
    const char* forced = std::getenv("ENERGYFLOW_CPU_KERNEL");
    if (forced != nullptr && std::string(forced) == "generic") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return use;
#else
  return false;
#endif
}

}  // namespace energyflow_cpu
