// Independent GEMMs run side by side, one per thread (the strips of a block-masked layer).
#pragma once
#include <torch/extension.h>

#include <vector>

namespace energyflow_cpu {

// out[i] = beta * out[i] + a[i] @ b[i] for every i, in place (out[i] may be a strided view of a
// larger tensor; views must not overlap). The products run in parallel, each on one thread (its
// BLAS call single-threaded inside the parallel region), dealt largest first to the least loaded
// thread: with few threads and many small products this beats handing each product all the
// threads.
void grouped_addmm_(const std::vector<at::Tensor>& out, const std::vector<at::Tensor>& a,
                    const std::vector<at::Tensor>& b, double beta);

}  // namespace energyflow_cpu
