// GPU discovery through the CUDA runtime.
#include "backend/cuda/device.h"

#include <fmt/format.h>

#include "core/cuda_check.h"

namespace dpa::cuda {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

void set_device(int ordinal) { DPA_CHECK_CUDA(cudaSetDevice(ordinal)); }

std::string device_description(int ordinal) {
  cudaDeviceProp p{};
  DPA_CHECK_CUDA(cudaGetDeviceProperties(&p, ordinal));
  return fmt::format("{} ({} SMs, {} GiB)", p.name, p.multiProcessorCount, p.totalGlobalMem >> 30);
}

void memory_info(std::size_t* free_bytes, std::size_t* total_bytes) {
  DPA_CHECK_CUDA(cudaMemGetInfo(free_bytes, total_bytes));
}

bool compiled_in() { return true; }

}  // namespace dpa::cuda
