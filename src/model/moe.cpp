// The MoE layer across ranks: route locally, dispatch token rows to the ranks owning their
// experts (all_to_all_v over ep, per-expert counts exchanged first), run the local experts, combine back,
// weighted sum in top-k order + shared experts. Rows move in backend memory; the routing
// bookkeeping (counts, slot indices) is done on the host: the MoE layer's synchronisation point,
// which the shared experts (and the token gather) overlap: they are issued between the sort and
// the wait for its counts. With attn_tp > 1 the replica's ranks hold the same tokens, so each
// dispatches only its 1/attn_tp slice and the results are all-gathered. Small steps may instead
// take the padded exchange (ForwardOptions::ep_padded_max_tokens): fixed-size blocks per peer and
// the counts exchanged in backend memory, so the layer never waits for the host.
#include <fmt/format.h>

#include <algorithm>

#include "core/error.h"
#include "dist/communicator.h"
#include "model/forward.h"

namespace dpa::model {

namespace {

backend::GateParams gate_params(const ModelConfig& c, const float* bias) {
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
  p.correction_bias = bias;
  return p;
}

}  // namespace

void Model::moe(int64_t layer, const float* h, int64_t n, float* out) {
  const ModelConfig& c = config();
  const LayerWeights& lw = weights_.layers[static_cast<std::size_t>(layer)];
  const int64_t D = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok;
  const int tp = shard_.attn_tp_size;
  const int ep = shard_.ep_size;
  const int64_t per_rank = E / ep;
  const bool distributed = comms_.ep && ep > 1;

  // This rank's token slice [b, b + my_n) of the replica's n tokens.
  const Slice slice = my_slice(n);
  const int64_t b = slice.begin, my_n = slice.rows;
  const float* hm = h + b * D;

  // Few tokens and every expert local: the counts stay in backend memory and every expert gets
  // `capacity` rows (a token picks distinct experts, so no count exceeds the tokens): no host
  // wait in the layer. The shared MLP then runs among the routed experts, as shared_pieces_
  // experts that every token picks with weight 1.
  const bool fixed = !distributed && moe_fixed_tokens_ > 0 && my_n > 0 && my_n <= moe_fixed_tokens_;
  // With ep > 1 the padded exchange (ForwardOptions::ep_padded_max_tokens) does the same across
  // ranks: blocks of a size every rank knows (from ep_cap_tokens_, agreed at the step's start),
  // the counts exchanged in backend memory. Either way no host wait in the layer.
  const bool padded = distributed && ep_cap_tokens_ > 0;
  const bool on_device = fixed || padded;
  const bool has_shared = lw.has_shared && my_n > 0;
  const int64_t S = fixed && has_shared ? shared_pieces_ : 0, KS = K + S;

  float* router_logits = scratch(router_logits_, my_n * E);
  // Fixed layers keep each layer's routing apart ([layer][row][K + shared pieces]) until
  // expert_counts() has read the padding rows' routing of the step.
  const int64_t ks_all = K + shared_pieces_;
  int32_t* ids = on_device ? scratch(gate_ids_, c.num_hidden_layers * my_n * ks_all) + layer * my_n * ks_all
                           : scratch(gate_ids_, my_n * KS);
  float* weights = scratch(gate_w_, my_n * KS);
  mark("moe.route");
  be_.linear(hm, my_n, lw.router, router_logits);
  if (my_n > 0) {
    backend::GateParams gp = gate_params(c, bias_[static_cast<std::size_t>(layer)].data());
    gp.shared_slots = S;
    be_.moe_gate(router_logits, my_n, gp, ids, weights);
  }

  // Slots (token, k) sorted by expert, which also groups them by owning rank.
  const int64_t n_slots = my_n * KS;
  int32_t* order = scratch(order_, n_slots);
  // Where each slot's result comes back from the exchange (local experts write slot order).
  int32_t* position = distributed && !padded ? scratch(position_, n_slots) : nullptr;
  be_.moe_sort(ids, n_slots, E + S, order, position);
  // With every expert local the experts read each slot's token where it is (order[j] / KS) and
  // write its result at its slot, so no copy of the rows is made. The exact exchange stages the
  // rows in slot order now, so that the copy overlaps the counts' trip to the host.
  if (distributed && !padded) ex_->stage(hm, order, KS, n_slots);
  // The shared experts need no routing: they run while the counts travel to the host. Their
  // output is where the routed results are then added: `out` itself unless the slices of attn_tp
  // ranks are gathered into it at the end.
  const bool gather_tp = comms_.attn_tp && tp > 1;
  float* mine = gather_tp ? scratch(mine_, my_n * D) : out;
  const bool shared_apart = has_shared && S == 0;
  if (shared_apart) {
    mark("moe.shared");
    mlp(lw.shared, hm, my_n, mine);
    mark("moe.route");  // the wait for the counts (an idle GPU, if the shared experts were short)
  }
  const std::size_t l = static_cast<std::size_t>(layer);
  std::vector<int64_t> expert_counts(static_cast<std::size_t>(E));
  int64_t* d_counts = nullptr;  // on_device: this layer's counts in backend memory
  if (on_device) {
    // Sized for every layer at once: it only grows at the first such layer ever, before any
    // layer of that step wrote into it.
    const int64_t stride = E + shared_pieces_;
    d_counts = scratch(d_expert_counts_, c.num_hidden_layers * stride) + layer * stride;
    be_.moe_counts_to(d_counts);
    fixed_layers_[l] = padded ? 2 : 1, counts_on_device_ = true;
  } else {
    be_.moe_counts(expert_counts.data());
    std::copy(expert_counts.begin(), expert_counts.end(), expert_counts_.begin() + layer * E);
    if (!distributed) add_expert_bytes(layer, expert_counts.data(), E);
    if (slice.pad > 0) {  // the padding rows out of the statistics (the experts ran them)
      std::vector<int32_t> last(static_cast<std::size_t>(KS));
      be_.download(last.data(), ids + (my_n - 1) * KS, last.size() * sizeof(int32_t));
      for (int32_t e : last)
        if (e >= 0 && e < E) expert_counts_[static_cast<std::size_t>(layer * E + e)] -= slice.pad;
    }
  }
  const backend::WeightView *gate = expert_gate_[l].data(), *up = expert_up_[l].data(), *down = expert_down_[l].data();
  const float* back = nullptr;       // the expert results the combine reads
  const int32_t* back_rows = nullptr;  // slot s's result is back[back_rows[s]] (null: back[s])
  if (!distributed) {
    // Every expert is local: they read the tokens and write the results in slot order.
    float* expert_out = scratch(expert_out_, n_slots * D);
    mark("moe.experts");
    if (fixed)
      be_.moe_experts_fixed(hm, order, KS, d_counts, E + S, (my_n + 15) / 16 * 16, n_slots, gate, up, down, expert_out);
    else if (n_slots > 0)
      be_.moe_experts(hm, order, KS, expert_counts.data(), E, gate, up, down, expert_out);
    back = expert_out;
  } else {
    // Dispatch (model/ep_exchange.h): the exact form waits for the counts exchanged; the padded
    // one sends fixed-size blocks with the counts beside them, kept per layer for the profile's
    // expert bytes (expert_counts() reads the routing side).
    mark("moe.dispatch");
    const int64_t n_local = weights_.n_local_experts();
    if (n_local != per_rank) throw Error(fmt::format("moe: {} local experts, expected {}", n_local, per_rank));
    const EpExchange::Local in =
        padded ? ex_->dispatch_padded(hm, order, KS, n_slots, d_counts, ep_cap_tokens_, K,
                                      scratch(d_local_counts_, c.num_hidden_layers * n_local) + layer * n_local)
               : ex_->dispatch(expert_counts.data());
    mark("moe.experts");
    if (padded) {
      be_.moe_experts_fixed(in.rows, in.order, 1, in.counts, n_local, in.capacity, n_slots, gate, up, down,
                            ex_->results());
    } else {
      add_expert_bytes(layer, in.counts, n_local);
      if (in.n_rows > 0) be_.moe_experts(in.rows, in.order, 1, in.counts, n_local, gate, up, down, ex_->results());
    }
    mark("moe.combine_a2a");
    const EpExchange::Back b = ex_->combine(position);
    back = b.y, back_rows = b.rows;
  }
  mark("moe.combine");
  if (!shared_apart) be_.fill_zero(mine, static_cast<std::size_t>(my_n * D) * sizeof(float));
  be_.moe_combine(back, back_rows, weights, my_n, KS, D, mine);  // adds: shared + routed

  if (gather_tp) {
    mark("moe.gather_tp");
    std::vector<std::size_t> counts(tp), displs(tp);
    for (int r = 0; r < tp; ++r) {
      counts[r] = static_cast<std::size_t>((slice_begin(n, r + 1) - slice_begin(n, r)) * D);
      displs[r] = static_cast<std::size_t>(slice_begin(n, r) * D);
    }
    comms_.attn_tp->all_gather_v(mine, static_cast<std::size_t>(my_n * D), out, counts.data(), displs.data(),
                                 DType::f32);
  }
}

}  // namespace dpa::model
