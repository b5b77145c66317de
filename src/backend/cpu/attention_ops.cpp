// CPU reference: interleaved RoPE, MLA's preparation, expanded causal attention, absorbed MLA over a paged cache.
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"

namespace dpa::backend {

void CpuBackend::rope(float* x, int64_t n, int64_t n_heads, int64_t token_stride,
                      int64_t head_stride, const int64_t* positions, const RopeParams& p) {
  const int64_t half = p.dim / 2;
  std::vector<float> cs(half), sn(half);
  for (int64_t t = 0; t < n; ++t) {
    // As transformers: angle = position · inv_freq in fp32, cos/sin times attention_scaling.
    for (int64_t i = 0; i < half; ++i) {
      const float angle = static_cast<float>(positions[t]) * p.inv_freq[i];
      cs[i] = std::cos(angle) * p.attention_scaling;
      sn[i] = std::sin(angle) * p.attention_scaling;
    }
    for (int64_t h = 0; h < n_heads; ++h) {
      float* v = x + t * token_stride + h * head_stride;
      for (int64_t i = 0; i < half; ++i) {
        const float a = v[2 * i], b = v[2 * i + 1];
        v[2 * i] = a * cs[i] - b * sn[i];
        v[2 * i + 1] = b * cs[i] + a * sn[i];
      }
    }
  }
}

// The unfused ops in their model order, over copies of the latent and rope key (kva stays).
void CpuBackend::mla_prepare(const MlaPrepare& a) {
  if (a.n <= 0) return;
  require_f32_cache(a.cache_dtype, "mla_prepare");
  const int64_t n = a.n, L = a.kv_lora, R = a.rope.dim, H = a.n_heads;
  if (a.kv_norm.cols != L) throw Error(fmt::format("mla_prepare: norm of {} for a latent of {}", a.kv_norm.cols, L));
  std::vector<float> lat(static_cast<std::size_t>(n * L)), kpe(static_cast<std::size_t>(n * R));
  for (int64_t t = 0; t < n; ++t) {
    std::copy_n(a.kva + t * a.kva_stride, L, lat.data() + t * L);
    std::copy_n(a.kva + t * a.kva_stride + L, R, kpe.data() + t * R);
  }
  rms_norm(lat.data(), a.kv_norm, n, a.eps, lat.data());
  rope(a.q + a.nope, n, H, a.q_stride, a.q_head_dim, a.positions, a.rope);
  rope(kpe.data(), n, 1, R, R, a.positions, a.rope);
  kv_write(a.cache, a.cache_dtype, L + R, a.slots, n, 0, L, lat.data(), L);
  kv_write(a.cache, a.cache_dtype, L + R, a.slots, n, L, R, kpe.data(), R);
  if (a.q_pe)
    for (int64_t t = 0; t < n; ++t)
      for (int64_t h = 0; h < H; ++h)
        std::copy_n(a.q + t * a.q_stride + h * a.q_head_dim + a.nope, R, a.q_pe + (t * H + h) * R);
}

namespace {

// In-place softmax of s[0..n) in double.
void softmax(std::vector<double>& s, int64_t n) {
  double mx = s[0];
  for (int64_t j = 1; j < n; ++j) mx = std::max(mx, s[j]);
  double sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  for (int64_t j = 0; j < n; ++j) s[j] /= sum;
}

}  // namespace

void CpuBackend::attention(const float* q, const float* k, const float* v, int64_t n_q,
                           int64_t n_kv, int64_t n_heads, int64_t d_qk, int64_t d_v,
                           int64_t q_start, float scale, float* out) {
  std::vector<double> s(n_kv), acc(d_v);
  for (int64_t i = 0; i < n_q; ++i) {
    const int64_t n_seen = std::min(n_kv, q_start + i + 1);
    for (int64_t h = 0; h < n_heads; ++h) {
      const float* qi = q + (i * n_heads + h) * d_qk;
      for (int64_t j = 0; j < n_seen; ++j) {
        const float* kj = k + (j * n_heads + h) * d_qk;
        double dot = 0;
        for (int64_t c = 0; c < d_qk; ++c) dot += static_cast<double>(qi[c]) * kj[c];
        s[j] = dot * scale;
      }
      softmax(s, n_seen);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < n_seen; ++j) {
        const float* vj = v + (j * n_heads + h) * d_v;
        for (int64_t c = 0; c < d_v; ++c) acc[c] += s[j] * vj[c];
      }
      float* o = out + (i * n_heads + h) * d_v;
      for (int64_t c = 0; c < d_v; ++c) o[c] = static_cast<float>(acc[c]);
    }
  }
}

void CpuBackend::mla_absorbed(const float* q_lat, const float* q_pe, int64_t n_q, int64_t n_heads,
                              const PagedLatent& cache, int64_t q_start, float scale,
                              float* out_lat) {
  require_f32_cache(cache.dtype, "mla_absorbed");
  const int64_t L = cache.kv_lora, R = cache.rope_dim;
  const int64_t n_ctx = q_start + n_q;
  std::vector<double> s(n_ctx), acc(L);
  for (int64_t i = 0; i < n_q; ++i) {
    const int64_t n_seen = q_start + i + 1;
    for (int64_t h = 0; h < n_heads; ++h) {
      const float* ql = q_lat + (i * n_heads + h) * L;
      const float* qp = q_pe + (i * n_heads + h) * R;
      for (int64_t j = 0; j < n_seen; ++j) {
        const float* c = cache.token(j);
        double dot = 0;
        for (int64_t a = 0; a < L; ++a) dot += static_cast<double>(ql[a]) * c[a];
        for (int64_t a = 0; a < R; ++a) dot += static_cast<double>(qp[a]) * c[L + a];
        s[j] = dot * scale;
      }
      softmax(s, n_seen);
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t j = 0; j < n_seen; ++j) {
        const float* c = cache.token(j);
        for (int64_t a = 0; a < L; ++a) acc[a] += s[j] * c[a];
      }
      float* o = out_lat + (i * n_heads + h) * L;
      for (int64_t a = 0; a < L; ++a) o[a] = static_cast<float>(acc[a]);
    }
  }
}

void CpuBackend::mla_decode(const float* q_lat, const float* q_pe, int64_t n_heads,
                            const PagedBatch& cache, float scale, float* out_lat) {
  const int64_t L = cache.kv_lora, R = cache.rope_dim;
  for (int64_t s = 0; s < cache.n_seqs; ++s) {
    PagedLatent one;
    one.base = cache.base;
    one.pages = cache.pages + cache.table_offset[s];
    one.page_size = cache.page_size;
    one.kv_lora = L;
    one.rope_dim = R;
    one.dtype = cache.dtype;
    mla_absorbed(q_lat + s * n_heads * L, q_pe + s * n_heads * R, 1, n_heads, one, cache.ctx_len[s] - 1, scale,
                 out_lat + s * n_heads * L);
  }
}

void CpuBackend::paged_write(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t start,
                             int64_t n, const float* src, int64_t lds) {
  require_f32_cache(cache.dtype, "paged_write");
  for (int64_t i = 0; i < n; ++i) std::copy_n(src + i * lds, cols, cache.token(start + i) + col0);
}

void CpuBackend::paged_gather(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t n,
                              float* out, int64_t ldo, int64_t copies, int64_t copy_stride) {
  require_f32_cache(cache.dtype, "paged_gather");
  for (int64_t j = 0; j < n; ++j)
    for (int64_t k = 0; k < copies; ++k) std::copy_n(cache.token(j) + col0, cols, out + j * ldo + k * copy_stride);
}

}  // namespace dpa::backend
