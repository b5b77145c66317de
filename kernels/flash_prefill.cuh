// Causal attention of prefill chunks on tensor cores (the expanded MLA form of prefill), one
// sequence or several packed along the rows: q, k and v in fp32 are rounded to bf16 first,
// S = Q·K^T and O = P·V run on mma.sync with fp32 accumulation, and the softmax is the online
// (flash) form in fp32, so no score matrix is written. A block takes 64 queries of one head (4
// warps, 16 queries each) and walks the key tiles its queries see. For bf16-class inputs only: the backend uses it where
// the attention GEMMs may round to TF32 (over a bf16 KV cache).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// Whether flash_prefill takes these head dims (and an 8-byte aligned output).
bool flash_prefill_supported(int64_t d_qk, int64_t d_v, const void* out, int64_t n_heads);

// One sequence of flash_prefill: queries at rows q0 .. q0 + n_q - 1 of q and out, keys and
// values at rows kv0 .. kv0 + n_kv - 1 of k and v, query i at position q_start + i.
struct FlashSeq {
  int64_t q0 = 0, n_q = 0, kv0 = 0, n_kv = 0, q_start = 0;
};

// bf16 elements of the workspace flash_prefill needs for these sequences (the rows they span
// rounded to bf16).
int64_t flash_prefill_workspace(const FlashSeq* seqs, int64_t n_seqs, int64_t n_heads, int64_t d_qk,
                                int64_t d_v);

// q [rows, H, d_qk], k [rows, H, d_qk], v [rows, H, d_v] -> out [rows, H, d_v] for each
// sequence's rows: query i sees keys 0 .. min(n_kv, q_start + i + 1) - 1 of its sequence;
// softmax(scale · q·k). The rows the sequences span are first rounded to bf16 into `workspace`
// (16-byte aligned; gaps between sequences too); tiles then stream in by cp.async, double
// buffered. One launch a few dozen sequences (their tiles by value in the launch's parameters,
// no upload).
void flash_prefill(const float* q, const float* k, const float* v, const FlashSeq* seqs, int64_t n_seqs,
                   int64_t n_heads, int64_t d_qk, int64_t d_v, float scale, float* out, uint16_t* workspace,
                   cudaStream_t stream);

// MLA's expanded form without its keys and values in f32: the head h key of row r is
// [kvb[r, h, :nope], k_pe[r, :]] and its value kvb[r, h, nope:] (kvb [rows, H, nope + d_v], k_pe
// [rows, rope], both f32), built in bf16 in `workspace` (flash_prefill_workspace's size for
// d_qk = nope + rope) in one pass, then flash_prefill's launches. nope + rope and d_v: 192 / 128.
void flash_prefill_mla(const float* q, const float* kvb, const float* k_pe, const FlashSeq* seqs, int64_t n_seqs,
                       int64_t n_heads, int64_t nope, int64_t rope, int64_t d_v, float scale, float* out,
                       uint16_t* workspace, cudaStream_t stream);

// The same keys and values in f32 (any widths): k [rows, H, nope + rope], v [rows, H, d_v].
void expand_mla_kv(const float* kvb, const float* k_pe, int64_t rows, int64_t n_heads, int64_t nope, int64_t rope,
                   int64_t d_v, float* k, float* v, cudaStream_t stream);

}  // namespace dpa::kernels
