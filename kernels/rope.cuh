// In-place interleaved RoPE (pairs (2i, 2i+1)) on n tokens x n_heads heads.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

void rope(float* x, int64_t n, int64_t n_heads, int64_t token_stride, int64_t head_stride,
          const int64_t* positions, const float* inv_freq, int64_t dim, float attention_scaling,
          cudaStream_t stream);

}  // namespace dpa::kernels
