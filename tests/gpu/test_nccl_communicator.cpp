// The communicator tests on the NCCL implementation (device memory), one GPU per rank.
// Exits 77 (CTest "skipped") on every rank when this node has fewer GPUs than ranks.
#include <cuda_runtime.h>
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdio>

#include "core/cuda_check.h"
#include "dist/nccl_communicator.h"
#include "mpi/communicator_test_body.h"

namespace dpa::test {
CommEnv& env() {
  static CommEnv e = [] {
    CommEnv x;
    x.comm = dist::make_nccl_communicator(MPI_COMM_WORLD);
    x.mem.alloc = [](std::size_t n) { void* p = nullptr; DPA_CHECK_CUDA(cudaMalloc(&p, n)); return p; };
    x.mem.release = [](void* p) { DPA_CHECK_CUDA(cudaFree(p)); };
    x.mem.upload = [](void* d, const void* s, std::size_t n) { DPA_CHECK_CUDA(cudaMemcpy(d, s, n, cudaMemcpyHostToDevice)); };
    x.mem.download = [](void* d, const void* s, std::size_t n) { DPA_CHECK_CUDA(cudaMemcpy(d, s, n, cudaMemcpyDeviceToHost)); };
    return x;
  }();
  return e;
}
}  // namespace dpa::test

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm node;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
  int local_rank = 0, local_size = 1, n_gpus = 0;
  MPI_Comm_rank(node, &local_rank);
  MPI_Comm_size(node, &local_size);
  if (cudaGetDeviceCount(&n_gpus) != cudaSuccess) n_gpus = 0;
  int enough = n_gpus >= local_size ? 1 : 0, all = 0;
  MPI_Allreduce(&enough, &all, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
  if (!all) {
    if (rank == 0) std::printf("SKIPPED: needs one GPU per rank (%d ranks on this node, %d GPUs)\n", local_size, n_gpus);
    MPI_Comm_free(&node);
    MPI_Finalize();
    return 77;
  }
  DPA_CHECK_CUDA(cudaSetDevice(local_rank));
  ::testing::InitGoogleTest(&argc, argv);
  if (rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0, any = 0;
  MPI_Allreduce(&failed, &any, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  dpa::test::env().comm.reset();
  MPI_Comm_free(&node);
  MPI_Finalize();
  return any;
}
