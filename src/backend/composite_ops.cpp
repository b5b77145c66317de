// Ops composed of other Backend ops, shared by the backends.
#include "backend/backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdint>

#include "core/error.h"

namespace dpa::backend {

void Backend::attention_packed(const float* q, const float* k, const float* v, const PackedSeq* seqs,
                               int64_t n_seqs, int64_t n_heads, int64_t d_qk, int64_t d_v, float scale, float* out) {
  for (int64_t i = 0; i < n_seqs; ++i) {
    const PackedSeq& s = seqs[i];
    attention(q + s.q0 * n_heads * d_qk, k + s.kv0 * n_heads * d_qk, v + s.kv0 * n_heads * d_v, s.n_q, s.n_kv,
              n_heads, d_qk, d_v, s.q_start, scale, out + s.q0 * n_heads * d_v);
  }
}

void Backend::attention_packed_mla(const float* q, const float* kvb, const float* k_pe, const PackedSeq* seqs,
                                   int64_t n_seqs, int64_t n_heads, int64_t nope, int64_t rope, int64_t d_v,
                                   float scale, float* k, float* v, float* out) {
  int64_t rows = 0;
  for (int64_t i = 0; i < n_seqs; ++i) rows = std::max(rows, seqs[i].kv0 + seqs[i].n_kv);
  const int64_t dqk = nope + rope;
  copy2d(k, dqk, kvb, nope + d_v, rows * n_heads, nope);
  copy2d(v, d_v, kvb + nope, nope + d_v, rows * n_heads, d_v);
  for (int64_t h = 0; h < n_heads; ++h) copy2d(k + h * dqk + nope, n_heads * dqk, k_pe, rope, rows, rope);
  attention_packed(q, k, v, seqs, n_seqs, n_heads, dqk, d_v, scale, out);
}

void check_expert_rows(const char* op, DType x_dtype, int64_t x_div, int64_t out_rows) {
  if (x_dtype == DType::f32) return;
  if (x_dtype != DType::bf16 || x_div != 1 || out_rows <= 0)
    throw Error(fmt::format("{}: {} rows with row divisor {} and {} result rows (bf16 rows need 1 and the rows' "
                            "count)", op, dtype_name(x_dtype), x_div, out_rows));
}

void check_ep_layout(const char* op, int64_t n_peers, int64_t per_peer, int64_t capacity, int64_t x_div) {
  if (n_peers < 1 || per_peer < 1 || capacity < 0 || x_div < 1)
    throw Error(fmt::format("{}: {} peers of {} experts, capacity {}, row divisor {}", op, n_peers, per_peer,
                            capacity, x_div));
  if (n_peers * capacity > INT32_MAX)
    throw Error(fmt::format("{}: {} peers x {} rows do not fit 32-bit row ids", op, n_peers, capacity));
}

std::size_t check_ep_peers(const char* op, int64_t n_peers, int64_t per_peer, int64_t capacity, int64_t stride,
                           int64_t d, DType rows) {
  const std::size_t row = ep_row_bytes(op, d, rows);
  if (stride < capacity + 1 || per_peer < 0 || static_cast<std::size_t>(per_peer) * sizeof(int64_t) > row ||
      row % sizeof(int64_t) != 0)
    throw Error(fmt::format("{}: blocks of {} rows for {} rows and a header; {} counts in rows of {} {} values", op,
                            stride, capacity, per_peer, d, dtype_name(rows)));
  if (n_peers * stride > INT32_MAX)
    throw Error(fmt::format("{}: {} peers x {} rows do not fit 32-bit row ids", op, n_peers, stride));
  return row;
}

std::size_t ep_result_row_bytes(const char* op, int64_t d, DType dtype) {
  if (dtype == DType::f32) return static_cast<std::size_t>(d) * sizeof(float);
  if (dtype == DType::bf16 && d % 2 == 0) return static_cast<std::size_t>(d) * sizeof(uint16_t);
  throw Error(fmt::format("{}: result rows of {} {} values (f32, or bf16 with an even count)", op, d,
                          dtype_name(dtype)));
}

std::size_t ep_row_bytes(const char* op, int64_t d, DType dtype) {
  if (dtype == DType::f32) return static_cast<std::size_t>(d) * sizeof(float);
  if (dtype == DType::bf16 && d % 4 == 0) return static_cast<std::size_t>(d) * sizeof(uint16_t);
  throw Error(fmt::format("{}: rows of {} {} values (f32, or bf16 with a multiple of 4)", op, d, dtype_name(dtype)));
}

void Backend::paged_gather_many(const PagedLatent* caches, const int64_t* n, const int64_t* row0, int64_t n_seqs,
                                int64_t col0, int64_t cols, float* out, int64_t ldo) {
  for (int64_t i = 0; i < n_seqs; ++i) paged_gather(caches[i], col0, cols, n[i], out + row0[i] * ldo, ldo, 1, 0);
}

void Backend::linear_many(const float* x, int64_t n, std::span<const LinearOut> outs) {
  for (const LinearOut& o : outs) linear(x, n, *o.w, o.y);
}

void Backend::norm_linear(float* residual, const float* x, const WeightView& w, int64_t n, float eps, float* out,
                          std::span<const LinearOut> outs) {
  if (residual) add_rms_norm(residual, x, w, n, eps, out);
  else rms_norm(x, w, n, eps, out);
  linear_many(out, n, outs);
}

void Backend::mla_prepare_uk(const MlaPrepare& a, const WeightView& w_uk, int64_t w_stride, float* q_lat) {
  mla_prepare(a);
  linear_batched(a.q, a.q_stride, a.q_head_dim, a.n, w_uk, w_stride, a.n_heads, q_lat, a.n_heads * w_uk.rows,
                 w_uk.rows);
}

void Backend::mla_decode_uv(const float* q_lat, const float* q_pe, int64_t n_heads, const PagedBatch& cache,
                            float scale, float* out_lat, const WeightView& w_uv, int64_t w_stride, float* o,
                            int64_t ldo, int64_t stride_o, const LinearOut* o_proj) {
  mla_decode(q_lat, q_pe, n_heads, cache, scale, out_lat);
  linear_batched(out_lat, n_heads * cache.kv_lora, cache.kv_lora, cache.n_seqs, w_uv, w_stride, n_heads, o, ldo,
                 stride_o);
  if (!o_proj) return;
  if (o_proj->w->cols != ldo)
    throw Error(fmt::format("mla_decode_uv: an output projection of width {} for rows of {}", o_proj->w->cols, ldo));
  linear(o, cache.n_seqs, *o_proj->w, o_proj->y);
}

std::vector<uint8_t> Backend::export_memory(void*) {
  throw Error(fmt::format("the {} backend shares no memory between processes", name()));
}
void* Backend::import_memory(const std::vector<uint8_t>&) {
  throw Error(fmt::format("the {} backend shares no memory between processes", name()));
}
void Backend::release_imported(void*) {}

void moe_experts_per_expert(Backend& be, const float* x, const int32_t* order, int64_t x_div,
                            const int64_t* counts, int64_t n_experts, const WeightView* gate, const WeightView* up,
                            const WeightView* down, float* out,
                            const std::function<float*(std::size_t floats)>& workspace) {
  int64_t pos = 0;
  for (int64_t e = 0; e < n_experts; ++e) {
    const int64_t cnt = counts[e];
    if (cnt == 0) continue;
    const int64_t D = gate[e].cols, I = gate[e].rows;
    float* xe = workspace(static_cast<std::size_t>(cnt * (2 * D + 2 * I)));
    float *ge = xe + cnt * D, *ue = ge + cnt * I, *ye = ue + cnt * I;
    be.gather_rows_div(x, order + pos, x_div, cnt, D, xe);
    be.linear(xe, cnt, gate[e], ge);
    be.linear(xe, cnt, up[e], ue);
    be.silu_mul(ge, ue, cnt * I, ge);
    be.linear(ge, cnt, down[e], ye);
    be.scatter_rows(ye, order + pos, cnt, D, out);
    pos += cnt;
  }
}

}  // namespace dpa::backend
