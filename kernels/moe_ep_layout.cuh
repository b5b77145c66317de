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
// out) are clamped onto its last row: memory stays safe, results do not. bf16: send holds bf16
// rows (the values rounded), else f32.
void moe_ep_pack(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts, int64_t n_peers,
                 int64_t experts_per_peer, int64_t capacity, int64_t n_slots, int64_t d, void* send,
                 int32_t* slot_row, bool bf16, cudaStream_t stream);

// Receiver side. counts [n_peers, n_local]: source p's rows per local expert, which sit in p's
// block (rows p * capacity ..), experts ascending. local_counts[e] = sum over p of counts[p, e];
// order[q] = the received row at position q when the rows are sorted by expert, sources
// ascending within an expert (moe_experts' order with x_div 1). Negative counts count as 0 and a
// source's counts are cut at its block's capacity.
void moe_ep_unpack(const int64_t* counts, int64_t n_peers, int64_t n_local, int64_t capacity,
                   int64_t* local_counts, int32_t* order, cudaStream_t stream);

// The same exchange with no collective library: every rank's receive and return areas are
// mapped into its peers (one node, CUDA IPC), so the copies are the pack kernel's own stores
// and a flag per source says a block is complete. Blocks are `stride` rows (capacity rows and a
// header row: the counts of the receiver's experts, as int64, which needs 8 * experts_per_peer
// bytes a row: experts_per_peer * 2 <= d for f32 rows, experts_per_peer * 4 <= d for bf16 ones).
// `blocks` holds byte positions typed float*: with bf16 rows, row i starts i * 2d bytes in.
// Flags only grow: *seq counts the exchanges, the same on every rank.
struct EpPeers {
  float* const* blocks = nullptr;      // [n_peers] where my block starts in peer p's area
  int64_t* const* flags = nullptr;     // [n_peers] my flag in peer p's flags
  int64_t* seq = nullptr;              // this rank's exchange count (device)
  int32_t* done = nullptr;             // blocks finished (device, 0 between launches)
};

// moe_ep_pack into the peers' areas: rows at blocks[p] + i * d (i < capacity), the header at
// blocks[p] + capacity * d, slot_row = p * stride + i; then *seq + 1 into every peer's flag of
// mine, and *seq incremented. bf16: rows (and the header's place) in bf16 values (d % 4 == 0).
void moe_ep_pack_peers(const float* x, const int32_t* order, int64_t x_div, const int64_t* counts, int64_t n_peers,
                       int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t n_slots, int64_t d,
                       const EpPeers& peers, int32_t* slot_row, bool bf16, cudaStream_t stream);
// Waits until every source's flag in `flags` [n_peers] reaches *seq, then copies the headers of
// the blocks in `area` (source p's at p * stride rows, header at row p * stride + capacity) into
// counts [n_peers * experts_per_peer] and does moe_ep_unpack's work from them (blocks of stride
// rows), in one launch. row_bytes: the bytes of a row of `area` (d f32 or bf16 values).
void moe_ep_unpack_peers(const void* area, const int64_t* flags, const int64_t* seq, int64_t n_peers,
                         int64_t experts_per_peer, int64_t capacity, int64_t stride, int64_t row_bytes,
                         int64_t* counts, int64_t* local_counts, int32_t* order, cudaStream_t stream);
// The results of source p's rows (results + p * stride * d, as many rows as counts [p, :] sum to,
// cut at capacity) into blocks[p]; then *seq into every peer's flag of mine.
void moe_ep_return_peers(const float* results, const int64_t* counts, int64_t n_peers, int64_t experts_per_peer,
                         int64_t capacity, int64_t stride, int64_t d, const EpPeers& peers, cudaStream_t stream);
// Waits until flags[0 .. n) all reach *seq.
void moe_ep_wait(const int64_t* flags, int64_t n, const int64_t* seq, cudaStream_t stream);

}  // namespace dpa::kernels
