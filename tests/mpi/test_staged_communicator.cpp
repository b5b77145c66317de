// The communicator tests on the staged communicator (model/staged_communicator.h: MPI on host
// copies of backend memory, for ranks that share a GPU), over the CPU backend; with
// DPA_STAGED_TEST_CUDA=1 (a CUDA build) over GPU 0 shared by every rank. Then one check of its
// own: what lies between the displaced blocks of a receive buffer is kept.
#include <cstdlib>
#include <string>

#include "backend/backend.h"
#include "core/error.h"
#include "dist/mpi_communicator.h"
#include "model/staged_communicator.h"
#include "mpi/communicator_test_body.h"
#ifdef DPA_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#endif

namespace dpa::test {
namespace {
backend::Backend& be() {
  static std::unique_ptr<backend::Backend> b = [] {
    const char* v = std::getenv("DPA_STAGED_TEST_CUDA");
    if (v && std::string(v) == "1") {
#ifdef DPA_HAVE_CUDA
      return backend::make_cuda_backend(0);
#else
      throw Error("DPA_STAGED_TEST_CUDA=1 in a build without CUDA");
#endif
    }
    return backend::make_cpu_backend();
  }();
  return *b;
}
}  // namespace

CommEnv& env() {
  static CommEnv e = [] {
    CommEnv x;
    x.comm = model::make_staged_communicator(dist::make_mpi_communicator(MPI_COMM_WORLD), be());
    x.mem.alloc = [](std::size_t n) { return be().alloc(n); };
    x.mem.release = [](void* p) { be().release(p); };
    x.mem.upload = [](void* d, const void* s, std::size_t n) { be().upload(d, s, n); };
    x.mem.download = [](void* d, const void* s, std::size_t n) { be().download(d, s, n); };
    return x;
  }();
  return e;
}
}  // namespace dpa::test

namespace {
TEST(StagedCommunicator, KeepsWhatLiesBetweenBlocks) {
  // Rank r sends 2 values to each peer p: (r, p); they land 3 apart, the gaps poisoned first.
  using dpa::test::Buffer;
  using dpa::test::env;
  auto& c = *env().comm;
  const int n = c.size(), me = c.rank();
  EXPECT_EQ(c.memory_space(), dpa::dist::MemorySpace::device);
  std::vector<std::size_t> two(n, 2), sd(n), rd(n), gv(n);
  std::vector<int32_t> send;
  for (int p = 0; p < n; ++p) sd[p] = 2 * p, rd[p] = 3 * p, send.insert(send.end(), {me, p});
  Buffer<int32_t> sb(env().mem, send.size()), rb(env().mem, 3 * n);
  sb.set(send);
  rb.set(std::vector<int32_t>(3 * n, -7));
  c.all_to_all_v(sb.data(), two.data(), sd.data(), rb.data(), two.data(), rd.data(), dpa::DType::i32);
  std::vector<int32_t> want;
  for (int p = 0; p < n; ++p) want.insert(want.end(), {p, me, -7});
  EXPECT_EQ(rb.get(), want);
  // all_gather_v into blocks 3 apart: rank p's 2 values (p, 10 p); the third of each stays.
  Buffer<int32_t> mine(env().mem, 2), all(env().mem, 3 * n);
  mine.set({me, 10 * me});
  all.set(std::vector<int32_t>(3 * n, -9));
  c.all_gather_v(mine.data(), 2, all.data(), two.data(), rd.data(), dpa::DType::i32);
  want.clear();
  for (int p = 0; p < n; ++p) want.insert(want.end(), {p, 10 * p, -9});
  EXPECT_EQ(all.get(), want);
}
}  // namespace
