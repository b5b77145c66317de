// Loading a rank's weights from a Checkpoint: mapped views, head and expert slices, W_UK at load.
#include "model/weights.h"

#include <fmt/format.h>

#include <cstdint>
#include <cstring>

#include "core/error.h"

namespace dpa::model {

using backend::WeightView;

std::vector<WeightView*> ModelWeights::views() {
  std::vector<WeightView*> v = {&embed, &lm_head, &final_norm};
  auto mlp = [&](MlpWeights& m) { v.insert(v.end(), {&m.gate, &m.up, &m.down}); };
  for (LayerWeights& lw : layers) {
    if (lw.q_kv_a.data) v.push_back(&lw.q_kv_a);
    else v.insert(v.end(), {&lw.q_proj, &lw.kv_a_proj});
    v.insert(v.end(), {&lw.input_norm, &lw.post_attention_norm, &lw.q_a_proj, &lw.q_a_norm, &lw.q_b_proj,
                       &lw.kv_a_norm, &lw.kv_b_proj, &lw.o_proj, &lw.router});
    mlp(lw.dense);
    mlp(lw.shared);
    for (MlpWeights& e : lw.experts) mlp(e);
  }
  return v;
}

void ModelWeights::views_replaced() {
  for (LayerWeights& lw : layers) {
    if (!lw.q_kv_a.data) continue;
    const int64_t q_rows = lw.q_proj.rows;
    lw.q_proj = lw.q_kv_a.row_slice(0, q_rows);
    lw.kv_a_proj = lw.q_kv_a.row_slice(q_rows, lw.q_kv_a.rows);
  }
}

void ModelWeights::fuse_q_kv_a(LayerWeights& lw) {
  const WeightView q = lw.q_proj, kv = lw.kv_a_proj;
  if (!q.data || !kv.data || q.dtype != kv.dtype || q.cols != kv.cols || q.rows <= 0 || kv.rows <= 0) return;
  const int64_t rows = q.rows + kv.rows, cols = q.cols;
  const std::size_t row_bytes = static_cast<std::size_t>(cols) * dtype_size(q.dtype);
  unsigned char* base = nullptr;
  if (q.dtype == DType::bf16) {
    owned_bf16_.emplace_back(static_cast<std::size_t>(rows * cols));
    base = reinterpret_cast<unsigned char*>(owned_bf16_.back().data());
  } else if (q.dtype == DType::f32) {
    owned_.emplace_back(static_cast<std::size_t>(rows * cols));
    base = reinterpret_cast<unsigned char*>(owned_.back().data());
  } else {
    return;
  }
  unsigned char* dst = base;
  for (const WeightView* w : {&q, &kv})
    for (int64_t r = 0; r < w->rows; ++r, dst += row_bytes)
      std::memcpy(dst, static_cast<const unsigned char*>(w->data) + static_cast<std::size_t>(r * w->ld) * dtype_size(w->dtype),
                  row_bytes);
  lw.q_kv_a = WeightView::dense(base, q.dtype, rows, cols);
  lw.q_proj = lw.q_kv_a.row_slice(0, q.rows);
  lw.kv_a_proj = lw.q_kv_a.row_slice(q.rows, rows);
}

WeightView ModelWeights::load(const Checkpoint& ckpt, const std::string& name) {
  const TensorInfo& ti = ckpt.info(name);
  int64_t rows = 1, cols = 1;
  if (ti.shape.size() == 1) {
    cols = ti.shape[0];
  } else if (ti.shape.size() == 2) {
    rows = ti.shape[0];
    cols = ti.shape[1];
  } else {
    throw Error(fmt::format("{}: tensor {} has {} dims, expected 1 or 2", ckpt.dir(), name,
                            ti.shape.size()));
  }
  if (bf16_ && ti.dtype != DType::bf16) {
    const std::vector<float> f = ckpt.read_f32(name);
    owned_bf16_.emplace_back(f.size());
    for (std::size_t i = 0; i < f.size(); ++i) owned_bf16_.back()[i] = f32_to_bf16(f[i]);
    return WeightView::dense(owned_bf16_.back().data(), DType::bf16, rows, cols);
  }
  if (ti.dtype == DType::f32 || ti.dtype == DType::bf16) {
    const void* p = ckpt.mapped(name);
    // Views need element alignment; a misaligned tensor is copied instead.
    if (reinterpret_cast<std::uintptr_t>(p) % dtype_size(ti.dtype) == 0)
      return WeightView::dense(p, ti.dtype, rows, cols);
  }
  owned_.push_back(ckpt.read_f32(name));
  return WeightView::dense(owned_.back().data(), DType::f32, rows, cols);
}

MlpWeights ModelWeights::load_mlp(const Checkpoint& ckpt, const std::string& prefix) {
  return MlpWeights{load(ckpt, prefix + "gate_proj.weight"), load(ckpt, prefix + "up_proj.weight"),
                    load(ckpt, prefix + "down_proj.weight")};
}

namespace {

void expect_shape(const WeightView& w, int64_t rows, int64_t cols, const std::string& name) {
  if (w.rows != rows || w.cols != cols)
    throw Error(fmt::format("tensor {}: shape [{}, {}], expected [{}, {}]", name, w.rows, w.cols,
                            rows, cols));
}

}  // namespace

ModelWeights::ModelWeights(const Checkpoint& ckpt, const ShardSpec& shard, bool bf16)
    : cfg_(ckpt.config()), bf16_(bf16) {
  const ModelConfig& c = cfg_;
  const int64_t H = c.num_attention_heads, hidden = c.hidden_size;
  const int64_t dqk = c.qk_head_dim(), nope = c.qk_nope_head_dim, dv = c.v_head_dim;
  const int64_t L = c.kv_lora_rank, R = c.qk_rope_head_dim;
  if (shard.attn_tp_size <= 0 || H % shard.attn_tp_size != 0)
    throw ConfigError("dp", fmt::format("{} attention heads are not divisible by attn_tp = {}", H,
                                        shard.attn_tp_size));
  n_local_heads_ = H / shard.attn_tp_size;
  head_begin_ = shard.attn_tp_rank * n_local_heads_;
  const int64_t h0 = head_begin_, h1 = head_begin_ + n_local_heads_;
  if (c.n_routed_experts > 0) {
    if (shard.ep_size <= 0 || c.n_routed_experts % shard.ep_size != 0)
      throw ConfigError("ep", fmt::format("{} routed experts are not divisible by ep = {}",
                                          c.n_routed_experts, shard.ep_size));
    n_local_experts_ = c.n_routed_experts / shard.ep_size;
    expert_begin_ = shard.ep_rank * n_local_experts_;
  }

  embed = load(ckpt, "model.embed_tokens.weight");
  expect_shape(embed, c.vocab_size, hidden, "model.embed_tokens.weight");
  final_norm = load(ckpt, "model.norm.weight");
  lm_head = c.tie_word_embeddings && !ckpt.contains("lm_head.weight") ? embed
                                                                      : load(ckpt, "lm_head.weight");
  expect_shape(lm_head, c.vocab_size, hidden, "lm_head.weight");

  layers.resize(static_cast<std::size_t>(c.num_hidden_layers));
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    LayerWeights& lw = layers[static_cast<std::size_t>(l)];
    const std::string p = fmt::format("model.layers.{}.", l);
    lw.input_norm = load(ckpt, p + "input_layernorm.weight");
    lw.post_attention_norm = load(ckpt, p + "post_attention_layernorm.weight");
    const std::string a = p + "self_attn.";
    if (c.q_lora_rank > 0) {
      lw.q_a_proj = load(ckpt, a + "q_a_proj.weight");
      expect_shape(lw.q_a_proj, c.q_lora_rank, hidden, a + "q_a_proj.weight");
      lw.q_a_norm = load(ckpt, a + "q_a_layernorm.weight");
      const WeightView qb = load(ckpt, a + "q_b_proj.weight");
      expect_shape(qb, H * dqk, c.q_lora_rank, a + "q_b_proj.weight");
      lw.q_b_proj = qb.row_slice(h0 * dqk, h1 * dqk);
    } else {
      const WeightView q = load(ckpt, a + "q_proj.weight");
      expect_shape(q, H * dqk, hidden, a + "q_proj.weight");
      lw.q_proj = q.row_slice(h0 * dqk, h1 * dqk);
    }
    lw.kv_a_proj = load(ckpt, a + "kv_a_proj_with_mqa.weight");
    expect_shape(lw.kv_a_proj, L + R, hidden, a + "kv_a_proj_with_mqa.weight");
    if (c.q_lora_rank <= 0) fuse_q_kv_a(lw);
    lw.kv_a_norm = load(ckpt, a + "kv_a_layernorm.weight");
    const WeightView kvb = load(ckpt, a + "kv_b_proj.weight");
    expect_shape(kvb, H * (nope + dv), L, a + "kv_b_proj.weight");
    lw.kv_b_proj = kvb.row_slice(h0 * (nope + dv), h1 * (nope + dv));
    const WeightView o = load(ckpt, a + "o_proj.weight");
    expect_shape(o, hidden, H * dv, a + "o_proj.weight");
    lw.o_proj = o.col_slice(h0 * dv, h1 * dv);
    // W_UK^T per local head, so the absorbed query is one linear: q_lat = q_nope · W_UK.
    const std::size_t uk_elems = static_cast<std::size_t>(n_local_heads_ * L * nope);
    const bool uk_bf16 = lw.kv_b_proj.dtype == DType::bf16;
    if (uk_bf16) lw.w_uk_t_bf16.resize(uk_elems);
    else lw.w_uk_t.resize(uk_elems);
    const auto* kvb_bits = static_cast<const uint16_t*>(lw.kv_b_proj.data);
    for (int64_t h = 0; h < n_local_heads_; ++h)
      for (int64_t d = 0; d < nope; ++d) {
        const int64_t r = h * (nope + dv) + d;
        for (int64_t j = 0; j < L; ++j) {
          const std::size_t i = static_cast<std::size_t>((h * L + j) * nope + d);
          if (uk_bf16) lw.w_uk_t_bf16[i] = kvb_bits[r * lw.kv_b_proj.ld + j];
          else lw.w_uk_t[i] = lw.kv_b_proj.at(r, j);
        }
      }

    lw.moe = c.is_moe_layer(l);
    const std::string m = p + "mlp.";
    if (!lw.moe) {
      lw.dense = load_mlp(ckpt, m);
      expect_shape(lw.dense.gate, c.intermediate_size, hidden, m + "gate_proj.weight");
      continue;
    }
    lw.router = load(ckpt, m + "gate.weight");
    expect_shape(lw.router, c.n_routed_experts, hidden, m + "gate.weight");
    if (ckpt.contains(m + "gate.e_score_correction_bias"))
      lw.correction_bias = ckpt.read_f32(m + "gate.e_score_correction_bias");
    else if (c.topk_method == "noaux_tc")
      throw Error(fmt::format("{}: missing tensor {}gate.e_score_correction_bias (noaux_tc)",
                              ckpt.dir(), m));
    for (int64_t e = expert_begin_; e < expert_begin_ + n_local_experts_; ++e) {
      lw.experts.push_back(load_mlp(ckpt, fmt::format("{}experts.{}.", m, e)));
      expect_shape(lw.experts.back().gate, c.moe_intermediate_size, hidden,
                   fmt::format("{}experts.{}.gate_proj.weight", m, e));
    }
    lw.has_shared = c.n_shared_experts > 0;
    if (lw.has_shared) lw.shared = load_mlp(ckpt, m + "shared_experts.");
  }
}

}  // namespace dpa::model
