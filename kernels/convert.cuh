// f32 <-> bf16 conversion (bf16 stored as uint16, round to nearest even).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

void f32_to_bf16(const float* x, uint16_t* y, int64_t count, cudaStream_t stream);
void bf16_to_f32(const uint16_t* x, float* y, int64_t count, cudaStream_t stream);
// The rows in use of an exchange's bf16 rows, in f32 at the same indices: y[r, :d] = x[r, :d] for
// r = order[q], q < the rows in use: `total`, or with counts (device memory, n_experts of them)
// the sum of each clamped to [0, capacity]; at most bound rows, and r outside [0, n_rows) skipped.
// The other rows of y are left as they are (no expert reads them).
void bf16_rows_to_f32(const uint16_t* x, const int32_t* order, const int64_t* counts, int64_t n_experts,
                      int64_t capacity, int64_t total, int64_t bound, int64_t n_rows, int64_t d, float* y,
                      cudaStream_t stream);

// The same rows the other way: the experts' f32 results rounded into bf16 ones, the rows no slot
// names left as they are (as the CPU reference leaves them).
void f32_rows_to_bf16(const float* x, const int32_t* order, const int64_t* counts, int64_t n_experts,
                      int64_t capacity, int64_t total, int64_t bound, int64_t n_rows, int64_t d, uint16_t* y,
                      cudaStream_t stream);

}  // namespace dpa::kernels
