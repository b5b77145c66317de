// Parsing and validation of DeepSeek-V2/V3 `config.json` (transformers 4.x and 5.x layouts).
#include "model/config.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "core/error.h"

namespace dpa::model {
namespace {

namespace json = boost::json;

const char* kind_name(const json::value& v) {
  switch (v.kind()) {
    case json::kind::null: return "null";
    case json::kind::bool_: return "a boolean";
    case json::kind::int64:
    case json::kind::uint64: return "an integer";
    case json::kind::double_: return "a number";
    case json::kind::string: return "a string";
    case json::kind::array: return "an array";
    case json::kind::object: return "an object";
  }
  return "?";
}

// Reads typed fields of one JSON object; every error names the file and the field path.
class Fields {
 public:
  Fields(const json::object& obj, std::string source, std::string prefix = "")
      : obj_(obj), source_(std::move(source)), prefix_(std::move(prefix)) {}

  [[noreturn]] void fail(std::string_view key, const std::string& what) const {
    throw Error(fmt::format("{}: field '{}{}': {}", source_, prefix_, key, what));
  }
  // Present and not null.
  const json::value* find(std::string_view key) const {
    const json::value* v = obj_.if_contains(key);
    return v && !v->is_null() ? v : nullptr;
  }
  const json::value& need(std::string_view key) const {
    const json::value* v = find(key);
    if (!v) fail(key, "missing (required)");
    return *v;
  }
  int64_t as_int(std::string_view key, const json::value& v) const {
    if (v.is_int64()) return v.get_int64();
    if (v.is_uint64()) fail(key, "integer out of range");
    fail(key, fmt::format("expected an integer, got {}", kind_name(v)));
  }
  int64_t int_req(std::string_view key) const { return as_int(key, need(key)); }
  int64_t int_or(std::string_view key, int64_t dflt) const {
    const json::value* v = find(key);
    return v ? as_int(key, *v) : dflt;
  }
  double num_or(std::string_view key, double dflt) const {
    const json::value* v = find(key);
    if (!v) return dflt;
    if (v->is_double()) return v->get_double();
    if (v->is_int64()) return static_cast<double>(v->get_int64());
    if (v->is_uint64()) return static_cast<double>(v->get_uint64());
    fail(key, fmt::format("expected a number, got {}", kind_name(*v)));
  }
  bool bool_or(std::string_view key, bool dflt) const {
    const json::value* v = find(key);
    if (!v) return dflt;
    if (!v->is_bool()) fail(key, fmt::format("expected a boolean, got {}", kind_name(*v)));
    return v->get_bool();
  }
  std::string str_or(std::string_view key, const std::string& dflt) const {
    const json::value* v = find(key);
    if (!v) return dflt;
    if (!v->is_string()) fail(key, fmt::format("expected a string, got {}", kind_name(*v)));
    return std::string(v->get_string());
  }
  const json::object* obj_opt(std::string_view key) const {
    const json::value* v = find(key);
    if (!v) return nullptr;
    if (!v->is_object()) fail(key, fmt::format("expected an object, got {}", kind_name(*v)));
    return &v->get_object();
  }
  // An integer or a list of integers (eos_token_id); null or absent: empty.
  std::vector<int64_t> int_or_list(std::string_view key) const {
    const json::value* v = find(key);
    if (!v) return {};
    if (!v->is_array()) return {as_int(key, *v)};
    std::vector<int64_t> out;
    for (const auto& e : v->get_array()) out.push_back(as_int(key, e));
    return out;
  }
  const std::string& source() const { return source_; }

 private:
  const json::object& obj_;
  std::string source_, prefix_;
};

// YaRN keys shared by `rope_scaling` (4.x) and `rope_parameters` (5.x).
RopeScaling parse_rope(const Fields& f, std::string_view where) {
  RopeScaling r;
  std::string type = f.str_or("rope_type", f.str_or("type", ""));
  if (type == "default" || type.empty()) return r;
  if (type != "yarn")
    throw Error(fmt::format("{}: field '{}.rope_type': unsupported rope type '{}' (only yarn)", f.source(),
                            where, type));
  r.type = type;
  r.factor = f.num_or("factor", r.factor);
  r.original_max_position_embeddings =
      f.int_or("original_max_position_embeddings", r.original_max_position_embeddings);
  r.beta_fast = f.num_or("beta_fast", r.beta_fast);
  r.beta_slow = f.num_or("beta_slow", r.beta_slow);
  r.mscale = f.num_or("mscale", r.mscale);
  r.mscale_all_dim = f.num_or("mscale_all_dim", r.mscale_all_dim);
  return r;
}

double yarn_get_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// a*b into *out; false on int64 overflow.
bool mul_ok(int64_t a, int64_t b, int64_t* out) { return !__builtin_mul_overflow(a, b, out); }

}  // namespace

double ModelConfig::softmax_scale() const {
  double scale = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling.type == "yarn") {
    const double m = yarn_get_mscale(rope_scaling.factor, rope_scaling.mscale_all_dim);
    scale *= m * m;
  }
  return scale;
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& source) {
  boost::system::error_code ec;
  json::value root = json::parse(json_text, ec);
  if (ec) throw Error(fmt::format("{}: invalid JSON: {}", source, ec.message()));
  if (!root.is_object()) throw Error(fmt::format("{}: expected a JSON object at the top level", source));
  const Fields f(root.get_object(), source);
  ModelConfig c;

  const json::value& archs = f.need("architectures");
  if (!archs.is_array()) f.fail("architectures", fmt::format("expected an array, got {}", kind_name(archs)));
  std::string unknown;
  for (const auto& a : archs.get_array()) {
    if (!a.is_string()) f.fail("architectures", fmt::format("expected strings, got {}", kind_name(a)));
    std::string name(a.get_string());
    if (name == "DeepseekV2ForCausalLM" || name == "DeepseekV3ForCausalLM") {
      c.architecture = name;
      break;
    }
    if (unknown.empty()) unknown = name;
  }
  if (c.architecture.empty())
    f.fail("architectures",
           fmt::format("unknown architecture {} (expected DeepseekV2ForCausalLM or DeepseekV3ForCausalLM)",
                       unknown.empty() ? "(empty list)" : unknown));
  const bool v3 = c.architecture == "DeepseekV3ForCausalLM";

  c.vocab_size = f.int_req("vocab_size");
  c.hidden_size = f.int_req("hidden_size");
  c.intermediate_size = f.int_req("intermediate_size");
  c.num_hidden_layers = f.int_req("num_hidden_layers");
  c.num_attention_heads = f.int_req("num_attention_heads");
  c.q_lora_rank = f.int_or("q_lora_rank", 0);  // null in V2-Lite
  c.kv_lora_rank = f.int_req("kv_lora_rank");
  c.qk_nope_head_dim = f.int_req("qk_nope_head_dim");
  c.qk_rope_head_dim = f.int_req("qk_rope_head_dim");
  c.v_head_dim = f.int_req("v_head_dim");
  c.n_routed_experts = f.int_or("n_routed_experts", 0);
  c.n_shared_experts = f.int_or("n_shared_experts", 0);
  c.num_experts_per_tok = f.int_or("num_experts_per_tok", 0);
  c.moe_intermediate_size =
      c.n_routed_experts > 0 ? f.int_req("moe_intermediate_size") : f.int_or("moe_intermediate_size", 0);
  c.first_k_dense_replace = f.int_or("first_k_dense_replace", 0);
  c.moe_layer_freq = f.int_or("moe_layer_freq", 1);
  c.n_group = f.int_or("n_group", 1);
  c.topk_group = f.int_or("topk_group", 1);
  // transformers' DeepseekV3 has no topk_method/scoring_func fields: it always routes this way.
  c.topk_method = f.str_or("topk_method", v3 ? "noaux_tc" : "greedy");
  c.scoring_func = f.str_or("scoring_func", v3 ? "sigmoid" : "softmax");
  c.norm_topk_prob = f.bool_or("norm_topk_prob", false);
  c.routed_scaling_factor = f.num_or("routed_scaling_factor", 1.0);
  c.rope_theta = f.num_or("rope_theta", c.rope_theta);
  c.rope_interleave = f.bool_or("rope_interleave", c.rope_interleave);
  // 5.x moves rope_theta and the scaling keys into rope_parameters; prefer it when both exist.
  if (const json::object* rp = f.obj_opt("rope_parameters")) {
    const Fields rf(*rp, source, "rope_parameters.");
    c.rope_theta = rf.num_or("rope_theta", c.rope_theta);
    c.rope_scaling = parse_rope(rf, "rope_parameters");
  } else if (const json::object* rs = f.obj_opt("rope_scaling")) {
    c.rope_scaling = parse_rope(Fields(*rs, source, "rope_scaling."), "rope_scaling");
  }
  c.rms_norm_eps = f.num_or("rms_norm_eps", c.rms_norm_eps);
  c.max_position_embeddings = f.int_or("max_position_embeddings", c.max_position_embeddings);
  c.tie_word_embeddings = f.bool_or("tie_word_embeddings", false);
  c.num_nextn_predict_layers = f.int_or("num_nextn_predict_layers", 0);
  c.eos_token_ids = f.int_or_list("eos_token_id");
  if (const json::value* b = f.find("bos_token_id")) c.bos_token_id = f.as_int("bos_token_id", *b);
  c.torch_dtype = f.str_or("torch_dtype", f.str_or("dtype", c.torch_dtype));
  if (const std::string act = f.str_or("hidden_act", "silu"); act != "silu")
    f.fail("hidden_act", fmt::format("unsupported activation '{}' (only silu)", act));
  if (f.bool_or("attention_bias", false)) f.fail("attention_bias", "attention biases are not supported");

  if (const json::object* q = f.obj_opt("quantization_config")) {
    const Fields qf(*q, source, "quantization_config.");
    c.quant_method = qf.str_or("quant_method", "");
    if (c.quant_method != "fp8")
      qf.fail("quant_method", fmt::format("unsupported quantization '{}' (only fp8)", c.quant_method));
    if (const std::string fmt_name = qf.str_or("fmt", "e4m3"); fmt_name != "e4m3")
      qf.fail("fmt", fmt::format("unsupported fp8 format '{}' (only e4m3)", fmt_name));
    if (const json::value* bs = qf.find("weight_block_size")) {
      if (!bs->is_array() || bs->get_array().size() != 2)
        qf.fail("weight_block_size", "expected an array of two integers");
      c.weight_block_n = qf.as_int("weight_block_size", bs->get_array()[0]);
      c.weight_block_k = qf.as_int("weight_block_size", bs->get_array()[1]);
    }
  }
  c.validate(source);
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error(fmt::format("cannot open model config '{}'", path));
  std::ostringstream ss;
  ss << in.rdbuf();
  return parse_model_config(ss.str(), path);
}

void ModelConfig::validate(const std::string& source) const {
  auto fail = [&](std::string_view field, const std::string& what) {
    throw Error(fmt::format("{}: field '{}': {}", source, field, what));
  };
  auto positive = [&](std::string_view field, int64_t v) {
    if (v <= 0) fail(field, fmt::format("must be positive, got {}", v));
  };
  auto non_negative = [&](std::string_view field, int64_t v) {
    if (v < 0) fail(field, fmt::format("must not be negative, got {}", v));
  };
  if (architecture != "DeepseekV2ForCausalLM" && architecture != "DeepseekV3ForCausalLM")
    fail("architectures", fmt::format("unknown architecture {}", architecture));
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  non_negative("q_lora_rank", q_lora_rank);
  positive("kv_lora_rank", kv_lora_rank);
  positive("qk_nope_head_dim", qk_nope_head_dim);
  positive("qk_rope_head_dim", qk_rope_head_dim);
  if (qk_rope_head_dim % 2) fail("qk_rope_head_dim", fmt::format("must be even, got {}", qk_rope_head_dim));
  positive("v_head_dim", v_head_dim);
  non_negative("n_routed_experts", n_routed_experts);
  non_negative("n_shared_experts", n_shared_experts);
  non_negative("first_k_dense_replace", first_k_dense_replace);
  positive("moe_layer_freq", moe_layer_freq);
  positive("max_position_embeddings", max_position_embeddings);
  non_negative("num_nextn_predict_layers", num_nextn_predict_layers);
  if (n_routed_experts > 0) {
    positive("moe_intermediate_size", moe_intermediate_size);
    positive("num_experts_per_tok", num_experts_per_tok);
    if (num_experts_per_tok > n_routed_experts)
      fail("num_experts_per_tok", fmt::format("{} exceeds n_routed_experts {}", num_experts_per_tok,
                                              n_routed_experts));
    positive("n_group", n_group);
    positive("topk_group", topk_group);
    if (topk_group > n_group) fail("topk_group", fmt::format("{} exceeds n_group {}", topk_group, n_group));
    if (n_routed_experts % n_group)
      fail("n_group", fmt::format("n_routed_experts {} is not a multiple of n_group {}", n_routed_experts,
                                  n_group));
    if (num_experts_per_tok > topk_group * (n_routed_experts / n_group))
      fail("num_experts_per_tok", fmt::format("{} exceeds the experts of topk_group {} groups",
                                              num_experts_per_tok, topk_group));
  }
  if (topk_method != "greedy" && topk_method != "group_limited_greedy" && topk_method != "noaux_tc")
    fail("topk_method", fmt::format("unknown '{}' (greedy, group_limited_greedy, noaux_tc)", topk_method));
  if (scoring_func != "softmax" && scoring_func != "sigmoid")
    fail("scoring_func", fmt::format("unknown '{}' (softmax, sigmoid)", scoring_func));
  if (!(rms_norm_eps > 0)) fail("rms_norm_eps", "must be positive");
  if (!(rope_theta > 0)) fail("rope_theta", "must be positive");
  if (!std::isfinite(routed_scaling_factor)) fail("routed_scaling_factor", "must be finite");
  if (!rope_scaling.type.empty()) {
    if (rope_scaling.type != "yarn") fail("rope_scaling.type", fmt::format("unsupported '{}'", rope_scaling.type));
    if (!(rope_scaling.factor > 0)) fail("rope_scaling.factor", "must be positive");
    positive("rope_scaling.original_max_position_embeddings", rope_scaling.original_max_position_embeddings);
    if (!(rope_scaling.beta_fast > 0) || !(rope_scaling.beta_slow > 0))
      fail("rope_scaling.beta_fast", "beta_fast and beta_slow must be positive");
  }
  if (!quant_method.empty()) {
    if (quant_method != "fp8") fail("quantization_config.quant_method", "only fp8 is supported");
    positive("quantization_config.weight_block_size", weight_block_n);
    positive("quantization_config.weight_block_size", weight_block_k);
  }
  for (int64_t id : eos_token_ids) non_negative("eos_token_id", id);
  if (bos_token_id) non_negative("bos_token_id", *bos_token_id);
  // Every tensor size the loader and the forward derive must fit in int64.
  int64_t t = 0;
  auto product = [&](std::string_view field, std::initializer_list<int64_t> xs) {
    int64_t p = 1;
    for (int64_t x : xs)
      if (!mul_ok(p, x, &p)) fail(field, "sizes overflow when multiplied");
    return p;
  };
  int64_t qk = 0, kv = 0;
  if (__builtin_add_overflow(qk_nope_head_dim, qk_rope_head_dim, &qk) ||
      __builtin_add_overflow(qk_nope_head_dim, v_head_dim, &kv) ||
      __builtin_add_overflow(kv_lora_rank, qk_rope_head_dim, &t))
    fail("qk_nope_head_dim", "head dimensions overflow when added");
  product("num_attention_heads", {num_attention_heads, qk, std::max<int64_t>(q_lora_rank, hidden_size)});
  product("num_attention_heads", {num_attention_heads, kv, kv_lora_rank});
  product("num_attention_heads", {num_attention_heads, v_head_dim, hidden_size});
  product("kv_lora_rank", {t, hidden_size});
  product("vocab_size", {vocab_size, hidden_size});
  product("intermediate_size", {intermediate_size, hidden_size, 3});
  product("moe_intermediate_size", {moe_intermediate_size, hidden_size, 3, std::max<int64_t>(n_routed_experts, 1)});
  product("n_shared_experts", {n_shared_experts, moe_intermediate_size, hidden_size, 3});
  product("num_hidden_layers", {num_hidden_layers, std::max<int64_t>(n_routed_experts, 1), moe_intermediate_size});
}

}  // namespace dpa::model
