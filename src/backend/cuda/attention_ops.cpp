// CUDA backend: KV cache writes and reads, RoPE, attention (expanded, absorbed, batched decode).
#include <fmt/format.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "backend/cuda/cuda_backend_impl.h"
#include "core/error.h"
#include "kernels/batched_ops.cuh"
#include "kernels/flash_prefill.cuh"
#include "kernels/gather_scatter.cuh"
#include "kernels/mla_attention.cuh"
#include "kernels/mla_decode.cuh"
#include "kernels/mla_prepare.cuh"
#include "kernels/rope.cuh"

namespace dpa::backend {

void CudaBackend::paged_write(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t start, int64_t n,
                              const float* src, int64_t lds) {
  if (n <= 0 || cols <= 0) return;
  kernels::paged_write(cache.base, kv_bf16(cache.dtype), cache.pages, cache.page_size,
                       cache.width(), col0, cols, start, n, src, lds, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::paged_gather(const PagedLatent& cache, int64_t col0, int64_t cols, int64_t n, float* out,
                               int64_t ldo, int64_t copies, int64_t copy_stride) {
  if (n <= 0 || cols <= 0 || copies <= 0) return;
  kernels::paged_gather(cache.base, kv_bf16(cache.dtype), cache.pages, cache.page_size,
                        cache.width(), col0, cols, n, out, ldo, copies, copy_stride, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::paged_gather_many(const PagedLatent* caches, const int64_t* n, const int64_t* row0,
                                    int64_t n_seqs, int64_t col0, int64_t cols, float* out, int64_t ldo) {
  if (n_seqs <= 0 || cols <= 0) return;
  const PagedLatent& c0 = caches[0];
  std::vector<const int32_t*> pages(static_cast<std::size_t>(n_seqs));
  for (int64_t i = 0; i < n_seqs; ++i) {
    const PagedLatent& c = caches[i];
    if (c.base != c0.base || c.page_size != c0.page_size || c.width() != c0.width() || c.dtype != c0.dtype)
      return Backend::paged_gather_many(caches, n, row0, n_seqs, col0, cols, out, ldo);  // not one cache
    pages[static_cast<std::size_t>(i)] = c.pages;
  }
  kernels::paged_gather_many(c0.base, kv_bf16(c0.dtype), pages.data(), n, row0, n_seqs, c0.page_size, c0.width(),
                             col0, cols, out, ldo, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::kv_write(void* base, DType dtype, int64_t width, const int64_t* slots, int64_t n,
                           int64_t col0, int64_t cols, const float* src, int64_t lds) {
  if (n <= 0 || cols <= 0) return;
  kernels::kv_write(base, kv_bf16(dtype), width, slots, n, col0, cols, src, lds, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::mla_prepare(const MlaPrepare& a) { mla_prepare_into(a, nullptr); }

void CudaBackend::mla_prepare_uk(const MlaPrepare& a, const WeightView& w_uk, int64_t w_stride, float* q_lat) {
  const int64_t H = a.n_heads, L = w_uk.rows;
  // The nope parts rounded by the prepare kernel where linear_batched would round them itself
  // (bf16 weights, cuBLAS): the same bits in the same layout, one pass over them fewer.
  const bool fused = uk_rounded_ && a.n > 0 && H > 0 && L > 0 && w_uk.cols == a.nope && w_uk.dtype == DType::bf16 &&
                     !small_linear_takes(small_linear_args(a.q, a.q_stride, a.q_head_dim, a.n, w_uk, w_stride, H,
                                                           q_lat, H * L, L),
                                         w_uk);
  if (!fused) return Backend::mla_prepare_uk(a, w_uk, w_stride, q_lat);
  uint16_t* xb = bf16_workspace(static_cast<std::size_t>(H * a.n * a.nope));
  mla_prepare_into(a, xb);
  linear_batched_from(a.q, a.q_stride, a.q_head_dim, a.n, w_uk, w_stride, H, q_lat, H * L, L, xb);
}

void CudaBackend::mla_prepare_into(const MlaPrepare& a, uint16_t* q_nope_hm) {
  if (a.n <= 0) return;
  check_weight(a.kv_norm, "mla_prepare norm");
  if (a.kv_norm.cols != a.kv_lora)
    throw Error(fmt::format("mla_prepare: norm of {} for a latent of {}", a.kv_norm.cols, a.kv_lora));
  kernels::MlaPrepareArgs k;
  k.n = a.n, k.q = a.q, k.n_heads = a.n_heads, k.q_stride = a.q_stride, k.q_head_dim = a.q_head_dim;
  k.nope = a.nope, k.q_pe = a.q_pe, k.kva = a.kva, k.kva_stride = a.kva_stride, k.kv_lora = a.kv_lora;
  k.rope_dim = a.rope.dim, k.norm = a.kv_norm.data, k.norm_bf16 = a.kv_norm.dtype == DType::bf16;
  k.eps = a.eps, k.scaling = a.rope.attention_scaling, k.positions = a.positions, k.inv_freq = a.rope.inv_freq;
  k.cache = a.cache, k.cache_bf16 = kv_bf16(a.cache_dtype), k.slots = a.slots, k.q_nope_hm = q_nope_hm;
  kernels::mla_prepare(k, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::rope(float* x, int64_t n, int64_t n_heads, int64_t token_stride, int64_t head_stride,
                       const int64_t* positions, const RopeParams& p) {
  if (n <= 0 || n_heads <= 0 || p.dim <= 1) return;
  kernels::rope(x, n, n_heads, token_stride, head_stride, positions, p.inv_freq, p.dim,
                p.attention_scaling, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                            int64_t n_heads, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
                            float* out) {
  if (n_q <= 0 || n_heads <= 0) return;
  if (flash_applies(d_qk, d_v, out, n_heads)) {
    const PackedSeq s{0, n_q, 0, n_kv, q_start};
    return attention_packed(q, k, v, &s, 1, n_heads, d_qk, d_v, scale, out);
  }
  const int64_t n_ctx = std::min(q_start + n_q, n_kv);
  if (use_gemm(n_ctx)) return attention_gemm(q, k, v, n_q, n_kv, n_heads, d_qk, d_v, q_start, scale, out);
  check_dims(d_qk, d_v, "attention");
  const int64_t ws = kernels::attention_workspace_floats(n_q, n_heads, n_ctx, d_v);
  kernels::attention(q, k, v, n_q, n_kv, n_heads, d_qk, d_v, q_start, scale, out,
                     scratch(ws), ws, stream_);
  DPA_CHECK_LAUNCH();
}

bool CudaBackend::flash_applies(int64_t d_qk, int64_t d_v, const float* out, int64_t n_heads) const {
  return attention_tf32_ && attn_mode_ == AttnMode::automatic &&
         kernels::flash_prefill_supported(d_qk, d_v, out, n_heads);
}

void CudaBackend::attention_packed(const float* q, const float* k, const float* v, const PackedSeq* seqs,
                                   int64_t n_seqs, int64_t n_heads, int64_t d_qk, int64_t d_v, float scale,
                                   float* out) {
  if (n_seqs <= 0 || n_heads <= 0) return;
  if (!flash_applies(d_qk, d_v, out, n_heads))
    return Backend::attention_packed(q, k, v, seqs, n_seqs, n_heads, d_qk, d_v, scale, out);
  std::vector<kernels::FlashSeq> fs(static_cast<std::size_t>(n_seqs));
  for (std::size_t i = 0; i < fs.size(); ++i)
    fs[i] = kernels::FlashSeq{seqs[i].q0, seqs[i].n_q, seqs[i].kv0, seqs[i].n_kv, seqs[i].q_start};
  const int64_t ws = kernels::flash_prefill_workspace(fs.data(), n_seqs, n_heads, d_qk, d_v);
  kernels::flash_prefill(q, k, v, fs.data(), n_seqs, n_heads, d_qk, d_v, scale, out,
                         reinterpret_cast<uint16_t*>(scratch((ws + 1) / 2)), stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::attention_packed_mla(const float* q, const float* kvb, const float* k_pe, const PackedSeq* seqs,
                                       int64_t n_seqs, int64_t n_heads, int64_t nope, int64_t rope, int64_t d_v,
                                       float scale, float* k, float* v, float* out) {
  if (n_seqs <= 0 || n_heads <= 0) return;
  const int64_t dqk = nope + rope;
  std::vector<kernels::FlashSeq> fs(static_cast<std::size_t>(n_seqs));
  int64_t rows = 0;
  for (std::size_t i = 0; i < fs.size(); ++i) {
    fs[i] = kernels::FlashSeq{seqs[i].q0, seqs[i].n_q, seqs[i].kv0, seqs[i].n_kv, seqs[i].q_start};
    rows = std::max(rows, seqs[i].kv0 + seqs[i].n_kv);
  }
  if (!flash_applies(dqk, d_v, out, n_heads)) {  // k and v built in f32 where the caller said
    kernels::expand_mla_kv(kvb, k_pe, rows, n_heads, nope, rope, d_v, k, v, stream_);
    DPA_CHECK_LAUNCH();
    return attention_packed(q, k, v, seqs, n_seqs, n_heads, dqk, d_v, scale, out);
  }
  // The flash kernel's bf16 keys and values built straight from kvb and k_pe (k and v unused).
  const int64_t ws = kernels::flash_prefill_workspace(fs.data(), n_seqs, n_heads, dqk, d_v);
  kernels::flash_prefill_mla(q, kvb, k_pe, fs.data(), n_seqs, n_heads, nope, rope, d_v, scale, out,
                             reinterpret_cast<uint16_t*>(scratch((ws + 1) / 2)), stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::mla_absorbed(const float* q_lat, const float* q_pe, int64_t n_q, int64_t n_heads,
                               const PagedLatent& cache, int64_t q_start, float scale,
                               float* out_lat) {
  if (n_q <= 0 || n_heads <= 0) return;
  // A bf16 cache is read by the GEMM form (its rows gathered into f32 first).
  if (kv_bf16(cache.dtype) || use_gemm(q_start + n_q))
    return mla_gemm(q_lat, q_pe, n_q, n_heads, cache, q_start, scale, out_lat);
  check_dims(cache.width(), cache.kv_lora, "mla_absorbed");
  const int64_t ws =
      kernels::attention_workspace_floats(n_q, n_heads, q_start + n_q, cache.kv_lora);
  kernels::mla_absorbed(q_lat, q_pe, n_q, n_heads, static_cast<const float*>(cache.base),
                        cache.pages, cache.page_size,
                        cache.kv_lora, cache.rope_dim, q_start, scale, out_lat,
                        scratch(ws), ws, stream_);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::mla_decode(const float* q_lat, const float* q_pe, int64_t n_heads, const PagedBatch& c,
                             float scale, float* out_lat) {
  if (c.n_seqs <= 0 || n_heads <= 0) return;
  if (mla_wgmma_takes(n_heads, c)) {
    const int64_t ws = kernels::mla_decode_wgmma_workspace_floats(c.n_seqs, n_heads, c.max_ctx_len);
    kernels::mla_decode_wgmma(q_lat, q_pe, c.n_seqs, n_heads, static_cast<const uint16_t*>(c.base), c.pages,
                              c.table_offset, c.ctx_len, c.page_size, c.max_ctx_len, scale, out_lat, scratch(ws),
                              ws, stream_, mla_wgmma_form_, c.pool_rows);
    DPA_CHECK_LAUNCH();
    return;
  }
  if (mla_bf16_takes(c)) {
    mla_decode_bf16_into(q_lat, q_pe, n_heads, c, scale, out_lat, nullptr);
    return;
  }
  if (!kv_bf16(c.dtype) && kernels::mla_decode_supported(c.kv_lora, c.rope_dim, c.base)) {
    const int64_t ws = kernels::mla_decode_workspace_floats(c.n_seqs, n_heads, c.max_ctx_len,
                                                            c.kv_lora, mla_decode_variant_);
    kernels::mla_decode(q_lat, q_pe, c.n_seqs, n_heads, static_cast<const float*>(c.base), c.pages, c.table_offset,
                        c.ctx_len, c.page_size, c.kv_lora, c.rope_dim, c.max_ctx_len, scale,
                        out_lat, scratch(ws), ws, stream_, mla_decode_variant_);
    DPA_CHECK_LAUNCH();
    return;
  }
  // Shapes the fused kernels do not take: the plain kernel (no host round trip, so recordable).
  if (kernels::mla_decode_any_supported(c.kv_lora, c.rope_dim)) {
    kernels::mla_decode_any(q_lat, q_pe, c.n_seqs, n_heads, c.base, kv_bf16(c.dtype), c.pages, c.table_offset,
                            c.ctx_len, c.page_size, c.kv_lora, c.rope_dim, scale, out_lat, stream_);
    DPA_CHECK_LAUNCH();
    return;
  }
  // Latents too wide even for it: one mla_absorbed per sequence (host round trip).
  std::vector<int32_t> off(c.n_seqs), len(c.n_seqs);
  download(off.data(), c.table_offset, off.size() * sizeof(int32_t));
  download(len.data(), c.ctx_len, len.size() * sizeof(int32_t));
  const int64_t L = c.kv_lora, R = c.rope_dim;
  for (int64_t s = 0; s < c.n_seqs; ++s) {
    PagedLatent one;
    one.base = c.base;
    one.pages = c.pages + off[s];
    one.page_size = c.page_size;
    one.kv_lora = L;
    one.rope_dim = R;
    one.dtype = c.dtype;
    mla_absorbed(q_lat + s * n_heads * L, q_pe + s * n_heads * R, 1, n_heads, one, len[s] - 1,
                 scale, out_lat + s * n_heads * L);
  }
}

bool CudaBackend::mla_wgmma_takes(int64_t n_heads, const PagedBatch& c) const {
  return kv_bf16(c.dtype) && reinterpret_cast<uintptr_t>(c.base) % 16 == 0 && mla_wgmma_ != MlaWgmma::never &&
         (mla_wgmma_ != MlaWgmma::automatic || n_heads >= kWgmmaMinHeads) &&
         kernels::mla_decode_wgmma_supported(n_heads, c.kv_lora, c.rope_dim);
}

bool CudaBackend::mla_bf16_takes(const PagedBatch& c) const {
  return kv_bf16(c.dtype) && kernels::mla_decode_bf16_supported(c.kv_lora, c.rope_dim) &&
         reinterpret_cast<uintptr_t>(c.base) % 16 == 0;
}

void CudaBackend::mla_decode_bf16_into(const float* q_lat, const float* q_pe, int64_t n_heads, const PagedBatch& c,
                                       float scale, float* out_lat, uint16_t* out_hm) {
  const int64_t ws = kernels::mla_decode_bf16_workspace_floats(c.n_seqs, n_heads, c.max_ctx_len, c.kv_lora,
                                                               c.rope_dim, mla_bf16_stages_);
  kernels::mla_decode_bf16(q_lat, q_pe, c.n_seqs, n_heads, static_cast<const uint16_t*>(c.base), c.pages,
                           c.table_offset, c.ctx_len, c.page_size, c.kv_lora, c.rope_dim, c.max_ctx_len, scale,
                           out_lat, scratch(ws), ws, stream_, mla_bf16_stages_, mla_bf16_bulk_, out_hm);
  DPA_CHECK_LAUNCH();
}

void CudaBackend::mla_decode_uv(const float* q_lat, const float* q_pe, int64_t n_heads, const PagedBatch& c,
                                float scale, float* out_lat, const WeightView& w_uv, int64_t w_stride, float* o,
                                int64_t ldo, int64_t stride_o, const LinearOut* o_proj) {
  const int64_t L = c.kv_lora, n = c.n_seqs;
  // The latents rounded by the decode kernel where linear_batched would round them itself (bf16
  // weights, cuBLAS): the same bits in the same layout, one pass over them fewer.
  const bool fused =
      n > 0 && n_heads > 0 && w_uv.rows > 0 && w_uv.cols == L && w_uv.dtype == DType::bf16 &&
      !mla_wgmma_takes(n_heads, c) && mla_bf16_takes(c) &&
      !small_linear_takes(small_linear_args(out_lat, n_heads * L, L, n, w_uv, w_stride, n_heads, o, ldo, stride_o),
                          w_uv);
  if (!fused)
    return Backend::mla_decode_uv(q_lat, q_pe, n_heads, c, scale, out_lat, w_uv, w_stride, o, ldo, stride_o, o_proj);
  if (o_proj && o_proj->w->cols != ldo)
    throw Error(fmt::format("mla_decode_uv: an output projection of width {} for rows of {}", o_proj->w->cols, ldo));
  // And o written rounded by the value projection's GEMM where linear would round it for cuBLAS:
  // the accumulators rounded once, as f32_to_bf16 rounds them, one f32 write and pass fewer.
  const WeightView* wo = o_proj ? o_proj->w : nullptr;
  const bool o_rounded = wo && o_rounded_ && wo->rows > 0 && wo->dtype == DType::bf16 &&
                         !small_linear_takes(small_linear_args(o, ldo, 0, n, *wo, 0, 1, o_proj->y, wo->rows, 0), *wo);
  uint16_t* xb = bf16_workspace(static_cast<std::size_t>(n_heads * n * L), o_rounded ? 1 : 0);
  mla_decode_bf16_into(q_lat, q_pe, n_heads, c, scale, nullptr, xb);
  if (!o_rounded) {
    linear_batched_from(out_lat, n_heads * L, L, n, w_uv, w_stride, n_heads, o, ldo, stride_o, xb);
    if (o_proj) linear(o, n, *wo, o_proj->y);
    return;
  }
  check_weight(w_uv, "mla_decode_uv");
  uint16_t* ob = bf16_workspace(static_cast<std::size_t>(n * ldo));
  bf16_gemm_batched(xb, n, w_uv, w_stride, n_heads, ob, true, ldo, stride_o);
  linear_many_from(nullptr, ob, n, std::span<const LinearOut>(o_proj, 1));
}

bool CudaBackend::use_gemm(int64_t n_ctx) const {
  if (n_ctx <= 0) return false;
  return attn_mode_ == AttnMode::gemm || (attn_mode_ == AttnMode::automatic && n_ctx >= kGemmMinCtx);
}

void CudaBackend::sgemm_xat(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* x,
                            int64_t ldx, float beta, float* y, int64_t ldy) {
  const float one = 1.0f;
  DPA_CHECK_CUBLAS(cublasSgemm(cublas_, CUBLAS_OP_T, CUBLAS_OP_N, to_int(m, "m"), to_int(n, "n"),
                               to_int(k, "k"), &one, a, to_int(lda, "lda"), x, to_int(ldx, "ldx"),
                               &beta, y, to_int(ldy, "ldy")));
}

void CudaBackend::mla_gemm(const float* q_lat, const float* q_pe, int64_t n_q, int64_t H,
                           const PagedLatent& cache, int64_t q_start, float scale, float* out) {
  const AttentionMath math(cublas_, attention_tf32_);
  const int64_t L = cache.kv_lora, R = cache.rope_dim, W = L + R, n_ctx = q_start + n_q;
  const int64_t qc = std::clamp<int64_t>(kScoreCap / (H * n_ctx), 1, n_q);
  float* c = scratch(n_ctx * W + qc * H * n_ctx);
  float* sc = c + n_ctx * W;
  kernels::paged_gather(cache.base, kv_bf16(cache.dtype), cache.pages, cache.page_size, W, 0, W,
                        n_ctx, c, W, 1, 0, stream_);
  DPA_CHECK_LAUNCH();
  const float one = 1.0f, zero = 0.0f;
  for (int64_t i0 = 0; i0 < n_q; i0 += qc) {
    const int64_t i1 = std::min(n_q, i0 + qc), rows = (i1 - i0) * H, n_cols = q_start + i1;
    sgemm_xat(n_cols, rows, L, c, W, q_lat + i0 * H * L, L, 0.0f, sc, n_cols);
    if (R > 0) sgemm_xat(n_cols, rows, R, c + L, W, q_pe + i0 * H * R, R, 1.0f, sc, n_cols);
    kernels::masked_softmax(sc, rows, n_cols, n_cols, H, n_q, q_start + i0, scale, stream_);
    DPA_CHECK_LAUNCH();
    // Row-major O[rows, L] = P[rows, n_cols] · C_lat[n_cols, L] is, column-major,
    // O^T = C_lat^T (L x n_cols, ld W) · P^T (n_cols x rows, ld n_cols).
    DPA_CHECK_CUBLAS(cublasSgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, to_int(L, "L"),
                                 to_int(rows, "rows"), to_int(n_cols, "n_cols"), &one, c,
                                 to_int(W, "W"), sc, to_int(n_cols, "n_cols"), &zero,
                                 out + i0 * H * L, to_int(L, "L")));
  }
}

void CudaBackend::attention_gemm(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                                 int64_t H, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
                                 float* out) {
  const AttentionMath math(cublas_, attention_tf32_);
  const int64_t n_ctx = std::min(q_start + n_q, n_kv);
  const int64_t qc = std::clamp<int64_t>(kScoreCap / (H * n_ctx), 1, n_q);
  float* sc = scratch(qc * H * n_ctx);
  const float one = 1.0f, zero = 0.0f;
  const int hh = to_int(H, "heads"), ldq = to_int(H * d_qk, "H*d_qk"), ldv = to_int(H * d_v, "H*d_v");
  for (int64_t i0 = 0; i0 < n_q; i0 += qc) {
    const int64_t i1 = std::min(n_q, i0 + qc), nq = i1 - i0;
    const int64_t n_cols = std::min(n_kv, q_start + i1);
    DPA_CHECK_CUBLAS(cublasSgemmStridedBatched(
        cublas_, CUBLAS_OP_T, CUBLAS_OP_N, to_int(n_cols, "n_cols"), to_int(nq, "nq"),
        to_int(d_qk, "d_qk"), &one, k, ldq, d_qk, q + i0 * H * d_qk, ldq, d_qk, &zero, sc,
        to_int(n_cols, "n_cols"), nq * n_cols, hh));
    kernels::masked_softmax(sc, H * nq, n_cols, n_cols, 1, nq, q_start + i0, scale, stream_);
    DPA_CHECK_LAUNCH();
    DPA_CHECK_CUBLAS(cublasSgemmStridedBatched(
        cublas_, CUBLAS_OP_N, CUBLAS_OP_N, to_int(d_v, "d_v"), to_int(nq, "nq"),
        to_int(n_cols, "n_cols"), &one, v, ldv, d_v, sc, to_int(n_cols, "n_cols"), nq * n_cols,
        &zero, out + i0 * H * d_v, ldv, d_v, hh));
  }
}

void CudaBackend::check_dims(int64_t d_qk, int64_t d_v, const char* op) {
  if (d_qk + d_v > kernels::attention_max_dims())
    throw Error(fmt::format("cuda backend {}: head dims {} + {} exceed {}", op, d_qk, d_v,
                            kernels::attention_max_dims()));
}

}  // namespace dpa::backend
