// CPU kernel templates (see pairwise_power.cpp for what they compute).
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

// ---- powers ---------------------------------------------------------------------------------
// r^beta from d = r^2 without exp or log for general beta in fp32, by tables built once per call
// (FloatPowerTables): with d = 2^(E - 127) m (E the biased exponent, m in [1, 2)) and c_k the
// centre of the eighth of [1, 2) that holds m (k the top three mantissa bits),
//   d^(beta/2) = 2^((beta/2)(E - 127)) c_k^(beta/2) (1 + rho)^(beta/2),   rho = m / c_k - 1,
// |rho| <= 1/17, (1 + rho)^(beta/2) by its Taylor polynomial of degree 4 (error below 2.2e-8
// for beta in (0, 2)), and 2^((beta/2)(E - 127)) as the product of three 8-entry tables on the
// fields of E = 64 h + 8 i + l. Every table entry is d's power rounded once from double, so a
// term is within about 4e-7 relative of the exact power over the whole float range (the
// roundings of four products and four entries; tested), and an AVX2 register holds each table
// (one permute per lookup, no gathers, a third of the floating-point work of log2 / exp2
// polynomials). The fp64 path uses std::exp / std::log.
struct FloatPowerTables {
  alignas(32) float inv_centre[8];    // 1 / c_k
  alignas(32) float centre_power[8];  // c_k^(beta/2)
  alignas(32) float exp_low[8];       // 2^((beta/2) l)
  alignas(32) float exp_mid[8];       // 2^((beta/2) 8 i)
  alignas(32) float exp_high[8];      // 2^((beta/2) (64 h - 127)), h < 4
  float taylor[4];                    // binom(beta/2, 1..4)
};

// beta / 2 and, for the general power in fp32, its tables.
template <typename T>
struct PowerParams {
  T half_beta;
  FloatPowerTables tables;

  explicit PowerParams(double beta) : half_beta(static_cast<T>(0.5 * beta)) {
    const double hb = 0.5 * beta;
    double coefficient = 1.0;
    for (int n = 0; n < 4; ++n) {
      coefficient *= (hb - n) / (n + 1);
      tables.taylor[n] = static_cast<float>(coefficient);
    }
    for (int k = 0; k < 8; ++k) {
      const double centre = 1.0 + (k + 0.5) / 8.0;
      tables.inv_centre[k] = static_cast<float>(1.0 / centre);
      tables.centre_power[k] = static_cast<float>(std::pow(centre, hb));
      tables.exp_low[k] = static_cast<float>(std::exp2(hb * k));
      tables.exp_mid[k] = static_cast<float>(std::exp2(hb * 8 * k));
      tables.exp_high[k] = static_cast<float>(std::exp2(hb * (64 * (k & 3) - 127)));
    }
  }
};

// d^(beta/2) for d a positive normal float (or +inf, which gives a finite value) by the tables.
inline float power_by_tables(float d, const FloatPowerTables& t) {
  int32_t bits;
  std::memcpy(&bits, &d, sizeof bits);
  const int32_t k = (bits >> 20) & 7, e = bits >> 23;
  const int32_t mantissa_bits = (bits & 0x007fffff) | 0x3f800000;
  float m;
  std::memcpy(&m, &mantissa_bits, sizeof m);
  const float rho = m * t.inv_centre[k] - 1.0f;
  const float series =
      1.0f + rho * (t.taylor[0] + rho * (t.taylor[1] + rho * (t.taylor[2] + rho * t.taylor[3])));
  return (t.centre_power[k] * t.exp_low[e & 7]) * (t.exp_mid[(e >> 3) & 7] * t.exp_high[e >> 6]) *
         series;
}

// max(d2, the smallest normal number), for any d2 that is not NaN: for floats one integer max on
// the bits (negative numbers, zeros and subnormals all come out as FLT_MIN).
inline float at_least_min_normal(float d2) {
  int32_t bits;
  std::memcpy(&bits, &d2, sizeof bits);
  bits = std::max(bits, int32_t(0x00800000));
  float out;
  std::memcpy(&out, &bits, sizeof out);
  return out;
}
inline double at_least_min_normal(double d2) { return std::max(d2, 2.2250738585072014e-308); }

// r^beta, r = sqrt(d), for d a positive normal number: the common exponents avoid exp and log.
template <Power P, typename T>
inline T power_of_square(T d, const PowerParams<T>& pw) {
  if constexpr (P == Power::kOne) {
    return std::sqrt(d);
  } else if constexpr (P == Power::kTwo) {
    return d;
  } else if constexpr (P == Power::kHalf) {
    return std::sqrt(std::sqrt(d));
  } else if constexpr (std::is_same_v<T, float>) {
    return power_by_tables(d, pw.tables);
  } else {
    return std::exp(pw.half_beta * std::log(d));
  }
}

// For a squared distance d2 (<= 0 where the pair is to be skipped: a duplicate or a dropped
// pair) and a weight b: b r^beta, and 0 where d2 <= 0. The passes without gradients need only
// this (no division).
template <Power P, typename T>
inline T weighted_power(T d2, T b, const PowerParams<T>& pw) {
  const T b_here = d2 > T(0) ? b : T(0);
  if constexpr (P == Power::kTwo) return b_here * d2;
  return b_here * power_of_square<P>(at_least_min_normal(d2), pw);
}

// bp = b r^beta and the gradient weight w = b r^(beta - 2) = bp / d2 (b itself for beta = 2),
// both 0 where d2 <= 0 (the subgradient 0 of a duplicate).
template <Power P, typename T>
inline void weighted_powers(T d2, T b, const PowerParams<T>& pw, T& bp, T& w) {
  const T b_here = d2 > T(0) ? b : T(0);
  if constexpr (P == Power::kTwo) {
    bp = b_here * d2;
    w = b_here;
  } else {
    const T d = at_least_min_normal(d2);
    bp = b_here * power_of_square<P>(d, pw);
    w = bp / d;
  }
}

#ifdef EF_KERNEL_AVX2
// The tables in registers (loaded once per row: stores to a float row could alias them).
struct FloatPowerRegisters {
  __m256 inv_centre, centre_power, exp_low, exp_mid, exp_high, taylor[4];
  explicit FloatPowerRegisters(const FloatPowerTables& t)
      : inv_centre(_mm256_load_ps(t.inv_centre)),
        centre_power(_mm256_load_ps(t.centre_power)),
        exp_low(_mm256_load_ps(t.exp_low)),
        exp_mid(_mm256_load_ps(t.exp_mid)),
        exp_high(_mm256_load_ps(t.exp_high)),
        taylor{_mm256_set1_ps(t.taylor[0]), _mm256_set1_ps(t.taylor[1]),
               _mm256_set1_ps(t.taylor[2]), _mm256_set1_ps(t.taylor[3])} {}
};

// power_by_tables on eight floats (the same operations, in the same order).
inline __m256 power_by_tables8(__m256i bits, const FloatPowerRegisters& t) {
  const __m256i k = _mm256_srli_epi32(bits, 20);  // permutes read the low three bits
  const __m256i e = _mm256_srli_epi32(bits, 23);
  const __m256 m = _mm256_castsi256_ps(_mm256_or_si256(
      _mm256_and_si256(bits, _mm256_set1_epi32(0x007fffff)), _mm256_set1_epi32(0x3f800000)));
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 rho = _mm256_fmsub_ps(m, _mm256_permutevar8x32_ps(t.inv_centre, k), one);
  __m256 series = _mm256_fmadd_ps(t.taylor[3], rho, t.taylor[2]);
  series = _mm256_fmadd_ps(series, rho, t.taylor[1]);
  series = _mm256_fmadd_ps(series, rho, t.taylor[0]);
  series = _mm256_fmadd_ps(series, rho, one);
  const __m256 low = _mm256_mul_ps(_mm256_permutevar8x32_ps(t.centre_power, k),
                                   _mm256_permutevar8x32_ps(t.exp_low, e));
  const __m256 high =
      _mm256_mul_ps(_mm256_permutevar8x32_ps(t.exp_mid, _mm256_srli_epi32(e, 3)),
                    _mm256_permutevar8x32_ps(t.exp_high, _mm256_srli_epi32(e, 6)));
  return _mm256_mul_ps(_mm256_mul_ps(low, high), series);
}

// b where d2 > 0, else 0, for eight pairs.
inline __m256 weights_where_positive8(__m256 d2, const float* b) {
  return _mm256_and_ps(_mm256_cmp_ps(d2, _mm256_setzero_ps(), _CMP_GT_OQ), _mm256_loadu_ps(b));
}
// the bits of max(d2, FLT_MIN) for eight pairs (as at_least_min_normal)
inline __m256i at_least_min_normal8(__m256 d2) {
  return _mm256_max_epi32(_mm256_castps_si256(d2), _mm256_set1_epi32(0x00800000));
}
#endif

// weighted_powers over a row of n pairs (bp may be d2: each is read before it is written), or,
// with w = nullptr, weighted_power alone (no division).
template <Power P, typename T>
inline void weighted_powers_row(const T* d2, const T* b, int64_t n, const PowerParams<T>& pw,
                                T* bp, T* w) {
  int64_t j = 0;
#ifdef EF_KERNEL_AVX2
  if constexpr (P == Power::kGeneral && std::is_same_v<T, float>) {
    const FloatPowerRegisters tables(pw.tables);
    for (; j + 8 <= n; j += 8) {
      const __m256 d2_here = _mm256_loadu_ps(d2 + j);
      const __m256i d_bits = at_least_min_normal8(d2_here);
      const __m256 power = _mm256_mul_ps(weights_where_positive8(d2_here, b + j),
                                         power_by_tables8(d_bits, tables));
      _mm256_storeu_ps(bp + j, power);
      if (w) _mm256_storeu_ps(w + j, _mm256_div_ps(power, _mm256_castsi256_ps(d_bits)));
    }
  }
#endif
  if (w) {
#pragma omp simd
    for (int64_t i = j; i < n; ++i) weighted_powers<P>(d2[i], b[i], pw, bp[i], w[i]);
  } else {
#pragma omp simd
    for (int64_t i = j; i < n; ++i) bp[i] = weighted_power<P>(d2[i], b[i], pw);
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

// A self sum is symmetric: sum_{i != j} b_i b_j r_ij^beta = 2 sum_{i < j}. Without gradients
// (exclude_diag, !want_grad) its row pass visits only the pairs j > i and returns rowsum_i =
// 2 sum_{j > i} b_j r_ij^beta: not the full row sum, but the same weighted total sum_i b_i
// rowsum_i, which is all a self sum without gradients uses; half the work. With gradients, a
// two-sided pass (below) over the pairs j > i gives the rows their terms j > i and the columns
// theirs i < j; the caller adds the two (self_stats). Either way the row blocks are ordered so
// that each thread gets as many pairs (balanced_block).
inline int64_t upper_triangle_start(bool upper, int64_t row_begin) {
  return upper ? (row_begin / kLanes) * kLanes : 0;  // the column tile holding the diagonal
}

// The column side of a two-sided pass (rows x_i with weights a_i against columns y_j): one
// thread's running totals over the row blocks it handled, each (n_cols_pad) or (n_cols_pad,
// dim): value_j = sum_i a_i r^beta, and sum_i u_ij (y_j - x_i), u_ij = a_i r^(beta - 2), as
// (y_j - c) weight_j + rest_j. The exact path keeps weight_j = 0 and rest_j the whole sum (exact
// differences); the GEMM path keeps weight_j = sum of u_ij over the pairs not recomputed
// exactly, and rest_j = the close pairs' u_ij (y_j - x_i) from the raw rows minus the others'
// u_ij (x_i - c).
struct ColumnTotals {
  double* value;
  double* weight;
  double* rest;
};

// A row of a two-sided pass: the powers p_j = r^beta and w_j = r^(beta - 2) (weights 1) become the
// row side's b_j r^beta and b_j r^(beta - 2); the column side's a_i r^beta is added to col_value,
// u_j = a_i r^(beta - 2) stored and added to col_weight.
template <typename T>
inline void split_two_sided(T* p, T* w, const T* b, T a_i, int64_t n, T* u, T* col_value,
                            T* col_weight) {
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) {
    col_value[j] += a_i * p[j];
    u[j] = a_i * w[j];
    col_weight[j] += u[j];
    p[j] *= b[j];
    w[j] *= b[j];
  }
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
                     int64_t n_cols, int64_t dim, const PowerParams<T>& pw, bool exclude_diag,
                     bool want_grad, T* rowsum, T* wdiff, const T* a = nullptr,
                     const ColumnTotals* cols = nullptr) {
  // y_t is (dim, n_cols) with n_cols a multiple of kLanes (padding columns carry b = 0).
  // cols (with the row weights a): also the column side, in the same pass (want_grad)
  alignas(64) T d2[kRows][kColChunk];
  alignas(64) T w[kRows][kColChunk];
  alignas(64) T u[kRows][kColChunk];
  const int64_t n_rows = row_end - row_begin;
  // Totals across column chunks in double: the per-chunk sums are short and stay in T.
  std::vector<double> row_total(n_rows, 0.0);
  std::vector<double> wdiff_total(want_grad ? n_rows * dim : 0, 0.0);

  const bool upper = exclude_diag && (!want_grad || cols);  // see upper_triangle_start
  std::vector<T> panel(dim * kColChunk);
  // two-sided: the chunk's column sums of a_i r^beta, u_ij and u_ij (y_j - x_i) (dim, nj)
  std::vector<T> col_value(cols ? kColChunk : 0), col_weight(cols ? kColChunk : 0);
  std::vector<T> col_grad(cols ? dim * kColChunk : 0);
  const std::vector<T> ones(cols ? kColChunk : 0, T(1));
  for (int64_t j0 = upper_triangle_start(upper, row_begin); j0 < n_cols; j0 += kColChunk) {
    const int64_t nj = std::min(kColChunk, n_cols - j0);
    const T* b_chunk = b + j0;
    copy_panel(y_t, n_cols, j0, nj, dim, panel.data());
    if (cols) {
      std::fill(col_value.begin(), col_value.end(), T(0));
      std::fill(col_weight.begin(), col_weight.end(), T(0));  // (kept by split_two_sided only)
      std::fill(col_grad.begin(), col_grad.end(), T(0));
    }
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
        T* dr = d2[r];
        // b_j r^beta in d2's place and w_j = b_j r^(beta-2), both 0 where r = 0; summed after
        // (a reduction inside the power loop can leave its accumulator in memory)
        if (cols) {
          weighted_powers_row<P>(dr, ones.data(), nj, pw, dr, wr);
          split_two_sided(dr, wr, b_chunk, a[i + r], nj, u[r], col_value.data(),
                          col_weight.data());
        } else if (want_grad) {
          weighted_powers_row<P>(dr, b_chunk, nj, pw, dr, wr);
        } else {
          weighted_powers_row<P>(dr, b_chunk, nj, pw, dr, static_cast<T*>(nullptr));
        }
#pragma omp simd reduction(+ : chunk_sum)
        for (int64_t j = 0; j < nj; ++j) chunk_sum += dr[j];
        row_total[i + r - row_begin] += chunk_sum;
      }

      if (cols) {
        // both sides at once, per feature: t_rj = x_rk - y_jk gives the rows sum_j w_rj t_rj
        // and the columns -sum_r u_rj t_rj (rows past rows_here have w = u = 0)
        for (int64_t r = rows_here; r < kRows; ++r) {
          std::fill(w[r], w[r] + nj, T(0));
          std::fill(u[r], u[r] + nj, T(0));
        }
        for (int64_t k = 0; k < dim; ++k) {
          const T* yk = panel.data() + k * nj;
          T* grad = col_grad.data() + k * nj;
          const T x0 = xr[0][k], x1 = xr[1][k], x2 = xr[2][k], x3 = xr[3][k];
          T acc0 = T(0), acc1 = T(0), acc2 = T(0), acc3 = T(0);
#pragma omp simd reduction(+ : acc0, acc1, acc2, acc3)
          for (int64_t j = 0; j < nj; ++j) {
            const T yv = yk[j];
            const T t0 = x0 - yv, t1 = x1 - yv, t2 = x2 - yv, t3 = x3 - yv;
            acc0 += w[0][j] * t0;
            acc1 += w[1][j] * t1;
            acc2 += w[2][j] * t2;
            acc3 += w[3][j] * t3;
            grad[j] -= (u[0][j] * t0 + u[1][j] * t1) + (u[2][j] * t2 + u[3][j] * t3);
          }
          const T acc[kRows] = {acc0, acc1, acc2, acc3};
          for (int64_t r = 0; r < rows_here; ++r)
            wdiff_total[(i + r - row_begin) * dim + k] += acc[r];
        }
      } else if (want_grad) {
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
    if (cols) {
      for (int64_t j = 0; j < nj; ++j) {
        cols->value[j0 + j] += col_value[j];
        double* rest = cols->rest + (j0 + j) * dim;
        for (int64_t k = 0; k < dim; ++k) rest[k] += col_grad[k * nj + j];
      }
    }
  }
  const bool doubled = upper && !want_grad;
  for (int64_t r = 0; r < n_rows; ++r) {
    rowsum[row_begin + r] = static_cast<T>(doubled ? 2.0 * row_total[r] : row_total[r]);
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

// (AStride: the distance between a row's consecutive elements; 1 but for the column side of a
// two-sided pass, which reads the columns of a row-major tile.)
template <typename T, int64_t AStride = 1>
inline void micro_kernel(const T* const a[kRows], const T* __restrict panel, int64_t p_stride,
                         int64_t depth, T out[kRows][kLanes]) {
  const T* __restrict a0 = a[0];
  const T* __restrict a1 = a[1];
  const T* __restrict a2 = a[2];
  const T* __restrict a3 = a[3];
  T acc0[kLanes] = {}, acc1[kLanes] = {}, acc2[kLanes] = {}, acc3[kLanes] = {};
  for (int64_t k = 0; k < depth; ++k) {
    const T* __restrict pk = panel + k * p_stride;
    const int64_t ka = k * AStride;
    const T s0 = a0[ka], s1 = a1[ka], s2 = a2[ka], s3 = a3[ka];
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

// d2_ij = |x_i|^2 + |y_j|^2 - 2 x_i.y_j on data centred on c, the dot products from a
// register-blocked micro-kernel; a pair whose d2 is within the expansion's rounding of 0 (d2 <=
// tol (|x|^2 + |y|^2)) is recomputed from exact differences of the raw rows, and its gradient
// term w (x_i - y_j) is added exactly too, so duplicates keep the subgradient 0 and close pairs
// do not cancel. The gradient of the other pairs is x_i sum_j w_ij - (W Y)_i, W Y from a second
// micro-kernel over the tile. One centred copy of Y, transposed (y_t, shared by all tasks); the
// centred rows of X and of Y's column chunk live in per-task tiles.
struct GemmInputs {
  int64_t n_cols;      // real columns of Y
  int64_t n_cols_pad;  // multiple of kLanes
  int64_t dim;         // real features
  int64_t dim_pad;     // multiple of kLanes
};

// rows [j0, j0 + nj) of y (n_cols real rows of dim features) minus c, row-major into rows
// (nj, dim_pad); zeros past the real rows and features.
template <typename T>
inline void centred_rows(const T* y, const T* c, int64_t j0, int64_t nj, const GemmInputs& s,
                         T* rows) {
  for (int64_t j = 0; j < nj; ++j) {
    T* rj = rows + j * s.dim_pad;
    if (j0 + j >= s.n_cols) {
      std::fill(rj, rj + s.dim_pad, T(0));
      continue;
    }
    const T* yj = y + (j0 + j) * s.dim;
#pragma omp simd
    for (int64_t k = 0; k < s.dim; ++k) rj[k] = yj[k] - c[k];
    std::fill(rj + s.dim, rj + s.dim_pad, T(0));
  }
}

template <typename T>
inline T exact_square_distance(const T* a, const T* b, int64_t dim) {
  T sum = T(0);
  for (int64_t k = 0; k < dim; ++k) {
    const T t = a[k] - b[k];
    sum += t * t;
  }
  return sum;
}

template <Power P, typename T>
void gemm_row_block(const T* x, const T* y, const T* c, const T* y_t, const T* y_sq, const T* b,
                    int64_t row_begin, int64_t row_end, const GemmInputs& s,
                    const PowerParams<T>& pw, T tol, bool exclude_diag, bool want_grad,
                    T* rowsum, T* wdiff, const T* a = nullptr,
                    const ColumnTotals* cols = nullptr) {
  // cols (with the row weights a): also the column side, in the same pass (want_grad)
  // x: (n_rows, dim), y: (n_cols, dim) raw; c: (dim); y_t: (dim, n_cols_pad) centred, zero
  // past the real columns; y_sq: (n_cols_pad) |y_j - c|^2.
  alignas(64) T d2[kRows][kColChunk];
  alignas(64) T w[kRows][kColChunk];
  alignas(64) T near[kRows][kColChunk];
  const int64_t n_rows = row_end - row_begin;
  const int64_t dim = s.dim, dim_pad = s.dim_pad, n_cols = s.n_cols_pad;
  std::vector<double> row_total(n_rows, 0.0);
  std::vector<double> w_total(want_grad ? n_rows : 0, 0.0);
  std::vector<double> wy_total(want_grad ? n_rows * dim : 0, 0.0);
  std::vector<double> exact_total(want_grad ? n_rows * dim : 0, 0.0);
  // this block's rows of X, centred and zero-padded, and their squared norms
  std::vector<T> xs(n_rows * dim_pad, T(0));
  std::vector<T> xs_sq(n_rows);
  for (int64_t r = 0; r < n_rows; ++r) {
    const T* xr = x + (row_begin + r) * dim;
    T* out = xs.data() + r * dim_pad;
    for (int64_t k = 0; k < dim; ++k) out[k] = xr[k] - c[k];
    T sq = T(0);
    for (int64_t k = 0; k < dim; ++k) sq += out[k] * out[k];
    xs_sq[r] = sq;
  }

  const bool upper = exclude_diag && (!want_grad || cols);  // see upper_triangle_start
  std::vector<T> panel(dim * kColChunk);
  std::vector<T> chunk_rows(want_grad ? kColChunk * dim_pad : 0);
  // two-sided: u_ij of this block's rows (row-major, kColChunk apart) and the chunk's column sums
  std::vector<T> u(cols ? n_rows * kColChunk : 0);
  std::vector<T> col_value(cols ? kColChunk : 0), col_weight(cols ? kColChunk : 0);
  const std::vector<T> ones(cols ? kColChunk : 0, T(1));
  for (int64_t j0 = upper_triangle_start(upper, row_begin); j0 < n_cols; j0 += kColChunk) {
    const int64_t nj = std::min(kColChunk, n_cols - j0);
    const T* b_chunk = b + j0;
    const T* ysq_chunk = y_sq + j0;
    copy_panel(y_t, n_cols, j0, nj, dim, panel.data());
    if (want_grad) centred_rows(y, c, j0, nj, s, chunk_rows.data());
    if (cols) {
      std::fill(col_value.begin(), col_value.end(), T(0));
      std::fill(col_weight.begin(), col_weight.end(), T(0));
    }
    for (int64_t i = row_begin; i < row_end; i += kRows) {
      const int64_t rows_here = std::min(kRows, row_end - i);
      const T* xr[kRows];
      T xsq[kRows];
      for (int64_t r = 0; r < kRows; ++r) {
        const int64_t local = std::min(i + r, row_end - 1) - row_begin;
        xr[r] = xs.data() + local * dim_pad;
        xsq[r] = xs_sq[local];
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
        const T* x_raw = x + row * dim;
        T near_count = T(0);
#pragma omp simd reduction(+ : near_count)
        for (int64_t j = 0; j < nj; ++j) near_count += nr[j];
        // the rare close pairs: exact distances (their gradient is added exactly below)
        for (int64_t j = 0; near_count > T(0) && j < nj; ++j) {
          if (nr[j] == T(0)) continue;
          dr[j] = j0 + j < s.n_cols ? exact_square_distance(x_raw, y + (j0 + j) * dim, dim)
                                    : T(0);  // a padding column: weight 0
        }
        // p_j = b_j r^beta (kept in d2's place once read) and w_j = b_j r^(beta - 2)
        if (cols) {  // and the column side's a_i r^beta, u_ij = a_i r^(beta - 2)
          const T ai = a[row];
          T* ur = u.data() + (row - row_begin) * kColChunk;
          T* cv = col_value.data();
          T* cw = col_weight.data();
          weighted_powers_row<P>(dr, ones.data(), nj, pw, dr, wr);  // r^beta, r^(beta - 2)
          split_two_sided(dr, wr, b_chunk, ai, nj, ur, cv, cw);
        } else if (want_grad) {
          weighted_powers_row<P>(dr, b_chunk, nj, pw, dr, wr);
        } else {
          weighted_powers_row<P>(dr, b_chunk, nj, pw, dr, static_cast<T*>(nullptr));
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
              const T* yj = y + (j0 + j) * dim;
              for (int64_t k = 0; k < dim; ++k) exact[k] += double(wr[j]) * (x_raw[k] - yj[k]);
            }
            wr[j] = T(0);
            if (cols) {  // the column side's term of this pair, exactly too
              T& uij = u[(row - row_begin) * kColChunk + j];
              if (uij != T(0) && j0 + j < s.n_cols) {
                const T* yj = y + (j0 + j) * dim;
                double* rest = cols->rest + (j0 + j) * dim;
                for (int64_t k = 0; k < dim; ++k) rest[k] += double(uij) * (yj[k] - x_raw[k]);
              }
              col_weight[j] -= uij;
              uij = T(0);
            }
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
          micro_kernel<T>(wrows, chunk_rows.data() + kb, dim_pad, nj, acc);
          for (int64_t r = 0; r < rows_here; ++r) {
            double* total = wy_total.data() + (i + r - row_begin) * dim;
            const int64_t k_end = std::min(kLanes, dim - kb);
            for (int64_t kk = 0; kk < k_end; ++kk) total[kb + kk] += acc[r][kk];
          }
        }
      }
    }
    if (cols) {
      // (U^T X)_j = sum_i u_ij (x_i - c) over this block's rows, kRows columns at a time
      for (int64_t jb = 0; jb < nj; jb += kRows) {
        const T* ucols[kRows];
        for (int64_t r = 0; r < kRows; ++r) ucols[r] = u.data() + std::min(jb + r, nj - 1);
        for (int64_t kb = 0; kb < dim_pad; kb += kLanes) {
          alignas(64) T acc[kRows][kLanes];
          micro_kernel<T, kColChunk>(ucols, xs.data() + kb, dim_pad, n_rows, acc);
          for (int64_t r = 0; r < kRows && jb + r < nj; ++r) {
            double* rest = cols->rest + (j0 + jb + r) * dim;
            const int64_t k_end = std::min(kLanes, dim - kb);
            for (int64_t kk = 0; kk < k_end; ++kk) rest[kb + kk] -= acc[r][kk];
          }
        }
      }
      for (int64_t j = 0; j < nj; ++j) {
        cols->value[j0 + j] += col_value[j];
        cols->weight[j0 + j] += col_weight[j];
      }
    }
  }
  const bool doubled = upper && !want_grad;
  for (int64_t r = 0; r < n_rows; ++r) {
    rowsum[row_begin + r] = static_cast<T>(doubled ? 2.0 * row_total[r] : row_total[r]);
    if (want_grad) {
      const T* xrow = xs.data() + r * dim_pad;
      for (int64_t k = 0; k < dim; ++k) {
        const double value = double(xrow[k]) * w_total[r] - wy_total[r * dim + k] +
                             exact_total[r * dim + k];
        wdiff[(row_begin + r) * dim + k] = static_cast<T>(value);
      }
    }
  }
}

// ---- drivers -----------------------------------------------------------------------------------
// Row block p of a batch's n blocks in the balanced order 0, n - 1, 1, n - 2, ...: at::parallel_for
// hands each thread a contiguous run of tasks, and in the upper-triangle mode block p has about
// n - p blocks of pairs, so neighbouring tasks pair a long row block with a short one.
inline int64_t balanced_block(int64_t task, int64_t n_blocks) {
  const int64_t half = task / 2;
  return task % 2 == 0 ? half : n_blocks - 1 - half;
}

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

// The column totals of a two-sided pass, one set per thread (threads x B x M_pad x (2 + D)
// doubles; the caller bounds it), summed in thread order at the end: deterministic for a thread
// count.
class ThreadColumnTotals {
 public:
  ThreadColumnTotals(int64_t batch, int64_t cols, int64_t dim)
      : threads_(at::get_num_threads()),
        batch_(batch),
        cols_(cols),
        dim_(dim),
        data_(threads_ * batch * cols * (2 + dim), 0.0) {}

  // the totals of the calling thread for batch bi
  ColumnTotals mine(int64_t bi) {
    return at(std::min<int64_t>(at::get_thread_num(), threads_ - 1), bi);
  }

  // colsum (B, M) and col_wdiff (B, M, D) of columns y (B, M, D); centre (B, D) for the GEMM
  // path's (y_j - c) weight_j, nullptr for the exact path (weight_j = 0)
  template <typename T>
  void finish(const T* y, const T* centre, int64_t n_cols, T* colsum, T* col_wdiff) {
    const int64_t dim = dim_;
    at::parallel_for(0, batch_ * n_cols, 256, [&](int64_t begin, int64_t end) {
      std::vector<double> grad(dim);
      for (int64_t task = begin; task < end; ++task) {
        const int64_t bi = task / n_cols, j = task % n_cols;
        double value = 0.0, weight = 0.0;
        std::fill(grad.begin(), grad.end(), 0.0);
        for (int64_t t = 0; t < threads_; ++t) {
          const ColumnTotals part = at(t, bi);
          value += part.value[j];
          weight += part.weight[j];
          const double* rest = part.rest + j * dim;
          for (int64_t k = 0; k < dim; ++k) grad[k] += rest[k];
        }
        colsum[task] = static_cast<T>(value);
        for (int64_t k = 0; k < dim; ++k) {
          const double from_weight =
              centre ? (double(y[task * dim + k]) - double(centre[bi * dim + k])) * weight : 0.0;
          col_wdiff[task * dim + k] = static_cast<T>(from_weight + grad[k]);
        }
      }
    });
  }

 private:
  ColumnTotals at(int64_t thread, int64_t bi) {
    double* base = data_.data() + (thread * batch_ + bi) * cols_ * (2 + dim_);
    return ColumnTotals{base, base + cols_, base + 2 * cols_};
  }

  int64_t threads_, batch_, cols_, dim_;
  std::vector<double> data_;
};

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

// ---- energy score with few samples per target ---------------------------------------------
// For each target b: score_b = (1/m) sum_j r(y_bj, x_b)^beta
//                              - 1/(m (m-1)) sum_{j<k} r(y_bj, y_bk)^beta,
// all m + m(m-1)/2 distances from exact differences, and (if want_grad) the gradients of score_b
// with respect to the samples (gy) and the target (gx) in the same pass.
template <Power P, typename T>
T energy_score_target(const T* y, const T* x, int64_t m, int64_t dim, const PowerParams<T>& pw,
                      T beta, bool want_grad, T* gy, T* gx, T* diff) {
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
      weighted_powers<P>(d2, T(1), pw, value, value_over_d2);
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
    const PowerParams<T> pw(beta);
    const T tbeta = static_cast<T>(beta);
    dispatch_power(beta, [&](auto power) {
      at::parallel_for(0, batch, 64, [&](int64_t begin, int64_t end) {
        std::vector<T> diff(dim);
        for (int64_t bi = begin; bi < end; ++bi) {
          sp[bi] = energy_score_target<decltype(power)::value, T>(
              yp + bi * m * dim, xp + bi * dim, m, dim, pw, tbeta, want_grad,
              want_grad ? gyp + bi * m * dim : nullptr, want_grad ? gxp + bi * dim : nullptr,
              diff.data());
        }
      });
    });
  });
}

}  // namespace EF_KERNEL_NAMESPACE
}  // namespace energyflow_cpu
