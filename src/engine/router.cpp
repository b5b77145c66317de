// Router policies.
#include "engine/router.h"

#include <algorithm>
#include <chrono>
#include <queue>
#include <tuple>

#include "core/error.h"

namespace dpa::engine {
namespace {

// Fewest requests (running + waiting); ties by fewer pending tokens, then lowest index.
bool less_loaded(const ReplicaLoad& a, const ReplicaLoad& b) {
  return a.n_reqs < b.n_reqs || (a.n_reqs == b.n_reqs && a.n_tokens < b.n_tokens);
}

int shortest(const std::vector<ReplicaLoad>& loads) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(loads.size()); ++i)
    if (less_loaded(loads[i], loads[best])) best = i;
  return best;
}

class RoundRobin final : public Router {
 public:
  std::string name() const override { return "round_robin"; }
  int route(const Request&, const std::vector<ReplicaLoad>& loads) override {
    return static_cast<int>(next_++ % loads.size());
  }

 private:
  uint64_t next_ = 0;
};

class ShortestQueue final : public Router {
 public:
  std::string name() const override { return "shortest_queue"; }
  int route(const Request&, const std::vector<ReplicaLoad>& loads) override { return shortest(loads); }
};

class Random final : public Router {
 public:
  explicit Random(uint64_t seed) : rng_(seed) {}
  std::string name() const override { return "random"; }
  int route(const Request&, const std::vector<ReplicaLoad>& loads) override {
    return static_cast<int>(std::uniform_int_distribution<std::size_t>(0, loads.size() - 1)(rng_));
  }

 private:
  std::mt19937_64 rng_;
};

// Two distinct replicas drawn at random; the less loaded one wins (the first drawn on a tie).
class PowerOfTwo final : public Router {
 public:
  explicit PowerOfTwo(uint64_t seed) : rng_(seed) {}
  std::string name() const override { return "power_of_two"; }
  int route(const Request&, const std::vector<ReplicaLoad>& loads) override {
    const std::size_t n = loads.size();
    if (n == 1) return 0;
    const std::size_t a = std::uniform_int_distribution<std::size_t>(0, n - 1)(rng_);
    std::size_t b = std::uniform_int_distribution<std::size_t>(0, n - 2)(rng_);
    if (b >= a) ++b;
    return static_cast<int>(less_loaded(loads[b], loads[a]) ? b : a);
  }

 private:
  std::mt19937_64 rng_;
};

}  // namespace

// One node per token of a prefix; `tenants` holds the replicas whose tree contains the prefix
// ending here, with the time they last used it. A replica on a node is on all its ancestors.
struct CacheAwareRouter::Node {
  Node* parent = nullptr;
  int32_t token = 0;
  std::map<int32_t, std::unique_ptr<Node>> children;
  std::unordered_map<int, std::pair<double, uint64_t>> tenants;
  bool child_has(int r) const {
    for (const auto& [t, c] : children)
      if (c->tenants.count(r)) return true;
    return false;
  }
};

CacheAwareRouter::CacheAwareRouter(const RouterConfig& cfg, std::function<double()> clock)
    : cfg_(cfg), clock_(std::move(clock)), root_(std::make_unique<Node>()) {
  last_eviction_ = now();
}

CacheAwareRouter::~CacheAwareRouter() {
  // Iterative teardown: a long prompt makes a deep chain.
  std::vector<std::unique_ptr<Node>> stack;
  stack.push_back(std::move(root_));
  while (!stack.empty()) {
    auto n = std::move(stack.back());
    stack.pop_back();
    for (auto& [t, c] : n->children) stack.push_back(std::move(c));
  }
}

double CacheAwareRouter::now() const {
  if (clock_) return clock_();
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

void CacheAwareRouter::reset() {
  CacheAwareRouter fresh(cfg_, clock_);
  std::swap(root_, fresh.root_);
  sizes_.clear();
}

int64_t CacheAwareRouter::tree_size(int replica) const {
  auto it = sizes_.find(replica);
  return it == sizes_.end() ? 0 : it->second;
}

int64_t CacheAwareRouter::match_len(const std::vector<int32_t>& tokens, int replica) const {
  const Node* n = root_.get();
  int64_t len = 0;
  for (int32_t t : tokens) {
    auto it = n->children.find(t);
    if (it == n->children.end() || !it->second->tenants.count(replica)) break;
    n = it->second.get();
    ++len;
  }
  return len;
}

void CacheAwareRouter::insert(const std::vector<int32_t>& tokens, int replica) {
  const double t = now();
  Node* n = root_.get();
  for (int32_t tok : tokens) {
    auto& child = n->children[tok];
    if (!child) {
      child = std::make_unique<Node>();
      child->parent = n;
      child->token = tok;
    }
    n = child.get();
    auto [it, added] = n->tenants.try_emplace(replica);
    if (added) ++sizes_[replica];
    it->second = {t, ++tick_};
  }
}

void CacheAwareRouter::evict(int64_t max_size) {
  for (auto& [r, size] : sizes_) {
    if (size <= max_size) continue;
    const int rep = r;
    using Entry = std::tuple<double, uint64_t, Node*>;
    std::priority_queue<Entry, std::vector<Entry>, std::greater<Entry>> leaves;
    std::vector<Node*> stack{root_.get()};
    while (!stack.empty()) {  // this replica's leaves: nodes it is on whose children it is not on
      Node* n = stack.back();
      stack.pop_back();
      for (auto& [t, c] : n->children) stack.push_back(c.get());
      auto it = n->tenants.find(rep);
      if (n != root_.get() && it != n->tenants.end() && !n->child_has(rep))
        leaves.emplace(it->second.first, it->second.second, n);
    }
    while (size > max_size && !leaves.empty()) {
      Node* n = std::get<2>(leaves.top());
      leaves.pop();
      n->tenants.erase(rep);
      --size;
      Node* parent = n->parent;
      if (n->tenants.empty() && n->children.empty()) parent->children.erase(n->token);  // frees n
      if (parent != root_.get()) {
        auto it = parent->tenants.find(rep);
        if (it != parent->tenants.end() && !parent->child_has(rep))
          leaves.emplace(it->second.first, it->second.second, parent);
      }
    }
  }
}

int CacheAwareRouter::route(const Request& r, const std::vector<ReplicaLoad>& loads) {
  const int n = static_cast<int>(loads.size());
  int64_t lo = loads[0].n_reqs, hi = loads[0].n_reqs;
  for (const auto& l : loads) lo = std::min(lo, l.n_reqs), hi = std::max(hi, l.n_reqs);
  const bool imbalanced = hi - lo > cfg_.balance_abs_threshold &&
                          static_cast<double>(hi) > cfg_.balance_rel_threshold * static_cast<double>(lo);
  int choice = 0;
  if (imbalanced) {
    choice = shortest(loads);
  } else {
    int64_t best = -1;
    for (int i = 0; i < n; ++i) {
      const int64_t m = match_len(r.prompt, i);
      if (m > best) best = m, choice = i;
    }
    const double ratio = r.prompt.empty() ? 0.0 : static_cast<double>(best) / static_cast<double>(r.prompt.size());
    if (!(ratio > cfg_.cache_threshold)) {
      choice = 0;
      for (int i = 1; i < n; ++i)
        if (tree_size(i) < tree_size(choice)) choice = i;
    }
  }
  insert(r.prompt, choice);
  const double t = now();
  if (cfg_.eviction_interval_secs > 0 && t - last_eviction_ >= cfg_.eviction_interval_secs) {
    last_eviction_ = t;
    evict(cfg_.max_tree_size);
  }
  return choice;
}

std::unique_ptr<Router> make_router(const RouterConfig& cfg) {
  if (cfg.policy == "round_robin") return std::make_unique<RoundRobin>();
  if (cfg.policy == "shortest_queue") return std::make_unique<ShortestQueue>();
  if (cfg.policy == "random") return std::make_unique<Random>(cfg.seed);
  if (cfg.policy == "power_of_two") return std::make_unique<PowerOfTwo>(cfg.seed);
  if (cfg.policy == "cache_aware") {
    if (!(cfg.cache_threshold >= 0 && cfg.cache_threshold <= 1))
      throw ConfigError("cache-threshold", "must be in [0, 1]");
    if (cfg.balance_abs_threshold < 0) throw ConfigError("balance-abs-threshold", "must be >= 0");
    if (cfg.max_tree_size < 0) throw ConfigError("max-tree-size", "must be >= 0");
    return std::make_unique<CacheAwareRouter>(cfg);
  }
  throw ConfigError("router-policy", "unknown policy '" + cfg.policy +
                                         "' (round_robin, random, shortest_queue, power_of_two, cache_aware)");
}

std::unique_ptr<Router> make_router(const std::string& policy, uint64_t seed) {
  RouterConfig c;
  c.policy = policy;
  c.seed = seed;
  return make_router(c);
}

}  // namespace dpa::engine
