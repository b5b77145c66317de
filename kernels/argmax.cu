#include "kernels/argmax.cuh"
#include "kernels/common.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 512;

// (v, i) replaces (bv, bi) when larger, or equal with a lower index.
__device__ __forceinline__ void better(float v, int64_t i, float& bv, int64_t& bi) {
  if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
}

__global__ void __launch_bounds__(kThreads) argmax_kernel(const float* logits, int64_t n,
                                                          int64_t vocab, int32_t* out) {
  __shared__ float sv[32];
  __shared__ int64_t si[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
    const float* l = logits + r * vocab;
    float bv = -INFINITY;
    int64_t bi = vocab;  // none yet
    for (int64_t v = threadIdx.x; v < vocab; v += blockDim.x) better(l[v], v, bv, bi);
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
  argmax_kernel<<<grid, kThreads, 0, stream>>>(logits, n, vocab, out);
}

}  // namespace dpa::kernels
