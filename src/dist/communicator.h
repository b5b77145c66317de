// The collective interface every parallel part of the forward and the step protocol uses.
// Two implementations: MPI on host memory (CPU backend, control traffic) and NCCL on device
// memory (CUDA backend). Counts are in elements of `type`; pointers live in memory_space().
// Every rank of the group must call the same collectives in the same order with consistent
// counts (DESIGN section 3); a zero count is allowed everywhere and still takes part.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "core/dtype.h"

namespace dpa::dist {

enum class ReduceOp { sum, max, min };
enum class MemorySpace { host, device };

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;                 // this rank's index in the group
  virtual int size() const = 0;                 // ranks in the group
  virtual MemorySpace memory_space() const = 0;  // where buffers must live
  virtual std::string name() const = 0;          // "mpi" or "nccl", for logs and benchmarks

  // recv[i] = op over ranks of send[i], i < count. send may equal recv (in place).
  virtual void all_reduce(const void* send, void* recv, std::size_t count, DType type,
                          ReduceOp op) = 0;
  // recv = concat over ranks of send[0..count); recv holds size()*count.
  virtual void all_gather(const void* send, void* recv, std::size_t count, DType type) = 0;
  // recv[displs[r] .. + counts[r]) = rank r's send[0..counts[r]); send_count == counts[rank()].
  virtual void all_gather_v(const void* send, std::size_t send_count, void* recv,
                            const std::size_t* counts, const std::size_t* displs, DType type) = 0;
  // recv[0..count) = op over ranks of send[rank()*count .. +count); send holds size()*count.
  virtual void reduce_scatter(const void* send, void* recv, std::size_t count, DType type,
                              ReduceOp op) = 0;
  // Personalized exchange: rank r's send[send_displs[p] .. + send_counts[p]) lands in peer p's
  // recv[recv_displs[r] .. + recv_counts[r]). Counts must agree pairwise; zero counts allowed.
  virtual void all_to_all_v(const void* send, const std::size_t* send_counts,
                            const std::size_t* send_displs, void* recv,
                            const std::size_t* recv_counts, const std::size_t* recv_displs,
                            DType type) = 0;
  // buf[0..count) on every rank = root's buf.
  virtual void broadcast(void* buf, std::size_t count, DType type, int root) = 0;
  // Returns when every rank of the group has called it (and, for NCCL, its stream work is done).
  virtual void barrier() = 0;
  // Waits for this rank's outstanding collective work (a no-op for MPI, a stream sync for NCCL).
  virtual void synchronize() = 0;
  // The calls between group_start() and group_end() may be issued as one operation (NCCL: one
  // launch for all of their transfers); none of them may read what another one writes. Groups
  // nest. MPI runs each call at once.
  virtual void group_start() {}
  virtual void group_end() {}
};

}  // namespace dpa::dist
