// The bodies of serve's information routes, from what rank 0 knows: the model card (/v1/models),
// the replicas' load (/get_load), the server's and the model's facts (/get_server_info,
// /get_model_info), and /tokenize and /detokenize. The routes in api_server.cpp send them.
#pragma once

#include <boost/json.hpp>
#include <cstdint>
#include <vector>

#include "engine/engine.h"
#include "serve/openai_request.h"

namespace dpa::serve {

struct ServeOptions;

// vLLM's model card; `created` is the server's start (unix seconds).
boost::json::object model_card(const ModelInfo& model, int64_t created);
// One entry per replica (SGLang's names and the KV pages), from each replica's leader's step
// header in `snap`, and the engine requests this frontend has in flight on it.
boost::json::array load_report(const engine::LoadSnapshot& snap, const std::vector<int64_t>& frontend_inflight);
boost::json::object server_info(const ServeOptions& opt, const ModelInfo& model, const engine::LoadSnapshot& snap);
// SGLang's /get_model_info: what its router and clients ask a worker.
boost::json::object model_facts(const ModelInfo& model);
// vLLM's /tokenize (a prompt, or chat messages rendered as the chat path does) and /detokenize.
// Throw ApiError 400 for a bad body or a model without a tokenizer.
boost::json::object tokenize(const boost::json::object& body, const ModelInfo& model);
boost::json::object detokenize(const boost::json::object& body, const ModelInfo& model);

}  // namespace dpa::serve
