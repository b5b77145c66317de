// EpExchange: the exact and padded forms of the MoE dispatch and combine.
#include "model/ep_exchange.h"

#include <fmt/format.h>

#include <algorithm>
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
                       uint64_t& epoch)
    : be_(be), comm_(comm), E_(n_experts), d_(d), ranks_(comm.size()), epoch_(epoch) {
  if (ranks_ < 1 || n_experts % ranks_ != 0)
    throw Error(fmt::format("ep exchange: {} experts over {} ranks", n_experts, ranks_));
  per_ = n_experts / ranks_;
}

template <typename T>
T* EpExchange::grow(backend::Buffer<T>& b, int64_t n) {
  const T* before = b.data();
  b.ensure(be_, static_cast<std::size_t>(std::max<int64_t>(n, 1)));
  if (b.data() != before) ++epoch_;
  return b.data();
}

void EpExchange::stage(const float* x, const int32_t* order, int64_t x_div, int64_t n_slots) {
  n_slots_ = n_slots;
  float* send = grow(send_, n_slots * d_);
  be_.gather_rows_div(x, order, x_div, n_slots, d_, send);
}

EpExchange::Local EpExchange::dispatch(const int64_t* counts) {
  padded_ = false;
  const std::size_t R = static_cast<std::size_t>(ranks_);
  send_rows_.assign(R, 0), recv_rows_.assign(R, 0);
  for (int64_t e = 0; e < E_; ++e) send_rows_[static_cast<std::size_t>(e / per_)] += static_cast<std::size_t>(counts[e]);
  if (std::accumulate(send_rows_.begin(), send_rows_.end(), std::size_t{0}) != static_cast<std::size_t>(n_slots_))
    throw Error(fmt::format("ep exchange: the counts hold other than the {} slots staged", n_slots_));
  // Every rank's counts for my experts: [source][local expert].
  std::vector<std::size_t> per(R, static_cast<std::size_t>(per_)), per_displ(R);
  for (std::size_t p = 0; p < R; ++p) per_displ[p] = p * static_cast<std::size_t>(per_);
  int64_t* d_send_counts = grow(count_send_, E_);
  be_.upload(d_send_counts, counts, static_cast<std::size_t>(E_) * sizeof(int64_t));
  int64_t* d_recv_counts = grow(count_recv_, E_);
  comm_.all_to_all_v(d_send_counts, per.data(), per_displ.data(), d_recv_counts, per.data(), per_displ.data(),
                     DType::i64);
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
  float* recv = grow(recv_, static_cast<int64_t>(n_recv) * d_);
  comm_.all_to_all_v(send_.data(), scaled(send_rows_, d_).data(), scaled(displs_of(send_rows_), d_).data(), recv,
                     scaled(recv_rows_, d_).data(), scaled(displs_of(recv_rows_), d_).data(), DType::f32);

  // Each local expert's rows, source by source: the order a stable sort by expert would give.
  std::vector<int64_t> next(static_cast<std::size_t>(per_));  // next position of each expert's run
  std::exclusive_scan(local.begin(), local.end(), next.begin(), int64_t{0});
  std::vector<int32_t> order(n_recv);
  int32_t row = 0;
  for (std::size_t p = 0; p < R; ++p)
    for (int64_t e = 0; e < per_; ++e)
      for (int64_t i = recv_counts[p * static_cast<std::size_t>(per_) + static_cast<std::size_t>(e)]; i > 0; --i)
        order[static_cast<std::size_t>(next[static_cast<std::size_t>(e)]++)] = row++;
  int32_t* d_order = grow(order_, static_cast<int64_t>(order.size() + order.size() / 2 + 16));
  if (!order.empty()) be_.upload(d_order, order.data(), order.size() * sizeof(int32_t));
  local_host_ = std::move(local);
  grow(out_, static_cast<int64_t>(n_recv) * d_);
  return Local{recv, d_order, local_host_.data(), static_cast<int64_t>(n_recv), 0};
}

EpExchange::Local EpExchange::dispatch_padded(const float* x, const int32_t* order, int64_t x_div, int64_t n_slots,
                                              const int64_t* counts, int64_t cap_tokens, int64_t top_k,
                                              int64_t* local_counts) {
  padded_ = true;
  n_slots_ = n_slots;
  block_rows_ = cap_tokens * std::min(top_k, per_);
  const int64_t R = ranks_, C = block_rows_;
  float* blocks = grow(send_, R * C * d_);
  int32_t* slot_row = grow(slot_row_, n_slots);
  be_.moe_ep_pack(x, order, x_div, counts, R, per_, C, n_slots, d_, blocks, slot_row);
  std::vector<std::size_t> per(static_cast<std::size_t>(R), static_cast<std::size_t>(per_)), per_displ(per.size());
  std::vector<std::size_t> block(per.size(), static_cast<std::size_t>(C * d_)), block_displ(per.size());
  for (std::size_t p = 0; p < per.size(); ++p) per_displ[p] = p * per[p], block_displ[p] = p * block[p];
  int64_t* d_recv_counts = grow(count_recv_, E_);  // [source][local expert]
  float* recv = grow(recv_, R * C * d_);
  comm_.group_start();  // the counts and the rows in one exchange
  comm_.all_to_all_v(counts, per.data(), per_displ.data(), d_recv_counts, per.data(), per_displ.data(), DType::i64);
  comm_.all_to_all_v(blocks, block.data(), block_displ.data(), recv, block.data(), block_displ.data(), DType::f32);
  comm_.group_end();
  if (!local_counts) local_counts = grow(local_counts_, per_);
  int32_t* local_order = grow(order_, R * C);
  be_.moe_ep_unpack(d_recv_counts, R, per_, C, local_counts, local_order);
  grow(out_, R * C * d_);
  return Local{recv, local_order, local_counts, R * C, R * cap_tokens};
}

EpExchange::Back EpExchange::combine(const int32_t* position) {
  if (padded_) {
    const int64_t C = block_rows_;
    std::vector<std::size_t> block(static_cast<std::size_t>(ranks_), static_cast<std::size_t>(C * d_)),
        block_displ(block.size());
    for (std::size_t p = 0; p < block.size(); ++p) block_displ[p] = p * block[p];
    float* back = grow(back_, ranks_ * C * d_);
    comm_.all_to_all_v(out_.data(), block.data(), block_displ.data(), back, block.data(), block_displ.data(),
                       DType::f32);
    return Back{back, slot_row_.data()};
  }
  // Rows come back in this rank's send order, i.e. sorted slot order: slot s's is position[s].
  float* back = grow(back_, n_slots_ * d_);
  comm_.all_to_all_v(out_.data(), scaled(recv_rows_, d_).data(), scaled(displs_of(recv_rows_), d_).data(), back,
                     scaled(send_rows_, d_).data(), scaled(displs_of(send_rows_), d_).data(), DType::f32);
  return Back{back, position};
}

}  // namespace dpa::model
