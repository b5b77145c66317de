#include "kernels/common.cuh"
#include "kernels/rope.cuh"

namespace dpa::kernels {
namespace {

// One block per token; threads over (head, pair).
__global__ void rope_kernel(float* x, int64_t n, int64_t n_heads, int64_t token_stride,
                            int64_t head_stride, const int64_t* positions, const float* inv_freq,
                            int64_t half, float scaling) {
  for (int64_t t = blockIdx.x; t < n; t += gridDim.x) {
    const float pos = static_cast<float>(positions[t]);
    for (int64_t k = threadIdx.x; k < n_heads * half; k += blockDim.x) {
      const int64_t h = k / half, i = k % half;
      const float angle = pos * inv_freq[i];
      const float cs = cosf(angle) * scaling, sn = sinf(angle) * scaling;
      float* v = x + t * token_stride + h * head_stride;
      const float a = v[2 * i], b = v[2 * i + 1];
      v[2 * i] = a * cs - b * sn;
      v[2 * i + 1] = b * cs + a * sn;
    }
  }
}

}  // namespace

void rope(float* x, int64_t n, int64_t n_heads, int64_t token_stride, int64_t head_stride,
          const int64_t* positions, const float* inv_freq, int64_t dim, float attention_scaling,
          cudaStream_t stream) {
  const int64_t half = dim / 2;
  if (n <= 0 || n_heads <= 0 || half <= 0) return;
  const unsigned grid = static_cast<unsigned>(n < (1 << 20) ? n : (1 << 20));
  rope_kernel<<<grid, 128, 0, stream>>>(x, n, n_heads, token_stride, head_stride, positions,
                                        inv_freq, half, attention_scaling);
}

}  // namespace dpa::kernels
