// How a step's layers run: op by op (layers), as two micro-batches whose exchanges overlap the
// other's compute (layers_tbo, the two-batch overlap), or from a recorded graph (layers_graphed).
#include <fmt/format.h>

#include <algorithm>
#include <string>

#include "core/log.h"
#include "model/forward.h"

namespace dpa::model {

void Model::layers(int64_t n, float* residual, float* h, float* out) {
  if (n_micro_ == 2) return layers_tbo(residual, h, out);
  Micro& m = micro_[0];
  const ModelConfig& c = config();
  mark("embed");
  be_.embedding(weights_.embed, d_ids_.data(), n, residual);
  // A layer's MLP output joins the residual in the next layer's input norm (add_rms_norm: the
  // same sum, one launch fewer), the last one's by itself. Each norm runs in its sub-layer's
  // first projection call (PreNorm).
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = weights_.layers[static_cast<std::size_t>(l)];
    mark("attention.qkv");
    attention(l, m, PreNorm{l == 0 ? nullptr : residual, l == 0 ? residual : out, lw.input_norm}, h, out);
    const PreNorm post{residual, out, lw.post_attention_norm};
    if (lw.moe) {
      moe(l, m, post, h, out);
    } else {
      mark("mlp");
      mlp(lw.dense, &post, h, n, out);
    }
  }
  if (c.num_hidden_layers > 0) be_.add(residual, out, n * c.hidden_size);
}

// Two micro-batches, the step's rows [0, T) and [T, N), interleaved so that one's exchange runs on
// lane 1 while the other computes on lane 0. A MoE layer, then the next layer's start:
//   lane 0: attention A, route A | attention B, route B | experts A | experts B | combine A, attention A'
//   lane 1:                      | send A               | send B    | back A    | back B
// Lane 1 takes the exchanges in the same order on every rank (send A, send B, back A, back B), so
// collectives match; each waits for the lane-0 work it moves, and lane 0 waits for each before
// using what came.
void Model::layers_tbo(float* residual, float* h, float* out) {
  const ModelConfig& c = config();
  const int64_t D = c.hidden_size;
  uint64_t sent[2] = {0, 0}, returned[2] = {0, 0};
  bool pending[2] = {false, false};  // a MoE layer's results still to combine
  auto finish = [&](int i) {
    if (!pending[i]) return;
    be_.lane_wait(returned[i]);
    moe_finish(micro_[i]);
    pending[i] = false;
  };
  be_.embedding(weights_.embed, d_ids_.data(), step_rows_, residual);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const LayerWeights& lw = weights_.layers[static_cast<std::size_t>(l)];
    for (int i = 0; i < 2; ++i) {
      Micro& m = micro_[i];
      finish(i);
      float *r = residual + m.row0 * D, *hm = h + m.row0 * D, *o = out + m.row0 * D;
      attention(l, m, PreNorm{l == 0 ? nullptr : r, l == 0 ? r : o, lw.input_norm}, hm, o);
      const PreNorm post{r, o, lw.post_attention_norm};
      if (lw.moe) {
        moe_route(l, m, post, hm, o);
        sent[i] = on_lane1([&] { moe_send(m); });
        moe_shared(m);  // beside its own blocks' trip
      } else {
        mlp(lw.dense, &post, hm, m.n, o);
      }
    }
    if (!lw.moe) continue;
    for (int i = 0; i < 2; ++i) {
      be_.lane_wait(sent[i]);
      moe_experts(micro_[i]);
      returned[i] = on_lane1([&] { moe_return(micro_[i]); });
      pending[i] = true;
    }
  }
  finish(0), finish(1);
  if (c.num_hidden_layers > 0) be_.add(residual, out, step_rows_ * D);
}

bool Model::decode_queued(int64_t n) const {
  if (!any_moe_) return true;
  if (exchange_) return opts_.ep_padded_max_tokens > 0 && (n + 15) / 16 * 16 <= opts_.ep_padded_max_tokens;
  return n <= moe_fixed_tokens_;
}

bool Model::graphable(int64_t n) const {
  if (!graphs_ || opts_.profile_phases || n <= 0 || !decode_contiguous_) return false;
  if (comms_.attn_tp && comms_.attn_tp->size() > 1) return false;
  // Across ranks: the padded exchange (no host wait) within the graphs' range. The ranks need
  // not record alike: a recording holds the same collectives as the ops it replaces.
  if (exchange_) return !any_moe_ || ep_cap_tokens_ > 0;
  // Every MoE layer must keep its routing counts on the device (no host wait inside the step).
  return !any_moe_ || n <= moe_fixed_tokens_;
}

void Model::drop_graphs() {
  if (graphs_map_.empty()) return;
  be_.synchronize();  // no replay still running
  for (auto& [key, r] : graphs_map_) be_.drop_graph(r.graph);
  graphs_map_.clear();
}

void Model::layers_graphed(int64_t n, float* residual, float* h, float* out) {
  // A key is a batch bucket and a context bucket. Contexts grow, so the recordings of a served
  // load's earlier contexts stop being replayed: the least recently replayed goes first, and the
  // cap bounds what the recordings (~1,000 kernel nodes each for V2-Lite) hold.
  constexpr std::size_t kMaxGraphs = 48;
  const GraphKey key{n, decode_max_ctx_, ep_cap_tokens_, n_micro_, scratch_epoch_, be_.workspace_epoch(), cache_.get()};
  // Recordings that address moved buffers: all of them or none (the epochs are global).
  if (!graphs_map_.empty()) {
    const GraphKey& k = graphs_map_.begin()->first;
    if (k.scratch_epoch != key.scratch_epoch || k.workspace_epoch != key.workspace_epoch || k.cache != key.cache)
      drop_graphs();
  }
  auto run = [&](void* g) {  // the graph, then the host state layers() leaves: counts on the device
    be_.replay(g);
    for (std::size_t l = 0; l < weights_.layers.size(); ++l)
      if (weights_.layers[l].moe) fixed_layers_[l] = 1, counts_on_device_ = true;
  };
  if (auto it = graphs_map_.find(key); it != graphs_map_.end()) {
    it->second.used = ++graph_clock_;
    run(it->second.graph);
    ++graph_stats_.replayed;
    return;
  }
  // Record only shapes that ran as they are in the previous step: it allocated whatever they
  // need (or the epochs would differ), so nothing is allocated while recording.
  const bool record = last_graph_key_ == key;
  last_graph_key_ = key;
  if (!record) return layers(n, residual, h, out);
  if (graphs_map_.size() >= kMaxGraphs) {  // the least recently replayed makes room
    auto lru = std::min_element(graphs_map_.begin(), graphs_map_.end(),
                                [](const auto& a, const auto& b) { return a.second.used < b.second.used; });
    be_.synchronize();  // not still running
    be_.drop_graph(lru->second.graph);
    graphs_map_.erase(lru);
  }
  auto give_up = [&](const std::string& why) {
    ++graph_stats_.failed;
    graphs_ = false;
    log::warn("decode graphs off: {}; the ops run one by one", why);
    layers(n, residual, h, out);  // nothing recorded ran
  };
  if (!be_.capture_begin()) return give_up(fmt::format("the {} backend records no graphs", be_.name()));
  try {
    layers(n, residual, h, out);
  } catch (const std::exception& e) {
    be_.drop_graph(be_.capture_end());
    return give_up(fmt::format("recording a step of {} tokens failed ({})", n, e.what()));
  }
  void* g = be_.capture_end();
  if (!g || scratch_epoch_ != key.scratch_epoch || be_.workspace_epoch() != key.workspace_epoch) {
    be_.drop_graph(g);
    return give_up(fmt::format("recording a step of {} tokens failed", n));
  }
  graphs_map_.emplace(key, Recording{g, ++graph_clock_});
  ++graph_stats_.recorded;
  run(g);
}

}  // namespace dpa::model
