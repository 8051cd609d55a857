// A block-masked linear layer at a few batch rows (see masked_rows.cpp).
#pragma once
#include <torch/extension.h>

#include <vector>

namespace energyflow_cpu {

// `groups` = [start, end, prefix, ...]: output rows [start, end) read inputs [0, prefix); the
// groups cover all outputs in order and their prefixes never decrease (MaskPlan.flat_groups).

// z = x (W * mask)^T + b: x (M, in), weight (out, in), bias (out,) or empty -> (M, out).
at::Tensor masked_rows_forward(const at::Tensor& x, const at::Tensor& weight,
                               const at::Tensor& bias, const std::vector<int64_t>& groups);

// dx = dz (W * mask): dz (M, out), weight (out, in) -> (M, in).
at::Tensor masked_rows_grad_input(const at::Tensor& grad_z, const at::Tensor& weight,
                                  const std::vector<int64_t>& groups);

// dW = (dz^T x) * mask: dz (M, out), x (M, in) -> (out, in), 0 past each row's prefix.
at::Tensor masked_rows_grad_weight(const at::Tensor& grad_z, const at::Tensor& x,
                                   const std::vector<int64_t>& groups);

}  // namespace energyflow_cpu
