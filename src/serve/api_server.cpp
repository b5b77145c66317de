// Routes, per-request state, readiness and the drain of `dpa_serve serve`.
#include "serve/api_server.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <functional>
#include <future>
#include <thread>
#include <set>

#include <fmt/format.h>

#include "core/log.h"
#include "serve/generation.h"
#include "serve/info_routes.h"
#include "serve/metrics.h"
#include "serve/responses.h"

namespace dpa::serve {

namespace json = boost::json;
namespace asio = boost::asio;

namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Compares without an early exit, so the time taken does not tell how much of the key matched.
bool constant_time_equal(const std::string& a, const std::string& b) {
  const std::size_t n = std::max(a.size(), b.size());
  unsigned diff = a.size() == b.size() ? 0u : 1u;
  for (std::size_t i = 0; i < n; ++i) {
    const unsigned char x = i < a.size() ? static_cast<unsigned char>(a[i]) : 0;
    const unsigned char y = i < b.size() ? static_cast<unsigned char>(b[i]) : 0;
    diff |= static_cast<unsigned>(x ^ y);
  }
  return diff == 0;
}

std::string json_response(const json::value& v) { return json::serialize(v); }

}  // namespace

struct ApiServer::Job {
  uint64_t serial = 0;
  std::unique_ptr<ParsedRequest> req;
  std::vector<Generation> gens;
  std::vector<uint64_t> ids;
  std::vector<int> dp;
  std::vector<int64_t> prompt_len;
  std::vector<double> last_t;  // per choice: time of the last token, 0 before the first
  std::vector<char> done, first_sent;
  int remaining = 0;
  std::shared_ptr<HttpSession> http;
  std::function<void(Job&)> internal;  // set for /health_generate
  std::unique_ptr<ResponseShaper> responses;  // set for /v1/responses: its shape of the answer
  bool chat = false, stream = false, header_sent = false;
  std::string id;
  int64_t created = 0;
  double arrival = 0;
  std::string reject;
};

ApiServer::ApiServer(asio::io_context& ioc, const ServeOptions& opt, const ModelInfo& model, engine::Engine& engine,
                     const std::atomic<bool>& interrupt)
    : ioc_(ioc), opt_(opt), model_(model), engine_(engine), interrupt_(interrupt), timer_(ioc) {
  router_ = engine::make_router(opt_.router);
  metrics_ = std::make_unique<FrontendMetrics>();
  response_store_ = std::make_unique<ResponseStore>(static_cast<std::size_t>(opt_.responses_max_stored),
                                                    static_cast<std::size_t>(opt_.responses_max_stored_bytes));
  dp_ = engine_.load_snapshot().dp;
  metrics_->rep.resize(dp_);
  inflight_.assign(dp_, 0);
  queued_.assign(dp_, 0);
  created_ = unix_now();
  engine_.set_step_observer([m = metrics_.get()](const engine::StepRecord& r) { m->last_step_s = r.seconds; });
}

ApiServer::~ApiServer() = default;

int ApiServer::start() {
  http_ = std::make_unique<HttpServer>(
      ioc_, [this](const HttpRequest& r, const std::shared_ptr<HttpSession>& s) { handle(r, s); },
      opt_.max_request_bytes);
  const int port = http_->listen(opt_.host, opt_.port);
  url_ = fmt::format("http://{}:{}", opt_.host.find(':') != std::string::npos ? "[" + opt_.host + "]" : opt_.host, port);
  // The engine blocks for work when idle; an abort of no request makes it run its first step.
  engine_.abort(0);
  timer_.expires_after(std::chrono::milliseconds(20));
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) tick();
  });
  return port;
}

void ApiServer::stop() {
  asio::post(ioc_, [this] {
    stopping_ = true;
    if (http_) http_->stop_accepting();
    timer_.cancel();
    // A moment for the last responses to be written, then the io thread ends.
    auto t = std::make_shared<asio::steady_timer>(ioc_, std::chrono::milliseconds(300));
    t->async_wait([this, t](boost::system::error_code) { ioc_.stop(); });
  });
}

// ---- engine thread -> io thread ------------------------------------------------------------

void ApiServer::fail_all(const std::string& message, double wait_s) {
  auto done = std::make_shared<std::promise<void>>();
  std::future<void> f = done->get_future();
  asio::post(ioc_, [this, message, done] {
    failed_ = true;
    failure_ = message;
    std::vector<std::shared_ptr<Job>> jobs;
    for (auto& [id, jc] : by_id_) jobs.push_back(jc.first);
    by_id_.clear();
    std::sort(jobs.begin(), jobs.end());
    jobs.erase(std::unique(jobs.begin(), jobs.end()), jobs.end());
    for (const auto& j : jobs) {
      if (j->internal || !j->http || !j->http->open()) continue;
      const ApiError e(500, message);
      if (!j->header_sent) {
        j->http->send(500, "application/json", json_response(e.body()));
      } else {
        j->http->write_chunk(j->responses ? j->responses->error_event(e)
                                          : "data: " + json::serialize(e.body()) + "\n\ndata: [DONE]\n\n");
        j->http->end_stream();
      }
    }
    log::error("serve: {} ({} open request(s) answered with an error)", message, jobs.size());
    done->set_value();
  });
  using clock = std::chrono::steady_clock;
  const clock::time_point until =
      clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(wait_s));
  if (f.wait_until(until) == std::future_status::ready) {
    // The writes are queued on the io thread; give it a moment to put them on the wire.
    const clock::time_point flushed = clock::now() + std::chrono::milliseconds(500);
    std::this_thread::sleep_until(std::min(until, flushed));
  }
}

void ApiServer::on_outputs(std::span<const engine::TokenOutput> outs) {
  std::lock_guard lk(mu_);
  pending_outputs_.insert(pending_outputs_.end(), outs.begin(), outs.end());
  if (!posted_) {
    posted_ = true;
    asio::post(ioc_, [this] { drain_events(); });
  }
}

void ApiServer::on_reject(const engine::Rejection& r) {
  std::lock_guard lk(mu_);
  pending_rejections_.push_back(r);
  if (!posted_) {
    posted_ = true;
    asio::post(ioc_, [this] { drain_events(); });
  }
}

void ApiServer::drain_events() {
  std::vector<engine::TokenOutput> outs;
  std::vector<engine::Rejection> rejs;
  {
    std::lock_guard lk(mu_);
    outs.swap(pending_outputs_);
    rejs.swap(pending_rejections_);
    posted_ = false;
  }
  for (const auto& r : rejs) on_rejection(r);
  for (const auto& o : outs) on_token(o);
}

// ---- generation -----------------------------------------------------------------------------

std::vector<engine::ReplicaLoad> ApiServer::replica_loads(const engine::LoadSnapshot& snap) const {
  std::vector<engine::ReplicaLoad> loads(dp_);
  for (int d = 0; d < dp_; ++d) {
    const std::size_t leader = static_cast<std::size_t>(d) * snap.attn_tp;
    const engine::StepHeader h = leader < snap.headers.size() ? snap.headers[leader] : engine::StepHeader{};
    loads[d].n_reqs = inflight_[d];  // exact: this frontend submitted them
    loads[d].n_waiting = queued_[d];
    loads[d].n_tokens = h.pending_tokens;
    loads[d].free_blocks = h.free_blocks;
  }
  return loads;
}

std::shared_ptr<ApiServer::Job> ApiServer::submit_job(std::unique_ptr<ParsedRequest> pr,
                                                      const std::shared_ptr<HttpSession>& s) {
  auto j = std::make_shared<Job>();
  j->serial = next_serial_++;
  j->req = std::move(pr);
  const ParsedRequest& req = *j->req;
  j->chat = req.endpoint == Endpoint::chat;
  j->stream = req.stream;
  j->http = s;
  j->created = unix_now();
  j->arrival = now_s();
  j->id = fmt::format("{}-{:x}{:06x}", j->chat ? "chatcmpl" : "cmpl", created_, j->serial);
  const std::size_t n_choices = req.prompts.size() * static_cast<std::size_t>(req.n);
  j->gens.reserve(n_choices);
  for (std::size_t p = 0; p < req.prompts.size(); ++p)
    for (int k = 0; k < req.n; ++k) {
      j->gens.emplace_back(req, model_.tokenizer, p);
      j->prompt_len.push_back(static_cast<int64_t>(req.prompts[p].size()));
    }
  j->ids.assign(n_choices, 0);
  j->dp.assign(n_choices, 0);
  j->last_t.assign(n_choices, 0.0);
  j->done.assign(n_choices, 0);
  j->first_sent.assign(n_choices, 0);
  j->remaining = static_cast<int>(n_choices);
  auto loads = replica_loads(engine_.load_snapshot());
  std::size_t c = 0;
  for (std::size_t p = 0; p < req.prompts.size(); ++p)
    for (int k = 0; k < req.n; ++k, ++c) {
      engine::Request r;
      r.prompt = req.prompts[p];
      r.params = req.params;
      r.priority = req.priority;
      if (r.params.seed && req.n > 1) r.params.seed = *r.params.seed + static_cast<uint64_t>(k);
      const int d = req.data_parallel_rank >= 0 ? req.data_parallel_rank : router_->route(r, loads);
      ++loads[d].n_reqs, ++loads[d].n_waiting;
      loads[d].n_tokens += static_cast<int64_t>(r.prompt.size());
      r.data_parallel_rank = d;
      j->dp[c] = d;
      ++inflight_[d], ++queued_[d], ++n_queued_;
      j->ids[c] = engine_.submit(std::move(r));
      by_id_[j->ids[c]] = {j, static_cast<int>(c)};
    }
  if (s) {
    std::weak_ptr<Job> weak = j;
    s->on_disconnect([this, weak] {
      if (auto jj = weak.lock()) cancel(*jj);
    });
  }
  return j;
}

void ApiServer::on_token(const engine::TokenOutput& o) {
  auto it = by_id_.find(o.request_id);
  if (it == by_id_.end()) return;  // after a stop-string abort or a cancel
  std::shared_ptr<Job> keep = it->second.first;
  Job& j = *keep;
  const int c = it->second.second;
  const int d = j.dp[c];
  auto& m = metrics_->rep[d];
  const double t = now_s();
  if (j.last_t[c] == 0.0) {
    const double ttft = t - j.arrival;
    m.ttft.observe(ttft);
    m.queue.observe(std::max(0.0, ttft - metrics_->last_step_s.load()));
    m.prompt_tokens += static_cast<uint64_t>(j.prompt_len[c]);
    --queued_[d], --n_queued_;
  } else {
    m.itl.observe(t - j.last_t[c]);
  }
  j.last_t[c] = t;
  ++m.generation_tokens;
  Generation& g = j.gens[c];
  const std::string delta = g.add(o);
  if (j.stream) stream_piece(j, c, delta, g.finished());
  if (g.finished()) {
    if (g.needs_abort()) engine_.abort(o.request_id);
    m.e2e.observe(t - j.arrival);
    ++m.finished[g.engine_finish_reason()];
    finish_choice(j, c);
  }
}

void ApiServer::on_rejection(const engine::Rejection& r) {
  auto it = by_id_.find(r.request_id);
  if (it == by_id_.end()) return;
  std::shared_ptr<Job> keep = it->second.first;
  Job& j = *keep;
  j.reject = r.message;
  for (std::size_t c = 0; c < j.ids.size(); ++c) {
    if (j.done[c]) continue;
    if (j.ids[c] != r.request_id) engine_.abort(j.ids[c]);
    j.gens[c].end(engine::FinishReason::abort);
    finish_choice(j, static_cast<int>(c));
  }
}

void ApiServer::cancel(Job& j) {
  for (std::size_t c = 0; c < j.ids.size(); ++c) {
    if (j.done[c]) continue;
    engine_.abort(j.ids[c]);
    j.gens[c].end(engine::FinishReason::abort);
    ++metrics_->rep[j.dp[c]].finished["abort"];
    if (j.stream) stream_piece(j, static_cast<int>(c), "", true);  // drain timeout: the client is still there
    finish_choice(j, static_cast<int>(c));
  }
}

void ApiServer::finish_choice(Job& j, int c) {
  if (j.done[c]) return;
  j.done[c] = 1;
  const int d = j.dp[c];
  --inflight_[d];
  if (j.last_t[c] == 0.0) --queued_[d], --n_queued_;
  auto it = by_id_.find(j.ids[c]);
  std::shared_ptr<Job> keep;
  if (it != by_id_.end()) keep = std::move(it->second.first), by_id_.erase(it);
  if (--j.remaining == 0) complete(j);
}

// /generate: the client's rid of the choice's prompt, else the job's id (with the choice's
// index when there are several).
std::string ApiServer::native_rid(const Job& j, int c) const {
  const std::size_t prompt = j.gens[static_cast<std::size_t>(c)].prompt_index();
  if (prompt < j.req->native_rids.size()) return j.req->native_rids[prompt];
  return j.gens.size() > 1 ? fmt::format("{}-{}", j.id, c) : j.id;
}

void ApiServer::stream_piece(Job& j, int c, const std::string& delta, bool final) {
  if (!j.http || !j.http->open()) return;
  Generation& g = j.gens[c];
  std::size_t first_call = 0;
  const std::vector<ToolCall> calls = g.take_stream_tool_calls(first_call);
  const std::string reasoning = g.take_stream_reasoning();
  if (!final && delta.empty() && calls.empty() && reasoning.empty()) return;  // logprobs wait for the next text
  if (!j.header_sent) start_stream(j);
  if (j.responses) {
    const std::string events = j.responses->piece_events(reasoning, delta, calls);
    if (!events.empty()) j.http->write_chunk(events);
    return;
  }
  if (j.req->native) {  // SGLang's chunks: the choice so far
    json::value chunk = native_choice(g, native_rid(j, c), j.prompt_len[c], true);
    if (j.req->native_list) chunk.as_object()["index"] = c;
    j.http->write_chunk("data: " + json::serialize(chunk) + "\n\n");
    return;
  }
  const json::value lp = g.take_stream_logprobs(j.chat);
  json::object choice;
  choice["index"] = c;
  if (j.chat) {
    json::object d;
    if (!j.first_sent[c]) d["role"] = "assistant", j.first_sent[c] = 1;
    if (!reasoning.empty()) d["reasoning_content"] = reasoning;
    if (!delta.empty() || (d.contains("role") && calls.empty() && reasoning.empty())) d["content"] = delta;
    // Each call whole in one delta (name and arguments together), as clients that accumulate
    // deltas by index expect.
    if (!calls.empty()) d["tool_calls"] = tool_calls_json(j.id, static_cast<std::size_t>(c), calls, first_call, true);
    choice["delta"] = d;
  } else if (!j.first_sent[c]) {  // the first piece of a choice carries the echoed prompt
    choice["text"] = g.echo() + delta;
    j.first_sent[c] = 1;
  } else {
    choice["text"] = delta;
  }
  choice["logprobs"] = lp;
  choice["finish_reason"] = final ? json::value(g.finish_reason()) : json::value(nullptr);
  json::object chunk{{"id", j.id},
                     {"object", j.chat ? "chat.completion.chunk" : "text_completion"},
                     {"created", j.created},
                     {"model", model_.name},
                     {"choices", json::array{choice}}};
  if (j.req->continuous_usage_stats)  // this choice's counts so far, as vLLM's
    chunk["usage"] = usage_object(j.prompt_len[c], static_cast<int64_t>(g.tokens().size()));
  else if (j.req->include_usage)
    chunk["usage"] = nullptr;
  j.http->write_chunk("data: " + json::serialize(chunk) + "\n\n");
}

void ApiServer::start_stream(Job& j) {
  j.http->start_stream(200, "text/event-stream");
  j.header_sent = true;
  if (j.responses) j.http->write_chunk(j.responses->start_events());
}

void ApiServer::complete(Job& j) {
  if (j.internal) {
    j.internal(j);
    return;
  }
  if (j.responses) {
    complete_response(j);
    return;
  }
  if (!j.http || !j.http->open()) return;
  const ParsedRequest& req = *j.req;
  int64_t prompt_tokens = 0, completion_tokens = 0;
  for (std::size_t i = 0; i < j.gens.size(); i += static_cast<std::size_t>(req.n)) prompt_tokens += j.prompt_len[i];
  for (const auto& g : j.gens) completion_tokens += static_cast<int64_t>(g.tokens().size());
  if (!j.reject.empty()) {
    const ApiError e(400, j.reject, j.chat ? "messages" : "prompt");
    if (!j.header_sent) {
      j.http->send(400, "application/json", json_response(e.body()));
    } else {
      j.http->write_chunk("data: " + json::serialize(e.body()) + "\n\ndata: [DONE]\n\n");
      j.http->end_stream();
    }
    return;
  }
  if (j.stream) {
    if (!j.header_sent) start_stream(j);
    if (req.include_usage) {
      json::object chunk{{"id", j.id},
                         {"object", j.chat ? "chat.completion.chunk" : "text_completion"},
                         {"created", j.created},
                         {"model", model_.name},
                         {"choices", json::array{}},
                         {"usage", usage_object(prompt_tokens, completion_tokens, cached_prompt_tokens(j.gens))}};
      j.http->write_chunk("data: " + json::serialize(chunk) + "\n\n");
    }
    j.http->write_chunk("data: [DONE]\n\n");
    j.http->end_stream();
    return;
  }
  if (req.native) {
    json::array list;
    for (std::size_t c = 0; c < j.gens.size(); ++c)
      list.push_back(native_choice(j.gens[c], native_rid(j, static_cast<int>(c)), j.prompt_len[c], false));
    j.http->send(200, "application/json", json::serialize(req.native_list ? json::value(list) : list.at(0)));
    return;
  }
  json::object body = j.chat ? chat_response(j.id, model_.name, j.created, j.gens, prompt_tokens)
                             : completion_response(j.id, model_.name, j.created, j.gens, prompt_tokens);
  j.http->send(200, "application/json", json_response(body));
}

// One choice, shaped as a response; stored (when asked) whether or not the client is still there.
void ApiServer::complete_response(Job& j) {
  ResponseShaper& r = *j.responses;
  const Generation& g = j.gens.at(0);
  const int64_t prompt_tokens = j.prompt_len.at(0);
  if (j.reject.empty() && r.store())
    response_store_->put(r.id(), r.response(g, prompt_tokens), r.conversation(g), r.input_items());
  if (!j.http || !j.http->open()) return;
  if (!j.reject.empty()) {
    const ApiError e(400, j.reject, "input");
    if (!j.header_sent) {
      j.http->send(400, "application/json", json_response(e.body()));
    } else {
      j.http->write_chunk(r.error_event(e));
      j.http->end_stream();
    }
    return;
  }
  if (j.stream) {
    if (!j.header_sent) start_stream(j);
    j.http->write_chunk(r.finish_events(g, prompt_tokens));
    j.http->end_stream();
    return;
  }
  j.http->send(200, "application/json", json_response(r.response(g, prompt_tokens)));
}

// ---- HTTP -----------------------------------------------------------------------------------

namespace {
void send_error(const std::shared_ptr<HttpSession>& s, const ApiError& e,
                const std::vector<std::pair<std::string, std::string>>& headers = {}) {
  s->send(e.status, "application/json", json::serialize(e.body()), headers);
}
void send_json(const std::shared_ptr<HttpSession>& s, const json::value& v, int status = 200) {
  s->send(status, "application/json", json::serialize(v));
}
json::object parse_body(const HttpRequest& req) {
  boost::system::error_code ec;
  json::value v = json::parse(req.body, ec);
  if (ec) throw ApiError(400, "the request body is not valid JSON: " + ec.message());
  if (!v.is_object()) throw ApiError(400, "the request body must be a JSON object");
  return std::move(v.as_object());
}
}  // namespace

void ApiServer::handle(const HttpRequest& req, const std::shared_ptr<HttpSession>& s) {
  try {
    route(req, s);
  } catch (const ApiError& e) {
    send_error(s, e);
  } catch (const std::exception& e) {
    send_error(s, ApiError(500, std::string("internal error: ") + e.what()));
  }
}

void ApiServer::route(const HttpRequest& req, const std::shared_ptr<HttpSession>& s) {
  const std::string& path = req.path;
  const bool get = req.method == "GET";
  const bool post = req.method == "POST";
  if (path == "/health" || path == "/v1/health") {
    if (ready_ && !draining_ && !failed_) s->send(200, "application/json", "{}");
    else send_error(s, ApiError(503, draining_ ? "the server is shutting down" : "the engine is loading", "", "unavailable_error"));
    return;
  }
  if (!opt_.api_key.empty()) {
    const std::string auth = req.header("authorization");
    const std::string want = "Bearer " + opt_.api_key;
    if (!constant_time_equal(auth, want)) {
      send_error(s, ApiError(401, "invalid or missing API key (Authorization: Bearer KEY)"),
                 {{"WWW-Authenticate", "Bearer"}});
      return;
    }
  }
  if (post && (path == "/v1/completions" || path == "/v1/chat/completions")) {
    generate(req, s, path == "/v1/completions" ? Endpoint::completions : Endpoint::chat);
    return;
  }
  if (post && path == "/v1/responses") {
    create_response(req, s);
    return;
  }
  if (path.rfind("/v1/responses/", 0) == 0) {  // a stored response and its input items
    stored_response(req, s);
    return;
  }
  if (post && path == "/generate") {  // SGLang's native route (its router and bench_serving --backend sglang)
    generate(req, s, Endpoint::completions, true);
    return;
  }
  if (get && path == "/v1/models") {
    send_json(s, json::object{{"object", "list"}, {"data", json::array{model_card(model_, created_)}}});
    return;
  }
  if (get && path.rfind("/v1/models/", 0) == 0) {
    const std::string id = path.substr(11);
    if (id != model_.name)
      throw ApiError(404, fmt::format("The model `{}` does not exist.", id), "model", "invalid_request_error");
    send_json(s, model_card(model_, created_));
    return;
  }
  if (get && path == "/health_generate") {
    health_generate(s);
    return;
  }
  if (get && path == "/metrics") {
    s->send(200, "text/plain; version=0.0.4; charset=utf-8",
            prometheus_text(*metrics_, engine_.load_snapshot(), model_.name, *response_store_));
    return;
  }
  if (get && (path == "/get_load" || path == "/v1/get_load")) {
    send_json(s, load_report(engine_.load_snapshot(), inflight_));
    return;
  }
  if (get && path == "/get_server_info") {
    send_json(s, server_info(opt_, model_, engine_.load_snapshot()));
    return;
  }
  if (get && path == "/get_model_info") {
    send_json(s, model_facts(model_));
    return;
  }
  if ((get || post) && path == "/flush_cache") {
    router_->reset();       // the frontend router's prefix trees
    engine_.flush_cache();  // every replica's unreferenced cached KV pages, in one step
    send_json(s, json::object{{"message", "cache flushed"}});
    return;
  }
  if (get && path == "/version") {
    send_json(s, json::object{{"version", opt_.version}});
    return;
  }
  if (post && (path == "/tokenize" || path == "/v1/tokenize")) {
    send_json(s, tokenize(parse_body(req), model_));
    return;
  }
  if (post && (path == "/detokenize" || path == "/v1/detokenize")) {
    send_json(s, detokenize(parse_body(req), model_));
    return;
  }
  static const std::set<std::string> known = {"/v1/completions", "/v1/chat/completions", "/v1/models", "/health_generate",
                                              "/metrics",        "/get_load",            "/get_server_info", "/flush_cache",
                                              "/version",        "/tokenize",            "/detokenize",
                                              "/generate",       "/get_model_info",      "/v1/responses"};
  if (known.count(path)) throw ApiError(405, fmt::format("method {} is not allowed on {}", req.method, path));
  throw ApiError(404, fmt::format("no route {} {}", req.method, path), "", "NotFoundError");
}

void ApiServer::check_serving() const {
  if (draining_) throw ApiError(503, "the server is shutting down", "", "unavailable_error");
  if (failed_) throw ApiError(503, failure_, "", "unavailable_error");
  if (!ready_) throw ApiError(503, "the engine is loading", "", "unavailable_error");
}

bool ApiServer::admit(ParsedRequest& pr, const json::object& o, const std::shared_ptr<HttpSession>& s) {
  if (pr.data_parallel_rank < 0)
    if (const json::value* v = o.if_contains("routed_dp_rank"); v && v->is_int64()) pr.data_parallel_rank = static_cast<int32_t>(v->as_int64());
  if (pr.data_parallel_rank >= dp_)
    throw ApiError(400, fmt::format("'data_parallel_rank' must be below the number of replicas ({})", dp_), "data_parallel_rank");
  const int64_t choices = static_cast<int64_t>(pr.prompts.size()) * pr.n;
  if (opt_.max_queued_requests > 0 && n_queued_ + choices > opt_.max_queued_requests) {
    ++metrics_->rejected_429;
    send_error(s, ApiError(429, fmt::format("too many queued requests ({} waiting, --max-queued-requests {}); retry later",
                                            n_queued_, opt_.max_queued_requests)),
               {{"Retry-After", "1"}});
    return false;
  }
  return true;
}

void ApiServer::generate(const HttpRequest& req, const std::shared_ptr<HttpSession>& s, Endpoint ep, bool native) {
  check_serving();
  const json::object o = parse_body(req);
  auto pr = std::make_unique<ParsedRequest>(native ? parse_native_request(o, model_) : parse_request(o, ep, model_));
  if (admit(*pr, o, s)) submit_job(std::move(pr), s);
}

// The Responses body becomes the chat request it amounts to; the job keeps the shaper that turns
// the chat generation back into a response (and its stream events).
void ApiServer::create_response(const HttpRequest& req, const std::shared_ptr<HttpSession>& s) {
  check_serving();
  const json::object o = parse_body(req);
  ResponsesRequest rr = translate_responses_request(o, *response_store_);
  auto pr = std::make_unique<ParsedRequest>(parse_responses_request(rr, model_));
  if (!admit(*pr, o, s)) return;
  auto shaper = std::make_unique<ResponseShaper>(std::move(rr), new_response_id(), model_.name, unix_now());
  auto j = submit_job(std::move(pr), s);
  j->id = shaper->id();
  j->responses = std::move(shaper);
}

// GET and DELETE /v1/responses/{id}, GET /v1/responses/{id}/input_items.
void ApiServer::stored_response(const HttpRequest& req, const std::shared_ptr<HttpSession>& s) {
  std::string id = req.path.substr(std::string("/v1/responses/").size());
  std::string sub;  // what follows the id
  if (const std::size_t slash = id.find('/'); slash != std::string::npos) {
    sub = id.substr(slash + 1);
    id.resize(slash);
  }
  auto not_found = [&] {
    return ApiError(404, response_store_->not_found_message(id), "response_id", "invalid_request_error");
  };
  if (!sub.empty() && sub != "input_items")
    throw ApiError(404, fmt::format("no route {} {}", req.method, req.path), "", "NotFoundError");
  if (req.method != "GET" && !(sub.empty() && req.method == "DELETE"))
    throw ApiError(405, fmt::format("method {} is not allowed on {}", req.method, req.path));
  const auto query = query_params(req.target);
  if (!query) throw ApiError(400, "the query string has a malformed %-escape");
  if (sub == "input_items") {
    const ResponseStore::Entry* e = response_store_->find(id);
    if (!e) throw not_found();
    send_json(s, input_items_page(e->input_items, *query));
    return;
  }
  if (req.method == "DELETE") {
    if (!response_store_->erase(id)) throw not_found();
    send_json(s, json::object{{"id", id}, {"object", "response.deleted"}, {"deleted", true}});
    return;
  }
  for (const auto& [key, value] : *query)  // OpenAI replays a stored response's events with stream=true
    if (key == "stream" && value != "false")
      throw ApiError(400, "streaming a stored response is not supported by this server", "stream");
  const ResponseStore::Entry* e = response_store_->find(id);
  if (!e) throw not_found();
  send_json(s, e->response);
}

void ApiServer::health_generate(const std::shared_ptr<HttpSession>& s) {
  if (draining_ || !ready_)
    throw ApiError(503, draining_ ? "the server is shutting down" : "the engine is loading", "", "unavailable_error");
  auto pr = std::make_unique<ParsedRequest>();
  pr->prompts = {{0}};
  pr->params.max_tokens = 1;
  pr->params.temperature = 0.0f;
  pr->params.ignore_eos = true;
  auto j = submit_job(std::move(pr), s);
  j->internal = [](Job& jj) {
    if (!jj.http || !jj.http->open()) return;
    if (jj.reject.empty() && !jj.gens.empty() && !jj.gens[0].tokens().empty()) jj.http->send(200, "application/json", "{}");
    else send_error(jj.http, ApiError(503, "the engine did not generate: " + jj.reject, "", "unavailable_error"));
  };
}

// ---- readiness, signals, drain --------------------------------------------------------------

void ApiServer::tick() {
  if (stopping_) return;
  if (!ready_ && engine_.load_snapshot().steps > 0) {
    ready_ = true;
    const std::string line = "ready url=" + url_;
    std::printf("%s\n", line.c_str());
    std::fflush(stdout);
    log::info("serving {} at {} (dp {}, router {})", model_.name, url_, dp_, router_->name());
    if (!opt_.ready_file.empty()) {
      const std::string tmp = opt_.ready_file + ".tmp";
      {
        std::ofstream f(tmp);
        f << line << "\n";
      }
      std::rename(tmp.c_str(), opt_.ready_file.c_str());
    }
  }
  if (interrupt_ && !draining_) {
    draining_ = true;
    drain_deadline_ = now_s() + opt_.shutdown_timeout_s;
    log::info("draining: {} requests in flight, up to {} s (--shutdown-timeout)", by_id_.size(), opt_.shutdown_timeout_s);
  }
  if (draining_) {
    if (!by_id_.empty() && now_s() >= drain_deadline_) {
      log::warn("drain timeout: aborting {} requests", by_id_.size());
      std::vector<std::shared_ptr<Job>> jobs;
      for (auto& [id, jc] : by_id_) jobs.push_back(jc.first);
      for (auto& j : jobs) cancel(*j);  // responses end with finish_reason "abort"
    }
    if (by_id_.empty()) {
      engine_.shutdown();
      stopping_ = true;
      return;
    }
  }
  timer_.expires_after(std::chrono::milliseconds(50));
  timer_.async_wait([this](boost::system::error_code ec) {
    if (!ec) tick();
  });
}

}  // namespace dpa::serve
