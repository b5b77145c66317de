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

// A block a row in use (the block sums the counts itself: no launch in between).
__global__ void bf16_rows_to_f32_kernel(const __nv_bfloat16* x, const int32_t* order, const int64_t* counts,
                                        int64_t n_experts, int64_t capacity, int64_t total, int64_t bound,
                                        int64_t n_rows, int64_t d, float* y) {
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
  for (int64_t q = blockIdx.x; q < total; q += gridDim.x) {
    const int64_t r = order[q];
    if (r < 0 || r >= n_rows) continue;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) y[r * d + c] = __bfloat162float(x[r * d + c]);
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

void bf16_rows_to_f32(const uint16_t* x, const int32_t* order, const int64_t* counts, int64_t n_experts,
                      int64_t capacity, int64_t total, int64_t bound, int64_t n_rows, int64_t d, float* y,
                      cudaStream_t stream) {
  if (bound <= 0 || d <= 0 || (!counts && total <= 0)) return;
  const int64_t blocks = std::min<int64_t>(counts ? bound : std::min(total, bound), 4 * detail::sm_count());
  bf16_rows_to_f32_kernel<<<static_cast<unsigned>(blocks), 256, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), order, counts, n_experts, capacity, total, bound, n_rows, d, y);
}

void bf16_to_f32(const uint16_t* x, float* y, int64_t count, cudaStream_t stream) {
  if (count <= 0) return;
  const bool vec = aligned(x, 8) && aligned(y, 16);
  bf16_to_f32_kernel<<<detail::blocks_for(vec ? (count + 3) / 4 : count, 256), 256, 0, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(x), y, count, vec);
}

}  // namespace dpa::kernels
