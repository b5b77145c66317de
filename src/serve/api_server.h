// The OpenAI-compatible API of `dpa_serve serve` on rank 0: routes, per-request state, routing
// across replicas, metrics, readiness and the drain. Everything here runs on the io thread;
// the engine thread only hands tokens and rejections over (on_outputs / on_reject post them).
#pragma once

#include <atomic>
#include <boost/asio.hpp>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/engine.h"
#include "engine/router.h"
#include "serve/http_server.h"
#include "serve/openai_request.h"
#include "serve/response_store.h"

namespace dpa::serve {

struct FrontendMetrics;

struct ServeOptions {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;                 // empty: no authentication
  uint64_t max_request_bytes = 32ull << 20;
  int64_t max_queued_requests = 4096;  // engine requests still waiting for their first token
  double shutdown_timeout_s = 30.0;    // drain: in-flight requests may finish this long
  // /v1/responses with store: the most recently used responses kept, and their JSON's bytes at
  // most (the newest is kept even when alone over it); 0 responses: none kept, store: true is
  // answered as store: false.
  int64_t responses_max_stored = ResponseStore::kDefaultMaxResponses;
  int64_t responses_max_stored_bytes = ResponseStore::kDefaultMaxBytes;
  std::string ready_file;
  std::string version;                 // for /version and /get_server_info
  engine::RouterConfig router;
  int world_size = 1;
};

class ApiServer {
 public:
  ApiServer(boost::asio::io_context& ioc, const ServeOptions& opt, const ModelInfo& model, engine::Engine& engine,
            const std::atomic<bool>& interrupt);
  ~ApiServer();

  // Binds (throws on failure) and starts the readiness / signal timers. Returns the port.
  int start();
  // Engine thread: hand over a step's outputs / one rejection.
  void on_outputs(std::span<const engine::TokenOutput> outs);
  void on_reject(const engine::Rejection& r);
  // After Engine::run returned: stop accepting and let the io thread end.
  void stop();
  // The engine is gone (watchdog, any thread): every open request gets an error now (HTTP 500
  // with an OpenAI error body, or an error event and [DONE] on a stream), new ones 503. Returns
  // once the answers are handed to the sockets, or after `wait_s`.
  void fail_all(const std::string& message, double wait_s);
  std::string url() const { return url_; }

 private:
  struct Job;
  void handle(const HttpRequest& req, const std::shared_ptr<HttpSession>& s);
  void route(const HttpRequest& req, const std::shared_ptr<HttpSession>& s);
  void generate(const HttpRequest& req, const std::shared_ptr<HttpSession>& s, Endpoint ep, bool native = false);
  // Throws 503 while loading, draining or failed.
  void check_serving() const;
  // The replica pin and the queue limit; false when the request got its 429.
  bool admit(ParsedRequest& pr, const boost::json::object& body, const std::shared_ptr<HttpSession>& s);
  // /v1/responses: create (over the chat path); GET / DELETE of a stored one, GET of its input items.
  void create_response(const HttpRequest& req, const std::shared_ptr<HttpSession>& s);
  void stored_response(const HttpRequest& req, const std::shared_ptr<HttpSession>& s);
  void complete_response(Job& j);
  void start_stream(Job& j);
  void health_generate(const std::shared_ptr<HttpSession>& s);
  std::shared_ptr<Job> submit_job(std::unique_ptr<ParsedRequest> pr, const std::shared_ptr<HttpSession>& s);
  void drain_events();
  void on_token(const engine::TokenOutput& o);
  void on_rejection(const engine::Rejection& r);
  void stream_piece(Job& j, int choice, const std::string& delta, bool final);
  std::string native_rid(const Job& j, int choice) const;
  void finish_choice(Job& j, int choice);
  void complete(Job& j);
  void cancel(Job& j);
  void tick();
  std::vector<engine::ReplicaLoad> replica_loads(const engine::LoadSnapshot& snap) const;

  boost::asio::io_context& ioc_;
  ServeOptions opt_;
  const ModelInfo& model_;
  engine::Engine& engine_;
  const std::atomic<bool>& interrupt_;
  std::unique_ptr<HttpServer> http_;
  std::unique_ptr<engine::Router> router_;
  std::unique_ptr<FrontendMetrics> metrics_;
  std::unique_ptr<ResponseStore> response_store_;  // /v1/responses with store (io thread only)
  boost::asio::steady_timer timer_;
  std::string url_;

  // Engine thread -> io thread.
  std::mutex mu_;
  std::vector<engine::TokenOutput> pending_outputs_;
  std::vector<engine::Rejection> pending_rejections_;
  bool posted_ = false;

  std::unordered_map<uint64_t, std::pair<std::shared_ptr<Job>, int>> by_id_;  // engine id -> (job, choice)
  std::vector<int64_t> inflight_;       // per replica: engine requests not finished
  std::vector<int64_t> queued_;         // per replica: ... without a first token yet
  int64_t n_queued_ = 0;
  uint64_t next_serial_ = 1;
  int64_t created_ = 0;
  bool ready_ = false, draining_ = false, stopping_ = false, failed_ = false;
  std::string failure_;
  double drain_deadline_ = 0;
  int dp_ = 1;
};

}  // namespace dpa::serve
