// Moving MoE rows between the ranks of an expert-parallel group, in the two forms Model::moe
// takes (and perf/ep_exchange_bench times):
//  - exact: the routed rows only; each rank first sends every owner its slot count per expert
//    of that owner, so the sizes go through the host (a wait per dispatch);
//  - padded: every peer gets a block of a size known beforehand (tokens x min(top_k, experts per
//    rank) rows) and the counts travel beside the rows in backend memory: nothing waits for the
//    host and a step can be recorded as a graph. Over the communicator (one grouped all-to-all
//    each way), or, where every rank of the group shares one node and the backend maps memory
//    between processes (enable_peer_memory), with no collective call: the pack kernel stores the
//    rows into the owners' memory and raises a flag per source, the owners' results go back the
//    same way.
// Rank r owns experts [r * per_rank, (r + 1) * per_rank). No expert ids travel: rows arrive
// source by source, experts ascending within a source, and the counts say which is which. The
// rows go out in the exchange's rows type and the results come back in its results type (f32 or
// bf16 each).
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "backend/backend.h"
#include "dist/communicator.h"

namespace dpa::model {

class EpExchange {
 public:
  // epoch: bumped whenever one of the exchange's buffers moves (recorded graphs address them).
  // rows: the type the tokens' rows travel in: f32, or bf16 (d % 4 == 0; rounded as the bf16
  // experts' kernels round them anyway: half the bytes of the dispatch). results: the type of the
  // local experts' result rows, which travel back as they are: f32, or bf16 (moe_experts' bf16
  // results, d even: half the bytes of the return).
  EpExchange(backend::Backend& be, dist::Communicator& comm, int64_t n_experts, int64_t d, uint64_t& epoch,
             DType results = DType::f32, DType rows = DType::f32);
  ~EpExchange();
  EpExchange(const EpExchange&) = delete;
  EpExchange& operator=(const EpExchange&) = delete;

  // Every rank's bytes in rank order (host memory), collective over the group.
  using AllGatherBytes = std::function<std::vector<uint8_t>(const std::vector<uint8_t>& mine)>;
  // The padded form over peer memory, for blocks of up to max_cap_tokens tokens at top_k: areas
  // mapped into every rank of the group when all of them can (one host, a backend that shares
  // memory, counts fitting a row; `wanted` false on any rank: none). Collective; true when on.
  bool enable_peer_memory(int64_t max_cap_tokens, int64_t top_k, bool wanted, const AllGatherBytes& all_gather);
  bool peer_memory() const { return peer_.on; }

  // What the local experts get: rows of d values of `dtype` and their order sorted by local expert
  // (moe_experts' order with x_div 1). They write their results to results() at the rows' own
  // indices, which is the layout combine() sends back.
  struct Local {
    const void* rows = nullptr;
    DType dtype = DType::f32;
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
  // rank of the group and at least each rank's tokens (over peer memory: at most the
  // max_cap_tokens it was enabled for); top_k: slots per token (distinct experts).
  // local_counts: backend memory for the counts per local expert, or null for the exchange's own.
  Local dispatch_padded(const float* x, const int32_t* order, int64_t x_div, int64_t n_slots, const int64_t* counts,
                        int64_t cap_tokens, int64_t top_k, int64_t* local_counts = nullptr);

  // The padded form in three steps, for the two-batch overlap (Model: the exchange on the
  // backend's lane 1 while the other micro-batch computes on lane 0); dispatch_padded is the three
  // in a row. pack_padded lays the rows out in blocks (over peer memory it only takes the
  // arguments: the stores into the owners' memory are the exchange itself); send_padded moves
  // them (the grouped collective, or the stores and the wait for every source's flag);
  // received() sorts what came by local expert. Same arguments as dispatch_padded.
  void pack_padded(const float* x, const int32_t* order, int64_t x_div, int64_t n_slots, const int64_t* counts,
                   int64_t cap_tokens, int64_t top_k, int64_t* local_counts = nullptr);
  void send_padded();
  Local received();

  // Where the local experts write: result_rows() rows of d values of results_dtype() (sized by
  // the last dispatch; moe_experts' out and out_rows).
  void* results() { return out_.data(); }
  DType results_dtype() const { return res_dtype_; }
  int64_t result_rows() const { return res_rows_; }

  // The results back to their slots: slot s's result is y[rows[s]] (moe_combine's rows).
  // position: the exact form's moe_sort position (slot -> sorted index); unused when padded.
  // combine() is send_back() then back(): the first moves the results, the second says where
  // they are.
  struct Back {
    const void* y = nullptr;  // rows of d values of results_dtype()
    const int32_t* rows = nullptr;
    DType dtype = DType::f32;
  };
  Back combine(const int32_t* position);
  void send_back();
  Back back(const int32_t* position) const;

  // The communicator the exchange's collectives go to from now on (same group, e.g. one bound
  // to the backend's lane 1); peer memory uses none.
  void set_communicator(dist::Communicator& comm);

  int64_t per_rank() const { return per_; }

 private:
  template <typename T>
  T* grow(backend::Buffer<T>& b, int64_t n);

  backend::Backend& be_;
  dist::Communicator* comm_;
  int64_t E_, per_, d_;
  int ranks_;
  uint64_t& epoch_;
  DType res_dtype_, rows_dtype_;
  std::size_t res_row_;    // bytes of a result row
  std::size_t row_;        // bytes of a dispatched row
  int64_t res_rows_ = 0;   // rows in out_
  bool padded_ = false;  // the last dispatch's form
  int64_t n_slots_ = 0, block_rows_ = 0;
  std::vector<std::size_t> send_rows_, recv_rows_;  // exact: rows to and from each rank
  std::vector<std::size_t> block_, block_displ_;    // padded over the communicator: each block's floats, offsets
  std::vector<std::size_t> per_count_, per_count_displ_;  // each rank's counts per expert (per_ each), offsets
  std::vector<int64_t> local_host_;                 // exact: rows per local expert (Local::counts)
  // Peer memory: this rank's area [recv blocks | return blocks | recv flags | return flags] (blocks
  // of `stride` rows at p * stride), the peers' areas mapped here, and the device pointer arrays
  // of backend::EpPeers for the dispatch (into the peers' recv) and the return.
  struct Peers {
    bool on = false;
    int64_t stride = 0, max_cap = 0;
    void* area = nullptr;
    std::vector<void*> mapped;  // [rank]: the peers' areas (this rank's own: area)
    backend::Buffer<float*> blocks;    // [dispatch: ranks][return: ranks]
    backend::Buffer<int64_t*> flags;   // the same
    backend::Buffer<int64_t> seq;
    backend::Buffer<int32_t> done;
    const void* recv = nullptr;  // the receive blocks: rows of row_ bytes
    const void* back = nullptr;  // the return blocks: rows of res_row_ bytes
    int64_t* recv_flags = nullptr;
    int64_t* back_flags = nullptr;
  } peer_;
  // The padded dispatch's arguments between pack_padded and send_padded / received.
  struct Pending {
    const float* x = nullptr;
    const int32_t* order = nullptr;
    int64_t x_div = 1;
    const int64_t* counts = nullptr;
    int64_t cap_tokens = 0;
    int64_t* local_counts = nullptr;
  } pending_;
  // Results grow in rows of res_row_ bytes.
  void* grow_results(backend::Buffer<uint8_t>& b, int64_t rows);

  backend::Buffer<uint8_t> send_, recv_;  // rows of row_ bytes
  backend::Buffer<uint8_t> out_, back_;
  backend::Buffer<int32_t> order_, slot_row_;
  backend::Buffer<int64_t> count_send_, count_recv_, local_counts_;
};

}  // namespace dpa::model
