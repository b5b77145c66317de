#include <cstdint>

#include "kernels/argmax.cuh"
#include "kernels/common.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 1024;

// (v, i) replaces (bv, bi) when larger, or equal with a lower index.
__device__ __forceinline__ void better(float v, int64_t i, float& bv, int64_t& bi) {
  if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
}

// One block per row: each thread's best (value, index), then the block's. kVec: the row read as
// float4, kUnroll of them in flight per thread (a scalar loop waits one memory latency per
// element: 107 us for 64 rows of 102,400 on an H200).
template <bool kVec>
__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* logits, int64_t n,
                                                          int64_t vocab, int32_t* out) {
  constexpr int kUnroll = 4;
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const float* l = logits + r * vocab;
    float bv = -INFINITY;
    int64_t bi = vocab;  // none yet
    int64_t v0 = 0;
    if constexpr (kVec) {
      const float4* l4 = reinterpret_cast<const float4*>(l);
      const int64_t n4 = vocab / 4, step = static_cast<int64_t>(blockDim.x) * kUnroll;
      for (int64_t q0 = threadIdx.x; q0 < n4; q0 += step) {
        float4 x[kUnroll];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u)
          if (q0 + u * blockDim.x < n4) x[u] = l4[q0 + u * blockDim.x];
#pragma unroll
        for (int u = 0; u < kUnroll; ++u) {
          const int64_t q = q0 + u * blockDim.x;
          if (q >= n4) break;
          better(x[u].x, 4 * q, bv, bi), better(x[u].y, 4 * q + 1, bv, bi);
          better(x[u].z, 4 * q + 2, bv, bi), better(x[u].w, 4 * q + 3, bv, bi);
        }
      }
      v0 = n4 * 4;  // the scalar tail
    }
    for (int64_t v = v0 + threadIdx.x; v < vocab; v += blockDim.x) better(l[v], v, bv, bi);
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      better(ov, oi, bv, bi);
    }
    __syncthreads();
    if (lane == 0) sv[warp] = bv, si[warp] = bi;
    __syncthreads();
    if (warp == 0) {
      bv = lane < nw ? sv[lane] : -INFINITY;
      bi = lane < nw ? si[lane] : vocab;
      for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
        const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
        better(ov, oi, bv, bi);
      }
      if (lane == 0) out[r] = static_cast<int32_t>(bi < vocab ? bi : 0);
    }
  }
}

}  // namespace

void argmax(const float* logits, int64_t n, int64_t vocab, int32_t* out, cudaStream_t stream) {
  if (n <= 0 || vocab <= 0) return;
  const unsigned grid = static_cast<unsigned>(n < (1 << 20) ? n : (1 << 20));
  if (vocab % 4 == 0 && reinterpret_cast<std::uintptr_t>(logits) % 16 == 0)
    argmax_kernel<true><<<grid, kThreads, 0, stream>>>(logits, n, vocab, out);
  else
    argmax_kernel<false><<<grid, kThreads, 0, stream>>>(logits, n, vocab, out);
}

namespace {
__global__ void take_tokens_kernel(int32_t* dst, const int32_t* src, int64_t stride, const int32_t* pairs, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    dst[pairs[2 * i]] = src[pairs[2 * i + 1] * stride];
}
}  // namespace

void take_tokens(int32_t* dst, const int32_t* src, int64_t stride, const int32_t* pairs, int64_t n,
                 cudaStream_t stream) {
  if (n <= 0) return;
  const int threads = 256;
  const unsigned grid = static_cast<unsigned>(n < 256 * 1024 ? (n + threads - 1) / threads : 1024);
  take_tokens_kernel<<<grid, threads, 0, stream>>>(dst, src, stride, pairs, n);
}

}  // namespace dpa::kernels
