#include "kernels/common.cuh"
#include "kernels/convert.cuh"

namespace dpa::kernels {
namespace {

using detail::store4;

// 16-byte vectors of four floats where both arrays allow it (`vec`), then the rest (the tail, or
// every element of unaligned arrays) one by one: a prefill step's activations (tens of MB) stream
// at the copy rate only with wide accesses.
__global__ void f32_to_bf16_kernel(const float* x, __nv_bfloat16* y, int64_t count, bool vec) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n4 = vec ? count / 4 : 0;
  for (int64_t i = t; i < n4; i += stride) store4(y + 4 * i, reinterpret_cast<const float4*>(x)[i]);
  for (int64_t i = 4 * n4 + t; i < count; i += stride) y[i] = __float2bfloat16_rn(x[i]);
}

__global__ void bf16_to_f32_kernel(const __nv_bfloat16* x, float* y, int64_t count, bool vec) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n4 = vec ? count / 4 : 0;
  for (int64_t i = t; i < n4; i += stride) {
    const uint2 b = reinterpret_cast<const uint2*>(x)[i];  // 4 bf16: the high halves of 4 floats
    reinterpret_cast<float4*>(y)[i] = make_float4(__uint_as_float(b.x << 16), __uint_as_float(b.x & 0xffff0000u),
                                                  __uint_as_float(b.y << 16), __uint_as_float(b.y & 0xffff0000u));
  }
  for (int64_t i = 4 * n4 + t; i < count; i += stride) y[i] = __bfloat162float(x[i]);
}

bool aligned(const void* p, unsigned bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

void f32_to_bf16(const float* x, uint16_t* y, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  const bool vec = aligned(x, 16) && aligned(y, 8);
  f32_to_bf16_kernel<<<detail::blocks_for(vec ? (count + 3) / 4 : count, 256), 256, 0, stream>>>(
      x, reinterpret_cast<__nv_bfloat16*>(y), count, vec);
}

void bf16_to_f32(const uint16_t* x, float* y, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  const bool vec = aligned(x, 8) && aligned(y, 16);
  bf16_to_f32_kernel<<<detail::blocks_for(vec ? (count + 3) / 4 : count, 256), 256, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), y, count, vec);
}

}  // namespace dpa::kernels
