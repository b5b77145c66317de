// Row movement: token permute/unpermute and the paged latent cache's write and gather.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// out[j, :] = x[rows[j] / div, :], j < n, rows of d floats (div 1: a plain gather); out_bf16:
// out holds bf16 rows (the values rounded).
void gather_rows(const float* x, const int32_t* rows, int64_t div, int64_t n, int64_t d,
                 void* out, bool out_bf16, cudaStream_t stream);
// out[rows[j], :] = x[j, :].
void scatter_rows(const float* x, const int32_t* rows, int64_t n, int64_t d, float* out,
                  cudaStream_t stream);
// dst[r * ldd + c] = src[r * lds + c].
void copy2d(float* dst, int64_t ldd, const float* src, int64_t lds, int64_t rows, int64_t cols,
            cudaStream_t stream);
// Cache rows of positions start .. start+n-1, columns [col0, col0+cols) = src rows (stride lds).
// The cache: base [pages, page_size, width] of bf16 (values rounded) or f32; pages: the
// sequence's page table.
void paged_write(void* base, bool bf16, const int32_t* pages, int64_t page_size, int64_t width,
                 int64_t col0, int64_t cols, int64_t start, int64_t n, const float* src,
                 int64_t lds, cudaStream_t stream);
// out[j * ldo + k * copy_stride + c] = column col0 + c of the cache row of position j, j < n,
// as f32, for k < copies.
void paged_gather(const void* base, bool bf16, const int32_t* pages, int64_t page_size,
                  int64_t width, int64_t col0, int64_t cols, int64_t n, float* out, int64_t ldo,
                  int64_t copies, int64_t copy_stride, cudaStream_t stream);

// paged_gather (one copy) of several sequences' caches that differ only in their page tables:
// sequence i's positions j < n[i] into out rows row0[i] + j. One launch a kPagedGatherSeqs
// sequences (their tables by value in the launch's parameters).
constexpr int kPagedGatherSeqs = 32;
void paged_gather_many(const void* base, bool bf16, const int32_t* const* pages, const int64_t* n,
                       const int64_t* row0, int64_t n_seqs, int64_t page_size, int64_t width, int64_t col0,
                       int64_t cols, float* out, int64_t ldo, cudaStream_t stream);

}  // namespace dpa::kernels
