// Self sums: the passes over the upper triangle j > i, and the row-block order that balances them.
// Part of row_stats_kernel.h, included there inside the kernel namespace; no include guard: it
// is compiled once per CPU variant.

// A self sum is symmetric: sum_{i != j} b_i b_j r_ij^beta = 2 sum_{i < j}. Without gradients
// (exclude_diag, !want_grad) its row pass visits only the pairs j > i and returns rowsum_i =
// 2 sum_{j > i} b_j r_ij^beta: not the full row sum, but the same weighted total sum_i b_i
// rowsum_i, which is all a self sum without gradients uses; half the work. With gradients, a
// two-sided pass (below) over the pairs j > i gives the rows their terms j > i and the columns
// theirs i < j; the caller adds the two (self_stats). Either way the row blocks are ordered so
// that each thread gets as many pairs (balanced_block).
inline int64_t upper_triangle_start(bool upper, int64_t row_begin) {
  return upper ? (row_begin / kLanes) * kLanes : 0;  // the column tile holding the diagonal
}

// Zero the pairs this row must skip: the diagonal, and in the upper-triangle mode every j <= i.
template <typename T>
inline void drop_below_diagonal(T* values, int64_t diag, int64_t nj, bool upper) {
  if (diag < 0) return;  // the whole chunk lies above the diagonal
  if (!upper) {
    if (diag < nj) values[diag] = T(0);
    return;
  }
  std::fill(values, values + std::min(diag + 1, nj), T(0));
}

// Row block p of a batch's n blocks in the balanced order 0, n - 1, 1, n - 2, ...: at::parallel_for
// hands each thread a contiguous run of tasks, and in the upper-triangle mode block p has about
// n - p blocks of pairs, so neighbouring tasks pair a long row block with a short one.
inline int64_t balanced_block(int64_t task, int64_t n_blocks) {
  const int64_t half = task / 2;
  return task % 2 == 0 ? half : n_blocks - 1 - half;
}
