// The subcommand table and the shared options.
#include "app/cli.h"

#include <fmt/format.h>

#include "app/commands.h"

namespace dpa::app {

void add_common_options(po::options_description& desc, CommonOptions& c) {
  desc.add_options()
      ("config", po::value<std::string>(&c.config_file), "read options from FILE (same names as the flags, `name = value` lines)")
      ("device", po::value<std::string>(&c.device)->default_value(c.device), "cpu | cuda | auto (cuda when every rank has a GPU)")
      ("dp", po::value<int>()->notifier([&c](int v) { c.parallel.dp_flag = v; }), "attention data-parallel replicas (default: world size)")
      ("ep", po::value<int>()->notifier([&c](int v) { c.parallel.ep_flag = v; }), "expert-parallel group size (default: world size)")
      ("log-level", po::value<std::string>(&c.log_level)->default_value(c.log_level), "trace | debug | info | warn | error")
      ("log-all-ranks", po::bool_switch(&c.log_all_ranks), "log info lines from every rank, not only rank 0");
}

std::vector<Command> commands() {
  return {
      info_command(),
      serve_command(),
      batch_command(),
      bench_command(),
      make_model_command(),
  };
}

}  // namespace dpa::app
