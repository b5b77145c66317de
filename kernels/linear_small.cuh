// y = x · W^T for a handful of rows (decode steps), plain or batched over heads: x f32 [n, K] read
// as it is (no bf16 copy of it first), W bf16 [N, K], y f32 [n, N], on tensor cores; the K range
// split over the blocks of a thread block cluster so that a few thousand weight rows still fill
// the GPU, the splits summed in a fixed order through the cluster's shared memory (deterministic,
// one launch, no workspace; sm_90).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dpa::kernels {

// The most rows one call takes.
constexpr int64_t kSmallLinearRows = 64;
// The weight bytes of a call (all heads) up to which the kernel is the default: measured against
// cuBLAS (perf/dense_linear_bench, CUDA-graph replays, H200; perf/RESULTS.md) it wins where a
// call is all latency (V2-Lite's kv_a_proj, router and per-head W_UK / W_UV: 2.4 MB and less,
// 1.03-1.68x at 1-64 rows) and loses where the weights stream (o_proj 8.4 MB 0.50-0.78x, V3's
// 3.7 MB router 0.55-0.82x): cuBLAS's floor of ~8 us a call holds up to ~8 MB.
constexpr int64_t kSmallLinearMaxWeightBytes = int64_t{3} << 20;

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

void small_linear(const SmallLinear& a, cudaStream_t stream);

}  // namespace dpa::kernels
