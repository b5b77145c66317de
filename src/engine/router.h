// Picks the DP replica of each new request on rank 0 (SGLang router vocabulary): round_robin,
// random, shortest_queue, power_of_two, cache_aware.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "engine/request.h"

namespace dpa::engine {

// What rank 0 knows of one replica: from the last gathered step headers plus what it routed since.
struct ReplicaLoad {
  int64_t n_reqs = 0;        // running + waiting
  int64_t n_waiting = 0;
  int64_t n_tokens = 0;      // tokens still to compute
  int64_t free_blocks = 0;
};

// The policy and SGLang's cache_aware parameters (same names and defaults as sglang_router).
struct RouterConfig {
  std::string policy = "round_robin";
  double cache_threshold = 0.5;           // min prefix-match ratio to follow the cache
  int64_t balance_abs_threshold = 32;     // imbalanced when max - min > this ...
  double balance_rel_threshold = 1.0001;  // ... and max > this * min
  double eviction_interval_secs = 60.0;   // how often oversized trees are trimmed
  int64_t max_tree_size = int64_t{1} << 24;  // tokens per replica's tree before LRU eviction
  uint64_t seed = 0;                      // random / power_of_two
};

class Router {
 public:
  virtual ~Router() = default;
  virtual std::string name() const = 0;
  // The replica for `r` given `loads` (one entry per replica).
  virtual int route(const Request& r, const std::vector<ReplicaLoad>& loads) = 0;
  // Forgets cached-prefix knowledge (cache_aware); others: nothing.
  virtual void reset() {}
};

// cache_aware (SGLang): one approximate prefix tree over token ids, each node tagged with the
// replicas that saw that prefix and when. If loads are imbalanced (max - min > abs threshold and
// max > rel threshold * min, on n_reqs) the shortest queue wins; otherwise the replica with the
// longest prefix match when match / prompt length > cache_threshold, else the replica with the
// smallest tree. The chosen replica's tree then holds the prompt. Every eviction_interval_secs,
// a replica whose tree exceeds max_tree_size tokens loses least recently used leaves.
class CacheAwareRouter final : public Router {
 public:
  explicit CacheAwareRouter(const RouterConfig& cfg, std::function<double()> clock = nullptr);
  ~CacheAwareRouter() override;
  std::string name() const override { return "cache_aware"; }
  int route(const Request& r, const std::vector<ReplicaLoad>& loads) override;
  void reset() override;

  // For tests and metrics.
  int64_t tree_size(int replica) const;
  int64_t match_len(const std::vector<int32_t>& tokens, int replica) const;
  void insert(const std::vector<int32_t>& tokens, int replica);
  void evict(int64_t max_size);  // trims every replica's tree to max_size tokens (LRU leaves)

 private:
  struct Node;
  double now() const;
  RouterConfig cfg_;
  std::function<double()> clock_;
  std::unique_ptr<Node> root_;
  std::unordered_map<int, int64_t> sizes_;
  double last_eviction_ = 0;
  uint64_t tick_ = 0;  // tie-breaker for equal timestamps
};

// Throws ConfigError("router-policy") for an unknown name.
std::unique_ptr<Router> make_router(const RouterConfig& cfg);
std::unique_ptr<Router> make_router(const std::string& policy, uint64_t seed = 0);

}  // namespace dpa::engine
