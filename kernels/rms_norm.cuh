// RMSNorm over rows of d floats, optionally fused with the residual add.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// out[i] = x[i] / sqrt(mean(x[i]^2) + eps) * w (w: d f32 or bf16 values); out may equal x.
// With out_bf16 ([n][d] bf16 bits, 8-byte aligned for the wide path), out's values also rounded
// to nearest even there: what f32_to_bf16 of out gives, without reading it back.
void rms_norm(const float* x, const void* w, bool w_bf16, int64_t n, int64_t d, float eps,
              float* out, cudaStream_t stream, uint16_t* out_bf16 = nullptr);
// residual += x, then out = rms_norm(residual).
void add_rms_norm(float* residual, const float* x, const void* w, bool w_bf16, int64_t n,
                  int64_t d, float eps, float* out, cudaStream_t stream, uint16_t* out_bf16 = nullptr);

}  // namespace dpa::kernels
