#include "kernels/common.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/mla_decode_plan.cuh"

#include <algorithm>

namespace dpa::kernels {
namespace {

constexpr int kHG = 16;       // heads per block
constexpr int kT = 16;        // cache rows per tile
constexpr int kThreads = 256;
constexpr int kMaxLora = 2 * kThreads;  // PV: thread t owns latent columns 2t, 2t + 1
constexpr int kMinSplit = 64;           // cache rows per split, at least
constexpr int kMaxSplits = detail::kMaxDecodeSplits;

using Args = detail::DecodeArgs<float>;
using detail::cp_async16;
using detail::cp_async4;
using detail::cp_async_commit;

size_t smem_bytes(int Wp) {
  return static_cast<size_t>(kHG * Wp + 2 * kT * Wp + 2 * kHG * kT + 3 * kHG) * sizeof(float);
}

// One block per (sequence, head group, split); flattened as ((s * n_splits) + split) * n_hg + hg
// so the head groups of the same rows run side by side (their cache reads meet in L2).
// kV2: the queries come in by cp.async with the first tile and the page-table lookups of a
// tile are issued together (8 per thread) before its copies; v1 loads both one by one.
template <bool kV2>
__global__ void __launch_bounds__(kThreads, 2) mla_decode_kernel(Args a) {
  extern __shared__ __align__(16) float smem[];
  const int Wp = a.Wpad;
  float* qs = smem;                    // [kHG][Wp]  queries [q_lat, q_pe, 0...]
  float* kb = qs + kHG * Wp;           // [2][kT][Wp] cache tiles (columns >= W zero)
  float* S = kb + 2 * kT * Wp;         // [kHG][kT] scaled scores
  float* P = S + kHG * kT;             // [kT][kHG] probabilities
  float* alpha_s = P + kT * kHG;       // [kHG]
  float* l_s = alpha_s + kHG;          // [kHG]
  float* m_s = l_s + kHG;              // [kHG]
  const int tid = threadIdx.x;
  const detail::DecodeBlock blk = detail::decode_block(a, kHG);
  if (detail::empty_split(a, blk)) return;
  const int split = blk.split, s = blk.s, nh = blk.nh, k_begin = blk.k_begin, k_end = blk.k_end;
  const int L = a.L;
  const int c0 = 2 * tid;
  const bool pv = c0 < L;
  const int64_t sh0 = blk.sh0;

  // Queries of the group, zero beyond W and for heads past n_heads; zero pad columns of the tiles.
  if constexpr (kV2) {
    for (int i = tid; i < kHG * Wp; i += kThreads) {  // joins the first tile's cp.async group
      const int h = i / Wp, d = i - h * Wp;
      const float* src = a.q_lat;
      bool ok = false;
      if (h < nh) {
        if (d < L) src = a.q_lat + (sh0 + h) * L + d, ok = true;
        else if (d < a.W) src = a.q_pe + (sh0 + h) * a.R + (d - L), ok = true;
      }
      cp_async4(qs + i, src, ok);
    }
  } else {
    for (int i = tid; i < kHG * Wp; i += kThreads) {
      const int h = i / Wp, d = i - h * Wp;
      float v = 0.0f;
      if (h < nh) {
        if (d < L) v = a.q_lat[(sh0 + h) * L + d];
        else if (d < a.W) v = a.q_pe[(sh0 + h) * a.R + (d - L)];
      }
      qs[i] = v;
    }
  }
  const int pad = Wp - a.W;
  for (int i = tid; i < 2 * kT * pad; i += kThreads) {
    const int r = i / pad;
    kb[r * Wp + a.W + (i - r * pad)] = 0.0f;
  }

  const int32_t* table = a.pages + a.table_offset[s];
  const int chunks = a.W / 4;  // 16-byte chunks per cache row
  auto load_tile = [&](int t0, float* dst) {
    if constexpr (kV2) {
      constexpr int kU = 8;
      const int total = kT * chunks;
      for (int i0 = tid; i0 < total; i0 += kU * kThreads) {
        const float* src[kU];
        int off[kU];
        bool ok[kU];
#pragma unroll
        for (int u = 0; u < kU; ++u) {
          const int i = i0 + u * kThreads;
          const int t = i / chunks, c4 = i - t * chunks;
          const int pos = t0 + t;
          ok[u] = i < total && pos < k_end;
          off[u] = t * Wp + 4 * c4;
          src[u] = a.base;
          if (ok[u]) {
            const int pg = pos / a.page_size;
            src[u] = a.base + (static_cast<int64_t>(table[pg]) * a.page_size + (pos - pg * a.page_size)) * a.W + 4 * c4;
          }
        }
#pragma unroll
        for (int u = 0; u < kU; ++u)
          if (i0 + u * kThreads < total) cp_async16(dst + off[u], src[u], ok[u]);
      }
    } else {
      for (int i = tid; i < kT * chunks; i += kThreads) {
        const int t = i / chunks, c4 = i - t * chunks;
        const int pos = t0 + t;
        const bool valid = pos < k_end;
        const float* src = a.base;
        if (valid) {
          const int pg = pos / a.page_size;
          src = a.base + (static_cast<int64_t>(table[pg]) * a.page_size + (pos - pg * a.page_size)) * a.W + 4 * c4;
        }
        cp_async16(dst + t * Wp + 4 * c4, src, valid);
      }
    }
    cp_async_commit();
  };

  const int n_tiles = (k_end - k_begin + kT - 1) / kT;
  load_tile(k_begin, kb);

  // Score roles: 16 tiles of 4 heads x 4 rows, each split over 16 lanes along the columns.
  const int lane = tid & 31, warp = tid >> 5;
  const int j = lane & 15;
  const int tile = warp * 2 + (lane >> 4);
  const int hq = tile >> 2, tq = tile & 3;
  // Softmax roles: (head, row).
  const int sm_h = tid >> 4, sm_t = tid & 15;
  float m_run = -INFINITY, l_run = 0.0f;
  float acc[kHG][2];
#pragma unroll
  for (int h = 0; h < kHG; ++h) acc[h][0] = acc[h][1] = 0.0f;
  const int n_d = Wp / 64;

  for (int it = 0; it < n_tiles; ++it) {
    const int t0 = k_begin + it * kT;
    const float* kc = kb + (it & 1) * kT * Wp;
    __syncthreads();  // tile it-1 (the other buffer), S and P are free
    if (it + 1 < n_tiles) load_tile(t0 + kT, kb + ((it + 1) & 1) * kT * Wp);
    else cp_async_commit();
    detail::cp_async_wait<1>();
    __syncthreads();  // tile it is in

    // Scores: v[a * 4 + b] = q[4hq + a] . k[4tq + b] over this lane's columns.
    float v[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) v[i] = 0.0f;
    const float* qp = qs + (hq * 4) * Wp + 4 * j;
    const float* kp = kc + (tq * 4) * Wp + 4 * j;
    for (int i = 0; i < n_d; ++i) {
      float4 q4[4], k4[4];
#pragma unroll
      for (int x = 0; x < 4; ++x) {
        q4[x] = *reinterpret_cast<const float4*>(qp + x * Wp + 64 * i);
        k4[x] = *reinterpret_cast<const float4*>(kp + x * Wp + 64 * i);
      }
#pragma unroll
      for (int x = 0; x < 4; ++x)
#pragma unroll
        for (int y = 0; y < 4; ++y) {
          float t = v[x * 4 + y];
          t = fmaf(q4[x].x, k4[y].x, t);
          t = fmaf(q4[x].y, k4[y].y, t);
          t = fmaf(q4[x].z, k4[y].z, t);
          t = fmaf(q4[x].w, k4[y].w, t);
          v[x * 4 + y] = t;
        }
    }
    // Reduce-scatter over the 16 lanes: lane j ends with the full sum of value j.
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const bool upper = j & 8;
      const float send = upper ? v[i] : v[i + 8], keep = upper ? v[i + 8] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 8);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const bool upper = j & 4;
      const float send = upper ? v[i] : v[i + 4], keep = upper ? v[i + 4] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 4);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const bool upper = j & 2;
      const float send = upper ? v[i] : v[i + 2], keep = upper ? v[i + 2] : v[i];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, 2);
    }
    {
      const bool upper = j & 1;
      const float send = upper ? v[0] : v[1], keep = upper ? v[1] : v[0];
      v[0] = keep + __shfl_xor_sync(0xffffffffu, send, 1);
    }
    {
      const int h = hq * 4 + (j >> 2), t = tq * 4 + (j & 3);
      S[h * kT + t] = t0 + t < k_end ? v[0] * a.scale : -INFINITY;
    }
    __syncthreads();

    // Online softmax, one (head, row) per thread; a head's 16 rows are one half-warp.
    {
      const float sv = S[sm_h * kT + sm_t];
      float mx = sv;
#pragma unroll
      for (int o = 8; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
      const float m_new = fmaxf(m_run, mx);
      const float p = expf(sv - m_new);
      float ps = p;
#pragma unroll
      for (int o = 8; o > 0; o >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, o);
      const float al = expf(m_run - m_new);
      l_run = l_run * al + ps;
      m_run = m_new;
      P[sm_t * kHG + sm_h] = p;
      if (sm_t == 0) alpha_s[sm_h] = al;
    }
    __syncthreads();

    // acc = acc * alpha + P^T · C_lat over the tile's rows.
    if (pv) {
#pragma unroll
      for (int h = 0; h < kHG; ++h) {
        const float al = alpha_s[h];
        acc[h][0] *= al, acc[h][1] *= al;
      }
#pragma unroll 4
      for (int t = 0; t < kT; ++t) {
        const float2 c = *reinterpret_cast<const float2*>(kc + t * Wp + c0);
        const float4* pr = reinterpret_cast<const float4*>(P + t * kHG);
#pragma unroll
        for (int x = 0; x < 4; ++x) {
          const float4 p4 = pr[x];
          acc[4 * x + 0][0] = fmaf(p4.x, c.x, acc[4 * x + 0][0]);
          acc[4 * x + 0][1] = fmaf(p4.x, c.y, acc[4 * x + 0][1]);
          acc[4 * x + 1][0] = fmaf(p4.y, c.x, acc[4 * x + 1][0]);
          acc[4 * x + 1][1] = fmaf(p4.y, c.y, acc[4 * x + 1][1]);
          acc[4 * x + 2][0] = fmaf(p4.z, c.x, acc[4 * x + 2][0]);
          acc[4 * x + 2][1] = fmaf(p4.z, c.y, acc[4 * x + 2][1]);
          acc[4 * x + 3][0] = fmaf(p4.w, c.x, acc[4 * x + 3][0]);
          acc[4 * x + 3][1] = fmaf(p4.w, c.y, acc[4 * x + 3][1]);
        }
      }
    }
  }
  if (sm_t == 0) l_s[sm_h] = l_run, m_s[sm_h] = m_run;
  __syncthreads();
  if (a.part) {
    if (pv) {
#pragma unroll
      for (int h = 0; h < kHG; ++h)
        if (h < nh) {
          float* p = a.part + ((sh0 + h) * a.n_splits + split) * L + c0;
          *reinterpret_cast<float2*>(p) = make_float2(acc[h][0], acc[h][1]);
        }
    }
    if (tid < nh) {
      float* ml = detail::split_max_sum(a, sh0 + tid, split);
      ml[0] = m_s[tid], ml[1] = l_s[tid];
    }
  } else if (pv) {
#pragma unroll
    for (int h = 0; h < kHG; ++h)
      if (h < nh) {
        const float l = l_s[h];
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        float* o = a.out + (sh0 + h) * L + c0;  // the caller's pointer: no alignment assumed
        o[0] = acc[h][0] * inv, o[1] = acc[h][1] * inv;
      }
  }
}

// Merges the splits of one (sequence, head): out = sum_k acc_k e^(m_k - M) / sum_k l_k e^(m_k - M).
__global__ void __launch_bounds__(128) mla_decode_combine(const float* part, int64_t n_rows,
                                                          int n_splits, int L, float* out) {
  __shared__ float w[kMaxSplits];
  __shared__ float inv_s;
  const int64_t row = blockIdx.x;
  const float* ml = part + n_rows * n_splits * L + row * n_splits * 2;
  if (threadIdx.x == 0) {
    float M = -INFINITY;
    for (int k = 0; k < n_splits; ++k) M = fmaxf(M, ml[2 * k]);
    float l = 0.0f;
    for (int k = 0; k < n_splits; ++k) {
      const float m = ml[2 * k];
      const float e = m == -INFINITY ? 0.0f : expf(m - M);
      w[k] = e;
      l += ml[2 * k + 1] * e;
    }
    inv_s = l > 0.0f ? 1.0f / l : 0.0f;
  }
  __syncthreads();
  const float inv = inv_s;
  const float* pa = part + row * n_splits * L;
  for (int c = threadIdx.x; c < L; c += blockDim.x) {
    float acc = 0.0f;
    for (int k = 0; k < n_splits; ++k)
      if (w[k] != 0.0f) acc += pa[static_cast<int64_t>(k) * L + c] * w[k];
    out[row * L + c] = acc * inv;
  }
}

// The same merge with the split weights computed by the whole block (v2).
__global__ void __launch_bounds__(kMaxSplits) mla_decode_combine2(const float* part, int64_t n_rows,
                                                                  int n_splits, int L, float* out,
                                                                  __nv_bfloat16* out_hm, int n_heads) {
  __shared__ float w[kMaxSplits];
  __shared__ float red[32];
  const int64_t row = blockIdx.x;
  const float* ml = part + n_rows * n_splits * L + row * n_splits * 2;
  const int k = threadIdx.x;
  const float m = k < n_splits ? ml[2 * k] : -INFINITY;
  const float lk = k < n_splits ? ml[2 * k + 1] : 0.0f;
  const float M = detail::block_max(m, red);
  const float e = m == -INFINITY ? 0.0f : expf(m - M);
  w[k] = e;
  const float l = detail::block_sum(lk * e, red);
  __syncthreads();
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  const float* pa = part + row * n_splits * L;
  for (int c = threadIdx.x; c < L; c += blockDim.x) {
    float acc = 0.0f;
#pragma unroll 4
    for (int j = 0; j < n_splits; ++j) {
      const float wj = w[j];
      if (wj != 0.0f) acc += pa[static_cast<int64_t>(j) * L + c] * wj;
    }
    if (out_hm) {
      const int64_t s = row / n_heads;
      out_hm[((row - s * n_heads) * (n_rows / n_heads) + s) * L + c] = __float2bfloat16_rn(acc * inv);
    } else {
      out[row * L + c] = acc * inv;
    }
  }
}

struct Plan {
  int n_hg, n_splits, split_len;
};

Plan plan(int64_t n_seqs, int64_t n_heads, int64_t max_ctx, bool v2) {
  Plan p;
  p.n_hg = static_cast<int>((n_heads + kHG - 1) / kHG);
  if (v2) {
    const detail::DecodePlan d = detail::plan_decode(n_seqs, p.n_hg, max_ctx, kT);
    p.n_splits = d.n_splits, p.split_len = d.split_len;
    return p;
  }
  if (max_ctx < 1) max_ctx = 1;
  const int64_t base = n_seqs * p.n_hg;
  const int64_t by_len = (max_ctx + kMinSplit - 1) / kMinSplit;
  const int64_t target = 4 * static_cast<int64_t>(detail::sm_count());  // two waves of two blocks per SM
  int64_t splits = (target + base - 1) / base;
  splits = std::min<int64_t>(std::min<int64_t>(splits, by_len), kMaxSplits);
  if (splits < 1) splits = 1;
  int64_t len = (max_ctx + splits - 1) / splits;
  len = (len + kT - 1) / kT * kT;
  splits = (max_ctx + len - 1) / len;
  p.n_splits = static_cast<int>(splits);
  p.split_len = static_cast<int>(len);
  return p;
}

int padded_width(int64_t W) { return static_cast<int>((W + 63) / 64 * 64); }

}  // namespace

bool mla_decode_supported(int64_t kv_lora, int64_t rope_dim, const void* base) {
  if (kv_lora <= 0 || kv_lora > kMaxLora || kv_lora % 4 != 0 || rope_dim < 0 || rope_dim % 4 != 0)
    return false;
  if (reinterpret_cast<uintptr_t>(base) % 16 != 0) return false;
  return smem_bytes(padded_width(kv_lora + rope_dim)) <= 227 * 1024;
}

int64_t mla_decode_workspace_floats(int64_t n_seqs, int64_t n_heads, int64_t max_ctx_len,
                                    int64_t kv_lora, int variant) {
  if (n_seqs <= 0 || n_heads <= 0) return 0;
  const Plan p = plan(n_seqs, n_heads, max_ctx_len, variant != 1);
  return p.n_splits > 1 ? n_seqs * n_heads * p.n_splits * (kv_lora + 2) : 0;
}

void mla_decode(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads,
                const float* base, const int32_t* pages, const int32_t* table_offset,
                const int32_t* ctx_len, int64_t page_size, int64_t kv_lora, int64_t rope_dim,
                int64_t max_ctx_len, float scale, float* out, float* workspace,
                int64_t workspace_floats, cudaStream_t stream, int variant) {
  if (n_seqs <= 0 || n_heads <= 0) return;
  const bool v2 = variant != 1;
  Plan p = plan(n_seqs, n_heads, max_ctx_len, v2);
  if (p.n_splits > 1 && (!workspace || n_seqs * n_heads * p.n_splits * (kv_lora + 2) > workspace_floats)) {
    p.n_splits = 1;
    p.split_len = static_cast<int>(max_ctx_len < 1 ? 1 : max_ctx_len);
  }
  Args a;
  a.q_lat = q_lat, a.q_pe = q_pe, a.base = base, a.pages = pages, a.table_offset = table_offset;
  a.ctx_len = ctx_len, a.out = out, a.part = p.n_splits > 1 ? workspace : nullptr;
  a.n_seqs = static_cast<int>(n_seqs), a.n_heads = static_cast<int>(n_heads), a.n_hg = p.n_hg;
  a.page_size = static_cast<int>(page_size), a.L = static_cast<int>(kv_lora);
  a.R = static_cast<int>(rope_dim), a.W = static_cast<int>(kv_lora + rope_dim);
  a.Wpad = padded_width(a.W), a.n_splits = p.n_splits, a.split_len = p.split_len, a.scale = scale;
  const size_t smem = smem_bytes(a.Wpad);
  static size_t configured[2] = {0, 0};
  auto kernel = v2 ? mla_decode_kernel<true> : mla_decode_kernel<false>;
  if (smem > 48 * 1024 && smem > configured[v2]) {
    cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    cudaFuncSetAttribute(kernel, cudaFuncAttributePreferredSharedMemoryCarveout, 100);
    cudaGetLastError();  // a refused hint is not an error; the launch reports real ones
    configured[v2] = smem;
  }
  const int64_t blocks = n_seqs * p.n_hg * p.n_splits;
  kernel<<<static_cast<unsigned>(blocks), kThreads, smem, stream>>>(a);
  if (p.n_splits > 1) {
    if (v2)
      detail::merge_decode_splits(workspace, n_seqs * n_heads, p.n_splits, a.L, out, stream);
    else
      mla_decode_combine<<<static_cast<unsigned>(n_seqs * n_heads), 128, 0, stream>>>(
          workspace, n_seqs * n_heads, p.n_splits, a.L, out);
  }
}

namespace detail {

DecodePlan plan_decode(int64_t n_seqs, int64_t n_hg, int64_t max_ctx, int tile, int per_sm) {
  if (max_ctx < 1) max_ctx = 1;
  const int64_t base = n_seqs * n_hg;
  const int64_t by_len = (max_ctx + kMinSplit - 1) / kMinSplit;
  // Fewest waves of per_sm resident blocks per SM times rows per split, plus a fixed cost of
  // kBlockCost rows per block (queries, partials): s = argmin ceil(base s / cap) (ctx / s + c).
  constexpr int64_t kBlockCost = 48;
  const int64_t cap = per_sm * static_cast<int64_t>(sm_count());
  const int64_t hi = std::max<int64_t>(1, std::min<int64_t>(by_len, kMaxSplits));
  int64_t splits = 1, best = -1;
  for (int64_t sp = 1; sp <= hi; ++sp) {
    const int64_t cost = (base * sp + cap - 1) / cap * ((max_ctx + sp - 1) / sp + kBlockCost);
    if (best < 0 || cost < best) best = cost, splits = sp;
  }
  int64_t len = (max_ctx + splits - 1) / splits;
  len = (len + tile - 1) / tile * tile;
  splits = (max_ctx + len - 1) / len;
  return DecodePlan{static_cast<int>(splits), static_cast<int>(len)};
}

void merge_decode_splits(const float* part, int64_t n_rows, int n_splits, int L, float* out,
                         cudaStream_t stream, uint16_t* out_hm, int n_heads) {
  mla_decode_combine2<<<static_cast<unsigned>(n_rows), kMaxSplits, 0, stream>>>(
      part, n_rows, n_splits, L, out, reinterpret_cast<__nv_bfloat16*>(out_hm), n_heads);
}

}  // namespace detail
}  // namespace dpa::kernels
