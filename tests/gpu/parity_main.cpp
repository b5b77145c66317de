// main() of test_backend_parity: exits 77 (skipped) without a CUDA device, else runs every
// parity file against the CPU reference and a CUDA backend on device 0.
#include "parity_util.h"

int main(int argc, char** argv) {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("backend_parity: no CUDA device, skipped\n");
    return 77;
  }
  ::testing::InitGoogleTest(&argc, argv);
  auto& e = dpa::backend::env();
  e.cpu = dpa::backend::make_cpu_backend();
  e.gpu = dpa::backend::make_cuda_backend(0);
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("backend_parity: cpu vs %s on %s\n", e.gpu->name().c_str(), prop.name);
  std::printf("%-14s %-46s %-40s %s\n", "op", "shape", "max error", "result");
  const int rc = RUN_ALL_TESTS();
  std::printf("backend_parity: %d table line(s) failed\n", dpa::backend::g_failures);
  e.gpu.reset();
  e.cpu.reset();
  return rc;
}
