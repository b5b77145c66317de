// Model construction, weights, the step's inputs and micro-batches, dense MLP and LM head (the layer
// loop: step_layers.cpp; launch / collect and the draws' way to the host: draws.cpp).
#include "model/forward.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>

#include "core/error.h"
#include "core/log.h"
#include "model/rope.h"

namespace dpa::model {

namespace {

// An environment switch of 0 or 1; unset: dflt.
bool env_switch(const char* name, bool dflt) {
  const char* v = std::getenv(name);
  if (!v) return dflt;
  if (std::string_view(v) != "0" && std::string_view(v) != "1")
    throw Error(fmt::format("{}='{}': 0 or 1", name, v));
  return *v == '1';
}

}  // namespace

Model::Model(const Checkpoint& ckpt, backend::Backend& be, const ShardSpec& shard,
             ParallelComms comms, const ForwardOptions& opts)
    : weights_(ckpt, shard, opts.bf16_weights), be_(be), shard_(shard), comms_(comms), opts_(opts) {
  const int tp = comms.attn_tp ? comms.attn_tp->size() : 1;
  const int ep = comms.ep ? comms.ep->size() : 1;
  if (tp != shard.attn_tp_size || ep != shard.ep_size)
    throw Error(fmt::format("model: shard sizes attn_tp {} ep {} differ from the communicators' {} {}",
                            shard.attn_tp_size, shard.ep_size, tp, ep));
  const std::vector<float> inv_freq = rope_inv_freq(ckpt.config());
  rope_.inv_freq = upload(inv_freq_, inv_freq);
  rope_.dim = ckpt.config().qk_rope_head_dim;
  rope_.attention_scaling = rope_attention_scaling(ckpt.config());
  if (opts_.cuda_graph_max_tokens < 0 || opts_.cuda_graph_max_tokens > (1 << 20))
    throw Error(fmt::format("decode graphs up to {} tokens: not a token count in [0, 1048576]",
                            opts_.cuda_graph_max_tokens));
  // Graphs need a step with no host wait inside: on a single-rank replica the fixed-capacity
  // experts give that, so both cover the same steps.
  if (opts_.ep_padded_max_tokens < 0 || opts_.ep_padded_max_tokens > (1 << 20))
    throw Error(fmt::format("padded exchange up to {} tokens: not a token count in [0, 1048576]",
                            opts_.ep_padded_max_tokens));
  if (opts_.two_batch_overlap_min_tokens < 0)
    throw Error(fmt::format("two-batch overlap from {} tokens: not a token count", opts_.two_batch_overlap_min_tokens));
  exchange_ = ep > 1 || (opts_.ep_self_exchange && comms.ep != nullptr);
  if (!exchange_) opts_.ep_padded_max_tokens = 0;
  if (tp == 1 && !exchange_ && opts_.cuda_graph_max_tokens > 0)
    graphs_ = true, moe_fixed_tokens_ = opts_.cuda_graph_max_tokens;
  // Across ranks the padded exchange gives that (the step's collectives then have sizes fixed by
  // its agreed capacity).
  if (tp == 1 && exchange_ && opts_.cuda_graph_max_tokens > 0 && opts_.ep_padded_max_tokens > 0) graphs_ = true;
  // The two-batch overlap interleaves micro-batches around the padded exchange, one slice a rank;
  // where it cannot, it is off, said once an EP group (the rule lives here, not in the callers).
  if (opts_.two_batch_overlap_min_tokens > 0) {
    const char* off = tp > 1                             ? "attention is sliced over attn_tp ranks; it needs --dp equal to the world"
                      : !exchange_                       ? "with --ep 1 there is no exchange to overlap"
                      : opts_.ep_padded_max_tokens <= 0 ? "it needs the padded exchange"
                      : opts_.profile_phases             ? "the phase profile times the layers one after another"
                                                         : nullptr;
    if (off) {
      if (shard.ep_rank == 0 && shard.attn_tp_rank == 0) log::warn("two-batch overlap: no step is split ({})", off);
      opts_.two_batch_overlap_min_tokens = 0;
    }
  }
  if (const char* v = std::getenv("DPA_PROFILE_DECODE_STEP")) {  // a profiler's window: see forward()
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    if (!*v || *end || n < 1) throw Error(fmt::format("DPA_PROFILE_DECODE_STEP='{}': not a step number from 1", v));
    profile_decode_step_ = n;
  }
  if (const char* v = std::getenv("DPA_MOE_FIXED_TOKENS")) {
    char* end = nullptr;
    const long long n = std::strtoll(v, &end, 10);
    if (!*v || *end || n < 0 || n > (1 << 20))
      throw Error(fmt::format("DPA_MOE_FIXED_TOKENS='{}': not a token count in [0, 1048576]", v));
    moe_fixed_tokens_ = n;
  }
  // A/B switches (0: q and kv_a projected apart; the experts' results kept in f32).
  fuse_q_kv_a_ = env_switch("DPA_FUSE_Q_KV_A", fuse_q_kv_a_);
  bf16_results_ = env_switch("DPA_MOE_BF16_RESULTS", bf16_results_);
  bf16_rows_ = env_switch("DPA_EP_BF16_ROWS", be_.bf16_expert_rows());
  prepare_weights();
  const ExchangeTypes ex_types = exchange_ ? exchange_types() : ExchangeTypes{};
  if (exchange_ && comms_.ep->rank() == 0 && shard.attn_tp_rank == 0)
    log::info("ep exchange: rows out in {}, results back in {}", dtype_name(ex_types.rows),
              dtype_name(ex_types.results));
  // One exchange a micro-batch: the second only for the two-batch overlap.
  for (int i = 0; i < (opts_.two_batch_overlap_min_tokens > 0 ? 2 : 1) && exchange_; ++i) {
    auto& ex = micro_[i].ex;
    ex = std::make_unique<EpExchange>(be, *comms.ep, ckpt.config().n_routed_experts, ckpt.config().hidden_size,
                                      scratch_epoch_, ex_types.results, ex_types.rows);
    if (weights_.n_local_experts() != ex->per_rank())  // the rows received are for these experts
      throw Error(fmt::format("model: {} local experts, the exchange expects {}", weights_.n_local_experts(),
                              ex->per_rank()));
    // The padded exchange over peer memory where every rank of the group can map the others'
    // (one node, GPUs); DPA_EP_PEER_MEMORY=0 keeps it on the communicator (comparisons).
    if (opts_.ep_padded_max_tokens > 0 && ckpt.config().n_routed_experts > 0) {
      const char* v = std::getenv("DPA_EP_PEER_MEMORY");
      if (v && std::string(v) != "0" && std::string(v) != "1")
        throw Error(fmt::format("DPA_EP_PEER_MEMORY='{}': 0 or 1", v));
      const bool on = ex->enable_peer_memory(
          (opts_.ep_padded_max_tokens + 15) / 16 * 16, ckpt.config().num_experts_per_tok, !v || std::string(v) == "1",
          [&](const std::vector<uint8_t>& mine) {
            backend::Buffer<uint8_t> a(be_, mine.size()), all(be_, mine.size() * static_cast<std::size_t>(ep));
            be_.upload(a.data(), mine.data(), mine.size());
            comms_.ep->all_gather(a.data(), all.data(), mine.size(), DType::u8);
            std::vector<uint8_t> out(all.size());
            be_.download(out.data(), all.data(), out.size());
            return out;
          });
      if (comms_.ep->rank() == 0 && i == 0)
        log::info("padded ep exchange: {}{}", on ? "over peer memory (no collective calls)" : "over the communicator",
                  opts_.two_batch_overlap_min_tokens > 0
                      ? fmt::format("; two-batch overlap from {} tokens a rank", opts_.two_batch_overlap_min_tokens)
                      : std::string());
    }
  }
  if (const char* v = std::getenv("DPA_CUDA_GRAPHS")) {
    const std::string g = v;
    if (g != "0" && g != "1") throw Error(fmt::format("DPA_CUDA_GRAPHS='{}': 0 or 1", g));
    graphs_ = g == "1";
  }
  if (graphs_ && opts_.decode_bucket == 0) opts_.decode_bucket = 16;

  any_moe_ = std::any_of(weights_.layers.begin(), weights_.layers.end(), [](const LayerWeights& lw) { return lw.moe; });
  if (graphs_ && any_moe_ && moe_fixed_tokens_ <= 0 && opts_.ep_padded_max_tokens <= 0)
    log::warn("decode graphs: no step qualifies without the fixed-capacity experts (DPA_MOE_FIXED_TOKENS=0)");
  else if (graphs_)
    log::info("decode graphs: pure decode steps{}, padded to multiples of {} tokens",
              any_moe_ ? fmt::format(" of up to {} tokens{}",
                                     !exchange_                       ? moe_fixed_tokens_
                                     : opts_.cuda_graph_max_tokens > 0 ? std::min(opts_.ep_padded_max_tokens,
                                                                                  opts_.cuda_graph_max_tokens)
                                                                       : opts_.ep_padded_max_tokens,  // DPA_CUDA_GRAPHS
                                     exchange_ ? " on every rank of the EP group" : "")
                       : std::string(),
              opts_.decode_bucket);
  if (opts_.decode_bucket < 0) throw Error(fmt::format("decode bucket {}: not a token count", opts_.decode_bucket));
  if (opts.profile_phases) {
    floor_fixed_bytes_ = fixed_weight_bytes();
    copy_gbs_ = be_.copy_bandwidth_gbs();
  }
  const bool bf16_attention = !weights_.layers.empty() && weights_.layers[0].kv_a_proj.dtype == DType::bf16;
  kv_dtype_ = opts.kv_dtype.value_or(bf16_attention && be_.supports_kv(DType::bf16) ? DType::bf16 : DType::f32);
  if (!be_.supports_kv(kv_dtype_))
    throw ConfigError("kv-cache-dtype", fmt::format("the {} backend keeps no {} KV cache", be_.name(), dtype_name(kv_dtype_)));
  be_.set_attention_tf32(kv_dtype_ == DType::bf16);
  if (opts.n_pages > 0) allocate_cache(opts.n_pages);
}

int64_t Model::page_bytes() const {
  const ModelConfig& c = config();
  return c.num_hidden_layers * opts_.page_size * (c.kv_lora_rank + c.qk_rope_head_dim) *
         static_cast<int64_t>(dtype_size(kv_dtype_));
}

void Model::allocate_cache(int64_t n_pages) {
  const ModelConfig& c = config();
  cache_.reset();
  cache_ = std::make_unique<KvCache>(be_, c.num_hidden_layers, n_pages, opts_.page_size, c.kv_lora_rank,
                                     c.qk_rope_head_dim, kv_dtype_);
  opts_.n_pages = n_pages;
}

// Every weight view becomes one the backend's ops take (device copies for CUDA, the same
// views for the CPU); W_UK^T and the correction biases move to backend memory. The views are
// prepared in the order of their bytes in memory, i.e. in file order within each shard: a
// checkpoint written tensor by name (Hugging Face's writer) puts a layer's tensors in another
// order than the model's, and following the model's order there read the mapping 1.3-1.45x
// slower than file order, cold (perf/RESULTS.md, checkpoint_read_bench).
void Model::prepare_weights() {
  const ModelConfig& c = config();
  split_shared_experts();
  std::vector<backend::WeightView*> views = weights_.views();
  std::stable_sort(views.begin(), views.end(), [](const backend::WeightView* a, const backend::WeightView* b) {
    return std::less<const void*>()(a->data, b->data);
  });
  for (backend::WeightView* w : views)
    if (w->data) *w = be_.prepare_weight(*w);  // tied embedding and LM head: one device copy
  weights_.views_replaced();
  const int64_t Hl = weights_.n_local_heads(), L = c.kv_lora_rank, nope = c.qk_nope_head_dim;
  w_uk_.resize(weights_.layers.size());
  bias_.resize(weights_.layers.size());
  for (std::size_t l = 0; l < weights_.layers.size(); ++l) {
    LayerWeights& lw = weights_.layers[l];
    w_uk_[l] = be_.prepare_weight(
        lw.w_uk_t_bf16.empty() ? backend::WeightView::dense(lw.w_uk_t.data(), DType::f32, Hl * L, nope)
                               : backend::WeightView::dense(lw.w_uk_t_bf16.data(), DType::bf16, Hl * L, nope));
    if (!lw.correction_bias.empty()) upload(bias_[l], lw.correction_bias);
    expert_gate_.emplace_back(), expert_up_.emplace_back(), expert_down_.emplace_back();
    for (auto& e : lw.experts) {
      expert_gate_.back().push_back(e.gate);
      expert_up_.back().push_back(e.up);
      expert_down_.back().push_back(e.down);
    }
    if (shared_pieces_ && lw.moe) {
      const int64_t I = lw.experts[0].gate.rows, D = lw.experts[0].down.rows;
      const DType dt = lw.shared.down.dtype;
      for (int64_t p = 0; p < shared_pieces_; ++p) {
        expert_gate_.back().push_back(lw.shared.gate.row_slice(p * I, (p + 1) * I));
        expert_up_.back().push_back(lw.shared.up.row_slice(p * I, (p + 1) * I));
        const unsigned char* block = shared_down_host_[l].data() + p * D * I * dtype_size(dt);
        expert_down_.back().push_back(be_.prepare_weight(backend::WeightView::dense(block, dt, D, I)));
      }
      // The backend's copies may have changed dtypes or strides: the pieces must still look like
      // a routed expert to moe_experts_fixed, or the shared MLP runs apart.
      const std::size_t e0 = lw.experts.size();
      const backend::WeightView &rg = expert_gate_.back()[0], &rd = expert_down_.back()[0];
      for (std::size_t p = e0; p < expert_gate_.back().size(); ++p) {
        const backend::WeightView &g = expert_gate_.back()[p], &u = expert_up_.back()[p], &d = expert_down_.back()[p];
        if (g.dtype != rg.dtype || u.dtype != rg.dtype || d.dtype != rd.dtype || g.ld != rg.ld ||
            u.ld != expert_up_.back()[0].ld || d.ld != rd.ld)
          shared_pieces_ = 0;
      }
    }
  }
  if (!shared_pieces_) {  // none of them (every layer alike, or the counts' stride would differ)
    for (std::size_t l = 0; l < expert_gate_.size(); ++l) {
      const std::size_t e = weights_.layers[l].experts.size();
      expert_gate_[l].resize(e), expert_up_[l].resize(e), expert_down_[l].resize(e);
    }
    shared_down_host_.clear();
  }
  be_.synchronize();
}

// Where every MoE layer's local experts are bf16 on every rank of the EP group (the exchange's
// sizes must agree): the results travel back in bf16, as they are kept on one rank, and where the
// backend's experts round their input rows to bf16 anyway (the GPU; bf16_rows_), the tokens' rows
// go out in bf16 too. Else f32. On the CPU reference, which computes with f32 rows, bf16 rows
// would make a token's results depend on the EP layout; forced there, they add that rounding.
Model::ExchangeTypes Model::exchange_types() {
  bool bf16 = true;
  for (std::size_t l = 0; l < expert_down_.size(); ++l)
    if (!expert_down_[l].empty())
      bf16 = bf16 && expert_gate_[l][0].dtype == DType::bf16 && expert_down_[l][0].dtype == DType::bf16;
  const int64_t D = config().hidden_size;
  const std::array<int32_t, 2> mine = {bf16 && bf16_results_ && D % 2 == 0, bf16 && bf16_rows_ && D % 4 == 0};
  backend::Buffer<int32_t> flags(be_, mine.size());
  be_.upload(flags.data(), mine.data(), sizeof mine);
  comms_.ep->all_reduce(flags.data(), flags.data(), mine.size(), DType::i32, dist::ReduceOp::min);
  std::array<int32_t, 2> all{};
  be_.download(all.data(), flags.data(), sizeof all);
  return ExchangeTypes{all[0] ? DType::bf16 : DType::f32, all[1] ? DType::bf16 : DType::f32};
}

// Whether every MoE layer's shared MLP splits into pieces of its routed experts' size (same
// dtype, width and row strides; intermediate size a multiple), and if so the down projections'
// column blocks copied apart (host views, prepared with the rest). Only where the fixed-capacity
// experts can run: they are the only path that takes the pieces.
void Model::split_shared_experts() {
  shared_pieces_ = 0;
  shared_down_host_.assign(weights_.layers.size(), {});
  if (moe_fixed_tokens_ <= 0 || exchange_) return;
  int64_t pieces = 0;
  for (const LayerWeights& lw : weights_.layers) {
    if (!lw.moe) continue;
    if (!lw.has_shared || lw.experts.empty()) return;
    const MlpWeights &r = lw.experts[0], &s = lw.shared;
    const int64_t I = r.gate.rows, D = r.gate.cols;
    const bool fits = I > 0 && D > 0 && s.gate.rows % I == 0 && s.gate.cols == D && s.up.rows == s.gate.rows &&
                      s.up.cols == D && s.down.rows == D && s.down.cols == s.gate.rows &&
                      s.gate.dtype == r.gate.dtype && s.up.dtype == r.up.dtype && s.down.dtype == r.down.dtype &&
                      s.gate.ld == r.gate.ld && s.up.ld == r.up.ld && r.down.ld == I && s.down.data;
    if (!fits || (pieces && s.gate.rows / I != pieces)) return;
    pieces = s.gate.rows / I;
  }
  if (!pieces) return;
  for (std::size_t l = 0; l < weights_.layers.size(); ++l) {
    const LayerWeights& lw = weights_.layers[l];
    if (!lw.moe) continue;
    const backend::WeightView& d = lw.shared.down;
    const int64_t I = lw.experts[0].gate.rows, D = d.rows;
    const std::size_t es = dtype_size(d.dtype);
    std::vector<unsigned char>& out = shared_down_host_[l];
    out.resize(static_cast<std::size_t>(pieces * D * I) * es);
    const auto* src = static_cast<const unsigned char*>(d.data);
    for (int64_t p = 0; p < pieces; ++p)
      for (int64_t r = 0; r < D; ++r)
        std::memcpy(out.data() + static_cast<std::size_t>((p * D + r) * I) * es,
                    src + static_cast<std::size_t>(r * d.ld + p * I) * es, static_cast<std::size_t>(I) * es);
  }
  shared_pieces_ = pieces;
}

namespace {
int64_t view_bytes(const backend::WeightView& w) {
  return w.data ? w.rows * w.cols * static_cast<int64_t>(dtype_size(w.dtype)) : 0;
}
int64_t mlp_bytes(const MlpWeights& m) { return view_bytes(m.gate) + view_bytes(m.up) + view_bytes(m.down); }
}  // namespace

int64_t Model::fixed_weight_bytes() {
  const ModelConfig& c = config();
  const int64_t Hl = weights_.n_local_heads();
  // Every view, less the embedding table (a step reads its rows; a tied LM head stays counted as
  // its own view), the routed experts (add_expert_bytes) and kv_b_proj, of which decode reads
  // W_UV only; plus W_UK.
  int64_t b = -view_bytes(weights_.embed);
  for (const backend::WeightView* w : weights_.views()) b += view_bytes(*w);
  for (std::size_t l = 0; l < weights_.layers.size(); ++l) {
    const LayerWeights& lw = weights_.layers[l];
    for (const MlpWeights& e : lw.experts) b -= mlp_bytes(e);
    b += view_bytes(w_uk_[l]) - view_bytes(lw.kv_b_proj);
    if (lw.kv_b_proj.data)  // W_UV: the v rows of each local head
      b += Hl * c.v_head_dim * c.kv_lora_rank * static_cast<int64_t>(dtype_size(lw.kv_b_proj.dtype));
  }
  return b;
}

Model::Slice Model::my_slice(const Micro& m) const {
  const int r = shard_.attn_tp_rank;
  Slice s;
  s.begin = slice_begin(m.n, r);
  s.rows = slice_begin(m.n, r + 1) - s.begin;
  if (m.pad > 0)  // the padding rows are the micro-batch's last ones
    s.pad = std::clamp<int64_t>(s.begin + s.rows - (m.n - m.pad), 0, s.rows);
  return s;
}

void Model::add_expert_bytes(int64_t layer, const int64_t* counts, int64_t n_local) {
  if (!opts_.profile_phases) return;
  const LayerWeights& lw = weights_.layers[static_cast<std::size_t>(layer)];
  for (int64_t e = 0; e < n_local && e < static_cast<int64_t>(lw.experts.size()); ++e)
    if (counts[e] > 0) step_bytes_ += mlp_bytes(lw.experts[static_cast<std::size_t>(e)]);
}

void Model::mlp(const MlpWeights& w, const PreNorm* pre, float* h, int64_t n, float* out) {
  if (n == 0) return;
  const int64_t I = w.gate.rows;
  float* g = scratch(g_, n * I);
  float* u = scratch(u_, n * I);
  const backend::Backend::LinearOut gate_up[] = {{&w.gate, g}, {&w.up, u}};
  if (pre) be_.norm_linear(pre->residual, pre->x, pre->w, n, static_cast<float>(config().rms_norm_eps), h, gate_up);
  else be_.linear_many(h, n, gate_up);
  be_.silu_mul(g, u, n * I, g);
  be_.linear(g, n, w.down, out);
}

Model::~Model() {
  try {
    for (Draws& d : draws_) {
      be_.host_release(d.host.p), d.host.p = nullptr;
      be_.host_release(d.stage.p), d.stage.p = nullptr;
    }
    drop_graphs();
  } catch (const std::exception& e) {
    log::warn("model: dropping decode graphs: {}", e.what());
  }
  const GraphStats& g = graph_stats_;
  if (g.recorded || g.failed)
    log::info("decode graphs: {} recorded, {} replays, {} failed; host per replayed step: {:.3f} ms between "
              "forwards, {:.3f} ms before the replay, {:.3f} ms from it to the return",
              g.recorded, g.replayed, g.failed, g.replayed ? 1e3 * g.between_s / g.replayed : 0.0,
              g.replayed ? 1e3 * g.before_s / g.replayed : 0.0, g.replayed ? 1e3 * g.replay_s / g.replayed : 0.0);
}

// The padded exchange's capacity for this step: the largest token slice over the EP group,
// rounded up to 16 (so that recordings are shared within a bucket), when at most
// ep_padded_max_tokens; 0 otherwise. Every rank gets the same: from set_ep_step_tokens() when
// told (the engine's step headers: no collective, no wait), else by an all-reduce over the group.
void Model::agree_ep_capacity(int64_t n) {
  ep_cap_tokens_ = 0;
  n_micro_ = 1;
  const int64_t told = ep_step_tokens_;
  ep_step_tokens_ = -1;
  if (opts_.ep_padded_max_tokens <= 0 || !any_moe_ || !exchange_) return;
  int64_t most = 0;
  if (told >= 0) {
    // A bound on every rank's slice from the tokens it feeds: padded to the decode bucket at most,
    // then at most ceil(n / attn_tp) of them a rank.
    const int64_t b = std::max<int64_t>(opts_.decode_bucket, 1), tp = shard_.attn_tp_size;
    most = ((told + b - 1) / b * b + tp - 1) / tp;
  } else {
    const int r = shard_.attn_tp_rank;
    int64_t* d = upload(d_ep_max_, std::vector<int64_t>{slice_begin(n, r + 1) - slice_begin(n, r)});
    comms_.ep->all_reduce(d, d, 1, DType::i64, dist::ReduceOp::max);
    be_.download(&most, d, sizeof most);
  }
  const int64_t cap = (most + 15) / 16 * 16;
  if (cap <= 0 || cap > opts_.ep_padded_max_tokens) return;
  ep_cap_tokens_ = cap;
  // The two-batch overlap: every rank's halves hold ceil(n / 2) and floor(n / 2) of its rows, so
  // the blocks need only half the capacity. Every rank decides from the same `most`.
  if (opts_.two_batch_overlap_min_tokens > 0 && most >= std::max<int64_t>(opts_.two_batch_overlap_min_tokens, 2)) {
    n_micro_ = 2;
    ep_cap_tokens_ = ((most + 1) / 2 + 15) / 16 * 16;
  }
}

void Model::plan_micro(Micro& m, const std::vector<SeqInput>& batch, const std::vector<int64_t>& seq_pages,
                       int64_t row0, int64_t n, int32_t pad_offset, int32_t pad_ctx) {
  m.row0 = row0, m.n = n;
  m.batch.clear(), m.page_offset.clear(), m.decode_rows.clear(), m.absorbed.clear();
  m.any_absorbed = false, m.all_absorbed = true;
  std::vector<int32_t> decode_offset, decode_ctx;
  int64_t next = 0;  // the step row where the next sequence starts
  for (std::size_t si = 0; si < batch.size(); ++si) {
    const SeqInput& s = batch[si];
    const int64_t first = next;  // this sequence's first row in the step
    next += static_cast<int64_t>(s.tokens.size());
    const int64_t lo = std::max(first, row0), hi = std::min(next, row0 + n);
    if (lo >= hi) continue;
    SeqInput part = s;
    part.tokens = s.tokens.subspan(static_cast<std::size_t>(lo - first), static_cast<std::size_t>(hi - lo));
    part.start = s.start + (lo - first);
    const int64_t k = hi - lo;
    const bool absorbed = absorbs(k);
    m.batch.push_back(part);
    m.page_offset.push_back(seq_pages[si]);
    m.absorbed.push_back(absorbed);
    m.any_absorbed |= absorbed, m.all_absorbed = m.all_absorbed && absorbed;
    if (absorbed && k == 1) {  // decoded by the batched mla_decode
      m.decode_rows.push_back(static_cast<int32_t>(lo - row0));
      decode_offset.push_back(static_cast<int32_t>(seq_pages[si]));
      decode_ctx.push_back(static_cast<int32_t>(part.start + 1));
      decode_max_ctx_ = std::max(decode_max_ctx_, part.start + 1);
    }
  }
  // The step's padding rows (its last step_pad_rows_) that fall in here attend as its first row.
  m.pad = 0;
  for (int64_t p = std::max(row0, step_rows_ - step_pad_rows_); p < row0 + n; ++p, ++m.pad) {
    m.decode_rows.push_back(static_cast<int32_t>(p - row0));
    decode_offset.push_back(pad_offset), decode_ctx.push_back(pad_ctx);
  }
  m.decode_contiguous = static_cast<int64_t>(m.decode_rows.size()) == n;
  upload(m.d_decode_rows, m.decode_rows);
  upload(m.d_decode_offset, decode_offset);
  upload(m.d_decode_ctx, decode_ctx);
}

namespace {
double steady_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}
}  // namespace

void Model::forward(const std::vector<SeqInput>& batch, std::vector<float>& logits,
                    std::vector<int32_t>* argmax, const Sampling* sampling) {
  run_step(batch, logits, argmax, sampling, nullptr);
}

void Model::run_step(const std::vector<SeqInput>& batch, std::vector<float>& logits, std::vector<int32_t>* argmax,
                     const Sampling* sampling, Draws* draws) {
  // The host's share of a replayed step (GraphStats), counted when the step returns.
  struct HostClock {
    Model& m;
    const double called = steady_s(), between = m.last_return_s_ >= 0 ? called - m.last_return_s_ : 0.0;
    double replay = -1;
    ~HostClock() {
      m.last_return_s_ = steady_s();
      if (replay < 0) return;
      m.graph_stats_.between_s += between, m.graph_stats_.before_s += replay - called;
      m.graph_stats_.replay_s += m.last_return_s_ - replay;
    }
  } host_clock{*this};
  const ModelConfig& c = config();
  const int64_t D = c.hidden_size;
  if (!cache_) throw Error("model: forward before allocate_cache()");
  if (unsampled_.waiting) throw Error("model: a step launched before the one before it was sampled");
  // The step's host inputs, in vectors kept from step to step (no allocation a step).
  std::vector<int32_t>& ids = host_.ids;
  std::vector<int32_t>& pages = host_.pages;
  std::vector<int64_t>& positions = host_.positions;
  std::vector<int64_t>& slots = host_.slots;
  std::vector<int64_t>& seq_pages = host_.seq_pages;
  std::vector<int32_t>& take_argmax = host_.take_argmax;
  std::vector<int32_t>& take_sampled = host_.take_sampled;
  ids.clear(), pages.clear(), positions.clear(), slots.clear(), seq_pages.clear();
  take_argmax.clear(), take_sampled.clear();
  // The previous step's draws serve this step only (both buffers keep their room across steps).
  std::vector<int32_t>& prev = host_.prev_draws;
  prev.swap(prev_draws_);
  prev_draws_.clear();
  int64_t decode_seqs = 0;  // single-token sequences taking the absorbed form
  int32_t pad_offset = 0, pad_ctx = 0;  // the first row's page table and context (the padding's)
  for (const SeqInput& s : batch) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    if (s.start < 0 || s.start + n > c.max_position_embeddings)
      throw Error(fmt::format("sequence positions [{}, {}) beyond max_position_embeddings {}",
                              s.start, s.start + n, c.max_position_embeddings));
    if ((s.start + n + opts_.page_size - 1) / opts_.page_size > static_cast<int64_t>(s.pages.size()))
      throw Error(fmt::format("kv cache: page table of {} pages too short for {} tokens", s.pages.size(),
                              s.start + n));
    for (int32_t p : s.pages)
      if (p < 0 || p >= cache_->n_pages())
        throw Error(fmt::format("kv cache: page id {} outside [0, {})", p, cache_->n_pages()));
    if (n == 1 && absorbs(n)) ++decode_seqs;
    if (n > 0 && ids.empty())
      pad_offset = static_cast<int32_t>(pages.size()), pad_ctx = static_cast<int32_t>(s.start + 1);
    if (s.prev_row >= 0) {  // its token comes from the previous step's draws, in backend memory
      if (n != 1) throw Error(fmt::format("a sequence taking the previous step's draw feeds 1 token, not {}", n));
      const int32_t from = s.prev_row < static_cast<int64_t>(prev.size()) ? prev[static_cast<std::size_t>(s.prev_row)]
                                                                           : kNoDraw;
      if (from == kNoDraw)
        throw Error(fmt::format("the previous step drew no token for its wanted row {} (it had {})", s.prev_row,
                                prev.size()));
      auto& take = from == kArgmaxDraw ? take_argmax : take_sampled;
      take.push_back(static_cast<int32_t>(ids.size()));
      take.push_back(from == kArgmaxDraw ? s.prev_row : from);
    }
    for (int64_t i = 0; i < n; ++i) {
      const int32_t t = s.prev_row >= 0 ? 0 : s.tokens[static_cast<std::size_t>(i)];  // 0: until taken
      if (t < 0 || t >= c.vocab_size)
        throw Error(fmt::format("token id {} outside the vocabulary [0, {})", t, c.vocab_size));
      ids.push_back(t);
      const int64_t p = s.start + i;
      positions.push_back(p);
      slots.push_back(static_cast<int64_t>(s.pages[static_cast<std::size_t>(p / opts_.page_size)]) * opts_.page_size +
                      p % opts_.page_size);
    }
    seq_pages.push_back(static_cast<int64_t>(pages.size()));
    pages.insert(pages.end(), s.pages.begin(), s.pages.end());
  }
  // A pure decode step padded to its bucket (ForwardOptions::decode_bucket): copies of the first
  // row that read its context and write nothing; the logits rows below are the batch's only.
  step_pad_rows_ = 0;
  if (opts_.decode_bucket > 1 && !ids.empty() && decode_seqs == static_cast<int64_t>(ids.size())) {
    const std::size_t b = static_cast<std::size_t>(opts_.decode_bucket), padded = (ids.size() + b - 1) / b * b;
    step_pad_rows_ = static_cast<int64_t>(padded - ids.size());
    for (auto* take : {&take_argmax, &take_sampled})  // a first row taken from the draws: its copies too
      if (!take->empty() && (*take)[0] == 0)
        for (std::size_t r = ids.size(); r < padded; ++r) take->push_back(static_cast<int32_t>(r)), take->push_back((*take)[1]);
    while (ids.size() < padded) ids.push_back(ids[0]), positions.push_back(positions[0]), slots.push_back(-1);
  }
  // DPA_PROFILE_DECODE_STEP=K: the K-th pure decode step is bracketed for an outside profiler
  // (`ncu --profile-from-start off`), from here to the step's last download.
  struct ProfilerWindow {
    backend::Backend* be = nullptr;
    ~ProfilerWindow() {
      if (!be) return;
      try {
        be->profiler_window(false);
      } catch (const std::exception& e) {
        log::warn("profiler window: {}", e.what());
      }
    }
  } window;
  if (profile_decode_step_ > 0 && !ids.empty() && decode_seqs == static_cast<int64_t>(batch.size()) &&
      ++decode_steps_seen_ == profile_decode_step_) {
    be_.profiler_window(true);
    window.be = &be_;
  }
  const int64_t N = static_cast<int64_t>(ids.size());
  step_rows_ = N;
  agree_ep_capacity(N);  // and whether the step runs as two micro-batches
  two_batch_steps_ += n_micro_ == 2;
  if (n_micro_ == 2)  // the EP group's ranks agreed on the same capacity
    for (int i = 0; i < 2; ++i) micro_[i].ex->set_communicator(comms_.ep_lane1 ? *comms_.ep_lane1 : *comms_.ep);
  else if (micro_[0].ex)
    micro_[0].ex->set_communicator(*comms_.ep);
  upload(d_ids_, ids);
  // The previous step's argmax and samples are where it left them (this step's come later).
  if (!take_argmax.empty())
    be_.take_tokens(d_ids_.data(), d_argmax_.data(), 1, upload(d_take_argmax_, take_argmax),
                    static_cast<int64_t>(take_argmax.size() / 2));
  static_assert(sizeof(backend::SampleOut) % sizeof(int32_t) == 0 && offsetof(backend::SampleOut, token) == 0);
  if (!take_sampled.empty())
    be_.take_tokens(d_ids_.data(), reinterpret_cast<const int32_t*>(d_samples_.data()),
                    sizeof(backend::SampleOut) / sizeof(int32_t), upload(d_take_sampled_, take_sampled),
                    static_cast<int64_t>(take_sampled.size() / 2));
  upload(d_pos_, positions);
  upload(d_pages_, pages);
  upload(d_slots_, slots);
  decode_max_ctx_ = 0;
  const int64_t half = n_micro_ == 2 ? (N + 1) / 2 : N;
  plan_micro(micro_[0], batch, seq_pages, 0, half, pad_offset, pad_ctx);
  if (n_micro_ == 2) plan_micro(micro_[1], batch, seq_pages, half, N - half, pad_offset, pad_ctx);
  decode_contiguous_ = micro_[0].decode_contiguous && (n_micro_ == 1 || micro_[1].decode_contiguous);
  if (graphs_)  // the decode kernels' split plan follows this bound: one recording serves 256 positions
    decode_max_ctx_ = (decode_max_ctx_ + 255) / 256 * 256;
  if (!c.n_routed_experts) expert_counts_.clear();
  else expert_counts_.assign(static_cast<std::size_t>(c.num_hidden_layers * c.n_routed_experts), 0);
  fixed_layers_.assign(static_cast<std::size_t>(c.num_hidden_layers), 0);
  counts_on_device_ = false;
  if (opts_.profile_phases) {  // the floor: fixed weights, embedding rows, each cache row once per layer
    int64_t kv_rows = 0;
    for (const SeqInput& s : batch) kv_rows += s.start + static_cast<int64_t>(s.tokens.size());
    step_bytes_ = floor_fixed_bytes_ + N * D * static_cast<int64_t>(dtype_size(weights_.embed.dtype)) +
                  c.num_hidden_layers * kv_rows * (c.kv_lora_rank + c.qk_rope_head_dim) *
                      static_cast<int64_t>(dtype_size(kv_dtype_));
  }

  float* residual = scratch(residual_, N * D);
  float* h = scratch(h_, N * D);
  float* out = scratch(out_, N * D);
  const float eps = static_cast<float>(c.rms_norm_eps);
  if (graphable(N)) {
    const int64_t replayed = graph_stats_.replayed;
    const double t = steady_s();
    layers_graphed(N, residual, h, out);
    if (graph_stats_.replayed > replayed) host_clock.replay = t;
  } else {
    layers(N, residual, h, out);
  }
  mark("lm_head");
  struct Collect {  // profiling: the step's phase times go to its kind when forward() returns
    Model& m;
    const std::vector<SeqInput>& batch;
    ~Collect() {
      if (!m.opts_.profile_phases) return;
      const bool decode = !batch.empty() && std::all_of(batch.begin(), batch.end(), [](const SeqInput& s) {
        return s.tokens.size() == 1;
      });
      PhaseStats& p = decode ? m.phase_decode_ : m.phase_other_;
      try {
        if (m.counts_on_device_) {  // the fixed-capacity layers' expert bytes, from their counts
          const auto& ec = m.expert_counts();
          const int64_t E = m.config().n_routed_experts;
          const int64_t n_local = m.weights_.n_local_experts();
          std::vector<int64_t> local(static_cast<std::size_t>(n_local));
          for (std::size_t l = 0; l < m.fixed_layers_.size(); ++l)
            if (m.fixed_layers_[l] == 2) {  // padded exchange: the rows this rank's experts received
              // (one micro-batch: no two-batch overlap while profiling)
              m.be_.download(local.data(), m.micro_[0].d_local_counts.data() + l * n_local,
                             local.size() * sizeof(int64_t));
              m.add_expert_bytes(static_cast<int64_t>(l), local.data(), n_local);
            } else if (m.fixed_layers_[l]) {
              m.add_expert_bytes(static_cast<int64_t>(l), ec.data() + l * E, E);
            }
        }
        m.be_.phase_collect(p.seconds);
        ++p.steps;
        p.floor_bytes += static_cast<double>(m.step_bytes_);
      } catch (const std::exception&) {  // a failed step reports its own error
      }
    }
  } collect{*this, batch};
  // LM head only on the rows whose logits are wanted.
  std::vector<int32_t> rows, keep;  // keep: wanted rows whose full logits go to the host
  int64_t offset = 0;
  for (const SeqInput& s : batch) {
    const int64_t n = static_cast<int64_t>(s.tokens.size());
    const bool full = (!argmax && !draws) || !s.argmax_only;
    auto want = [&](int64_t i) {
      if (full) keep.push_back(static_cast<int32_t>(rows.size()));
      rows.push_back(static_cast<int32_t>(offset + i));
    };
    const int64_t lead = s.logits == LogitsWanted::all ? n : std::clamp<int64_t>(s.lead_rows, 0, n);
    for (int64_t i = 0; i < lead; ++i) want(i);
    if (s.logits == LogitsWanted::last && n > lead) want(n - 1);
    offset += n;
  }
  const int64_t n_rows = static_cast<int64_t>(rows.size());
  float* picked = scratch(picked_, n_rows * D);
  be_.gather_rows(residual, upload(d_rows_, rows), n_rows, D, picked);
  be_.rms_norm(picked, weights_.final_norm, n_rows, eps, picked);
  float* d_logits = scratch(logits_, n_rows * c.vocab_size);
  be_.linear(picked, n_rows, weights_.lm_head, d_logits);
  const int64_t V = c.vocab_size, n_keep = static_cast<int64_t>(keep.size());
  // Full logits leave the backend only for forward() without sampling (launch_forward() samples
  // later, and the step's rows may hold a vocabulary of floats each: nothing is sized for them).
  logits.resize(sampling || draws ? 0 : static_cast<std::size_t>(n_keep * V));
  if (!argmax && !draws) {
    if (sampling) throw Error("forward: sampling needs the argmax output");
    if (n_rows > 0) be_.download(logits.data(), d_logits, logits.size() * sizeof(float));
    return;
  }
  if (argmax) argmax->assign(static_cast<std::size_t>(n_rows), -1);
  int32_t* d_am = nullptr;
  if (n_keep < n_rows) {
    d_am = scratch(d_argmax_, n_rows);
    be_.argmax(d_logits, n_rows, V, d_am);
    if (argmax) {
      be_.download(argmax->data(), d_am, static_cast<std::size_t>(n_rows) * sizeof(int32_t));
      for (int32_t k : keep) (*argmax)[static_cast<std::size_t>(k)] = -1;
    }
  }
  // Where the next step finds each wanted row's draw (prev_row): the argmax rows now; the
  // sampled ones once sampled below.
  prev_draws_.assign(static_cast<std::size_t>(n_rows), d_am ? kArgmaxDraw : kNoDraw);
  for (int32_t k : keep) prev_draws_[static_cast<std::size_t>(k)] = kNoDraw;
  float* kept = d_logits;
  if (n_keep > 0 && n_keep < n_rows) {
    kept = scratch(kept_, n_keep * V);
    be_.gather_rows(d_logits, upload(d_keep_, keep), n_keep, V, kept);
  }
  if (!sampling && !draws) {
    if (n_keep > 0) be_.download(logits.data(), kept, logits.size() * sizeof(float));
    return;
  }
  Unsampled& u = unsampled_;
  u.n_rows = n_rows, u.d_am = d_am, u.kept = kept;
  u.keep.swap(keep);
  u.waiting = true;
  if (sampling) sample_kept(*sampling, draws);  // else launch_sampling() does, later
}

// run_step()'s end: the kept rows' edits, masks and samples, and with `draws` their downloads.
void Model::sample_kept(const Sampling& sampling, Draws* draws) {
  Unsampled& u = unsampled_;
  if (!u.waiting) throw Error("model: sampling without a step's logits waiting for it");
  u.waiting = false;
  const int64_t V = config().vocab_size, n_rows = u.n_rows, n_keep = static_cast<int64_t>(u.keep.size());
  const std::vector<int32_t>& keep = u.keep;
  float* kept = u.kept;
  if (static_cast<int64_t>(sampling.specs.size()) != n_keep)
    throw Error(fmt::format("forward: {} sampling specs for {} sampled rows", sampling.specs.size(), n_keep));
  for (const backend::LogitEdit& e : sampling.edits)
    if (e.row < 0 || e.row >= n_keep || e.token < 0 || e.token >= V)
      throw Error(fmt::format("forward: logit edit ({}, {}) outside [{}, {}]", e.row, e.token, n_keep, V));
  const backend::TokenMasks& masks = sampling.masks;
  if (masks.bits.size() != masks.rows.size() * static_cast<std::size_t>(backend::token_mask_words(V)))
    throw Error(fmt::format("forward: {} mask words for {} masked rows of {} tokens", masks.bits.size(),
                            masks.rows.size(), V));
  for (int32_t r : masks.rows)
    if (r < 0 || r >= n_keep) throw Error(fmt::format("forward: masked row {} outside [0, {})", r, n_keep));
  backend::SampleOut* d_out = nullptr;
  if (n_keep > 0) {
    // The edits and masks (up to a few MB a step: a penalized row's edits name every distinct
    // token so far, a mask is vocab / 8 bytes) go through page-locked memory of the draws' slot:
    // a large copy from pageable memory may wait for the device to reach it, which a step whose
    // sampling is queued behind its running forward (launch_sampling()) must not. The slot's
    // last copies were done when its draws were collected.
    std::span<const backend::LogitEdit> edits = sampling.edits;
    std::span<const uint32_t> bits = masks.bits;
    if (draws) {
      const std::size_t at = (edits.size_bytes() + 15) / 16 * 16, bytes = at + bits.size_bytes();
      draws->stage.hold(be_, bytes);
      char* stage = static_cast<char*>(draws->stage.p);
      if (!edits.empty()) std::memcpy(stage, edits.data(), edits.size_bytes());
      if (!bits.empty()) std::memcpy(stage + at, bits.data(), bits.size_bytes());
      edits = {reinterpret_cast<const backend::LogitEdit*>(stage), edits.size()};
      bits = {reinterpret_cast<const uint32_t*>(stage + at), bits.size()};
    }
    // From the slot's stage the copies go straight (no second copy into the backend's staging).
    auto up = [&](auto& buffer, auto span) { return draws ? upload_pinned(buffer, span) : upload(buffer, span); };
    if (!edits.empty()) be_.edit_logits(kept, V, up(d_edits_, edits), static_cast<int64_t>(edits.size()));
    if (!masks.rows.empty())
      be_.mask_logits(kept, V, up(d_masks_, bits), upload(d_mask_rows_, masks.rows),
                      static_cast<int64_t>(masks.rows.size()));
    d_out = scratch(d_samples_, n_keep);
    be_.sample(kept, n_keep, V, upload(d_specs_, sampling.specs), d_out);
    for (int64_t j = 0; j < n_keep; ++j) prev_draws_[static_cast<std::size_t>(keep[static_cast<std::size_t>(j)])] = static_cast<int32_t>(j);
  }
  if (!draws) {
    sampling.out->resize(static_cast<std::size_t>(n_keep));
    if (n_keep > 0)
      be_.download(sampling.out->data(), d_out, static_cast<std::size_t>(n_keep) * sizeof(backend::SampleOut));
    return;
  }
  queue_draws(*draws, n_rows, keep, u.d_am, d_out);
}

}  // namespace dpa::model
