// One cached sampling step of a semi-autoregressive network (energyflow.nn.SemiAutoregressiveMLP).
#pragma once
#include <torch/extension.h>

#include <string>
#include <vector>

namespace energyflow_cpu {

// For each layer l: out_l[:, start:end] = act_l(x_l[:, :needed] W_l[start:end, :needed]^T +
// b_l[start:end]) (+ x_l[:, start:end] where residual_l), with x_l = buffers[l] and out_l =
// buffers[l + 1]; (start, end, needed) = table[3l : 3l + 3]. Writes in place, no autograd.
void masked_step(const std::vector<at::Tensor>& buffers, const std::vector<at::Tensor>& weights,
                 const std::vector<at::Tensor>& biases, const std::vector<int64_t>& table,
                 const std::vector<std::string>& activations, const std::vector<bool>& residual);

// All K steps of a generator whose data blocks are its output blocks: buffers[0] holds the
// context and every block's noise at their columns; before step k (0-based) the outputs
// [feedback[3k], feedback[3k+1]) of the last layer are copied to input columns from
// feedback[3k+2]; tables holds (start, end, needed) per layer and step. Where every level slice
// takes the skinny fp32 kernel (AVX2, relu or no activation; at most 16 units, or any width for
// up to 16 rows), rows run in tiles of tile_rows, each through all steps (its activations stay
// in cache), tiles in parallel; else all rows a step at a time, each slice as in masked_step.
void masked_generate(const std::vector<at::Tensor>& buffers,
                     const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& biases,
                     const std::vector<int64_t>& tables, const std::vector<int64_t>& feedback,
                     const std::vector<std::string>& activations,
                     const std::vector<bool>& residual, int64_t tile_rows);

}  // namespace energyflow_cpu
