// Batched absorbed-MLA decode over a bf16 paged latent cache on tensor cores (mma.sync
// m16n8k16, bf16 inputs, fp32 accumulation). A block takes (sequence, 16-head group, context
// split) with NW warps and streams tiles of T cache rows through a ring of ST slots; launched
// with 4 warps and 32-row tiles (8 warps, or 64-row tiles, measured slower: perf/RESULTS.md).
// Shared-memory rows are padded by 16 bytes so that ldmatrix reads of 8 rows meet 8 distinct
// bank groups. The scores, softmax and P·V split:
// Scores: warp w takes a quarter of the channels (k-steps [kq KQ, (kq + 1) KQ), kq = w % 4)
// for rows [rh T / RS, (rh + 1) T / RS) of the tile (rh = w / 4, RS = NW / 4), with its
// quarter of the queries held in registers for the whole block (no query re-reads per tile);
// the four partial score tiles meet in shared memory. Then every warp sums them for the
// positions of its own P fragments, runs the online softmax for heads g, g + 8 in registers
// (redundantly across warps: identical results) and accumulates P·C_lat for its L / NW
// channels. Two block barriers per tile besides the one that frees the ring slot. BULK: the tile
// comes in by one bulk copy (TMA) per row, T / NW rows issued by each warp, completing on a
// shared-memory barrier that every thread waits on (no cp.async per thread, one block barrier
// less). The block's first tiles are requested before the queries are staged, and a thread's
// query loads are issued together (the prologue is most of a short split's time).
#include "kernels/bulk_copy.cuh"
#include "kernels/common.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/mla_decode_plan.cuh"
#include "kernels/mma.cuh"

namespace dpa::kernels {
namespace {

constexpr int kHG = 16;  // heads per block (the mma M)
constexpr int kNW = 4;   // warps per block
constexpr int kT = 32;   // cache rows per tile
constexpr int kStagesDefault = 2;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLog2e = 1.4426950408889634f;

using detail::fast_exp2;
using Args = detail::DecodeArgs<__nv_bfloat16>;  // scale: softmax scale times log2(e)
using detail::bulk_load;
using detail::cp_async16;
using detail::cp_async_commit;
using detail::cp_async_wait;
using detail::fence_proxy_async;
using detail::ldsm_x4;
using detail::ldsm_x4_trans;
using detail::mbar_arrive_expect;
using detail::mbar_init;
using detail::mbar_init_fence;
using detail::mbar_wait;
using detail::mma16816;

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

  // Queries as bf16 (zero past n_heads) in the last ring slot, which the first load into it
  // (issued after the loop's first barrier) overwrites; staged while the first tiles are on
  // their way. A thread's loads of a group are all issued before any is used (one round trip
  // per group instead of one per head).
  __nv_bfloat16* qs = kb + (ST - 1) * T * Ws;
  {
    constexpr int kQ = kHG * W / kThr;  // queries per thread
    constexpr int kGroups = (kQ + 35) / 36, kG = kQ / kGroups;
    static_assert(kHG * W % kThr == 0 && kQ % kGroups == 0, "query staging");
#pragma unroll
    for (int q0 = 0; q0 < kQ; q0 += kG) {
      float v[kG];
#pragma unroll
      for (int i = 0; i < kG; ++i) {
        const int e = (q0 + i) * kThr + tid, h = e / W, d = e - h * W;
        v[i] = 0.0f;
        if (h < nh) v[i] = d < L ? a.q_lat[(sh0 + h) * L + d] : a.q_pe[(sh0 + h) * a.R + (d - L)];
      }
#pragma unroll
      for (int i = 0; i < kG; ++i) {
        const int e = (q0 + i) * kThr + tid, h = e / W, d = e - h * W;
        qs[h * Ws + d] = __float2bfloat16_rn(v[i]);
      }
    }
  }

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
    if (a.out_hm) {  // rounded, head-major (the value projection's input)
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int c = ch0 + 8 * j + cq;
        if (hA < nh)
          *reinterpret_cast<unsigned*>(a.out_hm + detail::head_major(a, sh0 + hA, c)) =
              detail::pack_bf16(acc[j][0] * invA, acc[j][1] * invA);
        if (hB < nh)
          *reinterpret_cast<unsigned*>(a.out_hm + detail::head_major(a, sh0 + hB, c)) =
              detail::pack_bf16(acc[j][2] * invB, acc[j][3] * invB);
      }
      return;
    }
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

template <int NT, int KQ, int ST, bool BULK>
void launch(const Args& a, unsigned blocks, cudaStream_t stream) {
  constexpr int MB = kT * ST <= 64 ? 2 : 1;
  auto* kernel = mla_decode_ksplit_kernel<kNW, kT, NT, KQ, ST, MB, BULK>;
  const std::size_t smem = ksplit_smem_bytes<kNW, kT>(a.Wpad, ST);
  static std::size_t configured = 0;
  if (smem > 48 * 1024 && smem > configured) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
    cudaGetLastError();  // a refused hint is not an error; the launch reports real ones
    configured = smem;
  }
  kernel<<<blocks, 32 * kNW, smem, stream>>>(a);
}

// L = 8 kNW NT; W = 64 KQ: rope_dim 0 or 64.
template <int L, int ST, bool BULK>
void launch_w(const Args& a, unsigned blocks, cudaStream_t stream) {
  if (a.R == 0) launch<L / (8 * kNW), L / 64, ST, BULK>(a, blocks, stream);
  else launch<L / (8 * kNW), L / 64 + 1, ST, BULK>(a, blocks, stream);
}

template <int ST, bool BULK>
void launch_lora(const Args& a, unsigned blocks, cudaStream_t stream) {
  switch (a.L) {
    case 64: launch_w<64, ST, BULK>(a, blocks, stream); break;
    case 128: launch_w<128, ST, BULK>(a, blocks, stream); break;
    case 256: launch_w<256, ST, BULK>(a, blocks, stream); break;
    default: launch_w<512, ST, BULK>(a, blocks, stream); break;
  }
}

// The depth asked for when it is 3 and fits in shared memory, else 2; 2 slots of 32 rows leave
// room for two blocks per SM, 3 for one.
int valid_stages(int stages, int64_t W) {
  return stages == 3 && ksplit_smem_bytes<kNW, kT>(padded_row(W), 3) <= 227 * 1024 ? 3 : kStagesDefault;
}
int blocks_per_sm(int stages) { return kT * stages <= 64 ? 2 : 1; }

}  // namespace

bool mla_decode_bf16_supported(int64_t kv_lora, int64_t rope_dim) {
  if (kv_lora != 64 && kv_lora != 128 && kv_lora != 256 && kv_lora != 512) return false;
  if (rope_dim != 0 && rope_dim != 64) return false;
  return ksplit_smem_bytes<kNW, kT>(padded_row(kv_lora + rope_dim), kStagesDefault) <= 113 * 1024;  // two blocks per SM
}

int64_t mla_decode_bf16_workspace_floats(int64_t n_seqs, int64_t n_heads, int64_t max_ctx_len,
                                         int64_t kv_lora, int64_t rope_dim, int stages) {
  if (n_seqs <= 0 || n_heads <= 0) return 0;
  stages = valid_stages(stages, kv_lora + rope_dim);
  const detail::DecodePlan p =
      detail::plan_decode(n_seqs, (n_heads + kHG - 1) / kHG, max_ctx_len, kT, blocks_per_sm(stages));
  return p.n_splits > 1 ? n_seqs * n_heads * p.n_splits * (kv_lora + 2) : 0;
}

void mla_decode_bf16(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads,
                     const uint16_t* base, const int32_t* pages, const int32_t* table_offset,
                     const int32_t* ctx_len, int64_t page_size, int64_t kv_lora, int64_t rope_dim,
                     int64_t max_ctx_len, float scale, float* out, float* workspace,
                     int64_t workspace_floats, cudaStream_t stream, int stages, bool bulk_loads,
                     uint16_t* out_bf16_hm) {
  if (n_seqs <= 0 || n_heads <= 0) return;
  stages = valid_stages(stages, kv_lora + rope_dim);
  const bool bulk = bulk_loads && detail::has_bulk_copy();
  const int n_hg = static_cast<int>((n_heads + kHG - 1) / kHG);
  detail::DecodePlan p = detail::plan_decode(n_seqs, n_hg, max_ctx_len, kT, blocks_per_sm(stages));
  if (p.n_splits > 1 && (!workspace || n_seqs * n_heads * p.n_splits * (kv_lora + 2) > workspace_floats)) {
    p.n_splits = 1;
    p.split_len = static_cast<int>(max_ctx_len < 1 ? 1 : max_ctx_len);
  }
  Args a;
  a.q_lat = q_lat, a.q_pe = q_pe, a.base = reinterpret_cast<const __nv_bfloat16*>(base);
  a.pages = pages, a.table_offset = table_offset, a.ctx_len = ctx_len, a.out = out;
  a.part = p.n_splits > 1 ? workspace : nullptr;
  a.out_hm = out_bf16_hm;
  a.n_seqs = static_cast<int>(n_seqs), a.n_heads = static_cast<int>(n_heads), a.n_hg = n_hg;
  a.page_size = static_cast<int>(page_size), a.L = static_cast<int>(kv_lora);
  a.R = static_cast<int>(rope_dim), a.W = static_cast<int>(kv_lora + rope_dim);
  a.Wpad = padded_row(a.W), a.n_splits = p.n_splits, a.split_len = p.split_len;
  a.scale = scale * kLog2e;
  const auto blocks = static_cast<unsigned>(n_seqs * n_hg * p.n_splits);
  if (stages == 3) {
    if (bulk) launch_lora<3, true>(a, blocks, stream);
    else launch_lora<3, false>(a, blocks, stream);
  } else {
    if (bulk) launch_lora<kStagesDefault, true>(a, blocks, stream);
    else launch_lora<kStagesDefault, false>(a, blocks, stream);
  }
  if (p.n_splits > 1)
    detail::merge_decode_splits(workspace, n_seqs * n_heads, p.n_splits, a.L, out, stream, out_bf16_hm,
                                static_cast<int>(n_heads));
}

}  // namespace dpa::kernels
