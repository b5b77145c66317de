// The split planning and split merge shared by the MLA decode kernels (fp32 and bf16 caches).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels::detail {

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
// domain); out[row] = sum_k acc_k e^(m_k - M) / sum_k l_k e^(m_k - M).
void merge_decode_splits(const float* part, int64_t n_rows, int n_splits, int L, float* out,
                         cudaStream_t stream);

}  // namespace dpa::kernels::detail
