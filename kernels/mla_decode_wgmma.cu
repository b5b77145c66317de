// Batched absorbed-MLA decode over a bf16 paged latent cache on Hopper's warpgroup MMA
// (wgmma, sm_90a), for many heads (DeepSeek-V3: 128 a rank): a block takes (sequence, 64-head
// group, context split), so the cache is read once per 64 heads instead of once per 16 as in
// the mma.sync kernel (mla_decode_bf16.cu), and each cache tile in shared memory feeds 64 heads
// per tensor-core instruction instead of 16 per warp. Latent 512 + rope 64 only.
//
// Two warpgroups (256 threads), one block per SM. Shared memory (128-byte swizzled tiles, see
// wgmma.cuh): the queries Q [64 heads][576] as 9 column blocks (72 KB); a ring of two cache
// tiles of 64 rows [64][576] (72 KB each), loaded by cp.async with swizzled destinations; the
// probabilities P [64 heads][64 rows] (8 KB). For each tile:
//   scores: warpgroup w computes S_w = Q K_w^T for its half of the tile's rows (rows 32 w ..
//     32 w + 31; wgmma m64n32k16 x 36, both operands from shared memory);
//   softmax: the two halves' per-head maxima meet in shared memory, so both warpgroups use the
//     same running maximum; P_w = 2^(S_w - m) goes to shared memory as bf16;
//   P·V: warpgroup w accumulates O[:, 256 w .. 256 w + 255] += P C_lat[:, 256 w ..] over all 64
//     rows (wgmma m64n256k16 x 4, the cache tile read N-major), 128 fp32 registers a thread.
// Three block barriers a tile: tile in and the other slot free (then the next tile's loads go
// out), maxima exchanged, P written. Each warpgroup's running sums cover its own rows; they
// are added at the end.
// Two forms follow: the first (cp.async, any page size) as above; the seesaw form (pages of 16,
// 32 or 64 rows, the default) has the warpgroups take turns at the tiles and a third one copy
// them by tensor copies (see its own comment). A form between the two (both warpgroups on every
// tile as above, tiles by tensor copies) was the default until the seesaw beat it; perf/RESULTS.md
// has both.
#include <cuda.h>
#include <cuda_bf16.h>

#include "kernels/bulk_copy.cuh"
#include "kernels/common.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/mla_decode_plan.cuh"
#include "kernels/mma.cuh"
#include "kernels/tensor_map.cuh"
#include "kernels/wgmma.cuh"

namespace dpa::kernels {
namespace {

constexpr int kL = 512, kR = 64, kW = kL + kR;  // latent, rope, cache row (elements)
constexpr int kHeads = 64;                      // heads per block (the wgmma M)
constexpr int kT = 64;                          // cache rows per tile
constexpr int kThreads = 256;                   // two warpgroups
constexpr unsigned kQBytes = kHeads * kW * 2;   // 73,728
constexpr unsigned kTileBytes = kT * kW * 2;    // 73,728
constexpr unsigned kBlkBytes = kT * 128;        // one 64-column block of a tile (or of Q): 8,192
constexpr unsigned kPBytes = kHeads * kT * 2;   // 8,192
constexpr std::size_t kSmem = 1024 + kQBytes + 2 * kTileBytes + kPBytes + 4 * kHeads * sizeof(float);
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kHeads * 128 == kBlkBytes, "Q blocks and tile blocks share a size");

struct WgArgs {
  detail::DecodeArgs<__nv_bfloat16> d;  // scale: softmax scale times log2(e)
  int vec_q;                            // queries 16-byte aligned: float4 loads
};

using detail::fast_exp2;
using detail::named_sync;

// The queries of heads sh0 .. sh0 + nh - 1 as bf16 into qs ([9][64 heads][128 B], swizzled; zero
// past nh), by kN threads (t = 0 .. kN - 1).
template <int kN>
__device__ __forceinline__ void stage_queries(const WgArgs& wa, unsigned char* qs, int nh, int64_t sh0, int t) {
  const detail::DecodeArgs<__nv_bfloat16>& a = wa.d;
  constexpr int kPer = kHeads * (kW / 8) / kN;  // 16-byte chunks a thread: 18 (256 threads), 12 (384)
#pragma unroll 6
  for (int i = 0; i < kPer; ++i) {
    const int e = t + kN * i, h = e / (kW / 8), c = e - h * (kW / 8);
    float v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = 0.0f;
    if (h < nh) {
      const float* src = c < kL / 8 ? a.q_lat + (sh0 + h) * kL + 8 * c : a.q_pe + (sh0 + h) * kR + 8 * (c - kL / 8);
      if (wa.vec_q) {
        const float4 x = reinterpret_cast<const float4*>(src)[0], y = reinterpret_cast<const float4*>(src)[1];
        v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w, v[4] = y.x, v[5] = y.y, v[6] = y.z, v[7] = y.w;
      } else {
#pragma unroll
        for (int k = 0; k < 8; ++k) v[k] = src[k];
      }
    }
    uint4 pk;
    pk.x = detail::pack_bf16(v[0], v[1]), pk.y = detail::pack_bf16(v[2], v[3]);
    pk.z = detail::pack_bf16(v[4], v[5]), pk.w = detail::pack_bf16(v[6], v[7]);
    *reinterpret_cast<uint4*>(qs + (c >> 3) * kBlkBytes + detail::sw128_offset(h, 8 * (c & 7))) = pk;
  }
}

// Writes a block's result: o[4 j + e] is (head hA, channel 256 wg + 8 j + 2 q4 + e), o[4 j + 2 + e]
// the same for hB; (m, l) the running maximum (log2 domain) and sum of each head.
__device__ __forceinline__ void store_output(const detail::DecodeArgs<__nv_bfloat16>& a, const float (&o)[128], int wg,
                                             int q4, int hA, int hB, int nh, int64_t sh0, int split, float m_run,
                                             float m_runB, float l_run, float l_runB) {
  const int c0 = 256 * wg + 2 * q4;
  if (a.part) {
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const int c = c0 + 8 * j;
      if (hA < nh)
        *reinterpret_cast<float2*>(a.part + ((sh0 + hA) * a.n_splits + split) * kL + c) = make_float2(o[4 * j], o[4 * j + 1]);
      if (hB < nh)
        *reinterpret_cast<float2*>(a.part + ((sh0 + hB) * a.n_splits + split) * kL + c) = make_float2(o[4 * j + 2], o[4 * j + 3]);
    }
    if (wg == 0 && q4 == 0) {  // both warpgroups hold the same (max, sum)
      if (hA < nh) {
        float* ml = detail::split_max_sum(a, sh0 + hA, split);
        ml[0] = m_run * kLn2, ml[1] = l_run;
      }
      if (hB < nh) {
        float* ml = detail::split_max_sum(a, sh0 + hB, split);
        ml[0] = m_runB * kLn2, ml[1] = l_runB;
      }
    }
  } else {
    const float invA = l_run > 0.0f ? 1.0f / l_run : 0.0f, invB = l_runB > 0.0f ? 1.0f / l_runB : 0.0f;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      const int c = c0 + 8 * j;
      if (hA < nh)
        *reinterpret_cast<float2*>(a.out + (sh0 + hA) * kL + c) = make_float2(o[4 * j] * invA, o[4 * j + 1] * invA);
      if (hB < nh)
        *reinterpret_cast<float2*>(a.out + (sh0 + hB) * kL + c) = make_float2(o[4 * j + 2] * invB, o[4 * j + 3] * invB);
    }
  }
}

// Scales a score fragment (s[4 c + e]: head hA, column 8 c + 2 q4 + e; s[4 c + 2 + e]: head hB)
// and masks columns at and past `valid` with -inf; returns both heads' maxima over the quad.
template <int N>
__device__ __forceinline__ void masked_max(float (&s)[N], int valid, float scale, int q4, float& mxA, float& mxB) {
  mxA = -INFINITY, mxB = -INFINITY;
#pragma unroll
  for (int c = 0; c < N / 4; ++c)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const bool ok = 8 * c + 2 * q4 + e < valid;
      s[4 * c + e] = ok ? s[4 * c + e] * scale : -INFINITY;
      s[4 * c + 2 + e] = ok ? s[4 * c + 2 + e] * scale : -INFINITY;
      mxA = fmaxf(mxA, s[4 * c + e]), mxB = fmaxf(mxB, s[4 * c + 2 + e]);
    }
  mxA = fmaxf(mxA, __shfl_xor_sync(0xffffffffu, mxA, 1));
  mxA = fmaxf(mxA, __shfl_xor_sync(0xffffffffu, mxA, 2));
  mxB = fmaxf(mxB, __shfl_xor_sync(0xffffffffu, mxB, 1));
  mxB = fmaxf(mxB, __shfl_xor_sync(0xffffffffu, mxB, 2));
}

// The two warpgroups (256 threads) meet at named barrier 1, which a producer warpgroup skips.
__device__ __forceinline__ void consumer_sync() { asm volatile("bar.sync 1, 256;\n" ::: "memory"); }

// A thread's running sums (heads hA, hB) cover its lanes' share of its warpgroup's tile rows:
// adds the quad's four lanes, then the other warpgroup's through lsum [2][64].
__device__ __forceinline__ void add_block_sums(float& lA, float& lB, float* lsum, int wg, int q4, int hA, int hB) {
  lA += __shfl_xor_sync(0xffffffffu, lA, 1);
  lA += __shfl_xor_sync(0xffffffffu, lA, 2);
  lB += __shfl_xor_sync(0xffffffffu, lB, 1);
  lB += __shfl_xor_sync(0xffffffffu, lB, 2);
  if (q4 == 0) lsum[wg * kHeads + hA] = lA, lsum[wg * kHeads + hB] = lB;
  consumer_sync();
  lA += lsum[(1 - wg) * kHeads + hA];
  lB += lsum[(1 - wg) * kHeads + hB];
}

__global__ void __launch_bounds__(kThreads, 1) mla_decode_wgmma_kernel(WgArgs wa) {
  const detail::DecodeArgs<__nv_bfloat16>& a = wa.d;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  unsigned char* qs = sm;                            // [9][64 heads][128 B]
  unsigned char* ks = sm + kQBytes;                  // [2][9][64 rows][128 B]
  unsigned char* ps = ks + 2 * kTileBytes;           // [64 heads][128 B]
  float* red = reinterpret_cast<float*>(ps + kPBytes);  // [2][64] maxima, then [2][64] sums

  const int tid = threadIdx.x;
  const detail::DecodeBlock blk = detail::decode_block(a, kHeads);
  if (detail::empty_split(a, blk)) return;
  const int split = blk.split, nh = blk.nh, k_begin = blk.k_begin, k_end = blk.k_end;
  const int64_t sh0 = blk.sh0;
  const int32_t* table = a.pages + a.table_offset[blk.s];
  const int pgs = a.page_size;

  // Loads: thread t takes row t / 4 of a tile, 16-byte chunks t % 4, t % 4 + 4, ... (18 of 72).
  const int lrow = tid >> 2, lsub = tid & 3;
  auto page_of = [&](int t0) { return t0 + lrow < k_end ? table[(t0 + lrow) / pgs] : 0; };
  auto load_tile = [&](int t0, int page, int slot) {
    const int pos = t0 + lrow;
    const bool ok = pos < k_end;  // past the context: zeros (P is 0 there; 0 * stale bits could be NaN)
    const __nv_bfloat16* src = ok ? a.base + (static_cast<int64_t>(page) * pgs + (pos - pos / pgs * pgs)) * kW : a.base;
    const unsigned dst = detail::smem_addr(ks + slot * kTileBytes);
#pragma unroll
    for (int i = 0; i < kW / 8 / 4; ++i) {
      const int c = lsub + 4 * i, b = c >> 3, j = c & 7;
      detail::cp_async16(dst + b * kBlkBytes + detail::sw128_offset(lrow, 8 * j), src + 8 * c, ok);
    }
    detail::cp_async_commit();
  };
  const int n_tiles = (k_end - k_begin + kT - 1) / kT;
  load_tile(k_begin, page_of(k_begin), 0);
  int next_page = page_of(k_begin + kT);

  // Queries as bf16, staged while the first tile is on its way.
  stage_queries<kThreads>(wa, qs, nh, sh0, tid);


  const int wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
  const int hA = 16 * warp + g, hB = hA + 8;  // this thread's two heads (accumulator rows)
  const unsigned q_addr = detail::smem_addr(qs), k_addr = detail::smem_addr(ks), p_addr = detail::smem_addr(ps);
  float m_run = -INFINITY, m_runB = -INFINITY, l_run = 0.0f, l_runB = 0.0f;
  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;

  for (int it = 0; it < n_tiles; ++it) {
    const int t0 = k_begin + it * kT;
    const unsigned slot = k_addr + (it & 1) * kTileBytes;
    detail::cp_async_wait<0>();    // this thread's copies of tile it (and the queries' stores)
    detail::fence_proxy_async();   // ... visible to the tensor cores' reads
    __syncthreads();               // everyone's; and both warpgroups are done with tile it - 1
    if (it + 1 < n_tiles) {
      load_tile(t0 + kT, next_page, (it + 1) & 1);
      next_page = page_of(t0 + 2 * kT);
    }

    // Scores of this warpgroup's 32 rows: s[4 c + e] is (head hA, row 32 wg + 8 c + 2 q4 + e),
    // s[4 c + 2 + e] the same for head hB.
    float s[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) s[i] = 0.0f;
    detail::wgmma_fence();
#pragma unroll
    for (int k = 0; k < kW / 16; ++k) {
      const unsigned off = (k >> 2) * kBlkBytes + (k & 3) * 32;
      detail::wgmma_m64n32k16(s, detail::sw128_desc(q_addr + off, 16, 1024),
                              detail::sw128_desc(slot + wg * 32 * 128 + off, 16, 1024), k > 0);
    }
    detail::wgmma_commit();
    detail::wgmma_wait<0>();
    detail::wgmma_fence_operands(s);

    float mxA, mxB;
    masked_max(s, k_end - t0 - 32 * wg, a.scale, q4, mxA, mxB);  // this warpgroup's rows start at 32 wg
    if (q4 == 0) red[wg * kHeads + hA] = mxA, red[wg * kHeads + hB] = mxB;
    __syncthreads();  // both halves' maxima are in
    mxA = fmaxf(mxA, red[(1 - wg) * kHeads + hA]);
    mxB = fmaxf(mxB, red[(1 - wg) * kHeads + hB]);
    const float mA = fmaxf(m_run, mxA), mB = fmaxf(m_runB, mxB);  // finite: the tile has a visible row
    const float alA = fast_exp2(m_run - mA), alB = fast_exp2(m_runB - mB);
    m_run = mA, m_runB = mB;
    float sumA = 0.0f, sumB = 0.0f;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      const float p0 = fast_exp2(s[4 * c] - mA), p1 = fast_exp2(s[4 * c + 1] - mA);
      const float p2 = fast_exp2(s[4 * c + 2] - mB), p3 = fast_exp2(s[4 * c + 3] - mB);
      sumA += p0 + p1, sumB += p2 + p3;
      const int row = 32 * wg + 8 * c + 2 * q4;  // the tile row of p0 / p2 (a column of P)
      *reinterpret_cast<unsigned*>(ps + detail::sw128_offset(hA, row)) = detail::pack_bf16(p0, p1);
      *reinterpret_cast<unsigned*>(ps + detail::sw128_offset(hB, row)) = detail::pack_bf16(p2, p3);
    }
    l_run = l_run * alA + sumA, l_runB = l_runB * alB + sumB;
    if (__any_sync(0xffffffffu, alA != 1.0f || alB != 1.0f)) {
#pragma unroll
      for (int i = 0; i < 128; i += 4) o[i] *= alA, o[i + 1] *= alA, o[i + 2] *= alB, o[i + 3] *= alB;
    }
    detail::fence_proxy_async();  // P's stores visible to the tensor cores
    __syncthreads();              // both halves of P are in

    // O[:, 256 wg ..] += P · C_lat[:, 256 wg ..] over the tile's 64 rows (16 a step).
    detail::wgmma_fence_operands(o);
    detail::wgmma_fence();
#pragma unroll
    for (int k = 0; k < kT / 16; ++k)
      detail::wgmma_m64n256k16_bt(o, detail::sw128_desc(p_addr + k * 32, 16, 1024),
                                  detail::sw128_desc(slot + 4 * wg * kBlkBytes + k * 16 * 128, kBlkBytes, 1024), 1);
    detail::wgmma_commit();
    detail::wgmma_wait<0>();
    detail::wgmma_fence_operands(o);
  }

  add_block_sums(l_run, l_runB, red + 2 * kHeads, wg, q4, hA, hB);

  store_output(a, o, wg, q4, hA, hB, nh, sh0, split, m_run, m_runB, l_run, l_runB);
}

constexpr int kConsumers = 256;  // the two warpgroups of the seesaw form

// ---- The seesaw form: the two warpgroups take turns at the tiles, so that one's softmax runs
// beside the other's MMAs (the schedule of FlashMLA's 2025 kernel, "seesaw", written here from its
// description and reordered so that each warpgroup meets the other only twice a pair).
//
// Tiles come in pairs (a = 2 j into slot 0, b = 2 j + 1 into slot 1). The output splits by
// columns as above (warpgroup w holds O[:, 256 w ..], 128 registers a thread), but the scores do
// not: warpgroup 0 computes all of S_a = Q K_a^T (m64n64k16 x 36: Q is read from shared memory
// once a tile, not twice), warpgroup 1 all of S_b. With m the running maximum, a pair is
//   wg 0: m_a = max(m, rowmax S_a); P_a = 2^(S_a - m_a) to shared memory;   [m_a, 2^(m - m_a), P_a]
//         O_L = O_L 2^(m - m_a) + P_a V_aL (P_a from registers)
//   wg 1: O_R = O_R 2^(m - m_a) + P_a V_aR, and meanwhile m_b = max(m_a, rowmax S_b),
//         P_b = 2^(S_b - m_b) to shared memory;                               [m_b, 2^(m_a - m_b), P_b]
//         O_R = O_R 2^(m_a - m_b) + P_b V_bR (P_b from registers); the scores S_b' of the next pair
//   wg 0: O_L = O_L 2^(m_a - m_b) + P_b V_bL; the scores S_a' of the next pair, whose first four
//         blocks go out before P_b V_bL has finished (128 x 4,096 x 128: 5-6% faster).
// The bracketed values cross at a named barrier (one side arrives, the other waits): two a pair.
// Sums follow their outputs; the two warpgroups' sums are added at the end.
// Copies come from a third warpgroup, the producer (one thread; its registers given to the two
// consumers by setmaxnreg: 240 a consumer thread, which the loop needs, against 168 if all 384
// threads shared them): the consumers only arrive on an "empty" barrier where they read half a
// slot for the last time, so a copy's issue and its page-table reads never hold an MMA. Each
// 64-column block of a tile has its own "full" barrier, so scores start on the first block that
// lands. Halves: blocks 0-3 of slot 0 free after P_a V_aL (warpgroup 0), 4-8 (V_aR, and P_a in the
// rope block, free once S_a is done) after P_a V_aR (warpgroup 1); blocks 4-8 of slot 1 after
// P_b V_bR (warpgroup 1), 0-3 after P_b V_bL (warpgroup 0), and warpgroup 1 scores a tile from
// block 4 on, so that the blocks copied last are read last. P_b has a buffer of its own. Copies
// carry an evict-first L2 hint: each line is read by the two blocks of one sequence at about the
// same time.
constexpr std::size_t kSeeSmem = 1024 + kQBytes + 2 * kTileBytes + kPBytes + 5 * kHeads * sizeof(float) + 22 * 8;
static_assert(kSeeSmem <= 232448, "the seesaw form's shared memory fits one block an SM");
constexpr int kSeeThreads = kConsumers + 128;  // the two consumer warpgroups and the producer's
constexpr int kBarScaleA = 2, kBarScaleB = 3, kBarWg = 4;  // 4, 5: one a warpgroup

__device__ __forceinline__ void named_arrive(int id) { asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory"); }

template <int N>
__device__ __forceinline__ void setmaxnreg_inc() { asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N)); }
template <int N>
__device__ __forceinline__ void setmaxnreg_dec() { asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N)); }

__global__ void __launch_bounds__(kSeeThreads, 1)
    mla_decode_seesaw_kernel(const __grid_constant__ CUtensorMap map, WgArgs wa) {
  const detail::DecodeArgs<__nv_bfloat16>& a = wa.d;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  unsigned char* sm = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  unsigned char* qs = sm;                                 // [9][64 heads][128 B]
  unsigned char* ks = sm + kQBytes;                       // [2][9][64 rows][128 B]
  unsigned char* pbs = ks + 2 * kTileBytes;               // P_b [64 heads][128 B]
  float* sm_m = reinterpret_cast<float*>(pbs + kPBytes);  // running maximum a head (log2)
  float* sm_sa = sm_m + kHeads;                           // this pair's rescale by tile a
  float* sm_sb = sm_sa + kHeads;                          // and by tile b
  float* sm_l = sm_sb + kHeads;                           // [2][64] the warpgroups' sums, at the end
  uint64_t* full = reinterpret_cast<uint64_t*>(sm_l + 2 * kHeads);  // [2 slots][9 blocks]
  uint64_t* empty = full + 18;  // [2 slots][blocks 0-3, 4-8]: read for the last time

  const int tid = threadIdx.x;
  const detail::DecodeBlock blk = detail::decode_block(a, kHeads);
  if (detail::empty_split(a, blk)) return;
  const int split = blk.split, nh = blk.nh, k_begin = blk.k_begin, k_end = blk.k_end;
  const int64_t sh0 = blk.sh0;
  const int pgs = a.page_size;
  const int n_tiles = (k_end - k_begin + kT - 1) / kT;
  const int32_t* table = a.pages + a.table_offset[blk.s];
  auto tile_pages = [&](int it) { return min(kT / pgs, (k_end - k_begin - it * kT + pgs - 1) / pgs); };
  auto tile_valid = [&](int it) { return min(kT, k_end - k_begin - it * kT); };
  auto read_ids = [&](int it, int(&ids)[4]) {
    const int n = tile_pages(it), p0 = (k_begin + it * kT) / pgs;
#pragma unroll
    for (int p = 0; p < 4; ++p) ids[p] = p < n ? table[p0 + p] : 0;
  };
  const uint64_t policy = detail::l2_evict_first();
  // Copies the 64-column blocks of tile it in `mask` into slot it & 1, each on its own barrier.
  auto issue = [&](int it, unsigned mask, const int(&ids)[4]) {
    const int slot = it & 1, n = tile_pages(it);
    unsigned char* dst = ks + slot * kTileBytes;
#pragma unroll
    for (int b = 0; b < kW / 64; ++b) {
      if (!((mask >> b) & 1u)) continue;
      uint64_t* bar = &full[slot * 9 + b];
      detail::mbar_arrive_expect(bar, static_cast<unsigned>(n * pgs * 128));
#pragma unroll
      for (int p = 0; p < 4; ++p) {
        if (p >= n) break;
        detail::tma_load_2d(dst + b * kBlkBytes + p * pgs * 128, &map, 64 * b, ids[p] * pgs, bar, policy);
      }
    }
  };
  if (tid == 0) {
    for (int i = 0; i < 18; ++i) detail::mbar_init(&full[i], 1);
    for (int i = 0; i < 4; ++i) detail::mbar_init(&empty[i], 4);  // lane 0 of each warp of a warpgroup
    detail::mbar_init_fence();
    for (int it = 0; it < 2 && it < n_tiles; ++it) {
      int ids[4];
      read_ids(it, ids);
      issue(it, 0x1FFu, ids);
    }
  }
  if (tid < kHeads) sm_m[tid] = -INFINITY;
  // All three warpgroups stage the queries (the producer's would otherwise idle at the barrier
  // below): two rounds of loads a thread instead of three, at the start of every block.
  stage_queries<kSeeThreads>(wa, qs, nh, sh0, tid);
  detail::fence_proxy_async();  // the queries' stores visible to the tensor cores
  __syncthreads();              // (and the barriers initialised)

  const int wg = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31, g = lane >> 2, q4 = lane & 3;
  if (wg == 2) {  // the producer: one thread refills each half slot once its last read is done
    setmaxnreg_dec<24>();
    if (tid != kConsumers) return;
    for (int j = 0; 2 * j + 2 < n_tiles; ++j) {
      const int ta = 2 * j + 2, tb = ta + 1;
      int ids_a[4], ids_b[4] = {0, 0, 0, 0};
      read_ids(ta, ids_a);
      if (tb < n_tiles) read_ids(tb, ids_b);
      const unsigned ph = j & 1;
      detail::mbar_wait(&empty[0], ph);
      issue(ta, 0x00Fu, ids_a);
      detail::mbar_wait(&empty[1], ph);
      issue(ta, 0x1F0u, ids_a);
      if (tb < n_tiles) {
        detail::mbar_wait(&empty[3], ph);
        issue(tb, 0x1F0u, ids_b);
        detail::mbar_wait(&empty[2], ph);
        issue(tb, 0x00Fu, ids_b);
      }
    }
    return;
  }
  setmaxnreg_inc<240>();
  const int hA = 16 * warp + g, hB = hA + 8;  // this thread's two heads (accumulator rows)
  const unsigned q_addr = detail::smem_addr(qs), k_addr = detail::smem_addr(ks);
  float l_run = 0.0f, l_runB = 0.0f;
  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.0f;
  // s[4 c + e]: (head hA, tile row 8 c + 2 q4 + e); s[4 c + 2 + e] the same for head hB.
  float s[32];
#pragma unroll
  for (int i = 0; i < 32; ++i) s[i] = 0.0f;
  unsigned pb[16];  // the same as bf16 pairs, k-step kk's A fragment in pb[4 kk .. 4 kk + 3]

  // The operands' wgmma descriptors, built once: each instruction's is one of these plus its
  // offset (detail::desc_add). Rebuilding them from addresses cost ~10 uniform instructions a
  // wgmma; the one add took 128 x 4,096 x 128 from 0.344-0.347 to 0.314-0.316 ms (same lease).
  const uint64_t dQ = detail::sw128_desc(q_addr, 16, 1024);  // K-major: Q, and the tiles read as K
  const uint64_t dK = detail::sw128_desc(k_addr, 16, 1024);
  const uint64_t dV = detail::sw128_desc(k_addr + 4 * wg * kBlkBytes, kBlkBytes, 1024);  // N-major: this warpgroup's half of V
  // S (+)= Q K^T over n blocks of the tile in `slot` from block b0 on (wrapping): a commit group a
  // block, each once its copy is in; `fresh`: the first overwrites S.
  auto scores = [&](int slot, unsigned parity, int b0, int n, bool fresh) {
#pragma unroll
    for (int i = 0; i < n; ++i) {
      const int b = (b0 + i) % 9;
      detail::mbar_wait(&full[slot * 9 + b], parity);
      detail::wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const unsigned off = b * kBlkBytes + kk * 32;
        detail::wgmma_m64n64k16(s, detail::desc_add(dQ, off), detail::desc_add(dK, slot * kTileBytes + off),
                                !fresh || i > 0 || kk > 0);
      }
      detail::wgmma_commit();
    }
  };
  // P = 2^(S - m) in s and as bf16 in pb; adds the rows' sums.
  auto exp_pack = [&](float mA, float mB, float& sumA, float& sumB) {
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      s[4 * c] = fast_exp2(s[4 * c] - mA), s[4 * c + 1] = fast_exp2(s[4 * c + 1] - mA);
      s[4 * c + 2] = fast_exp2(s[4 * c + 2] - mB), s[4 * c + 3] = fast_exp2(s[4 * c + 3] - mB);
      sumA += s[4 * c] + s[4 * c + 1], sumB += s[4 * c + 2] + s[4 * c + 3];
    }
#pragma unroll
    for (int i = 0; i < 16; ++i) pb[i] = detail::pack_bf16(s[2 * i], s[2 * i + 1]);
  };
  // P times (fA, fB) as bf16 into a tile's rope block, [64 heads][64 rows] swizzled (an A operand).
  auto store_p = [&](unsigned char* rope_p, float fA, float fB) {
#pragma unroll
    for (int c = 0; c < 8; ++c) {
      const int row = 8 * c + 2 * q4;
      *reinterpret_cast<unsigned*>(rope_p + detail::sw128_offset(hA, row)) = detail::pack_bf16(s[4 * c] * fA, s[4 * c + 1] * fA);
      *reinterpret_cast<unsigned*>(rope_p + detail::sw128_offset(hB, row)) = detail::pack_bf16(s[4 * c + 2] * fB, s[4 * c + 3] * fB);
    }
  };
  auto scale_o = [&](float fA, float fB) {
    if (__any_sync(0xffffffffu, fA != 1.0f || fB != 1.0f)) {
#pragma unroll
      for (int i = 0; i < 128; i += 4) o[i] *= fA, o[i + 1] *= fA, o[i + 2] *= fB, o[i + 3] *= fB;
    }
  };
  // Zeroes rows `valid` .. 63 of this warpgroup's half of V in a slot (the copy brings whole pages,
  // and 0 · stale bits could be NaN), for this warpgroup's tensor cores.
  auto zero_rows = [&](unsigned char* slot_p, int valid) {
    for (int e = tid & 127; e < (kT - valid) * 32; e += 128) {
      const int r = valid + (e >> 5), c = e & 31;
      *reinterpret_cast<uint4*>(slot_p + (4 * wg + (c >> 3)) * kBlkBytes + r * 128 + (c & 7) * 16) = make_uint4(0, 0, 0, 0);
    }
    detail::fence_proxy_async();
    named_sync(kBarWg + wg, 128);
  };
  // O[:, 256 w ..] += P V over the tile `slot_off` bytes into the ring, P from registers (pb) or
  // from shared memory (descriptor dp).
  auto pv_local = [&](unsigned slot_off) {
    detail::wgmma_fence_operands(o);
    detail::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      detail::wgmma_m64n256k16_rs_bt(o, *reinterpret_cast<const unsigned(*)[4]>(pb + 4 * kk),
                                     detail::desc_add(dV, slot_off + kk * 16 * 128));
    detail::wgmma_commit();
  };
  auto pv_shared = [&](unsigned slot_off, uint64_t dp) {
    detail::wgmma_fence_operands(o);
    detail::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      detail::wgmma_m64n256k16_bt(o, detail::desc_add(dp, kk * 32), detail::desc_add(dV, slot_off + kk * 16 * 128), 1);
    detail::wgmma_commit();
  };

  if (wg == 0 || n_tiles > 1) scores(wg, 0, 0, 9, true);
  detail::wgmma_wait<0>();
  detail::wgmma_fence_operands(s);

  const int n_pairs = (n_tiles + 1) / 2;
  unsigned char* const slot0 = ks;
  unsigned char* const slot1 = ks + kTileBytes;
  const uint64_t dPb = detail::sw128_desc(detail::smem_addr(pbs), 16, 1024);  // P_b, K-major
  const uint64_t dPa = detail::desc_add(dK, 8 * kBlkBytes);                    // P_a, in slot 0's rope block
  for (int j = 0; j < n_pairs; ++j) {
    const int ta = 2 * j, tb = ta + 1;
    const bool has_b = tb < n_tiles, has_a2 = ta + 2 < n_tiles, has_b2 = tb + 2 < n_tiles;
    const unsigned nxt = (j + 1) & 1;  // the parity of the next pair's copies
    // Half k of the slots (slot k / 2, blocks 0-3 or 4-8) is read for the last time: the producer
    // may copy the tile after next into it.
    auto release = [&](int k) {
      __syncwarp();
      if (lane == 0) detail::mbar_arrive(&empty[k]);
    };
    if (wg == 0) {
      const int va = tile_valid(ta);
      float mxA, mxB;
      masked_max(s, va, a.scale, q4, mxA, mxB);
      const float moA = sm_m[hA], moB = sm_m[hB];
      const float mA = fmaxf(moA, mxA), mB = fmaxf(moB, mxB);  // finite: tile a has a visible row
      const float saA = fast_exp2(moA - mA), saB = fast_exp2(moB - mB);
      __syncwarp();
      if (q4 == 0) sm_m[hA] = mA, sm_m[hB] = mB, sm_sa[hA] = saA, sm_sa[hB] = saB;
      float sumA = 0.0f, sumB = 0.0f;
      exp_pack(mA, mB, sumA, sumB);
      store_p(slot0 + 8 * kBlkBytes, 1.0f, 1.0f);  // P_a into its tile's rope block
      detail::fence_proxy_async();
      named_arrive(kBarScaleA);
      l_run = l_run * saA + sumA, l_runB = l_runB * saB + sumB;
      scale_o(saA, saB);
      if (va < kT) zero_rows(slot0, va);
      pv_local(0);
      detail::wgmma_wait<0>();
      detail::wgmma_fence_operands(o);
      detail::wgmma_fence_operands(pb);
      if (has_a2) release(0);  // V_aL read: blocks 0-3 of slot 0 free
      named_sync(kBarScaleB, 256);
      if (has_b) {
        const float sbA = sm_sb[hA], sbB = sm_sb[hB];
        scale_o(sbA, sbB);
        l_run *= sbA, l_runB *= sbB;
        const int vb = tile_valid(tb);
        if (vb < kT) zero_rows(slot1, vb);
        pv_shared(kTileBytes, dPb);
        if (has_a2) {
          // The next tile's first four blocks of scores go out behind P_b V_bL (FlashMLA's order;
          // their copies went out once P_a V_aL was done), so the tensor pipe does not drain
          // while this warpgroup waits for P_b V_bL to release its half of slot 1.
          scores(0, nxt, 0, 4, true);
          detail::wgmma_wait<4>();
          detail::wgmma_fence_operands(o);
          if (has_b2) release(2);  // V_bL and P_b read
          scores(0, nxt, 4, 5, false);
        } else {
          detail::wgmma_wait<0>();
          detail::wgmma_fence_operands(o);
        }
      }  // (has_a2 implies has_b)
      detail::wgmma_wait<0>();  // (inside each branch: wgmma groups open across the join serialise)
      detail::wgmma_fence_operands(s);
    } else {
      named_sync(kBarScaleA, 256);
      const float maA = sm_m[hA], maB = sm_m[hB], saA = sm_sa[hA], saB = sm_sa[hB];
      scale_o(saA, saB);
      l_run *= saA, l_runB *= saB;
      const int va = tile_valid(ta);
      if (va < kT) zero_rows(slot0, va);
      pv_shared(0, dPa);  // O_R += P_a V_aR beside this warpgroup's softmax
      // (Without a tile b every row is masked: m_b = m_a, P_b = 0. Not skipped: a branch here,
      // with P_a V_aR in flight, makes ptxas serialise the wgmmas.)
      float mxA, mxB, sumA = 0.0f, sumB = 0.0f;
      masked_max(s, tile_valid(tb), a.scale, q4, mxA, mxB);
      const float mA = fmaxf(maA, mxA), mB = fmaxf(maB, mxB);
      exp_pack(mA, mB, sumA, sumB);
      if (has_b) {
        store_p(pbs, 1.0f, 1.0f);
        detail::fence_proxy_async();
      }
      const float sbA = fast_exp2(maA - mA), sbB = fast_exp2(maB - mB);
      __syncwarp();
      if (q4 == 0) sm_m[hA] = mA, sm_m[hB] = mB, sm_sb[hA] = sbA, sm_sb[hB] = sbB;
      named_arrive(kBarScaleB);
      detail::wgmma_wait<0>();
      detail::wgmma_fence_operands(o);
      if (has_a2) release(1);  // V_aR and P_a read: blocks 4-8 of slot 0 free
      scale_o(sbA, sbB);
      l_run = l_run * sbA + sumA, l_runB = l_runB * sbB + sumB;
      if (has_b) {
        const int vb = tile_valid(tb);
        if (vb < kT) zero_rows(slot1, vb);
        pv_local(kTileBytes);
        detail::wgmma_wait<0>();
        detail::wgmma_fence_operands(o);
        detail::wgmma_fence_operands(pb);
        if (has_b2) release(3);  // V_bR read (and K_b's rope long ago)
      }
      if (has_b2) scores(1, nxt, 4, 9, true);  // blocks 4-8 first: warpgroup 0 copies 0-3 later
      detail::wgmma_wait<0>();
      detail::wgmma_fence_operands(s);
    }
  }

  add_block_sums(l_run, l_runB, sm_l, wg, q4, hA, hB);
  store_output(a, o, wg, q4, hA, hB, nh, sh0, split, sm_m[hA], sm_m[hB], l_run, l_runB);
}

detail::DecodePlan plan(int64_t n_seqs, int64_t n_heads, int64_t max_ctx_len) {
  return detail::plan_decode(n_seqs, (n_heads + kHeads - 1) / kHeads, max_ctx_len, kT, 1);
}

// Workspace floats of a plan: the splits' partial outputs and (max, sum) pairs (0: one split).
int64_t split_floats(int64_t n_seqs, int64_t n_heads, const detail::DecodePlan& p) {
  return p.n_splits > 1 ? n_seqs * n_heads * p.n_splits * (kL + 2) : 0;
}

template <class Kernel>
bool set_smem(Kernel k, std::size_t bytes) {
  return cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)) == cudaSuccess;
}

// The tensor map of a paged cache at `base` (`rows` rows of kW bf16; 0: through the end of its
// allocation, which the driver is asked for) read a page by 64 columns at a time; false where TMA
// cannot take it (page sizes other than 16, 32 or 64, no encoder). The last map is kept: the
// cache's base, page size and extent key it.
bool cache_map(CUtensorMap* m, const uint16_t* base, int64_t page_size, int64_t rows) {
  if (page_size != 16 && page_size != 32 && page_size != 64) return false;
  if (rows <= 0) rows = detail::allocation_bytes_after(base) / (kW * 2);
  if (rows < page_size) return false;
  struct Kept {
    const void* base = nullptr;
    int64_t page_size = 0, rows = 0;
    CUtensorMap map;
  };
  static thread_local Kept kept;
  if (kept.base != base || kept.page_size != page_size || kept.rows != rows) {
    kept.base = nullptr;
    if (!detail::encode_bf16_2d(&kept.map, base, kW, rows, kW, 64, static_cast<int>(page_size))) return false;
    kept.base = base, kept.page_size = page_size, kept.rows = rows;
  }
  *m = kept.map;
  return true;
}

}  // namespace

bool mla_decode_wgmma_supported(int64_t n_heads, int64_t kv_lora, int64_t rope_dim) {
  static const bool sm90 = detail::device_attribute(cudaDevAttrComputeCapabilityMajor, 0) == 9;
  return sm90 && n_heads > 0 && kv_lora == kL && rope_dim == kR;
}

int64_t mla_decode_wgmma_workspace_floats(int64_t n_seqs, int64_t n_heads, int64_t max_ctx_len) {
  if (n_seqs <= 0 || n_heads <= 0) return 0;
  return split_floats(n_seqs, n_heads, plan(n_seqs, n_heads, max_ctx_len));
}

void mla_decode_wgmma(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads,
                      const uint16_t* base, const int32_t* pages, const int32_t* table_offset,
                      const int32_t* ctx_len, int64_t page_size, int64_t max_ctx_len, float scale,
                      float* out, float* workspace, int64_t workspace_floats, cudaStream_t stream,
                      MlaWgmmaForm form, int64_t cache_rows) {
  if (n_seqs <= 0 || n_heads <= 0) return;
  detail::DecodePlan p = plan(n_seqs, n_heads, max_ctx_len);
  if (p.n_splits > 1 && (!workspace || split_floats(n_seqs, n_heads, p) > workspace_floats)) {
    p.n_splits = 1;
    p.split_len = static_cast<int>(max_ctx_len < 1 ? 1 : max_ctx_len);
  }
  WgArgs wa;
  detail::DecodeArgs<__nv_bfloat16>& a = wa.d;
  a.q_lat = q_lat, a.q_pe = q_pe, a.base = reinterpret_cast<const __nv_bfloat16*>(base);
  a.pages = pages, a.table_offset = table_offset, a.ctx_len = ctx_len, a.out = out;
  a.part = p.n_splits > 1 ? workspace : nullptr;
  a.n_seqs = static_cast<int>(n_seqs), a.n_heads = static_cast<int>(n_heads);
  a.n_hg = static_cast<int>((n_heads + kHeads - 1) / kHeads);
  a.page_size = static_cast<int>(page_size), a.L = kL, a.R = kR, a.W = kW, a.Wpad = kW;
  a.n_splits = p.n_splits, a.split_len = p.split_len;
  a.scale = scale * kLog2e;
  wa.vec_q = reinterpret_cast<std::uintptr_t>(q_lat) % 16 == 0 && reinterpret_cast<std::uintptr_t>(q_pe) % 16 == 0;
  const auto blocks = static_cast<unsigned>(n_seqs * a.n_hg * p.n_splits);
  CUtensorMap map;
  if (form == MlaWgmmaForm::seesaw && cache_map(&map, base, page_size, cache_rows)) {
    static const bool attr = set_smem(mla_decode_seesaw_kernel, kSeeSmem);
    (void)attr;
    mla_decode_seesaw_kernel<<<blocks, kSeeThreads, kSeeSmem, stream>>>(map, wa);
  } else {
    static const bool attr = set_smem(mla_decode_wgmma_kernel, kSmem);
    (void)attr;
    mla_decode_wgmma_kernel<<<blocks, kThreads, kSmem, stream>>>(wa);
  }
  if (p.n_splits > 1) detail::merge_decode_splits(workspace, n_seqs * n_heads, p.n_splits, kL, out, stream);
}

}  // namespace dpa::kernels
