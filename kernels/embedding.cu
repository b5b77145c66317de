#include "kernels/common.cuh"
#include "kernels/embedding.cuh"

namespace dpa::kernels {
namespace {

__global__ void embedding_kernel(const void* table, bool bf16, int64_t table_rows, int64_t cols,
                                 int64_t ld, const int32_t* ids, int64_t n, float* out) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    const int64_t id = ids[i];
    float* o = out + i * cols;
    if (id < 0 || id >= table_rows) {
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) o[c] = 0.0f;
      continue;
    }
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
      o[c] = detail::load_weight(table, bf16, id * ld + c);
  }
}

}  // namespace

void embedding(const void* table, bool bf16, int64_t table_rows, int64_t cols, int64_t ld,
               const int32_t* ids, int64_t n, float* out, cudaStream_t stream) {
  if (n <= 0 || cols <= 0) return;
  const unsigned grid = static_cast<unsigned>(n < (1 << 20) ? n : (1 << 20));
  embedding_kernel<<<grid, 256, 0, stream>>>(table, bf16, table_rows, cols, ld, ids, n, out);
}

}  // namespace dpa::kernels
