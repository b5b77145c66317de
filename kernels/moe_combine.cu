#include "kernels/common.cuh"
#include "kernels/moe_combine.cuh"

namespace dpa::kernels {
namespace {

__global__ void moe_combine_kernel(const float* y, const int32_t* rows, const float* weights, int64_t n,
                                   int64_t top_k, int64_t d, float* out) {
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      float acc = 0.0f;
      for (int64_t k = 0; k < top_k; ++k)
        acc = fmaf(weights[t * top_k + k], y[(rows ? rows[t * top_k + k] : t * top_k + k) * d + c], acc);
      out[t * d + c] += acc;
    }
  }
}

}  // namespace

void moe_combine(const float* y, const int32_t* rows, const float* weights, int64_t n, int64_t top_k,
                 int64_t d, float* out, cudaStream_t stream) {
  if (n <= 0 || d <= 0 || top_k <= 0) return;
  const unsigned grid = static_cast<unsigned>(n < (1 << 20) ? n : (1 << 20));
  moe_combine_kernel<<<grid, 256, 0, stream>>>(y, rows, weights, n, top_k, d, out);
}

}  // namespace dpa::kernels
