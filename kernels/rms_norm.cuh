// RMSNorm over rows of d floats, optionally fused with the residual add.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w (w: d f32 or bf16 values); out may equal x.
void rms_norm(const float* x, const void* w, bool w_bf16, int64_t n, int64_t d, float eps,
              float* out, cudaStream_t stream);
// residual += x, then out = rms_norm(residual).
void add_rms_norm(float* residual, const float* x, const void* w, bool w_bf16, int64_t n,
                  int64_t d, float eps, float* out, cudaStream_t stream);

}  // namespace dpa::kernels
