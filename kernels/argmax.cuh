// Row-wise argmax (lowest index on ties): greedy sampling.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

void argmax(const float* logits, int64_t n, int64_t vocab, int32_t* out, cudaStream_t stream);

}  // namespace dpa::kernels
