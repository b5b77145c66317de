// GPU discovery and selection for the app; compiled to stubs in a CPU-only build.
#pragma once

#include <cstddef>
#include <string>

namespace dpa::cuda {

// Number of visible CUDA devices; 0 when CUDA is absent or no driver answers.
int device_count();
// Makes `ordinal` current for this thread.
void set_device(int ordinal);
// "NVIDIA H200 (132 SMs, 140 GiB)"
std::string device_description(int ordinal);
// Free and total bytes of the current device (0, 0 without CUDA).
void memory_info(std::size_t* free_bytes, std::size_t* total_bytes);
// True when this build has the CUDA backend.
bool compiled_in();

}  // namespace dpa::cuda
