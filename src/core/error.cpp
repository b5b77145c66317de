// Process identity, the abort hook and the fail-one path.
#include "core/error.h"

#include <cstdio>
#include <cstdlib>

#include <fmt/format.h>

namespace dpa {
namespace {
std::function<void(int)>& abort_handler() {
  static std::function<void(int)> handler;
  return handler;
}
}  // namespace

ProcessIdentity& process_identity() {
  static ProcessIdentity id;
  return id;
}

std::string identity_prefix() {
  const auto& id = process_identity();
  if (id.device >= 0)
    return fmt::format("[rank {}/{} host={} device={}]", id.world_rank, id.world_size, id.host,
                       id.device);
  return fmt::format("[rank {}/{} host={}]", id.world_rank, id.world_size, id.host);
}

void set_abort_handler(std::function<void(int)> handler) { abort_handler() = std::move(handler); }

void fail_one(const char* api, const char* expr, const char* file, int line,
              const std::string& detail) {
  std::fprintf(stderr, "%s %s error: %s at %s:%d: %s\n", identity_prefix().c_str(), api, expr, file,
               line, detail.c_str());
  std::fflush(stderr);
  if (abort_handler()) abort_handler()(1);
  std::abort();
}

}  // namespace dpa
