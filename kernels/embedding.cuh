// Embedding lookup: out[i, :] = table[ids[i], :] (f32 or bf16 table with row stride ld).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// Ids outside [0, table_rows) give a row of zeros (the caller validates ids where it can).
void embedding(const void* table, bool bf16, int64_t table_rows, int64_t cols, int64_t ld,
               const int32_t* ids, int64_t n, float* out, cudaStream_t stream);

}  // namespace dpa::kernels
