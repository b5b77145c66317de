// `dpa_serve bench`: offline throughput with the bench_serving metrics block and a JSON line.
#include <algorithm>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>

#include "app/commands.h"
#include "app/engine_setup.h"
#include "dist/runtime.h"
#include "engine/step_trace.h"
#include "serve/bench.h"

namespace dpa::app {
namespace {

// 0 attention (attention.*), 1 MoE GEMMs (routed and shared experts), 2 all-to-all (the MoE
// exchanges and the attn_tp gather), 3 other (embedding, dense MLP, routing, combine, LM head).
int phase_group(const std::string& name) {
  if (name.rfind("attention.", 0) == 0) return 0;
  if (name == "moe.experts" || name == "moe.shared") return 1;
  if (name == "moe.dispatch" || name == "moe.combine_a2a" || name == "moe.gather_tp") return 2;
  return 3;
}

// Rank 0's phase times: per kind of step, ms per step and share, largest first.
void print_phases(const engine::CheckpointExecutor& ex) {
  std::printf("Phase breakdown (rank 0; time between markers on the backend's queue):\n");
  for (bool decode : {true, false}) {
    const model::PhaseStats& p = ex.phase_stats(decode);
    if (p.steps == 0) continue;
    double total = 0;
    for (const auto& [name, s] : p.seconds) total += s;
    const double per_step = 1e3 * total / static_cast<double>(p.steps);
    std::printf("  %s: %lld steps, %.2f ms per step\n", decode ? "decode steps" : "prefill / mixed steps",
                static_cast<long long>(p.steps), per_step);
    if (decode) {  // a decode step moves its weights and cache rows at least once
      const double gb = p.floor_bytes / static_cast<double>(p.steps) / 1e9, bw = ex.copy_bandwidth_gbs();
      if (bw > 0)
        std::printf("    floor: %.2f GB of weights touched + KV read per step at %.0f GB/s (copy) = %.2f ms; "
                    "step / floor %.2fx\n", gb, bw, 1e3 * gb / bw, per_step / (1e3 * gb / bw));
      else
        std::printf("    floor: %.2f GB of weights touched + KV read per step (copy bandwidth not measured)\n", gb);
    }
    std::vector<std::pair<double, std::string>> rows;
    for (const auto& [name, s] : p.seconds) rows.emplace_back(s, name);
    std::sort(rows.rbegin(), rows.rend());
    for (const auto& [s, name] : rows)
      std::printf("    %-18s %9.3f ms  %5.1f%%\n", name.c_str(), 1e3 * s / static_cast<double>(p.steps),
                  total > 0 ? 100.0 * s / total : 0.0);
    // The coarse split of the GPU performance issue: attention, MoE GEMMs, all-to-all, other.
    double group[4] = {0, 0, 0, 0};
    for (const auto& [name, s] : p.seconds) group[phase_group(name)] += s;
    const double k = 1e3 / static_cast<double>(p.steps);
    std::printf("    attention %.3f ms, MoE GEMMs %.3f ms, all-to-all %.3f ms, other %.3f ms\n", k * group[0],
                k * group[1], k * group[2], k * group[3]);
  }
}

struct BenchFlags {
  EngineFlags engine;
  serve::BenchOptions bench;
  bool no_ignore_eos = false;
};

int run_bench(Context& ctx, BenchFlags& f) {
  f.engine.collect_expert_stats = !f.bench.trace.empty();
  EngineStack s = build_engine(ctx, f.engine);
  f.bench.ignore_eos = !f.no_ignore_eos;
  const bool root = ctx.runtime.rank() == 0;
  std::unique_ptr<serve::BenchRunner> runner;
  std::thread driver;
  if (root) {
    // Ids below 3 are BOS/EOS/PAD in small vocabularies; the DeepSeek ones sit at the top.
    auto reqs = serve::make_bench_requests(f.bench, s.info.vocab_size, 3);
    const auto& g = s.groups->layout();
    runner = std::make_unique<serve::BenchRunner>(
        f.bench, std::move(reqs), *s.engine,
        fmt::format("dpa_serve {} W={} dp={} ep={}", device_name(ctx.device), g.world_size, g.dp, g.ep));
    driver = std::thread([&] { runner->run(); });
  }
  std::unique_ptr<engine::StepTrace> trace;
  if (root && !f.bench.trace.empty()) {
    trace = std::make_unique<engine::StepTrace>(f.bench.trace);
    s.engine->set_step_observer([&](const engine::StepRecord& r) { trace->record(r); });
  }
  s.engine->run([&](std::span<const engine::TokenOutput> outs) { runner->on_outputs(outs); });
  if (driver.joinable()) driver.join();
  if (root && f.engine.profile_phases) print_phases(*s.executor);
  if (trace) {
    const auto& g = s.groups->layout();
    trace->write({{"model", f.engine.model},
                  {"layout", fmt::format("W={} dp={} attn_tp={} ep={}", g.world_size, g.dp, g.attn_tp, g.ep)},
                  {"device", device_name(ctx.device)},
                  {"workload", f.bench.dataset_name == "generated-shared-prefix" && f.bench.dataset.empty()
                                   ? fmt::format("generated-shared-prefix groups={} prompts_per_group={} system_prompt_len={} question_len={} output_len={}",
                                                 f.bench.gsp_num_groups, f.bench.gsp_prompts_per_group, f.bench.gsp_system_prompt_len,
                                                 f.bench.gsp_question_len, f.bench.gsp_output_len)
                                   : fmt::format("num_prompts={} random_input_len={} random_output_len={}",
                                                 f.bench.num_prompts, f.bench.random_input_len, f.bench.random_output_len)}});
    std::printf("trace: %lld steps written to %s\n", static_cast<long long>(trace->n_steps()), f.bench.trace.c_str());
  }
  return 0;
}

}  // namespace

Command bench_command() {
  auto f = std::make_shared<BenchFlags>();
  return {"bench", "offline throughput benchmark (random or JSONL workload)",
          [f](po::options_description& d) {
            add_engine_options(d, f->engine);
            auto& b = f->bench;
            d.add_options()
                ("num-prompts", po::value<int64_t>(&b.num_prompts)->default_value(b.num_prompts), "requests")
                ("random-input-len", po::value<int64_t>(&b.random_input_len)->default_value(b.random_input_len), "prompt tokens")
                ("random-output-len", po::value<int64_t>(&b.random_output_len)->default_value(b.random_output_len), "output tokens")
                ("random-range-ratio", po::value<double>(&b.random_range_ratio)->default_value(b.random_range_ratio), "lengths uniform in [len*ratio, len]")
                ("dataset", po::value<std::string>(&b.dataset), "JSONL of {\"prompt\": [ids], \"output_len\": n} instead of random")
                ("dataset-name", po::value<std::string>(&b.dataset_name)->default_value(b.dataset_name), "random | generated-shared-prefix (groups of prompts sharing a system prompt)")
                ("gsp-num-groups", po::value<int64_t>(&b.gsp_num_groups)->default_value(b.gsp_num_groups), "generated-shared-prefix: groups (system prompts)")
                ("gsp-prompts-per-group", po::value<int64_t>(&b.gsp_prompts_per_group)->default_value(b.gsp_prompts_per_group), "generated-shared-prefix: prompts per group")
                ("gsp-system-prompt-len", po::value<int64_t>(&b.gsp_system_prompt_len)->default_value(b.gsp_system_prompt_len), "generated-shared-prefix: system prompt tokens")
                ("gsp-question-len", po::value<int64_t>(&b.gsp_question_len)->default_value(b.gsp_question_len), "generated-shared-prefix: question tokens")
                ("gsp-output-len", po::value<int64_t>(&b.gsp_output_len)->default_value(b.gsp_output_len), "generated-shared-prefix: output tokens")
                ("no-ignore-eos", po::bool_switch(&f->no_ignore_eos), "stop at EOS (default: ignore_eos, fixed output lengths)")
                ("temperature", po::value<float>(&b.temperature)->default_value(b.temperature), "sampling temperature of every request (0: greedy)")
                ("top-p", po::value<float>(&b.top_p)->default_value(b.top_p), "nucleus sampling mass, (0, 1]")
                ("top-k", po::value<int32_t>(&b.top_k)->default_value(b.top_k), "top-k sampling (-1: off)")
                ("repetition-penalty", po::value<float>(&b.repetition_penalty)->default_value(b.repetition_penalty), "repetition penalty of every request (1: off)")
                ("presence-penalty", po::value<float>(&b.presence_penalty)->default_value(b.presence_penalty), "presence penalty of every request, [-2, 2]")
                ("frequency-penalty", po::value<float>(&b.frequency_penalty)->default_value(b.frequency_penalty), "frequency penalty of every request, [-2, 2]")
                ("bench-seed", po::value<uint64_t>(&b.seed)->default_value(b.seed), "workload seed")
                ("result-file", po::value<std::string>(&b.result_json), "append the JSON result line to this file")
                ("profile-phases", po::bool_switch(&f->engine.profile_phases), "time the phases of every step (attention, MoE routing / dispatch / experts / combine, LM head) and print them per decode and prefill step")
                ("trace", po::value<std::string>(&b.trace), "write a per-step HDF5 trace here (step time, tokens and mode per rank, KV use, tokens per expert per layer)");
          },
          [f](Context& ctx) { return run_bench(ctx, *f); }};
}

}  // namespace dpa::app
