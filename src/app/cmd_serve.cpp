// `dpa_serve serve`: the OpenAI-compatible HTTP API on rank 0. Rank 0 runs the HTTP server on
// one io thread and the engine on the main thread (the only one that calls MPI); the other ranks
// run the engine and follow rank 0's shutdown.
#include <cstdlib>
#include <thread>

#include <boost/asio.hpp>
#include <fmt/format.h>

#include "app/commands.h"
#include "app/engine_setup.h"
#include "core/error.h"
#include "core/log.h"
#include "dist/runtime.h"
#include "dpa_build_info.h"
#include "serve/api_server.h"

namespace dpa::app {
namespace {

struct ServeFlags {
  EngineFlags engine;
  serve::ServeOptions serve;
  bool no_expert_stats = false;
};

int run_serve(Context& ctx, ServeFlags& f) {
  install_signal_handlers();
  if (f.serve.api_key.empty())
    if (const char* k = std::getenv("DPA_API_KEY")) f.serve.api_key = k;
  if (f.serve.port < 0 || f.serve.port > 65535) throw ConfigError("port", "must be in [0, 65535]");
  if (f.serve.shutdown_timeout_s < 0) throw ConfigError("shutdown-timeout", "must be >= 0");
  if (f.serve.responses_max_stored < 0) throw ConfigError("responses-max-stored", "must be >= 0");
  if (f.serve.responses_max_stored_bytes < 0) throw ConfigError("responses-max-stored-bytes", "must be >= 0");
  f.engine.collect_expert_stats = !f.no_expert_stats;
  EngineStack s = build_engine(ctx, f.engine);
  const bool root = ctx.runtime.rank() == 0;
  f.serve.router = f.engine.router;
  f.serve.router.seed = f.engine.seed;
  f.serve.version = fmt::format("{} ({})", DPA_VERSION, DPA_BUILD_COMMIT);
  f.serve.world_size = ctx.runtime.size();

  boost::asio::io_context ioc(1);
  std::unique_ptr<serve::ApiServer> api;
  std::thread io;
  if (root) {
    api = std::make_unique<serve::ApiServer>(ioc, f.serve, s.info, *s.engine, interrupted());
    std::optional<std::string> err;
    try {
      api->start();
    } catch (const std::exception& e) {
      err = fmt::format("cannot listen on {}:{}: {}", f.serve.host, f.serve.port, e.what());
    }
    if (err) {
      // Every rank must leave the engine loop: run it with an immediate shutdown.
      log::error("{}", *err);
      s.engine->shutdown();
      s.engine->run(nullptr, nullptr);
      return 2;
    }
    io = std::thread([&] {
      auto guard = boost::asio::make_work_guard(ioc);
      ioc.run();
    });
    // A stalled step ends the job (watchdog); the clients hear of it first.
    s.engine->set_fatal_handler([a = api.get()](const std::string& why) {
      a->fail_all(why, engine::Engine::kFatalGraceS - 1.0);
    });
  }
  s.engine->run([&](std::span<const engine::TokenOutput> outs) { api->on_outputs(outs); },
                [&](const engine::Rejection& r) { api->on_reject(r); });
  if (root) {
    api->stop();
    io.join();
    log::info("serve: shut down");
  }
  return 0;
}

}  // namespace

Command serve_command() {
  auto f = std::make_shared<ServeFlags>();
  return {"serve", "serve the OpenAI-compatible HTTP API on rank 0",
          [f](po::options_description& d) {
            add_engine_options(d, f->engine);
            auto& o = f->serve;
            d.add_options()
                ("host", po::value<std::string>(&o.host)->default_value(o.host), "address to bind (rank 0)")
                ("port", po::value<int>(&o.port)->default_value(o.port), "port to bind (0: any free port; the ready line says which)")
                ("api-key", po::value<std::string>(&o.api_key), "require `Authorization: Bearer KEY` on every route but /health (default: env DPA_API_KEY)")
                ("max-request-bytes", po::value<uint64_t>(&o.max_request_bytes)->default_value(o.max_request_bytes), "largest request body (413 above)")
                ("max-queued-requests", po::value<int64_t>(&o.max_queued_requests)->default_value(o.max_queued_requests), "engine requests waiting for their first token before new ones get 429 (0: no limit)")
                ("shutdown-timeout", po::value<double>(&o.shutdown_timeout_s)->default_value(o.shutdown_timeout_s), "seconds in-flight requests may run after SIGTERM before they are aborted")
                ("responses-max-stored", po::value<int64_t>(&o.responses_max_stored)->default_value(o.responses_max_stored), "/v1/responses kept for GET and previous_response_id, the least recently used evicted first (0: none kept; store: true is answered as store: false)")
                ("responses-max-stored-bytes", po::value<int64_t>(&o.responses_max_stored_bytes)->default_value(o.responses_max_stored_bytes), "bound on the stored responses' JSON bytes (the newest is kept even when alone over it)")
                ("ready-file", po::value<std::string>(&o.ready_file), "write the `ready url=...` line to this file too")
                ("no-expert-stats", po::bool_switch(&f->no_expert_stats), "do not gather tokens per expert for /metrics");
          },
          [f](Context& ctx) { return run_serve(ctx, *f); }};
}

}  // namespace dpa::app
