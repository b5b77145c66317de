// MLA attention of one layer for this rank's heads: projections, RoPE, cache write, then per
// sequence either the expanded form (k/v rebuilt from the cached latents through kv_b_proj) or
// the absorbed form (W_UK folded into the query, W_UV applied to the attended latent); o_proj
// on the local heads' columns, all-reduced over attn_tp.
#include <algorithm>

#include "dist/communicator.h"
#include "model/forward.h"

namespace dpa::model {

void Model::attention(int64_t layer, const std::vector<SeqInput>& batch, const float* h,
                      int64_t n, const std::vector<int64_t>& positions, float* out) {
  const ModelConfig& c = config();
  const LayerWeights& lw = weights_.layers[static_cast<std::size_t>(layer)];
  const int64_t Hl = weights_.n_local_heads(), D = c.hidden_size;
  const int64_t nope = c.qk_nope_head_dim, R = c.qk_rope_head_dim, dqk = c.qk_head_dim();
  const int64_t dv = c.v_head_dim, L = c.kv_lora_rank;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = static_cast<float>(c.softmax_scale());

  // q [n, Hl, dqk]
  std::vector<float> q(static_cast<std::size_t>(n * Hl * dqk));
  if (c.q_lora_rank > 0) {
    std::vector<float> qa(static_cast<std::size_t>(n * c.q_lora_rank));
    be_.linear(h, n, lw.q_a_proj, qa.data());
    be_.rms_norm(qa.data(), lw.q_a_norm, n, eps, qa.data());
    be_.linear(qa.data(), n, lw.q_b_proj, q.data());
  } else {
    be_.linear(h, n, lw.q_proj, q.data());
  }
  // latent [n, L] normalized, k_pe [n, R] rotated: written to the cache at each position.
  std::vector<float> kva(static_cast<std::size_t>(n * (L + R))), lat(static_cast<std::size_t>(n * L));
  be_.linear(h, n, lw.kv_a_proj, kva.data());
  for (int64_t t = 0; t < n; ++t)
    std::copy_n(kva.data() + t * (L + R), L, lat.data() + t * L);
  be_.rms_norm(lat.data(), lw.kv_a_norm, n, eps, lat.data());
  if (n > 0) {
    be_.rope(q.data() + nope, n, Hl, Hl * dqk, dqk, positions.data(), rope_);
    be_.rope(kva.data() + L, n, 1, L + R, R, positions.data(), rope_);
  }

  std::vector<float> o(static_cast<std::size_t>(n * Hl * dv));
  int64_t t0 = 0;
  for (const SeqInput& s : batch) {
    const int64_t ns = static_cast<int64_t>(s.tokens.size());
    const int64_t n_table = static_cast<int64_t>(s.pages.size());
    for (int64_t i = 0; i < ns; ++i) {
      float* slot = cache_.slot(layer, s.pages.data(), n_table, s.start + i);
      std::copy_n(lat.data() + (t0 + i) * L, L, slot);
      std::copy_n(kva.data() + (t0 + i) * (L + R) + L, R, slot + L);
    }
    if (ns == 0) continue;
    const bool absorbed = opts_.attention == AttentionForm::absorbed ||
                          (opts_.attention == AttentionForm::automatic && ns == 1);
    const float* qs = q.data() + t0 * Hl * dqk;
    float* os = o.data() + t0 * Hl * dv;
    const backend::PagedLatent view = cache_.view(layer, s.pages.data());
    const int64_t n_ctx = s.start + ns;
    if (!absorbed) {
      // Expanded: k = [k_nope from kv_b_proj, k_pe], v from kv_b_proj, for every cached position.
      std::vector<float> ctx_lat(static_cast<std::size_t>(n_ctx * L));
      std::vector<float> kvb(static_cast<std::size_t>(n_ctx * Hl * (nope + dv)));
      std::vector<float> k(static_cast<std::size_t>(n_ctx * Hl * dqk)), v(static_cast<std::size_t>(n_ctx * Hl * dv));
      for (int64_t j = 0; j < n_ctx; ++j) std::copy_n(view.token(j), L, ctx_lat.data() + j * L);
      be_.linear(ctx_lat.data(), n_ctx, lw.kv_b_proj, kvb.data());
      for (int64_t j = 0; j < n_ctx; ++j)
        for (int64_t hh = 0; hh < Hl; ++hh) {
          const float* src = kvb.data() + (j * Hl + hh) * (nope + dv);
          float* kd = k.data() + (j * Hl + hh) * dqk;
          std::copy_n(src, nope, kd);
          std::copy_n(view.token(j) + L, R, kd + nope);
          std::copy_n(src + nope, dv, v.data() + (j * Hl + hh) * dv);
        }
      be_.attention(qs, k.data(), v.data(), ns, n_ctx, Hl, dqk, dv, s.start, scale, os);
    } else {
      // Absorbed: q_lat = q_nope · W_UK per head, attend over latents, then W_UV.
      std::vector<float> q_lat(static_cast<std::size_t>(ns * Hl * L)), q_pe(static_cast<std::size_t>(ns * Hl * R));
      std::vector<float> qn(static_cast<std::size_t>(ns * nope)), tmp(static_cast<std::size_t>(ns * L));
      for (int64_t hh = 0; hh < Hl; ++hh) {
        for (int64_t i = 0; i < ns; ++i) {
          std::copy_n(qs + (i * Hl + hh) * dqk, nope, qn.data() + i * nope);
          std::copy_n(qs + (i * Hl + hh) * dqk + nope, R, q_pe.data() + (i * Hl + hh) * R);
        }
        const auto w_uk = backend::WeightView::dense(lw.w_uk_t.data() + hh * L * nope, DType::f32, L, nope);
        be_.linear(qn.data(), ns, w_uk, tmp.data());
        for (int64_t i = 0; i < ns; ++i)
          std::copy_n(tmp.data() + i * L, L, q_lat.data() + (i * Hl + hh) * L);
      }
      std::vector<float> out_lat(static_cast<std::size_t>(ns * Hl * L));
      be_.mla_absorbed(q_lat.data(), q_pe.data(), ns, Hl, view, s.start, scale, out_lat.data());
      std::vector<float> lat_h(static_cast<std::size_t>(ns * L)), vh(static_cast<std::size_t>(ns * dv));
      for (int64_t hh = 0; hh < Hl; ++hh) {
        for (int64_t i = 0; i < ns; ++i)
          std::copy_n(out_lat.data() + (i * Hl + hh) * L, L, lat_h.data() + i * L);
        be_.linear(lat_h.data(), ns, lw.w_uv(hh, c), vh.data());
        for (int64_t i = 0; i < ns; ++i) std::copy_n(vh.data() + i * dv, dv, os + (i * Hl + hh) * dv);
      }
    }
    t0 += ns;
  }
  be_.linear(o.data(), n, lw.o_proj, out);
  if (comms_.attn_tp && comms_.attn_tp->size() > 1)
    comms_.attn_tp->all_reduce(out, out, static_cast<std::size_t>(n * D), DType::f32,
                               dist::ReduceOp::sum);
}

}  // namespace dpa::model
