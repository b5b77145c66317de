#include "kernels/common.cuh"
#include "kernels/rms_norm.cuh"

namespace dpa::kernels {
namespace {

// One block per row. With `residual`, the row is residual += x first. Each thread touches the
// same indices in both passes, so out may alias x or residual.
__global__ void rms_norm_kernel(float* residual, const float* x, const void* w, bool w_bf16,
                                int64_t n, int64_t d, float eps, float* out) {
  __shared__ float red[32];
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const float* xi = x + i * d;
    float* ri = residual ? residual + i * d : nullptr;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      float v = xi[j];
      if (ri) {
        v = ri[j] + v;
        ri[j] = v;
      }
      ss += v * v;
    }
    ss = detail::block_sum(ss, red);
    const float inv = static_cast<float>(1.0 / sqrt(static_cast<double>(ss) / d + eps));
    const float* src = ri ? ri : xi;
    float* oi = out + i * d;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x)
      oi[j] = detail::load_weight(w, w_bf16, j) * (src[j] * inv);
  }
}

void launch(float* residual, const float* x, const void* w, bool w_bf16, int64_t n, int64_t d,
            float eps, float* out, cudaStream_t stream) {
  if (n <= 0 || d <= 0) return;
  const unsigned grid = static_cast<unsigned>(n < (1 << 20) ? n : (1 << 20));
  rms_norm_kernel<<<grid, 256, 0, stream>>>(residual, x, w, w_bf16, n, d, eps, out);
}

}  // namespace

void rms_norm(const float* x, const void* w, bool w_bf16, int64_t n, int64_t d, float eps,
              float* out, cudaStream_t stream) {
  launch(nullptr, x, w, w_bf16, n, d, eps, out, stream);
}

void add_rms_norm(float* residual, const float* x, const void* w, bool w_bf16, int64_t n,
                  int64_t d, float eps, float* out, cudaStream_t stream) {
  launch(residual, x, w, w_bf16, n, d, eps, out, stream);
}

}  // namespace dpa::kernels
