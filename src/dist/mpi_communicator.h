// Communicator over an MPI communicator, on host memory. Collectives are blocking.
#pragma once

#include <mpi.h>

#include <memory>

#include "dist/communicator.h"

namespace dpa::dist {

// Does not take ownership of `comm`.
std::unique_ptr<Communicator> make_mpi_communicator(MPI_Comm comm);

}  // namespace dpa::dist
