// Checkpoint reader on safetensors files built byte by byte here: exact reads, dtype conversion,
// FP8 block dequantization, shards and index, and one dpa::Error per kind of corruption.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/error.h"
#include "model/checkpoint.h"

namespace dpa::model {
namespace {

namespace fs = std::filesystem;

// A V2 config with 2 layers, so model.layers.5.* is an extra (MTP-like) layer.
const char* kConfig = R"({"architectures": ["DeepseekV2ForCausalLM"], "vocab_size": 16, "hidden_size": 8,
  "intermediate_size": 16, "moe_intermediate_size": 4, "num_hidden_layers": 2, "num_attention_heads": 2,
  "q_lora_rank": null, "kv_lora_rank": 4, "qk_nope_head_dim": 2, "qk_rope_head_dim": 2, "v_head_dim": 2,
  "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2, "first_k_dense_replace": 1,
  "eos_token_id": 1, "bos_token_id": 0})";

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

// Length prefix, header JSON as given, data bytes.
std::string st_file(const std::string& header, const std::string& data) { return le64(header.size()) + header + data; }

template <typename T>
std::string bytes_of(std::initializer_list<T> xs) {
  std::string s;
  for (T x : xs) s.append(reinterpret_cast<const char*>(&x), sizeof(T));
  return s;
}

class CheckpointTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/dpa_ckpt_test_XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    write("config.json", kConfig);
  }
  void TearDown() override { fs::remove_all(dir_); }

  void write(const std::string& name, const std::string& bytes) {
    std::ofstream out(dir_ + "/" + name, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  // Opening must throw dpa::Error mentioning every needle.
  void expect_open_error(const std::vector<std::string>& needles) {
    try {
      auto c = Checkpoint::open(dir_);
      ADD_FAILURE() << "opened without error";
    } catch (const Error& e) {
      const std::string msg = e.what();
      for (const auto& n : needles) EXPECT_NE(msg.find(n), std::string::npos) << "'" << n << "' not in: " << msg;
    }
  }
  // A single-file checkpoint whose header is `header` and data `data`; opening must fail.
  void expect_bad_file(const std::string& header, const std::string& data, std::vector<std::string> needles) {
    write("model.safetensors", st_file(header, data));
    needles.push_back(dir_ + "/model.safetensors");
    expect_open_error(needles);
  }

  std::string dir_;
};

// "a" f32 [2,3] = 1..6, "b" bf16 [2,2] = 1,-2,3,0.5, "c" f16 [3] = 1,-2,0.5, plus an extra layer.
std::string good_file() {
  const std::string header = R"({"__metadata__": {"format": "pt"},
    "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
    "b": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [24, 32]},
    "c": {"dtype": "F16", "shape": [3], "data_offsets": [32, 38]},
    "model.layers.5.mlp.gate.weight": {"dtype": "F32", "shape": [1], "data_offsets": [40, 44]},
    "model.layers.1.input_layernorm.weight": {"dtype": "F32", "shape": [1], "data_offsets": [44, 48]}})";
  std::string data = bytes_of<float>({1, 2, 3, 4, 5, 6});
  data += bytes_of<uint16_t>({0x3f80, 0xc000, 0x4040, 0x3f00});
  data += bytes_of<uint16_t>({0x3c00, 0xc000, 0x3800});
  data += std::string(2, '\0');
  data += bytes_of<float>({9.0f, 7.0f});
  return st_file(header, data);
}

TEST_F(CheckpointTest, ReadsExactly) {
  write("model.safetensors", good_file());
  write("generation_config.json", R"({"bos_token_id": 3, "eos_token_id": [4, 5]})");
  write("tokenizer.json", "{}");
  auto ck = Checkpoint::open(dir_);
  EXPECT_EQ(ck->config().hidden_size, 8);
  EXPECT_EQ(ck->config().eos_token_ids, (std::vector<int64_t>{4, 5}));  // generation_config wins
  EXPECT_EQ(ck->config().bos_token_id.value_or(-1), 3);
  EXPECT_EQ(ck->tokenizer_path(), dir_ + "/tokenizer.json");
  EXPECT_EQ(ck->generation_config_path(), dir_ + "/generation_config.json");
  EXPECT_EQ(ck->tokenizer_config_path(), "");
  EXPECT_EQ(ck->names(), (std::vector<std::string>{"a", "b", "c", "model.layers.1.input_layernorm.weight"}));
  EXPECT_FALSE(ck->contains("model.layers.5.mlp.gate.weight"));
  const TensorInfo& a = ck->info("a");
  EXPECT_EQ(a.dtype, DType::f32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.nbytes, 24u);
  EXPECT_EQ(a.offset, 0u);
  EXPECT_EQ(a.file, dir_ + "/model.safetensors");
  EXPECT_EQ(ck->info("c").offset, 32u);

  EXPECT_EQ(ck->read_f32("a"), (std::vector<float>{1, 2, 3, 4, 5, 6}));
  std::vector<float> row(3);
  ck->read_rows("a", DType::f32, row.data(), 1, 2);
  EXPECT_EQ(row, (std::vector<float>{4, 5, 6}));
  std::vector<uint16_t> a_bf16(6);
  ck->read_rows("a", DType::bf16, a_bf16.data());
  EXPECT_EQ(a_bf16, (std::vector<uint16_t>{0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0}));
  std::vector<uint16_t> a_f16(3);
  ck->read_rows("a", DType::f16, a_f16.data(), 0, 1);
  EXPECT_EQ(a_f16, (std::vector<uint16_t>{0x3c00, 0x4000, 0x4200}));
  EXPECT_EQ(ck->read_f32("b"), (std::vector<float>{1, -2, 3, 0.5}));
  std::vector<uint16_t> b_bf16(2);
  ck->read_rows("b", DType::bf16, b_bf16.data(), 1);
  EXPECT_EQ(b_bf16, (std::vector<uint16_t>{0x4040, 0x3f00}));
  EXPECT_EQ(ck->read_f32("c"), (std::vector<float>{1, -2, 0.5}));
  std::vector<uint16_t> c_bf16(3);
  ck->read_rows("c", DType::bf16, c_bf16.data());
  EXPECT_EQ(c_bf16, (std::vector<uint16_t>{0x3f80, 0xc000, 0x3f00}));
  EXPECT_EQ(ck->read_f32("model.layers.1.input_layernorm.weight"), std::vector<float>{7.0f});

  uint16_t raw[3];
  std::memcpy(raw, ck->mapped("c"), sizeof raw);
  EXPECT_EQ(raw[1], 0xc000);

  std::vector<float> none;
  ck->read_rows("a", DType::f32, none.data(), 2, 2);  // empty range is fine
  EXPECT_THROW(ck->read_rows("a", DType::f32, row.data(), 1, 3), Error);
  EXPECT_THROW(ck->read_rows("a", DType::f32, row.data(), -1, 1), Error);
  EXPECT_THROW(ck->read_rows("a", DType::i32, row.data()), Error);
  try {
    ck->info("zz");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "missing tensor zz in " + dir_);
  }
}

// w: fp8 e4m3 [130, 2]; w_scale_inv: f32 [2, 1] = {0.5, 4}. Rows 0..127 use 0.5, rows 128..129 use 4.
std::string fp8_file(const std::string& scale_entry) {
  std::string w(260, '\x38');  // 1.0
  w[0] = '\x40';               // 2.0
  w[1] = '\xb8';               // -1.0
  w[256] = '\x3c';             // 1.5
  const std::string header = R"({"w": {"dtype": "F8_E4M3", "shape": [130, 2], "data_offsets": [0, 260]},
    "w_scale_inv": )" + scale_entry + "}";
  return st_file(header, w + bytes_of<float>({0.5f, 4.0f}));
}

TEST_F(CheckpointTest, Fp8BlockDequant) {
  write("model.safetensors", fp8_file(R"({"dtype": "F32", "shape": [2, 1], "data_offsets": [260, 268]})"));
  auto ck = Checkpoint::open(dir_);
  const std::vector<float> w = ck->read_f32("w");
  ASSERT_EQ(w.size(), 260u);
  EXPECT_EQ(w[0], 1.0f);
  EXPECT_EQ(w[1], -0.5f);
  EXPECT_EQ(w[2], 0.5f);
  EXPECT_EQ(w[255], 0.5f);
  EXPECT_EQ(w[256], 6.0f);
  EXPECT_EQ(w[257], 4.0f);
  std::vector<uint16_t> tail(4);
  ck->read_rows("w", DType::bf16, tail.data(), 128, 130);
  EXPECT_EQ(tail, (std::vector<uint16_t>{0x40c0, 0x4080, 0x4080, 0x4080}));
}

TEST_F(CheckpointTest, Fp8ScaleMissingOrWrongShape) {
  write("model.safetensors", fp8_file(R"({"dtype": "F32", "shape": [1, 2], "data_offsets": [260, 268]})"));
  auto ck = Checkpoint::open(dir_);
  std::vector<float> out(260);
  try {
    ck->read_rows("w", DType::f32, out.data());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("w_scale_inv"), std::string::npos) << e.what();
  }
  ck.reset();  // unmap before the file is rewritten
  write("model.safetensors",
        st_file(R"({"w": {"dtype": "F8_E4M3", "shape": [2, 2], "data_offsets": [0, 4]}})", "\x38\x38\x38\x38"));
  auto ck2 = Checkpoint::open(dir_);
  try {
    ck2->read_rows("w", DType::f32, out.data());
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("w_scale_inv"), std::string::npos) << e.what();
  }
}

TEST_F(CheckpointTest, ShardsAndIndex) {
  write("s1.safetensors", st_file(R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                                  bytes_of<float>({1.5f, 2.5f})));
  write("s2.safetensors", st_file(R"({"y": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [0, 2]},
    "model.layers.2.self_attn.o_proj.weight": {"dtype": "BF16", "shape": [1], "data_offsets": [2, 4]}})",
                                  bytes_of<uint16_t>({0xbf80, 0})));
  write("model.safetensors.index.json", R"({"metadata": {"total_size": 12}, "weight_map": {
    "x": "s1.safetensors", "y": "s2.safetensors", "model.layers.2.self_attn.o_proj.weight": "s2.safetensors"}})");
  auto ck = Checkpoint::open(dir_);
  EXPECT_EQ(ck->names(), (std::vector<std::string>{"x", "y"}));
  EXPECT_EQ(ck->read_f32("x"), (std::vector<float>{1.5f, 2.5f}));
  EXPECT_EQ(ck->read_f32("y"), std::vector<float>{-1.0f});
  EXPECT_EQ(ck->info("y").file, dir_ + "/s2.safetensors");
}

TEST_F(CheckpointTest, IndexErrors) {
  write("s1.safetensors", st_file(R"({"x": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})",
                                  bytes_of<float>({1.5f, 2.5f})));
  write("s2.safetensors", st_file(R"({"x": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})",
                                  bytes_of<float>({1.0f})));
  write("model.safetensors.index.json", R"({"weight_map": {"x": "s1.safetensors", "q": "gone.safetensors"}})");
  expect_open_error({"model.safetensors.index.json", "gone.safetensors", "q"});
  write("model.safetensors.index.json", R"({"weight_map": {"x": "s1.safetensors", "z": "s1.safetensors"}})");
  expect_open_error({"model.safetensors.index.json", "'z'", "s1.safetensors"});
  write("model.safetensors.index.json", R"({"weight_map": {"x": "s1.safetensors", "w": "s2.safetensors"}})");
  expect_open_error({"'x'", "s1.safetensors", "s2.safetensors"});  // duplicate across shards
  write("model.safetensors.index.json", R"({"weight_map": {"x": "../s1.safetensors"}})");
  expect_open_error({"model.safetensors.index.json", "../s1.safetensors"});
  write("model.safetensors.index.json", R"({"weight_map": {"x": 3}})");
  expect_open_error({"model.safetensors.index.json", "x"});
  write("model.safetensors.index.json", R"({"weight_map": )");
  expect_open_error({"model.safetensors.index.json", "JSON"});
}

TEST_F(CheckpointTest, NoWeightsOrConfig) {
  expect_open_error({"no model.safetensors", dir_});
  fs::remove(dir_ + "/config.json");
  expect_open_error({"config.json", dir_});
}

TEST_F(CheckpointTest, BadConfigNamesFile) {
  std::string bad = kConfig;
  const std::string good_field = "\"hidden_size\": 8";
  bad.replace(bad.find(good_field), good_field.size(), "\"hidden_size\": \"8\"");
  write("config.json", bad);
  expect_open_error({dir_ + "/config.json", "hidden_size"});
}

TEST_F(CheckpointTest, HeaderLengthBounds) {
  write("model.safetensors", "\x05\x00\x00");
  expect_open_error({dir_ + "/model.safetensors", "too short"});
  write("model.safetensors", le64(100) + "{}");
  expect_open_error({dir_ + "/model.safetensors", "past the end"});
  write("model.safetensors", le64((100ull << 20) + 1) + "{}");
  expect_open_error({dir_ + "/model.safetensors", "limit"});
  write("model.safetensors", le64(~0ull) + "{}");
  expect_open_error({dir_ + "/model.safetensors", "limit"});
}

TEST_F(CheckpointTest, HeaderCorruptions) {
  const std::string d24(24, '\0');
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]})", d24, {"JSON"});
  expect_bad_file(R"([1, 2])", d24, {"object"});
  expect_bad_file(R"({"a": 5})", d24, {"'a'"});
  expect_bad_file(R"({"a": {"dtype": "Q4", "shape": [2, 3], "data_offsets": [0, 24]}})", d24, {"'a'", "Q4"});
  expect_bad_file(R"({"a": {"dtype": 4, "shape": [2, 3], "data_offsets": [0, 24]}})", d24, {"'a'", "dtype"});
  expect_bad_file(R"({"a": {"shape": [2, 3], "data_offsets": [0, 24]}})", d24, {"'a'", "dtype"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [-2, -3], "data_offsets": [0, 24]}})", d24, {"'a'", "negative"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [2.5, 3], "data_offsets": [0, 24]}})", d24, {"'a'"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": 6, "data_offsets": [0, 24]}})", d24, {"'a'", "shape"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16], "data_offsets": [0, 24]}})",
                  d24, {"'a'", "overflow"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [1152921504606846976, 8], "data_offsets": [0, 24]}})", d24,
                  {"'a'", "overflow"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 20]}})", d24, {"'a'", "24 bytes"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [0], "data_offsets": [8, 4]}})", d24, {"'a'", "begin"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [4, 28]}})", d24, {"'a'", "past"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [-24, 0]}})", d24, {"'a'"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [2, 3]}})", d24, {"'a'", "data_offsets"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24, 48]}})", d24, {"'a'"});
  expect_bad_file(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [12, 20]}})",
                  d24, {"'a'", "'b'", "overlaps"});
  expect_bad_file(R"({"__metadata__": {"format": 1}})", d24, {"__metadata__"});
}

}  // namespace
}  // namespace dpa::model
