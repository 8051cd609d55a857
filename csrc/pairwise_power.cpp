// CPU kernels for the pairwise energy reductions of energyflow (docs/math.md, sections 2 and 4).
//
// One primitive, "row statistics", serves the forward and the backward pass of every pairwise op:
//
//   rowsum_i = sum_j b_j r_ij^beta                              (B, N)
//   wdiff_i  = sum_j b_j r_ij^(beta-2) (x_i - y_j)              (B, N, D), only if want_grad
//
// with r_ij = ||x_i - y_j||, the term taken as 0 where r_ij = 0 (the subgradient 0), and the
// diagonal i = j skipped when exclude_diag (the self sum). Two methods, chosen by the caller:
//   "exact": distances from exact differences (duplicates give r = 0 exactly, no centring);
//   "gemm":  centred dot products on register-blocked tiles, wdiff_i = x_i sum_j w_ij - (W Y)_i,
//            pairs within the expansion's rounding of 0 recomputed exactly.
// No N x M buffer: Y streams past each block of rows in 256-column chunks copied into one
// contiguous panel. Tasks are (batch, row block) pairs, run in parallel with at::parallel_for
// (OpenMP in torch's CPU builds); each task owns its rows, so row results do not depend on the
// thread count or schedule. Two-sided passes (cross_stats: both sides of a cross sum; self_stats:
// a self sum from the pairs j > i) also give the columns their terms from the same powers, through
// per-thread column totals summed in thread order (deterministic for a thread count). A second
// kernel, energy_score_direct, takes every pair of each target of an energy score with few
// samples. The loops live in row_stats_kernel.h, compiled twice (baseline
// and AVX2+FMA) and chosen at run time.
#include <torch/extension.h>

#include <cmath>
#include <string>
#include <vector>

#include "grouped_addmm.h"
#include "masked_rows.h"
#include "masked_step.h"
#include "row_stats_kernel_variants.h"

namespace {

void check_inputs(const at::Tensor& x, const at::Tensor& y, const at::Tensor& b,
                  bool exclude_diag) {
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
}

int64_t padding(int64_t size) {
  constexpr int64_t kPad = energyflow_cpu::kPadColumns;
  return (kPad - size % kPad) % kPad;
}

// Exact differences: Y transposed to (B, D, M_pad), padded with zero-weight columns.
void row_stats_exact(const at::Tensor& x, const at::Tensor& y, const at::Tensor& b, double beta,
                     bool exclude_diag, bool want_grad, at::Tensor& rowsum, at::Tensor& wdiff,
                     const energyflow_cpu::ColumnSide* column_side) {
  const at::Tensor xc = x.contiguous();
  const int64_t pad = padding(y.size(1));
  const at::Tensor y_t = at::constant_pad_nd(y.transpose(1, 2), {0, pad}, 0).contiguous();
  const at::Tensor bc = at::constant_pad_nd(b, {0, pad}, 0).contiguous();
  if (energyflow_cpu::use_avx2_fma()) {
    energyflow_cpu::avx2::exact(xc, y_t, bc, beta, exclude_diag, want_grad, rowsum, wdiff,
                                column_side);
  } else {
    energyflow_cpu::generic::exact(xc, y_t, bc, beta, exclude_diag, want_grad, rowsum, wdiff,
                                   column_side);
  }
}

// Dot products on both sets centred on the mean of Y (every sum is translation-invariant, and the
// expansion then does not cancel for data far from the origin). The kernel keeps one centred,
// transposed copy of Y and centres and pads each block of rows and column chunk as it goes.
void row_stats_gemm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& b, double beta,
                    bool exclude_diag, bool want_grad, at::Tensor& rowsum, at::Tensor& wdiff,
                    const energyflow_cpu::ColumnSide* column_side) {
  const at::Tensor xc = x.contiguous(), yc = y.contiguous();
  // the centre summed in double, then rounded: any common shift leaves every distance unchanged
  const at::Tensor centre = yc.sum(1, false, at::kDouble).div(y.size(1)).to(x.scalar_type());
  const at::Tensor bc = at::constant_pad_nd(b, {0, padding(y.size(1))}, 0).contiguous();
  // d2 below tol (|x|^2 + |y|^2) is within the expansion's rounding of 0: recomputed exactly.
  const double tol = x.scalar_type() == at::kDouble ? std::ldexp(1.0, -26) : std::ldexp(1.0, -10);
  if (energyflow_cpu::use_avx2_fma()) {
    energyflow_cpu::avx2::gemm(xc, yc, centre, bc, beta, tol, exclude_diag, want_grad, rowsum,
                               wdiff, column_side);
  } else {
    energyflow_cpu::generic::gemm(xc, yc, centre, bc, beta, tol, exclude_diag, want_grad, rowsum,
                                  wdiff, column_side);
  }
}

void check_method(const std::string& method) {
  TORCH_CHECK(method == "exact" || method == "gemm",
              "energyflow._C: method must be 'exact' or 'gemm'");
}

// One pass of the chosen method; column_side: also the columns' statistics (want_grad).
void run_pass(const at::Tensor& x, const at::Tensor& y, const at::Tensor& b, double beta,
              bool exclude_diag, bool want_grad, const std::string& method, at::Tensor& rowsum,
              at::Tensor& wdiff, const energyflow_cpu::ColumnSide* column_side) {
  check_method(method);
  if (method == "gemm") {
    row_stats_gemm(x, y, b, beta, exclude_diag, want_grad, rowsum, wdiff, column_side);
  } else {
    row_stats_exact(x, y, b, beta, exclude_diag, want_grad, rowsum, wdiff, column_side);
  }
}

std::vector<at::Tensor> row_stats(const at::Tensor& x, const at::Tensor& y, const at::Tensor& b,
                                  double beta, bool exclude_diag, bool want_grad,
                                  const std::string& method) {
  check_inputs(x, y, b, exclude_diag);
  at::Tensor rowsum = at::empty({x.size(0), x.size(1)}, x.options());
  // Outputs are allocated row-major whatever the inputs' strides (the kernels write them so).
  at::Tensor wdiff = at::empty(want_grad ? x.sizes() : at::IntArrayRef{0}, x.options());
  run_pass(x, y, b, beta, exclude_diag, want_grad, method, rowsum, wdiff, nullptr);
  return {rowsum, wdiff};
}

// A two-sided pass of x rows (weights a) against y columns (weights b), with gradients:
// rowsum, wdiff as row_stats, and colsum_j = sum_i a_i r_ij^beta, col_wdiff_j = sum_i a_i
// r_ij^(beta-2) (y_j - x_i); over the pairs j > i only when exclude_diag (x is y).
std::vector<at::Tensor> two_sided_pass(const at::Tensor& x, const at::Tensor& y,
                                       const at::Tensor& a, const at::Tensor& b, double beta,
                                       bool exclude_diag, const std::string& method) {
  energyflow_cpu::ColumnSide columns{a.contiguous(), at::empty({y.size(0), y.size(1)}, y.options()),
                                     at::empty(y.sizes(), y.options())};
  at::Tensor rowsum = at::empty({x.size(0), x.size(1)}, x.options());
  at::Tensor wdiff = at::empty(x.sizes(), x.options());
  run_pass(x, y, b, beta, exclude_diag, true, method, rowsum, wdiff, &columns);
  return {rowsum, wdiff, columns.colsum, columns.col_wdiff};
}

// Both sides of a cross sum with gradients in one pass.
std::vector<at::Tensor> cross_stats(const at::Tensor& x, const at::Tensor& y, const at::Tensor& a,
                                    const at::Tensor& b, double beta, const std::string& method) {
  check_inputs(x, y, b, false);
  check_inputs(y, x, a, false);
  return two_sided_pass(x, y, a, b, beta, false, method);
}

// The self sum's row statistics with gradients (rowsum_i = sum_{j != i} b_j r_ij^beta, wdiff as
// row_stats) from the pairs j > i alone: a two-sided pass over the upper triangle gives each row
// its terms j > i and each column its terms i < j.
std::vector<at::Tensor> self_stats(const at::Tensor& x, const at::Tensor& b, double beta,
                                   const std::string& method) {
  check_inputs(x, x, b, true);
  const std::vector<at::Tensor> stats = two_sided_pass(x, x, b, b, beta, true, method);
  return {stats[0].add_(stats[2]), stats[1].add_(stats[3])};
}

std::vector<at::Tensor> energy_score_direct(const at::Tensor& samples, const at::Tensor& target,
                                            double beta, bool want_grad) {
  TORCH_CHECK(samples.device().is_cpu() && target.device().is_cpu(),
              "energyflow._C.energy_score_direct: tensors must be on the CPU");
  TORCH_CHECK(samples.dim() == 3 && target.dim() == 2 && samples.size(0) == target.size(0) &&
                  samples.size(2) == target.size(1) && samples.size(1) >= 2,
              "energyflow._C.energy_score_direct: expected samples (B,m,D), m >= 2, target (B,D)");
  TORCH_CHECK(samples.scalar_type() == target.scalar_type(),
              "energyflow._C.energy_score_direct: samples and target must share a dtype");
  const at::Tensor yc = samples.contiguous(), xc = target.contiguous();
  at::Tensor scores = at::empty({samples.size(0)}, samples.options());
  at::Tensor grad_samples = at::empty(want_grad ? yc.sizes() : at::IntArrayRef{0}, yc.options());
  at::Tensor grad_target = at::empty(want_grad ? xc.sizes() : at::IntArrayRef{0}, xc.options());
  if (energyflow_cpu::use_avx2_fma()) {
    energyflow_cpu::avx2::energy_score_direct(yc, xc, beta, want_grad, scores, grad_samples,
                                              grad_target);
  } else {
    energyflow_cpu::generic::energy_score_direct(yc, xc, beta, want_grad, scores, grad_samples,
                                                 grad_target);
  }
  return {scores, grad_samples, grad_target};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() =
      "energyflow CPU kernels (pairwise energy row statistics, small-m energy score, cached "
      "masked steps, grouped GEMMs of masked strips, masked layers at a few rows)";
  m.def("kernel_variant", [] { return energyflow_cpu::use_avx2_fma() ? "avx2" : "generic"; },
        "the compiled variant of the kernels that runs here: 'avx2' (AVX2 + FMA) or 'generic'");
  m.def("row_stats", &row_stats,
        "rowsum_i = sum_j b_j r_ij^beta and, if want_grad, "
        "wdiff_i = sum_j b_j r_ij^(beta-2) (x_i - y_j); x (B,N,D), y (B,M,D), b (B,M); "
        "method 'exact' (differences) or 'gemm' (dot products, close pairs recomputed exactly)",
        py::arg("x"), py::arg("y"), py::arg("b"), py::arg("beta"), py::arg("exclude_diag"),
        py::arg("want_grad"), py::arg("method") = "exact",
        py::call_guard<py::gil_scoped_release>());
  m.def("cross_stats", &cross_stats,
        "row_stats (with gradients) of x (B,N,D) against y (B,M,D) with weights b (B,M), "
        "and the same for the columns: colsum_j = sum_i a_i r_ij^beta, col_wdiff_j = sum_i a_i "
        "r_ij^(beta-2) (y_j - x_i), a (B,N); one pass",
        py::arg("x"), py::arg("y"), py::arg("a"), py::arg("b"), py::arg("beta"),
        py::arg("method") = "gemm", py::call_guard<py::gil_scoped_release>());
  m.def("self_stats", &self_stats,
        "row_stats(x, x, b, beta, exclude_diag=True, want_grad=True) from one pass over the "
        "pairs j > i (each pair's power once, its terms added to both ends)",
        py::arg("x"), py::arg("b"), py::arg("beta"), py::arg("method") = "gemm",
        py::call_guard<py::gil_scoped_release>());
  m.def("masked_step", &energyflow_cpu::masked_step,
        "one cached sampling step of a semi-autoregressive network: for each layer l, "
        "buffers[l+1][:, start:end] = act(buffers[l][:, :needed] W[start:end, :needed]^T + "
        "b[start:end]) (+ the residual), (start, end, needed) = table[3l:3l+3]; in place",
        py::arg("buffers"), py::arg("weights"), py::arg("biases"), py::arg("table"),
        py::arg("activations"), py::arg("residual"), py::call_guard<py::gil_scoped_release>());
  m.def("masked_generate", &energyflow_cpu::masked_generate,
        "all K cached steps of a generator, rows in tiles (see masked_step); before step k the "
        "last layer's outputs [feedback[3k], feedback[3k+1]) go to input columns from "
        "feedback[3k+2]; rows in tiles where every slice takes the skinny kernel, else all rows "
        "a step at a time",
        py::arg("buffers"), py::arg("weights"), py::arg("biases"), py::arg("tables"),
        py::arg("feedback"), py::arg("activations"), py::arg("residual"), py::arg("tile_rows"),
        py::call_guard<py::gil_scoped_release>());
  m.def("grouped_addmm_", &energyflow_cpu::grouped_addmm_,
        "out[i] = beta * out[i] + a[i] @ b[i] for every i, in place, the products side by side "
        "(one thread each, largest first): the strips of a block-masked layer",
        py::arg("out"), py::arg("a"), py::arg("b"), py::arg("beta"),
        py::call_guard<py::gil_scoped_release>());
  m.def("masked_rows_forward", &energyflow_cpu::masked_rows_forward,
        "z = x (W * mask)^T + b at a few batch rows, reading each weight row's allowed prefix "
        "once; groups = [start, end, prefix, ...] of the output rows",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("groups"),
        py::call_guard<py::gil_scoped_release>());
  m.def("masked_rows_grad_input", &energyflow_cpu::masked_rows_grad_input,
        "dx = dz (W * mask) at a few batch rows (see masked_rows_forward)",
        py::arg("grad_z"), py::arg("weight"), py::arg("groups"),
        py::call_guard<py::gil_scoped_release>());
  m.def("masked_rows_grad_weight", &energyflow_cpu::masked_rows_grad_weight,
        "dW = (dz^T x) * mask at a few batch rows (see masked_rows_forward)",
        py::arg("grad_z"), py::arg("x"), py::arg("groups"),
        py::call_guard<py::gil_scoped_release>());
  m.def("energy_score_direct", &energy_score_direct,
        "per-target energy scores of samples (B,m,D) against target (B,D) from all pairs, and "
        "(if want_grad) their gradients with respect to samples and target",
        py::arg("samples"), py::arg("target"), py::arg("beta"), py::arg("want_grad"),
        py::call_guard<py::gil_scoped_release>());
}
