// The communicator tests on the MPI implementation (host memory).
#include <cstdlib>
#include <cstring>

#include "dist/mpi_communicator.h"
#include "mpi/communicator_test_body.h"

namespace dpa::test {
CommEnv& env() {
  static CommEnv e = [] {
    CommEnv x;
    x.comm = dist::make_mpi_communicator(MPI_COMM_WORLD);
    x.mem.alloc = [](std::size_t n) { return std::malloc(n); };
    x.mem.release = [](void* p) { std::free(p); };
    x.mem.upload = [](void* d, const void* s, std::size_t n) { std::memcpy(d, s, n); };
    x.mem.download = [](void* d, const void* s, std::size_t n) { std::memcpy(d, s, n); };
    return x;
  }();
  return e;
}
}  // namespace dpa::test
