// The command-line surface: one table of subcommands; each adds its options to a
// Boost.Program_options description, which produces both the parser and `--help`. A `--config
// FILE` holds the same names as the flags (`dp = 2`); flags given on the command line win.
#pragma once

#include <boost/program_options.hpp>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/config.h"

namespace dpa::dist {
class Runtime;
}

namespace dpa::app {

namespace po = boost::program_options;

// Options every subcommand shares.
struct CommonOptions {
  std::string device = "auto";
  std::string log_level = "info";
  bool log_all_ranks = false;
  std::string config_file;
  ParallelConfig parallel;
};

// What a subcommand's run function gets.
struct Context {
  dist::Runtime& runtime;
  CommonOptions& common;
  const po::variables_map& vm;
  DeviceKind device = DeviceKind::cpu;  // resolved: cpu or cuda, the same on every rank
  int gpu = -1;                          // this rank's GPU ordinal when device == cuda
  int gpu_sharers = 1;                   // ranks of this node on that GPU (DPA_SHARE_GPU=1), at most
};

struct Command {
  std::string name;
  std::string summary;
  // Adds the command's own options (its state lives in the closure).
  std::function<void(po::options_description&)> add_options;
  std::function<int(Context&)> run;
};

// The subcommand table, in the order `--help` lists them.
std::vector<Command> commands();

// Adds the shared options to `desc`, writing into `common`.
void add_common_options(po::options_description& desc, CommonOptions& common);

}  // namespace dpa::app
