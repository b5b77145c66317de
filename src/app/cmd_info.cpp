// `dpa_serve info`: one line per rank (host, local rank, device, groups), gathered on rank 0,
// after checking that every group communicator moves data (an all-to-all inside each group).
#include <cstdio>
#include <memory>
#include <numeric>
#include <vector>

#include <fmt/format.h>

#include "app/commands.h"
#include "backend/cuda/device.h"
#include "core/error.h"
#include "dist/groups.h"
#include "dist/mpi_communicator.h"
#include "dist/runtime.h"

namespace dpa::app {
namespace {

// Each rank sends its world rank to every peer of `c`; checks each peer sent its own.
int check_group(dist::Communicator& c, MPI_Comm comm) {
  const int n = c.size();
  std::vector<int> ranks(n);
  int me = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &me);
  DPA_CHECK_MPI(MPI_Allgather(&me, 1, MPI_INT, ranks.data(), 1, MPI_INT, comm));
  std::vector<int32_t> send(n, me), recv(n, -1);
  std::vector<std::size_t> counts(n, 1), displs(n);
  std::iota(displs.begin(), displs.end(), 0);
  c.all_to_all_v(send.data(), counts.data(), displs.data(), recv.data(), counts.data(), displs.data(),
                 DType::i32);
  int wrong = 0;
  for (int p = 0; p < n; ++p) wrong += recv[p] != ranks[p];
  return wrong;
}

int run_info(Context& ctx) {
  auto& rt = ctx.runtime;
  dist::Groups groups(rt.world(), ctx.common.parallel);
  const auto& g = groups.layout();
  int wrong = 0;
  for (MPI_Comm comm : {groups.attn_tp(), groups.dp(), groups.ep()}) {
    auto c = dist::make_mpi_communicator(comm);
    wrong += check_group(*c, comm);
  }
  const std::string dev = ctx.device == DeviceKind::cuda
                              ? fmt::format("cuda:{} {}", ctx.gpu, cuda::device_description(ctx.gpu))
                              : std::string("cpu");
  std::string line = fmt::format("rank {}/{} host={} local_rank={}/{} device={} {}", rt.rank(), rt.size(),
                                 rt.host(), rt.local_rank(), rt.local_size(), dev, g.describe());
  // Gather the lines on rank 0 in rank order.
  int len = static_cast<int>(line.size());
  std::vector<int> lens(rt.size()), displs(rt.size());
  DPA_CHECK_MPI(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, rt.world()));
  std::string all;
  if (rt.rank() == 0) {
    std::exclusive_scan(lens.begin(), lens.end(), displs.begin(), 0);
    all.resize(displs.back() + lens.back());
  }
  DPA_CHECK_MPI(MPI_Gatherv(line.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR, 0,
                            rt.world()));
  int total_wrong = 0;
  DPA_CHECK_MPI(MPI_Reduce(&wrong, &total_wrong, 1, MPI_INT, MPI_SUM, 0, rt.world()));
  if (rt.rank() == 0) {
    std::printf("layout: world=%d dp=%d attn_tp=%d ep=%d\n", rt.size(), g.dp, g.attn_tp, g.ep);
    for (int r = 0; r < rt.size(); ++r) std::printf("%s\n", all.substr(displs[r], lens[r]).c_str());
    std::printf("groups: %s (all-to-all inside every attn_tp, dp and ep group, %d wrong elements)\n",
                total_wrong == 0 ? "ok" : "BROKEN", total_wrong);
    std::fflush(stdout);
  }
  int bad = total_wrong;
  DPA_CHECK_MPI(MPI_Bcast(&bad, 1, MPI_INT, 0, rt.world()));
  return bad ? 1 : 0;
}

}  // namespace

Command info_command() {
  return {"info", "print every rank's host, device and parallel groups, and check the groups move data",
          [](po::options_description&) {}, run_info};
}

}  // namespace dpa::app
