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
// 64, 128, 256 or 512 and rope_dim 0 or 64 (other widths take mla_decode_any); base
// 16-byte aligned.
bool mla_decode_bf16_supported(int64_t kv_lora, int64_t rope_dim);
// `stages`: depth of the tile ring, 2 (default: two blocks per SM) or 3 (one block per SM); the
// workspace and the call must use the same. `bulk_loads`: tiles by bulk copies (TMA, sm_90; the
// default) or by cp.async (the only way before sm_90; kept for comparisons). With out_bf16_hm
// the results go there instead of out ([n_heads][n_seqs][kv_lora] bf16 bits, head-major, rounded
// to nearest even: the value projection's batched GEMM input, as strided_to_bf16 lays it out).
int64_t mla_decode_bf16_workspace_floats(int64_t n_seqs, int64_t n_heads, int64_t max_ctx_len,
                                         int64_t kv_lora, int64_t rope_dim, int stages = 2);
void mla_decode_bf16(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads,
                     const uint16_t* base, const int32_t* pages, const int32_t* table_offset,
                     const int32_t* ctx_len, int64_t page_size, int64_t kv_lora, int64_t rope_dim,
                     int64_t max_ctx_len, float scale, float* out, float* workspace,
                     int64_t workspace_floats, cudaStream_t stream, int stages = 2, bool bulk_loads = true,
                     uint16_t* out_bf16_hm = nullptr);

// The same over a bf16 cache with latent 512 and rope 64 on Hopper's warpgroup MMA (sm_90a
// only): 64 heads a block, so the cache is read once per 64 heads (DeepSeek-V3's 128 heads a
// rank: twice instead of eight times). Queries and probabilities rounded to bf16 as above.
// Forms: `seesaw` (the default: the two warpgroups take turns at the tiles, fed by a producer
// warpgroup's tensor copies; pages of 16, 32 or 64 rows, other sizes run the other form) and
// `cp_async` (both warpgroups on every tile, every thread copies; the first form). `cache_rows`:
// the rows from base that page ids reach, the extent of the seesaw form's tensor map (0: the
// allocation's, asked of the driver each call).
enum class MlaWgmmaForm { seesaw, cp_async };
bool mla_decode_wgmma_supported(int64_t n_heads, int64_t kv_lora, int64_t rope_dim);
int64_t mla_decode_wgmma_workspace_floats(int64_t n_seqs, int64_t n_heads, int64_t max_ctx_len);
void mla_decode_wgmma(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads,
                      const uint16_t* base, const int32_t* pages, const int32_t* table_offset,
                      const int32_t* ctx_len, int64_t page_size, int64_t max_ctx_len, float scale,
                      float* out, float* workspace, int64_t workspace_floats, cudaStream_t stream,
                      MlaWgmmaForm form = MlaWgmmaForm::seesaw, int64_t cache_rows = 0);

// Any latent and rope width (kv_lora > 0) over an f32 or a bf16 cache: the shapes the kernels
// above do not take. One block per (sequence, head), no workspace, nothing read on the host (so
// a decode graph records it); plain and slow next to them, it is for small and odd models.
bool mla_decode_any_supported(int64_t kv_lora, int64_t rope_dim);
void mla_decode_any(const float* q_lat, const float* q_pe, int64_t n_seqs, int64_t n_heads, const void* base,
                    bool bf16, const int32_t* pages, const int32_t* table_offset, const int32_t* ctx_len,
                    int64_t page_size, int64_t kv_lora, int64_t rope_dim, float scale, float* out,
                    cudaStream_t stream);

}  // namespace dpa::kernels
