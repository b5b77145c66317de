// agree_or_throw: lowest failing rank's message broadcast to all.
#include "dist/agree.h"

#include <vector>

#include <fmt/format.h>

#include "core/error.h"
#include "dist/runtime.h"

namespace dpa::dist {

void agree_or_throw(MPI_Comm comm, const std::optional<std::string>& local_error) {
  int rank = 0, size = 1;
  DPA_CHECK_MPI(MPI_Comm_rank(comm, &rank));
  DPA_CHECK_MPI(MPI_Comm_size(comm, &size));
  int mine = local_error ? rank : size, first = size;
  DPA_CHECK_MPI(MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, comm));
  if (first == size) return;
  std::string msg;
  if (rank == first) msg = fmt::format("rank {} on {}: {}", rank, process_identity().host, *local_error);
  unsigned long long len = msg.size();
  DPA_CHECK_MPI(MPI_Bcast(&len, 1, MPI_UNSIGNED_LONG_LONG, first, comm));
  msg.resize(len);
  DPA_CHECK_MPI(MPI_Bcast(msg.data(), static_cast<int>(len), MPI_CHAR, first, comm));
  throw Error(msg);
}

}  // namespace dpa::dist
