// The bodies of serve's information routes.
#include "serve/info_routes.h"

#include <fmt/format.h>

#include <string>

#include "serve/api_server.h"
#include "text/tokenizer.h"

namespace dpa::serve {

namespace json = boost::json;

json::object model_card(const ModelInfo& model, int64_t created) {
  return json::object{{"id", model.name},   {"object", "model"}, {"created", created}, {"owned_by", "dpa_serve"},
                      {"root", model.name}, {"parent", nullptr}, {"max_model_len", model.max_model_len}};
}

json::array load_report(const engine::LoadSnapshot& snap, const std::vector<int64_t>& frontend_inflight) {
  json::array a;
  for (int d = 0; d < static_cast<int>(frontend_inflight.size()); ++d) {
    const std::size_t leader = static_cast<std::size_t>(d) * snap.attn_tp;
    const engine::StepHeader h = leader < snap.headers.size() ? snap.headers[leader] : engine::StepHeader{};
    a.push_back(json::object{{"dp_rank", d},
                             {"num_reqs", h.n_running + h.n_waiting},
                             {"num_waiting_reqs", h.n_waiting},
                             {"num_tokens", h.pending_tokens},
                             {"kv_free_blocks", h.free_blocks},
                             {"kv_total_blocks", h.total_blocks},
                             {"frontend_inflight", frontend_inflight[d]}});
  }
  return a;
}

json::object server_info(const ServeOptions& opt, const ModelInfo& model, const engine::LoadSnapshot& snap) {
  return json::object{{"version", opt.version},
                      {"served_model_name", model.name},
                      {"model_path", model.name},
                      {"dp_size", snap.dp},
                      {"attn_tp_size", snap.attn_tp},
                      {"world_size", opt.world_size},
                      {"max_model_len", model.max_model_len},
                      {"context_length", model.max_model_len},
                      {"vocab_size", model.vocab_size},
                      {"router_policy", opt.router.policy},
                      {"cache_threshold", opt.router.cache_threshold},
                      {"balance_abs_threshold", opt.router.balance_abs_threshold},
                      {"balance_rel_threshold", opt.router.balance_rel_threshold},
                      {"max_queued_requests", opt.max_queued_requests},
                      {"host", opt.host},
                      {"engine_steps", snap.steps}};
}

json::object model_facts(const ModelInfo& model) {
  return json::object{{"model_path", model.name},
                      {"tokenizer_path", model.tokenizer ? json::value(model.name) : json::value(nullptr)},
                      {"is_generation", true},
                      {"preferred_sampling_params", nullptr},
                      {"max_model_len", model.max_model_len}};
}

json::object tokenize(const json::object& o, const ModelInfo& model) {
  if (!model.tokenizer) throw ApiError(400, "this model has no tokenizer");
  std::vector<int32_t> ids;
  if (o.contains("messages")) {
    json::object copy = o;
    copy.erase("max_tokens"), copy.erase("max_completion_tokens"), copy.erase("stream");
    ids = parse_request(copy, Endpoint::chat, model).prompts.at(0);
  } else {
    const json::value* p = o.if_contains("prompt");
    if (!p || !p->is_string()) throw ApiError(400, "'prompt' (a string) or 'messages' is required", "prompt");
    bool add_special = true;
    if (const json::value* a = o.if_contains("add_special_tokens"); a && a->is_bool()) add_special = a->as_bool();
    ids = model.tokenizer->encode(std::string(p->as_string()), add_special);
  }
  json::array toks;
  for (int32_t t : ids) toks.push_back(t);
  json::object out{{"count", static_cast<int64_t>(ids.size())}, {"max_model_len", model.max_model_len}, {"tokens", toks}};
  if (const json::value* r = o.if_contains("return_token_strs"); r && r->is_bool() && r->as_bool()) {
    json::array strs;
    for (int32_t t : ids) strs.push_back(json::string(model.tokenizer->id_to_token(t).value_or("")));
    out["token_strs"] = strs;
  } else {
    out["token_strs"] = nullptr;
  }
  return out;
}

json::object detokenize(const json::object& o, const ModelInfo& model) {
  if (!model.tokenizer) throw ApiError(400, "this model has no tokenizer");
  const json::value* t = o.if_contains("tokens");
  if (!t || !t->is_array()) throw ApiError(400, "'tokens' must be an array of token ids", "tokens");
  std::vector<int32_t> ids;
  for (const auto& e : t->as_array()) {
    if (!e.is_int64() || e.as_int64() < 0 || e.as_int64() >= model.tokenizer->vocab_size())
      throw ApiError(400, fmt::format("'tokens' must hold ids in [0, {})", model.tokenizer->vocab_size()), "tokens");
    ids.push_back(static_cast<int32_t>(e.as_int64()));
  }
  return json::object{{"prompt", model.tokenizer->decode(ids, false)}};
}

}  // namespace dpa::serve
