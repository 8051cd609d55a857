// Cached sampling steps: each layer computes only the units of the block being produced, a few
// output columns from a prefix of its inputs. With at most kSkinnyMaxColumns columns a BLAS
// GEMM runs far below its speed (one column block, a short inner dimension), so fp32 on AVX2
// CPUs takes a row-wise kernel: every row of x once against the few weight rows, held in L1,
// with the bias and relu in its epilogue. Everything else takes addmm on the slices.
// masked_generate runs all steps of a generator in tiles of rows (see masked_step.h).
#include "masked_step.h"

#include <ATen/Parallel.h>

#include <algorithm>

#include "row_stats_kernel_variants.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define EF_HAVE_SKINNY 1
#endif

namespace energyflow_cpu {
namespace {

constexpr int64_t kSkinnyMaxColumns = 16;
// Up to this many rows, masked_generate's raw loop takes level slices of any width: a GEMM call
// per slice costs microseconds of library overhead for a few rows' worth of work.
constexpr int64_t kAnyWidthMaxRows = 16;

#ifdef EF_HAVE_SKINNY
// The sums of four vectors' lanes, in one: (sum a, sum b, sum c, sum d).
__attribute__((target("avx2,fma"))) inline __m128 horizontal_sums(__m256 a, __m256 b, __m256 c,
                                                                  __m256 d) {
  const __m256 pairs = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
  return _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1));
}

// out[m + r, j] = b[j] + sum_i x[m + r, i] w[j, i] for r < R, j < N <= 4, i < p; relu if asked.
// R = 2 rows at a time, so each weight vector loaded serves two rows (R * N + R + 1 <= 16 ymm).
template <int N, int R>
__attribute__((target("avx2,fma"))) void skinny_block(const float* x, int64_t ldx,
                                                      const float* w, int64_t ldw, int64_t p,
                                                      const float* bias, float* out, int64_t ldo,
                                                      int64_t m, bool relu) {
  const int64_t p8 = p & ~int64_t(7);
  __m256 acc[R][N];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < N; ++j) acc[r][j] = _mm256_setzero_ps();
  for (int64_t i = 0; i < p8; i += 8) {
    __m256 xv[R];
    for (int r = 0; r < R; ++r) xv[r] = _mm256_loadu_ps(x + (m + r) * ldx + i);
    for (int j = 0; j < N; ++j) {
      const __m256 wv = _mm256_loadu_ps(w + j * ldw + i);
      for (int r = 0; r < R; ++r) acc[r][j] = _mm256_fmadd_ps(xv[r], wv, acc[r][j]);
    }
  }
  const __m256 zero = _mm256_setzero_ps();
  for (int r = 0; r < R; ++r) {
    const float* row = x + (m + r) * ldx;
    float* o = out + (m + r) * ldo;
    __m256 lanes[4] = {zero, zero, zero, zero};
    for (int j = 0; j < N; ++j) lanes[j] = acc[r][j];
    alignas(16) float sums[4];
    _mm_store_ps(sums, horizontal_sums(lanes[0], lanes[1], lanes[2], lanes[3]));
    for (int j = 0; j < N; ++j) {
      float value = sums[j];
      for (int64_t i = p8; i < p; ++i) value += row[i] * w[j * ldw + i];
      if (bias != nullptr) value += bias[j];
      o[j] = (relu && value < 0.f) ? 0.f : value;
    }
  }
}

template <int N>
void skinny_rows(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t p,
                 const float* bias, float* out, int64_t ldo, int64_t m0, int64_t m1, bool relu) {
  int64_t m = m0;
  for (; m + 2 <= m1; m += 2) skinny_block<N, 2>(x, ldx, w, ldw, p, bias, out, ldo, m, relu);
  if (m < m1) skinny_block<N, 1>(x, ldx, w, ldw, p, bias, out, ldo, m, relu);
}

// Up to 8 outputs: in chunks of at most 4 (the register budget of a row pair).
template <int N>
void skinny_chunks(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t p,
                   const float* bias, float* out, int64_t ldo, int64_t m0, int64_t m1, bool relu) {
  if constexpr (N <= 4) {
    skinny_rows<N>(x, ldx, w, ldw, p, bias, out, ldo, m0, m1, relu);
  } else {
    skinny_rows<4>(x, ldx, w, ldw, p, bias, out, ldo, m0, m1, relu);
    skinny_rows<N - 4>(x, ldx, w + 4 * ldw, ldw, p, bias ? bias + 4 : nullptr, out + 4, ldo, m0,
                       m1, relu);
  }
}

using SkinnyRows = void (*)(const float*, int64_t, const float*, int64_t, int64_t, const float*,
                            float*, int64_t, int64_t, int64_t, bool);
constexpr SkinnyRows kSkinnyRows[8] = {skinny_chunks<1>, skinny_chunks<2>, skinny_chunks<3>,
                                       skinny_chunks<4>, skinny_chunks<5>, skinny_chunks<6>,
                                       skinny_chunks<7>, skinny_chunks<8>};

// out[m, j] for j < n (any n: in chunks of 8), rows [m0, m1).
void skinny_columns(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t p,
                    const float* bias, float* out, int64_t ldo, int64_t n, int64_t m0,
                    int64_t m1, bool relu) {
  for (int64_t j0 = 0; j0 < n; j0 += 8) {
    kSkinnyRows[std::min<int64_t>(8, n - j0) - 1](x, ldx, w + j0 * ldw, ldw, p,
                                                  bias ? bias + j0 : nullptr, out + j0, ldo, m0,
                                                  m1, relu);
  }
}

void skinny_linear(const at::Tensor& x, const at::Tensor& w, const at::Tensor& bias,
                   at::Tensor& out, bool relu, int64_t m0, int64_t m1) {
  skinny_columns(x.data_ptr<float>(), x.stride(0), w.data_ptr<float>(), w.stride(0), w.size(1),
                 bias.numel() ? bias.data_ptr<float>() : nullptr, out.data_ptr<float>(),
                 out.stride(0), w.size(0), m0, m1, relu);
}
#endif

void activate(at::Tensor& out, const std::string& activation) {
  if (activation == "relu") {
    out.clamp_min_(0);
  } else if (activation == "gelu") {
    out.copy_(at::gelu(out));
  } else if (activation == "silu") {
    at::silu_(out);
  } else if (activation == "tanh") {
    out.tanh_();
  } else if (activation == "elu") {
    at::elu_(out);
  } else {
    TORCH_CHECK(activation == "none", "energyflow._C.masked_step: unknown activation ",
                activation);
  }
}

// The level slice of one layer, all rows: table = (start, end, needed).
void layer_slice(const at::Tensor& x, const at::Tensor& weight_all, const at::Tensor& bias_all,
                 at::Tensor& out_all, const int64_t* table, const std::string& activation,
                 bool residual) {
  const int64_t start = table[0], end = table[1], needed = table[2];
  if (end == start) return;
  const at::Tensor weight = weight_all.narrow(0, start, end - start).narrow(1, 0, needed);
  const at::Tensor bias = bias_all.numel() ? bias_all.narrow(0, start, end - start) : bias_all;
  at::Tensor out = out_all.narrow(1, start, end - start);
  const bool relu = activation == "relu";
#ifdef EF_HAVE_SKINNY
  if (use_avx2_fma() && x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat &&
      weight.stride(1) == 1 && end - start <= kSkinnyMaxColumns) {
    at::parallel_for(0, x.size(0), 64, [&](int64_t m0, int64_t m1) {
      skinny_linear(x, weight, bias, out, relu, m0, m1);
    });
    if (!relu) activate(out, activation);
  } else
#endif
  {
    out.addmm_(x.narrow(1, 0, needed), weight.t(), /*beta=*/0, /*alpha=*/1);
    if (bias.numel()) out.add_(bias);
    activate(out, activation);
  }
  if (residual) out.add_(x.narrow(1, start, end - start));
}

void check_layers(const std::vector<at::Tensor>& buffers, const std::vector<at::Tensor>& weights,
                  const std::vector<at::Tensor>& biases,
                  const std::vector<std::string>& activations, const std::vector<bool>& residual) {
  const size_t layers = weights.size();
  TORCH_CHECK(buffers.size() == layers + 1 && biases.size() == layers &&
                  activations.size() == layers && residual.size() == layers,
              "energyflow._C: expected L + 1 buffers and L weights, biases, activations, flags");
  for (const at::Tensor& buffer : buffers) {
    TORCH_CHECK(buffer.device().is_cpu() && buffer.dim() == 2 && buffer.stride(1) == 1,
                "energyflow._C: buffers must be 2-D CPU tensors with unit column stride");
  }
}

}  // namespace

void masked_step(const std::vector<at::Tensor>& buffers, const std::vector<at::Tensor>& weights,
                 const std::vector<at::Tensor>& biases, const std::vector<int64_t>& table,
                 const std::vector<std::string>& activations, const std::vector<bool>& residual) {
  check_layers(buffers, weights, biases, activations, residual);
  TORCH_CHECK(table.size() == 3 * weights.size(), "energyflow._C.masked_step: 3 ints per layer");
  at::NoGradGuard no_grad;
  for (size_t l = 0; l < weights.size(); ++l) {
    at::Tensor out = buffers[l + 1];
    layer_slice(buffers[l], weights[l], biases[l], out, &table[3 * l], activations[l],
                residual[l]);
  }
}

namespace {

#ifdef EF_HAVE_SKINNY
// masked_generate's hot loop on raw fp32 pointers (ATen calls cost microseconds each, and a tile
// makes thousands of them): every level slice skinny, relu or no activation.
struct RawLayer {
  const float* x;
  int64_t ldx;
  const float* w;
  int64_t ldw;
  const float* b;
  float* out;
  int64_t ldo;
  bool relu;
  bool residual;
};

bool raw_generate_possible(const std::vector<at::Tensor>& buffers,
                           const std::vector<at::Tensor>& weights,
                           const std::vector<at::Tensor>& biases,
                           const std::vector<int64_t>& tables,
                           const std::vector<std::string>& activations) {
  if (!use_avx2_fma()) return false;
  for (const at::Tensor& buffer : buffers) {
    if (buffer.scalar_type() != at::kFloat) return false;
  }
  for (size_t l = 0; l < weights.size(); ++l) {
    if (weights[l].scalar_type() != at::kFloat || !weights[l].is_contiguous()) return false;
    if (biases[l].numel() && (biases[l].scalar_type() != at::kFloat || !biases[l].is_contiguous()))
      return false;
    if (activations[l] != "relu" && activations[l] != "none") return false;
  }
  if (buffers[0].size(0) <= kAnyWidthMaxRows) return true;
  for (size_t i = 0; i < tables.size(); i += 3) {
    if (tables[i + 1] - tables[i] > kSkinnyMaxColumns) return false;
  }
  return true;
}

void raw_tile(const std::vector<RawLayer>& layers, const std::vector<int64_t>& tables,
              const std::vector<int64_t>& feedback, float* inputs, int64_t ld_inputs,
              const float* outputs, int64_t ld_outputs, int64_t m0, int64_t m1) {
  const size_t count = layers.size();
  const size_t steps = tables.size() / (3 * count);
  for (size_t k = 0; k < steps; ++k) {
    const int64_t* copy = &feedback[3 * k];
    for (int64_t m = m0; m < m1; ++m) {
      std::copy(outputs + m * ld_outputs + copy[0], outputs + m * ld_outputs + copy[1],
                inputs + m * ld_inputs + copy[2]);
    }
    for (size_t l = 0; l < count; ++l) {
      const RawLayer& layer = layers[l];
      const int64_t* table = &tables[3 * (k * count + l)];
      const int64_t start = table[0], end = table[1], needed = table[2];
      skinny_columns(layer.x, layer.ldx, layer.w + start * layer.ldw, layer.ldw, needed,
                     layer.b ? layer.b + start : nullptr, layer.out + start, layer.ldo,
                     end - start, m0, m1, layer.relu);
      if (layer.residual) {
        for (int64_t m = m0; m < m1; ++m) {
          for (int64_t j = start; j < end; ++j) {
            layer.out[m * layer.ldo + j] += layer.x[m * layer.ldx + j];
          }
        }
      }
    }
  }
}
#endif

}  // namespace

void masked_generate(const std::vector<at::Tensor>& buffers,
                     const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases,
                     const std::vector<int64_t>& tables, const std::vector<int64_t>& feedback,
                     const std::vector<std::string>& activations,
                     const std::vector<bool>& residual, int64_t tile_rows) {
  check_layers(buffers, weights, biases, activations, residual);
  const int64_t layers = static_cast<int64_t>(weights.size());
  const int64_t steps = static_cast<int64_t>(tables.size()) / (3 * layers);
  TORCH_CHECK(static_cast<int64_t>(tables.size()) == 3 * layers * steps && steps >= 1 &&
                  static_cast<int64_t>(feedback.size()) == 3 * steps && tile_rows >= 1,
              "energyflow._C.masked_generate: 3 ints per layer and step, 3 per step of feedback");
#ifdef EF_HAVE_SKINNY
  if (raw_generate_possible(buffers, weights, biases, tables, activations)) {
    std::vector<RawLayer> raw;
    for (int64_t l = 0; l < layers; ++l) {
      raw.push_back({buffers[l].data_ptr<float>(), buffers[l].stride(0),
                     weights[l].data_ptr<float>(), weights[l].stride(0),
                     biases[l].numel() ? biases[l].data_ptr<float>() : nullptr,
                     buffers[l + 1].data_ptr<float>(), buffers[l + 1].stride(0),
                     activations[l] == "relu", residual[l]});
    }
    float* inputs = buffers[0].data_ptr<float>();
    const float* outputs = buffers[layers].data_ptr<float>();
    const int64_t ld_inputs = buffers[0].stride(0), ld_outputs = buffers[layers].stride(0);
    // Rows are independent: each tile of rows runs all K steps while its activations stay in
    // cache.
    at::parallel_for(0, buffers[0].size(0), tile_rows, [&](int64_t r0, int64_t r1) {
      for (int64_t m0 = r0; m0 < r1; m0 += tile_rows) {
        raw_tile(raw, tables, feedback, inputs, ld_inputs, outputs, ld_outputs, m0,
                 std::min(r1, m0 + tile_rows));
      }
    });
    return;
  }
#endif
  // Wider level slices (or other dtypes, activations, CPUs): all rows a step at a time, each
  // slice a GEMM (masked_step), with no Python between the steps.
  at::NoGradGuard no_grad;
  for (int64_t k = 0; k < steps; ++k) {
    const int64_t* copy = &feedback[3 * k];
    if (copy[1] > copy[0]) {
      at::Tensor data = buffers[0].narrow(1, copy[2], copy[1] - copy[0]);
      data.copy_(buffers[layers].narrow(1, copy[0], copy[1] - copy[0]));
    }
    for (int64_t l = 0; l < layers; ++l) {
      at::Tensor out = buffers[l + 1];
      layer_slice(buffers[l], weights[l], biases[l], out, &tables[3 * (k * layers + l)],
                  activations[l], residual[l]);
    }
  }
}

}  // namespace energyflow_cpu
