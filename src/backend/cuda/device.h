// GPU discovery and selection for the app; compiled to stubs in a CPU-only build.
#pragma once

#include <string>

namespace dpa::cuda {

// Number of visible CUDA devices; 0 when CUDA is absent or no driver answers.
int device_count();
// Makes `ordinal` current for this thread.
void set_device(int ordinal);
// "NVIDIA H200 (132 SMs, 140 GiB)"
std::string device_description(int ordinal);
// True when this build has the CUDA backend.
bool compiled_in();

}  // namespace dpa::cuda
