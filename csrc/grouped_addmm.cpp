// Independent GEMMs side by side (see grouped_addmm.h).
#include "grouped_addmm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>

namespace energyflow_cpu {

void grouped_addmm_(const std::vector<at::Tensor>& out, const std::vector<at::Tensor>& a,
                    const std::vector<at::Tensor>& b, double beta) {
  const int64_t count = static_cast<int64_t>(out.size());
  TORCH_CHECK(static_cast<int64_t>(a.size()) == count && static_cast<int64_t>(b.size()) == count,
              "grouped_addmm_: out, a and b must have the same length");
  std::vector<int64_t> work(count);
  for (int64_t i = 0; i < count; ++i) {
    TORCH_CHECK(out[i].dim() == 2 && a[i].dim() == 2 && b[i].dim() == 2,
                "grouped_addmm_: product ", i, " is not of matrices");
    TORCH_CHECK(a[i].size(0) == out[i].size(0) && b[i].size(1) == out[i].size(1) &&
                    a[i].size(1) == b[i].size(0),
                "grouped_addmm_: product ", i, " has shapes ", a[i].sizes(), " @ ", b[i].sizes(),
                " into ", out[i].sizes());
    work[i] = out[i].size(0) * out[i].size(1) * std::max<int64_t>(a[i].size(1), 1);
  }
  // One bin of products per thread, filled largest first into the lightest bin (LPT), so the
  // threads finish together; each bin runs on one thread of torch's pool (at::parallel_for), where
  // the BLAS call inside addmm_ is single-threaded.
  const int64_t bins = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), count));
  std::vector<int64_t> order(count);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t i, int64_t j) { return work[i] > work[j]; });
  std::vector<std::vector<int64_t>> members(bins);
  std::vector<int64_t> load(bins, 0);
  for (int64_t i : order) {
    const int64_t bin = std::min_element(load.begin(), load.end()) - load.begin();
    members[bin].push_back(i);
    load[bin] += work[i];
  }
  at::parallel_for(0, bins, 1, [&](int64_t first, int64_t last) {
    at::NoGradGuard no_grad;  // grad mode is per thread: the pool's threads start with it on
    for (int64_t bin = first; bin < last; ++bin) {
      for (int64_t i : members[bin]) {
        at::Tensor target = out[i];  // a view: addmm_ writes through it
        target.addmm_(a[i], b[i], beta, 1.0);
      }
    }
  });
}

}  // namespace energyflow_cpu
