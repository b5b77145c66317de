#include "kernels/common.cuh"
#include "kernels/elementwise.cuh"

namespace dpa::kernels {
namespace {

// As the conversions (convert.cu): float4 accesses where every array is 16-byte aligned, then the
// tail (or every element) one by one.
__global__ void add_kernel(float* y, const float* x, int64_t count, bool vec) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n4 = vec ? count / 4 : 0;
  for (int64_t i = t; i < n4; i += stride) {
    float4 a = reinterpret_cast<float4*>(y)[i];
    const float4 b = reinterpret_cast<const float4*>(x)[i];
    a.x += b.x, a.y += b.y, a.z += b.z, a.w += b.w;
    reinterpret_cast<float4*>(y)[i] = a;
  }
  for (int64_t i = 4 * n4 + t; i < count; i += stride) y[i] += x[i];
}

__device__ __forceinline__ float silu_times(float g, float u) { return g / (1.0f + expf(-g)) * u; }

__global__ void silu_mul_kernel(const float* gate, const float* up, int64_t count, float* out, bool vec) {
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t n4 = vec ? count / 4 : 0;
  for (int64_t i = t; i < n4; i += stride) {
    const float4 g = reinterpret_cast<const float4*>(gate)[i], u = reinterpret_cast<const float4*>(up)[i];
    reinterpret_cast<float4*>(out)[i] =
        make_float4(silu_times(g.x, u.x), silu_times(g.y, u.y), silu_times(g.z, u.z), silu_times(g.w, u.w));
  }
  for (int64_t i = 4 * n4 + t; i < count; i += stride) out[i] = silu_times(gate[i], up[i]);
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

}  // namespace

void add(float* y, const float* x, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  const bool vec = aligned16(y) && aligned16(x);
  add_kernel<<<detail::blocks_for(vec ? (count + 3) / 4 : count, 256), 256, 0, stream>>>(y, x, count, vec);
}

void silu_mul(const float* gate, const float* up, int64_t count, float* out, cudaStream_t stream) {
  if (count <= 0) return;
  const bool vec = aligned16(gate) && aligned16(up) && aligned16(out);
  silu_mul_kernel<<<detail::blocks_for(vec ? (count + 3) / 4 : count, 256), 256, 0, stream>>>(gate, up, count, out,
                                                                                              vec);
}

}  // namespace dpa::kernels
