// Tensor-core building blocks shared by the bf16 kernels (included by .cu files only):
// ldmatrix loads of 8x8 bf16 tiles from shared memory, the m16n8k16 bf16 MMA with fp32
// accumulation (sm_80+), and the cp.async k loop and fragment walk of the GEMM kernels.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "kernels/common.cuh"

namespace dpa::kernels::detail {

__device__ __forceinline__ void ldsm_x4(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_trans(unsigned (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p))
               : "memory");
}
__device__ __forceinline__ void ldsm_x2(unsigned& r0, unsigned& r1, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(smem_addr(p))
               : "memory");
}
// c += a · b for one m16n8k16 tile (A row-major 16x16, B column-major 16x8, C 16x8 fp32).
__device__ __forceinline__ void mma16816(float (&c)[4], const unsigned (&a)[4], unsigned b0, unsigned b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// 2^x on the special-function unit, denormal results flushed to zero (probabilities that small
// are zero in bf16 P anyway); 2^-inf = 0. The softmax of the attention kernels.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
// Two floats as a bf16 pair in one register (lo in the low half: the lower column / k index).
__device__ __forceinline__ unsigned pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const unsigned*>(&v);
}

// The A fragment of m16n8k16 for a 16 x 16 block of f32 rows in shared memory (row stride ld
// floats, from p), rounded to bf16 pairs: rows g and g + 8, columns 2t, 2t + 1 and 2t + 8, 2t + 9.
__device__ __forceinline__ void a_frag_f32(unsigned (&a)[4], const float* p, int ld, int g, int t) {
  p += g * ld + 2 * t;
  const float2 v0 = *reinterpret_cast<const float2*>(p), v1 = *reinterpret_cast<const float2*>(p + 8 * ld),
               v2 = *reinterpret_cast<const float2*>(p + 8), v3 = *reinterpret_cast<const float2*>(p + 8 * ld + 8);
  a[0] = pack_bf16(v0.x, v0.y), a[1] = pack_bf16(v1.x, v1.y);
  a[2] = pack_bf16(v2.x, v2.y), a[3] = pack_bf16(v3.x, v3.y);
}

// One thread's share of the cp.async copies of a kRows x kBK tile of T rows (f32 or bf16) into
// shared memory (row stride kS elements), with the rows' addresses worked out once per tile, so
// that a k step costs a thread only its copies: every thread copies the same 16-byte column chunk
// of rows row(0), row(1), ... (kRowStep apart). init() takes row_ptr(r): tile row r's first
// element in global memory, or nullptr for a row that holds zeros (written once into all
// `stages` tiles, `stage_bytes` apart; no copies for them in the k loop: a tile of a few tokens
// would otherwise issue most of its activation copies for nothing); load() copies columns k0 ..
// k0 + kBK (zeros from `cols` on) into the tile `stage_bytes` past the one init() was given.
template <class T, int kRows, int kBK, int kS, int kThreads>
struct TileCopier {
  static constexpr int kPer = 16 / static_cast<int>(sizeof(T)), kChunks = kBK / kPer,
                       kRowStep = kThreads / kChunks, kN = kRows / kRowStep;
  static_assert(kBK % kPer == 0 && kThreads % kChunks == 0 && kRows % kRowStep == 0 && kN >= 1 && kN <= 32,
                "a whole number of chunks a thread");
  static constexpr unsigned kRowBytes = kRowStep * kS * sizeof(T);  // shared bytes between a thread's chunks
  const T* src[kN];
  unsigned dst = 0, valid = 0;
  int kc = 0;

  __device__ static int row(int i) { return static_cast<int>(threadIdx.x) / kChunks + i * kRowStep; }

  template <class RowPtr>
  __device__ __forceinline__ void init(const T* tile, RowPtr row_ptr, int stages, unsigned stage_bytes) {
    kc = (static_cast<int>(threadIdx.x) % kChunks) * kPer;
    dst = smem_addr(tile + row(0) * kS + kc);
    valid = 0;
#pragma unroll
    for (int i = 0; i < kN; ++i) {
      const T* p = row_ptr(row(i));
      src[i] = p;
      if (p != nullptr) {
        valid |= 1u << i;
        src[i] += kc;
      } else {
        for (int st = 0; st < stages; ++st)
          asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(dst + st * stage_bytes + i * kRowBytes),
                       "r"(0u)
                       : "memory");
      }
    }
  }
  __device__ __forceinline__ void load(unsigned stage_bytes, int k0, int cols) const {
    const bool in = k0 + kc < cols;
    const int k = in ? k0 : 0;  // past `cols`: zeros, from the row's first chunk read for nothing
#pragma unroll
    for (int i = 0; i < kN; ++i)
      if ((valid >> i) & 1u) cp_async16(dst + stage_bytes + i * kRowBytes, src[i] + k, in);
  }
};

// The accumulator pairs a thread holds after the k loop, fragment by fragment: f(mf, j, hr, row,
// col) for rows mf * 16 + g + hr * 8 of the tile and columns col0 + j * 8 + 2t, 2t + 1 (g, t: the
// lane's group and index in it, as mma.m16n8k16 lays out C).
template <int kMF, int kNJ, class F>
__device__ __forceinline__ void for_each_pair(int g, int t, int col0, F f) {
#pragma unroll
  for (int mf = 0; mf < kMF; ++mf)
#pragma unroll
    for (int j = 0; j < kNJ; ++j)
#pragma unroll
      for (int hr = 0; hr < 2; ++hr) f(mf, j, hr, mf * 16 + g + hr * 8, col0 + j * 8 + 2 * t);
}

// The k loop of the GEMM kernels: load(stage, kt) issues a tile's copies, mma(stage) consumes it.
template <int kStages, class Load, class Mma>
__device__ __forceinline__ void pipeline(int nk, Load load, Mma mma) {
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < nk) load(s, s);
    cp_async_commit();
  }
  for (int kt = 0; kt < nk; ++kt) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile kt visible to all; every warp is past tile kt - 1, whose stage is reused
    const int nx = kt + kStages - 1;
    if (nx < nk) load(nx % kStages, nx);
    cp_async_commit();
    mma(kt % kStages);
  }
  cp_async_wait<0>();
  __syncthreads();  // the stages (and a caller's per-tile shared state) may be refilled
}

}  // namespace dpa::kernels::detail
