// make-model presets tiny and v3-mini: the checkpoint opens with Checkpoint::open, the config has
// the preset's values, and every tensor name of the HF layout (design notes 4.6) has its shape.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/checkpoint.h"
#include "model/make_model.h"

namespace dpa::model {
namespace {

namespace fs = std::filesystem;

// The DeepSeek-V3 tokenizer: ids 0..128814 (128000 BPE tokens + added tokens), padded to 128.
constexpr int64_t kVocab = 128896;

struct Shape {
  int64_t H, layers, heads, q_lora, kv_lora, nope, rope, v, inter, moe_inter, experts, shared, dense;
  bool bias;
};

// Section 4.6 of the design notes, written out by hand.
std::map<std::string, std::vector<int64_t>> expected_tensors(const Shape& s) {
  std::map<std::string, std::vector<int64_t>> m;
  m["model.embed_tokens.weight"] = {kVocab, s.H};
  m["model.norm.weight"] = {s.H};
  m["lm_head.weight"] = {kVocab, s.H};
  for (int64_t i = 0; i < s.layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    m[p + "input_layernorm.weight"] = {s.H};
    m[p + "post_attention_layernorm.weight"] = {s.H};
    if (s.q_lora == 0) {
      m[p + "self_attn.q_proj.weight"] = {s.heads * (s.nope + s.rope), s.H};
    } else {
      m[p + "self_attn.q_a_proj.weight"] = {s.q_lora, s.H};
      m[p + "self_attn.q_a_layernorm.weight"] = {s.q_lora};
      m[p + "self_attn.q_b_proj.weight"] = {s.heads * (s.nope + s.rope), s.q_lora};
    }
    m[p + "self_attn.kv_a_proj_with_mqa.weight"] = {s.kv_lora + s.rope, s.H};
    m[p + "self_attn.kv_a_layernorm.weight"] = {s.kv_lora};
    m[p + "self_attn.kv_b_proj.weight"] = {s.heads * (s.nope + s.v), s.kv_lora};
    m[p + "self_attn.o_proj.weight"] = {s.H, s.heads * s.v};
    if (i < s.dense) {
      m[p + "mlp.gate_proj.weight"] = {s.inter, s.H};
      m[p + "mlp.up_proj.weight"] = {s.inter, s.H};
      m[p + "mlp.down_proj.weight"] = {s.H, s.inter};
      continue;
    }
    m[p + "mlp.gate.weight"] = {s.experts, s.H};
    if (s.bias) m[p + "mlp.gate.e_score_correction_bias"] = {s.experts};
    for (int64_t e = 0; e < s.experts; ++e) {
      const std::string q = p + "mlp.experts." + std::to_string(e) + ".";
      m[q + "gate_proj.weight"] = {s.moe_inter, s.H};
      m[q + "up_proj.weight"] = {s.moe_inter, s.H};
      m[q + "down_proj.weight"] = {s.H, s.moe_inter};
    }
    m[p + "mlp.shared_experts.gate_proj.weight"] = {s.shared * s.moe_inter, s.H};
    m[p + "mlp.shared_experts.up_proj.weight"] = {s.shared * s.moe_inter, s.H};
    m[p + "mlp.shared_experts.down_proj.weight"] = {s.H, s.shared * s.moe_inter};
  }
  return m;
}

class MakeModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dpa_make_model_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Names, shapes and dtypes as expected; norms read back as exactly 1.
  void check_tensors(const Checkpoint& ck, const Shape& s, DType dt) {
    const auto want = expected_tensors(s);
    const std::vector<std::string> names = ck.names();
    const std::set<std::string> got(names.begin(), names.end());
    std::set<std::string> want_names;
    for (const auto& kv : want) want_names.insert(kv.first);
    EXPECT_EQ(got, want_names);
    for (const auto& [name, shape] : want) {
      if (!ck.contains(name)) continue;
      SCOPED_TRACE(name);
      EXPECT_EQ(ck.info(name).shape, shape);
      const bool bias = name.find("e_score_correction_bias") != std::string::npos;
      EXPECT_EQ(ck.info(name).dtype, bias ? DType::f32 : dt);
      if (name.find("norm.weight") != std::string::npos) {
        for (float x : ck.read_f32(name)) ASSERT_EQ(x, 1.0f);
      }
    }
    // Linears are random, centred, with spread 1/sqrt(fan_in) (loose bounds: a sanity check).
    const std::string w = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight";
    const std::vector<float> x = ck.read_f32(w);
    double sum = 0, sq = 0;
    for (float v : x) sum += v, sq += double(v) * v;
    const double mean = sum / x.size(), sd = std::sqrt(sq / x.size() - mean * mean);
    EXPECT_LT(std::abs(mean), 0.1 / std::sqrt(double(s.H)));
    EXPECT_NEAR(sd * std::sqrt(double(s.H)), 1.0, 0.1);
  }

  std::string dir_;
};

TEST_F(MakeModelTest, TinyShardedLoads) {
  MakeModelOptions o;
  o.preset = "tiny";
  o.output = dir_ + "/tiny";
  o.shard_bytes = 8 << 20;  // several shards and an index
  const MakeModelResult r = make_model(o);
  EXPECT_GT(r.n_shards, 2);
  auto ck = Checkpoint::open(o.output);
  const ModelConfig& c = ck->config();
  EXPECT_EQ(c.architecture, "DeepseekV2ForCausalLM");
  EXPECT_EQ(c.vocab_size, kVocab);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_hidden_layers, 3);
  EXPECT_EQ(c.q_lora_rank, 0);
  EXPECT_EQ(c.n_routed_experts, 8);
  EXPECT_EQ(c.num_experts_per_tok, 2);
  EXPECT_EQ(c.n_shared_experts, 2);
  EXPECT_EQ(c.first_k_dense_replace, 1);
  EXPECT_EQ(c.scoring_func, "softmax");
  EXPECT_EQ(c.topk_method, "greedy");
  EXPECT_EQ(c.eos_token_ids, std::vector<int64_t>{1});  // <｜end▁of▁sentence｜>
  EXPECT_EQ(c.bos_token_id.value_or(-1), 0);           // <｜begin▁of▁sentence｜>
  EXPECT_EQ(ck->tokenizer_path(), o.output + "/tokenizer.json");
  EXPECT_EQ(ck->tokenizer_config_path(), o.output + "/tokenizer_config.json");
  EXPECT_EQ(ck->generation_config_path(), o.output + "/generation_config.json");
  EXPECT_EQ(fs::file_size(ck->tokenizer_path()), fs::file_size(default_tokenizer_dir() + "/tokenizer.json"));
  std::set<std::string> files;
  for (const auto& n : ck->names()) files.insert(ck->info(n).file);
  EXPECT_EQ(static_cast<int>(files.size()), r.n_shards);
  check_tensors(*ck, {64, 3, 4, 0, 32, 16, 8, 16, 128, 32, 8, 2, 1, false}, DType::bf16);
}

TEST_F(MakeModelTest, V3MiniLoads) {
  MakeModelOptions o;
  o.preset = "v3-mini";
  o.output = dir_ + "/v3";
  make_model(o);
  auto ck = Checkpoint::open(o.output);
  const ModelConfig& c = ck->config();
  EXPECT_EQ(c.architecture, "DeepseekV3ForCausalLM");
  EXPECT_EQ(c.vocab_size, kVocab);
  EXPECT_EQ(c.q_lora_rank, 64);
  EXPECT_EQ(c.n_group, 4);
  EXPECT_EQ(c.topk_group, 2);
  EXPECT_EQ(c.topk_method, "noaux_tc");
  EXPECT_EQ(c.scoring_func, "sigmoid");
  EXPECT_TRUE(c.norm_topk_prob);
  EXPECT_DOUBLE_EQ(c.routed_scaling_factor, 2.5);
  EXPECT_EQ(c.rope_scaling.type, "yarn");
  EXPECT_DOUBLE_EQ(c.rope_scaling.factor, 40.0);
  // 48^-0.5 * (0.1 * ln 40 + 1)^2, computed independently in Python.
  EXPECT_NEAR(c.softmax_scale(), 0.2704675577217602, 1e-12);
  check_tensors(*ck, {128, 3, 4, 64, 64, 32, 16, 32, 256, 64, 16, 1, 1, true}, DType::bf16);
  for (float b : ck->read_f32("model.layers.1.mlp.gate.e_score_correction_bias")) EXPECT_LT(std::abs(b), 0.1f);
}

// v3-attn: V3's attention shapes (what the many-head decode kernels take) on v3-mini's gate;
// written here with a narrow hidden size and one layer to keep the test's files small.
TEST_F(MakeModelTest, V3AttnHasV3AttentionShapes) {
  MakeModelOptions o;
  o.preset = "v3-attn";
  o.hidden = 64;
  o.layers = 1;
  o.output = dir_ + "/v3attn";
  make_model(o);
  auto ck = Checkpoint::open(o.output);
  const ModelConfig& c = ck->config();
  EXPECT_EQ(c.architecture, "DeepseekV3ForCausalLM");
  EXPECT_EQ(c.num_attention_heads, 128);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.kv_lora_rank, 512);
  EXPECT_EQ(c.qk_rope_head_dim, 64);
  EXPECT_EQ(c.qk_nope_head_dim, 128);
  EXPECT_EQ(c.v_head_dim, 128);
  EXPECT_EQ(c.scoring_func, "sigmoid");
  EXPECT_EQ(ck->info("model.layers.0.self_attn.kv_b_proj.weight").shape, (std::vector<int64_t>{128 * 256, 512}));
  EXPECT_EQ(ck->info("model.layers.0.self_attn.q_b_proj.weight").shape, (std::vector<int64_t>{128 * 192, 1536}));
}

TEST_F(MakeModelTest, OverridesAndSeeds) {
  MakeModelOptions o;
  o.preset = "tiny";
  o.layers = 2;
  o.experts = 4;
  o.hidden = 32;
  o.dtype = DType::f32;
  o.output = dir_ + "/a";
  make_model(o);
  auto a = Checkpoint::open(o.output);
  EXPECT_EQ(a->config().torch_dtype, "float32");
  check_tensors(*a, {32, 2, 4, 0, 32, 16, 8, 16, 128, 32, 4, 2, 1, false}, DType::f32);
  o.output = dir_ + "/b";
  make_model(o);
  o.output = dir_ + "/c";
  o.seed = 7;
  make_model(o);
  auto b = Checkpoint::open(dir_ + "/b");
  auto c = Checkpoint::open(dir_ + "/c");
  const std::string w = "model.layers.1.mlp.experts.3.down_proj.weight";
  EXPECT_EQ(a->read_f32(w), b->read_f32(w));
  EXPECT_NE(a->read_f32(w), c->read_f32(w));
}

TEST_F(MakeModelTest, BadOptions) {
  MakeModelOptions o;
  o.output = dir_ + "/x";
  o.preset = "v9";
  EXPECT_THROW(make_model(o), Error);
  o.preset = "v3-mini";
  o.experts = 6;  // not a multiple of n_group 4
  EXPECT_THROW(make_model(o), Error);
  o.experts = 0;
  o.tokenizer_dir = dir_ + "/nowhere";
  EXPECT_THROW(make_model(o), Error);
}

}  // namespace
}  // namespace dpa::model
