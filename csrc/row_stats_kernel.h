// Row-statistics kernel templates (see pairwise_power.cpp for what they compute).
// Included twice: once compiled for the baseline ISA and once for AVX2+FMA, each inside its own
// namespace (EF_KERNEL_NAMESPACE), so one portable binary runs the fast variant where the CPU
// has it. No include guard on purpose; include <torch/extension.h>, <algorithm>, <cmath> and
// <vector> before this file.
#ifndef EF_KERNEL_NAMESPACE
#error "define EF_KERNEL_NAMESPACE before including row_stats_kernel.h"
#endif

namespace energyflow_cpu {
namespace EF_KERNEL_NAMESPACE {

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

// Rows of X handled together: each load of Y serves kRows rows (register blocking).
constexpr int64_t kRows = 4;
// Columns per register tile of the distance loop; the padded column count is a multiple of it.
constexpr int64_t kLanes = kPadColumns;

template <Power P, typename T>
void row_block(const T* x, const T* y_t, const T* b, int64_t row_begin, int64_t row_end,
               int64_t n_cols, int64_t dim, T half_beta, bool exclude_diag, bool want_grad,
               T* rowsum, T* wdiff) {
  // y_t is (dim, n_cols) with n_cols a multiple of kLanes (padding columns carry b = 0).
  alignas(64) T d2[kRows][kColChunk];
  alignas(64) T w[kRows][kColChunk];
  const int64_t n_rows = row_end - row_begin;
  // Totals across column chunks in double: the per-chunk sums are short and stay in T.
  std::vector<double> row_total(n_rows, 0.0);
  std::vector<double> wdiff_total(want_grad ? n_rows * dim : 0, 0.0);

  for (int64_t j0 = 0; j0 < n_cols; j0 += kColChunk) {
    const int64_t nj = std::min(kColChunk, n_cols - j0);
    const T* b_chunk = b + j0;
    for (int64_t i = row_begin; i < row_end; i += kRows) {
      const int64_t rows_here = std::min(kRows, row_end - i);
      const T* xr[kRows];
      for (int64_t r = 0; r < kRows; ++r) xr[r] = x + std::min(i + r, row_end - 1) * dim;

      for (int64_t jb = 0; jb < nj; jb += kLanes) {
        T acc[kRows][kLanes] = {};
        for (int64_t k = 0; k < dim; ++k) {
          const T* yk = y_t + k * n_cols + j0 + jb;
          T xk[kRows];
          for (int64_t r = 0; r < kRows; ++r) xk[r] = xr[r][k];
#pragma omp simd
          for (int64_t jj = 0; jj < kLanes; ++jj) {
            const T yv = yk[jj];
            for (int64_t r = 0; r < kRows; ++r) {
              const T t = xk[r] - yv;
              acc[r][jj] += t * t;
            }
          }
        }
        for (int64_t r = 0; r < kRows; ++r)
          for (int64_t jj = 0; jj < kLanes; ++jj) d2[r][jb + jj] = acc[r][jj];
      }

      for (int64_t r = 0; r < rows_here; ++r) {
        const int64_t diag = i + r - j0;
        if (exclude_diag && diag >= 0 && diag < nj) d2[r][diag] = T(0);
        T chunk_sum = T(0);
        T* wr = w[r];
        const T* dr = d2[r];
#pragma omp simd reduction(+ : chunk_sum)
        for (int64_t j = 0; j < nj; ++j) {
          const bool pos = dr[j] > T(0);
          const T safe = pos ? dr[j] : T(1);
          const T bp = pos ? b_chunk[j] * power_of_square<P>(safe, half_beta) : T(0);
          chunk_sum += bp;
          wr[j] = bp / safe;  // b_j r^(beta-2), 0 where r = 0
        }
        row_total[i + r - row_begin] += chunk_sum;
      }

      if (want_grad) {
        for (int64_t r = 0; r < rows_here; ++r) {
          const T* wr = w[r];
          for (int64_t k = 0; k < dim; ++k) {
            const T xk = xr[r][k];
            const T* yk = y_t + k * n_cols + j0;
            T acc = T(0);
#pragma omp simd reduction(+ : acc)
            for (int64_t j = 0; j < nj; ++j) acc += wr[j] * (xk - yk[j]);
            wdiff_total[(i + r - row_begin) * dim + k] += acc;
          }
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

// rowsum (B, N) and, if want_grad, wdiff (B, N, D) of x (B, N, D) against y_t (B, D, M_pad)
// with weights b (B, M_pad); M_pad a multiple of kLanes, padding columns weighted 0.
void compute(const at::Tensor& xc, const at::Tensor& y_t, const at::Tensor& bc, double beta,
             bool exclude_diag, bool want_grad, at::Tensor& rowsum, at::Tensor& wdiff) {
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "energyflow_row_stats", [&] {
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
}

}  // namespace EF_KERNEL_NAMESPACE
}  // namespace energyflow_cpu
