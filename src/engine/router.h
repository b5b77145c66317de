// Picks the DP replica of each new request on rank 0 (SGLang router vocabulary). The engine
// issue brings round_robin and shortest_queue; the serving issue adds the rest.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
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

class Router {
 public:
  virtual ~Router() = default;
  virtual std::string name() const = 0;
  // The replica for `r` given `loads` (one entry per replica).
  virtual int route(const Request& r, const std::vector<ReplicaLoad>& loads) = 0;
};

// Throws ConfigError("router-policy") for an unknown name.
std::unique_ptr<Router> make_router(const std::string& policy, uint64_t seed = 0);

}  // namespace dpa::engine
