// A block-masked linear layer at a few batch rows: every pass walks the weight's allowed entries
// (row o reads inputs [0, prefix_o)) once, with no masked copy of the weight and no per-level
// GEMM calls. At one to a few rows the dense masked product (W * mask, then a GEMV, and in the
// backward the outer product times the mask) moves the whole weight four to five times and the
// per-level GEMMs pay a library call per level; here each pass reads or writes it once.
#include "masked_rows.h"

#include <ATen/Parallel.h>

#include <algorithm>

namespace energyflow_cpu {
namespace {

constexpr int64_t kGrainWork = 1 << 15;  // multiply-adds a thread takes at least

// sum_i a[i] b[i] in eight interleaved partial sums (vectorised without reassociation flags).
template <typename T>
inline T dot(const T* a, const T* b, int64_t n) {
  T acc[8] = {T(0), T(0), T(0), T(0), T(0), T(0), T(0), T(0)};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int lane = 0; lane < 8; ++lane) acc[lane] += a[i + lane] * b[i + lane];
  T sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// y[i] += alpha x[i]
template <typename T>
inline void axpy(T* y, const T* x, T alpha, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += alpha * x[i];
}

// Each output row's prefix, from the groups; checked against the layer's shape.
std::vector<int64_t> row_prefixes(const std::vector<int64_t>& groups, int64_t out,
                                  int64_t in, const char* name) {
  TORCH_CHECK(groups.size() % 3 == 0, name, ": groups must hold (start, end, prefix) triples");
  std::vector<int64_t> prefix(out, -1);
  int64_t next = 0, last_prefix = 0;
  for (size_t g = 0; g < groups.size(); g += 3) {
    const int64_t start = groups[g], end = groups[g + 1], p = groups[g + 2];
    TORCH_CHECK(start == next && end >= start && end <= out && p >= last_prefix && p <= in,
                name, ": group ", g / 3, " (", start, ", ", end, ", ", p,
                ") does not continue the groups in order within the layer's ", out, " x ", in,
                " weight");
    std::fill(prefix.begin() + start, prefix.begin() + end, p);
    next = end;
    last_prefix = p;
  }
  TORCH_CHECK(next == out, name, ": the groups cover ", next, " of the ", out, " output rows");
  return prefix;
}

void check_pair(const at::Tensor& a, const at::Tensor& b, const char* name) {
  TORCH_CHECK(a.dim() == 2 && b.dim() == 2, name, ": expected matrices, got shapes ", a.sizes(),
              " and ", b.sizes());
  TORCH_CHECK(a.device().is_cpu() && b.device().is_cpu(), name, ": CPU tensors only");
  TORCH_CHECK(a.scalar_type() == b.scalar_type() &&
                  (a.scalar_type() == at::kFloat || a.scalar_type() == at::kDouble),
              name, ": float32 or float64 tensors of one dtype, got ", a.scalar_type(), " and ",
              b.scalar_type());
}

// Iterations per thread so that each does at least kGrainWork multiply-adds.
int64_t grain(int64_t work_per_iteration) {
  return std::max<int64_t>(1, kGrainWork / std::max<int64_t>(1, work_per_iteration));
}

}  // namespace

at::Tensor masked_rows_forward(const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias, const std::vector<int64_t>& groups) {
  check_pair(x, weight, "masked_rows_forward");
  const int64_t rows = x.size(0), in = x.size(1), out = weight.size(0);
  TORCH_CHECK(weight.size(1) == in, "masked_rows_forward: x ", x.sizes(), " against weight ",
              weight.sizes());
  TORCH_CHECK(bias.numel() == 0 || (bias.dim() == 1 && bias.size(0) == out &&
                                    bias.scalar_type() == x.scalar_type()),
              "masked_rows_forward: bias must be empty or (", out, ",) of x's dtype");
  const std::vector<int64_t> prefix = row_prefixes(groups, out, in, "masked_rows_forward");
  const at::Tensor xc = x.contiguous(), wc = weight.contiguous();
  const at::Tensor bc = bias.numel() ? bias.contiguous() : bias;
  at::Tensor z = at::empty({rows, out}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "masked_rows_forward", [&] {
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const scalar_t* wp = wc.data_ptr<scalar_t>();
    const scalar_t* bp = bc.numel() ? bc.data_ptr<scalar_t>() : nullptr;
    scalar_t* zp = z.data_ptr<scalar_t>();
    at::parallel_for(0, out, grain(rows * in), [&](int64_t first, int64_t last) {
      for (int64_t o = first; o < last; ++o) {
        const scalar_t* w = wp + o * in;
        const scalar_t b = bp ? bp[o] : scalar_t(0);
        for (int64_t m = 0; m < rows; ++m) zp[m * out + o] = b + dot(xp + m * in, w, prefix[o]);
      }
    });
  });
  return z;
}

at::Tensor masked_rows_grad_input(const at::Tensor& grad_z, const at::Tensor& weight,
                                  const std::vector<int64_t>& groups) {
  check_pair(grad_z, weight, "masked_rows_grad_input");
  const int64_t rows = grad_z.size(0), out = weight.size(0), in = weight.size(1);
  TORCH_CHECK(grad_z.size(1) == out, "masked_rows_grad_input: grad ", grad_z.sizes(),
              " against weight ", weight.sizes());
  const std::vector<int64_t> prefix = row_prefixes(groups, out, in, "masked_rows_grad_input");
  const at::Tensor gc = grad_z.contiguous(), wc = weight.contiguous();
  at::Tensor dx = at::zeros({rows, in}, grad_z.options());
  // Threads take column ranges: dx[:, c0:c1] += dz[:, o] W[o, c0:min(c1, prefix_o)] for the
  // rows o that read column c0 (the prefixes never decrease: a suffix of the rows).
  constexpr int64_t kColumnsPerChunk = 16;
  const int64_t chunks = (in + kColumnsPerChunk - 1) / kColumnsPerChunk;
  AT_DISPATCH_FLOATING_TYPES(grad_z.scalar_type(), "masked_rows_grad_input", [&] {
    const scalar_t* gp = gc.data_ptr<scalar_t>();
    const scalar_t* wp = wc.data_ptr<scalar_t>();
    scalar_t* dp = dx.data_ptr<scalar_t>();
    const int64_t per_chunk = rows * out * kColumnsPerChunk;
    at::parallel_for(0, chunks, grain(per_chunk), [&](int64_t first, int64_t last) {
      const int64_t c0 = first * kColumnsPerChunk, c1 = std::min(in, last * kColumnsPerChunk);
      const int64_t reader =
          std::upper_bound(prefix.begin(), prefix.end(), c0) - prefix.begin();
      for (int64_t o = reader; o < out; ++o) {
        const int64_t n = std::min(prefix[o], c1) - c0;
        const scalar_t* w = wp + o * in + c0;
        for (int64_t m = 0; m < rows; ++m) axpy(dp + m * in + c0, w, gp[m * out + o], n);
      }
    });
  });
  return dx;
}

at::Tensor masked_rows_grad_weight(const at::Tensor& grad_z, const at::Tensor& x,
                                   const std::vector<int64_t>& groups) {
  check_pair(grad_z, x, "masked_rows_grad_weight");
  const int64_t rows = grad_z.size(0), out = grad_z.size(1), in = x.size(1);
  TORCH_CHECK(x.size(0) == rows, "masked_rows_grad_weight: grad ", grad_z.sizes(), " against x ",
              x.sizes());
  const std::vector<int64_t> prefix = row_prefixes(groups, out, in, "masked_rows_grad_weight");
  const at::Tensor gc = grad_z.contiguous(), xc = x.contiguous();
  at::Tensor dw = at::empty({out, in}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "masked_rows_grad_weight", [&] {
    const scalar_t* gp = gc.data_ptr<scalar_t>();
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* dp = dw.data_ptr<scalar_t>();
    at::parallel_for(0, out, grain(rows * in), [&](int64_t first, int64_t last) {
      for (int64_t o = first; o < last; ++o) {
        scalar_t* d = dp + o * in;
        std::fill(d, d + in, scalar_t(0));
        for (int64_t m = 0; m < rows; ++m) axpy(d, xp + m * in, gp[m * out + o], prefix[o]);
      }
    });
  });
  return dw;
}

}  // namespace energyflow_cpu
