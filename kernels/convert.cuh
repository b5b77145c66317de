// f32 <-> bf16 conversion (bf16 stored as uint16, round to nearest even).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

void f32_to_bf16(const float* x, uint16_t* y, int64_t count, cudaStream_t stream);
void bf16_to_f32(const uint16_t* x, float* y, int64_t count, cudaStream_t stream);

}  // namespace dpa::kernels
