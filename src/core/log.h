// Rank-prefixed logging on top of spdlog. Every line starts with "[rank R]"; by default only
// rank 0 logs at info level and every rank logs warnings and errors.
#pragma once

#include <spdlog/spdlog.h>

namespace dpa::log {

// Call once the rank is known. `all_ranks` makes every rank log at `level`.
void init(int world_rank, const std::string& level = "info", bool all_ranks = false);

using spdlog::debug;
using spdlog::error;
using spdlog::info;
using spdlog::warn;

}  // namespace dpa::log
