// CPU kernel templates (see pairwise_power.cpp for what they compute), one file per pass:
//   row_stats_powers.h     the powers of a squared distance (every pass's inner step)
//   row_stats_exact.h      cross sums from exact differences (few features)
//   row_stats_gemm.h       cross sums from dot-product tiles (many features)
//   row_stats_self.h       self sums over the upper triangle
//   row_stats_two_sided.h  a pair's row and column terms in one visit
//   energy_score_direct.h  the energy score with few samples per target
// and here the drivers that run them over row blocks in parallel.
// Included twice: once compiled for the baseline ISA and once for AVX2+FMA, each inside its own
// namespace (EF_KERNEL_NAMESPACE), so one portable binary runs the fast variant where the CPU
// has it. No include guard on purpose; include <torch/extension.h>, <algorithm>, <cmath>,
// <cstdint>, <cstring>, <optional> and <vector> before this file.
#ifndef EF_KERNEL_NAMESPACE
#error "define EF_KERNEL_NAMESPACE before including row_stats_kernel.h"
#endif

namespace energyflow_cpu {
namespace EF_KERNEL_NAMESPACE {

constexpr int64_t kColChunk = 256;  // columns of Y per cache tile
constexpr int64_t kRowBlock = 16;   // rows of X per parallel task (exact path)
constexpr int64_t kGemmRowBlock = 64;  // rows of X per parallel task (GEMM path)
// Rows of X handled together: each load of Y serves kRows rows (register blocking).
constexpr int64_t kRows = 4;  // micro_kernel is written for 4
// Columns per register tile; the padded column count and feature count are multiples of it.
constexpr int64_t kLanes = kPadColumns;

enum class Power { kOne, kTwo, kHalf, kGeneral };

#include "row_stats_powers.h"

// Columns [j0, j0 + nj) of y_t (dim rows, n_cols apart) copied into one contiguous (dim, nj)
// panel: rows n_cols apart map to the same cache sets for large n_cols and evict each other.
template <typename T>
inline void copy_panel(const T* y_t, int64_t n_cols, int64_t j0, int64_t nj, int64_t dim,
                       T* panel) {
  for (int64_t k = 0; k < dim; ++k)
    std::copy(y_t + k * n_cols + j0, y_t + k * n_cols + j0 + nj, panel + k * nj);
}

#include "row_stats_self.h"
#include "row_stats_two_sided.h"
#include "row_stats_exact.h"
#include "row_stats_gemm.h"

// ---- drivers -----------------------------------------------------------------------------------
template <typename F>
void for_each_row_block(int64_t batch, int64_t n_rows, int64_t block, bool balanced,
                        const F& body) {
  const int64_t blocks_per_batch = (n_rows + block - 1) / block;
  at::parallel_for(0, batch * blocks_per_batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task / blocks_per_batch;
      const int64_t p = task % blocks_per_batch;
      const int64_t row_begin = (balanced ? balanced_block(p, blocks_per_batch) : p) * block;
      body(bi, row_begin, std::min(row_begin + block, n_rows));
    }
  });
}

template <typename F>
void dispatch_power(double beta, const F& body) {
  if (beta == 1.0) {
    body(std::integral_constant<Power, Power::kOne>{});
  } else if (beta == 2.0) {
    body(std::integral_constant<Power, Power::kTwo>{});
  } else if (beta == 0.5) {
    body(std::integral_constant<Power, Power::kHalf>{});
  } else {
    body(std::integral_constant<Power, Power::kGeneral>{});
  }
}

// rowsum (B, N) and, if want_grad, wdiff (B, N, D) of x (B, N, D) against y_t (B, D, M_pad)
// with weights b (B, M_pad); M_pad a multiple of kLanes, padding columns weighted 0. With a
// column side (want_grad), also colsum (B, M) and col_wdiff (B, M, D) of the columns, whose raw
// rows y (B, M, D) it is given.
void exact(const at::Tensor& xc, const at::Tensor& y_t, const at::Tensor& bc, double beta,
           bool exclude_diag, bool want_grad, at::Tensor& rowsum, at::Tensor& wdiff,
           const ColumnSide* column_side) {
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "energyflow_row_stats_exact", [&] {
    using T = scalar_t;
    const int64_t batch = xc.size(0), n_rows = xc.size(1), dim = xc.size(2);
    const int64_t n_cols = y_t.size(2);
    const T* xp = xc.data_ptr<T>();
    const T* ytp = y_t.data_ptr<T>();
    const T* bp = bc.data_ptr<T>();
    const T* ap = column_side ? column_side->a.data_ptr<T>() : nullptr;
    T* rp = rowsum.data_ptr<T>();
    T* wp = want_grad ? wdiff.data_ptr<T>() : nullptr;
    std::optional<ThreadColumnTotals> totals;
    if (column_side) totals.emplace(batch, n_cols, dim);
    const PowerParams<T> pw(beta);
    const bool balanced = exclude_diag && (!want_grad || column_side);
    dispatch_power(beta, [&](auto power) {
      for_each_row_block(batch, n_rows, kRowBlock, balanced,
                         [&](int64_t bi, int64_t lo, int64_t hi) {
        ColumnTotals mine{};
        if (totals) mine = totals->mine(bi);
        exact_row_block<decltype(power)::value, T>(
            xp + bi * n_rows * dim, ytp + bi * dim * n_cols, bp + bi * n_cols, lo, hi, n_cols,
            dim, pw, exclude_diag, want_grad, rp + bi * n_rows,
            want_grad ? wp + bi * n_rows * dim : nullptr, ap ? ap + bi * n_rows : nullptr,
            totals ? &mine : nullptr);
      });
    });
    if (totals) {
      totals->finish<T>(nullptr, nullptr, column_side->colsum.size(1),
                        column_side->colsum.data_ptr<T>(), column_side->col_wdiff.data_ptr<T>());
    }
  });
}

// Y (B, M, D) centred on c (B, D) and transposed into y_t (B, D, M_pad), and |y_j - c|^2 into
// y_sq (B, M_pad); both zero-filled by the caller past the real columns.
template <typename T>
void centred_transpose(const T* yp, const T* cp, int64_t batch, int64_t n_cols, int64_t dim,
                       int64_t cols, T* y_t, T* y_sq) {
  at::parallel_for(0, batch * n_cols, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task / n_cols, j = task % n_cols;
      const T* yj = yp + task * dim;
      const T* c = cp + bi * dim;
      T* column = y_t + bi * dim * cols + j;
      T sq = T(0);
      for (int64_t k = 0; k < dim; ++k) {
        const T value = yj[k] - c[k];
        column[k * cols] = value;
        sq += value * value;
      }
      y_sq[bi * cols + j] = sq;
    }
  });
}

// The GEMM path: x (B, N, D), y (B, M, D) contiguous, centre (B, D), b (B, M_pad) with zero
// weights on the padding columns; rowsum (B, N), wdiff (B, N, D). With a column side (want_grad:
// the row weights a (B, N)), also colsum_j = sum_i a_i r^beta (B, M) and col_wdiff_j = sum_i
// a_i r^(beta-2) (y_j - x_i) (B, M, D) in the same pass.
void gemm(const at::Tensor& x, const at::Tensor& y, const at::Tensor& centre, const at::Tensor& bc,
          double beta, double tol, bool exclude_diag, bool want_grad, at::Tensor& rowsum,
          at::Tensor& wdiff, const ColumnSide* column_side) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "energyflow_row_stats_gemm", [&] {
    using T = scalar_t;
    const int64_t batch = x.size(0), n_rows = x.size(1), dim = x.size(2);
    const int64_t n_cols = y.size(1), cols = bc.size(1);
    const GemmInputs s{n_cols, cols, dim, dim + (kLanes - dim % kLanes) % kLanes};
    const T* xp = x.data_ptr<T>();
    const T* yp = y.data_ptr<T>();
    const T* cp = centre.data_ptr<T>();
    const T* ap = column_side ? column_side->a.data_ptr<T>() : nullptr;
    const T* bp = bc.data_ptr<T>();
    T* rp = rowsum.data_ptr<T>();
    T* wp = want_grad ? wdiff.data_ptr<T>() : nullptr;
    std::vector<T> y_t(batch * dim * cols, T(0));
    std::vector<T> y_sq(batch * cols, T(0));
    centred_transpose(yp, cp, batch, n_cols, dim, cols, y_t.data(), y_sq.data());
    std::optional<ThreadColumnTotals> totals;
    if (column_side) totals.emplace(batch, cols, dim);
    const PowerParams<T> pw(beta);
    const bool balanced = exclude_diag && (!want_grad || column_side);
    dispatch_power(beta, [&](auto power) {
      for_each_row_block(batch, n_rows, kGemmRowBlock, balanced,
                         [&](int64_t bi, int64_t lo, int64_t hi) {
        ColumnTotals mine{};
        if (totals) mine = totals->mine(bi);
        gemm_row_block<decltype(power)::value, T>(
            xp + bi * n_rows * dim, yp + bi * n_cols * dim, cp + bi * dim,
            y_t.data() + bi * dim * cols, y_sq.data() + bi * cols, bp + bi * cols, lo, hi, s,
            pw, static_cast<T>(tol), exclude_diag, want_grad, rp + bi * n_rows,
            want_grad ? wp + bi * n_rows * dim : nullptr, ap ? ap + bi * n_rows : nullptr,
            totals ? &mine : nullptr);
      });
    });
    if (totals) {
      totals->finish<T>(yp, cp, n_cols, column_side->colsum.data_ptr<T>(),
                        column_side->col_wdiff.data_ptr<T>());
    }
  });
}

#include "energy_score_direct.h"

}  // namespace EF_KERNEL_NAMESPACE
}  // namespace energyflow_cpu
