// The padded expert-parallel exchange's row layouts: every peer of the EP group gets a block of
// `capacity` rows, so the all-to-all's sizes are known without the routing counts and a step can
// be queued (or recorded) whole. Counts stay in device memory.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace dpa::kernels {

// Most experts (n_peers * experts per peer) the layout kernels take.
constexpr int64_t kEpLayoutMaxExperts = 2048;

// Sender side. Sorted slot j (moe_sort's order; counts [n_peers * experts_per_peer] per expert)
// of expert e goes to peer p = e / experts_per_peer, at row r = p * capacity + (j - the first
// sorted slot of p's experts): send[r, :] = x[order[j] / x_div, :] and slot_row[order[j]] = r.
// A peer's rows past capacity (which a capacity of tokens * min(top_k, experts per peer) rules
// out) are clamped onto its last row: memory stays safe, results do not.
void moe_ep_pack(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts, int64_t n_peers,
                 int64_t experts_per_peer, int64_t capacity, int64_t n_slots, int64_t d, float* send,
                 int32_t* slot_row, cudaStream_t stream);

// Receiver side. counts [n_peers, n_local]: source p's rows per local expert, which sit in p's
// block (rows p * capacity ..), experts ascending. local_counts[e] = sum over p of counts[p, e];
// order[q] = the received row at position q when the rows are sorted by expert, sources
// ascending within an expert (moe_experts' order with x_div 1). Negative counts count as 0 and a
// source's counts are cut at its block's capacity.
void moe_ep_unpack(const int64_t* counts, int64_t n_peers, int64_t n_local, int64_t capacity,
                   int64_t* local_counts, int32_t* order, cudaStream_t stream);

}  // namespace dpa::kernels
