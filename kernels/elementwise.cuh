// Elementwise ops: y += x and the SwiGLU gate.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

void add(float* y, const float* x, int64_t count, cudaStream_t stream);
// out[i] = silu(gate[i]) * up[i]; out may alias either input.
void silu_mul(const float* gate, const float* up, int64_t count, float* out, cudaStream_t stream);

}  // namespace dpa::kernels
