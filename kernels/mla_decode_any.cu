// Batched absorbed-MLA decode for the latent shapes the fused kernels do not take (the tiny test
// model's latent 32 + rope 8 over a bf16 cache, a latent past 512 over an f32 one). Plain and
// general rather than fast: one block per (sequence, head), the query and the output's running
// sums in shared memory, tiles of 32 cache rows: each warp dots its rows with the query, warp 0
// folds the tile into the online softmax, then every thread moves its latent columns. Everything
// stays on the device, so a decode graph can record it (the per-sequence host loop it replaces
// could not).
#include "kernels/common.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/mla_decode_plan.cuh"

#include <cuda_bf16.h>

namespace dpa::kernels {
namespace {

using detail::load_f32;
using detail::warp_max;
using detail::warp_sum;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 32;  // cache rows a tile: one per lane of warp 0 in the softmax fold
constexpr size_t kMaxSmem = 200 * 1024;

size_t smem_bytes(int64_t kv_lora, int64_t rope_dim) {
  return static_cast<size_t>(2 * kv_lora + rope_dim + 2 * kTile + 4) * sizeof(float) + kTile * sizeof(int64_t);
}

// The decode kernels' arguments; this one reads q_lat, q_pe, base, pages, table_offset, ctx_len,
// out, n_heads, page_size, L, R and scale (no splits, no head groups, no padded rows).
template <class T>
using AnyArgs = detail::DecodeArgs<T>;

template <class T>
__global__ void __launch_bounds__(kThreads) mla_decode_any_kernel(AnyArgs<T> a) {
  extern __shared__ __align__(16) unsigned char raw[];
  int64_t* row_at = reinterpret_cast<int64_t*>(raw);  // [kTile] element offsets of the tile's rows
  float* q = reinterpret_cast<float*>(row_at + kTile);  // [L + R]
  float* acc = q + a.L + a.R;                           // [L] unnormalized sums
  float* S = acc + a.L;                                 // [kTile] scaled scores
  float* P = S + kTile;                                 // [kTile] probabilities of the tile
  float* st = P + kTile;                                // running max, running sum, rescale
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t sh = blockIdx.x;  // sequence * n_heads + head
  const int s = static_cast<int>(sh / a.n_heads);
  const int L = a.L, W = a.L + a.R;
  for (int d = tid; d < W; d += kThreads) q[d] = d < L ? a.q_lat[sh * L + d] : a.q_pe[sh * a.R + (d - L)];
  for (int c = tid; c < L; c += kThreads) acc[c] = 0.0f;
  if (tid == 0) st[0] = -INFINITY, st[1] = 0.0f;
  const int ctx = a.ctx_len[s];
  const int32_t* table = a.pages + a.table_offset[s];
  __syncthreads();
  for (int t0 = 0; t0 < ctx; t0 += kTile) {
    if (tid < kTile) {
      const int pos = t0 + tid;
      int64_t off = -1;
      if (pos < ctx) {
        const int pg = pos / a.page_size;
        off = (static_cast<int64_t>(table[pg]) * a.page_size + (pos - pg * a.page_size)) * W;
      }
      row_at[tid] = off;
    }
    __syncthreads();
    for (int t = warp; t < kTile; t += kWarps) {
      const int64_t off = row_at[t];
      float dot = 0.0f;
      if (off >= 0)
        for (int d = lane; d < W; d += 32) dot += q[d] * load_f32(a.base + off + d);
      dot = warp_sum(dot);
      if (lane == 0) S[t] = off >= 0 ? dot * a.scale : -INFINITY;
    }
    __syncthreads();
    if (warp == 0) {  // the tile into the online softmax: it has at least one row
      const float m_old = st[0], sv = S[lane];
      const float m_new = fmaxf(m_old, warp_max(sv));
      const float p = expf(sv - m_new);
      const float sum = warp_sum(p);
      P[lane] = p;
      if (lane == 0) {
        const float alpha = expf(m_old - m_new);  // 0 on the first tile (m_old is -inf)
        st[0] = m_new, st[1] = st[1] * alpha + sum, st[2] = alpha;
      }
    }
    __syncthreads();
    const float alpha = st[2];
    const int n = min(kTile, ctx - t0);
    for (int c = tid; c < L; c += kThreads) {
      float v = acc[c] * alpha;
      for (int t = 0; t < n; ++t) v += P[t] * load_f32(a.base + row_at[t] + c);
      acc[c] = v;
    }
    __syncthreads();  // row_at, S and P are rewritten by the next tile
  }
  const float l = st[1];
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int c = tid; c < L; c += kThreads) a.out[sh * L + c] = acc[c] * inv;
}

template <class T>
void launch(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads, const T* base,
            const int32_t* pages, const int32_t* table_offset, const int32_t* ctx_len, int64_t page_size,
            int64_t kv_lora, int64_t rope_dim, float scale, float* out, cudaStream_t stream) {
  if (n_seqs <= 0 || n_heads <= 0) return;
  AnyArgs<T> a{};
  a.q_lat = q_lat, a.q_pe = q_pe, a.base = base, a.pages = pages, a.table_offset = table_offset;
  a.ctx_len = ctx_len, a.out = out, a.scale = scale;
  a.n_seqs = static_cast<int>(n_seqs), a.n_heads = static_cast<int>(n_heads);
  a.page_size = static_cast<int>(page_size), a.L = static_cast<int>(kv_lora), a.R = static_cast<int>(rope_dim);
  a.W = a.L + a.R;
  const size_t smem = smem_bytes(kv_lora, rope_dim);
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(mla_decode_any_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  mla_decode_any_kernel<T><<<static_cast<unsigned>(n_seqs * n_heads), kThreads, smem, stream>>>(a);
}

}  // namespace

bool mla_decode_any_supported(int64_t kv_lora, int64_t rope_dim) {
  return kv_lora > 0 && rope_dim >= 0 && smem_bytes(kv_lora, rope_dim) <= kMaxSmem;
}

void mla_decode_any(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads, const void* base,
                    bool bf16, const int32_t* pages, const int32_t* table_offset, const int32_t* ctx_len,
                    int64_t page_size, int64_t kv_lora, int64_t rope_dim, float scale, float* out,
                    cudaStream_t stream) {
  if (bf16)
    launch(q_lat, q_pe, n_seqs, n_heads, static_cast<const __nv_bfloat16*>(base), pages, table_offset, ctx_len,
           page_size, kv_lora, rope_dim, scale, out, stream);
  else
    launch(q_lat, q_pe, n_seqs, n_heads, static_cast<const float*>(base), pages, table_offset, ctx_len, page_size,
           kv_lora, rope_dim, scale, out, stream);
}

}  // namespace dpa::kernels
