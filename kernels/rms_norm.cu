#include <cstdint>

#include "kernels/common.cuh"
#include "kernels/rms_norm.cuh"

namespace dpa::kernels {
namespace {

// One block per row. With `residual`, the row is residual += x first. Each thread touches the
// same indices in both passes, so out may alias x or residual. With out_bf16, out's values also
// rounded there (the rows a GEMM then reads).
__global__ void rms_norm_kernel(float* residual, const float* x, const void* w, bool w_bf16,
                                int64_t n, int64_t d, float eps, float* out, __nv_bfloat16* out_bf16) {
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
    __nv_bfloat16* bi = out_bf16 ? out_bf16 + i * d : nullptr;
    for (int64_t j = threadIdx.x; j < d; j += blockDim.x) {
      const float o = detail::load_weight(w, w_bf16, j) * (src[j] * inv);
      oi[j] = o;
      if (bi) bi[j] = __float2bfloat16_rn(o);
    }
  }
}

// The same with float4 rows held in registers between the two passes (d % 4 == 0, 16-byte
// aligned rows, d <= 4 * kThreads * kV): every load of a row is in flight at once.
constexpr int kThreads = 256;
template <int kV>
__global__ void __launch_bounds__(kThreads) rms_norm_vec_kernel(float* residual, const float* x, const void* w,
                                                                bool w_bf16, int64_t d, float eps, float* out,
                                                                __nv_bfloat16* out_bf16) {
  __shared__ float red[32];
  const int64_t i = blockIdx.x;
  const int d4 = static_cast<int>(d / 4);
  const float4* xi = reinterpret_cast<const float4*>(x + i * d);
  float4* ri = residual ? reinterpret_cast<float4*>(residual + i * d) : nullptr;
  float4 v[kV], r[kV];
  float ss = 0.0f;
#pragma unroll
  for (int j = 0; j < kV; ++j) {
    const int q = threadIdx.x + j * kThreads;
    if (q < d4) v[j] = xi[q];
    if (ri && q < d4) r[j] = ri[q];
  }
#pragma unroll
  for (int j = 0; j < kV; ++j) {
    const int q = threadIdx.x + j * kThreads;
    if (q >= d4) continue;
    if (ri) {
      v[j].x = r[j].x + v[j].x, v[j].y = r[j].y + v[j].y, v[j].z = r[j].z + v[j].z, v[j].w = r[j].w + v[j].w;
      ri[q] = v[j];
    }
    ss += v[j].x * v[j].x + v[j].y * v[j].y + v[j].z * v[j].z + v[j].w * v[j].w;
  }
  ss = detail::block_sum(ss, red);
  const float inv = static_cast<float>(1.0 / sqrt(static_cast<double>(ss) / d + eps));
  float4* oi = reinterpret_cast<float4*>(out + i * d);
#pragma unroll
  for (int j = 0; j < kV; ++j) {
    const int q = threadIdx.x + j * kThreads;
    if (q >= d4) continue;
    float4 wq;
    if (w_bf16) {
      const uint2 b = reinterpret_cast<const uint2*>(w)[q];  // 4 bf16
      wq = make_float4(__uint_as_float(b.x << 16), __uint_as_float(b.x & 0xffff0000u), __uint_as_float(b.y << 16),
                       __uint_as_float(b.y & 0xffff0000u));
    } else {
      wq = reinterpret_cast<const float4*>(w)[q];
    }
    const float4 o = make_float4(wq.x * (v[j].x * inv), wq.y * (v[j].y * inv), wq.z * (v[j].z * inv),
                                 wq.w * (v[j].w * inv));
    oi[q] = o;
    if (out_bf16) detail::store4(out_bf16 + i * d + 4 * q, o);
  }
}

template <int kV>
void launch_vec(float* residual, const float* x, const void* w, bool w_bf16, int64_t n, int64_t d, float eps,
                float* out, __nv_bfloat16* out_bf16, cudaStream_t stream) {
  rms_norm_vec_kernel<kV><<<static_cast<unsigned>(n), kThreads, 0, stream>>>(residual, x, w, w_bf16, d, eps, out,
                                                                             out_bf16);
}

bool aligned16(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % 16 == 0; }

void launch(float* residual, const float* x, const void* w, bool w_bf16, int64_t n, int64_t d,
            float eps, float* out, uint16_t* out_bf16_bits, cudaStream_t stream) {
  if (n <= 0 || d <= 0) return;
  auto* out_bf16 = reinterpret_cast<__nv_bfloat16*>(out_bf16_bits);
  const int64_t per_thread = (d / 4 + kThreads - 1) / kThreads;
  const bool vec = d % 4 == 0 && per_thread <= 8 && n < (int64_t{1} << 31) && aligned16(x) && aligned16(out) &&
                   aligned16(w) && (!residual || aligned16(residual)) &&
                   reinterpret_cast<std::uintptr_t>(out_bf16) % 8 == 0;
  if (vec && per_thread <= 1) return launch_vec<1>(residual, x, w, w_bf16, n, d, eps, out, out_bf16, stream);
  if (vec && per_thread <= 2) return launch_vec<2>(residual, x, w, w_bf16, n, d, eps, out, out_bf16, stream);
  if (vec && per_thread <= 4) return launch_vec<4>(residual, x, w, w_bf16, n, d, eps, out, out_bf16, stream);
  if (vec) return launch_vec<8>(residual, x, w, w_bf16, n, d, eps, out, out_bf16, stream);
  const unsigned grid = static_cast<unsigned>(n < (1 << 20) ? n : (1 << 20));
  rms_norm_kernel<<<grid, 256, 0, stream>>>(residual, x, w, w_bf16, n, d, eps, out, out_bf16);
}

}  // namespace

void rms_norm(const float* x, const void* w, bool w_bf16, int64_t n, int64_t d, float eps,
              float* out, cudaStream_t stream, uint16_t* out_bf16) {
  launch(nullptr, x, w, w_bf16, n, d, eps, out, out_bf16, stream);
}

void add_rms_norm(float* residual, const float* x, const void* w, bool w_bf16, int64_t n,
                  int64_t d, float eps, float* out, cudaStream_t stream, uint16_t* out_bf16) {
  launch(residual, x, w, w_bf16, n, d, eps, out, out_bf16, stream);
}

}  // namespace dpa::kernels
