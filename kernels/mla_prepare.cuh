// MLA's per-token preparation before attention in one launch: the queries' rope parts rotated,
// the latent normalized and the rope key rotated into the paged cache (Backend::mla_prepare).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

struct MlaPrepareArgs {
  int64_t n = 0;
  float* q = nullptr;  // [n, q_stride]: head h's rope part at h * q_head_dim + nope
  int64_t n_heads = 0, q_stride = 0, q_head_dim = 0, nope = 0;
  float* q_pe = nullptr;  // [n, n_heads, rope_dim] or null
  // Or null: each head's nope part (the query before its rope part) rounded to bf16, head-major
  // [n_heads, n, nope], as strided_to_bf16 lays out W_UK's input.
  uint16_t* q_nope_hm = nullptr;
  const float* kva = nullptr;  // [n, kva_stride]: latent [kv_lora], rope key [rope_dim]
  int64_t kva_stride = 0, kv_lora = 0, rope_dim = 0;
  const void* norm = nullptr;  // [kv_lora], f32 or bf16
  bool norm_bf16 = false;
  float eps = 0, scaling = 1.0f;
  const int64_t* positions = nullptr;
  const float* inv_freq = nullptr;  // [rope_dim / 2]
  void* cache = nullptr;  // rows of kv_lora + rope_dim, f32 or bf16
  bool cache_bf16 = false;
  const int64_t* slots = nullptr;  // negative: no write
};

void mla_prepare(const MlaPrepareArgs& a, cudaStream_t stream);

}  // namespace dpa::kernels
