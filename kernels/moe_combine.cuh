// Weighted combine of the top-k expert outputs of each token (read in place through their rows).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// out[t, :] += sum_k weights[t, k] * y[row(t * top_k + k), :], summed in k order (fp32);
// row(s) = rows[s], or s when rows is null. accumulate false: out[t, :] = the sum. y: f32 rows, or
// bf16 ones (y_bf16).
void moe_combine(const void* y, bool y_bf16, const int32_t* rows, const float* weights, int64_t n, int64_t top_k,
                 int64_t d, float* out, bool accumulate, cudaStream_t stream);

}  // namespace dpa::kernels
