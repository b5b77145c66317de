// Stable counting sort of expert ids (token slots permuted by expert).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// order[j] = the slot at sorted position j; position[order[j]] = j unless position is null;
// counts_dev[e] = slots of expert e (device, n_experts int64); counts_dev[n_experts] = 1 when an
// id lies outside [0, n_experts) (order then unset).
// One block; per-(expert, warp) counters in shared memory.
void moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order,
              int32_t* position, int64_t* counts_dev, cudaStream_t stream);

}  // namespace dpa::kernels
