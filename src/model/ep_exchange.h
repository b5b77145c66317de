// Moving MoE rows between the ranks of an expert-parallel group, in the two forms Model::moe
// takes (and perf/ep_exchange_bench times):
//  - exact: the routed rows only; each rank first sends every owner its slot count per expert
//    of that owner, so the sizes go through the host (a wait per dispatch);
//  - padded: every peer gets a block of a size known beforehand (tokens x min(top_k, experts per
//    rank) rows) and the counts travel beside the rows in backend memory: nothing waits for the
//    host and a step can be recorded as a graph.
// Rank r owns experts [r * per_rank, (r + 1) * per_rank). No expert ids travel: rows arrive
// source by source, experts ascending within a source, and the counts say which is which.
#pragma once

#include <cstdint>
#include <vector>

#include "backend/backend.h"
#include "dist/communicator.h"

namespace dpa::model {

class EpExchange {
 public:
  // epoch: bumped whenever one of the exchange's buffers moves (recorded graphs address them).
  EpExchange(backend::Backend& be, dist::Communicator& comm, int64_t n_experts, int64_t d, uint64_t& epoch);

  // What the local experts get: rows of d floats and their order sorted by local expert
  // (moe_experts' order with x_div 1). They write their results to results() at the rows' own
  // indices, which is the layout combine() sends back.
  struct Local {
    const float* rows = nullptr;
    const int32_t* order = nullptr;
    const int64_t* counts = nullptr;  // per local expert: HOST memory (exact), BACKEND memory (padded)
    int64_t n_rows = 0;               // exact: the rows received; padded: the blocks' rows
    int64_t capacity = 0;             // padded: the most rows one local expert can get; exact: 0
  };

  // Exact, in two calls so that other work can overlap the counts' trip to the host: stage()
  // copies this rank's sorted slots' tokens (x[order[j] / x_div]); dispatch() takes the sort's
  // counts per expert (HOST memory) and sends them, then the rows.
  void stage(const float* x, const int32_t* order, int64_t x_div, int64_t n_slots);
  Local dispatch(const int64_t* counts);

  // Padded: counts per expert in BACKEND memory (moe_counts_to). cap_tokens: the same on every
  // rank of the group and at least each rank's tokens; top_k: slots per token (distinct experts).
  // local_counts: backend memory for the counts per local expert, or null for the exchange's own.
  Local dispatch_padded(const float* x, const int32_t* order, int64_t x_div, int64_t n_slots, const int64_t* counts,
                        int64_t cap_tokens, int64_t top_k, int64_t* local_counts = nullptr);

  // Where the local experts write (sized by the last dispatch).
  float* results() { return out_.data(); }

  // The results back to their slots: slot s's result is y[rows[s]] (moe_combine's rows).
  // position: the exact form's moe_sort position (slot -> sorted index); unused when padded.
  struct Back {
    const float* y = nullptr;
    const int32_t* rows = nullptr;
  };
  Back combine(const int32_t* position);

  int64_t per_rank() const { return per_; }

 private:
  template <typename T>
  T* grow(backend::Buffer<T>& b, int64_t n);

  backend::Backend& be_;
  dist::Communicator& comm_;
  int64_t E_, per_, d_;
  int ranks_;
  uint64_t& epoch_;
  bool padded_ = false;  // the last dispatch's form
  int64_t n_slots_ = 0, block_rows_ = 0;
  std::vector<std::size_t> send_rows_, recv_rows_;  // exact: rows to and from each rank
  std::vector<int64_t> local_host_;                 // exact: rows per local expert (Local::counts)
  backend::Buffer<float> send_, recv_, out_, back_;
  backend::Buffer<int32_t> order_, slot_row_;
  backend::Buffer<int64_t> count_send_, count_recv_, local_counts_;
};

}  // namespace dpa::model
