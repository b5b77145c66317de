// EpExchange: the exact and padded forms of the MoE dispatch and combine.
#include "model/ep_exchange.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <string>
#include <numeric>

#include "core/error.h"

namespace dpa::model {

namespace {

std::vector<std::size_t> displs_of(const std::vector<std::size_t>& counts) {
  std::vector<std::size_t> d(counts.size(), 0);
  std::exclusive_scan(counts.begin(), counts.end(), d.begin(), std::size_t{0});
  return d;
}

std::vector<std::size_t> scaled(const std::vector<std::size_t>& v, int64_t by) {
  std::vector<std::size_t> r(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) r[i] = v[i] * static_cast<std::size_t>(by);
  return r;
}

}  // namespace

EpExchange::EpExchange(backend::Backend& be, dist::Communicator& comm, int64_t n_experts, int64_t d,
                       uint64_t& epoch, DType results, DType rows)
    : be_(be),
      comm_(&comm),
      E_(n_experts),
      d_(d),
      ranks_(comm.size()),
      epoch_(epoch),
      res_dtype_(results),
      rows_dtype_(rows),
      res_row_(backend::ep_result_row_bytes("ep exchange", d, results)),
      row_(backend::ep_row_bytes("ep exchange", d, rows)) {
  if (ranks_ < 1 || n_experts % ranks_ != 0)
    throw Error(fmt::format("ep exchange: {} experts over {} ranks", n_experts, ranks_));
  per_ = n_experts / ranks_;
  per_count_.assign(static_cast<std::size_t>(ranks_), static_cast<std::size_t>(per_));
  per_count_displ_.resize(per_count_.size());
  for (std::size_t p = 0; p < per_count_.size(); ++p) per_count_displ_[p] = p * per_count_[p];
}

EpExchange::~EpExchange() {
  for (std::size_t r = 0; r < peer_.mapped.size(); ++r)
    if (peer_.mapped[r] && peer_.mapped[r] != peer_.area) be_.release_imported(peer_.mapped[r]);
  if (peer_.area) be_.release(peer_.area);
}

bool EpExchange::enable_peer_memory(int64_t max_cap_tokens, int64_t top_k, bool wanted,
                                    const AllGatherBytes& all_gather) {
  // What every rank sends: [can (1 byte)][host (64 bytes)][handle], the handle's size the same on
  // every rank of one backend kind.
  constexpr std::size_t kHost = 64;
  const int64_t stride = std::max<int64_t>(max_cap_tokens, 0) * std::min(top_k, per_) + 1;
  const std::size_t block_floats = static_cast<std::size_t>(ranks_ * stride * d_);
  const std::size_t bytes = 2 * block_floats * sizeof(float) + 2 * static_cast<std::size_t>(ranks_) * sizeof(int64_t);
  bool can = wanted && be_.supports_peer_memory() && max_cap_tokens > 0 && top_k > 0 &&
             per_ * static_cast<int64_t>(sizeof(int64_t)) <= static_cast<int64_t>(row_) &&
             ranks_ * stride <= INT32_MAX;
  std::vector<uint8_t> handle;
  if (can) {
    peer_.area = be_.alloc(bytes);
    be_.fill_zero(static_cast<char*>(peer_.area) + 2 * block_floats * sizeof(float),
                  2 * static_cast<std::size_t>(ranks_) * sizeof(int64_t));
    be_.synchronize();  // the flags are zero before any peer can write them
    try {
      handle = be_.export_memory(peer_.area);
    } catch (const Error&) {
      can = false;
    }
  }
  std::vector<uint8_t> mine(1 + kHost + 64, 0);
  mine[0] = can && handle.size() <= 64;
  const std::string& host = process_identity().host;
  std::copy_n(host.begin(), std::min(host.size(), kHost - 1), mine.begin() + 1);
  std::copy(handle.begin(), handle.begin() + static_cast<std::ptrdiff_t>(std::min<std::size_t>(handle.size(), 64)),
            mine.begin() + 1 + kHost);
  const std::vector<uint8_t> all = all_gather(mine);
  if (all.size() != mine.size() * static_cast<std::size_t>(ranks_))
    throw Error(fmt::format("ep exchange: gathered {} bytes from {} ranks", all.size(), ranks_));
  bool every = true;
  for (int r = 0; r < ranks_; ++r) {
    const uint8_t* rec = all.data() + static_cast<std::size_t>(r) * mine.size();
    every = every && rec[0] && std::equal(rec + 1, rec + 1 + kHost, mine.begin() + 1);
  }
  if (!every) {
    if (peer_.area) be_.release(peer_.area), peer_.area = nullptr;
    return false;
  }
  const int me = comm_->rank();
  peer_.mapped.assign(static_cast<std::size_t>(ranks_), nullptr);
  bool mapped = true;  // GPUs without peer access: the mapping fails, every rank falls back
  for (int r = 0; r < ranks_ && mapped; ++r) {
    const uint8_t* h = all.data() + static_cast<std::size_t>(r) * mine.size() + 1 + kHost;
    try {
      peer_.mapped[static_cast<std::size_t>(r)] =
          r == me ? peer_.area : be_.import_memory(std::vector<uint8_t>(h, h + handle.size()));
    } catch (const Error&) {
      mapped = false;
    }
  }
  const std::vector<uint8_t> all_mapped = all_gather({static_cast<uint8_t>(mapped)});
  if (std::find(all_mapped.begin(), all_mapped.end(), uint8_t{0}) != all_mapped.end()) {
    for (void* m : peer_.mapped)
      if (m && m != peer_.area) be_.release_imported(m);
    peer_.mapped.clear();
    be_.release(peer_.area), peer_.area = nullptr;
    return false;
  }
  // Area layout: recv blocks, return blocks, recv flags [source], return flags [source].
  auto recv_of = [&](int r) { return static_cast<float*>(peer_.mapped[static_cast<std::size_t>(r)]); };
  auto flags_of = [&](int r) { return reinterpret_cast<int64_t*>(recv_of(r) + 2 * block_floats); };
  // The receive blocks hold rows of row_ bytes, the return blocks rows of res_row_ bytes (bf16
  // rows fill half of their room).
  auto back_of = [&](int r) { return reinterpret_cast<char*>(recv_of(r) + block_floats); };
  std::vector<float*> blocks(2 * static_cast<std::size_t>(ranks_));
  std::vector<int64_t*> flags(blocks.size());
  for (int p = 0; p < ranks_; ++p) {
    const std::size_t mine = static_cast<std::size_t>(me * stride);
    blocks[static_cast<std::size_t>(p)] = reinterpret_cast<float*>(reinterpret_cast<char*>(recv_of(p)) + mine * row_);
    blocks[static_cast<std::size_t>(ranks_ + p)] = reinterpret_cast<float*>(back_of(p) + mine * res_row_);
    flags[static_cast<std::size_t>(p)] = flags_of(p) + me;
    flags[static_cast<std::size_t>(ranks_ + p)] = flags_of(p) + ranks_ + me;
  }
  peer_.blocks.ensure(be_, blocks.size());
  peer_.flags.ensure(be_, flags.size());
  be_.upload(peer_.blocks.data(), blocks.data(), blocks.size() * sizeof(float*));
  be_.upload(peer_.flags.data(), flags.data(), flags.size() * sizeof(int64_t*));
  peer_.seq.ensure(be_, 1);
  peer_.done.ensure(be_, 1);
  be_.fill_zero(peer_.seq.data(), sizeof(int64_t));
  be_.fill_zero(peer_.done.data(), sizeof(int32_t));
  peer_.recv = recv_of(me);
  peer_.back = back_of(me);
  peer_.recv_flags = flags_of(me);
  peer_.back_flags = flags_of(me) + ranks_;
  peer_.stride = stride, peer_.max_cap = max_cap_tokens;
  be_.synchronize();
  ++epoch_;
  peer_.on = true;
  return true;
}

template <typename T>
T* EpExchange::grow(backend::Buffer<T>& b, int64_t n) {
  const T* before = b.data();
  b.ensure(be_, static_cast<std::size_t>(std::max<int64_t>(n, 1)));
  if (b.data() != before) ++epoch_;
  return b.data();
}

void* EpExchange::grow_results(backend::Buffer<uint8_t>& b, int64_t rows) {
  return grow(b, rows * static_cast<int64_t>(res_row_));
}

void EpExchange::stage(const float* x, const int32_t* order, int64_t x_div, int64_t n_slots) {
  n_slots_ = n_slots;
  uint8_t* send = grow(send_, n_slots * static_cast<int64_t>(row_));
  be_.gather_rows_div(x, order, x_div, n_slots, d_, send, rows_dtype_);
}

EpExchange::Local EpExchange::dispatch(const int64_t* counts) {
  padded_ = false;
  const std::size_t R = static_cast<std::size_t>(ranks_);
  send_rows_.assign(R, 0), recv_rows_.assign(R, 0);
  for (int64_t e = 0; e < E_; ++e) send_rows_[static_cast<std::size_t>(e / per_)] += static_cast<std::size_t>(counts[e]);
  if (std::accumulate(send_rows_.begin(), send_rows_.end(), std::size_t{0}) != static_cast<std::size_t>(n_slots_))
    throw Error(fmt::format("ep exchange: the counts hold other than the {} slots staged", n_slots_));
  // Every rank's counts for my experts: [source][local expert].
  int64_t* d_send_counts = grow(count_send_, E_);
  be_.upload(d_send_counts, counts, static_cast<std::size_t>(E_) * sizeof(int64_t));
  int64_t* d_recv_counts = grow(count_recv_, E_);
  comm_->all_to_all_v(d_send_counts, per_count_.data(), per_count_displ_.data(), d_recv_counts, per_count_.data(),
                     per_count_displ_.data(), DType::i64);
  std::vector<int64_t> recv_counts(static_cast<std::size_t>(E_));
  be_.download(recv_counts.data(), d_recv_counts, recv_counts.size() * sizeof(int64_t));
  std::vector<int64_t> local(static_cast<std::size_t>(per_), 0);
  for (std::size_t p = 0; p < R; ++p)
    for (int64_t e = 0; e < per_; ++e) {
      const int64_t c = recv_counts[p * static_cast<std::size_t>(per_) + static_cast<std::size_t>(e)];
      if (c < 0) throw Error(fmt::format("moe: rank {} announced {} rows for local expert {}", p, c, e));
      recv_rows_[p] += static_cast<std::size_t>(c);
      local[static_cast<std::size_t>(e)] += c;
    }
  const std::size_t n_recv = std::accumulate(recv_rows_.begin(), recv_rows_.end(), std::size_t{0});
  uint8_t* recv = grow(recv_, static_cast<int64_t>(n_recv) * static_cast<int64_t>(row_));
  comm_->all_to_all_v(send_.data(), scaled(send_rows_, d_).data(), scaled(displs_of(send_rows_), d_).data(), recv,
                     scaled(recv_rows_, d_).data(), scaled(displs_of(recv_rows_), d_).data(), rows_dtype_);

  // Each local expert's rows, source by source: the order a stable sort by expert would give.
  std::vector<int64_t> next(static_cast<std::size_t>(per_));  // next position of each expert's run
  std::exclusive_scan(local.begin(), local.end(), next.begin(), int64_t{0});
  std::vector<int32_t> order(n_recv);
  int32_t row = 0;
  for (std::size_t p = 0; p < R; ++p)
    for (int64_t e = 0; e < per_; ++e)
      for (int64_t i = recv_counts[p * static_cast<std::size_t>(per_) + static_cast<std::size_t>(e)]; i > 0; --i)
        order[static_cast<std::size_t>(next[static_cast<std::size_t>(e)]++)] = row++;
  if (order_.ensure_headroom(be_, order.size())) ++epoch_;
  int32_t* d_order = order_.data();
  if (!order.empty()) be_.upload(d_order, order.data(), order.size() * sizeof(int32_t));
  local_host_ = std::move(local);
  res_rows_ = static_cast<int64_t>(n_recv);
  grow_results(out_, res_rows_);
  return Local{recv, rows_dtype_, d_order, local_host_.data(), static_cast<int64_t>(n_recv), 0};
}

void EpExchange::set_communicator(dist::Communicator& comm) {
  if (comm.size() != ranks_ || comm.rank() != comm_->rank())
    throw Error(fmt::format("ep exchange: a communicator of {} ranks (this one {}) for a group of {} (this one {})",
                            comm.size(), comm.rank(), ranks_, comm_->rank()));
  comm_ = &comm;
}

EpExchange::Local EpExchange::dispatch_padded(const float* x, const int32_t* order, int64_t x_div, int64_t n_slots,
                                              const int64_t* counts, int64_t cap_tokens, int64_t top_k,
                                              int64_t* local_counts) {
  pack_padded(x, order, x_div, n_slots, counts, cap_tokens, top_k, local_counts);
  send_padded();
  return received();
}

void EpExchange::pack_padded(const float* x, const int32_t* order, int64_t x_div, int64_t n_slots,
                             const int64_t* counts, int64_t cap_tokens, int64_t top_k, int64_t* local_counts) {
  padded_ = true;
  n_slots_ = n_slots;
  block_rows_ = cap_tokens * std::min(top_k, per_);
  pending_ = Pending{x, order, x_div, counts, cap_tokens, local_counts ? local_counts : grow(local_counts_, per_)};
  grow(slot_row_, n_slots);
  grow(count_recv_, E_);  // [source][local expert]
  if (peer_.on) {
    if (cap_tokens > peer_.max_cap)
      throw Error(fmt::format("ep exchange: blocks of {} tokens, peer memory holds {}", cap_tokens, peer_.max_cap));
    grow(order_, ranks_ * peer_.stride);
    res_rows_ = ranks_ * peer_.stride;
    grow_results(out_, res_rows_);
    return;  // the stores into the owners' memory are the exchange: send_padded
  }
  const int64_t R = ranks_, C = block_rows_;
  uint8_t* blocks = grow(send_, R * C * static_cast<int64_t>(row_));
  grow(recv_, R * C * static_cast<int64_t>(row_));
  grow(order_, R * C);
  res_rows_ = R * C;
  grow_results(out_, res_rows_);
  be_.moe_ep_pack(x, order, x_div, counts, R, per_, C, n_slots, d_, blocks, slot_row_.data(), rows_dtype_);
  block_.assign(static_cast<std::size_t>(R), static_cast<std::size_t>(C * d_)), block_displ_.resize(block_.size());
  for (std::size_t p = 0; p < block_.size(); ++p) block_displ_[p] = p * block_[p];
}

void EpExchange::send_padded() {
  if (!padded_) throw Error("ep exchange: send_padded without pack_padded");
  const Pending& p = pending_;
  if (peer_.on) {
    backend::EpPeers out{peer_.blocks.data(), peer_.flags.data(), peer_.seq.data(), peer_.done.data()};
    be_.moe_ep_pack_peers(p.x, p.order, p.x_div, p.counts, ranks_, per_, block_rows_, peer_.stride, n_slots_, d_, out,
                          slot_row_.data(), rows_dtype_);
    be_.moe_ep_unpack_peers(peer_.recv, peer_.recv_flags, peer_.seq.data(), ranks_, per_, block_rows_, peer_.stride,
                            d_, count_recv_.data(), p.local_counts, order_.data(), rows_dtype_);
    return;
  }
  comm_->group_start();  // the counts and the rows in one exchange
  comm_->all_to_all_v(p.counts, per_count_.data(), per_count_displ_.data(), count_recv_.data(), per_count_.data(),
                      per_count_displ_.data(), DType::i64);
  comm_->all_to_all_v(send_.data(), block_.data(), block_displ_.data(), recv_.data(), block_.data(),
                      block_displ_.data(), rows_dtype_);
  comm_->group_end();
}

EpExchange::Local EpExchange::received() {
  const Pending& p = pending_;
  if (peer_.on)
    return Local{peer_.recv, rows_dtype_, order_.data(), p.local_counts, ranks_ * peer_.stride,
                 ranks_ * p.cap_tokens};
  const int64_t R = ranks_, C = block_rows_;
  be_.moe_ep_unpack(count_recv_.data(), R, per_, C, p.local_counts, order_.data());
  return Local{recv_.data(), rows_dtype_, order_.data(), p.local_counts, R * C, R * p.cap_tokens};
}

EpExchange::Back EpExchange::combine(const int32_t* position) {
  send_back();
  return back(position);
}

void EpExchange::send_back() {
  if (padded_ && peer_.on) {
    backend::EpPeers out{peer_.blocks.data() + ranks_, peer_.flags.data() + ranks_, peer_.seq.data(),
                         peer_.done.data()};
    be_.moe_ep_return_peers(out_.data(), count_recv_.data(), ranks_, per_, block_rows_, peer_.stride, d_, out,
                            res_dtype_);
    be_.moe_ep_wait(peer_.back_flags, ranks_, peer_.seq.data());
  } else if (padded_) {
    // The dispatch's blocks, back the same way (the counts are values: floats there, results here).
    void* back = grow_results(back_, ranks_ * block_rows_);
    comm_->all_to_all_v(out_.data(), block_.data(), block_displ_.data(), back, block_.data(), block_displ_.data(),
                        res_dtype_);
  } else {
    // Rows come back in this rank's send order, i.e. sorted slot order.
    void* back = grow_results(back_, n_slots_);
    comm_->all_to_all_v(out_.data(), scaled(recv_rows_, d_).data(), scaled(displs_of(recv_rows_), d_).data(), back,
                        scaled(send_rows_, d_).data(), scaled(displs_of(send_rows_), d_).data(), res_dtype_);
  }
}

EpExchange::Back EpExchange::back(const int32_t* position) const {
  if (padded_ && peer_.on) return Back{peer_.back, slot_row_.data(), res_dtype_};
  if (padded_) return Back{back_.data(), slot_row_.data(), res_dtype_};
  return Back{back_.data(), position, res_dtype_};  // slot s's row is its sorted index, position[s]
}

}  // namespace dpa::model
