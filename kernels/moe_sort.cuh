// Stable counting sort of expert ids (token slots permuted by expert).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// order[j] = the slot at sorted position j; position[order[j]] = j unless position is null;
// counts_dev[e] = slots of expert e (device, n_experts int64); counts_dev[n_experts] = 1 when an
// id lies outside [0, n_experts) (order then unset).
// Up to kMoeSortWideMinSlots slots (or without the workspace): one block, per-(warp, expert)
// counters in shared memory. From there, with moe_sort_workspace_ints(n_slots, n_experts) ints of
// `workspace` (device memory), three launches over the whole GPU (a prefill step's 49k slots took
// the one block 0.1 ms); the same order either way.
constexpr int64_t kMoeSortWideMinSlots = 8192;
int64_t moe_sort_workspace_ints(int64_t n_slots, int64_t n_experts);
void moe_sort(const int32_t* ids, int64_t n_slots, int64_t n_experts, int32_t* order, int32_t* position,
              int64_t* counts_dev, int* workspace, int64_t workspace_ints, cudaStream_t stream);

}  // namespace dpa::kernels
