// The ModelExecutor backed by a real checkpoint: owns this rank's communicators, backend and
// model::Model (its heads and experts only), and turns scheduled chunks into model inputs.
#pragma once

#include <memory>
#include <optional>

#include "dist/communicator.h"
#include "dist/groups.h"
#include "engine/executor.h"
#include "model/checkpoint.h"
#include "model/forward.h"

namespace dpa::engine {

struct ExecutorOptions {
  int64_t page_size = 16;
  int64_t n_pages = 256;     // KV pages per replica on the CPU
  int64_t max_position = 0;  // 0: the model's max_position_embeddings
  // CUDA: this rank's GPU (-1: the CPU backend with MPI communicators), and the share of the
  // GPU's memory that weights + KV pages may take; the KV pages are what remains after the
  // weights, the same count on every rank (the smallest).
  int gpu = -1;
  double gpu_memory_utilization = 0.9;
  // Ranks of this node that share this rank's GPU (DPA_SHARE_GPU=1; checks of multi-rank code on
  // fewer GPUs): above 1, staged MPI communicators (model/staged_communicator.h) instead of NCCL,
  // which refuses two ranks on one device, and the KV budget split among them.
  int gpu_sharers = 1;
  int64_t max_pages = 0;     // cap on the pages (0: none)
  std::optional<DType> kv_dtype;  // KV cache elements (unset: the model's choice, see ForwardOptions)
  bool profile_phases = false;    // time the phases of each step (phase_stats())
  bool keep_expert_counts = false;  // expert_counts() of each collected step (the engine's expert statistics)
  // GPUs: pure decode steps of up to this many tokens on a single-rank replica run as recorded
  // CUDA graphs, over the fixed-capacity experts (ForwardOptions::cuda_graph_max_tokens); 0: every
  // step eager (--enforce-eager). Ignored on the CPU.
  int64_t cuda_graph_max_tokens = 512;
  // ep > 1: steps whose largest token slice over the EP group is at most this many take the
  // padded exchange (ForwardOptions::ep_padded_max_tokens; CPU and GPUs); 0: the exact one.
  int64_t ep_padded_max_tokens = 0;
  // With the padded exchange: steps of at least this many tokens a rank run as two overlapped
  // micro-batches (ForwardOptions::two_batch_overlap_min_tokens); 0: off.
  int64_t two_batch_overlap_min_tokens = 0;
  // Experiment (DPA_EP_SELF_EXCHANGE=1): with ep 1 the MoE layers still exchange, with the rank
  // itself (ForwardOptions::ep_self_exchange).
  bool ep_self_exchange = false;
};

class CheckpointExecutor final : public ModelExecutor {
 public:
  // Collective over the world (communicator creation). Throws dpa::Error when heads or experts
  // do not divide by attn_tp / ep (naming the flag).
  CheckpointExecutor(const model::Checkpoint& ckpt, const dist::Groups& groups, const ExecutorOptions& opt);
  ~CheckpointExecutor() override;

  void launch_forward(const std::vector<SeqChunk>& batch) override;
  void launch_sampling(std::span<const backend::SampleSpec> specs, std::span<const backend::LogitEdit> edits,
                       backend::TokenMasks masks) override;
  void collect(std::vector<backend::SampleOut>& samples, std::vector<int32_t>& argmax) override;
  int64_t vocab_size() const override;
  void set_ep_step_tokens(int64_t most) override;
  bool queues_decode(int64_t most) const override { return model_->decode_queued(most); }
  int64_t page_size() const override { return opt_.page_size; }
  int64_t num_pages() const override { return opt_.n_pages; }
  int64_t max_position() const override;
  const std::vector<int64_t>& expert_counts() const override { return model_->collected_expert_counts(); }
  const model::PhaseStats& phase_stats(bool decode) const { return model_->phase_stats(decode); }
  double copy_bandwidth_gbs() const { return model_->copy_bandwidth_gbs(); }
  int64_t n_layers() const override;
  int64_t n_experts() const override;

 private:
  void size_cache_from_memory(const dist::Groups& groups);

  ExecutorOptions opt_;
  // Destroyed in reverse: the model, then the NCCL communicators (they synchronise the backend's
  // streams they were bound to), then the backend that owns those streams.
  std::unique_ptr<backend::Backend> backend_;
  std::unique_ptr<dist::Communicator> attn_tp_, ep_, ep_lane1_;
  std::unique_ptr<model::Model> model_;
  std::vector<model::SeqInput> inputs_;
};

// Checks the model against the layout on every rank (same decision everywhere): heads divisible
// by attn_tp, routed experts by ep. Throws ConfigError naming --dp or --ep.
void check_model_layout(const model::ModelConfig& cfg, const dist::GroupLayout& g);

}  // namespace dpa::engine
