// Row-wise argmax (lowest index on ties): greedy sampling; the next step's ids from the draws.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

void argmax(const float* logits, int64_t n, int64_t vocab, int32_t* out, cudaStream_t stream);
// dst[pairs[2i]] = src[pairs[2i + 1] * stride], i < n: input ids from an earlier step's draws.
void take_tokens(int32_t* dst, const int32_t* src, int64_t stride, const int32_t* pairs, int64_t n,
                 cudaStream_t stream);

}  // namespace dpa::kernels
