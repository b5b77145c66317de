// A communicator on backend memory built from one on host memory (MPI): each call waits for the
// backend's queued work, copies its buffers to the host, runs the host collective, and copies the
// result back. For ranks that share a GPU (DPA_SHARE_GPU=1: checks of the multi-rank GPU code on
// one GPU), where NCCL refuses two ranks on one device. A host round trip a call, blocking, and
// not recordable in a CUDA graph: fit for correctness checks, not for timings.
#pragma once

#include <memory>

#include "backend/backend.h"
#include "dist/communicator.h"

namespace dpa::model {

// `host` must work on host memory; `be` outlives the result.
std::unique_ptr<dist::Communicator> make_staged_communicator(std::unique_ptr<dist::Communicator> host,
                                                             backend::Backend& be);

}  // namespace dpa::model
