// Causal attention of prefill chunks on tensor cores (the expanded MLA form of prefill), one
// sequence or several packed along the rows: q, k and v in fp32 are rounded to bf16 first,
// S = Q·K^T and O = P·V run on mma.sync with fp32 accumulation, and the softmax is the online
// (flash) form in fp32, so no score matrix is written. A block takes 64 queries of one head (4 warps, 16 queries each)
// and walks the key tiles its queries see. For bf16-class inputs only: the backend uses it where
// the attention GEMMs may round to TF32 (over a bf16 KV cache).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// Whether flash_prefill takes these head dims (and an 8-byte aligned output).
bool flash_prefill_supported(int64_t d_qk, int64_t d_v, const void* out, int64_t n_heads);

// bf16 elements of the workspace flash_prefill needs (the inputs rounded to bf16); for the
// packed form, n_q and n_kv are the rows the sequences span.
int64_t flash_prefill_workspace(int64_t n_q, int64_t n_kv, int64_t n_heads, int64_t d_qk, int64_t d_v);

// q [n_q, H, d_qk], k [n_kv, H, d_qk], v [n_kv, H, d_v] -> out [n_q, H, d_v]; query i sees keys
// 0 .. min(n_kv, q_start + i + 1) - 1; softmax(scale · q·k). The inputs are first rounded to
// bf16 into `workspace` (16-byte aligned); tiles then stream in by cp.async, double buffered.
void flash_prefill(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
                   int64_t n_heads, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
                   float* out, uint16_t* workspace, cudaStream_t stream);

// One sequence of flash_prefill_packed: queries at rows q0 .. q0 + n_q - 1 of q and out, keys
// and values at rows kv0 .. kv0 + n_kv - 1 of k and v, query i at position q_start + i.
struct FlashSeq {
  int64_t q0 = 0, n_q = 0, kv0 = 0, n_kv = 0, q_start = 0;
};
// flash_prefill for several sequences packed along the rows: one launch a few dozen sequences
// (their tiles by value in the launch's parameters, no upload). Rows no sequence uses are
// rounded to bf16 too (the packing leaves none).
void flash_prefill_packed(const float* q, const float* k, const float* v, const FlashSeq* seqs, int64_t n_seqs,
                          int64_t n_heads, int64_t d_qk, int64_t d_v, float scale, float* out, uint16_t* workspace,
                          cudaStream_t stream);

}  // namespace dpa::kernels
