// Weighted combine of the top-k expert outputs of each token (unpermuted).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// out[t, :] += sum_k weights[t, k] * y[t * top_k + k, :], summed in k order (fp32).
void moe_combine(const float* y, const float* weights, int64_t n, int64_t top_k, int64_t d,
                 float* out, cudaStream_t stream);

}  // namespace dpa::kernels
