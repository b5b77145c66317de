// Batched absorbed-MLA decode over a bf16 paged latent cache on tensor cores (mma.sync
// m16n8k16, bf16 inputs, fp32 accumulation). A block takes (sequence, 16-head group, context
// split) with 4 warps: the group's queries (rounded to bf16) sit in shared memory, tiles of 32
// cache rows stream in with cp.async (double buffered), warp w computes the scores of rows
// 8w .. 8w+7 (S = Q·K^T over latent + rope), the online softmax runs in fp32 (exp2 domain), and
// warp w accumulates P·C_lat for its quarter of the latent channels. Shared-memory rows are
// padded by 16 bytes so that ldmatrix reads of 8 rows meet 8 distinct bank groups. Needs
// kT == kThreads / 4 (one tile row per 4 threads when loading).
#include "kernels/bulk_copy.cuh"
#include "kernels/common.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/mla_decode_plan.cuh"
#include "kernels/mma.cuh"

namespace dpa::kernels {
namespace {

constexpr int kHG = 16;      // heads per block (the mma M)
constexpr int kT = 32;       // cache rows per tile
constexpr int kWarps = 4;    // warp w: score rows 8w .. 8w+7, latent channels [w L/4, (w+1) L/4)
constexpr int kThreads = 32 * kWarps;
static_assert(kT * 4 == kThreads, "a tile row per 4 threads");
constexpr int kPs = kT + 8;  // P row stride (bf16): 80 bytes, ldmatrix conflict-free
constexpr int kSs = kT + 4;  // S row stride (floats)
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLog2e = 1.4426950408889634f;

// 2^x on the special-function unit, denormal results flushed to zero (probabilities that small
// are zero in bf16 P anyway); 2^-inf = 0.
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

using Args = detail::DecodeArgs<__nv_bfloat16>;  // scale: softmax scale times log2(e)
using detail::bulk_load;
using detail::cp_async16;
using detail::fence_proxy_async;
using detail::mbar_arrive_expect;
using detail::mbar_init;
using detail::mbar_init_fence;
using detail::mbar_wait;
using detail::cp_async_commit;
using detail::cp_async_wait;

using detail::ldsm_x2;
using detail::ldsm_x4;
using detail::ldsm_x4_trans;
using detail::mma16816;

// Pipeline depths: 2 stages and two resident blocks per SM, or more stages and one block.
constexpr int kStagesDefault = 2;
int blocks_per_sm(int stages) { return stages <= 2 ? 2 : 1; }

std::size_t smem_bytes(int Ws, int stages) {
  return static_cast<std::size_t>(kHG * Ws + stages * kT * Ws + kHG * kPs) * sizeof(__nv_bfloat16) +
         static_cast<std::size_t>(kHG * kSs + 3 * kHG) * sizeof(float);
}

// NT: 8-channel tiles of the latent per warp (L = 32 NT); ST: tiles in the cp.async ring (ST - 1
// loads ahead of the tile being computed, ST while waiting for it).
template <int NT, int ST>
__global__ void __launch_bounds__(kThreads, ST <= 2 ? 2 : 1) mla_decode_bf16_kernel(Args a) {
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int Ws = a.Wpad;
  auto* qs = reinterpret_cast<__nv_bfloat16*>(smem_raw);  // [kHG][Ws] queries [q_lat, q_pe]
  __nv_bfloat16* kb = qs + kHG * Ws;                       // [ST][kT][Ws] cache tiles
  __nv_bfloat16* P = kb + ST * kT * Ws;                    // [kHG][kPs] probabilities
  float* S = reinterpret_cast<float*>(P + kHG * kPs);      // [kHG][kSs] scores (log2 domain)
  float* alpha_s = S + kHG * kSs;                          // [kHG]
  float* l_s = alpha_s + kHG;
  float* m_s = l_s + kHG;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const detail::DecodeBlock blk = detail::decode_block(a, kHG);
  if (detail::empty_split(a, blk)) return;
  const int split = blk.split, s = blk.s, nh = blk.nh, k_begin = blk.k_begin, k_end = blk.k_end;
  const int L = a.L, W = a.W;
  const int64_t sh0 = blk.sh0;

  // Queries as bf16, zero for heads past n_heads.
  for (int i = tid; i < kHG * W; i += kThreads) {
    const int h = i / W, d = i - h * W;
    float v = 0.0f;
    if (h < nh) v = d < L ? a.q_lat[(sh0 + h) * L + d] : a.q_pe[(sh0 + h) * a.R + (d - L)];
    qs[h * Ws + d] = __float2bfloat16_rn(v);
  }

  // Tile loads: thread t copies row t / 4 of a tile, 16-byte chunks t % 4, t % 4 + 4, ... (a
  // quarter-warp reads 64 contiguous bytes of a row). Its row's page id for the next tile is
  // read one tile ahead, so the table lookup's latency hides behind a tile of compute.
  const int32_t* table = a.pages + a.table_offset[s];
  const int chunks = W / 8;  // 16-byte chunks per cache row
  const int my_row = tid >> 2, my_q = tid & 3;
  const int ps = a.page_size;
  auto page_of = [&](int t0) { return t0 + my_row < k_end ? table[(t0 + my_row) / ps] : 0; };
  auto load_tile = [&](int t0, int page, __nv_bfloat16* dst) {
    const int pos = t0 + my_row;
    const bool ok = pos < k_end;
    const __nv_bfloat16* src = ok ? a.base + (static_cast<int64_t>(page) * ps + (pos - pos / ps * ps)) * W : a.base;
    __nv_bfloat16* d = dst + my_row * Ws;
    for (int c = my_q; c < chunks; c += 4) cp_async16(d + 8 * c, ok ? src + 8 * c : src, ok);
    cp_async_commit();
  };

  const int n_tiles = (k_end - k_begin + kT - 1) / kT;
#pragma unroll
  for (int i = 0; i < ST - 1; ++i) {  // one commit group per tile, empty past the last
    if (i < n_tiles) load_tile(k_begin + i * kT, page_of(k_begin + i * kT), kb + i * kT * Ws);
    else cp_async_commit();
  }
  int next_page = page_of(k_begin + (ST - 1) * kT);

  // Fragment addresses (ldmatrix: lane l gives row l % 8 of matrix l / 8).
  const int r16 = (lane & 7) + 8 * ((lane >> 3) & 1);  // row within a 16-row A / trans-B tile
  const int c8 = 8 * (lane >> 4);                       // column half of an x4 load
  const __nv_bfloat16* qa = qs + r16 * Ws + c8;
  const __nv_bfloat16* pa = P + r16 * kPs + c8;
  const int KS = W / 16;
  const int ch0 = warp * NT * 8;  // this warp's first latent channel
  // Softmax roles: head sm_h, rows 4 sm_q .. 4 sm_q + 3 (8 threads per head).
  const int sm_h = tid >> 3, sm_q = tid & 7;
  float m_run = -INFINITY, l_run = 0.0f;
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

  for (int it = 0; it < n_tiles; ++it) {
    const int t0 = k_begin + it * kT;
    const __nv_bfloat16* kc = kb + (it % ST) * kT * Ws;
    __syncthreads();  // tile it - 1's buffer, S and P are free
    const int nx = it + ST - 1;  // the tile loaded now, into tile it - 1's buffer
    if (nx < n_tiles) {
      load_tile(k_begin + nx * kT, next_page, kb + (nx % ST) * kT * Ws);
      next_page = page_of(k_begin + (nx + 1) * kT);  // used by the next iteration's load
    } else {
      cp_async_commit();
    }
    cp_async_wait<ST - 1>();  // groups 0 .. it done
    __syncthreads();  // tile it is in (and, on the first tile, the queries)

    // Scores of rows 8 warp .. 8 warp + 7: two accumulators to halve the dependency chain.
    {
      float c0[4] = {0.0f, 0.0f, 0.0f, 0.0f}, c1[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const __nv_bfloat16* kp = kc + (8 * warp + (lane & 7)) * Ws + 8 * ((lane >> 3) & 1);
      int ks = 0;
      for (; ks + 1 < KS; ks += 2) {
        unsigned qa0[4], qa1[4], b0, b1, b2, b3;
        ldsm_x4(qa0, qa + 16 * ks);
        ldsm_x2(b0, b1, kp + 16 * ks);
        ldsm_x4(qa1, qa + 16 * ks + 16);
        ldsm_x2(b2, b3, kp + 16 * ks + 16);
        mma16816(c0, qa0, b0, b1);
        mma16816(c1, qa1, b2, b3);
      }
      if (ks < KS) {
        unsigned qa0[4], b0, b1;
        ldsm_x4(qa0, qa + 16 * ks);
        ldsm_x2(b0, b1, kp + 16 * ks);
        mma16816(c0, qa0, b0, b1);
      }
      const int h = lane >> 2, t = 8 * warp + 2 * (lane & 3);
      const bool v0 = t0 + t < k_end, v1 = t0 + t + 1 < k_end;
      S[h * kSs + t] = v0 ? (c0[0] + c1[0]) * a.scale : -INFINITY;
      S[h * kSs + t + 1] = v1 ? (c0[1] + c1[1]) * a.scale : -INFINITY;
      S[(h + 8) * kSs + t] = v0 ? (c0[2] + c1[2]) * a.scale : -INFINITY;
      S[(h + 8) * kSs + t + 1] = v1 ? (c0[3] + c1[3]) * a.scale : -INFINITY;
    }
    __syncthreads();

    // Online softmax in the exp2 domain; a head's 32 rows are 8 consecutive lanes.
    {
      const float4 sv = *reinterpret_cast<const float4*>(S + sm_h * kSs + 4 * sm_q);
      float mx = fmaxf(fmaxf(sv.x, sv.y), fmaxf(sv.z, sv.w));
#pragma unroll
      for (int o = 4; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m_run, mx);  // finite: the tile has a visible row
      const float p0 = exp2f(sv.x - m_new), p1 = exp2f(sv.y - m_new), p2 = exp2f(sv.z - m_new),
                  p3 = exp2f(sv.w - m_new);
      float ps = (p0 + p1) + (p2 + p3);
#pragma unroll
      for (int o = 4; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
      const float al = exp2f(m_run - m_new);
      l_run = l_run * al + ps;
      m_run = m_new;
      __nv_bfloat162* pp = reinterpret_cast<__nv_bfloat162*>(P + sm_h * kPs + 4 * sm_q);
      pp[0] = __floats2bfloat162_rn(p0, p1);
      pp[1] = __floats2bfloat162_rn(p2, p3);
      if (sm_q == 0) alpha_s[sm_h] = al;
    }
    __syncthreads();

    // acc = acc * alpha + P · C_lat over this warp's channels.
    {
      const float al0 = alpha_s[lane >> 2], al1 = alpha_s[(lane >> 2) + 8];
#pragma unroll
      for (int j = 0; j < NT; ++j) acc[j][0] *= al0, acc[j][1] *= al0, acc[j][2] *= al1, acc[j][3] *= al1;
#pragma unroll
      for (int kk = 0; kk < kT / 16; ++kk) {
        unsigned pf[4];
        ldsm_x4(pf, pa + 16 * kk);
        const __nv_bfloat16* vp = kc + (16 * kk + r16) * Ws + ch0 + c8;
#pragma unroll
        for (int j = 0; j < NT; j += 2) {
          unsigned b[4];
          ldsm_x4_trans(b, vp + 8 * j);
          mma16816(acc[j], pf, b[0], b[1]);
          mma16816(acc[j + 1], pf, b[2], b[3]);
        }
      }
    }
  }
  if (sm_q == 0) l_s[sm_h] = l_run, m_s[sm_h] = m_run;
  __syncthreads();

  const int hA = lane >> 2, hB = hA + 8;
  const int cq = 2 * (lane & 3);
  if (a.part) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int c = ch0 + 8 * j + cq;
      if (hA < nh)
        *reinterpret_cast<float2*>(a.part + ((sh0 + hA) * a.n_splits + split) * L + c) = make_float2(acc[j][0], acc[j][1]);
      if (hB < nh)
        *reinterpret_cast<float2*>(a.part + ((sh0 + hB) * a.n_splits + split) * L + c) = make_float2(acc[j][2], acc[j][3]);
    }
    if (tid < nh) {
      float* ml = detail::split_max_sum(a, sh0 + tid, split);
      ml[0] = m_s[tid] * kLn2, ml[1] = l_s[tid];  // back to the natural-log domain of the merge
    }
  } else {
    const float lA = l_s[hA], lB = l_s[hB];
    const float invA = lA > 0.0f ? 1.0f / lA : 0.0f, invB = lB > 0.0f ? 1.0f / lB : 0.0f;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int c = ch0 + 8 * j + cq;
      if (hA < nh) {
        float* o = a.out + (sh0 + hA) * L + c;  // the caller's pointer: no alignment assumed
        o[0] = acc[j][0] * invA, o[1] = acc[j][1] * invA;
      }
      if (hB < nh) {
        float* o = a.out + (sh0 + hB) * L + c;
        o[0] = acc[j][2] * invB, o[1] = acc[j][3] * invB;
      }
    }
  }
}


// ---- The k-split kernel (layouts w4t32, w8t32, w8t64): NW warps, tiles of T cache rows.
// Scores: warp w takes a quarter of the channels (k-steps [kq KQ, (kq + 1) KQ), kq = w % 4)
// for rows [rh T / RS, (rh + 1) T / RS) of the tile (rh = w / 4, RS = NW / 4), with its
// quarter of the queries held in registers for the whole block (no query re-reads per tile);
// the four partial score tiles meet in shared memory. Then every warp sums them for the
// positions of its own P fragments, runs the online softmax for heads g, g + 8 in registers
// (redundantly across warps: identical results) and accumulates P·C_lat for its L / NW
// channels. Two block barriers per tile besides the one that frees the ring slot. BULK: the tile
// comes in by one bulk copy (TMA) per row, T / NW rows issued by each warp, completing on a
// shared-memory barrier that every thread waits on (no cp.async per thread, one block barrier
// less).
template <int NW, int T>
struct Layout {
  static constexpr int kThreads = 32 * NW;
  static constexpr int kTpr = kThreads / T;    // threads per tile row when loading
  static constexpr int kRs = NW / 4;           // row groups of the score phase
  static constexpr int kNts = T / 8 / kRs;     // 8-row score tiles per warp
  static constexpr int kSs = T + 8;            // partial-score row stride (floats), 8 mod 32
  static_assert(NW % 4 == 0 && T % 16 == 0 && kNts % 2 == 0 && kThreads % T == 0, "layout");
};

template <int NW, int T>
std::size_t ksplit_smem_bytes(int Ws, int stages) {
  return static_cast<std::size_t>(stages) * T * Ws * sizeof(__nv_bfloat16) +
         static_cast<std::size_t>(4 * kHG * Layout<NW, T>::kSs) * sizeof(float) +
         static_cast<std::size_t>(stages) * sizeof(uint64_t);
}

// NT: 8-channel tiles of the latent per warp in P·V (L = 8 NW NT); KQ: k-steps of 16 channels
// per warp in the scores (W = 64 KQ); ST: tiles in the ring; MB: resident blocks per SM.
template <int NW, int T, int NT, int KQ, int ST, int MB, bool BULK>
__global__ void __launch_bounds__(32 * NW, MB) mla_decode_ksplit_kernel(Args a) {
  static_assert(!BULK || (T % NW == 0 && T / NW <= 32), "bulk loads: rows per warp");
  using Lay = Layout<NW, T>;
  constexpr int kThr = Lay::kThreads, kSsp = Lay::kSs;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  constexpr int W = 64 * KQ, Ws = W + 8;  // Ws == padded_row(W) == a.Wpad
  auto* kb = reinterpret_cast<__nv_bfloat16*>(smem_raw);    // [ST][T][Ws] cache tiles
  float* Sp = reinterpret_cast<float*>(kb + ST * T * Ws);  // [4][kHG][kSsp] partial scores
  auto* bars = reinterpret_cast<uint64_t*>(Sp + 4 * kHG * kSsp);  // [ST] (BULK) tile arrived

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const detail::DecodeBlock blk = detail::decode_block(a, kHG);
  if (detail::empty_split(a, blk)) return;
  const int split = blk.split, s = blk.s, nh = blk.nh, k_begin = blk.k_begin, k_end = blk.k_end;
  const int L = a.L;
  const int64_t sh0 = blk.sh0;

  // Queries as bf16 (zero past n_heads) in the last ring slot, which the first load into it
  // (issued after the loop's first barrier) overwrites.
  __nv_bfloat16* qs = kb + (ST - 1) * T * Ws;
  for (int h = 0; h < kHG; ++h)
    for (int d = tid; d < W; d += kThr) {
      float v = 0.0f;
      if (h < nh) v = d < L ? a.q_lat[(sh0 + h) * L + d] : a.q_pe[(sh0 + h) * a.R + (d - L)];
      qs[h * Ws + d] = __float2bfloat16_rn(v);
    }

  const int32_t* table = a.pages + a.table_offset[s];
  constexpr int chunks = W / 8;
  const int my_row = tid / Lay::kTpr, my_q = tid % Lay::kTpr;
  const int ps = a.page_size;
  // The row this thread loads: cp.async, row tid / kTpr; BULK, lanes below kRpw of each warp.
  constexpr int kRpw = T / NW;
  const bool ld_lane = !BULK || lane < kRpw;
  const int ld_row = BULK ? warp * kRpw + lane : my_row;
  auto page_of = [&](int t0) { return ld_lane && t0 + ld_row < k_end ? table[(t0 + ld_row) / ps] : 0; };
  auto load_tile = [&](int t0, int page, int slot) {
    const int pos = t0 + ld_row;
    const bool ok = pos < k_end;
    const __nv_bfloat16* src = ok ? a.base + (static_cast<int64_t>(page) * ps + (pos - pos / ps * ps)) * W : a.base;
    __nv_bfloat16* d = kb + (slot * T + ld_row) * Ws;
    if constexpr (BULK) {
      uint64_t* bar = bars + slot;
      // The one arrival of the phase; copies of other warps may count their bytes off before it.
      if (tid == 0) mbar_arrive_expect(bar, static_cast<unsigned>(min(T, k_end - t0) * W * 2));
      if (lane < kRpw) {
        fence_proxy_async();  // the slot's earlier reads and writes come first
        if (ok) {
          bulk_load(d, src, static_cast<unsigned>(W * 2), bar);
        } else {  // past the context: zeros (P is 0 there, and 0 * stale bits could be NaN)
          for (int c = 0; c < chunks; ++c) reinterpret_cast<uint4*>(d)[c] = make_uint4(0u, 0u, 0u, 0u);
        }
      }
    } else {
#pragma unroll
      for (int c = my_q; c < chunks; c += Lay::kTpr) cp_async16(d + 8 * c, ok ? src + 8 * c : src, ok);
      cp_async_commit();
    }
  };
  const int n_tiles = (k_end - k_begin + T - 1) / T;
  if constexpr (BULK) {
    if (tid == 0) {
      for (int i = 0; i < ST; ++i) mbar_init(bars + i, 1);
      mbar_init_fence();
    }
    __syncthreads();  // the barriers are set up before any copy completes on them
  }
#pragma unroll
  for (int i = 0; i < ST - 1; ++i) {
    if (i < n_tiles) load_tile(k_begin + i * T, page_of(k_begin + i * T), i);
    else if (!BULK) cp_async_commit();
  }
  int next_page = page_of(k_begin + (ST - 1) * T);

  // This warp's quarter of the queries' k-steps, as A fragments.
  const int kq = warp & 3, rh = warp >> 2;
  const int ks0 = kq * KQ;
  const int r16 = (lane & 7) + 8 * ((lane >> 3) & 1), c8 = 8 * (lane >> 4);
  __syncthreads();  // the queries are in
  unsigned qf[KQ][4];
#pragma unroll
  for (int i = 0; i < KQ; ++i) ldsm_x4(qf[i], qs + r16 * Ws + c8 + 16 * (ks0 + i));

  const int g = lane >> 2, q4 = lane & 3;
  const int row0 = rh * (T / Lay::kRs);  // first tile row of this warp's scores
  const int ch0 = warp * NT * 8;         // first latent channel of this warp's P·V
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};  // heads g, g + 8
  float acc[NT][4];
#pragma unroll
  for (int j = 0; j < NT; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.0f;

  for (int it = 0; it < n_tiles; ++it) {
    const int t0 = k_begin + it * T;
    const __nv_bfloat16* kc = kb + (it % ST) * T * Ws;
    __syncthreads();  // every warp is done with tile it - 1 (its slot, Sp) and the queries
    const int nx = it + ST - 1;
    if (nx < n_tiles) {
      load_tile(k_begin + nx * T, next_page, nx % ST);
      next_page = page_of(k_begin + (nx + 1) * T);
    } else if (!BULK) {
      cp_async_commit();
    }
    if constexpr (BULK) {
      mbar_wait(bars + it % ST, static_cast<unsigned>((it / ST) & 1));  // tile it is in
    } else {
      cp_async_wait<ST - 1>();
      __syncthreads();  // tile it is in
    }

    // Partial scores: heads x rows [row0, row0 + 8 kNts) over this warp's k-steps.
    {
      float c[Lay::kNts][4];
#pragma unroll
      for (int j = 0; j < Lay::kNts; ++j) c[j][0] = c[j][1] = c[j][2] = c[j][3] = 0.0f;
      const __nv_bfloat16* kp = kc + (row0 + (lane & 7) + 8 * (lane >> 4)) * Ws + 8 * ((lane >> 3) & 1) + 16 * ks0;
#pragma unroll
      for (int i = 0; i < KQ; ++i) {
#pragma unroll
        for (int j = 0; j < Lay::kNts; j += 2) {
          unsigned b[4];
          ldsm_x4(b, kp + j * 8 * Ws + 16 * i);
          mma16816(c[j], qf[i], b[0], b[1]);
          mma16816(c[j + 1], qf[i], b[2], b[3]);
        }
      }
      float* sp = Sp + kq * kHG * kSsp;
#pragma unroll
      for (int j = 0; j < Lay::kNts; ++j) {
        const int n = row0 + 8 * j + 2 * q4;
        *reinterpret_cast<float2*>(sp + g * kSsp + n) = make_float2(c[j][0], c[j][1]);
        *reinterpret_cast<float2*>(sp + (g + 8) * kSsp + n) = make_float2(c[j][2], c[j][3]);
      }
    }
    __syncthreads();  // the partial scores are in

    // Softmax of heads g, g + 8 at the positions of this lane's P fragments: rows
    // 16 kk + 8 pair + 2 q4 (+1); a head's rows are spread over the 4 lanes of a quad.
    unsigned pa[T / 16][4];
    {
      float sv[T / 16][2][4];
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int kk = 0; kk < T / 16; ++kk)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
          for (int pr = 0; pr < 2; ++pr) {
            const int n = 16 * kk + 8 * pr + 2 * q4;
            const float* sp = Sp + (g + 8 * hh) * kSsp + n;
            float2 v = *reinterpret_cast<const float2*>(sp);
#pragma unroll
            for (int k = 1; k < 4; ++k) {
              const float2 u = *reinterpret_cast<const float2*>(sp + k * kHG * kSsp);
              v.x += u.x, v.y += u.y;
            }
            const float x0 = t0 + n < k_end ? v.x * a.scale : -INFINITY;
            const float x1 = t0 + n + 1 < k_end ? v.y * a.scale : -INFINITY;
            sv[kk][hh][2 * pr] = x0, sv[kk][hh][2 * pr + 1] = x1;
            mx[hh] = fmaxf(mx[hh], fmaxf(x0, x1));
          }
      float alpha[2], m_new[2], lsum[2] = {0.0f, 0.0f};
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(0xffffffffu, mx[hh], 1));
        mx[hh] = fmaxf(mx[hh], __shfl_xor_sync(0xffffffffu, mx[hh], 2));
        m_new[hh] = fmaxf(m_run[hh], mx[hh]);  // finite: the tile has a visible row
        alpha[hh] = fast_exp2(m_run[hh] - m_new[hh]);
        m_run[hh] = m_new[hh];
      }
#pragma unroll
      for (int kk = 0; kk < T / 16; ++kk)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh)
#pragma unroll
          for (int pr = 0; pr < 2; ++pr) {
            const float p0 = fast_exp2(sv[kk][hh][2 * pr] - m_new[hh]);
            const float p1 = fast_exp2(sv[kk][hh][2 * pr + 1] - m_new[hh]);
            lsum[hh] += p0 + p1;
            pa[kk][hh + 2 * pr] = detail::pack_bf16(p0, p1);  // A: (g, k), (g+8, k), (g, k+8), (g+8, k+8)
          }
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) l_run[hh] = l_run[hh] * alpha[hh] + lsum[hh];
      // Once the running maxima settle, tiles rarely raise them: skip the rescale then.
      if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
        for (int j = 0; j < NT; ++j)
          acc[j][0] *= alpha[0], acc[j][1] *= alpha[0], acc[j][2] *= alpha[1], acc[j][3] *= alpha[1];
      }
    }

    // acc += P · C_lat over this warp's channels.
#pragma unroll
    for (int kk = 0; kk < T / 16; ++kk) {
      const __nv_bfloat16* vp = kc + (16 * kk + r16) * Ws + ch0 + c8;
#pragma unroll
      for (int j = 0; j < NT; j += 2) {
        unsigned b[4];
        ldsm_x4_trans(b, vp + 8 * j);
        mma16816(acc[j], pa[kk], b[0], b[1]);
        mma16816(acc[j + 1], pa[kk], b[2], b[3]);
      }
    }
  }

  // A lane's sums cover its quad's share of the rows: add the quad's four.
#pragma unroll
  for (int hh = 0; hh < 2; ++hh) {
    l_run[hh] += __shfl_xor_sync(0xffffffffu, l_run[hh], 1);
    l_run[hh] += __shfl_xor_sync(0xffffffffu, l_run[hh], 2);
  }
  const int hA = g, hB = g + 8, cq = 2 * q4;
  if (a.part) {
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int c = ch0 + 8 * j + cq;
      if (hA < nh)
        *reinterpret_cast<float2*>(a.part + ((sh0 + hA) * a.n_splits + split) * L + c) = make_float2(acc[j][0], acc[j][1]);
      if (hB < nh)
        *reinterpret_cast<float2*>(a.part + ((sh0 + hB) * a.n_splits + split) * L + c) = make_float2(acc[j][2], acc[j][3]);
    }
    if (warp == 0 && q4 == 0)  // every warp holds the same (max, sum)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
        if (g + 8 * hh < nh) {
          float* ml = detail::split_max_sum(a, sh0 + g + 8 * hh, split);
          ml[0] = m_run[hh] * kLn2, ml[1] = l_run[hh];
        }
  } else {
    const float invA = l_run[0] > 0.0f ? 1.0f / l_run[0] : 0.0f, invB = l_run[1] > 0.0f ? 1.0f / l_run[1] : 0.0f;
#pragma unroll
    for (int j = 0; j < NT; ++j) {
      const int c = ch0 + 8 * j + cq;
      if (hA < nh) {
        float* o = a.out + (sh0 + hA) * L + c;
        o[0] = acc[j][0] * invA, o[1] = acc[j][1] * invA;
      }
      if (hB < nh) {
        float* o = a.out + (sh0 + hB) * L + c;
        o[0] = acc[j][2] * invB, o[1] = acc[j][3] * invB;
      }
    }
  }
}

int padded_row(int64_t W) { return static_cast<int>(W + 8); }

template <int NT, int ST>
void launch(const Args& a, unsigned blocks, cudaStream_t stream) {
  const std::size_t smem = smem_bytes(a.Wpad, ST);
  static std::size_t configured = 0;
  if (smem > 48 * 1024 && smem > configured) {
    cudaFuncSetAttribute(mla_decode_bf16_kernel<NT, ST>, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    cudaFuncSetAttribute(mla_decode_bf16_kernel<NT, ST>, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
    cudaGetLastError();  // a refused hint is not an error; the launch reports real ones
    configured = smem;
  }
  mla_decode_bf16_kernel<NT, ST><<<blocks, kThreads, smem, stream>>>(a);
}

template <int ST>
void launch_lora(int64_t kv_lora, const Args& a, unsigned blocks, cudaStream_t stream) {
  switch (kv_lora) {
    case 64: launch<2, ST>(a, blocks, stream); break;
    case 128: launch<4, ST>(a, blocks, stream); break;
    case 256: launch<8, ST>(a, blocks, stream); break;
    default: launch<16, ST>(a, blocks, stream); break;
  }
}

// ---- Layouts and their launches.
constexpr int kV1 = kMlaDecodeV1, kW4T32 = kMlaDecodeW4T32, kW8T32 = kMlaDecodeW8T32, kW8T64 = kMlaDecodeW8T64,
              kW4T32B = kMlaDecodeW4T32B, kW8T32B = kMlaDecodeW8T32B;
constexpr int kLayoutDefault = kW4T32B;

struct Pick {
  int layout, stages, tile, per_sm;
};

// The layout asked for where the dims allow it (the k-split kernels take rope_dim 0 or 64; eight
// warps need kv_lora >= 128), else w4t32, else v1; the depth asked for where it fits (v1: 3 .. 5,
// the k-split kernels: 3), else 2.
Pick pick(int layout, int stages, int64_t kv_lora, int64_t rope_dim) {
  const int Ws = padded_row(kv_lora + rope_dim);
  if (layout < kV1 || layout > kW8T32B) layout = kLayoutDefault;
  if ((layout == kW4T32B || layout == kW8T32B) && !detail::has_bulk_copy()) layout -= 3;  // cp.async
  if (layout != kV1 && rope_dim != 0 && rope_dim != 64) layout = kV1;
  if ((layout == kW8T32 || layout == kW8T64 || layout == kW8T32B) && kv_lora < 128)
    layout = layout == kW8T32B ? kW4T32B : kW4T32;
  const int tile = layout == kW8T64 ? 64 : 32;
  auto bytes = [&](int st) {
    switch (layout) {
      case kV1: return smem_bytes(Ws, st);
      case kW8T32:
      case kW8T32B: return ksplit_smem_bytes<8, 32>(Ws, st);
      case kW8T64: return ksplit_smem_bytes<8, 64>(Ws, st);
      default: return ksplit_smem_bytes<4, 32>(Ws, st);
    }
  };
  const bool deep = layout == kV1 ? stages == 3 || stages == 4 || stages == 5 : stages == 3;
  const bool ok = deep && bytes(stages) <= 227 * 1024;
  if (!ok) stages = kStagesDefault;
  const int per_sm = layout == kV1 ? blocks_per_sm(stages) : (tile * stages <= 64 ? 2 : 1);
  return Pick{layout, stages, tile, per_sm};
}

template <int NW, int T, int NT, int KQ, int ST, bool BULK>
void launch_ksplit(const Args& a, unsigned blocks, cudaStream_t stream) {
  constexpr int MB = T * ST <= 64 ? 2 : 1;
  auto* kernel = mla_decode_ksplit_kernel<NW, T, NT, KQ, ST, MB, BULK>;
  const std::size_t smem = ksplit_smem_bytes<NW, T>(a.Wpad, ST);
  static std::size_t configured = 0;
  if (smem > 48 * 1024 && smem > configured) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
    cudaGetLastError();  // a refused hint is not an error; the launch reports real ones
    configured = smem;
  }
  kernel<<<blocks, 32 * NW, smem, stream>>>(a);
}

// L = 8 NW NT; W = 64 KQ with rope_dim 0 or 64 (pick() sends other rope dims to v1).
template <int NW, int T, int ST, bool BULK, int L>
void launch_ksplit_w(const Args& a, unsigned blocks, cudaStream_t stream) {
  if (a.R == 0) launch_ksplit<NW, T, L / (8 * NW), L / 64, ST, BULK>(a, blocks, stream);
  else launch_ksplit<NW, T, L / (8 * NW), L / 64 + 1, ST, BULK>(a, blocks, stream);
}
template <int NW, int T, int ST, bool BULK = false>
void launch_ksplit_lora(int64_t kv_lora, const Args& a, unsigned blocks, cudaStream_t stream) {
  switch (kv_lora) {
    case 64:
      if constexpr (NW == 4) launch_ksplit_w<NW, T, ST, BULK, 64>(a, blocks, stream);
      break;
    case 128: launch_ksplit_w<NW, T, ST, BULK, 128>(a, blocks, stream); break;
    case 256: launch_ksplit_w<NW, T, ST, BULK, 256>(a, blocks, stream); break;
    default: launch_ksplit_w<NW, T, ST, BULK, 512>(a, blocks, stream); break;
  }
}

template <int ST>
void launch_layout(int layout, int64_t kv_lora, const Args& a, unsigned blocks, cudaStream_t stream) {
  if (layout == kV1) return launch_lora<ST>(kv_lora, a, blocks, stream);
  if constexpr (ST <= 3) {  // pick() gives the k-split kernels 2 or 3 stages (w8t64: 2)
    if (layout == kW8T32) return launch_ksplit_lora<8, 32, ST>(kv_lora, a, blocks, stream);
    if (layout == kW8T32B) return launch_ksplit_lora<8, 32, ST, true>(kv_lora, a, blocks, stream);
    if (layout == kW4T32B) return launch_ksplit_lora<4, 32, ST, true>(kv_lora, a, blocks, stream);
    if constexpr (ST == 2)
      if (layout == kW8T64) return launch_ksplit_lora<8, 64, ST>(kv_lora, a, blocks, stream);
    return launch_ksplit_lora<4, 32, ST>(kv_lora, a, blocks, stream);
  }
}

}  // namespace

bool mla_decode_bf16_supported(int64_t kv_lora, int64_t rope_dim) {
  if (kv_lora != 64 && kv_lora != 128 && kv_lora != 256 && kv_lora != 512) return false;
  if (rope_dim < 0 || (kv_lora + rope_dim) % 16 != 0) return false;
  return smem_bytes(padded_row(kv_lora + rope_dim), kStagesDefault) <= 113 * 1024;  // two blocks per SM
}

int64_t mla_decode_bf16_workspace_floats(int64_t n_seqs, int64_t n_heads, int64_t max_ctx_len,
                                         int64_t kv_lora, int64_t rope_dim, int stages, int layout) {
  if (n_seqs <= 0 || n_heads <= 0) return 0;
  const Pick k = pick(layout, stages, kv_lora, rope_dim);
  const detail::DecodePlan p =
      detail::plan_decode(n_seqs, (n_heads + kHG - 1) / kHG, max_ctx_len, k.tile, k.per_sm);
  return p.n_splits > 1 ? n_seqs * n_heads * p.n_splits * (kv_lora + 2) : 0;
}

void mla_decode_bf16(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads,
                     const uint16_t* base, const int32_t* pages, const int32_t* table_offset,
                     const int32_t* ctx_len, int64_t page_size, int64_t kv_lora, int64_t rope_dim,
                     int64_t max_ctx_len, float scale, float* out, float* workspace,
                     int64_t workspace_floats, cudaStream_t stream, int stages, int layout) {
  if (n_seqs <= 0 || n_heads <= 0) return;
  const Pick k = pick(layout, stages, kv_lora, rope_dim);
  const int n_hg = static_cast<int>((n_heads + kHG - 1) / kHG);
  detail::DecodePlan p = detail::plan_decode(n_seqs, n_hg, max_ctx_len, k.tile, k.per_sm);
  if (p.n_splits > 1 && (!workspace || n_seqs * n_heads * p.n_splits * (kv_lora + 2) > workspace_floats)) {
    p.n_splits = 1;
    p.split_len = static_cast<int>(max_ctx_len < 1 ? 1 : max_ctx_len);
  }
  Args a;
  a.q_lat = q_lat, a.q_pe = q_pe, a.base = reinterpret_cast<const __nv_bfloat16*>(base);
  a.pages = pages, a.table_offset = table_offset, a.ctx_len = ctx_len, a.out = out;
  a.part = p.n_splits > 1 ? workspace : nullptr;
  a.n_seqs = static_cast<int>(n_seqs), a.n_heads = static_cast<int>(n_heads), a.n_hg = n_hg;
  a.page_size = static_cast<int>(page_size), a.L = static_cast<int>(kv_lora);
  a.R = static_cast<int>(rope_dim), a.W = static_cast<int>(kv_lora + rope_dim);
  a.Wpad = padded_row(a.W), a.n_splits = p.n_splits, a.split_len = p.split_len;
  a.scale = scale * kLog2e;
  const auto blocks = static_cast<unsigned>(n_seqs * n_hg * p.n_splits);
  switch (k.stages) {
    case 3: launch_layout<3>(k.layout, kv_lora, a, blocks, stream); break;
    case 4: launch_layout<4>(k.layout, kv_lora, a, blocks, stream); break;
    case 5: launch_layout<5>(k.layout, kv_lora, a, blocks, stream); break;
    default: launch_layout<kStagesDefault>(k.layout, kv_lora, a, blocks, stream); break;
  }
  if (p.n_splits > 1) detail::merge_decode_splits(workspace, n_seqs * n_heads, p.n_splits, a.L, out, stream);
}

}  // namespace dpa::kernels
