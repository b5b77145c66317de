// Logger set-up: one stderr sink, rank in the pattern, level per rank.
#include "core/log.h"

#include <spdlog/sinks/stdout_color_sinks.h>

#include "core/error.h"

namespace dpa::log {

void init(int world_rank, const std::string& level, bool all_ranks) {
  auto logger = spdlog::stderr_color_mt("dpa");
  logger->set_pattern(fmt::format("[%H:%M:%S.%e] [rank {}] [%^%l%$] %v", world_rank));
  auto lvl = spdlog::level::from_str(level);
  if (lvl == spdlog::level::off && level != "off")
    throw ConfigError("log-level", "unknown level '" + level + "' (trace, debug, info, warn, error)");
  if (world_rank != 0 && !all_ranks && lvl < spdlog::level::warn) lvl = spdlog::level::warn;
  logger->set_level(lvl);
  spdlog::set_default_logger(logger);
}

}  // namespace dpa::log
