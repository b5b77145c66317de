// Plain configuration structs shared by every module. Each has defaults and validate();
// only src/app fills them from argv, the environment and config files.
#pragma once

#include <optional>
#include <string>

namespace dpa {

enum class DeviceKind { cpu, cuda, automatic };
DeviceKind parse_device(const std::string& s);  // throws ConfigError("device", ...)
std::string device_name(DeviceKind d);

// The parallel layout of DESIGN section 2. Unset sizes default to the world size.
struct ParallelConfig {
  std::optional<int> dp_flag;  // --dp as given
  std::optional<int> ep_flag;  // --ep as given
  int dp = 0;  // attention data-parallel replicas, after resolve()
  int ep = 0;  // expert-parallel group size, after resolve()

  // Fills defaults for `world_size` ranks and checks divisibility; throws ConfigError naming the flag.
  void resolve(int world_size);
  int attn_tp(int world_size) const { return world_size / dp; }
};

}  // namespace dpa
