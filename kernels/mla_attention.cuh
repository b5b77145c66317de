// Attention of one sequence: the expanded causal form and the absorbed MLA form over a paged
// latent cache. Scores and softmax in fp32 (online softmax over chunks of keys). When few
// (query, head) pairs face a long context, the keys are split over several blocks whose partial
// results are merged in a second kernel (flash-decoding); that needs a workspace of
// attention_workspace_floats() floats (without it, or when it is too small, one block per pair).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// q [n_q, H, d_qk], k [n_kv, H, d_qk], v [n_kv, H, d_v] -> out [n_q, H, d_v]; query i sees keys
// 0 .. min(n_kv, q_start + i + 1) - 1.
void attention(const float* q, const float* k, const float* v, int64_t n_q, int64_t n_kv,
               int64_t n_heads, int64_t d_qk, int64_t d_v, int64_t q_start, float scale,
               float* out, float* workspace, int64_t workspace_floats, cudaStream_t stream);

// q_lat [n_q, H, kv_lora], q_pe [n_q, H, rope_dim] over the paged cache (page p of page_size
// tokens of kv_lora + rope_dim floats at base + p * page_size * width; pages: the sequence's page
// table) -> out_lat [n_q, H, kv_lora]; query i sees positions 0 .. q_start + i.
void mla_absorbed(const float* q_lat, const float* q_pe, int64_t n_q, int64_t n_heads,
                  const float* base, const int32_t* pages, int64_t page_size, int64_t kv_lora,
                  int64_t rope_dim, int64_t q_start, float scale, float* out_lat,
                  float* workspace, int64_t workspace_floats, cudaStream_t stream);

// Workspace floats the split-KV path wants for n_q queries x n_heads over n_ctx keys (0: none).
int64_t attention_workspace_floats(int64_t n_q, int64_t n_heads, int64_t n_ctx, int64_t d_v);

// The softmax step of the GEMM form (scores by cuBLAS, then this, then P·V by cuBLAS): row r of
// s (stride ld) belongs to query i = (r / q_div) % q_mod, which sees columns
// j < min(n_cols, q_start + i + 1); in place p = softmax(scale * s) there and 0 beyond.
void masked_softmax(float* s, int64_t rows, int64_t n_cols, int64_t ld, int64_t q_div,
                    int64_t q_mod, int64_t q_start, float scale, cudaStream_t stream);

// Largest d_qk + d_v the kernels take (shared memory holds the query and the accumulator).
int64_t attention_max_dims();

}  // namespace dpa::kernels
