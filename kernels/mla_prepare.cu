#include "kernels/common.cuh"
#include "kernels/mla_prepare.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 256;

// One block per token: the latent's sum of squares, its normalized values into the cache, then
// every rope pair (the query heads', then the key's) with the arithmetic of rope_kernel and
// rms_norm_kernel.
template <class T>
__global__ void __launch_bounds__(kThreads) mla_prepare_kernel(MlaPrepareArgs a) {
  __shared__ float red[32];
  const int64_t t = blockIdx.x;
  const int64_t slot = a.slots[t];
  const int64_t L = a.kv_lora, R = a.rope_dim, half = R / 2, W = L + R;
  const float* kv = a.kva + t * a.kva_stride;
  T* row = slot >= 0 ? static_cast<T*>(a.cache) + slot * W : nullptr;
  float ss = 0.0f;
  for (int64_t j = threadIdx.x; j < L; j += kThreads) ss += kv[j] * kv[j];
  ss = detail::block_sum(ss, red);
  const float inv = static_cast<float>(1.0 / sqrt(static_cast<double>(ss) / L + a.eps));
  if (row)
    for (int64_t j = threadIdx.x; j < L; j += kThreads)
      detail::store(row + j, detail::load_weight(a.norm, a.norm_bf16, j) * (kv[j] * inv));
  if (R % 2 && threadIdx.x == 0) {  // an odd rope part's last element does not rotate
    for (int64_t h = 0; h < a.n_heads && a.q_pe; ++h)
      a.q_pe[(t * a.n_heads + h) * R + R - 1] = a.q[t * a.q_stride + h * a.q_head_dim + a.nope + R - 1];
    if (row) detail::store(row + W - 1, kv[W - 1]);
  }
  if (half == 0) return;
  const float pos = static_cast<float>(a.positions[t]);
  for (int64_t k = threadIdx.x; k < (a.n_heads + 1) * half; k += kThreads) {
    const int64_t h = k / half, i = k - h * half;
    const float angle = pos * a.inv_freq[i];
    const float cs = cosf(angle) * a.scaling, sn = sinf(angle) * a.scaling;
    if (h < a.n_heads) {
      float* v = a.q + t * a.q_stride + h * a.q_head_dim + a.nope;
      const float x = v[2 * i], y = v[2 * i + 1];
      const float rx = x * cs - y * sn, ry = y * cs + x * sn;
      v[2 * i] = rx, v[2 * i + 1] = ry;
      if (a.q_pe) {
        float* p = a.q_pe + (t * a.n_heads + h) * R;
        p[2 * i] = rx, p[2 * i + 1] = ry;
      }
    } else if (row) {
      const float x = kv[L + 2 * i], y = kv[L + 2 * i + 1];
      detail::store(row + L + 2 * i, x * cs - y * sn);
      detail::store(row + L + 2 * i + 1, y * cs + x * sn);
    }
  }
}

}  // namespace

void mla_prepare(const MlaPrepareArgs& a, cudaStream_t stream) {
  if (a.n <= 0) return;
  const dim3 grid(static_cast<unsigned>(a.n));
  if (a.cache_bf16) mla_prepare_kernel<__nv_bfloat16><<<grid, kThreads, 0, stream>>>(a);
  else mla_prepare_kernel<float><<<grid, kThreads, 0, stream>>>(a);
}

}  // namespace dpa::kernels
