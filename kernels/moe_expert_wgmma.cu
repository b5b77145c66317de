#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "kernels/bulk_copy.cuh"
#include "kernels/common.cuh"
#include "kernels/mma.cuh"
#include "kernels/moe_expert_wgmma.cuh"
#include "kernels/tensor_map.cuh"
#include "kernels/wgmma.cuh"

namespace dpa::kernels {

namespace {

// A block: 128 rows x kBN weight rows (gate/up: kBN / 2 of gate then the same kBN / 2 of up, so a
// thread's accumulators hold both halves of its SwiGLU columns), 64-deep k steps in a ring of
// stages. Warpgroup 0 issues the copies (one thread); warpgroups 1 and 2 take rows 0..63 and
// 64..127 with wgmma.m64n{kBN}k16, both operands K-major from 128-byte swizzled shared memory.
// A tile of at most 64 rows (a decode step's experts) loads only those and leaves warpgroup 2
// idle: half the row traffic, no MMA over rows that are not there.
// Wide blocks (kBN 256, four stages of 48 KiB) for compute; narrow ones (kBN 128, seven stages
// of 32 KiB) for launches that stream weights: twice the work items, so the last round of the
// persistent launch leaves fewer SMs idle (a decode step's down GEMM: 576 wide items on 132 SMs
// are five rounds for 48 SMs and four for the rest; 1,152 narrow ones are 9 and 8).
constexpr int kBM = kExpertWgmmaRows, kBK = 64, kThreads = 384, kABytes = kBM * kBK * 2;
template <int kBN>
struct Ring {
  static constexpr int kStages = kBN == 256 ? 4 : 7;
  static constexpr int kBBytes = kBN * kBK * 2, kStageBytes = kABytes + kBBytes;
  static constexpr int kSmemBytes = kStages * kStageBytes + 1024 + 2 * kStages * 8;  // + alignment slack, barriers
  static_assert(kSmemBytes <= 227 * 1024, "shared memory");
};
static_assert(kTensorMapBytes == sizeof(CUtensorMap), "tensor map size");

__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

// Persistent: block b takes output tiles b, b + gridDim.x, ... (weight-row tiles fastest, so the
// tiles in flight at once share rows and weights through L2). The producer runs ahead across
// tiles, so the next tile's first stages load while the consumers write this one's results.
// kBf16Out (down only): the results rounded to bf16 as they are written.
template <bool kGateUp, int kBN, bool kBf16Out = false>
__global__ void __launch_bounds__(kThreads, 1)
    expert_wgmma_kernel(const __grid_constant__ CUtensorMap a_map, const __grid_constant__ CUtensorMap a_half,
                        ExpertWgmmaArgs a, int n_tiles_n, int k_steps,
                        uint16_t* h, int64_t ldh, const int32_t* order, void* out) {
  constexpr int kStages = Ring<kBN>::kStages, kBBytes = Ring<kBN>::kBBytes, kStageBytes = Ring<kBN>::kStageBytes;
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + kStages * kStageBytes);
  uint64_t* empty = full + kStages;
  const int wg = threadIdx.x / 128;
  const int64_t n_work = (a.plan ? a.plan[0] : a.n_tiles) * n_tiles_n;
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStages; ++s) detail::mbar_init(&full[s], 1), detail::mbar_init(&empty[s], 2);
    detail::mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {  // the producer: one thread issues every copy
    if (threadIdx.x != 0) return;
    // The wide blocks' maps, then the narrow blocks' (encode_expert_maps).
    const CUtensorMap* maps = static_cast<const CUtensorMap*>(a.maps) + (kBN == 256 ? 0 : 3 * a.n_experts);
    int it = 0;  // k steps issued so far, over every tile: stage it % kStages, its use it / kStages
    for (int64_t w = blockIdx.x; w < n_work; w += gridDim.x) {
      const ExpertTile t = a.tiles[w / n_tiles_n];
      const int nt = static_cast<int>(w % n_tiles_n);
      const void* b0 = kGateUp ? maps + t.expert : maps + 2 * a.n_experts + t.expert;
      const void* b1 = maps + a.n_experts + t.expert;  // up (gate/up only)
      for (int kt = 0; kt < k_steps; ++kt, ++it) {
        const int s = it % kStages;
        if (it >= kStages) detail::mbar_wait(&empty[s], ((it / kStages) - 1) & 1);
        unsigned char* sa = smem + s * kStageBytes;
        unsigned char* sb = sa + kABytes;
        // A tile of at most 64 rows loads only those (a 64-row box); warpgroup 2 then skips it.
        const bool half = t.rows <= kBM / 2;
        detail::mbar_arrive_expect(&full[s], half ? kStageBytes - kABytes / 2 : kStageBytes);
        detail::tma_load_2d(sa, half ? &a_half : &a_map, kt * kBK, t.p0, &full[s]);
        if (kGateUp) {
          detail::tma_load_2d(sb, b0, kt * kBK, nt * (kBN / 2), &full[s]);
          detail::tma_load_2d(sb + kBBytes / 2, b1, kt * kBK, nt * (kBN / 2), &full[s]);
        } else {
          detail::tma_load_2d(sb, b0, kt * kBK, nt * kBN, &full[s]);
        }
      }
    }
    return;
  }

  const int cw = wg - 1;  // rows 64 cw .. 64 cw + 63 of a tile
  const int w4 = (threadIdx.x / 32) % 4, lane = threadIdx.x % 32;
  const unsigned base = detail::smem_addr(smem);
  int it = 0;
  for (int64_t w = blockIdx.x; w < n_work; w += gridDim.x) {
    const ExpertTile t = a.tiles[w / n_tiles_n];
    const int nt = static_cast<int>(w % n_tiles_n);
    // This warpgroup's rows past the tile's: only pass its stages on. A loop of its own, because
    // the MMA under a branch on t.rows makes ptxas serialize every wgmma of the kernel (C7520 with
    // -Xptxas -v): 13% slower at 8,192 tokens (perf/RESULTS.md). One warp waits and releases;
    // the others wait for it at the warpgroup's barrier. A parity wait is sound only in a thread
    // whose own releases hold the ring back: without the MMA's warpgroup-wide steps, the arriving
    // warp could run two phases ahead of a sibling, which then waits on a parity already gone
    // round (a hang in the model's first prefill, perf/RESULTS.md).
    if (cw * 64 >= t.rows) {
      if (w4 == 0)
        for (int kt = 0; kt < k_steps; ++kt) {
          const int s = (it + kt) % kStages;
          detail::mbar_wait(&full[s], ((it + kt) / kStages) & 1);
          if (lane == 0) detail::mbar_arrive(&empty[s]);
        }
      it += k_steps;
      __syncwarp();
      detail::named_sync(1 + cw, 128);  // this warpgroup's four warps
      continue;
    }
    float acc[kBN / 2];
#pragma unroll
    for (int i = 0; i < kBN / 2; ++i) acc[i] = 0.0f;
    for (int kt = 0; kt < k_steps; ++kt, ++it) {
      const int s = it % kStages;
      detail::mbar_wait(&full[s], (it / kStages) & 1);
      const unsigned sa = base + s * kStageBytes + cw * 64 * 128, sb = base + s * kStageBytes + kABytes;
      detail::wgmma_fence();
#pragma unroll
      for (int k = 0; k < kBK / 16; ++k) {
        const uint64_t da = detail::sw128_desc(sa + k * 32, 16, 1024), db = detail::sw128_desc(sb + k * 32, 16, 1024);
        if constexpr (kBN == 256) detail::wgmma_m64n256k16<0>(acc, da, db, 1);
        else detail::wgmma_m64n128k16(acc, da, db, 1);
      }
      detail::wgmma_commit();
      detail::wgmma_wait<1>();  // the step before this one is done: its stage is free
      if (kt > 0 && threadIdx.x % 128 == 0) detail::mbar_arrive(&empty[(it - 1) % kStages]);
    }
    detail::wgmma_wait<0>();
    detail::wgmma_fence_operands(acc);
    if (threadIdx.x % 128 == 0) detail::mbar_arrive(&empty[(it - 1) % kStages]);  // the tile's last stage

    // acc[4 j + 2 hh + c]: row 16 w4 + lane / 4 + 8 hh of this warpgroup's 64, column 8 j + 2 (lane % 4) + c.
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int r = cw * 64 + 16 * w4 + lane / 4 + 8 * hh;
      if (r >= t.rows) continue;
      const int64_t p = t.p0 + r;
      if (kGateUp) {
        uint16_t* dst = h + p * ldh + nt * (kBN / 2) + 2 * (lane % 4);
#pragma unroll
        for (int j = 0; j < kBN / 16; ++j) {
          const float g0 = acc[4 * j + 2 * hh], g1 = acc[4 * j + 2 * hh + 1];
          const float u0 = acc[4 * (j + kBN / 16) + 2 * hh], u1 = acc[4 * (j + kBN / 16) + 2 * hh + 1];
          *reinterpret_cast<unsigned*>(dst + 8 * j) = detail::pack_bf16(silu(g0) * u0, silu(g1) * u1);
        }
      } else if constexpr (kBf16Out) {
        uint16_t* dst = static_cast<uint16_t*>(out) + static_cast<int64_t>(order[p]) * a.D + nt * kBN + 2 * (lane % 4);
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j)
          *reinterpret_cast<unsigned*>(dst + 8 * j) = detail::pack_bf16(acc[4 * j + 2 * hh], acc[4 * j + 2 * hh + 1]);
      } else {
        float* dst = static_cast<float*>(out) + static_cast<int64_t>(order[p]) * a.D + nt * kBN + 2 * (lane % 4);
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j)
          *reinterpret_cast<float2*>(dst + 8 * j) = make_float2(acc[4 * j + 2 * hh], acc[4 * j + 2 * hh + 1]);
      }
    }
  }
}

// One block: expert e's tiles over the compact rows (start = the counts before e), in expert
// order; plan[0] = tiles, plan[1] = rows.
__global__ void plan_kernel(const int64_t* counts, int64_t n_experts, int64_t capacity, ExpertTile* tiles,
                            int32_t* plan) {
  extern __shared__ int32_t first[];  // [3 * n_experts]: each expert's first row, first tile; its rows
  int32_t* rows_of = first + 2 * n_experts;
  for (int64_t e = threadIdx.x; e < n_experts; e += blockDim.x)  // every load in flight at once
    rows_of[e] = static_cast<int32_t>(min(max(counts[e], int64_t{0}), capacity));
  __syncthreads();
  if (threadIdx.x == 0) {
    int32_t rows = 0, n = 0;
    for (int64_t e = 0; e < n_experts; ++e) {
      const int32_t c = rows_of[e];
      first[2 * e] = rows, first[2 * e + 1] = n;
      rows += c, n += (c + kBM - 1) / kBM;
    }
    plan[0] = n, plan[1] = rows;
  }
  __syncthreads();
  for (int64_t e = threadIdx.x; e < n_experts; e += blockDim.x) {
    const int32_t c = rows_of[e];
    for (int32_t r = 0, i = first[2 * e + 1]; r < c; r += kBM, ++i)
      tiles[i] = ExpertTile{static_cast<int32_t>(e), first[2 * e] + r, min(kBM, c - r), 0};
  }
}

// The same for 16-byte aligned f32 rows of d % 4 == 0 (ldx % 4 == 0): kGroup threads a row, a
// block's rows side by side, each thread's float4 loads of its row issued before its stores (a
// block a row took one memory round trip per row, most of its threads idle).
constexpr int kGatherGroup = 64, kGatherUnroll = 8;
__global__ void gather_vec_kernel(const float* x, const int32_t* order, int64_t x_div, const int32_t* plan,
                                  int64_t n_rows, int64_t d, int64_t ldx, __nv_bfloat16* xb) {
  const int64_t rows = min(n_rows, static_cast<int64_t>(plan[1]));
  const int per_block = blockDim.x / kGatherGroup, t = threadIdx.x % kGatherGroup;
  const int64_t d4 = d / 4;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * per_block + threadIdx.x / kGatherGroup; r < rows;
       r += static_cast<int64_t>(gridDim.x) * per_block) {
    const float4* src = reinterpret_cast<const float4*>(x + static_cast<int64_t>(order[r]) / x_div * d);
    __nv_bfloat16* dst = xb + r * ldx;
    for (int64_t c0 = t; c0 < d4; c0 += kGatherUnroll * kGatherGroup) {
      float4 v[kGatherUnroll];
#pragma unroll
      for (int u = 0; u < kGatherUnroll; ++u)
        if (c0 + u * kGatherGroup < d4) v[u] = src[c0 + u * kGatherGroup];
#pragma unroll
      for (int u = 0; u < kGatherUnroll; ++u)
        if (c0 + u * kGatherGroup < d4) detail::store4(dst + 4 * (c0 + u * kGatherGroup), v[u]);
    }
  }
}

// xb[p] = bf16(x[order[p] / x_div]) for p < plan[1].
__global__ void gather_kernel(const float* x, const int32_t* order, int64_t x_div, const int32_t* plan,
                              int64_t n_rows, int64_t d, int64_t ldx, __nv_bfloat16* xb) {
  const int64_t rows = min(n_rows, static_cast<int64_t>(plan[1]));
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    detail::copy_row(xb + r * ldx, x + static_cast<int64_t>(order[r]) / x_div * d, d);
}

// xb[p] = x[order[p] / x_div] for bf16 rows, p < plan[1]: kGatherGroup threads a row, 16-byte
// copies (8 values) where d, ldx and both bases allow, each thread's loads issued before its
// stores as in gather_vec_kernel; else one value a thread.
__global__ void gather_bf16_kernel(const uint16_t* __restrict__ x, const int32_t* __restrict__ order, int64_t x_div,
                                   const int32_t* __restrict__ plan, int64_t n_rows, int64_t d, int64_t ldx,
                                   uint16_t* __restrict__ xb, bool vec) {
  const int64_t rows = min(n_rows, static_cast<int64_t>(plan[1]));
  const int per_block = blockDim.x / kGatherGroup, t = threadIdx.x % kGatherGroup;
  for (int64_t r = static_cast<int64_t>(blockIdx.x) * per_block + threadIdx.x / kGatherGroup; r < rows;
       r += static_cast<int64_t>(gridDim.x) * per_block) {
    const uint16_t* src = x + static_cast<int64_t>(order[r]) / x_div * d;
    uint16_t* dst = xb + r * ldx;
    if (vec) {
      const int64_t d8 = d / 8;
      for (int64_t c0 = t; c0 < d8; c0 += kGatherUnroll * kGatherGroup) {
        uint4 v[kGatherUnroll];
#pragma unroll
        for (int u = 0; u < kGatherUnroll; ++u)
          if (c0 + u * kGatherGroup < d8) v[u] = reinterpret_cast<const uint4*>(src)[c0 + u * kGatherGroup];
#pragma unroll
        for (int u = 0; u < kGatherUnroll; ++u)
          if (c0 + u * kGatherGroup < d8) reinterpret_cast<uint4*>(dst)[c0 + u * kGatherGroup] = v[u];
      }
    } else {
      for (int64_t c = t; c < d; c += kGatherGroup) dst[c] = src[c];
    }
  }
}

// A [outer][inner] bf16 matrix (row stride ld elements) read in boxes of 64 x box_rows, 128-byte swizzled.
bool encode_2d(CUtensorMap* m, const void* base, int64_t inner, int64_t outer, int64_t ld, int box_rows) {
  return detail::encode_bf16_2d(m, base, inner, outer, ld, kBK, box_rows);
}

template <bool kGateUp, int kBN, bool kBf16Out>
void launch_ring(const CUtensorMap& map, const CUtensorMap& half, const ExpertWgmmaArgs& a, int64_t k, int64_t n,
                 uint16_t* h, int64_t ldh, const int32_t* order, void* out, cudaStream_t stream) {
  static const bool attr = [] {
    return cudaFuncSetAttribute(expert_wgmma_kernel<kGateUp, kBN, kBf16Out>,
                                cudaFuncAttributeMaxDynamicSharedMemorySize, Ring<kBN>::kSmemBytes) == cudaSuccess;
  }();
  (void)attr;
  const int n_tiles_n = static_cast<int>(kGateUp ? n / (kBN / 2) : n / kBN);
  const int64_t work = a.n_tiles * n_tiles_n;
  const unsigned grid = static_cast<unsigned>(std::min<int64_t>(work, detail::sm_count()));
  expert_wgmma_kernel<kGateUp, kBN, kBf16Out><<<grid, kThreads, Ring<kBN>::kSmemBytes, stream>>>(
      map, half, a, n_tiles_n, static_cast<int>(k / kBK), h, ldh, order, out);
}

template <bool kGateUp, bool kBf16Out = false>
bool launch(const uint16_t* a_ptr, int64_t rows, int64_t lda, int64_t k, int64_t n, const ExpertWgmmaArgs& a,
            uint16_t* h, int64_t ldh, const int32_t* order, void* out, cudaStream_t stream) {
  if (a.n_tiles <= 0) return true;
  CUtensorMap map, half;  // a tile's rows: 128 rows a box, or 64 for tiles of at most 64 rows
  if (!encode_2d(&map, a_ptr, k, rows, lda, kBM) || !encode_2d(&half, a_ptr, k, rows, lda, kBM / 2)) return false;
  if (a.narrow) launch_ring<kGateUp, 128, kBf16Out>(map, half, a, k, n, h, ldh, order, out, stream);
  else launch_ring<kGateUp, 256, kBf16Out>(map, half, a, k, n, h, ldh, order, out, stream);
  return true;
}

}  // namespace

bool expert_wgmma_supported(int64_t D, int64_t I, int64_t ld_gu, int64_t ld_down) {
  static const bool hopper = detail::device_attribute(cudaDevAttrComputeCapabilityMajor, 0) == 9;
  return hopper && detail::tensor_maps_available() && D > 0 && I > 0 && D % 256 == 0 && I % 128 == 0 && ld_gu % 8 == 0 &&
         ld_down % 8 == 0 && ld_gu >= D && ld_down >= I && D <= (1 << 20) && I <= (1 << 20);
}

bool encode_expert_maps(const void* const* gate, const void* const* up, const void* const* down,
                        int64_t n_experts, int64_t D, int64_t I, int64_t ld_gu, int64_t ld_down, void* maps) {
  CUtensorMap* m = static_cast<CUtensorMap*>(maps);
  for (const int bn : {256, 128}) {  // the wide blocks' boxes, then the narrow ones'
    for (int64_t e = 0; e < n_experts; ++e)
      if (!encode_2d(m + e, gate[e], D, I, ld_gu, bn / 2) || !encode_2d(m + n_experts + e, up[e], D, I, ld_gu, bn / 2) ||
          !encode_2d(m + 2 * n_experts + e, down[e], I, D, ld_down, bn))
        return false;
    m += 3 * n_experts;
  }
  return true;
}

void moe_wgmma_plan(const int64_t* counts, int64_t n_experts, int64_t capacity, ExpertTile* tiles, int32_t* plan,
                    cudaStream_t stream) {
  if (n_experts <= 0) return;
  plan_kernel<<<1, 256, static_cast<std::size_t>(3 * n_experts) * sizeof(int32_t), stream>>>(counts, n_experts,
                                                                                            capacity, tiles, plan);
}

void moe_wgmma_gather(const float* x, const int32_t* order, int64_t x_div, const int32_t* plan, int64_t n_rows,
                      int64_t d, int64_t ldx, uint16_t* xb, cudaStream_t stream) {
  if (n_rows <= 0 || d <= 0) return;
  if (d % 4 == 0 && ldx % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(xb) % 8 == 0) {
    constexpr int kRowsPerBlock = 256 / kGatherGroup;
    const unsigned blocks = static_cast<unsigned>(
        std::min<int64_t>((n_rows + kRowsPerBlock - 1) / kRowsPerBlock, 16 * detail::sm_count()));
    gather_vec_kernel<<<blocks, 256, 0, stream>>>(x, order, x_div, plan, n_rows, d, ldx,
                                                  reinterpret_cast<__nv_bfloat16*>(xb));
    return;
  }
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(n_rows, 8 * detail::sm_count()));
  gather_kernel<<<blocks, 256, 0, stream>>>(x, order, x_div, plan, n_rows, d, ldx,
                                            reinterpret_cast<__nv_bfloat16*>(xb));
}

void moe_wgmma_gather_bf16(const uint16_t* x, const int32_t* order, int64_t x_div, const int32_t* plan,
                           int64_t n_rows, int64_t d, int64_t ldx, uint16_t* xb, cudaStream_t stream) {
  if (n_rows <= 0 || d <= 0) return;
  const bool vec = d % 8 == 0 && ldx % 8 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(xb) % 16 == 0;
  constexpr int kRowsPerBlock = 256 / kGatherGroup;
  const unsigned blocks = static_cast<unsigned>(
      std::min<int64_t>((n_rows + kRowsPerBlock - 1) / kRowsPerBlock, 16 * detail::sm_count()));
  gather_bf16_kernel<<<blocks, 256, 0, stream>>>(x, order, x_div, plan, n_rows, d, ldx, xb, vec);
}

bool moe_wgmma_gate_up(const uint16_t* xb, int64_t rows, int64_t ldx, const ExpertWgmmaArgs& a, uint16_t* h,
                       int64_t ldh, cudaStream_t stream) {
  return launch<true>(xb, rows, ldx, a.D, a.I, a, h, ldh, nullptr, nullptr, stream);
}

bool moe_wgmma_down(const uint16_t* h, int64_t rows, int64_t ldh, const int32_t* order, const ExpertWgmmaArgs& a,
                    void* out, bool out_bf16, cudaStream_t stream) {
  if (out_bf16) return launch<false, true>(h, rows, ldh, a.I, a.D, a, nullptr, 0, order, out, stream);
  return launch<false>(h, rows, ldh, a.I, a.D, a, nullptr, 0, order, out, stream);
}

}  // namespace dpa::kernels
