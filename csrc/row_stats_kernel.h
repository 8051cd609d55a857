// CPU kernel templates (see pairwise_power.cpp for what they compute).
// Included twice: once compiled for the baseline ISA and once for AVX2+FMA, each inside its own
// namespace (EF_KERNEL_NAMESPACE), so one portable binary runs the fast variant where the CPU
// has it. No include guard on purpose; include <torch/extension.h>, <algorithm>, <cmath>,
// <cstdint>, <cstring> and <vector> before this file.
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

// ---- powers ---------------------------------------------------------------------------------
// Branch-free, division-free log2 / exp2 for float that GCC vectorises under `omp simd` (no
// -ffast-math, so no FTZ or errno side effects): log2 from the exponent bits and a degree-8
// polynomial u P7(u) on the mantissa 1 + u in [sqrt(1/2), sqrt(2)) (Chebyshev fit, absolute
// error 8.6e-8), exp2 from a degree-5 polynomial on [-1/2, 1/2] (relative error 1.0e-7) and the
// exponent bits; d2^(beta/2) is then within about 2e-7 relative (ln 2 (beta/2) 8.6e-8 + 1e-7).
// Inputs: log2 a positive normal float; exp2 clamped to the normal range.
inline float log2_positive(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  const int32_t exponent = static_cast<int32_t>((bits >> 23) & 0xffu) - 127;
  bits = (bits & 0x007fffffu) | 0x3f800000u;
  float m;
  std::memcpy(&m, &bits, sizeof m);  // [1, 2)
  const bool high = m > 1.41421356f;
  const float u = (high ? 0.5f * m : m) - 1.0f;
  const float e = static_cast<float>(exponent) + (high ? 1.0f : 0.0f);
  const float p =
      1.44269496f + u * (-0.721352760f + u * (0.480924046f + u * (-0.360241924f +
      u * (0.287075321f + u * (-0.248822345f + u * (0.234212616f + u * -0.146205297f))))));
  return e + u * p;
}

inline float exp2_clamped(float y) {
  y = std::min(std::max(y, -125.0f), 127.0f);
  const float rounded = (y + 12582912.0f) - 12582912.0f;  // round to nearest (2^23 + 2^22)
  const float z = y - rounded;                            // [-1/2, 1/2]
  const float p =
      1.00000008f + z * (0.693147207f + z * (0.240221073f + z * (0.0555032720f +
      z * (0.00967604193f + z * 0.00134004369f))));
  const int32_t bits_int = (static_cast<int32_t>(rounded) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits_int, sizeof scale);
  return p * scale;
}

// For d2 > 0 and a weight b: bp = b r^beta and w = b r^(beta - 2) = bp / d2, r = sqrt(d2). The
// common exponents avoid exp/log entirely.
template <Power P, typename T>
inline void weighted_powers(T d2, T b, T half_beta, T& bp, T& w) {
  if constexpr (P == Power::kOne) {
    bp = b * std::sqrt(d2);
    w = bp / d2;
  } else if constexpr (P == Power::kTwo) {
    bp = b * d2;
    w = b;
  } else if constexpr (P == Power::kHalf) {
    bp = b * std::sqrt(std::sqrt(d2));
    w = bp / d2;
  } else if constexpr (std::is_same_v<T, float>) {
    bp = b * exp2_clamped(half_beta * log2_positive(std::max(d2, 1.17549435e-38f)));
    w = bp / d2;
  } else {
    bp = b * std::exp(half_beta * std::log(d2));
    w = bp / d2;
  }
}

// Columns [j0, j0 + nj) of y_t (dim rows, n_cols apart) copied into one contiguous (dim, nj)
// panel: rows n_cols apart map to the same cache sets for large n_cols and evict each other.
template <typename T>
inline void copy_panel(const T* y_t, int64_t n_cols, int64_t j0, int64_t nj, int64_t dim,
                       T* panel) {
  for (int64_t k = 0; k < dim; ++k)
    std::copy(y_t + k * n_cols + j0, y_t + k * n_cols + j0 + nj, panel + k * nj);
}

// A self sum without gradients (exclude_diag, !want_grad) is symmetric: sum_{i != j} b_i b_j
// r_ij^beta = 2 sum_{i < j}. Its row pass then visits only the pairs j > i and returns
// rowsum_i = 2 sum_{j > i} b_j r_ij^beta: not the full row sum, but the same weighted total
// sum_i b_i rowsum_i, which is all a self sum without gradients uses; half the work.
inline int64_t upper_triangle_start(bool upper, int64_t row_begin) {
  return upper ? (row_begin / kColChunk) * kColChunk : 0;  // the chunk holding the diagonal
}

// Zero the pairs this row must skip: the diagonal, and in the upper-triangle mode every j <= i.
template <typename T>
inline void drop_below_diagonal(T* values, int64_t diag, int64_t nj, bool upper) {
  if (diag < 0) return;  // the whole chunk lies above the diagonal
  if (!upper) {
    if (diag < nj) values[diag] = T(0);
    return;
  }
  std::fill(values, values + std::min(diag + 1, nj), T(0));
}

// ---- exact-difference path ------------------------------------------------------------------
template <Power P, typename T>
void exact_row_block(const T* x, const T* y_t, const T* b, int64_t row_begin, int64_t row_end,
                     int64_t n_cols, int64_t dim, T half_beta, bool exclude_diag, bool want_grad,
                     T* rowsum, T* wdiff) {
  // y_t is (dim, n_cols) with n_cols a multiple of kLanes (padding columns carry b = 0).
  alignas(64) T d2[kRows][kColChunk];
  alignas(64) T w[kRows][kColChunk];
  const int64_t n_rows = row_end - row_begin;
  // Totals across column chunks in double: the per-chunk sums are short and stay in T.
  std::vector<double> row_total(n_rows, 0.0);
  std::vector<double> wdiff_total(want_grad ? n_rows * dim : 0, 0.0);

  const bool upper = exclude_diag && !want_grad;  // see upper_triangle_start
  std::vector<T> panel(dim * kColChunk);
  for (int64_t j0 = upper_triangle_start(upper, row_begin); j0 < n_cols; j0 += kColChunk) {
    const int64_t nj = std::min(kColChunk, n_cols - j0);
    const T* b_chunk = b + j0;
    copy_panel(y_t, n_cols, j0, nj, dim, panel.data());
    for (int64_t i = row_begin; i < row_end; i += kRows) {
      const int64_t rows_here = std::min(kRows, row_end - i);
      const T* xr[kRows];
      for (int64_t r = 0; r < kRows; ++r) xr[r] = x + std::min(i + r, row_end - 1) * dim;

      for (int64_t jb = 0; jb < nj; jb += kLanes) {
        T acc[kRows][kLanes] = {};
        for (int64_t k = 0; k < dim; ++k) {
          const T* yk = panel.data() + k * nj + jb;
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
        if (exclude_diag) drop_below_diagonal(d2[r], diag, nj, upper);
        T chunk_sum = T(0);
        T* wr = w[r];
        const T* dr = d2[r];
#pragma omp simd reduction(+ : chunk_sum)
        for (int64_t j = 0; j < nj; ++j) {
          const bool pos = dr[j] > T(0);
          T bp, wj;
          weighted_powers<P>(pos ? dr[j] : T(1), b_chunk[j], half_beta, bp, wj);
          chunk_sum += pos ? bp : T(0);
          wr[j] = pos ? wj : T(0);  // b_j r^(beta-2), 0 where r = 0
        }
        row_total[i + r - row_begin] += chunk_sum;
      }

      if (want_grad) {
        for (int64_t r = 0; r < rows_here; ++r) {
          const T* wr = w[r];
          for (int64_t k = 0; k < dim; ++k) {
            const T xk = xr[r][k];
            const T* yk = panel.data() + k * nj;
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
    rowsum[row_begin + r] = static_cast<T>(upper ? 2.0 * row_total[r] : row_total[r]);
    if (want_grad) {
      for (int64_t k = 0; k < dim; ++k)
        wdiff[(row_begin + r) * dim + k] = static_cast<T>(wdiff_total[r * dim + k]);
    }
  }
}

// ---- GEMM path --------------------------------------------------------------------------------
// The register-blocked micro-kernel of both products: out[r][jj] = sum_k a[r][k] panel[k][jj]
// for kRows rows of a (each contiguous along k) and kLanes columns of panel (rows p_stride
// apart): each panel load serves kRows rows.

template <typename T>
inline void micro_kernel(const T* const a[kRows], const T* __restrict panel, int64_t p_stride,
                         int64_t depth, T out[kRows][kLanes]) {
  const T* __restrict a0 = a[0];
  const T* __restrict a1 = a[1];
  const T* __restrict a2 = a[2];
  const T* __restrict a3 = a[3];
  T acc0[kLanes] = {}, acc1[kLanes] = {}, acc2[kLanes] = {}, acc3[kLanes] = {};
  for (int64_t k = 0; k < depth; ++k) {
    const T* __restrict pk = panel + k * p_stride;
    const T s0 = a0[k], s1 = a1[k], s2 = a2[k], s3 = a3[k];
#pragma omp simd
    for (int64_t jj = 0; jj < kLanes; ++jj) {
      const T pv = pk[jj];
      acc0[jj] += s0 * pv;
      acc1[jj] += s1 * pv;
      acc2[jj] += s2 * pv;
      acc3[jj] += s3 * pv;
    }
  }
  for (int64_t jj = 0; jj < kLanes; ++jj) {
    out[0][jj] = acc0[jj];
    out[1][jj] = acc1[jj];
    out[2][jj] = acc2[jj];
    out[3][jj] = acc3[jj];
  }
}

// d2_ij = |x_i|^2 + |y_j|^2 - 2 x_i.y_j on centred data, the dot products from a register-blocked
// micro-kernel; a pair whose d2 is within the expansion's rounding of 0 (d2 <= tol (|x|^2 +
// |y|^2)) is recomputed from exact differences, and its gradient term w (x_i - y_j) is added
// exactly too, so duplicates keep the subgradient 0 and close pairs do not cancel. The gradient
// of the other pairs is x_i sum_j w_ij - (W Y)_i, W Y from a second micro-kernel over the tile.
struct GemmInputs {
  int64_t n_cols;      // real columns of Y
  int64_t n_cols_pad;  // multiple of kLanes
  int64_t dim;         // real features
  int64_t dim_pad;     // multiple of kLanes
};

template <Power P, typename T>
void gemm_row_block(const T* x, const T* x_sq, const T* y_t, const T* y_rows, const T* y_sq,
                    const T* b, int64_t row_begin, int64_t row_end, const GemmInputs& s,
                    T half_beta, T tol, bool exclude_diag, bool want_grad, T* rowsum, T* wdiff) {
  // x: (n_rows, dim_pad) zero-padded; y_t: (dim_pad, n_cols_pad); y_rows: (n_cols_pad, dim_pad).
  alignas(64) T d2[kRows][kColChunk];
  alignas(64) T w[kRows][kColChunk];
  alignas(64) T near[kRows][kColChunk];
  const int64_t n_rows = row_end - row_begin;
  const int64_t dim = s.dim, dim_pad = s.dim_pad, n_cols = s.n_cols_pad;
  std::vector<double> row_total(n_rows, 0.0);
  std::vector<double> w_total(want_grad ? n_rows : 0, 0.0);
  std::vector<double> wy_total(want_grad ? n_rows * dim : 0, 0.0);
  std::vector<double> exact_total(want_grad ? n_rows * dim : 0, 0.0);

  const bool upper = exclude_diag && !want_grad;  // see upper_triangle_start
  std::vector<T> panel(dim * kColChunk);
  for (int64_t j0 = upper_triangle_start(upper, row_begin); j0 < n_cols; j0 += kColChunk) {
    const int64_t nj = std::min(kColChunk, n_cols - j0);
    const T* b_chunk = b + j0;
    const T* ysq_chunk = y_sq + j0;
    copy_panel(y_t, n_cols, j0, nj, dim, panel.data());
    for (int64_t i = row_begin; i < row_end; i += kRows) {
      const int64_t rows_here = std::min(kRows, row_end - i);
      const T* xr[kRows];
      T xsq[kRows];
      for (int64_t r = 0; r < kRows; ++r) {
        const int64_t row = std::min(i + r, row_end - 1);
        xr[r] = x + row * dim_pad;
        xsq[r] = x_sq[row];
      }
      // dots: acc[r][jj] = x_r . y_(jb + jj), then d2 and the near-zero flags
      for (int64_t jb = 0; jb < nj; jb += kLanes) {
        alignas(64) T acc[kRows][kLanes];
        micro_kernel<T>(xr, panel.data() + jb, nj, dim, acc);
        for (int64_t r = 0; r < kRows; ++r) {
#pragma omp simd
          for (int64_t jj = 0; jj < kLanes; ++jj) {
            const T norms = xsq[r] + ysq_chunk[jb + jj];
            const T value = norms - T(2) * acc[r][jj];
            d2[r][jb + jj] = value;
            near[r][jb + jj] = value <= tol * norms ? T(1) : T(0);
          }
        }
      }
      for (int64_t r = 0; r < rows_here; ++r) {
        const int64_t row = i + r;
        const int64_t diag = row - j0;
        if (exclude_diag) {
          drop_below_diagonal(d2[r], diag, nj, upper);
          drop_below_diagonal(near[r], diag, nj, upper);
        }
        T* wr = w[r];
        T* dr = d2[r];
        T* nr = near[r];
        T near_count = T(0);
#pragma omp simd reduction(+ : near_count)
        for (int64_t j = 0; j < nj; ++j) near_count += nr[j];
        // the rare close pairs: exact distances (their gradient is added exactly below)
        for (int64_t j = 0; near_count > T(0) && j < nj; ++j) {
          if (nr[j] == T(0)) continue;
          if (j0 + j >= s.n_cols) {  // padding column: weight 0
            dr[j] = T(0);
            continue;
          }
          const T* yj = y_rows + (j0 + j) * dim_pad;
          T sum = T(0);
          for (int64_t k = 0; k < dim; ++k) {
            const T t = xr[r][k] - yj[k];
            sum += t * t;
          }
          dr[j] = sum;
        }
        // p_j = b_j r^beta (kept in d2's place once read) and w_j = b_j r^(beta - 2)
#pragma omp simd
        for (int64_t j = 0; j < nj; ++j) {
          const bool pos = dr[j] > T(0);
          T bp, wj;
          weighted_powers<P>(pos ? dr[j] : T(1), b_chunk[j], half_beta, bp, wj);
          wr[j] = pos ? wj : T(0);
          dr[j] = pos ? bp : T(0);
        }
        T chunk_sum = T(0);
#pragma omp simd reduction(+ : chunk_sum)
        for (int64_t j = 0; j < nj; ++j) chunk_sum += dr[j];
        row_total[row - row_begin] += chunk_sum;
        if (want_grad) {
          // close pairs: gradient term w (x_i - y_j) from exact differences, out of W Y
          double* exact = exact_total.data() + (row - row_begin) * dim;
          for (int64_t j = 0; near_count > T(0) && j < nj; ++j) {
            if (nr[j] == T(0)) continue;
            if (wr[j] != T(0)) {
              const T* yj = y_rows + (j0 + j) * dim_pad;
              for (int64_t k = 0; k < dim; ++k) exact[k] += double(wr[j]) * (xr[r][k] - yj[k]);
            }
            wr[j] = T(0);
          }
          T chunk_w = T(0);
#pragma omp simd reduction(+ : chunk_w)
          for (int64_t j = 0; j < nj; ++j) chunk_w += wr[j];
          w_total[row - row_begin] += chunk_w;
        }
      }
      if (want_grad) {
        // (W Y) for these rows: acc[r][kk] = sum_j w[r][j] y[j][kb + kk]
        const T* wrows[kRows] = {w[0], w[1], w[2], w[3]};
        for (int64_t kb = 0; kb < dim_pad; kb += kLanes) {
          alignas(64) T acc[kRows][kLanes];
          micro_kernel<T>(wrows, y_rows + j0 * dim_pad + kb, dim_pad, nj, acc);
          for (int64_t r = 0; r < rows_here; ++r) {
            double* total = wy_total.data() + (i + r - row_begin) * dim;
            const int64_t k_end = std::min(kLanes, dim - kb);
            for (int64_t kk = 0; kk < k_end; ++kk) total[kb + kk] += acc[r][kk];
          }
        }
      }
    }
  }
  for (int64_t r = 0; r < n_rows; ++r) {
    rowsum[row_begin + r] = static_cast<T>(upper ? 2.0 * row_total[r] : row_total[r]);
    if (want_grad) {
      const T* xrow = x + (row_begin + r) * dim_pad;
      for (int64_t k = 0; k < dim; ++k) {
        const double value = double(xrow[k]) * w_total[r] - wy_total[r * dim + k] +
                             exact_total[r * dim + k];
        wdiff[(row_begin + r) * dim + k] = static_cast<T>(value);
      }
    }
  }
}

// ---- drivers -----------------------------------------------------------------------------------
template <typename F>
void for_each_row_block(int64_t batch, int64_t n_rows, int64_t block, const F& body) {
  const int64_t blocks_per_batch = (n_rows + block - 1) / block;
  at::parallel_for(0, batch * blocks_per_batch, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bi = task / blocks_per_batch;
      const int64_t row_begin = (task % blocks_per_batch) * block;
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
// with weights b (B, M_pad); M_pad a multiple of kLanes, padding columns weighted 0.
void exact(const at::Tensor& xc, const at::Tensor& y_t, const at::Tensor& bc, double beta,
           bool exclude_diag, bool want_grad, at::Tensor& rowsum, at::Tensor& wdiff) {
  AT_DISPATCH_FLOATING_TYPES(xc.scalar_type(), "energyflow_row_stats_exact", [&] {
    using T = scalar_t;
    const int64_t batch = xc.size(0), n_rows = xc.size(1), dim = xc.size(2);
    const int64_t n_cols = y_t.size(2);
    const T* xp = xc.data_ptr<T>();
    const T* ytp = y_t.data_ptr<T>();
    const T* bp = bc.data_ptr<T>();
    T* rp = rowsum.data_ptr<T>();
    T* wp = want_grad ? wdiff.data_ptr<T>() : nullptr;
    const T half_beta = static_cast<T>(0.5 * beta);
    dispatch_power(beta, [&](auto power) {
      for_each_row_block(batch, n_rows, kRowBlock, [&](int64_t bi, int64_t lo, int64_t hi) {
        exact_row_block<decltype(power)::value, T>(
            xp + bi * n_rows * dim, ytp + bi * dim * n_cols, bp + bi * n_cols, lo, hi, n_cols,
            dim, half_beta, exclude_diag, want_grad, rp + bi * n_rows,
            want_grad ? wp + bi * n_rows * dim : nullptr);
      });
    });
  });
}

// The GEMM path on centred, padded inputs: x (B, N, D_pad), x_sq (B, N), y_t (B, D_pad, M_pad),
// y_rows (B, M_pad, D_pad), y_sq (B, M_pad), b (B, M_pad); wdiff (B, N, D).
void gemm(const at::Tensor& x, const at::Tensor& x_sq, const at::Tensor& y_t,
          const at::Tensor& y_rows, const at::Tensor& y_sq, const at::Tensor& bc, int64_t n_cols,
          int64_t dim, double beta, double tol, bool exclude_diag, bool want_grad,
          at::Tensor& rowsum, at::Tensor& wdiff) {
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "energyflow_row_stats_gemm", [&] {
    using T = scalar_t;
    const int64_t batch = x.size(0), n_rows = x.size(1), dim_pad = x.size(2);
    const GemmInputs s{n_cols, y_t.size(2), dim, dim_pad};
    const T* xp = x.data_ptr<T>();
    const T* xsqp = x_sq.data_ptr<T>();
    const T* ytp = y_t.data_ptr<T>();
    const T* yrp = y_rows.data_ptr<T>();
    const T* ysqp = y_sq.data_ptr<T>();
    const T* bp = bc.data_ptr<T>();
    T* rp = rowsum.data_ptr<T>();
    T* wp = want_grad ? wdiff.data_ptr<T>() : nullptr;
    const T half_beta = static_cast<T>(0.5 * beta);
    const int64_t cols = s.n_cols_pad;
    dispatch_power(beta, [&](auto power) {
      for_each_row_block(batch, n_rows, kGemmRowBlock, [&](int64_t bi, int64_t lo, int64_t hi) {
        gemm_row_block<decltype(power)::value, T>(
            xp + bi * n_rows * dim_pad, xsqp + bi * n_rows, ytp + bi * dim_pad * cols,
            yrp + bi * cols * dim_pad, ysqp + bi * cols, bp + bi * cols, lo, hi, s, half_beta,
            static_cast<T>(tol), exclude_diag, want_grad, rp + bi * n_rows,
            want_grad ? wp + bi * n_rows * dim : nullptr);
      });
    });
  });
}

// ---- energy score with few samples per target ---------------------------------------------
// For each target b: score_b = (1/m) sum_j r(y_bj, x_b)^beta
//                              - 1/(m (m-1)) sum_{j<k} r(y_bj, y_bk)^beta,
// all m + m(m-1)/2 distances from exact differences, and (if want_grad) the gradients of score_b
// with respect to the samples (gy) and the target (gx) in the same pass.
template <Power P, typename T>
T energy_score_target(const T* y, const T* x, int64_t m, int64_t dim, T half_beta, T beta,
                      bool want_grad, T* gy, T* gx, T* diff) {
  const double cross_scale = 1.0 / m, self_scale = 1.0 / (double(m) * (m - 1));
  if (want_grad) {
    std::fill(gy, gy + m * dim, T(0));
    std::fill(gx, gx + dim, T(0));
  }
  double total = 0.0;
  // pairs (j, target) with factor +1/m, then (j, k > j) with factor -1/(m (m-1))
  for (int64_t j = 0; j < m; ++j) {
    const T* yj = y + j * dim;
    for (int64_t k = j; k < m; ++k) {
      const T* other = k == j ? x : y + k * dim;
      T d2 = T(0);
#pragma omp simd reduction(+ : d2)
      for (int64_t c = 0; c < dim; ++c) {
        diff[c] = yj[c] - other[c];
        d2 += diff[c] * diff[c];
      }
      if (!(d2 > T(0))) continue;
      T value, value_over_d2;
      weighted_powers<P>(d2, T(1), half_beta, value, value_over_d2);
      const double factor = k == j ? cross_scale : -self_scale;
      total += factor * value;
      if (want_grad) {
        const T g = static_cast<T>(factor) * beta * value_over_d2;
        T* gj = gy + j * dim;
        T* go = k == j ? gx : gy + k * dim;
#pragma omp simd
        for (int64_t c = 0; c < dim; ++c) {
          gj[c] += g * diff[c];
          go[c] -= g * diff[c];
        }
      }
    }
  }
  return static_cast<T>(total);
}

void energy_score_direct(const at::Tensor& samples, const at::Tensor& target, double beta,
                         bool want_grad, at::Tensor& scores, at::Tensor& grad_samples,
                         at::Tensor& grad_target) {
  AT_DISPATCH_FLOATING_TYPES(samples.scalar_type(), "energyflow_energy_score_direct", [&] {
    using T = scalar_t;
    const int64_t batch = samples.size(0), m = samples.size(1), dim = samples.size(2);
    const T* yp = samples.data_ptr<T>();
    const T* xp = target.data_ptr<T>();
    T* sp = scores.data_ptr<T>();
    T* gyp = want_grad ? grad_samples.data_ptr<T>() : nullptr;
    T* gxp = want_grad ? grad_target.data_ptr<T>() : nullptr;
    const T half_beta = static_cast<T>(0.5 * beta), tbeta = static_cast<T>(beta);
    dispatch_power(beta, [&](auto power) {
      at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
        std::vector<T> diff(dim);
        for (int64_t bi = begin; bi < end; ++bi) {
          sp[bi] = energy_score_target<decltype(power)::value, T>(
              yp + bi * m * dim, xp + bi * dim, m, dim, half_beta, tbeta, want_grad,
              want_grad ? gyp + bi * m * dim : nullptr, want_grad ? gxp + bi * dim : nullptr,
              diff.data());
        }
      });
    });
  });
}

}  // namespace EF_KERNEL_NAMESPACE
}  // namespace energyflow_cpu
