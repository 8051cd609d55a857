// The energy score with few samples per target: every pair of a target at once.
// Part of row_stats_kernel.h, included there inside the kernel namespace; no include guard: it
// is compiled once per CPU variant.

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
