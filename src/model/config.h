// DeepSeek-V2/V3 model configuration, read from a Hugging Face `config.json` (transformers 4.x
// with `rope_scaling`, 5.x with `rope_parameters` / `rope_interleave`). Every value the forward
// uses comes from here; nothing is hard-coded per model.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace dpa::model {

struct RopeScaling {
  std::string type;  // "" (none) or "yarn"
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

struct ModelConfig {
  std::string architecture;  // "DeepseekV2ForCausalLM" or "DeepseekV3ForCausalLM"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense MLP layers
  int64_t moe_intermediate_size = 0;  // each routed expert
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t q_lora_rank = 0;  // 0 when null: q_proj replaces q_a_proj/q_a_layernorm/q_b_proj
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  int64_t n_routed_experts = 0;  // 0: every layer dense
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  std::string topk_method = "greedy";  // greedy | group_limited_greedy | noaux_tc
  std::string scoring_func = "softmax";  // softmax | sigmoid
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;
  double rope_theta = 10000.0;
  bool rope_interleave = true;  // DeepSeek: pairs (2i, 2i+1) before the de-interleave of HF
  RopeScaling rope_scaling;
  double rms_norm_eps = 1e-6;
  int64_t max_position_embeddings = 4096;
  bool tie_word_embeddings = false;
  int64_t num_nextn_predict_layers = 0;  // MTP layers, skipped
  std::vector<int64_t> eos_token_ids;
  std::optional<int64_t> bos_token_id;
  std::string torch_dtype = "bfloat16";
  // quantization_config (V3 FP8)
  std::string quant_method;  // "" or "fp8"
  int64_t weight_block_n = 128, weight_block_k = 128;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  // softmax scale with the YaRN mscale correction of Hugging Face.
  double softmax_scale() const;
  // Throws dpa::Error naming the field when a value is missing, of the wrong type, or inconsistent.
  void validate(const std::string& source) const;
};

// Parses config.json text; `source` names the file in error messages.
ModelConfig parse_model_config(const std::string& json_text, const std::string& source);
ModelConfig load_model_config(const std::string& path);

}  // namespace dpa::model
