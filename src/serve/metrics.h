// The serve frontend's Prometheus metrics: what rank 0's io thread counts per replica (vLLM's
// names, a dp_rank label) and the text GET /metrics answers with, the engine's gathered step
// headers and the Responses store's counts beside them.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace dpa::serve {

class ResponseStore;

struct Histogram {
  std::vector<double> bounds;
  std::vector<uint64_t> counts;  // per bucket, the last one is +Inf
  double sum = 0;
  uint64_t count = 0;
  explicit Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
  void observe(double v) {
    std::size_t i = 0;
    while (i < bounds.size() && v > bounds[i]) ++i;
    ++counts[i];
    sum += v;
    ++count;
  }
};

// vLLM's bucket bounds for its histograms of the same names.
extern const std::vector<double> kTtftBuckets, kItlBuckets, kLatencyBuckets;

// Counted on the io thread, but last_step_s (the engine thread's step observer writes it).
struct FrontendMetrics {
  struct PerReplica {
    uint64_t prompt_tokens = 0, generation_tokens = 0;
    std::map<std::string, uint64_t> finished;  // by finish reason
    Histogram ttft{kTtftBuckets}, itl{kItlBuckets}, e2e{kLatencyBuckets}, queue{kLatencyBuckets};
  };
  std::vector<PerReplica> rep;
  uint64_t rejected_429 = 0;
  std::atomic<double> last_step_s{0.0};
};

// The Prometheus text exposition of `m` (one replica per entry of m.rep), the step headers of
// `snap` (each replica's leader rank) and the store's counts, labelled with `model`.
std::string prometheus_text(const FrontendMetrics& m, const engine::LoadSnapshot& snap, const std::string& model,
                            const ResponseStore& store);

}  // namespace dpa::serve
