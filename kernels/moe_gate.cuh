// MoE router: scores (softmax or sigmoid), optional group limiting, top-k by descending
// selection score with ties to the lower expert id, weights from the unbiased scores.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

struct GateArgs {
  int64_t n_experts = 0, top_k = 0, n_group = 1, topk_group = 1;
  bool sigmoid = false;        // scoring: sigmoid (else softmax)
  bool grouped = false;        // group-limited selection
  bool noaux_tc = false;       // group score = sum of the two best; bias used to choose
  bool norm_topk_prob = false;
  float routed_scaling_factor = 1.0f;
  const float* correction_bias = nullptr;  // device, [n_experts] or null
  int64_t shared_slots = 0;  // slots after each token's top_k: experts n_experts + s, weight 1
};

// logits [n, n_experts] -> ids [n, top_k + shared_slots], weights [n, top_k + shared_slots]. Parameters are validated by the
// caller. Arithmetic follows the CPU reference (double, rounded to float where it rounds).
void moe_gate(const float* logits, int64_t n, const GateArgs& a, int32_t* ids, float* weights,
              cudaStream_t stream);

}  // namespace dpa::kernels
