// MLA attention of one layer for this rank's heads: projections, RoPE, cache write, then per
// sequence either the expanded form (k/v rebuilt from the cached latents through kv_b_proj) or
// the absorbed form (W_UK folded into the query, W_UV applied to the attended latent); o_proj
// on the local heads' columns, all-reduced over attn_tp. Every buffer is backend memory.
#include "dist/communicator.h"
#include "model/forward.h"

namespace dpa::model {

void Model::attention(int64_t layer, const std::vector<SeqInput>& batch, const float* h,
                      int64_t n, float* out) {
  const ModelConfig& c = config();
  const LayerWeights& lw = weights_.layers[static_cast<std::size_t>(layer)];
  const int64_t Hl = weights_.n_local_heads(), D = c.hidden_size;
  const int64_t nope = c.qk_nope_head_dim, R = c.qk_rope_head_dim, dqk = c.qk_head_dim();
  const int64_t dv = c.v_head_dim, L = c.kv_lora_rank;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const float scale = static_cast<float>(c.softmax_scale());

  // q [n, Hl, dqk]
  float* q = scratch(q_, n * Hl * dqk);
  if (c.q_lora_rank > 0) {
    float* qa = scratch(qa_, n * c.q_lora_rank);
    be_.linear(h, n, lw.q_a_proj, qa);
    be_.rms_norm(qa, lw.q_a_norm, n, eps, qa);
    be_.linear(qa, n, lw.q_b_proj, q);
  } else {
    be_.linear(h, n, lw.q_proj, q);
  }
  // latent [n, L] normalized, k_pe [n, R] rotated (inside kva): written to the cache below.
  float* kva = scratch(kva_, n * (L + R));
  float* lat = scratch(lat_, n * L);
  be_.linear(h, n, lw.kv_a_proj, kva);
  be_.copy2d(lat, L, kva, L + R, n, L);
  be_.rms_norm(lat, lw.kv_a_norm, n, eps, lat);
  if (n > 0) {
    be_.rope(q + nope, n, Hl, Hl * dqk, dqk, d_pos_.data(), rope_);
    be_.rope(kva + L, n, 1, L + R, R, d_pos_.data(), rope_);
  }

  // Which sequences take the absorbed form (decode: single tokens) and which the expanded one.
  std::vector<bool> absorbed(batch.size());
  bool any_absorbed = false, all_absorbed = true;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const int64_t ns = static_cast<int64_t>(batch[i].tokens.size());
    absorbed[i] = opts_.attention == AttentionForm::absorbed ||
                  (opts_.attention == AttentionForm::automatic && ns == 1);
    if (ns > 0) any_absorbed |= absorbed[i], all_absorbed &= absorbed[i];
  }
  float* o = scratch(o_, n * Hl * dv);
  float *q_lat = nullptr, *q_pe = nullptr, *out_lat = nullptr;
  if (any_absorbed) {
    // q_lat [n, Hl, L] = q_nope · W_UK per head, q_pe [n, Hl, R]: for all n tokens at once.
    q_lat = scratch(q_lat_, n * Hl * L);
    q_pe = scratch(q_pe_, n * Hl * R);
    out_lat = scratch(out_lat_, n * Hl * L);
    float* qn = scratch(qn_, n * nope);
    float* tmp = scratch(tmp_, n * L);
    be_.copy2d(q_pe, R, q + nope, dqk, n * Hl, R);
    for (int64_t hh = 0; hh < Hl; ++hh) {
      be_.copy2d(qn, nope, q + hh * dqk, Hl * dqk, n, nope);
      be_.linear(qn, n, w_uk_[static_cast<std::size_t>(layer)].row_slice(hh * L, (hh + 1) * L), tmp);
      be_.copy2d(q_lat + hh * L, Hl * L, tmp, L, n, L);
    }
  }

  int64_t t0 = 0;
  for (std::size_t i = 0; i < batch.size(); ++i) {
    const SeqInput& s = batch[i];
    const int64_t ns = static_cast<int64_t>(s.tokens.size());
    const backend::PagedLatent view = cache_->view(layer, d_pages_.data() + page_offset_[i]);
    be_.paged_write(view, 0, L, s.start, ns, lat + t0 * L, L);
    be_.paged_write(view, L, R, s.start, ns, kva + t0 * (L + R) + L, L + R);
    if (ns == 0) continue;
    const int64_t n_ctx = s.start + ns;
    if (!absorbed[i]) {
      // Expanded: k = [k_nope from kv_b_proj, k_pe], v from kv_b_proj, for every cached position.
      float* ctx_lat = scratch(ctx_lat_, n_ctx * L);
      float* kvb = scratch(kvb_, n_ctx * Hl * (nope + dv));
      float* k = scratch(k_, n_ctx * Hl * dqk);
      float* v = scratch(v_, n_ctx * Hl * dv);
      be_.paged_gather(view, 0, L, n_ctx, ctx_lat, L);
      be_.linear(ctx_lat, n_ctx, lw.kv_b_proj, kvb);
      be_.copy2d(k, dqk, kvb, nope + dv, n_ctx * Hl, nope);
      be_.copy2d(v, dv, kvb + nope, nope + dv, n_ctx * Hl, dv);
      for (int64_t hh = 0; hh < Hl; ++hh) be_.paged_gather(view, L, R, n_ctx, k + hh * dqk + nope, Hl * dqk);
      be_.attention(q + t0 * Hl * dqk, k, v, ns, n_ctx, Hl, dqk, dv, s.start, scale, o + t0 * Hl * dv);
    } else {
      be_.mla_absorbed(q_lat + t0 * Hl * L, q_pe + t0 * Hl * R, ns, Hl, view, s.start, scale,
                       out_lat + t0 * Hl * L);
    }
    t0 += ns;
  }

  if (any_absorbed) {
    // W_UV per head over every token's attended latent; copied into o for absorbed sequences
    // (directly when every sequence is absorbed, the decode case).
    float* o_abs = all_absorbed ? o : scratch(o_abs_, n * Hl * dv);
    float* lat_h = scratch(lat_h_, n * L);
    float* vh = scratch(vh_, n * dv);
    for (int64_t hh = 0; hh < Hl; ++hh) {
      be_.copy2d(lat_h, L, out_lat + hh * L, Hl * L, n, L);
      be_.linear(lat_h, n, lw.w_uv(hh, c), vh);
      be_.copy2d(o_abs + hh * dv, Hl * dv, vh, dv, n, dv);
    }
    if (!all_absorbed) {
      t0 = 0;
      for (std::size_t i = 0; i < batch.size(); ++i) {
        const int64_t ns = static_cast<int64_t>(batch[i].tokens.size());
        if (absorbed[i] && ns > 0)
          be_.copy(o + t0 * Hl * dv, o_abs + t0 * Hl * dv, static_cast<std::size_t>(ns * Hl * dv) * sizeof(float));
        t0 += ns;
      }
    }
  }
  be_.linear(o, n, lw.o_proj, out);
  if (comms_.attn_tp && comms_.attn_tp->size() > 1)
    comms_.attn_tp->all_reduce(out, out, static_cast<std::size_t>(n * D), DType::f32,
                               dist::ReduceOp::sum);
}

}  // namespace dpa::model
