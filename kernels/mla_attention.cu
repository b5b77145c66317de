#include "kernels/common.cuh"
#include "kernels/mla_attention.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 128;       // keys scored per round
constexpr int64_t kMaxDims = 10240;  // d_qk + d_v floats in shared memory (40 KiB + chunk)

// Expanded attention: keys and values are rows of k and v.
struct Expanded {
  const float* q;
  const float* k;
  const float* v;
  int64_t n_kv, n_heads, d_qk, d_v, q_start;
  __device__ int64_t n_seen(int64_t i) const {
    const int64_t s = q_start + i + 1;
    return s < n_kv ? s : n_kv;
  }
  __device__ float q_elem(int64_t i, int64_t h, int64_t c) const {
    return q[(i * n_heads + h) * d_qk + c];
  }
  __device__ const float* key(int64_t j, int64_t h) const { return k + (j * n_heads + h) * d_qk; }
  __device__ const float* val(int64_t j, int64_t h) const { return v + (j * n_heads + h) * d_v; }
};

// Absorbed MLA: the key is the whole cache row [latent, rope key], the value its latent part;
// the query is [q_lat, q_pe].
struct Absorbed {
  const float* q_lat;
  const float* q_pe;
  const float* base;
  const int32_t* pages;
  int64_t page_size, n_heads, d_qk, d_v, rope_dim, q_start;  // d_v = kv_lora, d_qk = width
  __device__ int64_t n_seen(int64_t i) const { return q_start + i + 1; }
  __device__ float q_elem(int64_t i, int64_t h, int64_t c) const {
    return c < d_v ? q_lat[(i * n_heads + h) * d_v + c]
                   : q_pe[(i * n_heads + h) * rope_dim + (c - d_v)];
  }
  __device__ const float* row(int64_t j) const {
    return base + (static_cast<int64_t>(pages[j / page_size]) * page_size + j % page_size) * d_qk;
  }
  __device__ const float* key(int64_t j, int64_t) const { return row(j); }
  __device__ const float* val(int64_t j, int64_t) const { return row(j); }
};

// One block per (query, head). Shared memory: q [d_qk], acc [d_v], scores [kChunk].
// Split-KV (flash-decoding): blockIdx.y takes keys [y * split_len, (y + 1) * split_len) of the
// query's visible range. With `part`, the block writes its unnormalized accumulator, running max
// and sum to part[(bh * gridDim.y + y) * (d_v + 2) ...] for combine_kernel; without, the result.
template <class KV>
__global__ void __launch_bounds__(kThreads) attention_kernel(KV kv, int64_t n_q, float scale,
                                                             float* out, int64_t split_len,
                                                             float* part) {
  extern __shared__ float smem[];
  __shared__ float red[32];
  const int64_t d_qk = kv.d_qk, d_v = kv.d_v;
  float* qs = smem;
  float* acc = qs + d_qk;
  float* s = acc + d_v;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  const int64_t i = blockIdx.x / kv.n_heads, h = blockIdx.x % kv.n_heads;
  if (i >= n_q) return;
  for (int64_t c = threadIdx.x; c < d_qk; c += blockDim.x) qs[c] = kv.q_elem(i, h, c);
  for (int64_t c = threadIdx.x; c < d_v; c += blockDim.x) acc[c] = 0.0f;
  __syncthreads();
  const int64_t n_seen = kv.n_seen(i);
  const int64_t k_begin = blockIdx.y * split_len;
  const int64_t k_end = k_begin + split_len < n_seen ? k_begin + split_len : n_seen;
  float m = -INFINITY, l = 0.0f;
  for (int64_t j0 = k_begin; j0 < k_end; j0 += kChunk) {
    const int cnt = static_cast<int>(k_end - j0 < kChunk ? k_end - j0 : kChunk);
    for (int jj = warp; jj < cnt; jj += nw) {
      const float* kr = kv.key(j0 + jj, h);
      float dot = 0.0f;
      for (int64_t c = lane; c < d_qk; c += 32) dot += qs[c] * kr[c];
      dot = detail::warp_sum(dot);
      if (lane == 0) s[jj] = dot * scale;
    }
    __syncthreads();
    float cmax = -INFINITY;
    for (int jj = threadIdx.x; jj < cnt; jj += blockDim.x) cmax = fmaxf(cmax, s[jj]);
    cmax = detail::block_max(cmax, red);
    const float m_new = fmaxf(m, cmax);
    const float alpha = expf(m - m_new);  // 0 on the first chunk
    float psum = 0.0f;
    for (int jj = threadIdx.x; jj < cnt; jj += blockDim.x) {
      const float p = expf(s[jj] - m_new);
      s[jj] = p;
      psum += p;
    }
    psum = detail::block_sum(psum, red);  // its barriers publish s
    l = l * alpha + psum;
    m = m_new;
    for (int64_t c = threadIdx.x; c < d_v; c += blockDim.x) {
      float a = acc[c] * alpha;
      for (int jj = 0; jj < cnt; ++jj) a += s[jj] * kv.val(j0 + jj, h)[c];
      acc[c] = a;
    }
    __syncthreads();  // s is rewritten by the next chunk
  }
  if (part) {
    float* p = part + (static_cast<int64_t>(blockIdx.x) * gridDim.y + blockIdx.y) * (d_v + 2);
    for (int64_t c = threadIdx.x; c < d_v; c += blockDim.x) p[c] = acc[c];
    if (threadIdx.x == 0) p[d_v] = m, p[d_v + 1] = l;
    return;
  }
  float* o = out + (i * kv.n_heads + h) * d_v;
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  for (int64_t c = threadIdx.x; c < d_v; c += blockDim.x) o[c] = acc[c] * inv;
}

// Merges the splits of one (query, head): out = sum_s acc_s e^(m_s - M) / sum_s l_s e^(m_s - M).
__global__ void __launch_bounds__(kThreads) combine_kernel(const float* part, int splits,
                                                           int64_t d_v, float* out) {
  const float* p = part + static_cast<int64_t>(blockIdx.x) * splits * (d_v + 2);
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s) mx = fmaxf(mx, p[s * (d_v + 2) + d_v]);
  float l = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float ms = p[s * (d_v + 2) + d_v];
    if (ms != -INFINITY) l += p[s * (d_v + 2) + d_v + 1] * expf(ms - mx);
  }
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;
  float* o = out + static_cast<int64_t>(blockIdx.x) * d_v;
  for (int64_t c = threadIdx.x; c < d_v; c += blockDim.x) {
    float a = 0.0f;
    for (int s = 0; s < splits; ++s) {
      const float ms = p[s * (d_v + 2) + d_v];
      if (ms != -INFINITY) a += p[s * (d_v + 2) + c] * expf(ms - mx);
    }
    o[c] = a * inv;
  }
}

// Key splits: enough blocks to fill the GPU twice over, at least kMinSplitKeys keys per split.
constexpr int64_t kMinSplitKeys = 256;
constexpr int64_t kMaxSplits = 64;
int64_t splits_for(int64_t blocks, int64_t n_ctx) {
  int64_t by_keys = (n_ctx + kMinSplitKeys - 1) / kMinSplitKeys;
  int64_t by_sms = (2 * detail::sm_count() + blocks - 1) / blocks;
  int64_t s = by_keys < by_sms ? by_keys : by_sms;
  if (s > kMaxSplits) s = kMaxSplits;
  return s < 1 ? 1 : s;
}

template <class KV>
void launch(const KV& kv, int64_t n_q, int64_t n_ctx, float scale, float* out, float* workspace,
            int64_t workspace_floats, cudaStream_t stream) {
  const int64_t blocks = n_q * kv.n_heads;
  if (blocks <= 0) return;
  const size_t smem = static_cast<size_t>(kv.d_qk + kv.d_v + kChunk) * sizeof(float);
  if (smem > 48 * 1024)
    cudaFuncSetAttribute(attention_kernel<KV>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                         static_cast<int>(smem));
  int64_t splits = splits_for(blocks, n_ctx);
  if (!workspace || splits * blocks * (kv.d_v + 2) > workspace_floats) splits = 1;
  const int64_t split_len = splits > 1 ? (n_ctx + splits - 1) / splits : (n_ctx > 0 ? n_ctx : 1);
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(splits));
  attention_kernel<KV><<<grid, kThreads, smem, stream>>>(kv, n_q, scale, out, split_len,
                                                         splits > 1 ? workspace : nullptr);
  if (splits > 1)
    combine_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(
        workspace, static_cast<int>(splits), kv.d_v, out);
}

// Causal softmax of score rows in place: row r belongs to query i = (r / q_div) % q_mod, which
// sees columns j < min(n_cols, q_start + i + 1); p = softmax(scale * s) there, 0 beyond.
__global__ void __launch_bounds__(kThreads) masked_softmax_kernel(float* s, int64_t rows,
                                                                  int64_t n_cols, int64_t ld,
                                                                  int64_t q_div, int64_t q_mod,
                                                                  int64_t q_start, float scale) {
  __shared__ float red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float* row = s + r * ld;
    const int64_t i = (r / q_div) % q_mod;
    const int64_t n_seen = q_start + i + 1 < n_cols ? q_start + i + 1 : n_cols;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < n_seen; j += blockDim.x) mx = fmaxf(mx, row[j] * scale);
    mx = detail::block_max(mx, red);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < n_seen; j += blockDim.x) {
      const float p = expf(row[j] * scale - mx);
      row[j] = p;
      sum += p;
    }
    sum = detail::block_sum(sum, red);
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (int64_t j = threadIdx.x; j < n_cols; j += blockDim.x) row[j] = j < n_seen ? row[j] * inv : 0.0f;
    __syncthreads();  // red is reused by the next row
  }
}

}  // namespace

void masked_softmax(float* s, int64_t rows, int64_t n_cols, int64_t ld, int64_t q_div,
                    int64_t q_mod, int64_t q_start, float scale, cudaStream_t stream) {
  if (rows <= 0 || n_cols <= 0) return;
  const unsigned grid = static_cast<unsigned>(rows < (1 << 20) ? rows : (1 << 20));
  masked_softmax_kernel<<<grid, kThreads, 0, stream>>>(s, rows, n_cols, ld, q_div, q_mod, q_start,
                                                       scale);
}

int64_t attention_max_dims() { return kMaxDims; }

int64_t attention_workspace_floats(int64_t n_q, int64_t n_heads, int64_t n_ctx, int64_t d_v) {
  const int64_t blocks = n_q * n_heads;
  if (blocks <= 0) return 0;
  const int64_t splits = splits_for(blocks, n_ctx);
  return splits > 1 ? splits * blocks * (d_v + 2) : 0;
}

void attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
               int64_t n_heads, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
               float* out, float* workspace, int64_t workspace_floats, cudaStream_t stream) {
  if (n_q <= 0 || n_heads <= 0 || d_v <= 0) return;
  const int64_t n_ctx = q_start + n_q < n_kv ? q_start + n_q : n_kv;
  launch(Expanded{q, k, v, n_kv, n_heads, d_qk, d_v, q_start}, n_q, n_ctx, scale, out, workspace,
         workspace_floats, stream);
}

void mla_absorbed(const float* q_lat, const float* q_pe, int64_t n_q, int64_t n_heads,
                  const float* base, const int32_t* pages, int64_t page_size, int64_t kv_lora,
                  int64_t rope_dim, int64_t q_start, float scale, float* out_lat,
                  float* workspace, int64_t workspace_floats, cudaStream_t stream) {
  if (n_q <= 0 || n_heads <= 0 || kv_lora <= 0) return;
  launch(Absorbed{q_lat, q_pe, base, pages, page_size, n_heads, kv_lora + rope_dim, kv_lora,
                  rope_dim, q_start},
         n_q, q_start + n_q, scale, out_lat, workspace, workspace_floats, stream);
}

}  // namespace dpa::kernels
