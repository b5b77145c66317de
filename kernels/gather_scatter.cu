#include "kernels/common.cuh"
#include "kernels/gather_scatter.cuh"

namespace dpa::kernels {
namespace {

constexpr int kThreads = 256;

unsigned grid_rows(int64_t rows) {
  return static_cast<unsigned>(rows < (1 << 20) ? rows : (1 << 20));
}

__device__ __forceinline__ int64_t paged_row(const int32_t* pages, int64_t page_size, int64_t pos) {
  return static_cast<int64_t>(pages[pos / page_size]) * page_size + pos % page_size;
}

template <typename T>
__global__ void gather_rows_kernel(const float* x, const int32_t* rows, int64_t div, int64_t n,
                                   int64_t d, T* out) {
  for (int64_t j = blockIdx.x; j < n; j += gridDim.x) {
    detail::copy_row(out + j * d, x + rows[j] / div * d, d);
  }
}

__global__ void scatter_rows_kernel(const float* x, const int32_t* rows, int64_t n, int64_t d,
                                    float* out) {
  for (int64_t j = blockIdx.x; j < n; j += gridDim.x) {
    detail::copy_row(out + static_cast<int64_t>(rows[j]) * d, x + j * d, d);
  }
}

__global__ void copy2d_kernel(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows,
                              int64_t cols) {
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x)
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[r * ldd + c] = src[r * lds + c];
}

template <class T>
__global__ void paged_write_kernel(T* base, const int32_t* pages, int64_t page_size,
                                   int64_t width, int64_t col0, int64_t cols, int64_t start,
                                   int64_t n, const float* src, int64_t lds) {
  for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
    T* dst = base + paged_row(pages, page_size, start + i) * width + col0;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) detail::store(dst + c, src[i * lds + c]);
  }
}

template <class T>
__global__ void paged_gather_kernel(const T* base, const int32_t* pages, int64_t page_size,
                                    int64_t width, int64_t col0, int64_t cols, int64_t n,
                                    float* out, int64_t ldo, int64_t copies, int64_t copy_stride) {
  for (int64_t j = blockIdx.x; j < n; j += gridDim.x) {
    const T* src = base + paged_row(pages, page_size, j) * width + col0;
    for (int64_t i = threadIdx.x; i < copies * cols; i += blockDim.x) {
      const int64_t k = i / cols, c = i - k * cols;
      out[j * ldo + k * copy_stride + c] = detail::load_f32(src + c);
    }
  }
}

struct GatherSeqs {
  const int32_t* pages[kPagedGatherSeqs];
  int64_t row0[kPagedGatherSeqs];
  int64_t first[kPagedGatherSeqs + 1];  // the sequences' rows, one after the other: a prefix sum
  int n_seqs;
};

// A block a row (grid-stride) over every sequence's rows.
template <class T>
__global__ void paged_gather_many_kernel(const T* base, GatherSeqs s, int64_t page_size, int64_t width, int64_t col0,
                                         int64_t cols, float* out, int64_t ldo) {
  for (int64_t r = blockIdx.x; r < s.first[s.n_seqs]; r += gridDim.x) {
    int i = 0;
    while (i + 1 < s.n_seqs && s.first[i + 1] <= r) ++i;
    const int64_t j = r - s.first[i];
    const T* src = base + paged_row(s.pages[i], page_size, j) * width + col0;
    float* dst = out + (s.row0[i] + j) * ldo;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = detail::load_f32(src + c);
  }
}

}  // namespace

void paged_gather_many(const void* base, bool bf16, const int32_t* const* pages, const int64_t* n,
                       const int64_t* row0, int64_t n_seqs, int64_t page_size, int64_t width, int64_t col0,
                       int64_t cols, float* out, int64_t ldo, cudaStream_t stream) {
  if (cols <= 0) return;
  for (int64_t b = 0; b < n_seqs; b += kPagedGatherSeqs) {
    GatherSeqs s{};
    for (int64_t i = b; i < n_seqs && i < b + kPagedGatherSeqs; ++i) {
      if (n[i] <= 0) continue;
      const int k = s.n_seqs++;
      s.pages[k] = pages[i], s.row0[k] = row0[i], s.first[k + 1] = s.first[k] + n[i];
    }
    if (s.n_seqs == 0) continue;
    const unsigned grid = grid_rows(s.first[s.n_seqs]);
    if (bf16)
      paged_gather_many_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const __nv_bfloat16*>(base), s, page_size,
                                                              width, col0, cols, out, ldo);
    else
      paged_gather_many_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const float*>(base), s, page_size, width,
                                                              col0, cols, out, ldo);
  }
}

void gather_rows(const float* x, const int32_t* rows, int64_t div, int64_t n, int64_t d,
                 void* out, bool out_bf16, cudaStream_t stream) {
  if (n <= 0 || d <= 0) return;
  if (out_bf16)
    gather_rows_kernel<<<grid_rows(n), kThreads, 0, stream>>>(x, rows, div, n, d, static_cast<__nv_bfloat16*>(out));
  else
    gather_rows_kernel<<<grid_rows(n), kThreads, 0, stream>>>(x, rows, div, n, d, static_cast<float*>(out));
}

void scatter_rows(const float* x, const int32_t* rows, int64_t n, int64_t d, float* out,
                  cudaStream_t stream) {
  if (n <= 0 || d <= 0) return;
  scatter_rows_kernel<<<grid_rows(n), kThreads, 0, stream>>>(x, rows, n, d, out);
}

void copy2d(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows, int64_t cols,
            cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  copy2d_kernel<<<grid_rows(rows), kThreads, 0, stream>>>(dst, ldd, src, lds, rows, cols);
}

void paged_write(void* base, bool bf16, const int32_t* pages, int64_t page_size, int64_t width,
                 int64_t col0, int64_t cols, int64_t start, int64_t n, const float* src,
                 int64_t lds, cudaStream_t stream) {
  if (n <= 0 || cols <= 0) return;
  if (bf16)
    paged_write_kernel<<<grid_rows(n), kThreads, 0, stream>>>(
        static_cast<__nv_bfloat16*>(base), pages, page_size, width, col0, cols, start, n, src, lds);
  else
    paged_write_kernel<<<grid_rows(n), kThreads, 0, stream>>>(
        static_cast<float*>(base), pages, page_size, width, col0, cols, start, n, src, lds);
}

void paged_gather(const void* base, bool bf16, const int32_t* pages, int64_t page_size,
                  int64_t width, int64_t col0, int64_t cols, int64_t n, float* out, int64_t ldo,
                  int64_t copies, int64_t copy_stride, cudaStream_t stream) {
  if (n <= 0 || cols <= 0 || copies <= 0) return;
  if (bf16)
    paged_gather_kernel<<<grid_rows(n), kThreads, 0, stream>>>(
        static_cast<const __nv_bfloat16*>(base), pages, page_size, width, col0, cols, n, out, ldo, copies, copy_stride);
  else
    paged_gather_kernel<<<grid_rows(n), kThreads, 0, stream>>>(
        static_cast<const float*>(base), pages, page_size, width, col0, cols, n, out, ldo, copies, copy_stride);
}

}  // namespace dpa::kernels
