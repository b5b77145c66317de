// Tensor maps for Hopper's tensor copies (TMA): encoding through the driver's entry point (the
// runtime has no wrapper, and linking libcuda directly would tie the build to a driver), and the
// extent of the allocation a device pointer lies in (a map must name its tensor's rows). Host
// code; included by .cu files only.
#pragma once

#include <cuda.h>

#include <cstdint>

namespace dpa::kernels::detail {

// Whether the driver offers the encoder (asked once).
bool tensor_maps_available();

// A [outer][inner] bf16 matrix at `base` (row stride ld elements, a multiple of 8; base 16-byte
// aligned) read in boxes of box_inner x box_rows elements, 128-byte swizzled (box_inner * 2 <=
// 128). False where the driver has no encoder or refuses the shape.
bool encode_bf16_2d(CUtensorMap* m, const void* base, int64_t inner, int64_t outer, int64_t ld, int box_inner,
                    int box_rows);

// Bytes from `p` to the end of the device allocation holding it (0 if the driver cannot tell).
int64_t allocation_bytes_after(const void* p);

}  // namespace dpa::kernels::detail
