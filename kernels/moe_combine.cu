#include <cstdint>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/moe_combine.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 128;

// Block (t, y): token t, kThreads * W columns from y * kThreads * W. A thread's k rows are read
// kChunk at a time, every load issued before the first sum (one memory latency per chunk, not one
// per k). W = 4: float4 rows (d % 4 == 0 and 16-byte aligned buffers), or four bf16 (8 bytes).
constexpr int kChunk = 8;

__device__ __forceinline__ float4 to_float4(float4 v) { return v; }
__device__ __forceinline__ float4 to_float4(uint2 v) {  // four bf16, low halves first
  return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u), __uint_as_float(v.y << 16),
                     __uint_as_float(v.y & 0xffff0000u));
}
__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(uint16_t v) { return __uint_as_float(static_cast<unsigned>(v) << 16); }

template <int W, typename T>
__global__ void __launch_bounds__(kThreads) moe_combine_kernel(const T* __restrict__ y, const int32_t* __restrict__ rows,
                                                               const float* __restrict__ weights, int64_t top_k,
                                                               int64_t d, float* __restrict__ out, bool accumulate) {
  using V = std::conditional_t<W == 4, std::conditional_t<std::is_same_v<T, float>, float4, uint2>, T>;
  const int64_t t = blockIdx.x;
  const int64_t c = (static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x) * W;
  if (c >= d) return;
  const int64_t s0 = t * top_k;
  float acc[W] = {};
  for (int64_t k0 = 0; k0 < top_k; k0 += kChunk) {
    float w[kChunk];
    V v[kChunk];
#pragma unroll
    for (int j = 0; j < kChunk; ++j)
      if (k0 + j < top_k) {
        const int64_t s = s0 + k0 + j;
        w[j] = weights[s];
        v[j] = *reinterpret_cast<const V*>(y + static_cast<int64_t>(rows ? rows[s] : s) * d + c);
      }
#pragma unroll
    for (int j = 0; j < kChunk; ++j)  // in k order, as the reference
      if (k0 + j < top_k) {
        if constexpr (W == 4) {
          const float4 f = to_float4(v[j]);
          acc[0] = fmaf(w[j], f.x, acc[0]), acc[1] = fmaf(w[j], f.y, acc[1]);
          acc[2] = fmaf(w[j], f.z, acc[2]), acc[3] = fmaf(w[j], f.w, acc[3]);
        } else {
          acc[0] = fmaf(w[j], to_float(v[j]), acc[0]);
        }
      }
  }
  float* o = out + t * d + c;
  if constexpr (W == 4) {
    float4 cur = accumulate ? *reinterpret_cast<float4*>(o) : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    cur.x += acc[0], cur.y += acc[1], cur.z += acc[2], cur.w += acc[3];
    *reinterpret_cast<float4*>(o) = cur;
  } else {
    *o = (accumulate ? *o : 0.0f) + acc[0];
  }
}

}  // namespace

void moe_combine(const void* y, bool y_bf16, const int32_t* rows, const float* weights, int64_t n, int64_t top_k,
                 int64_t d, float* out, bool accumulate, cudaStream_t stream) {
  if (n <= 0 || d <= 0 || top_k <= 0) return;
  const bool vec = d % 4 == 0 && reinterpret_cast<std::uintptr_t>(y) % (y_bf16 ? 8 : 16) == 0 &&
                   reinterpret_cast<std::uintptr_t>(out) % 16 == 0;
  const int w = vec ? 4 : 1;
  const int64_t per_block = static_cast<int64_t>(kThreads) * w;
  // Tokens on grid x (up to 2^31 - 1), column chunks on y.
  const dim3 grid(static_cast<unsigned>(n), static_cast<unsigned>((d + per_block - 1) / per_block));
  const auto* yf = static_cast<const float*>(y);
  const auto* yb = static_cast<const uint16_t*>(y);
  if (vec && y_bf16) moe_combine_kernel<4><<<grid, kThreads, 0, stream>>>(yb, rows, weights, top_k, d, out, accumulate);
  else if (vec) moe_combine_kernel<4><<<grid, kThreads, 0, stream>>>(yf, rows, weights, top_k, d, out, accumulate);
  else if (y_bf16) moe_combine_kernel<1><<<grid, kThreads, 0, stream>>>(yb, rows, weights, top_k, d, out, accumulate);
  else moe_combine_kernel<1><<<grid, kThreads, 0, stream>>>(yf, rows, weights, top_k, d, out, accumulate);
}

}  // namespace dpa::kernels
