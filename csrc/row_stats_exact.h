// The exact-difference pass (few features): every pair's distance from the differences of its
// coordinates, a row block against a cache tile of columns.
// Part of row_stats_kernel.h, included there inside the kernel namespace; no include guard: it
// is compiled once per CPU variant.

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
