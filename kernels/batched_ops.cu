#include "kernels/batched_ops.cuh"
#include "kernels/common.cuh"

namespace dpa::kernels {
namespace {

using detail::store;
using detail::store4;

constexpr int kThreads = 256;

unsigned grid_rows(int64_t rows) {
  return static_cast<unsigned>(rows < (1 << 20) ? rows : (1 << 20));
}

template <class T>
__global__ void kv_write_kernel(T* base, int64_t width, const int64_t* slots, int64_t n,
                                int64_t col0, int64_t cols, const float* src, int64_t lds) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    if (slots[i] < 0) continue;  // a padding row
    T* dst = base + slots[i] * width + col0;
    const float* s = src + i * lds;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) store(dst + c, s[c]);
  }
}

__global__ void strided_to_bf16_kernel(const float* x, int64_t ldx, int64_t stride_x, int64_t n,
                                       int64_t cols, int64_t rows, __nv_bfloat16* out) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t b = r / n, i = r - b * n;
    detail::copy_row(out + r * cols, x + b * stride_x + i * ldx, cols);  // float4 reads where aligned
  }
}

// The same by float4 over the whole array, not a block a row: MLA's per-head rows are 128 or 512
// floats, so a block a row left most of its threads idle and the launch ran 5x slower than the
// bytes. cols4 = cols / 4; every row start 16-byte aligned; 32-bit indices (rows * cols4 < 2^31).
__global__ void strided_to_bf16_vec_kernel(const float* x, uint32_t ldx4, uint32_t stride_x4, uint32_t n,
                                           uint32_t cols4, uint32_t total, __nv_bfloat16* out) {
  const float4* x4 = reinterpret_cast<const float4*>(x);
  for (uint32_t e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    const uint32_t r = e / cols4, c = e - r * cols4, b = r / n, i = r - b * n;
    store4(out + 4 * static_cast<int64_t>(e), x4[static_cast<int64_t>(b) * stride_x4 + static_cast<int64_t>(i) * ldx4 + c]);
  }
}

template <class T>
__global__ void moe_gather_pad_kernel(const float* x, const int32_t* order, int64_t x_div, const int32_t* pos,
                                      int64_t n_rows, int64_t d, int64_t ldx, T* xb) {
  for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
    const int32_t p = pos ? pos[r] : static_cast<int32_t>(r);
    detail::copy_row(xb + r * ldx, p < 0 ? nullptr : x + static_cast<int64_t>(order[p]) / x_div * d, d);
  }
}

__global__ void moe_fixed_positions_kernel(const int64_t* counts, int64_t n_experts, int64_t capacity,
                                           int32_t* pos) {
  const int64_t n = n_experts * capacity;
  for (int64_t p = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; p < n;
       p += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t e = p / capacity, r = p - e * capacity;
    int64_t start = 0;
    for (int64_t i = 0; i < e; ++i) start += counts[i];
    pos[p] = r < counts[e] ? static_cast<int32_t>(start + r) : -1;
  }
}

template <class T>
__global__ void moe_silu_mul_kernel(const float* g, const float* u, int64_t count, T* h) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const float a = g[i];
    store(h + i, a / (1.0f + expf(-a)) * u[i]);
  }
}

__global__ void moe_scatter_pad_kernel(const float* y, int64_t ldy, const int32_t* order,
                                       const int32_t* pos, int64_t n_rows, int64_t d, float* out) {
  for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
    const int32_t p = pos[r];
    if (p < 0) continue;
    detail::copy_row(out + static_cast<int64_t>(order[p]) * d, y + r * ldy, d);
  }
}

}  // namespace

void kv_write(void* base, bool bf16, int64_t width, const int64_t* slots, int64_t n, int64_t col0,
              int64_t cols, const float* src, int64_t lds, cudaStream_t stream) {
  if (n <= 0 || cols <= 0) return;
  if (bf16)
    kv_write_kernel<<<grid_rows(n), kThreads, 0, stream>>>(static_cast<__nv_bfloat16*>(base), width,
                                                           slots, n, col0, cols, src, lds);
  else
    kv_write_kernel<<<grid_rows(n), kThreads, 0, stream>>>(static_cast<float*>(base), width, slots,
                                                           n, col0, cols, src, lds);
}

void strided_to_bf16(const float* x, int64_t ldx, int64_t stride_x, int64_t n, int64_t cols,
                     int64_t batch, uint16_t* out, cudaStream_t stream) {
  const int64_t rows = n * batch;
  if (rows <= 0 || cols <= 0) return;
  const int64_t total4 = rows * (cols / 4);
  if (cols % 4 == 0 && ldx % 4 == 0 && stride_x % 4 == 0 && reinterpret_cast<uintptr_t>(x) % 16 == 0 &&
      reinterpret_cast<uintptr_t>(out) % 8 == 0 && total4 < (int64_t{1} << 31) && ldx / 4 < (int64_t{1} << 32) &&
      stride_x / 4 < (int64_t{1} << 32)) {
    strided_to_bf16_vec_kernel<<<detail::blocks_for(total4, kThreads, 132u * 16u), kThreads, 0, stream>>>(
        x, static_cast<uint32_t>(ldx / 4), static_cast<uint32_t>(stride_x / 4), static_cast<uint32_t>(n),
        static_cast<uint32_t>(cols / 4), static_cast<uint32_t>(total4), reinterpret_cast<__nv_bfloat16*>(out));
    return;
  }
  strided_to_bf16_kernel<<<grid_rows(rows), kThreads, 0, stream>>>(
      x, ldx, stride_x, n, cols, rows, reinterpret_cast<__nv_bfloat16*>(out));
}

void moe_gather_pad(const float* x, const int32_t* order, int64_t x_div, const int32_t* pos, int64_t n_rows,
                    int64_t d, int64_t ldx, bool bf16, void* xb, cudaStream_t stream) {
  if (n_rows <= 0 || d <= 0) return;
  if (bf16)
    moe_gather_pad_kernel<<<grid_rows(n_rows), kThreads, 0, stream>>>(
        x, order, x_div, pos, n_rows, d, ldx, static_cast<__nv_bfloat16*>(xb));
  else
    moe_gather_pad_kernel<<<grid_rows(n_rows), kThreads, 0, stream>>>(
        x, order, x_div, pos, n_rows, d, ldx, static_cast<float*>(xb));
}

void moe_fixed_positions(const int64_t* counts, int64_t n_experts, int64_t capacity, int32_t* pos,
                         cudaStream_t stream) {
  const int64_t n = n_experts * capacity;
  if (n <= 0) return;
  moe_fixed_positions_kernel<<<detail::blocks_for(n, kThreads), kThreads, 0, stream>>>(counts, n_experts,
                                                                                       capacity, pos);
}

void moe_silu_mul(const float* g, const float* u, int64_t count, bool bf16, void* h,
                  cudaStream_t stream) {
  if (count <= 0) return;
  if (bf16)
    moe_silu_mul_kernel<<<detail::blocks_for(count, kThreads), kThreads, 0, stream>>>(
        g, u, count, static_cast<__nv_bfloat16*>(h));
  else
    moe_silu_mul_kernel<<<detail::blocks_for(count, kThreads), kThreads, 0, stream>>>(
        g, u, count, static_cast<float*>(h));
}

void moe_scatter_pad(const float* y, int64_t ldy, const int32_t* order, const int32_t* pos,
                     int64_t n_rows, int64_t d, float* out, cudaStream_t stream) {
  if (n_rows <= 0 || d <= 0) return;
  moe_scatter_pad_kernel<<<grid_rows(n_rows), kThreads, 0, stream>>>(y, ldy, order, pos, n_rows, d,
                                                                    out);
}

}  // namespace dpa::kernels
