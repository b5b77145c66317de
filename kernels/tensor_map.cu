#include "kernels/tensor_map.cuh"

#include <cudaTypedefs.h>
#include <cuda_runtime.h>

namespace dpa::kernels::detail {
namespace {

// The driver's entry point `name` at API version 12.0, or null.
void* driver_entry(const char* name) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult q{};
  if (cudaGetDriverEntryPointByVersion(name, &p, 12000, cudaEnableDefault, &q) != cudaSuccess ||
      q != cudaDriverEntryPointSuccess)
    p = nullptr;
  cudaGetLastError();
  return p;
}

using Encoder = PFN_cuTensorMapEncodeTiled_v12000;
Encoder encoder() {
  static const auto fn = reinterpret_cast<Encoder>(driver_entry("cuTensorMapEncodeTiled"));
  return fn;
}

}  // namespace

bool tensor_maps_available() { return encoder() != nullptr; }

bool encode_bf16_2d(CUtensorMap* m, const void* base, int64_t inner, int64_t outer, int64_t ld, int box_inner,
                    int box_rows) {
  const Encoder fn = encoder();
  if (!fn || inner <= 0 || outer <= 0) return false;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(inner), static_cast<cuuint64_t>(outer)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(ld) * 2};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_inner), static_cast<cuuint32_t>(box_rows)}, elem[2] = {1, 1};
  return fn(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<void*>(base), dims, strides, box, elem,
            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

int64_t allocation_bytes_after(const void* p) {
  static const auto fn = reinterpret_cast<PFN_cuMemGetAddressRange_v3020>(driver_entry("cuMemGetAddressRange"));
  CUdeviceptr start = 0;
  size_t size = 0;
  if (!fn || fn(&start, &size, reinterpret_cast<CUdeviceptr>(p)) != CUDA_SUCCESS) return 0;
  return static_cast<int64_t>(start + size - reinterpret_cast<CUdeviceptr>(p));
}

}  // namespace dpa::kernels::detail
