// The model forward of one rank: embedding -> layers (MLA attention with heads split inside
// attn_tp, dense MLP or MoE with experts sharded over ep) -> LM head. Collective over attn_tp and
// ep: every rank calls forward() on the same steps, with an empty batch when it has no tokens.
// Weights, KV cache and activations live in the backend's memory (host for the CPU backend,
// device for CUDA); the communicators must work on that memory (MPI for CPU, NCCL for CUDA).
// Host synchronisation points inside a step: the MoE routing counts (moe_counts, overlapped by
// the shared experts), the index bookkeeping of dispatch, and the logits download at the end.
#pragma once

#include <algorithm>
#include <compare>
#include <cstdint>
#include <functional>
#include <memory>
#include <map>
#include <optional>
#include <string>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "dist/communicator.h"
#include "model/ep_exchange.h"
#include "model/kv_cache.h"
#include "model/weights.h"

namespace dpa::model {

enum class LogitsWanted : uint8_t { none, last, all };

// The new tokens of one sequence: positions [start, start + tokens.size()); `pages` covers them.
struct SeqInput {
  std::span<const int32_t> tokens;
  int64_t start = 0;
  std::span<const int32_t> pages;
  LogitsWanted logits = LogitsWanted::last;
  bool argmax_only = false;  // with an argmax output: only the argmax of its rows is returned
  // >= 0: a one-token sequence whose token is the previous step's draw for its wanted row
  // prev_row (argmax or sample, in that step's wanted-row order), taken where the draws are;
  // tokens[0] is not read. The previous step must have drawn that row (launch(), or forward()
  // with argmax and sampling).
  int32_t prev_row = -1;
  // With LogitsWanted::none or last: the first lead_rows positions' logits are wanted too (ahead
  // of the last one's; a prompt being scored). Such a sequence is not argmax_only.
  int64_t lead_rows = 0;
};

// Draws made where the logits are, for the wanted rows of sequences that are not argmax_only
// (in row order): their logits get `edits` (LogitEdit::row indexes `specs`), then `masks`, then
// each row is sampled under its spec; `out` gets one SampleOut per spec and no logits leave the
// backend.
struct Sampling {
  std::span<const backend::SampleSpec> specs;
  std::span<const backend::LogitEdit> edits;
  std::vector<backend::SampleOut>* out = nullptr;
  backend::TokenMasks masks;
};

// How attention reads the cache: expanded k/v (prefill form), absorbed latent (decode form), or
// auto: expanded for chunks of several tokens, absorbed for single tokens.
enum class AttentionForm : uint8_t { automatic, expanded, absorbed };

struct ForwardOptions {
  int64_t page_size = 16;
  int64_t n_pages = 256;  // 0: no cache until allocate_cache() (sized after the weights load)
  AttentionForm attention = AttentionForm::automatic;
  bool bf16_weights = false;  // round every weight to bf16 at load
  // KV cache elements; unset (auto): bf16 when the backend keeps a bf16 cache and the
  // attention weights are bf16 (the model's dtype, as vLLM's auto), else f32.
  std::optional<DType> kv_dtype;
  // Time the phases of every step (embed, attention, mlp, moe.route / dispatch / experts /
  // combine / shared, lm_head) with backend markers; see Model::phase_stats().
  bool profile_phases = false;
  // Pure decode steps run padded to a multiple of this many tokens (0: as they are): the padding
  // rows repeat the first row's token, position and context but write no KV (slot -1) and give
  // no logits, so one decode graph serves every batch size of its bucket. The experts run their
  // slots; the expert statistics (expert_counts()) leave them out. Decode graphs set 16 when
  // unset.
  int64_t decode_bucket = 0;
  // Decode graphs (see Model::graph_stats) for pure decode steps of up to this many tokens, on a
  // single-rank replica (attn_tp 1, ep 1) whose backend records graphs, with the fixed-capacity
  // experts (Model::moe) over the same range of tokens, which leave no host wait in the layers;
  // 0: off. Elsewhere it changes nothing. DPA_CUDA_GRAPHS=0|1 and DPA_MOE_FIXED_TOKENS=N, when
  // set, decide instead (experiments).
  int64_t cuda_graph_max_tokens = 0;
  // With ep > 1: steps whose largest token slice over the EP group is at most this many run the
  // padded exchange (Model::moe: every peer a block of a size known without the routing counts,
  // the counts exchanged in backend memory, so no host wait in the MoE layers, and decode graphs
  // as on a single rank where cuda_graph_max_tokens allows them, attn_tp 1); 0: every step
  // exchanges exactly the rows routed, with the counts on the host.
  int64_t ep_padded_max_tokens = 0;
  // Two-batch overlap (with the padded exchange, attn_tp 1): steps whose largest slice over the EP
  // group is at least this many tokens run as two micro-batches, the first half of the rows and
  // the second, interleaved layer by layer so that one's exchange runs on the backend's lane 1
  // while the other computes on lane 0 (Model::layers_tbo); 0: off. Off while profiling phases.
  int64_t two_batch_overlap_min_tokens = 0;
  // Experiment on one GPU: with ep 1 and an ep communicator given, the MoE layers still go through
  // the exchange, to the rank itself, so that its cost and the two-batch overlap's lanes can be
  // measured and checked without a second GPU.
  bool ep_self_exchange = false;
};

// Seconds per phase summed over steps of one kind, and the number of steps.
struct PhaseStats {
  std::map<std::string, double> seconds;
  int64_t steps = 0;
  // Bytes the steps had to move at least: the weights they touched (every attention and dense
  // weight, the routed experts that got rows, the LM head; W_UV only, not all of kv_b_proj) and
  // the KV cache rows they read, once each.
  double floor_bytes = 0;
};

// The groups a rank's forward talks to; null communicators mean a group of one.
struct ParallelComms {
  dist::Communicator* attn_tp = nullptr;
  dist::Communicator* ep = nullptr;
  // The ep group again, its collectives on the backend's lane 1 (the two-batch overlap's
  // exchanges); null: those go to `ep` (host communicators, whose calls are done when they return).
  dist::Communicator* ep_lane1 = nullptr;
};

class Model {
 public:
  Model(const Checkpoint& ckpt, backend::Backend& be, const ShardSpec& shard, ParallelComms comms,
        const ForwardOptions& opts);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return weights_.config(); }
  KvCache& cache() { return *cache_; }
  // Bytes one KV page takes over all layers, and the allocation of n_pages of them.
  int64_t page_bytes() const;
  // The KV cache's element type (resolved from ForwardOptions::kv_dtype at construction).
  DType kv_dtype() const { return kv_dtype_; }
  void allocate_cache(int64_t n_pages);
  ForwardOptions& options() { return opts_; }

  // Runs the batch; writes the wanted logits rows (vocab_size each) in batch order, positions in
  // order within a sequence. Identical on the ranks of one replica. With `argmax`: it gets the
  // argmax of every wanted row (computed in backend memory; -1 for rows of sequences that are
  // not argmax_only), and `logits` only the rows of sequences that are not argmax_only, so
  // greedy decoding moves a few bytes per sequence instead of a vocabulary of floats.
  // With `sampling` (and `argmax`), the rows that are not argmax_only are sampled instead.
  void forward(const std::vector<SeqInput>& batch, std::vector<float>& logits,
               std::vector<int32_t>* argmax = nullptr, const Sampling* sampling = nullptr);

  // forward() with argmax and sampling in two halves: launch() queues the step and the downloads
  // of its draws and returns while the backend may still run it; collect() waits for the draws
  // and hands them over as forward() would have (argmax: -1 for the sampled rows). The next step
  // may be launched before this one is collected (its prev_row sequences then take this step's
  // draws on the backend): at most two launched and not collected.
  void launch(const std::vector<SeqInput>& batch, std::span<const backend::SampleSpec> specs,
              std::span<const backend::LogitEdit> edits, backend::TokenMasks masks = {});
  // launch() in two halves, for draws whose edits and masks need the step before's draws on the
  // host: launch_forward() queues the step up to its logits (the argmax rows drawn too);
  // launch_sampling() then queues the sampling of the other rows and the draws' downloads. The
  // step before may be collected in between (the backend runs this one's forward meanwhile).
  // Nothing else is launched or forwarded between the two.
  void launch_forward(const std::vector<SeqInput>& batch);
  void launch_sampling(std::span<const backend::SampleSpec> specs, std::span<const backend::LogitEdit> edits,
                       backend::TokenMasks masks = {});
  void collect(std::vector<int32_t>& argmax, std::vector<backend::SampleOut>& samples);
  // Routed slots per expert of the last collected step (as expert_counts()), when asked for
  // before its launch: keep_expert_counts(true) makes each launch download them with the draws.
  void keep_expert_counts(bool on) { keep_counts_ = on; }
  const std::vector<int64_t>& collected_expert_counts() const { return collected_counts_; }
  // Whether a pure decode step of up to n tokens on this rank has no host wait inside: every MoE
  // layer keeps its counts in backend memory (the fixed-capacity experts, the padded exchange).
  bool decode_queued(int64_t n) const;

  // Routed slots per expert of the last forward on this rank: [n_layers * n_routed_experts].
  // Layers that kept their counts in backend memory (the fixed-capacity experts) are downloaded
  // here, on the first call after the step.
  const std::vector<int64_t>& expert_counts() const;
  // The most tokens any rank of the EP group feeds the coming step (every rank of the group told
  // the same, e.g. from the engine's step headers): the padded exchange's capacity then comes
  // from it with no collective of the model's own. For the next forward() only.
  void set_ep_step_tokens(int64_t most) { ep_step_tokens_ = most; }
  // With ForwardOptions::profile_phases: phase times of pure decode steps and of the others.
  const PhaseStats& phase_stats(bool decode) const { return decode ? phase_decode_ : phase_other_; }
  // With profile_phases: the backend's copy bandwidth (GB/s), measured before the KV cache is
  // allocated; a step's floor is its floor_bytes over this.
  double copy_bandwidth_gbs() const { return copy_gbs_; }

  // Decode graphs (ForwardOptions::cuda_graph_max_tokens, or DPA_CUDA_GRAPHS=1 with
  // DPA_MOE_FIXED_TOKENS=N covering the step): a pure decode step on a single-rank replica
  // (attn_tp 1, ep 1) whose shapes (tokens, the decode context rounded up to 256) and buffers
  // equal the previous step's is recorded by the backend, and later steps of those shapes replay
  // the recording instead of issuing every op (no host work, no launches inside the layers). What
  // happened so far:
  struct GraphStats {
    int64_t recorded = 0, replayed = 0, failed = 0;
    // Host wall time of the replayed steps: from the previous forward's return to this one's call
    // (the caller's share: sampling, outputs, scheduling), from the call to the replay (inputs
    // checked and uploaded), and from the replay to the return (the GPU's step and the downloads).
    // The first two are what the GPU waits for between steps.
    double between_s = 0, before_s = 0, replay_s = 0;
  };
  const GraphStats& graph_stats() const { return graph_stats_; }
  // Steps that ran as two micro-batches (ForwardOptions::two_batch_overlap_min_tokens) so far.
  int64_t two_batch_steps() const { return two_batch_steps_; }

 private:
  // What a MoE layer of one micro-batch holds between its stages (moe_route .. moe_finish).
  struct MoeStage {
    int64_t layer = -1, n = 0, my_n = 0, ks = 0, n_slots = 0;
    bool fixed = false, padded = false, shared_apart = false, gather_tp = false;
    float* hm = nullptr;  // this rank's slice of the layer's input
    float* out = nullptr;       // the layer's output rows (all of the micro-batch's)
    float* mine = nullptr;      // this rank's slice of them (out unless gathered over attn_tp)
    const float* weights = nullptr;
    const int32_t* order = nullptr;
    const int32_t* position = nullptr;
    int64_t* d_counts = nullptr;  // counts in backend memory (fixed, padded)
    std::vector<int64_t> counts;  // counts on the host (the others)
    EpExchange::Local in;
    const void* back = nullptr;         // the expert results moe_finish reads (f32, or back_dtype)
    DType back_dtype = DType::f32;
    const int32_t* back_rows = nullptr;
  };
  // One micro-batch of a step: the whole step, or one of its two halves under the two-batch
  // overlap: rows [row0, row0 + n) of the step's activations and inputs, with the sequences (or
  // the parts of them) those rows hold. A sequence the split cuts appears in both halves; the
  // first half's attention writes its part of the cache before the second half's reads it.
  struct Micro {
    std::vector<SeqInput> batch;
    int64_t row0 = 0, n = 0;
    int64_t pad = 0;                    // how many of its rows are the step's padding (the last ones)
    std::vector<int64_t> page_offset;   // where each of its sequences' page table starts in d_pages_
    // Decode: the single-token sequences taking the absorbed form, attended in one mla_decode.
    std::vector<int32_t> decode_rows;   // their rows in the micro-batch
    bool decode_contiguous = false;     // decode_rows == 0 .. n-1
    std::vector<bool> absorbed;  // per sequence: absorbs() of its tokens here
    bool any_absorbed = false, all_absorbed = true;
    backend::Buffer<int32_t> d_decode_rows, d_decode_offset, d_decode_ctx;
    // MoE state that lives across the exchange (the two-batch overlap interleaves the halves).
    backend::Buffer<float> gate_w, mine;
    backend::Buffer<int32_t> gate_ids, order, position;
    backend::Buffer<int64_t> d_expert_counts;  // [n_layers * (n_routed_experts + shared_pieces_)]
    backend::Buffer<int64_t> d_local_counts;   // padded exchange: [n_layers * local experts] rows received
    std::unique_ptr<EpExchange> ex;  // the rows' moves between the EP group's ranks
    MoeStage moe;
  };
  // A launched step's draws on their way to the host (two in turn): argmax of every wanted row
  // then the samples, in page-locked memory from the backend.
  // Page-locked memory from the backend, grown with headroom (hold: at least n bytes; what it
  // held is released, so nothing may still be copied from it).
  struct Pinned {
    void* p = nullptr;
    std::size_t bytes = 0;
    void hold(backend::Backend& be, std::size_t n);
  };
  struct Draws {
    Pinned host;
    int64_t n_rows = 0, n_keep = 0;
    bool argmax_ran = false;
    std::vector<int32_t> keep;  // the sampled rows (argmax -1)
    uint64_t ticket = 0;
    bool pending = false;
    // keep_expert_counts(): the step's counts, the host's part; the fixed layers' device counts
    // (and, for padded slices, the routing of their last rows) land at counts_at / ids_at.
    bool kept_counts = false, device_counts = false;
    std::vector<int64_t> counts;
    std::vector<uint8_t> fixed;
    int n_micro = 0;
    int64_t rows[2] = {}, pad[2] = {};
    std::size_t counts_at[2] = {}, ids_at[2] = {};
    // The step's logit edits and token masks: copied from here when the device reaches the copies.
    Pinned stage;
  };
  // A step whose logits are computed and whose kept rows (not argmax_only) are not sampled yet:
  // n_rows wanted rows, their argmax d_am (or null), the kept rows' logits in `kept`.
  struct Unsampled {
    bool waiting = false;
    int64_t n_rows = 0;
    std::vector<int32_t> keep;
    int32_t* d_am = nullptr;
    float* kept = nullptr;
  };
  Unsampled unsampled_;
  // The waiting step's edits, masks and samples, then (with draws) its downloads queued into draws.
  void sample_kept(const Sampling& sampling, Draws* draws);
  bool keep_counts_ = false;
  std::vector<int64_t> collected_counts_;
  // expert_counts()'s fold: the fixed layers' entries of `out` replaced by the device counts (all[i]:
  // micro-batch i's, host copies), less the padding rows of slices that hold some (ids[i]: their
  // routing; rows / pad: the slice's rows and padding rows).
  void fold_device_counts(std::vector<int64_t>& out, const std::vector<uint8_t>& fixed, int n_micro,
                          const int64_t* rows, const int64_t* pad, const int64_t* const* all,
                          const int32_t* const* ids) const;
  static std::size_t draws_offset(int64_t n_rows) {  // where the samples start
    return (static_cast<std::size_t>(n_rows) * sizeof(int32_t) + 15) / 16 * 16;
  }
  Draws draws_[2];
  int launch_slot_ = 0, collect_slot_ = 0;
  // The last step's wanted rows: where each one's draw is in backend memory (kArgmaxDraw:
  // d_argmax_; j >= 0: d_samples_[j]; kNoDraw: none), for the next step's prev_row sequences.
  static constexpr int32_t kArgmaxDraw = -1, kNoDraw = -2;
  std::vector<int32_t> prev_draws_;
  // launch()'s end: the downloads of the step's draws (argmax d_am of n_rows rows, samples d_out of
  // the rows in keep) and, with keep_expert_counts, of its expert counts, queued into d.
  void queue_draws(Draws& d, int64_t n_rows, const std::vector<int32_t>& keep, const int32_t* d_am,
                   const backend::SampleOut* d_out);
  // forward()'s body; with `draws`, the draws' downloads are queued into it instead of waited for.
  void run_step(const std::vector<SeqInput>& batch, std::vector<float>& logits, std::vector<int32_t>* argmax,
                const Sampling* sampling, Draws* draws);

  // Whether attention takes the absorbed form for a sequence of `tokens` new tokens: single tokens
  // (decode) unless expanded is forced, every sequence when absorbed is forced.
  bool absorbs(int64_t tokens) const {
    return opts_.attention == AttentionForm::absorbed || (opts_.attention == AttentionForm::automatic && tokens == 1);
  }
  // Splits the step's sequences into micro-batch m's rows [row0, row0 + n) (seq_pages: each
  // sequence's page-table offset; the step's padding rows attend as its first row does).
  void plan_micro(Micro& m, const std::vector<SeqInput>& batch, const std::vector<int64_t>& seq_pages, int64_t row0,
                  int64_t n, int32_t pad_offset, int32_t pad_ctx);

  // A sub-layer's input h = rms_norm(x) with weight w, or rms_norm(residual += x) when residual is
  // set: the sub-layer writes h in its first projection call (Backend::norm_linear), so that a
  // backend rounding the rows for its GEMMs rounds them as the norm writes them.
  struct PreNorm {
    float* residual;
    const float* x;
    const backend::WeightView& w;
  };
  // pre -> h [n, hidden] -> out [n, hidden] for the local heads of micro-batch m, all-reduced over
  // attn_tp.
  void attention(int64_t layer, const Micro& m, const PreNorm& pre, float* h, float* out);
  // h [n, hidden] -> out [n, hidden]: dense MLP (h from pre first, when given), or MoE with
  // dispatch/combine over ep.
  void mlp(const MlpWeights& w, const PreNorm* pre, float* h, int64_t n, float* out);
  // The MoE layer of micro-batch m in its stages: routing and the shared experts (and the padded
  // exchange's packing), the exchange there, the local experts, the exchange back, the combine.
  // moe() runs them in a row; the two-batch overlap runs the exchanges on lane 1.
  void moe(int64_t layer, Micro& m, const PreNorm& pre, float* h, float* out);
  void moe_route(int64_t layer, Micro& m, const PreNorm& pre, float* h, float* out);
  void moe_shared(Micro& m);  // the shared experts apart from the routed ones (route runs them, or the caller)
  void moe_send(Micro& m);
  // Queues work() on lane 1 behind what lane 0 queued so far; returns lane 1's mark after it (the
  // current lane is 0 again).
  uint64_t on_lane1(const std::function<void()>& work);
  void moe_experts(Micro& m);
  void moe_return(Micro& m);
  void moe_finish(Micro& m);
  // The embedding and every layer of the step's n tokens: residual gets the last hidden states.
  void layers(int64_t n, float* residual, float* h, float* out);
  // The same in two micro-batches (two-batch overlap).
  void layers_tbo(float* residual, float* h, float* out);
  // Decode graphs: whether this step may take them, and layers() through them.
  bool graphable(int64_t n) const;
  void layers_graphed(int64_t n, float* residual, float* h, float* out);
  void drop_graphs();

  template <typename T>
  T* scratch(backend::Buffer<T>& b, int64_t n) {
    const T* before = b.data();
    b.ensure(be_, static_cast<std::size_t>(std::max<int64_t>(n, 1)));
    if (b.data() != before) ++scratch_epoch_;  // a recorded graph holding the old address is stale
    return b.data();
  }
  // Copies host data into a scratch buffer of backend memory (grown with headroom: page tables
  // grow a page at a time).
  template <typename T>
  T* upload(backend::Buffer<T>& b, std::span<const T> host) {
    const std::size_t n = host.size();
    if (b.ensure_headroom(be_, n)) ++scratch_epoch_;  // a recorded graph holding the old address is stale
    if (n) be_.upload(b.data(), host.data(), n * sizeof(T));
    return b.data();
  }
  template <typename T>
  T* upload(backend::Buffer<T>& b, const std::vector<T>& host) {
    return upload(b, std::span<const T>(host));
  }
  // The same from page-locked memory of the backend's (host_alloc) that stays unchanged until the
  // copy has run: copied from where it is, not through the backend's staging.
  template <typename T>
  T* upload_pinned(backend::Buffer<T>& b, std::span<const T> host) {
    const std::size_t n = host.size();
    if (b.ensure_headroom(be_, n)) ++scratch_epoch_;
    if (n) be_.upload_pinned(b.data(), host.data(), n * sizeof(T));
    return b.data();
  }
  void prepare_weights();
  struct ExchangeTypes {
    DType results = DType::f32, rows = DType::f32;
  };
  ExchangeTypes exchange_types();  // collective over the EP group
  // Profiling: bytes of the weights every step reads; adds the routed experts that got rows.
  int64_t fixed_weight_bytes();
  void add_expert_bytes(int64_t layer, const int64_t* counts, int64_t n_local);
  void mark(const char* phase) {
    if (opts_.profile_phases) be_.phase_mark(phase);
  }

  ModelWeights weights_;
  backend::Backend& be_;
  ShardSpec shard_;
  ParallelComms comms_;
  ForwardOptions opts_;
  DType kv_dtype_ = DType::f32;
  PhaseStats phase_decode_, phase_other_;
  // Profiling: the weight bytes every step touches, this step's bytes so far, copy bandwidth.
  int64_t floor_fixed_bytes_ = 0, step_bytes_ = 0;
  double copy_gbs_ = 0;
  std::unique_ptr<KvCache> cache_;
  backend::Buffer<float> inv_freq_;
  backend::RopeParams rope_;
  // Per layer, in backend memory: W_UK^T of the local heads [H_local * kv_lora, nope] and the
  // noaux_tc correction bias.
  std::vector<backend::WeightView> w_uk_;
  std::vector<backend::Buffer<float>> bias_;
  // Per layer, the local experts' weights as arrays (moe_experts).
  std::vector<std::vector<backend::WeightView>> expert_gate_, expert_up_, expert_down_;
  mutable std::vector<int64_t> expert_counts_;
  // Padding rows of this step (ForwardOptions::decode_bucket; copies of the first row, so they
  // route as it does): the statistics take them out again, by the routing of this rank's last
  // row, which is one of them whenever its slice holds any (moe(), expert_counts()).
  int64_t step_rows_ = 0, step_pad_rows_ = 0;
  // This rank's slice [begin, begin + rows) of a replica's n tokens, and how many of its rows
  // are the step's padding.
  struct Slice {
    int64_t begin = 0, rows = 0, pad = 0;
  };
  Slice my_slice(const Micro& m) const;
  void agree_ep_capacity(int64_t n);
  int64_t ep_step_tokens_ = -1;  // set_ep_step_tokens() for the coming step; -1: none
  // Where attn_tp rank r's slice of n tokens starts (rank tp's: n).
  int64_t slice_begin(int64_t n, int r) const { return n * r / shard_.attn_tp_size; }
  // Experimental (DPA_MOE_FIXED_TOKENS=N, 0: off): with ep 1 and at most N tokens on the rank, a
  // MoE layer runs moe_experts_fixed with capacity = the tokens rounded up to 16 and its counts
  // stay in backend memory (no host wait in the layer); those layers are marked here.
  int64_t moe_fixed_tokens_ = 0;
  // A decode step's q and kv_a in one product where the weights allow (LayerWeights::q_kv_a);
  // DPA_FUSE_Q_KV_A=0: apart.
  bool fuse_q_kv_a_ = true;
  // The experts' results in bf16 where their weights are bf16 (as the checkpoint's bf16 down
  // projection gives them): half the bytes written, exchanged back and combined.
  // DPA_MOE_BF16_RESULTS=0: f32.
  bool bf16_results_ = true;
  // The tokens' rows dispatched to bf16 experts in bf16 (half the bytes) where the backend's
  // experts read them rounded anyway (Backend::bf16_expert_rows: CUDA). DPA_EP_BF16_ROWS=0: f32;
  // =1: bf16 on any backend (the CPU goldens take that path so).
  bool bf16_rows_ = false;
  // This step's padded-exchange capacity in tokens (ForwardOptions::ep_padded_max_tokens): the
  // largest slice of the EP group (of a micro-batch's, under the two-batch overlap) rounded up to
  // 16, agreed at the step's start; 0: exact exchange.
  int64_t ep_cap_tokens_ = 0;
  // The MoE layers exchange rows: ep > 1, or the experiment ForwardOptions::ep_self_exchange.
  bool exchange_ = false;
  // This step's micro-batches: 1, or 2 under the two-batch overlap (agreed with the capacity).
  int n_micro_ = 1;
  Micro micro_[2];
  int64_t two_batch_steps_ = 0;
  backend::Buffer<int64_t> d_ep_max_;
  // Per layer: 1 fixed-capacity experts, 2 padded exchange (counts in backend memory), 0 neither.
  std::vector<uint8_t> fixed_layers_;
  mutable bool counts_on_device_ = false;
  // Shared experts inside the fixed-capacity experts: each MoE layer's shared MLP as
  // shared_pieces_ pieces of a routed expert's size after its local experts in expert_gate_ /
  // expert_up_ / expert_down_ (gate and up: row slices; down: its column blocks, copied apart to
  // the routed experts' layout in shared_down_host_, kept while the model lives: the backend's
  // copies are keyed by host address), run in the same two launches as the routed ones. 0: the
  // shared MLP runs apart (the grouped path, ep > 1, or shapes that do not split).
  int64_t shared_pieces_ = 0;
  std::vector<std::vector<unsigned char>> shared_down_host_;
  void split_shared_experts();

  // This step's inputs in backend memory, and scratch activations reused across steps.
  backend::Buffer<int32_t> d_ids_, d_pages_, d_rows_, d_argmax_, d_keep_;
  backend::Buffer<int64_t> d_pos_, d_slots_;
  bool decode_contiguous_ = false;  // every row of the step is a decode row (a pure decode step)
  int64_t profile_decode_step_ = 0;  // DPA_PROFILE_DECODE_STEP: the pure decode step a profiler records (0: none)
  int64_t decode_steps_seen_ = 0;    // pure decode steps so far (counted only for that window)
  int64_t decode_max_ctx_ = 0;      // the decode rows' longest context (rounded up under graphs)
  backend::Buffer<float> dq_, dq_lat_, dq_pe_, dout_lat_;
  backend::Buffer<float> residual_, h_, out_, picked_, logits_, kept_;
  backend::Buffer<float> q_, qa_, kva_, o_, o_abs_, q_lat_, q_pe_, qn_, tmp_, out_lat_, lat_h_, vh_;
  backend::Buffer<float> ctx_lat_, kvb_, k_pe_, k_, v_;
  backend::Buffer<float> g_, u_;
  backend::Buffer<float> router_logits_, expert_out_;
  backend::Buffer<uint16_t> expert_out_bf16_;
  backend::Buffer<backend::LogitEdit> d_edits_;
  backend::Buffer<backend::SampleSpec> d_specs_;
  backend::Buffer<uint32_t> d_masks_;
  backend::Buffer<int32_t> d_mask_rows_;
  backend::Buffer<backend::SampleOut> d_samples_;

  // Decode graphs (see graph_stats). A recording is valid while the buffers it addresses stay:
  // the key holds the step's shapes and the epochs of model and backend allocations.
  struct GraphKey {
    int64_t tokens = 0, max_ctx = 0, ep_cap = 0, micros = 1;
    uint64_t scratch_epoch = 0, workspace_epoch = 0;
    const void* cache = nullptr;
    auto operator<=>(const GraphKey&) const = default;
  };
  bool graphs_ = false;
  bool any_moe_ = false;        // some layer is MoE (graphs then need the fixed-capacity experts)
  uint64_t scratch_epoch_ = 0;  // bumped whenever scratch() moves a buffer
  struct Recording {
    void* graph = nullptr;
    uint64_t used = 0;  // graph_clock_ at its last replay: the least recent goes first when full
  };
  std::map<GraphKey, Recording> graphs_map_;
  uint64_t graph_clock_ = 0;
  std::optional<GraphKey> last_graph_key_;  // the previous graphable step's key
  GraphStats graph_stats_;
  double last_return_s_ = -1;  // steady clock at the last forward's return (GraphStats' host times)
  backend::Buffer<int32_t> d_take_argmax_, d_take_sampled_;
  struct HostInputs {  // forward()'s host side of the step's inputs
    std::vector<int32_t> ids, pages;
    std::vector<int32_t> take_argmax, take_sampled;  // (row, source) pairs of the prev_row rows
    std::vector<int32_t> prev_draws;                 // the previous step's prev_draws_, read this step
    std::vector<int64_t> positions, slots, seq_pages;
  } host_;
};

}  // namespace dpa::model
