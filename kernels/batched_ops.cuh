// Row movement and conversions behind the batched ops: the flat-slot KV write, the strided
// activations of linear_batched in bf16, and the padded gather / SwiGLU / scatter of moe_experts.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// base[slots[i] * width + col0 + c] = src[i * lds + c], i < n, c < cols, rows with a negative
// slot skipped; base holds bf16 (values rounded) or f32.
void kv_write(void* base, bool bf16, int64_t width, const int64_t* slots, int64_t n, int64_t col0,
              int64_t cols, const float* src, int64_t lds, cudaStream_t stream);

// out[(b * n + i) * cols + c] = bf16(x[b * stride_x + i * ldx + c]): the strided batch of
// activations as one contiguous bf16 array [batch, n, cols].
void strided_to_bf16(const float* x, int64_t ldx, int64_t stride_x, int64_t n, int64_t cols,
                     int64_t batch, uint16_t* out, cudaStream_t stream);

// Padded expert rows: row r (of n_rows) of xb (stride ldx, bf16 when `bf16`, else f32) is
// x[order[pos[r]] / x_div, :d] or zeros where pos[r] < 0; pos null: x[order[r] / x_div, :d].
void moe_gather_pad(const float* x, const int32_t* order, int64_t x_div, const int32_t* pos, int64_t n_rows,
                    int64_t d, int64_t ldx, bool bf16, void* xb, cudaStream_t stream);
// The row map of experts padded to `capacity` rows each: pos[e * capacity + r] = (counts of the
// experts before e) + r for r < counts[e], else -1; counts in device memory (n_experts entries,
// each <= capacity).
void moe_fixed_positions(const int64_t* counts, int64_t n_experts, int64_t capacity, int32_t* pos,
                         cudaStream_t stream);
// h[i] = silu(g[i]) * u[i], i < count, stored as bf16 when `bf16`, else f32.
void moe_silu_mul(const float* g, const float* u, int64_t count, bool bf16, void* h,
                  cudaStream_t stream);
// out[order[pos[r]], :d] = y[r * ldy, :d] for rows with pos[r] >= 0.
void moe_scatter_pad(const float* y, int64_t ldy, const int32_t* order, const int32_t* pos,
                     int64_t n_rows, int64_t d, float* out, cudaStream_t stream);

}  // namespace dpa::kernels
