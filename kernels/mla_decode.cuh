// Batched absorbed-MLA decode over a paged latent cache: n_seqs sequences of one query token,
// all heads of a sequence in one pass over its cache. A block takes (sequence, 16-head group,
// context split): the group's queries sit in shared memory, key tiles of 16 cache rows are
// streamed in with cp.async (double buffered), scores Q·K^T and P·C_lat are register-tiled fp32
// FMAs, the softmax is online per head. When sequences are few the context is split over blocks
// (flash-decoding) and a second kernel merges the splits.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// Whether the fused kernel takes these dims (kv_lora <= 512, kv_lora and rope_dim multiples of
// 4, shared memory within the limit) and a 16-byte aligned cache base.
bool mla_decode_supported(int64_t kv_lora, int64_t rope_dim, const void* base);

// Workspace floats mla_decode needs (0: none). `variant` (1 or 2) must match the call's.
int64_t mla_decode_workspace_floats(int64_t n_seqs, int64_t n_heads, int64_t max_ctx_len,
                                    int64_t kv_lora, int variant = 2);

// q_lat [n_seqs, H, kv_lora], q_pe [n_seqs, H, rope_dim] -> out [n_seqs, H, kv_lora]; sequence
// s sees cache positions 0 .. ctx_len[s] - 1 whose pages are pages[table_offset[s] ...].
// max_ctx_len (host) plans the splits; a longer ctx_len is still read whole (by the last split).
// variant 2 (default): queries and page-table lookups issued asynchronously / together, splits
// planned by whole waves, parallel combine; variant 1: the first version, kept for comparison.
void mla_decode(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads,
                const float* base, const int32_t* pages, const int32_t* table_offset,
                const int32_t* ctx_len, int64_t page_size, int64_t kv_lora, int64_t rope_dim,
                int64_t max_ctx_len, float scale, float* out, float* workspace,
                int64_t workspace_floats, cudaStream_t stream, int variant = 2);

// The same over a bf16 cache (base [pages, page_size, kv_lora + rope_dim] bf16), on tensor cores:
// queries and probabilities rounded to bf16, scores, softmax and sums in fp32. Takes kv_lora of
// 64, 128, 256 or 512 and kv_lora + rope_dim a multiple of 16; base 16-byte aligned.
bool mla_decode_bf16_supported(int64_t kv_lora, int64_t rope_dim);

// Kernel layouts of the bf16 decode (for measurements; -1: the default, w4t32).
// v1: 4 warps, each warp the scores of 8 of the 32 rows of a tile over all channels (the queries
// re-read from shared memory every tile), softmax by the block, three phases between barriers.
// wNtT (k-split): N warps, tiles of T rows; each warp keeps a quarter of the queries' channels in
// registers and scores every row over them; the partial scores are summed in shared memory, and
// each warp runs the softmax itself for its own P fragments. wNt32b: the same with the tiles
// loaded by bulk copies (TMA, sm_90; cp.async on older GPUs), one per cache row.
enum MlaDecodeLayout {
  kMlaDecodeV1 = 0,
  kMlaDecodeW4T32 = 1,
  kMlaDecodeW8T32 = 2,
  kMlaDecodeW8T64 = 3,
  kMlaDecodeW4T32B = 4,
  kMlaDecodeW8T32B = 5,
};

// `stages`: depth of the cp.async ring, 2 (default: two blocks per SM where the tile fits) or
// deeper (v1: 3 .. 5, k-split: 3; one block per SM); the workspace and the call must use the
// same stages and layout.
int64_t mla_decode_bf16_workspace_floats(int64_t n_seqs, int64_t n_heads, int64_t max_ctx_len,
                                         int64_t kv_lora, int64_t rope_dim, int stages = 2,
                                         int layout = -1);
void mla_decode_bf16(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads,
                     const uint16_t* base, const int32_t* pages, const int32_t* table_offset,
                     const int32_t* ctx_len, int64_t page_size, int64_t kv_lora, int64_t rope_dim,
                     int64_t max_ctx_len, float scale, float* out, float* workspace,
                     int64_t workspace_floats, cudaStream_t stream, int stages = 2, int layout = -1);

}  // namespace dpa::kernels
