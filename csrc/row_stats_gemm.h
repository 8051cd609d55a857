// The GEMM pass (many features): distances from centred dot products on register-blocked tiles,
// close pairs recomputed exactly.
// Part of row_stats_kernel.h, included there inside the kernel namespace; no include guard: it
// is compiled once per CPU variant.

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
