// `dpa_serve batch`: OpenAI Batch JSONL in, OpenAI Batch JSONL out, resumable.
#include <thread>

#include "app/commands.h"
#include "app/engine_setup.h"
#include "dist/runtime.h"
#include "core/log.h"
#include "serve/batch.h"

namespace dpa::app {
namespace {

struct BatchFlags {
  EngineFlags engine;
  serve::BatchOptions batch;
  bool no_progress = false;
};

int run_batch(Context& ctx, BatchFlags& f) {
  install_signal_handlers();
  EngineStack s = build_engine(ctx, f.engine);
  f.batch.progress = !f.no_progress;
  const bool root = ctx.runtime.rank() == 0;
  std::unique_ptr<serve::BatchRunner> runner;
  std::thread io;
  std::exception_ptr io_error;
  if (root) {
    runner = std::make_unique<serve::BatchRunner>(f.batch, s.info, *s.engine, interrupted());
    io = std::thread([&] {
      try {
        runner->run();
      } catch (...) {
        io_error = std::current_exception();
      }
    });
  }
  s.engine->run([&](std::span<const engine::TokenOutput> outs) { runner->on_outputs(outs); },
                [&](const engine::Rejection& r) { runner->on_reject(r); });
  if (io.joinable()) io.join();
  if (io_error) std::rethrow_exception(io_error);  // rank 0 only: input/output file problems
  if (!root) return 0;
  const auto& sum = runner->summary();
  log::info("batch: {} lines, {} written, {} skipped (done earlier), {} errors; {} prompt + {} completion tokens in {:.2f} s",
            sum.lines, sum.written, sum.skipped, sum.errors, sum.prompt_tokens, sum.completion_tokens, sum.seconds);
  return sum.interrupted ? 75 : 0;
}

}  // namespace

Command batch_command() {
  auto f = std::make_shared<BatchFlags>();
  return {"batch", "offline batch inference from an OpenAI Batch JSONL file (resumable)",
          [f](po::options_description& d) {
            add_engine_options(d, f->engine);
            d.add_options()
                ("input", po::value<std::string>(&f->batch.input)->required(), "OpenAI Batch JSONL input")
                ("output", po::value<std::string>(&f->batch.output)->required(), "JSONL output; rerun with the same file to resume")
                ("max-inflight-lines", po::value<int64_t>(&f->batch.max_inflight_lines)->default_value(f->batch.max_inflight_lines), "lines submitted ahead of the writer")
                ("no-progress", po::bool_switch(&f->no_progress), "no progress lines on stderr");
          },
          [f](Context& ctx) { return run_batch(ctx, *f); }};
}

}  // namespace dpa::app
