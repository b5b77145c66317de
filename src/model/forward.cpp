// Model construction, the layer loop, dense MLP and LM head.
#include "model/forward.h"

#include <fmt/format.h>

#include "core/error.h"
#include "model/rope.h"

namespace dpa::model {

Model::Model(const Checkpoint& ckpt, backend::Backend& be, const ShardSpec& shard,
             ParallelComms comms, const ForwardOptions& opts)
    : weights_(ckpt, shard), be_(be), shard_(shard), comms_(comms), opts_(opts),
      cache_(ckpt.config().num_hidden_layers, opts.n_pages, opts.page_size,
             ckpt.config().kv_lora_rank, ckpt.config().qk_rope_head_dim),
      inv_freq_(rope_inv_freq(ckpt.config())) {
  rope_.inv_freq = inv_freq_.data();
  rope_.dim = ckpt.config().qk_rope_head_dim;
  rope_.attention_scaling = rope_attention_scaling(ckpt.config());
  const int tp = comms.attn_tp ? comms.attn_tp->size() : 1;
  const int ep = comms.ep ? comms.ep->size() : 1;
  if (tp != shard.attn_tp_size || ep != shard.ep_size)
    throw Error(fmt::format("model: shard sizes attn_tp {} ep {} differ from the communicators' {} {}",
                            shard.attn_tp_size, shard.ep_size, tp, ep));
}

void Model::mlp(const MlpWeights& w, const float* h, int64_t n, float* out) {
  const int64_t I = w.gate.rows;
  std::vector<float> g(static_cast<std::size_t>(n * I)), u(g.size());
  be_.linear(h, n, w.gate, g.data());
  be_.linear(h, n, w.up, u.data());
  be_.silu_mul(g.data(), u.data(), n * I, g.data());
  be_.linear(g.data(), n, w.down, out);
}

void Model::forward(const std::vector<SeqInput>& batch, std::vector<float>& logits) {
  const ModelConfig& c = config();
  const int64_t D = c.hidden_size;
  std::vector<int32_t> ids;
  std::vector<int64_t> positions;
  for (const SeqInput& s : batch) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    if (s.start < 0 || s.start + n > c.max_position_embeddings)
      throw Error(fmt::format("sequence positions [{}, {}) beyond max_position_embeddings {}",
                              s.start, s.start + n, c.max_position_embeddings));
    if ((s.start + n + opts_.page_size - 1) / opts_.page_size > static_cast<int64_t>(s.pages.size()))
      throw Error(fmt::format("page table of {} pages too short for {} tokens", s.pages.size(),
                              s.start + n));
    for (int64_t i = 0; i < n; ++i) {
      ids.push_back(s.tokens[static_cast<std::size_t>(i)]);
      positions.push_back(s.start + i);
    }
  }
  const int64_t N = static_cast<int64_t>(ids.size());
  std::vector<float> residual(static_cast<std::size_t>(N * D)), h(residual.size()),
      out(residual.size());
  be_.embedding(weights_.embed, ids.data(), N, residual.data());
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = weights_.layers[static_cast<std::size_t>(l)];
    be_.rms_norm(residual.data(), lw.input_norm, N, static_cast<float>(c.rms_norm_eps), h.data());
    attention(l, batch, h.data(), N, positions, out.data());
    be_.add_rms_norm(residual.data(), out.data(), lw.post_attention_norm, N,
                     static_cast<float>(c.rms_norm_eps), h.data());
    if (lw.moe)
      moe(l, h.data(), N, out.data());
    else
      mlp(lw.dense, h.data(), N, out.data());
    be_.add(residual.data(), out.data(), N * D);
  }
  // LM head only on the rows whose logits are wanted.
  std::vector<int32_t> rows;
  int64_t offset = 0;
  for (const SeqInput& s : batch) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    if (s.logits == LogitsWanted::all)
      for (int64_t i = 0; i < n; ++i) rows.push_back(static_cast<int32_t>(offset + i));
    else if (s.logits == LogitsWanted::last && n > 0)
      rows.push_back(static_cast<int32_t>(offset + n - 1));
    offset += n;
  }
  const int64_t n_rows = static_cast<int64_t>(rows.size());
  std::vector<float> picked(static_cast<std::size_t>(n_rows * D));
  be_.gather_rows(residual.data(), rows.data(), n_rows, D, picked.data());
  be_.rms_norm(picked.data(), weights_.final_norm, n_rows, static_cast<float>(c.rms_norm_eps),
               picked.data());
  logits.assign(static_cast<std::size_t>(n_rows * c.vocab_size), 0.0f);
  be_.linear(picked.data(), n_rows, weights_.lm_head, logits.data());
}

}  // namespace dpa::model
