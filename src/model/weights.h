// The weights one rank needs, as views into the checkpoint's mapping where the stored dtype
// allows (f32, bf16), owned f32 copies otherwise (FP8 dequantized, unaligned data). A rank loads
// only its attention heads (attn_tp slice) and its routed experts (ep slice); embedding, dense
// layers, shared experts and the LM head are replicated.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "backend/backend.h"
#include "model/checkpoint.h"

namespace dpa::model {

// Which heads and experts this rank owns.
struct ShardSpec {
  int attn_tp_size = 1, attn_tp_rank = 0;
  int ep_size = 1, ep_rank = 0;
};

struct MlpWeights {  // SwiGLU: down(silu(gate x) * up x)
  backend::WeightView gate, up, down;
};

struct LayerWeights {
  backend::WeightView input_norm, post_attention_norm;
  // Attention, local heads [head_begin, head_end).
  backend::WeightView q_proj;                  // q_lora_rank == 0: [H_local*qk_head, hidden]
  // q_lora_rank == 0 and q_proj, kv_a_proj alike (dtype, width): both in one matrix, q_proj's
  // rows then kv_a_proj's, of which those two are views, so that a decode step projects both in
  // one product (Model::attention). No data otherwise.
  backend::WeightView q_kv_a;
  backend::WeightView q_a_proj, q_a_norm, q_b_proj;  // q_lora_rank > 0; q_b_proj local rows
  backend::WeightView kv_a_proj, kv_a_norm;    // [kv_lora + rope, hidden], [kv_lora]
  backend::WeightView kv_b_proj;               // local rows: [H_local*(nope + v), kv_lora]
  backend::WeightView o_proj;                  // local columns: [hidden, H_local*v]
  // W_UK^T [H_local, kv_lora, nope]: q_nope -> latent; in bf16 (an exact transpose) when
  // kv_b_proj is bf16, so that the absorbed query's GEMM runs on tensor cores; else f32.
  std::vector<float> w_uk_t;                   // f32 kv_b_proj, else empty
  std::vector<uint16_t> w_uk_t_bf16;           // bf16 kv_b_proj, else empty
  // MLP: dense, or MoE with local experts [expert_begin, expert_end).
  bool moe = false;
  MlpWeights dense;
  backend::WeightView router;                  // [n_experts, hidden]
  std::vector<float> correction_bias;          // [n_experts] (noaux_tc) or empty
  std::vector<MlpWeights> experts;             // local experts, in id order
  bool has_shared = false;
  MlpWeights shared;

  // W_UV of local head h: [v_head_dim, kv_lora], a view of kv_b_proj's rows.
  backend::WeightView w_uv(int64_t h, const ModelConfig& c) const {
    const int64_t per = c.qk_nope_head_dim + c.v_head_dim;
    return kv_b_proj.row_slice(h * per + c.qk_nope_head_dim, (h + 1) * per);
  }
};

class ModelWeights {
 public:
  // bf16: every tensor is rounded to bf16 at load (tests of the bf16 path on f32 checkpoints).
  ModelWeights(const Checkpoint& ckpt, const ShardSpec& shard, bool bf16 = false);
  ModelWeights(const ModelWeights&) = delete;
  ModelWeights& operator=(const ModelWeights&) = delete;

  const ModelConfig& config() const { return cfg_; }
  int64_t head_begin() const { return head_begin_; }
  int64_t n_local_heads() const { return n_local_heads_; }
  int64_t expert_begin() const { return expert_begin_; }
  int64_t n_local_experts() const { return n_local_experts_; }

  backend::WeightView embed, final_norm, lm_head;
  std::vector<LayerWeights> layers;

  // Every weight view, in the model's order (embedding, LM head, final norm, then per layer
  // attention, dense or shared MLP, local experts); views with no data included. A layer's
  // q_kv_a stands for q_proj and kv_a_proj where it has data: after the views were replaced
  // (Backend::prepare_weight), views_replaced() makes those two its rows again.
  std::vector<backend::WeightView*> views();
  void views_replaced();

 private:
  backend::WeightView load(const Checkpoint& ckpt, const std::string& name);
  MlpWeights load_mlp(const Checkpoint& ckpt, const std::string& prefix);
  void fuse_q_kv_a(LayerWeights& lw);

  ModelConfig cfg_;
  int64_t head_begin_ = 0, n_local_heads_ = 0, expert_begin_ = 0, n_local_experts_ = 0;
  std::deque<std::vector<float>> owned_;  // copies the views point into (stable addresses)
  std::deque<std::vector<uint16_t>> owned_bf16_;
  bool bf16_ = false;
};

}  // namespace dpa::model
