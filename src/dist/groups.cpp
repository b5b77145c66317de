// Group arithmetic and communicator splits.
#include "dist/groups.h"

#include <fmt/format.h>

#include "core/error.h"
#include "dist/runtime.h"

namespace dpa::dist {

GroupLayout GroupLayout::compute(int world_rank, int world_size, const ParallelConfig& cfg) {
  GroupLayout g;
  g.world_rank = world_rank;
  g.world_size = world_size;
  g.dp = cfg.dp;
  g.attn_tp = world_size / cfg.dp;
  g.ep = cfg.ep;
  g.dp_rank = world_rank / g.attn_tp;
  g.attn_tp_rank = world_rank % g.attn_tp;
  g.ep_group = world_rank / g.ep;
  g.ep_rank = world_rank % g.ep;
  return g;
}

std::string GroupLayout::describe() const {
  return fmt::format("dp_rank={}/{} attn_tp_rank={}/{} ep_rank={}/{} ep_group={}", dp_rank, dp,
                     attn_tp_rank, attn_tp, ep_rank, ep, ep_group);
}

Groups::Groups(MPI_Comm world, const ParallelConfig& resolved) : world_(world) {
  int rank = 0, size = 1;
  DPA_CHECK_MPI(MPI_Comm_rank(world, &rank));
  DPA_CHECK_MPI(MPI_Comm_size(world, &size));
  layout_ = GroupLayout::compute(rank, size, resolved);
  DPA_CHECK_MPI(MPI_Comm_split(world, layout_.dp_rank, rank, &attn_tp_));
  DPA_CHECK_MPI(MPI_Comm_split(world, layout_.attn_tp_rank, rank, &dp_));
  DPA_CHECK_MPI(MPI_Comm_split(world, layout_.ep_group, rank, &ep_));
  for (MPI_Comm c : {attn_tp_, dp_, ep_}) MPI_Comm_set_errhandler(c, MPI_ERRORS_RETURN);
  int n = 0;
  DPA_CHECK_MPI(MPI_Comm_size(attn_tp_, &n));
  DPA_ASSERT(n == layout_.attn_tp, "attn_tp communicator size mismatch");
  DPA_CHECK_MPI(MPI_Comm_size(dp_, &n));
  DPA_ASSERT(n == layout_.dp, "dp communicator size mismatch");
  DPA_CHECK_MPI(MPI_Comm_size(ep_, &n));
  DPA_ASSERT(n == layout_.ep, "ep communicator size mismatch");
}

Groups::~Groups() {
  for (MPI_Comm* c : {&attn_tp_, &dp_, &ep_})
    if (*c != MPI_COMM_NULL) MPI_Comm_free(c);
}

}  // namespace dpa::dist
