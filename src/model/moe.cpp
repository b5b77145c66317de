// The MoE layer across ranks: route locally, dispatch token rows to the ranks owning their
// experts (all_to_all_v over ep, counts exchanged first), run the local experts, combine back,
// weighted sum in top-k order + shared experts. With attn_tp > 1 the replica's ranks hold the
// same tokens, so each dispatches only its 1/attn_tp slice and the results are all-gathered.
#include <fmt/format.h>

#include <numeric>

#include "core/error.h"
#include "dist/communicator.h"
#include "model/forward.h"

namespace dpa::model {

namespace {

backend::GateParams gate_params(const ModelConfig& c, const std::vector<float>& bias) {
  backend::GateParams p;
  p.n_experts = c.n_routed_experts;
  p.top_k = c.num_experts_per_tok;
  p.n_group = c.n_group;
  p.topk_group = c.topk_group;
  p.scoring = c.scoring_func == "sigmoid" ? backend::Scoring::sigmoid : backend::Scoring::softmax;
  if (c.topk_method == "greedy")
    p.method = backend::TopkMethod::greedy;
  else if (c.topk_method == "group_limited_greedy")
    p.method = backend::TopkMethod::group_limited_greedy;
  else if (c.topk_method == "noaux_tc")
    p.method = backend::TopkMethod::noaux_tc;
  else
    throw Error(fmt::format("unsupported topk_method '{}'", c.topk_method));
  p.norm_topk_prob = c.norm_topk_prob;
  p.routed_scaling_factor = static_cast<float>(c.routed_scaling_factor);
  p.correction_bias = bias.empty() ? nullptr : bias.data();
  return p;
}

std::vector<std::size_t> displs_of(const std::vector<std::size_t>& counts) {
  std::vector<std::size_t> d(counts.size(), 0);
  std::exclusive_scan(counts.begin(), counts.end(), d.begin(), std::size_t{0});
  return d;
}

}  // namespace

void Model::moe(int64_t layer, const float* h, int64_t n, float* out) {
  const ModelConfig& c = config();
  const LayerWeights& lw = weights_.layers[static_cast<std::size_t>(layer)];
  const int64_t D = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok;
  const int tp = shard_.attn_tp_size, tp_rank = shard_.attn_tp_rank;
  const int ep = shard_.ep_size;
  const int64_t per_rank = E / ep;

  // This rank's token slice [b, e) of the replica's n tokens.
  auto slice_begin = [&](int r) { return n * r / tp; };
  const int64_t b = slice_begin(tp_rank), my_n = slice_begin(tp_rank + 1) - b;
  const float* hm = h + b * D;

  std::vector<float> router_logits(static_cast<std::size_t>(my_n * E));
  be_.linear(hm, my_n, lw.router, router_logits.data());
  std::vector<int32_t> ids(static_cast<std::size_t>(my_n * K));
  std::vector<float> weights(ids.size());
  if (my_n > 0)
    be_.moe_gate(router_logits.data(), my_n, gate_params(c, lw.correction_bias), ids.data(),
                 weights.data());

  // Slots (token, k) sorted by expert, which also groups them by owning rank.
  const int64_t n_slots = my_n * K;
  std::vector<int32_t> order(static_cast<std::size_t>(n_slots));
  std::vector<int64_t> expert_counts(static_cast<std::size_t>(E));
  be_.moe_sort(ids.data(), n_slots, E, order.data(), expert_counts.data());
  std::vector<int32_t> slot_token(order.size()), send_ids(order.size());
  for (int64_t j = 0; j < n_slots; ++j) {
    slot_token[j] = order[j] / static_cast<int32_t>(K);
    send_ids[j] = ids[order[j]];
  }
  std::vector<float> send(static_cast<std::size_t>(n_slots * D));
  be_.gather_rows(hm, slot_token.data(), n_slots, D, send.data());

  // Exchange row counts, then rows and their expert ids.
  std::vector<std::size_t> send_rows(ep, 0), recv_rows(ep, 0);
  for (int64_t e = 0; e < E; ++e) send_rows[static_cast<std::size_t>(e / per_rank)] += expert_counts[e];
  std::vector<float> recv;
  std::vector<int32_t> recv_ids;
  if (comms_.ep && ep > 1) {
    std::vector<std::size_t> ones(ep, 1), iota_d(ep);
    std::iota(iota_d.begin(), iota_d.end(), std::size_t{0});
    std::vector<int64_t> s64(send_rows.begin(), send_rows.end()), r64(ep);
    comms_.ep->all_to_all_v(s64.data(), ones.data(), iota_d.data(), r64.data(), ones.data(),
                            iota_d.data(), DType::i64);
    for (int p = 0; p < ep; ++p) recv_rows[p] = static_cast<std::size_t>(r64[p]);
    const auto sd = displs_of(send_rows), rd = displs_of(recv_rows);
    const std::size_t n_recv = rd.back() + recv_rows.back();
    recv_ids.resize(n_recv);
    comms_.ep->all_to_all_v(send_ids.data(), send_rows.data(), sd.data(), recv_ids.data(),
                            recv_rows.data(), rd.data(), DType::i32);
    std::vector<std::size_t> sc(ep), sdd(ep), rc(ep), rdd(ep);
    for (int p = 0; p < ep; ++p) {
      sc[p] = send_rows[p] * D, sdd[p] = sd[p] * D, rc[p] = recv_rows[p] * D, rdd[p] = rd[p] * D;
    }
    recv.resize(n_recv * D);
    comms_.ep->all_to_all_v(send.data(), sc.data(), sdd.data(), recv.data(), rc.data(), rdd.data(),
                            DType::f32);
  } else {
    recv = send;
    recv_ids = send_ids;
  }

  // Local experts, each on its received rows (grouped by a local sort).
  const int64_t n_recv = static_cast<int64_t>(recv_ids.size());
  const int64_t e0 = weights_.expert_begin(), n_local = weights_.n_local_experts();
  std::vector<int32_t> local_ids(recv_ids.size()), local_order(recv_ids.size());
  for (int64_t j = 0; j < n_recv; ++j) {
    local_ids[j] = recv_ids[j] - static_cast<int32_t>(e0);
    if (local_ids[j] < 0 || local_ids[j] >= n_local)
      throw Error(fmt::format("moe: received a row for expert {} outside this rank's [{}, {})",
                              recv_ids[j], e0, e0 + n_local));
  }
  std::vector<int64_t> local_counts(static_cast<std::size_t>(n_local));
  be_.moe_sort(local_ids.data(), n_recv, n_local, local_order.data(), local_counts.data());
  std::vector<float> expert_out(static_cast<std::size_t>(n_recv * D));
  int64_t pos = 0;
  for (int64_t e = 0; e < n_local; ++e) {
    const int64_t cnt = local_counts[e];
    if (cnt == 0) continue;
    std::vector<float> x(static_cast<std::size_t>(cnt * D)), y(x.size());
    be_.gather_rows(recv.data(), local_order.data() + pos, cnt, D, x.data());
    mlp(lw.experts[static_cast<std::size_t>(e)], x.data(), cnt, y.data());
    for (int64_t j = 0; j < cnt; ++j)
      std::copy_n(y.data() + j * D, D, expert_out.data() + static_cast<int64_t>(local_order[pos + j]) * D);
    pos += cnt;
  }

  // Combine: rows come back in this rank's send order, i.e. sorted slot order.
  std::vector<float> back(static_cast<std::size_t>(n_slots * D));
  if (comms_.ep && ep > 1) {
    const auto sd = displs_of(send_rows), rd = displs_of(recv_rows);
    std::vector<std::size_t> sc(ep), sdd(ep), rc(ep), rdd(ep);
    for (int p = 0; p < ep; ++p) {
      rc[p] = send_rows[p] * D, rdd[p] = sd[p] * D, sc[p] = recv_rows[p] * D, sdd[p] = rd[p] * D;
    }
    comms_.ep->all_to_all_v(expert_out.data(), sc.data(), sdd.data(), back.data(), rc.data(),
                            rdd.data(), DType::f32);
  } else {
    back = expert_out;
  }
  std::vector<float> by_slot(back.size());
  for (int64_t j = 0; j < n_slots; ++j)
    std::copy_n(back.data() + j * D, D, by_slot.data() + static_cast<int64_t>(order[j]) * D);
  std::vector<float> mine(static_cast<std::size_t>(my_n * D), 0.0f);
  be_.moe_combine(by_slot.data(), weights.data(), my_n, K, D, mine.data());
  if (lw.has_shared && my_n > 0) {
    std::vector<float> sh(mine.size());
    mlp(lw.shared, hm, my_n, sh.data());
    be_.add(mine.data(), sh.data(), my_n * D);
  }

  if (comms_.attn_tp && tp > 1) {
    std::vector<std::size_t> counts(tp), displs(tp);
    for (int r = 0; r < tp; ++r) {
      counts[r] = static_cast<std::size_t>((slice_begin(r + 1) - slice_begin(r)) * D);
      displs[r] = static_cast<std::size_t>(slice_begin(r) * D);
    }
    comms_.attn_tp->all_gather_v(mine.data(), mine.size(), out, counts.data(), displs.data(),
                                 DType::f32);
  } else {
    std::copy(mine.begin(), mine.end(), out);
  }
}

}  // namespace dpa::model
