// What the MLA decode kernels (fp32 and bf16 caches) share: their arguments, the split planning
// and the split merge.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace dpa::kernels::detail {

// Arguments of a decode kernel over a cache of T elements.
template <class T>
struct DecodeArgs {
  const float* q_lat;
  const float* q_pe;
  const T* base;
  const int32_t* pages;
  const int32_t* table_offset;
  const int32_t* ctx_len;
  float* out;
  float* part;  // null: one split, results straight to out
  // Set: the results rounded to bf16 (bits) here instead of out, head-major [n_heads][n_seqs][L]
  // (the value projection's batched GEMM input, as strided_to_bf16 lays it out).
  uint16_t* out_hm = nullptr;
  int n_seqs, n_heads, n_hg, page_size, L, R, W;
  int Wpad;     // shared-memory row length in elements (W padded)
  int n_splits, split_len;
  float scale;  // the softmax scale (times log2(e) where the kernel works in the exp2 domain)
};

// The work of one block, flattened as ((s * n_splits) + split) * n_hg + hg so that the head groups
// of the same rows run side by side (their cache reads meet in L2): sequence s, heads
// [h0, h0 + nh), cache rows [k_begin, k_end); sh0 is the (sequence, first head) row.
struct DecodeBlock {
  int s, split, h0, nh, k_begin, k_end;
  int64_t sh0;
};

template <class T>
__device__ __forceinline__ DecodeBlock decode_block(const DecodeArgs<T>& a, int heads_per_block) {
  DecodeBlock b;
  int bid = blockIdx.x;
  const int hg = bid % a.n_hg;
  bid /= a.n_hg;
  b.split = bid % a.n_splits;
  b.s = bid / a.n_splits;
  b.h0 = hg * heads_per_block;
  b.nh = min(heads_per_block, a.n_heads - b.h0);
  const int ctx = a.ctx_len[b.s];
  b.k_begin = b.split * a.split_len;
  b.k_end = b.split == a.n_splits - 1 ? ctx : min(ctx, b.k_begin + a.split_len);
  b.sh0 = static_cast<int64_t>(b.s) * a.n_heads + b.h0;
  return b;
}

// Where split `split` of (sequence, head) row `row` keeps its (max, sum) pair.
template <class T>
__device__ __forceinline__ float* split_max_sum(const DecodeArgs<T>& a, int64_t row, int split) {
  return a.part + static_cast<int64_t>(a.n_seqs) * a.n_heads * a.n_splits * a.L + (row * a.n_splits + split) * 2;
}

// A block whose split lies past its sequence's context: it contributes nothing to the merge, or
// zeros when there is a single split. Returns whether the block is such a one.
template <class T>
__device__ __forceinline__ int64_t head_major(const DecodeArgs<T>& a, int64_t sh, int c) {
  const int64_t s = sh / a.n_heads;
  return ((sh - s * a.n_heads) * a.n_seqs + s) * a.L + c;
}
template <class T>
__device__ __forceinline__ bool empty_split(const DecodeArgs<T>& a, const DecodeBlock& b) {
  if (b.k_begin < b.k_end) return false;
  if (a.part) {
    if (static_cast<int>(threadIdx.x) < b.nh) {
      float* ml = split_max_sum(a, b.sh0 + threadIdx.x, b.split);
      ml[0] = -INFINITY, ml[1] = 0.0f;
    }
  } else if (a.out_hm) {
    for (int i = threadIdx.x; i < b.nh * a.L; i += blockDim.x) a.out_hm[head_major(a, b.sh0 + i / a.L, i % a.L)] = 0;
  } else {
    for (int i = threadIdx.x; i < b.nh * a.L; i += blockDim.x) a.out[b.sh0 * a.L + i] = 0.0f;
  }
  return true;
}

struct DecodePlan {
  int n_splits, split_len;
};

// Splits of the context for n_seqs x n_hg blocks, `per_sm` resident blocks per SM: the fewest
// waves times rows per split plus a fixed cost per block; split_len is a multiple of `tile`.
DecodePlan plan_decode(int64_t n_seqs, int64_t n_hg, int64_t max_ctx, int tile, int per_sm = 2);

// Largest number of splits plan_decode returns.
constexpr int kMaxDecodeSplits = 128;

// Merges the splits of each of n_rows (sequence, head) rows: part holds [n_rows][n_splits][L]
// unnormalized outputs, then [n_rows][n_splits][2] (max score, sum of exponentials; natural log
// domain); out[row] = sum_k acc_k e^(m_k - M) / sum_k l_k e^(m_k - M). With out_hm, rounded to
// bf16 there instead, head-major (DecodeArgs::out_hm; rows are sequence * n_heads + head).
void merge_decode_splits(const float* part, int64_t n_rows, int n_splits, int L, float* out,
                         cudaStream_t stream, uint16_t* out_hm = nullptr, int n_heads = 1);

}  // namespace dpa::kernels::detail
