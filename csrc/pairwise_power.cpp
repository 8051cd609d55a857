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
// rows, so results do not depend on the thread count or schedule.
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t kColChunk = 256;  // columns of Y per cache tile
constexpr int64_t kRowBlock = 16;   // rows of X per parallel task

enum class Power { kOne, kTwo, kHalf, kGeneral };

// d2^(beta/2) for d2 > 0; the common exponents avoid exp/log so the loop vectorises.
template <Power P, typename T>
inline T power_of_square(T d2, T half_beta) {
  if constexpr (P == Power::kOne) {
    return std::sqrt(d2);
  } else if constexpr (P == Power::kTwo) {
    return d2;
  } else if constexpr (P == Power::kHalf) {
    return std::sqrt(std::sqrt(d2));
  } else {
    return std::exp(half_beta * std::log(d2));
  }
}

template <Power P, typename T>
void row_block(const T* x, const T* y_t, const T* b, int64_t row_begin, int64_t row_end,
               int64_t n_cols, int64_t dim, T half_beta, bool exclude_diag, bool want_grad,
               T* rowsum, T* wdiff) {
  alignas(64) T d2[kColChunk];
  alignas(64) T w[kColChunk];
  const int64_t n_rows = row_end - row_begin;
  // Totals across column chunks in double: the per-chunk sums are short and stay in T.
  std::vector<double> row_total(n_rows, 0.0);
  std::vector<double> wdiff_total(want_grad ? n_rows * dim : 0, 0.0);

  for (int64_t j0 = 0; j0 < n_cols; j0 += kColChunk) {
    const int64_t nj = std::min(kColChunk, n_cols - j0);
    const T* b_chunk = b + j0;
    for (int64_t i = row_begin; i < row_end; ++i) {
      const T* xi = x + i * dim;
      std::fill(d2, d2 + nj, T(0));
      for (int64_t k = 0; k < dim; ++k) {
        const T xik = xi[k];
        const T* yk = y_t + k * n_cols + j0;
#pragma omp simd
        for (int64_t j = 0; j < nj; ++j) {
          const T t = xik - yk[j];
          d2[j] += t * t;
        }
      }
      if (exclude_diag && i >= j0 && i < j0 + nj) d2[i - j0] = T(0);

      T chunk_sum = T(0);
#pragma omp simd reduction(+ : chunk_sum)
      for (int64_t j = 0; j < nj; ++j) {
        const bool pos = d2[j] > T(0);
        const T safe = pos ? d2[j] : T(1);
        const T bp = pos ? b_chunk[j] * power_of_square<P>(safe, half_beta) : T(0);
        chunk_sum += bp;
        w[j] = bp / safe;  // b_j r^(beta-2), 0 where r = 0
      }
      row_total[i - row_begin] += chunk_sum;

      if (want_grad) {
        for (int64_t k = 0; k < dim; ++k) {
          const T xik = xi[k];
          const T* yk = y_t + k * n_cols + j0;
          T acc = T(0);
#pragma omp simd reduction(+ : acc)
          for (int64_t j = 0; j < nj; ++j) acc += w[j] * (xik - yk[j]);
          wdiff_total[(i - row_begin) * dim + k] += acc;
        }
      }
    }
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    rowsum[row_begin + r] = static_cast<T>(row_total[r]);
    if (want_grad) {
      for (int64_t k = 0; k < dim; ++k)
        wdiff[(row_begin + r) * dim + k] = static_cast<T>(wdiff_total[r * dim + k]);
    }
  }
}

template <Power P, typename T>
void row_stats_all(const at::Tensor& x, const at::Tensor& y_t, const at::Tensor& b, double beta,
                   bool exclude_diag, bool want_grad, at::Tensor& rowsum, at::Tensor& wdiff) {
  const int64_t batch = x.size(0), n_rows = x.size(1), dim = x.size(2), n_cols = y_t.size(2);
  const int64_t blocks_per_batch = (n_rows + kRowBlock - 1) / kRowBlock;
  const T* xp = x.data_ptr<T>();
  const T* ytp = y_t.data_ptr<T>();
  const T* bp = b.data_ptr<T>();
  T* rp = rowsum.data_ptr<T>();
  T* wp = want_grad ? wdiff.data_ptr<T>() : nullptr;
  const T half_beta = static_cast<T>(0.5 * beta);
  at::parallel_for(0, batch * blocks_per_batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task / blocks_per_batch;
      const int64_t row_begin = (task % blocks_per_batch) * kRowBlock;
      const int64_t row_end = std::min(row_begin + kRowBlock, n_rows);
      row_block<P, T>(xp + bi * n_rows * dim, ytp + bi * dim * n_cols, bp + bi * n_cols,
                      row_begin, row_end, n_cols, dim, half_beta, exclude_diag, want_grad,
                      rp + bi * n_rows, want_grad ? wp + bi * n_rows * dim : nullptr);
    }
  });
}

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
  const at::Tensor y_t = y.transpose(1, 2).contiguous();  // (B, D, M): columns are contiguous
  const at::Tensor bc = b.contiguous();
  at::Tensor rowsum = at::empty({x.size(0), x.size(1)}, x.options());
  at::Tensor wdiff = want_grad ? at::empty_like(xc) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "energyflow_row_stats", [&] {
    if (beta == 1.0) {
      row_stats_all<Power::kOne, scalar_t>(xc, y_t, bc, beta, exclude_diag, want_grad, rowsum, wdiff);
    } else if (beta == 2.0) {
      row_stats_all<Power::kTwo, scalar_t>(xc, y_t, bc, beta, exclude_diag, want_grad, rowsum, wdiff);
    } else if (beta == 0.5) {
      row_stats_all<Power::kHalf, scalar_t>(xc, y_t, bc, beta, exclude_diag, want_grad, rowsum, wdiff);
    } else {
      row_stats_all<Power::kGeneral, scalar_t>(xc, y_t, bc, beta, exclude_diag, want_grad, rowsum, wdiff);
    }
  });
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
