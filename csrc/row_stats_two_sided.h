// Two-sided passes: each pair's terms for its row and for its column in one visit, the column
// totals kept per thread.
// Part of row_stats_kernel.h, included there inside the kernel namespace; no include guard: it
// is compiled once per CPU variant.

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
