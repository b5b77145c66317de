// CPU-only build: no GPU is ever found.
#include "backend/cuda/device.h"

#include "core/error.h"

namespace dpa::cuda {

int device_count() { return 0; }
void set_device(int) { throw Error("this dpa_serve was built without CUDA (reconfigure with -DDPA_CUDA=ON)"); }
std::string device_description(int) { return "none"; }
void memory_info(std::size_t* free_bytes, std::size_t* total_bytes) { *free_bytes = *total_bytes = 0; }
bool compiled_in() { return false; }

}  // namespace dpa::cuda
