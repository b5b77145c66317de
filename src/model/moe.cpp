// The MoE layer across ranks: route locally, dispatch token rows to the ranks owning their
// experts (all_to_all_v over ep, per-expert counts exchanged first), run the local experts, combine back,
// weighted sum in top-k order + shared experts. Rows move in backend memory; the routing
// bookkeeping (counts, slot indices) is done on the host: the MoE layer's synchronisation point,
// which the shared experts (and the token gather) overlap: they are issued between the sort and
// the wait for its counts. With attn_tp > 1 the replica's ranks hold the same tokens, so each
// dispatches only its 1/attn_tp slice and the results are all-gathered. Small steps may instead
// take the padded exchange (ForwardOptions::ep_padded_max_tokens): fixed-size blocks per peer and
// the counts exchanged in backend memory, so the layer never waits for the host; its blocks then
// travel on the backend's lane 1 while the shared experts run on lane 0. The layer is five stages
// (route, send, experts, return, finish), which the two-batch overlap interleaves (step_layers.cpp).
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

void Model::moe(int64_t layer, Micro& m, const PreNorm& pre, float* h, float* out) {
  moe_route(layer, m, pre, h, out);
  // The padded blocks travel on lane 1 while the shared experts run on lane 0 (in a row while
  // profiling: the phase marks follow one queue).
  if (m.moe.padded && !opts_.profile_phases) {
    const uint64_t sent = on_lane1([&] { moe_send(m); });
    moe_shared(m);
    be_.lane_wait(sent);
  } else {
    if (exchange_) moe_send(m);
    if (m.moe.padded) moe_shared(m);
  }
  moe_experts(m);
  if (exchange_) moe_return(m);
  moe_finish(m);
}

void Model::moe_route(int64_t layer, Micro& m, const PreNorm& pre, float* h, float* out) {
  const ModelConfig& c = config();
  const LayerWeights& lw = weights_.layers[static_cast<std::size_t>(layer)];
  const int64_t D = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok;
  const int tp = shard_.attn_tp_size;
  const bool distributed = exchange_;
  MoeStage& st = m.moe;
  st = MoeStage{};
  st.layer = layer, st.n = m.n, st.out = out;

  // This rank's token slice [b, b + my_n) of the micro-batch's n tokens.
  const Slice slice = my_slice(m);
  const int64_t b = slice.begin, my_n = slice.rows;
  float* hm = h + b * D;
  st.my_n = my_n, st.hm = hm;

  // Few tokens and every expert local: the counts stay in backend memory and every expert gets
  // `capacity` rows (a token picks distinct experts, so no count exceeds the tokens): no host
  // wait in the layer. The shared MLP then runs among the routed experts, as shared_pieces_
  // experts that every token picks with weight 1.
  st.fixed = !distributed && moe_fixed_tokens_ > 0 && my_n > 0 && my_n <= moe_fixed_tokens_;
  // With an exchange the padded form (ForwardOptions::ep_padded_max_tokens) does the same across
  // ranks: blocks of a size every rank knows (from ep_cap_tokens_, agreed at the step's start),
  // the counts exchanged in backend memory. Either way no host wait in the layer.
  st.padded = distributed && ep_cap_tokens_ > 0;
  const bool on_device = st.fixed || st.padded;
  const bool has_shared = lw.has_shared && my_n > 0;
  const int64_t S = st.fixed && has_shared ? shared_pieces_ : 0, KS = K + S;
  st.ks = KS;

  float* router_logits = scratch(router_logits_, my_n * E);
  // Fixed layers keep each layer's routing apart ([layer][row][K + shared pieces]) until
  // expert_counts() has read the padding rows' routing of the step.
  const int64_t ks_all = K + shared_pieces_;
  int32_t* ids = on_device ? scratch(m.gate_ids, c.num_hidden_layers * my_n * ks_all) + layer * my_n * ks_all
                           : scratch(m.gate_ids, my_n * KS);
  float* weights = scratch(m.gate_w, my_n * KS);
  st.weights = weights;
  mark("moe.route");
  // h from its pre-norm (every row: the attn_tp ranks hold the same), with the router's product
  // in the same call when this rank routes every row.
  const backend::Backend::LinearOut router_out[] = {{&lw.router, router_logits}};
  const float eps = static_cast<float>(c.rms_norm_eps);
  const bool all_rows = b == 0 && my_n == m.n;
  be_.norm_linear(pre.residual, pre.x, pre.w, m.n, eps, h,
                  all_rows ? std::span<const backend::Backend::LinearOut>(router_out)
                           : std::span<const backend::Backend::LinearOut>());
  if (!all_rows) be_.linear(hm, my_n, lw.router, router_logits);
  if (my_n > 0) {
    backend::GateParams gp = gate_params(c, bias_[static_cast<std::size_t>(layer)].data());
    gp.shared_slots = S;
    be_.moe_gate(router_logits, my_n, gp, ids, weights);
  }

  // Slots (token, k) sorted by expert, which also groups them by owning rank.
  const int64_t n_slots = my_n * KS;
  st.n_slots = n_slots;
  int32_t* order = scratch(m.order, n_slots);
  st.order = order;
  // Where each slot's result comes back from the exchange (local experts write slot order).
  int32_t* position = distributed && !st.padded ? scratch(m.position, n_slots) : nullptr;
  st.position = position;
  be_.moe_sort(ids, n_slots, E + S, order, position);
  // With every expert local the experts read each slot's token where it is (order[j] / KS) and
  // write its result at its slot, so no copy of the rows is made. The exact exchange stages the
  // rows in slot order now, so that the copy overlaps the counts' trip to the host.
  if (distributed && !st.padded) m.ex->stage(hm, order, KS, n_slots);
  // The shared experts need no routing: they run while the counts travel to the host. Their
  // output is where the routed results are then added: `out` itself unless the slices of attn_tp
  // ranks are gathered into it at the end.
  st.gather_tp = comms_.attn_tp && tp > 1;
  st.mine = st.gather_tp ? scratch(m.mine, my_n * D) : out;
  st.shared_apart = has_shared && S == 0;
  // The padded exchange runs the shared experts after its blocks leave (moe_shared), beside them.
  if (!st.padded) moe_shared(m);
  const std::size_t l = static_cast<std::size_t>(layer);
  if (on_device) {
    // Sized for every layer at once: it only grows at the first such layer ever, before any
    // layer of that step wrote into it.
    const int64_t stride = E + shared_pieces_;
    st.d_counts = scratch(m.d_expert_counts, c.num_hidden_layers * stride) + layer * stride;
    be_.moe_counts_to(st.d_counts);
    fixed_layers_[l] = st.padded ? 2 : 1, counts_on_device_ = true;
  } else {
    st.counts.assign(static_cast<std::size_t>(E), 0);
    be_.moe_counts(st.counts.data());
    for (int64_t e = 0; e < E; ++e) expert_counts_[l * static_cast<std::size_t>(E) + e] += st.counts[e];
    if (!distributed) add_expert_bytes(layer, st.counts.data(), E);
    if (slice.pad > 0) {  // the padding rows out of the statistics (the experts ran them)
      std::vector<int32_t> last(static_cast<std::size_t>(KS));
      be_.download(last.data(), ids + (my_n - 1) * KS, last.size() * sizeof(int32_t));
      for (int32_t e : last)
        if (e >= 0 && e < E) expert_counts_[static_cast<std::size_t>(layer * E + e)] -= slice.pad;
    }
  }
  if (st.padded) {
    // The padded exchange's blocks, and the counts kept per layer for the profile's expert bytes
    // (expert_counts() reads the routing side).
    const int64_t n_local = weights_.n_local_experts();
    m.ex->pack_padded(hm, order, KS, n_slots, st.d_counts, ep_cap_tokens_, K,
                      scratch(m.d_local_counts, c.num_hidden_layers * n_local) + layer * n_local);
  }
}

void Model::moe_shared(Micro& m) {
  MoeStage& st = m.moe;
  if (!st.shared_apart) return;
  mark("moe.shared");
  mlp(weights_.layers[static_cast<std::size_t>(st.layer)].shared, nullptr, st.hm, st.my_n, st.mine);
  // Back to the routing phase: the exact exchange's wait for the counts (an idle GPU, if the shared
  // experts were short); on the padded path, which profiles in a row, the send that follows.
  mark("moe.route");
}

uint64_t Model::on_lane1(const std::function<void()>& work) {
  struct LaneZero {  // whatever work() throws, ops go to lane 0 again
    backend::Backend& be;
    ~LaneZero() { be.set_lane(0); }
  } lane_zero{be_};
  const uint64_t ready = be_.lane_signal();
  be_.set_lane(1);
  be_.lane_wait(ready);
  work();
  return be_.lane_signal();
}

// The exchange to the experts' owners: the padded form's blocks, or the exact form, which waits
// for the counts exchanged.
void Model::moe_send(Micro& m) {
  mark("moe.dispatch");
  MoeStage& st = m.moe;
  if (st.padded) {
    m.ex->send_padded();
  } else {
    st.in = m.ex->dispatch(st.counts.data());
  }
}

void Model::moe_experts(Micro& m) {
  const ModelConfig& c = config();
  MoeStage& st = m.moe;
  const std::size_t l = static_cast<std::size_t>(st.layer);
  const int64_t D = c.hidden_size, E = c.n_routed_experts;
  const backend::WeightView *gate = expert_gate_[l].data(), *up = expert_up_[l].data(), *down = expert_down_[l].data();
  mark("moe.experts");
  if (!exchange_) {
    // Every expert is local: they read the tokens and write the results in slot order, in bf16
    // where the experts' down projections are bf16 (as such a model's checkpoint computes them:
    // half the bytes written and combined), in either form, so that a token's results do not
    // depend on the form its step took.
    const int64_t S = st.ks - c.num_experts_per_tok;
    const bool bf16 = bf16_results_ && down[0].dtype == DType::bf16;
    void* expert_out = bf16 ? static_cast<void*>(scratch(expert_out_bf16_, st.n_slots * D))
                            : static_cast<void*>(scratch(expert_out_, st.n_slots * D));
    const DType dt = bf16 ? DType::bf16 : DType::f32;
    if (st.fixed)
      be_.moe_experts_fixed(st.hm, st.order, st.ks, st.d_counts, E + S, (st.my_n + 15) / 16 * 16, st.n_slots, gate,
                            up, down, expert_out, dt, st.n_slots);
    else if (st.n_slots > 0)
      be_.moe_experts(st.hm, st.order, st.ks, st.counts.data(), E, gate, up, down, expert_out, dt, st.n_slots);
    st.back = expert_out, st.back_dtype = dt;
    return;
  }
  // Over the exchange the rows come in its rows' type and the results go back in its results' type
  // (bf16 as on one rank, where the experts are).
  const int64_t n_local = weights_.n_local_experts();
  EpExchange& ex = *m.ex;
  if (st.padded) {
    st.in = ex.received();
    be_.moe_experts_fixed(st.in.rows, st.in.order, 1, st.in.counts, n_local, st.in.capacity, st.n_slots, gate, up,
                          down, ex.results(), ex.results_dtype(), ex.result_rows(), st.in.dtype);
  } else {
    add_expert_bytes(st.layer, st.in.counts, n_local);
    if (st.in.n_rows > 0)
      be_.moe_experts(st.in.rows, st.in.order, 1, st.in.counts, n_local, gate, up, down, ex.results(),
                      ex.results_dtype(), ex.result_rows(), st.in.dtype);
  }
}

void Model::moe_return(Micro& m) {
  mark("moe.combine_a2a");
  m.ex->send_back();
}

void Model::moe_finish(Micro& m) {
  const ModelConfig& c = config();
  MoeStage& st = m.moe;
  const int64_t D = c.hidden_size;
  if (exchange_) {
    const EpExchange::Back b = m.ex->back(st.position);
    st.back = b.y, st.back_rows = b.rows, st.back_dtype = b.dtype;
  }
  mark("moe.combine");
  // Onto the shared experts' output when they ran apart; else the sum is all (no zero fill).
  be_.moe_combine(st.back, st.back_rows, st.weights, st.my_n, st.ks, D, st.mine, st.shared_apart, st.back_dtype);

  if (st.gather_tp) {
    mark("moe.gather_tp");
    const int tp = shard_.attn_tp_size;
    std::vector<std::size_t> counts(tp), displs(tp);
    for (int r = 0; r < tp; ++r) {
      counts[r] = static_cast<std::size_t>((slice_begin(st.n, r + 1) - slice_begin(st.n, r)) * D);
      displs[r] = static_cast<std::size_t>(slice_begin(st.n, r) * D);
    }
    comms_.attn_tp->all_gather_v(st.mine, static_cast<std::size_t>(st.my_n * D), st.out, counts.data(),
                                 displs.data(), DType::f32);
  }
  st.layer = -1;
}

}  // namespace dpa::model
