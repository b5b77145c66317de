// y = x · W^T for a handful of rows (decode steps), plain or batched over heads: x f32 [n, K] read
// as it is (no bf16 copy of it first), W bf16 [N, K], y f32 [n, N], on tensor cores; the K range split over blocks so that
// a few thousand weight rows still fill the GPU, the splits summed in a fixed order by the last
// block of each column tile (deterministic, one launch).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dpa::kernels {

// The most rows one call takes.
constexpr int64_t kSmallLinearRows = 64;

// One call: batch products y_b = x_b · W_b^T, b < batch (the per-head projections of MLA; batch 1
// for a plain linear layer), with x_b(i, c) = x[b * stride_x + i * ldx + c] (f32), W_b(r, c) =
// w[b * w_stride + r * ldw + c] (bf16) and y_b(i, r) = y[b * stride_y + i * ldy + r] (f32).
struct SmallLinear {
  const float* x = nullptr;
  int64_t ldx = 0, stride_x = 0;
  const void* w = nullptr;
  int64_t ldw = 0, w_stride = 0;
  float* y = nullptr;
  int64_t ldy = 0, stride_y = 0;
  int64_t n = 0, K = 0, N = 0, batch = 1;
};

// Whether the kernel takes it: 1 <= n <= kSmallLinearRows, K, ldw and w_stride multiples of 8,
// ldx and stride_x of 4, x and w 16-byte aligned.
bool small_linear_supported(const SmallLinear& a);

// The K splits a call uses, and the workspace it needs (bytes): partial sums after a counter
// region of fixed size. The counters must be zero before the first call; every call leaves them
// zero.
int small_linear_splits(const SmallLinear& a);
std::size_t small_linear_workspace(const SmallLinear& a, int splits);

void small_linear(const SmallLinear& a, void* workspace, int splits, cudaStream_t stream);

}  // namespace dpa::kernels
