// Benchmark workload, timing and report.
#include "serve/bench.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <thread>
#include <unordered_map>

#include <boost/json.hpp>
#include <fmt/format.h>

#include "core/error.h"

namespace dpa::serve {

namespace {
double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

std::vector<BenchRequest> make_bench_requests(const BenchOptions& o, int64_t vocab, int64_t low_id) {
  std::vector<BenchRequest> out;
  if (!(o.temperature >= 0.0f) || !std::isfinite(o.temperature)) throw ConfigError("temperature", "must be >= 0");
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) throw ConfigError("top-p", "must be in (0, 1]");
  if (o.top_k < -1) throw ConfigError("top-k", "must be -1 (off) or positive");
  // The ranges the OpenAI API accepts (openai_request.cpp).
  if (!(o.repetition_penalty >= 1e-6f && o.repetition_penalty <= 100.0f))
    throw ConfigError("repetition-penalty", "must be in [1e-6, 100]");
  if (!(o.presence_penalty >= -2.0f && o.presence_penalty <= 2.0f))
    throw ConfigError("presence-penalty", "must be in [-2, 2]");
  if (!(o.frequency_penalty >= -2.0f && o.frequency_penalty <= 2.0f))
    throw ConfigError("frequency-penalty", "must be in [-2, 2]");
  if (!o.dataset.empty()) {
    std::ifstream in(o.dataset);
    if (!in) throw Error(fmt::format("--dataset: cannot open {}", o.dataset));
    int64_t lineno = 0;
    for (std::string s; std::getline(in, s) && static_cast<int64_t>(out.size()) < o.num_prompts;) {
      ++lineno;
      if (s.empty()) continue;
      boost::system::error_code ec;
      auto v = boost::json::parse(s, ec);
      const auto* obj = (!ec && v.is_object()) ? &v.as_object() : nullptr;
      const auto* p = obj ? obj->if_contains("prompt") : nullptr;
      const auto* n = obj ? obj->if_contains("output_len") : nullptr;
      if (!p || !p->is_array() || !n || !n->is_int64())
        throw Error(fmt::format("--dataset {}:{}: need {{\"prompt\": [token ids], \"output_len\": n}}", o.dataset, lineno));
      BenchRequest r;
      for (const auto& t : p->as_array()) {
        if (!t.is_int64() || t.as_int64() < 0 || t.as_int64() >= vocab)
          throw Error(fmt::format("--dataset {}:{}: token ids must be integers in [0, {})", o.dataset, lineno, vocab));
        r.prompt.push_back(static_cast<int32_t>(t.as_int64()));
      }
      r.output_len = static_cast<int32_t>(n->as_int64());
      if (r.prompt.empty() || r.output_len <= 0) throw Error(fmt::format("--dataset {}:{}: empty prompt or output_len <= 0", o.dataset, lineno));
      out.push_back(std::move(r));
    }
    return out;
  }
  if (o.dataset_name == "generated-shared-prefix") {
    if (o.gsp_num_groups <= 0) throw ConfigError("gsp-num-groups", "must be positive");
    if (o.gsp_prompts_per_group <= 0) throw ConfigError("gsp-prompts-per-group", "must be positive");
    if (o.gsp_system_prompt_len < 0) throw ConfigError("gsp-system-prompt-len", "must be >= 0");
    if (o.gsp_question_len <= 0) throw ConfigError("gsp-question-len", "must be positive");
    if (o.gsp_output_len <= 0) throw ConfigError("gsp-output-len", "must be positive");
    std::mt19937_64 rng(o.seed);
    std::uniform_int_distribution<int64_t> tok(std::min(low_id, vocab - 1), vocab - 1);
    auto random_ids = [&](int64_t n) {
      std::vector<int32_t> v(static_cast<std::size_t>(n));
      for (auto& t : v) t = static_cast<int32_t>(tok(rng));
      return v;
    };
    for (int64_t g = 0; g < o.gsp_num_groups; ++g) {
      const std::vector<int32_t> system = random_ids(o.gsp_system_prompt_len);
      for (int64_t i = 0; i < o.gsp_prompts_per_group; ++i) {
        BenchRequest r;
        r.prompt = system;
        const auto q = random_ids(o.gsp_question_len);
        r.prompt.insert(r.prompt.end(), q.begin(), q.end());
        r.output_len = static_cast<int32_t>(o.gsp_output_len);
        out.push_back(std::move(r));
      }
    }
    std::shuffle(out.begin(), out.end(), rng);
    return out;
  }
  if (o.dataset_name != "random")
    throw ConfigError("dataset-name", "unknown dataset '" + o.dataset_name + "' (random, generated-shared-prefix)");
  if (o.random_range_ratio <= 0 || o.random_range_ratio > 1)
    throw ConfigError("random-range-ratio", "must be in (0, 1]");
  if (o.random_input_len <= 0) throw ConfigError("random-input-len", "must be positive");
  if (o.random_output_len <= 0) throw ConfigError("random-output-len", "must be positive");
  std::mt19937_64 rng(o.seed);
  auto len_in = [&](int64_t len) {
    const int64_t lo = std::max<int64_t>(1, static_cast<int64_t>(std::floor(len * o.random_range_ratio)));
    return std::uniform_int_distribution<int64_t>(lo, len)(rng);
  };
  std::uniform_int_distribution<int64_t> tok(std::min(low_id, vocab - 1), vocab - 1);
  for (int64_t i = 0; i < o.num_prompts; ++i) {
    BenchRequest r;
    r.prompt.resize(len_in(o.random_input_len));
    for (auto& t : r.prompt) t = static_cast<int32_t>(tok(rng));
    r.output_len = static_cast<int32_t>(len_in(o.random_output_len));
    out.push_back(std::move(r));
  }
  return out;
}

Percentiles percentiles(std::vector<double> v) {
  Percentiles p;
  if (v.empty()) return p;
  std::sort(v.begin(), v.end());
  double s = 0;
  for (double x : v) s += x;
  p.mean = s / v.size();
  const auto at = [&](double q) {  // linear interpolation, as numpy.percentile
    const double pos = q * (v.size() - 1);
    const std::size_t i = static_cast<std::size_t>(pos);
    const double f = pos - i;
    return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
  };
  p.median = at(0.5);
  p.p99 = at(0.99);
  return p;
}

void print_latency(const LatencyReport& r) {
  auto block = [](const char* name, const Percentiles& p) {
    std::printf("%-40s %.2f\n", fmt::format("Mean {} (ms):", name).c_str(), p.mean);
    std::printf("%-40s %.2f\n", fmt::format("Median {} (ms):", name).c_str(), p.median);
    std::printf("%-40s %.2f\n", fmt::format("P99 {} (ms):", name).c_str(), p.p99);
  };
  std::printf("---------------Time to First Token----------------\n");
  block("TTFT", r.ttft);
  std::printf("-----Time per Output Token (excl. 1st token)------\n");
  block("TPOT", r.tpot);
  std::printf("---------------Inter-token Latency----------------\n");
  block("ITL", r.itl);
  std::printf("----------------End-to-End Latency----------------\n");
  block("E2E Latency", r.e2e);
  std::printf("==================================================\n");
}

void add_latency_json(boost::json::object& j, const LatencyReport& r) {
  auto add = [&](const char* name, const Percentiles& p) {
    j[fmt::format("mean_{}_ms", name)] = p.mean;
    j[fmt::format("median_{}_ms", name)] = p.median;
    j[fmt::format("p99_{}_ms", name)] = p.p99;
  };
  add("ttft", r.ttft);
  add("tpot", r.tpot);
  add("itl", r.itl);
  add("e2e_latency", r.e2e);
}

BenchRunner::BenchRunner(const BenchOptions& o, std::vector<BenchRequest> reqs, engine::Engine& engine, std::string label)
    : opt_(o), reqs_(std::move(reqs)), engine_(engine), label_(std::move(label)), tracks_(reqs_.size()) {}

void BenchRunner::on_outputs(std::span<const engine::TokenOutput> outs) {
  const double t = now_s();  // a step's tokens arrive together
  std::lock_guard lk(mu_);
  bool finished = false;
  for (const engine::TokenOutput& out : outs) {
    const uint64_t i = out.request_id - 1;  // ids are assigned 1..n in submission order below
    if (i >= tracks_.size()) continue;
    auto& tr = tracks_[i];
    if (tr.n_out == 0) tr.first = t;
    else tr.itl.push_back(t - tr.last);
    tr.last = t;
    ++tr.n_out;
    if (out.finish != engine::FinishReason::none && !tr.done) {
      tr.done = true;
      ++n_done_;
      finished = true;
    }
  }
  if (finished) cv_.notify_one();
}

void BenchRunner::run() {
  struct Shutdown {
    engine::Engine& e;
    ~Shutdown() { e.shutdown(); }
  } shutdown{engine_};
  const double t0 = now_s();
  for (std::size_t i = 0; i < reqs_.size(); ++i) {
    engine::Request r;
    r.id = i + 1;
    r.prompt = reqs_[i].prompt;
    r.params.temperature = opt_.temperature;
    r.params.top_p = opt_.top_p;
    r.params.top_k = opt_.top_k;
    r.params.repetition_penalty = opt_.repetition_penalty;
    r.params.presence_penalty = opt_.presence_penalty;
    r.params.frequency_penalty = opt_.frequency_penalty;
    r.params.max_tokens = reqs_[i].output_len;
    r.params.ignore_eos = opt_.ignore_eos;
    {
      std::lock_guard lk(mu_);
      tracks_[i].submit = now_s();
    }
    engine_.submit(std::move(r));
  }
  {
    std::unique_lock lk(mu_);
    cv_.wait(lk, [&] { return n_done_ == static_cast<int64_t>(reqs_.size()); });
  }
  const double dur = now_s() - t0;
  // Prefix cache counters travel in the step headers: wait for a snapshot of a step after the
  // last output (the engine runs at least one more), then sum the replica leaders'.
  const int64_t seen = engine_.load_snapshot().steps;
  for (int i = 0; i < 2000 && engine_.load_snapshot().steps <= seen; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  int64_t cache_q = 0, cache_h = 0;
  {
    const auto snap = engine_.load_snapshot();
    for (std::size_t r = 0; r < snap.headers.size(); r += static_cast<std::size_t>(std::max(snap.attn_tp, 1)))
      cache_q += snap.headers[r].prefix_cache_queries, cache_h += snap.headers[r].prefix_cache_hits;
  }
  const double hit_rate = cache_q > 0 ? static_cast<double>(cache_h) / static_cast<double>(cache_q) : 0.0;
  int64_t in_tok = 0, out_tok = 0;
  std::vector<double> ttft, tpot, itl, e2e;
  for (std::size_t i = 0; i < reqs_.size(); ++i) {
    const auto& tr = tracks_[i];
    in_tok += static_cast<int64_t>(reqs_[i].prompt.size());
    out_tok += tr.n_out;
    ttft.push_back((tr.first - tr.submit) * 1e3);
    e2e.push_back((tr.last - tr.submit) * 1e3);
    if (tr.n_out > 1) tpot.push_back((tr.last - tr.first) / (tr.n_out - 1) * 1e3);
    for (double g : tr.itl) itl.push_back(g * 1e3);
  }
  const LatencyReport lat{percentiles(ttft), percentiles(tpot), percentiles(itl), percentiles(e2e)};
  const double n = static_cast<double>(reqs_.size());
  std::printf("\n============ Offline Throughput Benchmark Result ============\n");
  std::printf("%-40s %s\n", "Backend:", label_.c_str());
  std::printf("%-40s %lld\n", "Successful requests:", static_cast<long long>(reqs_.size()));
  std::printf("%-40s %.2f\n", "Benchmark duration (s):", dur);
  std::printf("%-40s %lld\n", "Total input tokens:", static_cast<long long>(in_tok));
  std::printf("%-40s %lld\n", "Total generated tokens:", static_cast<long long>(out_tok));
  std::printf("%-40s %.2f\n", "Request throughput (req/s):", n / dur);
  std::printf("%-40s %.2f\n", "Input token throughput (tok/s):", in_tok / dur);
  std::printf("%-40s %.2f\n", "Output token throughput (tok/s):", out_tok / dur);
  std::printf("%-40s %.2f\n", "Total token throughput (tok/s):", (in_tok + out_tok) / dur);
  std::printf("%-40s %.4f\n", "Prefix cache hit rate:", hit_rate);
  std::printf("%-40s %lld / %lld\n", "Prefix cache hit / query tokens:", static_cast<long long>(cache_h),
              static_cast<long long>(cache_q));
  print_latency(lat);
  boost::json::object j{{"backend", label_},
                        {"completed", static_cast<int64_t>(reqs_.size())},
                        {"duration", dur},
                        {"total_input_tokens", in_tok},
                        {"total_output_tokens", out_tok},
                        {"request_throughput", n / dur},
                        {"input_throughput", in_tok / dur},
                        {"output_throughput", out_tok / dur},
                        {"total_throughput", (in_tok + out_tok) / dur},
                        {"random_input_len", opt_.random_input_len},
                        {"random_output_len", opt_.random_output_len},
                        {"random_range_ratio", opt_.random_range_ratio},
                        {"ignore_eos", opt_.ignore_eos},
                        {"temperature", opt_.temperature},
                        {"top_p", opt_.top_p},
                        {"top_k", opt_.top_k},
                        {"repetition_penalty", opt_.repetition_penalty},
                        {"presence_penalty", opt_.presence_penalty},
                        {"frequency_penalty", opt_.frequency_penalty},
                        {"dataset_name", opt_.dataset.empty() ? opt_.dataset_name : std::string("jsonl")},
                        {"prefix_cache_hit_rate", hit_rate},
                        {"prefix_cache_hits", cache_h},
                        {"prefix_cache_queries", cache_q}};
  add_latency_json(j, lat);
  if (opt_.dataset.empty() && opt_.dataset_name == "generated-shared-prefix") {
    j["gsp_num_groups"] = opt_.gsp_num_groups;
    j["gsp_prompts_per_group"] = opt_.gsp_prompts_per_group;
    j["gsp_system_prompt_len"] = opt_.gsp_system_prompt_len;
    j["gsp_question_len"] = opt_.gsp_question_len;
    j["gsp_output_len"] = opt_.gsp_output_len;
  }
  json_ = boost::json::serialize(j);
  std::printf("%s\n", json_.c_str());
  std::fflush(stdout);
  if (!opt_.result_json.empty()) {
    std::ofstream f(opt_.result_json, std::ios::app);
    f << json_ << "\n";
  }
}

}  // namespace dpa::serve
