#include "kernels/common.cuh"
#include "kernels/mla_prepare.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 256;

// One block per token: the latent's sum of squares, its normalized values into the cache, then
// every rope pair (the query heads', then the key's) with the arithmetic of rope_kernel and
// rms_norm_kernel; the query heads' nope parts rounded, head-major, when asked for.
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
  if (a.q_nope_hm) {  // pairs where both sides allow, else one by one
    __nv_bfloat16* hm = reinterpret_cast<__nv_bfloat16*>(a.q_nope_hm);
    const float* q = a.q + t * a.q_stride;
    if (a.nope % 2 == 0 && a.q_stride % 2 == 0 && a.q_head_dim % 2 == 0 && reinterpret_cast<uintptr_t>(a.q) % 8 == 0 &&
        reinterpret_cast<uintptr_t>(hm) % 4 == 0) {
      const int64_t np = a.nope / 2;
      for (int64_t k = threadIdx.x; k < a.n_heads * np; k += kThreads) {
        const int64_t h = k / np, i = 2 * (k - h * np);
        const float2 v = *reinterpret_cast<const float2*>(q + h * a.q_head_dim + i);
        *reinterpret_cast<__nv_bfloat162*>(hm + (h * a.n + t) * a.nope + i) = __floats2bfloat162_rn(v.x, v.y);
      }
    } else {
      for (int64_t k = threadIdx.x; k < a.n_heads * a.nope; k += kThreads) {
        const int64_t h = k / a.nope, i = k - h * a.nope;
        hm[(h * a.n + t) * a.nope + i] = __float2bfloat16_rn(q[h * a.q_head_dim + i]);
      }
    }
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
