// The serve frontend's Prometheus text.
#include "serve/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <functional>

#include "serve/response_store.h"

namespace dpa::serve {

const std::vector<double> kTtftBuckets = {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
                                          1.0,   2.5,   5.0,  7.5,  10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0};
const std::vector<double> kItlBuckets = {0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5,
                                         0.75, 1.0,   2.5,  5.0,   7.5, 10.0, 20.0, 40.0, 80.0};
const std::vector<double> kLatencyBuckets = {0.3,  0.5,  0.8,  1.0,  1.5,  2.0,   2.5,   5.0,   10.0,  15.0, 20.0,
                                             30.0, 40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0};

std::string prometheus_text(const FrontendMetrics& m, const engine::LoadSnapshot& snap, const std::string& model,
                            const ResponseStore& store) {
  const int n_dp = static_cast<int>(m.rep.size());
  std::string out;
  auto labels = [&](int d, const std::string& extra = "") {
    return fmt::format("model_name=\"{}\",dp_rank=\"{}\"{}", model, d, extra);
  };
  auto header = [&](const char* name, const char* type, const char* help) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  };
  auto gauge = [&](const char* name, const char* help, const std::function<double(const engine::StepHeader&, int)>& f) {
    header(name, "gauge", help);
    for (int d = 0; d < n_dp; ++d) {
      const std::size_t leader = static_cast<std::size_t>(d) * snap.attn_tp;
      const engine::StepHeader h = leader < snap.headers.size() ? snap.headers[leader] : engine::StepHeader{};
      out += fmt::format("{}{{{}}} {}\n", name, labels(d), f(h, d));
    }
  };
  gauge("vllm:num_requests_running", "Requests in the model execution batch.",
        [](const engine::StepHeader& h, int) { return static_cast<double>(h.n_running); });
  gauge("vllm:num_requests_waiting", "Requests waiting to be processed.",
        [](const engine::StepHeader& h, int) { return static_cast<double>(h.n_waiting); });
  gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", [](const engine::StepHeader& h, int) {
    return h.total_blocks > 0 ? 1.0 - static_cast<double>(h.free_blocks) / static_cast<double>(h.total_blocks) : 0.0;
  });
  auto counter = [&](const char* name, const char* help, const std::function<uint64_t(int)>& f) {
    header(name, "counter", help);
    for (int d = 0; d < n_dp; ++d) out += fmt::format("{}{{{}}} {}\n", name, labels(d), f(d));
  };
  counter("vllm:prompt_tokens_total", "Number of prefill tokens processed.",
          [&](int d) { return m.rep[d].prompt_tokens; });
  counter("vllm:generation_tokens_total", "Number of generation tokens processed.",
          [&](int d) { return m.rep[d].generation_tokens; });
  auto leader_header = [&](int d) {
    const std::size_t leader = static_cast<std::size_t>(d) * snap.attn_tp;
    return leader < snap.headers.size() ? snap.headers[leader] : engine::StepHeader{};
  };
  counter("vllm:prefix_cache_queries_total", "Prefix cache queries, in terms of number of queried tokens.",
          [&](int d) { return static_cast<uint64_t>(std::max<int64_t>(0, leader_header(d).prefix_cache_queries)); });
  counter("vllm:prefix_cache_hits_total", "Prefix cache hits, in terms of number of cached tokens.",
          [&](int d) { return static_cast<uint64_t>(std::max<int64_t>(0, leader_header(d).prefix_cache_hits)); });
  header("vllm:request_success_total", "counter", "Count of finished requests by finish reason.");
  for (int d = 0; d < n_dp; ++d)
    for (const auto& [reason, n] : m.rep[d].finished)
      out += fmt::format("vllm:request_success_total{{{}}} {}\n", labels(d, ",finished_reason=\"" + reason + "\""), n);
  auto hist = [&](const char* name, const char* help, Histogram FrontendMetrics::PerReplica::*h) {
    header(name, "histogram", help);
    for (int d = 0; d < n_dp; ++d) {
      const Histogram& x = m.rep[d].*h;
      uint64_t cum = 0;
      for (std::size_t i = 0; i < x.bounds.size(); ++i) {
        cum += x.counts[i];
        out += fmt::format("{}_bucket{{{}}} {}\n", name, labels(d, fmt::format(",le=\"{}\"", x.bounds[i])), cum);
      }
      cum += x.counts.back();
      out += fmt::format("{}_bucket{{{}}} {}\n", name, labels(d, ",le=\"+Inf\""), cum);
      out += fmt::format("{}_sum{{{}}} {}\n", name, labels(d), x.sum);
      out += fmt::format("{}_count{{{}}} {}\n", name, labels(d), x.count);
    }
  };
  hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", &FrontendMetrics::PerReplica::ttft);
  hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", &FrontendMetrics::PerReplica::itl);
  hist("vllm:e2e_request_latency_seconds", "Histogram of end to end request latency in seconds.", &FrontendMetrics::PerReplica::e2e);
  hist("vllm:request_queue_time_seconds", "Histogram of time spent waiting before the first step of a request (approximate).",
       &FrontendMetrics::PerReplica::queue);
  header("dpa:requests_rejected_total", "counter", "Requests refused with 429 (--max-queued-requests).");
  out += fmt::format("dpa:requests_rejected_total{{model_name=\"{}\"}} {}\n", model, m.rejected_429);
  header("dpa:responses_stored", "gauge", "Responses kept for GET /v1/responses/{id} and previous_response_id.");
  out += fmt::format("dpa:responses_stored{{model_name=\"{}\"}} {}\n", model, store.size());
  header("dpa:responses_evicted_total", "counter",
         "Stored responses evicted to stay within --responses-max-stored and --responses-max-stored-bytes.");
  out += fmt::format("dpa:responses_evicted_total{{model_name=\"{}\"}} {}\n", model, store.n_evicted());
  header("dpa:engine_steps_total", "counter", "Engine steps run.");
  out += fmt::format("dpa:engine_steps_total{{model_name=\"{}\"}} {}\n", model, snap.steps);
  if (snap.n_layers > 0 && snap.n_experts > 0 &&
      snap.expert_tokens_total.size() == static_cast<std::size_t>(snap.n_layers * snap.n_experts)) {
    header("dpa:expert_tokens_total", "counter", "Tokens routed to each expert, per MoE layer, over all replicas.");
    for (int64_t l = 0; l < snap.n_layers; ++l)
      for (int64_t e = 0; e < snap.n_experts; ++e) {
        const int64_t v = snap.expert_tokens_total[static_cast<std::size_t>(l * snap.n_experts + e)];
        out += fmt::format("dpa:expert_tokens_total{{model_name=\"{}\",layer=\"{}\",expert=\"{}\"}} {}\n", model, l, e, v);
      }
  }
  return out;
}

}  // namespace dpa::serve
