#include <algorithm>

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

// Four values a step: 4 bf16 are loaded as one uint2 and stored as a float4; 4 floats are loaded
// as a float4 and stored as 4 bf16 (8 bytes).
template <class In> struct Vec4;
template <> struct Vec4<__nv_bfloat16> { using type = uint2; };
template <> struct Vec4<float> { using type = float4; };
__device__ __forceinline__ void store_vec4(float* y, uint2 b) {  // 4 bf16: the high halves of 4 floats
  *reinterpret_cast<float4*>(y) = make_float4(__uint_as_float(b.x << 16), __uint_as_float(b.x & 0xffff0000u),
                                              __uint_as_float(b.y << 16), __uint_as_float(b.y & 0xffff0000u));
}
__device__ __forceinline__ void store_vec4(__nv_bfloat16* y, float4 v) { store4(y, v); }
__device__ __forceinline__ float convert1(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ __nv_bfloat16 convert1(float v) { return __float2bfloat16_rn(v); }

// A block a row in use (the block sums the counts itself: no launch in between). With d % 4 == 0
// and aligned bases (`vec`), four values a step, each thread's loads issued before its stores.
template <class In, class Out>
__global__ void convert_rows_kernel(const In* __restrict__ x, const int32_t* __restrict__ order,
                                    const int64_t* counts, int64_t n_experts, int64_t capacity, int64_t total,
                                    int64_t bound, int64_t n_rows, int64_t d, Out* __restrict__ y, bool vec) {
  if (counts) {
    __shared__ unsigned long long s_total;
    if (threadIdx.x == 0) s_total = 0;
    __syncthreads();
    unsigned long long part = 0;
    for (int64_t e = threadIdx.x; e < n_experts; e += blockDim.x) {
      const int64_t c = counts[e];
      part += static_cast<unsigned long long>(c < 0 ? 0 : (c > capacity ? capacity : c));
    }
    atomicAdd(&s_total, part);
    __syncthreads();
    total = static_cast<int64_t>(s_total);
  }
  total = total < bound ? total : bound;
  constexpr int kU = 4;
  const int64_t step = blockDim.x, d4 = vec ? d / 4 : 0;
  for (int64_t q = blockIdx.x; q < total; q += gridDim.x) {
    const int64_t r = order[q];
    if (r < 0 || r >= n_rows) continue;
    const In* src = x + r * d;
    Out* dst = y + r * d;
    using V = typename Vec4<In>::type;
    for (int64_t c0 = threadIdx.x; c0 < d4; c0 += kU * step) {
      V v[kU];
#pragma unroll
      for (int u = 0; u < kU; ++u)
        if (c0 + u * step < d4) v[u] = reinterpret_cast<const V*>(src)[c0 + u * step];
#pragma unroll
      for (int u = 0; u < kU; ++u)
        if (c0 + u * step < d4) store_vec4(dst + 4 * (c0 + u * step), v[u]);
    }
    for (int64_t c = 4 * d4 + threadIdx.x; c < d; c += step) dst[c] = convert1(src[c]);
  }
}

bool aligned(const void* p, unsigned bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }

}  // namespace

void f32_to_bf16(const float* x, uint16_t* y, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  const bool vec = aligned(x, 16) && aligned(y, 8);
  f32_to_bf16_kernel<<<detail::blocks_for(vec ? (count + 3) / 4 : count, 256), 256, 0, stream>>>(
      x, reinterpret_cast<__nv_bfloat16*>(y), count, vec);
}

namespace {
template <class In, class Out>
void convert_rows(const In* x, const int32_t* order, const int64_t* counts, int64_t n_experts, int64_t capacity,
                  int64_t total, int64_t bound, int64_t n_rows, int64_t d, Out* y, cudaStream_t stream) {
  if (bound <= 0 || d <= 0 || (!counts && total <= 0)) return;
  const bool vec = d % 4 == 0 && aligned(x, 4 * sizeof(In)) && aligned(y, 4 * sizeof(Out));
  const int64_t blocks = std::min<int64_t>(counts ? bound : std::min(total, bound), 4 * detail::sm_count());
  convert_rows_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(x, order, counts, n_experts, capacity,
                                                                        total, bound, n_rows, d, y, vec);
}
}  // namespace

void bf16_rows_to_f32(const uint16_t* x, const int32_t* order, const int64_t* counts, int64_t n_experts,
                      int64_t capacity, int64_t total, int64_t bound, int64_t n_rows, int64_t d, float* y,
                      cudaStream_t stream) {
  convert_rows(reinterpret_cast<const __nv_bfloat16*>(x), order, counts, n_experts, capacity, total, bound, n_rows, d,
               y, stream);
}

void f32_rows_to_bf16(const float* x, const int32_t* order, const int64_t* counts, int64_t n_experts,
                      int64_t capacity, int64_t total, int64_t bound, int64_t n_rows, int64_t d, uint16_t* y,
                      cudaStream_t stream) {
  convert_rows(x, order, counts, n_experts, capacity, total, bound, n_rows, d, reinterpret_cast<__nv_bfloat16*>(y),
               stream);
}

void bf16_to_f32(const uint16_t* x, float* y, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  const bool vec = aligned(x, 8) && aligned(y, 16);
  bf16_to_f32_kernel<<<detail::blocks_for(vec ? (count + 3) / 4 : count, 256), 256, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), y, count, vec);
}

}  // namespace dpa::kernels
