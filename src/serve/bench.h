// Offline throughput benchmark in the manner of sglang.bench_offline_throughput: every prompt is
// submitted at once; rank 0 timestamps each token as it arrives and prints the bench_serving
// block (request / input / output / total token throughput; mean, median, p99 of TTFT, TPOT, ITL
// and end-to-end latency) and one JSON result line.
#pragma once

#include <boost/json.hpp>

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace dpa::serve {

struct BenchOptions {
  int64_t num_prompts = 64;
  int64_t random_input_len = 128;
  int64_t random_output_len = 64;
  double random_range_ratio = 1.0;  // lengths uniform in [len * ratio, len]
  std::string dataset;              // JSONL: {"prompt": ids, "output_len": n} per line; overrides random
  // "random", or "generated-shared-prefix" (SGLang's workload shape): gsp_num_groups groups of
  // gsp_prompts_per_group prompts; a prompt is its group's random system prompt followed by its
  // own random question; every request generates gsp_output_len tokens; the order is shuffled
  // (seeded). num_prompts and the random_* lengths do not apply.
  std::string dataset_name = "random";
  int64_t gsp_num_groups = 64;
  int64_t gsp_prompts_per_group = 16;
  int64_t gsp_system_prompt_len = 2048;
  int64_t gsp_question_len = 128;
  int64_t gsp_output_len = 256;
  bool ignore_eos = true;
  // Sampling of every request: temperature 0 is greedy (the default, as SGLang's offline
  // benchmark); vLLM's benchmark_throughput samples at temperature 1.
  float temperature = 0.0f;
  float top_p = 1.0f;
  int32_t top_k = -1;
  // Penalties of every request (OpenAI / vLLM semantics; the defaults are off).
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  uint64_t seed = 1;
  std::string trace;                // HDF5 per-step trace file
  std::string result_json;          // also append the JSON line here
};

struct BenchRequest {
  std::vector<int32_t> prompt;
  int32_t output_len = 0;
};

// Random prompts of token ids in [low_id, vocab) (ids below low_id, the special tokens of small
// tokenizers, are avoided), or the dataset's lines. Deterministic in the seed.
std::vector<BenchRequest> make_bench_requests(const BenchOptions& o, int64_t vocab, int64_t low_id);

struct Percentiles {
  double mean = 0, median = 0, p99 = 0;
};
Percentiles percentiles(std::vector<double> v);

// Latencies of one run in ms, reported the bench_serving way by `bench` and perf/bench_serving:
// the TTFT / TPOT / ITL / E2E part of the printed block, and its JSON fields (mean_ttft_ms, ...).
struct LatencyReport {
  Percentiles ttft, tpot, itl, e2e;
};
void print_latency(const LatencyReport& r);
void add_latency_json(boost::json::object& j, const LatencyReport& r);

// Rank 0 side: submits, collects timings, prints the report. Runs on its own thread; calls
// engine.shutdown() at the end.
class BenchRunner {
 public:
  BenchRunner(const BenchOptions& o, std::vector<BenchRequest> reqs, engine::Engine& engine, std::string label);
  void on_outputs(std::span<const engine::TokenOutput> outs);  // engine thread: a step's
  void run();
  std::string json_line() const { return json_; }

 private:
  struct Track {
    double submit = 0, first = 0, last = 0;
    int64_t n_out = 0;
    std::vector<double> itl;
    bool done = false;
  };
  BenchOptions opt_;
  std::vector<BenchRequest> reqs_;
  engine::Engine& engine_;
  std::string label_;
  std::vector<Track> tracks_;
  std::vector<uint64_t> ids_;
  std::mutex mu_;
  std::condition_variable cv_;
  int64_t n_done_ = 0;
  std::string json_;
};

}  // namespace dpa::serve
