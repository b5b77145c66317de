// The parallel groups of DESIGN section 2, derived from the world by MPI_Comm_split:
//   attn_tp: the W/dp ranks of one attention replica        color = rank / attn_tp
//   dp:      one rank per replica, same position in each     color = rank % attn_tp
//   ep:      the ranks that shard the experts                color = rank / ep
//   node:    the ranks sharing a host (from the Runtime)
#pragma once

#include <mpi.h>

#include <string>

#include "core/config.h"

namespace dpa::dist {

struct GroupLayout {
  int world_rank = 0, world_size = 1;
  int dp = 1, attn_tp = 1, ep = 1;
  int dp_rank = 0;       // which attention replica this rank belongs to
  int attn_tp_rank = 0;  // position inside the replica
  int ep_group = 0;      // which expert-parallel group
  int ep_rank = 0;       // position inside the EP group

  // Pure arithmetic from a resolved ParallelConfig; the same on every rank.
  static GroupLayout compute(int world_rank, int world_size, const ParallelConfig& cfg);
  std::string describe() const;  // "dp=1/4 attn_tp=0/2 ep=1/8 (group 0)"
};

// Owns the group communicators of one rank.
class Groups {
 public:
  Groups(MPI_Comm world, const ParallelConfig& resolved);
  ~Groups();
  Groups(const Groups&) = delete;
  Groups& operator=(const Groups&) = delete;

  const GroupLayout& layout() const { return layout_; }
  MPI_Comm world() const { return world_; }
  MPI_Comm attn_tp() const { return attn_tp_; }
  MPI_Comm dp() const { return dp_; }
  MPI_Comm ep() const { return ep_; }

 private:
  GroupLayout layout_;
  MPI_Comm world_, attn_tp_ = MPI_COMM_NULL, dp_ = MPI_COMM_NULL, ep_ = MPI_COMM_NULL;
};

}  // namespace dpa::dist
