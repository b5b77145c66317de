// Communicator over NCCL, on device memory, built from an MPI communicator of the same ranks
// (rank 0 makes the unique id and broadcasts it over MPI). Collectives are enqueued on the
// communicator's stream and return at once; synchronize() waits for them.
#pragma once

#include <mpi.h>

#include <memory>

#include "dist/communicator.h"

namespace dpa::dist {

// `stream` is a cudaStream_t (nullptr: a new non-blocking stream owned by the communicator).
// The calling rank's device must already be set.
std::unique_ptr<Communicator> make_nccl_communicator(MPI_Comm comm, void* stream = nullptr);

// The cudaStream_t collectives of `c` run on, or nullptr for a host communicator.
void* communicator_stream(Communicator& c);

}  // namespace dpa::dist
