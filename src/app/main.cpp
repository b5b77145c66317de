// dpa_serve entry point: picks the subcommand, parses its options (flags, then --config), starts
// MPI, checks the launch and layout, picks the device, and runs the command. The only place
// that reads argv and the environment.
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <fmt/format.h>

#include "app/cli.h"
#include "backend/cuda/device.h"
#include "core/error.h"
#include "core/log.h"
#include "dist/agree.h"
#include "dist/runtime.h"
#include "dpa_build_info.h"

namespace {

using namespace dpa;
using namespace dpa::app;

int env_int(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::atoi(v) : 0;
}

void print_usage(std::ostream& os, const std::vector<Command>& cmds) {
  os << "dpa_serve " DPA_VERSION " (" DPA_BUILD_COMMIT ")\n"
     << "Serves DeepSeek-style MoE models with data-parallel attention and expert parallelism.\n\n"
     << "usage: [mpirun -np N | srun --mpi=pmix] dpa_serve <command> [options]\n\ncommands:\n";
  for (const auto& c : cmds) os << fmt::format("  {:<12}{}\n", c.name, c.summary);
  os << "\n`dpa_serve <command> --help` lists a command's options.\n";
}

// Chooses cpu or cuda identically on every rank and binds one GPU per node-local rank.
void pick_device(Context& ctx) {
  auto& rt = ctx.runtime;
  const DeviceKind asked = parse_device(ctx.common.device);
  const int n_gpus = asked == DeviceKind::cpu ? 0 : cuda::device_count();
  std::optional<std::string> err;
  // DPA_SHARE_GPU=1: ranks may share GPUs (node-local rank modulo the GPUs), over staged MPI
  // communicators: the multi-rank GPU code checked on fewer GPUs than ranks; slow.
  bool share = false;
  if (const char* v = std::getenv("DPA_SHARE_GPU")) {
    if (std::string(v) != "0" && std::string(v) != "1") err = fmt::format("DPA_SHARE_GPU='{}': 0 or 1", v);
    share = std::string(v) == "1";
  }
  if (asked == DeviceKind::cuda && !cuda::compiled_in())
    err = "--device cuda: this dpa_serve was built without CUDA";
  else if (asked == DeviceKind::cuda && n_gpus == 0)
    err = "--device cuda: no CUDA device is visible";
  else if (asked == DeviceKind::cuda && rt.local_size() > n_gpus && !share)
    err = fmt::format("--device cuda: {} ranks on this node but only {} GPUs; start one rank per GPU",
                      rt.local_size(), n_gpus);
  dist::agree_or_throw(rt.world(), err);
  if (asked == DeviceKind::automatic) {
    // CUDA only when every rank has a GPU of its own.
    int ok = (n_gpus > 0 && rt.local_size() <= n_gpus) ? 1 : 0, all = 0;
    DPA_CHECK_MPI(MPI_Allreduce(&ok, &all, 1, MPI_INT, MPI_MIN, rt.world()));
    ctx.device = all ? DeviceKind::cuda : DeviceKind::cpu;
  } else {
    ctx.device = asked;
  }
  if (ctx.device == DeviceKind::cuda) {
    ctx.gpu = rt.local_rank() % n_gpus;
    ctx.gpu_sharers = share ? (rt.local_size() + n_gpus - 1) / n_gpus : 1;
    cuda::set_device(ctx.gpu);
    process_identity().device = ctx.gpu;
  }
}

int run(int argc, char** argv, const std::vector<Command>& cmds, dist::Runtime& rt) {
  const bool root = rt.rank() == 0;
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    if (root) print_usage(std::cout, cmds);
    return argc < 2 ? 2 : 0;
  }
  if (std::string(argv[1]) == "--version") {
    if (root) std::cout << "dpa_serve " DPA_VERSION " (" DPA_BUILD_COMMIT ")\n";
    return 0;
  }
  const std::string name = argv[1];
  const Command* cmd = nullptr;
  for (const auto& c : cmds)
    if (c.name == name) cmd = &c;
  if (!cmd) throw Error(fmt::format("unknown command '{}'; `dpa_serve --help` lists them", name));

  CommonOptions common;
  po::options_description desc(fmt::format("dpa_serve {} options", name));
  desc.add_options()("help,h", "show this help");
  add_common_options(desc, common);
  cmd->add_options(desc);
  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc - 1, argv + 1).options(desc).run(), vm);
    if (vm.count("config")) {
      const std::string file = vm["config"].as<std::string>();
      std::FILE* f = std::fopen(file.c_str(), "r");
      if (!f) throw ConfigError("config", fmt::format("cannot open '{}'", file));
      std::fclose(f);
      po::store(po::parse_config_file(file.c_str(), desc), vm);  // flags stored first win
    }
    if (vm.count("help")) {
      if (root) std::cout << cmd->summary << "\n\n" << desc << "\n";
      return 0;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw Error(fmt::format("{} (see `dpa_serve {} --help`)", e.what(), name));
  }

  log::init(rt.rank(), common.log_level, common.log_all_ranks);
  dist::check_launch(rt.size(), std::max(env_int("SLURM_STEP_NUM_TASKS"), env_int("PMI_SIZE")));
  common.parallel.resolve(rt.size());
  Context ctx{rt, common, vm};
  pick_device(ctx);
  if (root)
    log::info("dpa_serve {} commit {} command {} world {} device {}", DPA_VERSION, DPA_BUILD_COMMIT,
              name, rt.size(), device_name(ctx.device));
  return cmd->run(ctx);
}

}  // namespace

int main(int argc, char** argv) {
  const auto cmds = commands();
  int code = 0;
  try {
    dist::Runtime rt(&argc, &argv);
    try {
      code = run(argc, argv, cmds, rt);
    } catch (const Error& e) {
      // Every rank reaches the same error; rank 0 alone reports it, all exit cleanly.
      if (rt.rank() == 0) std::fprintf(stderr, "dpa_serve: error: %s\n", e.what());
      code = 2;
    }
  } catch (const Error& e) {
    std::fprintf(stderr, "dpa_serve: error: %s\n", e.what());
    code = 2;
  }
  return code;
}
