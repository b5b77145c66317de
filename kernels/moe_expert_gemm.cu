#include <algorithm>
#include <type_traits>

#include "kernels/common.cuh"
#include "kernels/mma.cuh"
#include "kernels/moe_expert_gemm.cuh"

namespace dpa::kernels {
namespace {

using detail::a_frag_f32;
using detail::ldsm_x4;
using detail::mma16816;
using detail::for_each_pair;
using detail::pack_bf16;
using detail::pipeline;
using detail::TileCopier;

// A block: 4 warps over a tile of kBM rows x kBN weight rows (gate/up: 64 of each, the same
// columns; down: 128 output columns), kBK deep, kStages tiles in flight by cp.async. The tiles
// are weight-bound at decode sizes: the weight tile (16 KB a stage) is what streams. Measured on
// one H200 (perf/RESULTS.md): 64-row weight tiles (finer waves) ran slower than 128, and 16-row
// tiles win only while an expert's rows fit one or two of them; 3 or 6 stages and 128-deep k
// steps (256-byte segments) measured the same as these (5860493).
constexpr int kThreads = 128, kBN = 128, kBK = 64;
constexpr int kS = kBK + 8;  // smem row stride (elements): conflict-free ldmatrix and float2 loads
// Rows of one expert whose tiles run side by side (grid x), sharing each weight panel through L2.
constexpr int kRowsAtOnce = 128;

// A tile shape: BM rows (16, 32 or 64), ST stages.
template <int BM, int ST>
struct Shape {
  static_assert(BM == 16 || BM == 32 || BM == 64, "tile rows");
  static constexpr int kBM = BM, kStages = ST, kMF = BM / 16;
  // Shared memory: the stages of A (f32 rows for gate/up, bf16 for down), then those of B.
  static constexpr int smem_a(int elem_bytes) { return ST * BM * kS * elem_bytes; }
  static constexpr int kSmemB = ST * kBN * kS * 2;
};

// The tile's rows: rem (0 when the expert has no rows from r0 on) and s_row[r] = order[start_e +
// r0 + r] (-1 past rem). Uniform across the block.
template <int kBM>
__device__ __forceinline__ int tile_rows(const int64_t* counts, int64_t capacity, int e, int64_t r0,
                                         const int32_t* order, int64_t* s_start, int32_t* s_row) {
  const int64_t cnt = min(counts[e], capacity);  // a count over the capacity is a broken contract: no overrun
  if (r0 >= cnt) return 0;
  if (threadIdx.x < 32) {
    long long s = 0;
    for (int j = threadIdx.x; j < e; j += 32) s += counts[j];
    for (int o = 16; o; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (threadIdx.x == 0) *s_start = s;
  }
  __syncthreads();
  const int rem = static_cast<int>(cnt - r0 < kBM ? cnt - r0 : kBM);
  if (threadIdx.x < kBM) s_row[threadIdx.x] = threadIdx.x < rem ? order[*s_start + r0 + threadIdx.x] : -1;
  __syncthreads();
  return rem;
}

__device__ __forceinline__ float silu(float v) { return v / (1.0f + expf(-v)); }

// TX: the rows' type, f32 (rounded to bf16 as the A fragments are built) or bf16 (an exchange's
// rows, read as they are: the same bits the f32 path would have rounded them to).
template <class S, class TX>
__global__ void __launch_bounds__(kThreads, 2)
    gate_up_kernel(const TX* __restrict__ x, const int32_t* __restrict__ order, ExpertGemmArgs a,
                   __nv_bfloat16* __restrict__ h, int64_t ldh) {
  constexpr bool kF32 = std::is_same_v<TX, float>;
  constexpr int kXBytes = static_cast<int>(sizeof(TX));
  extern __shared__ __align__(16) unsigned char smem[];
  TX* sA = reinterpret_cast<TX*>(smem);
  constexpr int kBM = S::kBM, kStages = S::kStages, kMF = S::kMF;
  __nv_bfloat16* sB = reinterpret_cast<__nv_bfloat16*>(smem + S::smem_a(kXBytes));
  __shared__ int64_t s_start;
  __shared__ int32_t s_row[kBM];
  const int e = blockIdx.z, n0 = blockIdx.y * (kBN / 2);
  const int D = static_cast<int>(a.D), I = static_cast<int>(a.I);
  const auto* wg = static_cast<const __nv_bfloat16*>(a.gate[e]);
  const auto* wu = static_cast<const __nv_bfloat16*>(a.up[e]);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int nk = (D + kBK - 1) / kBK;
  for (int64_t r0 = static_cast<int64_t>(blockIdx.x) * kBM;; r0 += static_cast<int64_t>(gridDim.x) * kBM) {
    const int rem = tile_rows<kBM>(a.counts, a.capacity, e, r0, order, &s_start, s_row);
    if (!rem) return;
    // Each thread's rows of the activation tile (the tile's tokens) and of the weight tile (gate
    // rows, then the same columns' up rows), addressed once for the k loop.
    TileCopier<TX, kBM, kBK, kS, kThreads> ca;
    TileCopier<__nv_bfloat16, kBN, kBK, kS, kThreads> cb;
    ca.init(
        sA, [&](int r) { return s_row[r] >= 0 ? x + static_cast<int64_t>(s_row[r]) / a.x_div * D : nullptr; }, kStages,
        kBM * kS * kXBytes);
    cb.init(
        sB,
        [&](int r) {
          const int n = n0 + (r & (kBN / 2 - 1));
          return n < I ? (r < kBN / 2 ? wg : wu) + static_cast<int64_t>(n) * a.ld_gu : nullptr;
        },
        kStages, kBN * kS * 2);
    auto load = [&](int st, int kt) {
      ca.load(st * (kBM * kS * kXBytes), kt * kBK, D);
      cb.load(st * (kBN * kS * 2), kt * kBK, D);
    };
    float acc[kMF][4][4] = {};  // [16-row half][gate 0, gate 1, up 0, up 1][fragment]
    auto mma = [&](int st) {
      const TX* A = sA + st * kBM * kS;
      const __nv_bfloat16* B = sB + st * kBN * kS;
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        unsigned af[kMF][4];
#pragma unroll
        for (int mf = 0; mf < kMF; ++mf) {
          if constexpr (kF32) a_frag_f32(af[mf], A + mf * 16 * kS + kk, kS, g, t);
          else ldsm_x4(af[mf], A + (mf * 16 + (lane & 15)) * kS + kk + (lane >> 4) * 8);
        }
        const int m = lane >> 3;
#pragma unroll
        for (int half = 0; half < 2; ++half) {  // gate rows, then the same columns' up rows
          unsigned b[4];
          ldsm_x4(b, B + (half * (kBN / 2) + warp * 16 + (m >> 1) * 8 + (lane & 7)) * kS + kk + (m & 1) * 8);
#pragma unroll
          for (int mf = 0; mf < kMF; ++mf) {
            mma16816(acc[mf][half * 2], af[mf], b[0], b[1]);
            mma16816(acc[mf][half * 2 + 1], af[mf], b[2], b[3]);
          }
        }
      }
    };
    pipeline<kStages>(nk, load, mma);
    __nv_bfloat16* hb = h + (static_cast<int64_t>(e) * a.capacity + r0) * ldh;
    for_each_pair<kMF, 2>(g, t, n0 + warp * 16, [&](int mf, int j, int hr, int r, int col) {
      if (r >= rem || col >= I) return;
      const float* gv = acc[mf][j] + hr * 2;
      const float* uv = acc[mf][2 + j] + hr * 2;
      *reinterpret_cast<unsigned*>(hb + static_cast<int64_t>(r) * ldh + col) =
          pack_bf16(silu(gv[0]) * uv[0], silu(gv[1]) * uv[1]);
    });
  }
}

// TO: the results' type, f32 or bf16 (each rounded once, as the f32 results would be).
template <class S, class TO>
__global__ void __launch_bounds__(kThreads, 2)
    down_kernel(const __nv_bfloat16* __restrict__ h, int64_t ldh, const int32_t* __restrict__ order,
                ExpertGemmArgs a, TO* __restrict__ out) {
  extern __shared__ __align__(16) unsigned char smem[];
  __nv_bfloat16* sA = reinterpret_cast<__nv_bfloat16*>(smem);
  constexpr int kBM = S::kBM, kStages = S::kStages, kMF = S::kMF;
  __nv_bfloat16* sB = reinterpret_cast<__nv_bfloat16*>(smem + S::smem_a(2));
  __shared__ int64_t s_start;
  __shared__ int32_t s_row[kBM];
  const int e = blockIdx.z, n0 = blockIdx.y * kBN;
  const int D = static_cast<int>(a.D), I = static_cast<int>(a.I);
  const auto* wd = static_cast<const __nv_bfloat16*>(a.down[e]);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
  const int nk = (I + kBK - 1) / kBK;
  for (int64_t r0 = static_cast<int64_t>(blockIdx.x) * kBM;; r0 += static_cast<int64_t>(gridDim.x) * kBM) {
    const int rem = tile_rows<kBM>(a.counts, a.capacity, e, r0, order, &s_start, s_row);
    if (!rem) return;
    const __nv_bfloat16* hb = h + (static_cast<int64_t>(e) * a.capacity + r0) * ldh;
    TileCopier<__nv_bfloat16, kBM, kBK, kS, kThreads> ca;
    TileCopier<__nv_bfloat16, kBN, kBK, kS, kThreads> cb;
    ca.init(sA, [&](int r) { return r < rem ? hb + static_cast<int64_t>(r) * ldh : nullptr; }, kStages, kBM * kS * 2);
    cb.init(sB, [&](int r) { return n0 + r < D ? wd + static_cast<int64_t>(n0 + r) * a.ld_down : nullptr; },
            kStages, kBN * kS * 2);
    auto load = [&](int st, int kt) {
      ca.load(st * (kBM * kS * 2), kt * kBK, I);
      cb.load(st * (kBN * kS * 2), kt * kBK, I);
    };
    float acc[kMF][4][4] = {};  // [16-row half][8-column group of the warp's 32][fragment]
    auto mma = [&](int st) {
      const __nv_bfloat16* A = sA + st * kBM * kS;
      const __nv_bfloat16* B = sB + st * kBN * kS;
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        unsigned af[kMF][4];
#pragma unroll
        for (int mf = 0; mf < kMF; ++mf) ldsm_x4(af[mf], A + (mf * 16 + (lane & 15)) * kS + kk + (lane >> 4) * 8);
#pragma unroll
        for (int pair = 0; pair < 2; ++pair) {
          const int m = lane >> 3;
          unsigned b[4];
          ldsm_x4(b, B + (warp * 32 + pair * 16 + (m >> 1) * 8 + (lane & 7)) * kS + kk + (m & 1) * 8);
#pragma unroll
          for (int mf = 0; mf < kMF; ++mf) {
            mma16816(acc[mf][pair * 2], af[mf], b[0], b[1]);
            mma16816(acc[mf][pair * 2 + 1], af[mf], b[2], b[3]);
          }
        }
      }
    };
    pipeline<kStages>(nk, load, mma);
    for_each_pair<kMF, 4>(g, t, n0 + warp * 32, [&](int mf, int j, int hr, int r, int col) {
      if (r >= rem || col >= D) return;
      if constexpr (std::is_same_v<TO, float>)
        *reinterpret_cast<float2*>(out + static_cast<int64_t>(s_row[r]) * D + col) =
            make_float2(acc[mf][j][hr * 2], acc[mf][j][hr * 2 + 1]);
      else
        *reinterpret_cast<unsigned*>(out + static_cast<int64_t>(s_row[r]) * D + col) =
            pack_bf16(acc[mf][j][hr * 2], acc[mf][j][hr * 2 + 1]);
    });
  }
}

// Row tiles side by side cover kRowsAtOnce rows of an expert; an expert with more rows loops.
template <class S>
dim3 grid_of(const ExpertGemmArgs& a, int64_t cols_per_block, int64_t cols) {
  const int64_t row_tiles = (a.capacity + S::kBM - 1) / S::kBM;
  return dim3(static_cast<unsigned>(std::min<int64_t>(row_tiles, kRowsAtOnce / S::kBM)),
              static_cast<unsigned>((cols + cols_per_block - 1) / cols_per_block), static_cast<unsigned>(a.n_experts));
}

template <class S, class TX>
void launch_gate_up(const TX* x, const int32_t* order, const ExpertGemmArgs& a, uint16_t* h, int64_t ldh,
                    cudaStream_t stream) {
  constexpr int smem = S::smem_a(static_cast<int>(sizeof(TX))) + S::kSmemB;
  static const bool once = [] {  // one GPU per process
    cudaFuncSetAttribute(gate_up_kernel<S, TX>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    return true;
  }();
  (void)once;
  gate_up_kernel<S, TX><<<grid_of<S>(a, kBN / 2, a.I), kThreads, smem, stream>>>(
      x, order, a, reinterpret_cast<__nv_bfloat16*>(h), ldh);
}

template <class S, class TO>
void launch_down(const uint16_t* h, int64_t ldh, const int32_t* order, const ExpertGemmArgs& a, TO* out,
                 cudaStream_t stream) {
  constexpr int smem = S::smem_a(2) + S::kSmemB;
  static const bool once = [] {
    cudaFuncSetAttribute(down_kernel<S, TO>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
    return true;
  }();
  (void)once;
  down_kernel<S, TO><<<grid_of<S>(a, kBN, a.D), kThreads, smem, stream>>>(
      reinterpret_cast<const __nv_bfloat16*>(h), ldh, order, a, out);
}

template <class S>
void gate_up_as(const void* x, bool x_bf16, const int32_t* order, const ExpertGemmArgs& a, uint16_t* h, int64_t ldh,
                cudaStream_t stream) {
  if (x_bf16) launch_gate_up<S>(static_cast<const __nv_bfloat16*>(x), order, a, h, ldh, stream);
  else launch_gate_up<S>(static_cast<const float*>(x), order, a, h, ldh, stream);
}

template <class S>
void down_as(const uint16_t* h, int64_t ldh, const int32_t* order, const ExpertGemmArgs& a, void* out, bool out_bf16,
             cudaStream_t stream) {
  if (out_bf16) launch_down<S>(h, ldh, order, a, static_cast<__nv_bfloat16*>(out), stream);
  else launch_down<S>(h, ldh, order, a, static_cast<float*>(out), stream);
}

}  // namespace

bool expert_gemm_supported(int64_t D, int64_t I, int64_t ld_gu, int64_t ld_down) {
  return D > 0 && I > 0 && D % 8 == 0 && I % 8 == 0 && ld_gu % 8 == 0 && ld_down % 8 == 0 && D < (1 << 30) &&
         I < (1 << 30);
}

// Rows a tile: by the rows an expert holds on average (the slots routed over the experts; the
// capacity when they are not known), so that an expert's rows take one or two tiles and its
// weights stream once. Measured on one H200, V2-Lite experts (perf/RESULTS.md, moe_experts_bench
// fixed, ms a call): EP 1, 64 tokens (~8 rows an expert) 16-row tiles 0.31 against 0.32 for 32
// rows; 128 tokens (~16) 16 and 32 alike (0.33); 256 tokens (~31) 32 rows 0.36 against 0.51 for 16
// and 0.38 for 64; 512 tokens (~62) 64 rows 0.44 against 0.59 for 32. EP 2 (32 experts a rank):
// 256 tokens 64 rows 0.23 against 0.32.
int rows_per_tile(const ExpertGemmArgs& a) {
  if (a.rows > 0) {
    const int64_t per_expert = a.rows / a.n_experts;
    return per_expert <= 12 ? 16 : per_expert <= 40 ? 32 : 64;
  }
  return a.capacity <= 64 ? 16 : a.capacity <= 256 ? 32 : 64;
}

void moe_gate_up_silu(const void* x, bool x_bf16, const int32_t* order, const ExpertGemmArgs& a, uint16_t* h,
                      int64_t ldh, cudaStream_t stream) {
  if (a.n_experts <= 0 || a.capacity <= 0) return;
  switch (rows_per_tile(a)) {
    case 16: return gate_up_as<Shape<16, 4>>(x, x_bf16, order, a, h, ldh, stream);
    case 32: return gate_up_as<Shape<32, 3>>(x, x_bf16, order, a, h, ldh, stream);
    default: return gate_up_as<Shape<64, 3>>(x, x_bf16, order, a, h, ldh, stream);
  }
}

void moe_down(const uint16_t* h, int64_t ldh, const int32_t* order, const ExpertGemmArgs& a, void* out, bool out_bf16,
              cudaStream_t stream) {
  if (a.n_experts <= 0 || a.capacity <= 0) return;
  switch (rows_per_tile(a)) {
    case 16: return down_as<Shape<16, 4>>(h, ldh, order, a, out, out_bf16, stream);
    case 32: return down_as<Shape<32, 3>>(h, ldh, order, a, out, out_bf16, stream);
    default: return down_as<Shape<64, 3>>(h, ldh, order, a, out, out_bf16, stream);
  }
}

}  // namespace dpa::kernels
