// y = x · W^T for a handful of rows (decode steps): x f32 [n, K] read as it is (no bf16 copy of
// it first), W bf16 [N, K], y f32 [n, N], on tensor cores; the K range split over blocks so that
// a few thousand weight rows still fill the GPU, the splits summed in a fixed order by the last
// block of each column tile (deterministic, one launch).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace dpa::kernels {

// The most rows one call takes.
constexpr int64_t kSmallLinearRows = 64;

// Whether the kernel takes these shapes and pointers: 1 <= n <= kSmallLinearRows, K and ldw
// multiples of 8, x and w 16-byte aligned.
bool small_linear_supported(int64_t n, int64_t K, int64_t N, int64_t ldw, const void* x, const void* w);

// The K splits a call uses, and the workspace it needs (bytes): partial sums and one counter per
// 64-column tile. The counters must be zero before the first call; every call leaves them zero.
int small_linear_splits(int64_t K, int64_t N);
std::size_t small_linear_workspace(int64_t n, int64_t N, int splits);

void small_linear(const float* x, int64_t n, int64_t K, const uint16_t* w, int64_t ldw, int64_t N, float* y,
                  void* workspace, int splits, cudaStream_t stream);

}  // namespace dpa::kernels
