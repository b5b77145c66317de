// Parsing and validation of the shared configuration structs.
#include "core/config.h"

#include <fmt/format.h>

#include "core/error.h"

namespace dpa {

DeviceKind parse_device(const std::string& s) {
  if (s == "cpu") return DeviceKind::cpu;
  if (s == "cuda" || s == "gpu") return DeviceKind::cuda;
  if (s == "auto") return DeviceKind::automatic;
  throw ConfigError("device", fmt::format("unknown device '{}' (cpu, cuda, auto)", s));
}

std::string device_name(DeviceKind d) {
  switch (d) {
    case DeviceKind::cpu: return "cpu";
    case DeviceKind::cuda: return "cuda";
    case DeviceKind::automatic: return "auto";
  }
  return "?";
}

void ParallelConfig::resolve(int world_size) {
  dp = dp_flag.value_or(world_size);
  ep = ep_flag.value_or(world_size);
  if (dp <= 0) throw ConfigError("dp", fmt::format("must be a positive number of replicas, got {}", dp));
  if (ep <= 0) throw ConfigError("ep", fmt::format("must be a positive group size, got {}", ep));
  if (dp > world_size || world_size % dp != 0)
    throw ConfigError("dp", fmt::format("{} does not divide the world size {} (the number of MPI ranks)",
                                        dp, world_size));
  if (ep > world_size || world_size % ep != 0)
    throw ConfigError("ep", fmt::format("{} does not divide the world size {} (the number of MPI ranks)",
                                        ep, world_size));
}

}  // namespace dpa
