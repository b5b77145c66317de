// Router policies.
#include "engine/router.h"

#include "core/error.h"

namespace dpa::engine {
namespace {

class RoundRobin final : public Router {
 public:
  std::string name() const override { return "round_robin"; }
  int route(const Request&, const std::vector<ReplicaLoad>& loads) override {
    return static_cast<int>(next_++ % loads.size());
  }

 private:
  uint64_t next_ = 0;
};

// Fewest requests (running + waiting); ties by fewer pending tokens, then lowest index.
class ShortestQueue final : public Router {
 public:
  std::string name() const override { return "shortest_queue"; }
  int route(const Request&, const std::vector<ReplicaLoad>& loads) override {
    int best = 0;
    for (int i = 1; i < static_cast<int>(loads.size()); ++i) {
      const auto &a = loads[i], &b = loads[best];
      if (a.n_reqs < b.n_reqs || (a.n_reqs == b.n_reqs && a.n_tokens < b.n_tokens)) best = i;
    }
    return best;
  }
};

}  // namespace

std::unique_ptr<Router> make_router(const std::string& policy, uint64_t) {
  if (policy == "round_robin") return std::make_unique<RoundRobin>();
  if (policy == "shortest_queue") return std::make_unique<ShortestQueue>();
  throw ConfigError("router-policy", "unknown policy '" + policy + "' (round_robin, shortest_queue)");
}

}  // namespace dpa::engine
