#include "kernels/common.cuh"
#include "kernels/convert.cuh"

namespace dpa::kernels {
namespace {

__global__ void f32_to_bf16_kernel(const float* x, __nv_bfloat16* y, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16* x, float* y, int64_t count) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    y[i] = __bfloat162float(x[i]);
}

}  // namespace

void f32_to_bf16(const float* x, uint16_t* y, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  f32_to_bf16_kernel<<<detail::blocks_for(count, 256), 256, 0, stream>>>(
      x, reinterpret_cast<__nv_bfloat16*>(y), count);
}

void bf16_to_f32(const uint16_t* x, float* y, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  bf16_to_f32_kernel<<<detail::blocks_for(count, 256), 256, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), y, count);
}

}  // namespace dpa::kernels
