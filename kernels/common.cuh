// Device-side helpers shared by the kernels (included by .cu files only).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace dpa::kernels::detail {

// The shared-memory address of a generic pointer into shared memory (for inline PTX).
__device__ __forceinline__ unsigned smem_addr(const void* p) {
  return static_cast<unsigned>(__cvta_generic_to_shared(p));
}

// An attribute of the current device, or `fallback` if the query fails.
inline int device_attribute(cudaDeviceAttr attr, int fallback) {
  int dev = 0, v = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, attr, dev) != cudaSuccess) {
    cudaGetLastError();
    return fallback;
  }
  return v;
}

// Streaming multiprocessors of the current device, asked once (132 on an H200 if the query fails).
inline int sm_count() {
  static const int sms = device_attribute(cudaDevAttrMultiProcessorCount, 132);
  return sms;
}

inline unsigned blocks_for(int64_t count, unsigned threads, unsigned cap = 65535u * 16u) {
  int64_t b = (count + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > cap) b = cap;
  return static_cast<unsigned>(b);
}

__device__ __forceinline__ float load_weight(const void* w, bool bf16, int64_t i) {
  if (bf16) return __bfloat162float(static_cast<const __nv_bfloat16*>(w)[i]);
  return static_cast<const float*>(w)[i];
}

// cp.async copies global -> shared (sm_80+); `valid` false zero-fills the destination instead.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_size = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_size));
}
// The same with the shared-memory address already converted (a kernel's precomputed offsets).
__device__ __forceinline__ void cp_async16(unsigned smem, const void* gmem, bool valid) {
  const int src_size = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(gmem), "r"(src_size));
}
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem, bool valid) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  const int src_size = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(s), "l"(gmem), "r"(src_size));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Element conversions of the f32 / bf16 buffers (KV cache, padded expert rows).
__device__ __forceinline__ float load_f32(const float* p) { return *p; }
__device__ __forceinline__ float load_f32(const __nv_bfloat16* p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

// Four floats to four elements (f32: one 16-byte store; bf16: one 8-byte store).
__device__ __forceinline__ void store4(float* p, float4 v) { *reinterpret_cast<float4*>(p) = v; }
__device__ __forceinline__ void store4(__nv_bfloat16* p, float4 v) {
  const __nv_bfloat162 a = __floats2bfloat162_rn(v.x, v.y), b = __floats2bfloat162_rn(v.z, v.w);
  uint2 u;
  u.x = *reinterpret_cast<const unsigned*>(&a), u.y = *reinterpret_cast<const unsigned*>(&b);
  *reinterpret_cast<uint2*>(p) = u;
}

// One row of d floats copied by the block (dst[c] = src[c], rounded to T; src null: zeros). With
// 16-byte aligned f32 rows (4-element aligned dst) and d % 4 == 0, float4 pieces, each thread's
// four loads issued before its stores: a plain loop waits one memory latency per element.
template <class T>
__device__ __forceinline__ void copy_row(T* dst, const float* src, int64_t d) {
  const bool vec = d % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(dst) % (4 * sizeof(T)) == 0;
  if (!vec) {
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) store(dst + c, src ? src[c] : 0.0f);
    return;
  }
  constexpr int kU = 4;
  const int64_t d4 = d / 4, step = static_cast<int64_t>(blockDim.x);
  for (int64_t q0 = threadIdx.x; q0 < d4; q0 += kU * step) {
    float4 v[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u)
      if (q0 + u * step < d4)
        v[u] = src ? reinterpret_cast<const float4*>(src)[q0 + u * step] : make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
    for (int u = 0; u < kU; ++u)
      if (q0 + u * step < d4) store4(dst + 4 * (q0 + u * step), v[u]);
  }
}

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block; every thread gets the result. `red` holds >= 32 floats of shared memory.
// blockDim.x must be a multiple of 32.
__device__ __forceinline__ float block_sum(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = lane < nw ? red[lane] : 0.0f;
  r = warp_sum(r);
  return r;
}

__device__ __forceinline__ float block_max(float v, float* red) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float r = lane < nw ? red[lane] : -INFINITY;
  r = warp_max(r);
  return r;
}

}  // namespace dpa::kernels::detail
