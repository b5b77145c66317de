#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"

namespace dpa::kernels {
namespace {

__global__ void add_kernel(float* y, const float* x, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] += x[i];
}

__global__ void silu_mul_kernel(const float* gate, const float* up, int64_t count, float* out) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float g = gate[i];
    out[i] = g / (1.0f + expf(-g)) * up[i];
  }
}

}  // namespace

void add(float* y, const float* x, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  add_kernel<<<detail::blocks_for(count, 256), 256, 0, stream>>>(y, x, count);
}

void silu_mul(const float* gate, const float* up, int64_t count, float* out, cudaStream_t stream) {
  if (count <= 0) return;
  silu_mul_kernel<<<detail::blocks_for(count, 256), 256, 0, stream>>>(gate, up, count, out);
}

}  // namespace dpa::kernels
