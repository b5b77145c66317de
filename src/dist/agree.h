// Turning a check that some ranks may fail into an error every rank throws (fail-all), so that a
// problem seen on one node (too few GPUs, a missing file) still ends the job with one message.
#pragma once

#include <mpi.h>

#include <optional>
#include <string>

namespace dpa::dist {

// Collective over `comm`. If any rank passes an error, every rank throws dpa::Error carrying the
// message of the lowest such rank, prefixed with its rank and host.
void agree_or_throw(MPI_Comm comm, const std::optional<std::string>& local_error);

}  // namespace dpa::dist
