// config.json parsing: transformers 4.x and 5.x layouts, and one dpa::Error per bad field.
#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "core/error.h"
#include "model/config.h"

namespace dpa::model {
namespace {

using Fields = std::vector<std::pair<std::string, std::string>>;  // key, raw JSON value

// DeepSeek-V2-Lite's config.json (transformers 4.x layout), field by field as published.
Fields v2_lite() {
  return {{"architectures", R"(["DeepseekV2ForCausalLM"])"},
          {"attention_bias", "false"},
          {"bos_token_id", "100000"},
          {"eos_token_id", "100001"},
          {"first_k_dense_replace", "1"},
          {"hidden_act", R"("silu")"},
          {"hidden_size", "2048"},
          {"intermediate_size", "10944"},
          {"kv_lora_rank", "512"},
          {"max_position_embeddings", "163840"},
          {"moe_intermediate_size", "1408"},
          {"moe_layer_freq", "1"},
          {"n_group", "1"},
          {"n_routed_experts", "64"},
          {"n_shared_experts", "2"},
          {"norm_topk_prob", "false"},
          {"num_attention_heads", "16"},
          {"num_experts_per_tok", "6"},
          {"num_hidden_layers", "27"},
          {"num_key_value_heads", "16"},
          {"q_lora_rank", "null"},
          {"qk_nope_head_dim", "128"},
          {"qk_rope_head_dim", "64"},
          {"rms_norm_eps", "1e-06"},
          {"rope_scaling", R"({"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707,
              "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096, "type": "yarn"})"},
          {"rope_theta", "10000"},
          {"routed_scaling_factor", "1.0"},
          {"scoring_func", R"("softmax")"},
          {"tie_word_embeddings", "false"},
          {"topk_group", "1"},
          {"topk_method", R"("greedy")"},
          {"torch_dtype", R"("bfloat16")"},
          {"v_head_dim", "128"},
          {"vocab_size", "102400"}};
}

std::string text(const Fields& f) {
  std::string s = "{";
  for (std::size_t i = 0; i < f.size(); ++i) s += (i ? ",\n\"" : "\n\"") + f[i].first + "\": " + f[i].second;
  return s + "\n}";
}

Fields with(Fields f, const std::string& key, const std::string& value) {
  for (auto& kv : f)
    if (kv.first == key) {
      kv.second = value;
      return f;
    }
  f.emplace_back(key, value);
  return f;
}

Fields without(Fields f, const std::string& key) {
  std::erase_if(f, [&](const auto& kv) { return kv.first == key; });
  return f;
}

// Parsing must throw dpa::Error whose message names the file and every string in `needles`.
void expect_error(const Fields& f, const std::vector<std::string>& needles) {
  try {
    parse_model_config(text(f), "dir/config.json");
    ADD_FAILURE() << "no error for\n" << text(f);
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("dir/config.json"), std::string::npos) << msg;
    for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
  }
}

TEST(ModelConfig, V2LiteTransformers4) {
  const ModelConfig c = parse_model_config(text(v2_lite()), "config.json");
  EXPECT_EQ(c.architecture, "DeepseekV2ForCausalLM");
  EXPECT_EQ(c.vocab_size, 102400);
  EXPECT_EQ(c.hidden_size, 2048);
  EXPECT_EQ(c.num_hidden_layers, 27);
  EXPECT_EQ(c.q_lora_rank, 0);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.qk_head_dim(), 192);
  EXPECT_EQ(c.n_routed_experts, 64);
  EXPECT_EQ(c.num_experts_per_tok, 6);
  EXPECT_EQ(c.first_k_dense_replace, 1);
  EXPECT_FALSE(c.is_moe_layer(0));
  EXPECT_TRUE(c.is_moe_layer(1));
  EXPECT_EQ(c.topk_method, "greedy");
  EXPECT_EQ(c.scoring_func, "softmax");
  EXPECT_FALSE(c.norm_topk_prob);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 40.0);
  EXPECT_EQ(c.rope_scaling.original_max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale, 0.707);
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale_all_dim, 0.707);
  EXPECT_DOUBLE_EQ(c.rope_scaling.beta_fast, 32.0);
  EXPECT_DOUBLE_EQ(c.rope_theta, 10000.0);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.max_position_embeddings, 163840);
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{100001});
  EXPECT_EQ(c.bos_token_id.value_or(-1), 100000);
  EXPECT_TRUE(c.quant_method.empty());
  // 192^-0.5 * (0.1 * 0.707 * ln 40 + 1)^2, computed independently in Python.
  EXPECT_NEAR(c.softmax_scale(), 0.11472138679292611, 1e-12);
}

TEST(ModelConfig, NoScalingSoftmaxScale) {
  const ModelConfig c = parse_model_config(text(with(v2_lite(), "rope_scaling", "null")), "config.json");
  EXPECT_TRUE(c.rope_scaling.type.empty());
  EXPECT_NEAR(c.softmax_scale(), 1.0 / 13.856406460551018, 1e-12);  // sqrt(192)
}

TEST(ModelConfig, V3Transformers5RopeParameters) {
  Fields f = without(without(v2_lite(), "rope_scaling"), "rope_theta");
  f = with(f, "architectures", R"(["DeepseekV3ForCausalLM"])");
  f = with(f, "q_lora_rank", "64");
  f = with(f, "qk_nope_head_dim", "32");
  f = with(f, "qk_rope_head_dim", "16");
  f = with(f, "n_group", "8");
  f = with(f, "topk_group", "4");
  f = without(without(f, "topk_method"), "scoring_func");  // 5.x's DeepseekV3Config has neither
  f = with(f, "norm_topk_prob", "true");
  f = with(f, "routed_scaling_factor", "2.5");
  f = with(f, "eos_token_id", "[1, 7]");
  f = without(f, "torch_dtype");
  f = with(f, "dtype", R"("float32")");
  f = with(f, "rope_interleave", "false");
  f = with(f, "rope_parameters", R"({"rope_type": "yarn", "rope_theta": 50000.0, "factor": 40,
      "original_max_position_embeddings": 4096, "beta_fast": 32, "beta_slow": 1, "mscale": 1.0,
      "mscale_all_dim": 1.0})");
  f = with(f, "quantization_config", R"({"activation_scheme": "dynamic", "fmt": "e4m3",
      "quant_method": "fp8", "weight_block_size": [128, 64]})");
  const ModelConfig c = parse_model_config(text(f), "config.json");
  EXPECT_EQ(c.architecture, "DeepseekV3ForCausalLM");
  EXPECT_EQ(c.q_lora_rank, 64);
  EXPECT_EQ(c.topk_method, "noaux_tc");
  EXPECT_EQ(c.scoring_func, "sigmoid");
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int64_t>{1, 7}));
  EXPECT_EQ(c.torch_dtype, "float32");
  EXPECT_FALSE(c.rope_interleave);
  EXPECT_DOUBLE_EQ(c.rope_theta, 50000.0);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling.mscale_all_dim, 1.0);
  EXPECT_EQ(c.quant_method, "fp8");
  EXPECT_EQ(c.weight_block_n, 128);
  EXPECT_EQ(c.weight_block_k, 64);
  // 48^-0.5 * (0.1 * ln 40 + 1)^2, computed independently in Python.
  EXPECT_NEAR(c.softmax_scale(), 0.2704675577217602, 1e-12);
}

TEST(ModelConfig, RopeScalingRopeTypeKeyAndDefault) {
  const ModelConfig a = parse_model_config(
      text(with(v2_lite(), "rope_scaling", R"({"rope_type": "yarn", "factor": 4})")), "config.json");
  EXPECT_EQ(a.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(a.rope_scaling.factor, 4.0);
  const ModelConfig b = parse_model_config(
      text(with(v2_lite(), "rope_parameters", R"({"rope_type": "default", "rope_theta": 20000})")), "config.json");
  EXPECT_TRUE(b.rope_scaling.type.empty());
  EXPECT_DOUBLE_EQ(b.rope_theta, 20000.0);
}

TEST(ModelConfig, UnknownArchitecture) {
  expect_error(with(v2_lite(), "architectures", R"(["LlamaForCausalLM"])"),
               {"unknown architecture LlamaForCausalLM"});
  expect_error(with(v2_lite(), "architectures", R"([])"), {"architectures"});
  expect_error(without(v2_lite(), "architectures"), {"architectures", "missing"});
}

TEST(ModelConfig, WrongTypes) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
                          "num_hidden_layers", "num_attention_heads", "q_lora_rank", "kv_lora_rank",
                          "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts",
                          "n_shared_experts", "num_experts_per_tok", "first_k_dense_replace", "moe_layer_freq",
                          "n_group", "topk_group", "max_position_embeddings", "bos_token_id", "eos_token_id"}) {
    SCOPED_TRACE(key);
    expect_error(with(v2_lite(), key, R"("2048")"), {key, "integer"});
    expect_error(with(v2_lite(), key, "2048.5"), {key, "integer"});
  }
  for (const char* key : {"rms_norm_eps", "rope_theta", "routed_scaling_factor"}) {
    SCOPED_TRACE(key);
    expect_error(with(v2_lite(), key, R"("1.0")"), {key, "number"});
  }
  for (const char* key : {"norm_topk_prob", "tie_word_embeddings", "rope_interleave"}) {
    SCOPED_TRACE(key);
    expect_error(with(v2_lite(), key, "1"), {key, "boolean"});
  }
  for (const char* key : {"topk_method", "scoring_func", "torch_dtype"}) {
    SCOPED_TRACE(key);
    expect_error(with(v2_lite(), key, "3"), {key, "string"});
  }
  expect_error(with(v2_lite(), "architectures", R"("DeepseekV2ForCausalLM")"), {"architectures", "array"});
  expect_error(with(v2_lite(), "rope_scaling", "5"), {"rope_scaling", "object"});
  expect_error(with(v2_lite(), "rope_scaling", R"({"type": "yarn", "factor": "40"})"),
               {"rope_scaling.factor", "number"});
  expect_error(with(v2_lite(), "rope_scaling", R"({"type": "linear", "factor": 2})"), {"rope", "linear"});
  expect_error(with(v2_lite(), "rope_parameters", R"({"rope_type": "yarn", "rope_theta": "1e4"})"),
               {"rope_parameters.rope_theta"});
  expect_error(with(v2_lite(), "eos_token_id", R"([1, "2"])"), {"eos_token_id"});
  expect_error(with(v2_lite(), "quantization_config", R"({"quant_method": "awq"})"),
               {"quantization_config.quant_method", "awq"});
  expect_error(with(v2_lite(), "quantization_config", R"({"quant_method": "fp8", "weight_block_size": [128]})"),
               {"weight_block_size"});
  expect_error(with(v2_lite(), "quantization_config", R"({"quant_method": "fp8", "weight_block_size": ["a", 1]})"),
               {"weight_block_size"});
  expect_error(with(v2_lite(), "hidden_size", "99999999999999999999"), {"hidden_size"});
}

TEST(ModelConfig, MissingRequired) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                          "v_head_dim", "moe_intermediate_size"}) {
    SCOPED_TRACE(key);
    expect_error(without(v2_lite(), key), {key, "missing"});
  }
  // null counts as missing for a required size
  expect_error(with(v2_lite(), "hidden_size", "null"), {"hidden_size", "missing"});
}

TEST(ModelConfig, NonPositiveAndInconsistent) {
  for (const char* key : {"vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                          "num_attention_heads", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim",
                          "v_head_dim", "moe_intermediate_size", "num_experts_per_tok", "n_group", "topk_group",
                          "moe_layer_freq", "max_position_embeddings"}) {
    SCOPED_TRACE(key);
    expect_error(with(v2_lite(), key, "0"), {key, "positive"});
    expect_error(with(v2_lite(), key, "-4"), {key, "positive"});
  }
  expect_error(with(v2_lite(), "q_lora_rank", "-1"), {"q_lora_rank", "negative"});
  expect_error(with(v2_lite(), "n_routed_experts", "-1"), {"n_routed_experts", "negative"});
  expect_error(with(v2_lite(), "qk_rope_head_dim", "63"), {"qk_rope_head_dim", "even"});
  expect_error(with(with(v2_lite(), "n_group", "4"), "topk_group", "5"), {"topk_group", "exceeds n_group"});
  expect_error(with(v2_lite(), "num_experts_per_tok", "65"), {"num_experts_per_tok", "n_routed_experts"});
  expect_error(with(v2_lite(), "n_group", "3"), {"n_group", "multiple"});
  expect_error(with(v2_lite(), "topk_method", R"("top1")"), {"topk_method", "top1"});
  expect_error(with(v2_lite(), "scoring_func", R"("relu")"), {"scoring_func", "relu"});
  expect_error(with(v2_lite(), "rms_norm_eps", "0"), {"rms_norm_eps"});
  expect_error(with(v2_lite(), "hidden_act", R"("gelu")"), {"hidden_act", "gelu"});
  expect_error(with(v2_lite(), "attention_bias", "true"), {"attention_bias"});
}

TEST(ModelConfig, SizeOverflow) {
  expect_error(with(v2_lite(), "num_attention_heads", "4611686018427387904"), {"num_attention_heads", "overflow"});
  expect_error(with(v2_lite(), "vocab_size", "9007199254740993"), {"vocab_size", "overflow"});
  expect_error(with(v2_lite(), "qk_nope_head_dim", "9223372036854775807"), {"overflow"});
  expect_error(with(v2_lite(), "moe_intermediate_size", "1125899906842624"), {"moe_intermediate_size", "overflow"});
}

TEST(ModelConfig, BadJsonAndLoad) {
  EXPECT_THROW(parse_model_config("{\"hidden_size\": ", "x.json"), Error);
  EXPECT_THROW(parse_model_config("[1, 2]", "x.json"), Error);
  try {
    load_model_config("/nonexistent/dir/config.json");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/config.json"), std::string::npos);
  }
}

}  // namespace
}  // namespace dpa::model
