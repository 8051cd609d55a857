// CPU kernel for the pairwise energy reductions of energyflow (design doc, section 4).
//
// One primitive, "row statistics", serves the forward and the backward pass of every op:
//
//   rowsum_i = sum_j b_j r_ij^beta                              (B, N)
//   wdiff_i  = sum_j b_j r_ij^(beta-2) (x_i - y_j)              (B, N, D), only if want_grad
//
// with r_ij = ||x_i - y_j||, the term taken as 0 where r_ij = 0 (the subgradient 0), and the
// diagonal i = j skipped when exclude_diag (the self sum). Distances come from exact
// differences, so duplicates give r = 0 exactly and no centring is needed. No N x M buffer:
// Y is transposed once to (D, M) and streamed past each row in column chunks that stay in L1;
// the inner loops run over those columns and vectorise. Tasks are (batch, row block) pairs,
// run in parallel with at::parallel_for (OpenMP in torch's CPU builds); each task owns its
// rows, so results do not depend on the thread count or schedule. The loops live in
// row_stats_kernel.h, compiled twice (baseline and AVX2+FMA) and chosen at run time.
#include <torch/extension.h>

#include <vector>

#include "row_stats_kernel_variants.h"

namespace {

std::vector<at::Tensor> row_stats(const at::Tensor& x, const at::Tensor& y, const at::Tensor& b,
                                  double beta, bool exclude_diag, bool want_grad) {
  TORCH_CHECK(x.device().is_cpu() && y.device().is_cpu() && b.device().is_cpu(),
              "energyflow._C.row_stats: tensors must be on the CPU");
  TORCH_CHECK(x.dim() == 3 && y.dim() == 3 && b.dim() == 2,
              "energyflow._C.row_stats: expected x (B,N,D), y (B,M,D), b (B,M)");
  TORCH_CHECK(x.size(0) == y.size(0) && x.size(0) == b.size(0) && x.size(2) == y.size(2) &&
                  b.size(1) == y.size(1),
              "energyflow._C.row_stats: shape mismatch");
  TORCH_CHECK(x.scalar_type() == y.scalar_type() && x.scalar_type() == b.scalar_type(),
              "energyflow._C.row_stats: x, y and b must share a dtype");
  TORCH_CHECK(!exclude_diag || x.size(1) == y.size(1),
              "energyflow._C.row_stats: exclude_diag needs x and y of the same size");
  const at::Tensor xc = x.contiguous();
  // (B, D, M_pad): columns contiguous, padded with zero-weight columns to a multiple of
  // kPadColumns (the kernels' register tile).
  constexpr int64_t kPad = energyflow_cpu::kPadColumns;
  const int64_t pad = (kPad - y.size(1) % kPad) % kPad;
  const at::Tensor y_t = at::constant_pad_nd(y.transpose(1, 2), {0, pad}, 0).contiguous();
  const at::Tensor bc = at::constant_pad_nd(b, {0, pad}, 0).contiguous();
  at::Tensor rowsum = at::empty({x.size(0), x.size(1)}, x.options());
  at::Tensor wdiff = want_grad ? at::empty_like(xc) : at::empty({0}, x.options());
  if (energyflow_cpu::cpu_has_avx2_fma()) {
    energyflow_cpu::avx2::compute(xc, y_t, bc, beta, exclude_diag, want_grad, rowsum, wdiff);
  } else {
    energyflow_cpu::generic::compute(xc, y_t, bc, beta, exclude_diag, want_grad, rowsum, wdiff);
  }
  return {rowsum, wdiff};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "energyflow CPU kernels (pairwise energy row statistics)";
  m.def("row_stats", &row_stats, "rowsum_i = sum_j b_j r_ij^beta and, if want_grad, "
        "wdiff_i = sum_j b_j r_ij^(beta-2) (x_i - y_j); x (B,N,D), y (B,M,D), b (B,M)",
        py::arg("x"), py::arg("y"), py::arg("b"), py::arg("beta"), py::arg("exclude_diag"),
        py::arg("want_grad"), py::call_guard<py::gil_scoped_release>());
}
