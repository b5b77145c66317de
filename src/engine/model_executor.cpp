// CheckpointExecutor: communicators, CPU backend, model, chunk conversion.
#include "engine/model_executor.h"

#include <fmt/format.h>

#include "backend/cpu/cpu_backend.h"
#include "core/error.h"
#include "dist/mpi_communicator.h"

namespace dpa::engine {

void check_model_layout(const model::ModelConfig& cfg, const dist::GroupLayout& g) {
  if (cfg.num_attention_heads % g.attn_tp != 0)
    throw ConfigError("dp", fmt::format("attn_tp = world {} / dp {} = {} does not divide the model's {} attention heads",
                                        g.world_size, g.dp, g.attn_tp, cfg.num_attention_heads));
  if (cfg.n_routed_experts > 0 && cfg.n_routed_experts % g.ep != 0)
    throw ConfigError("ep", fmt::format("{} does not divide the model's {} routed experts", g.ep, cfg.n_routed_experts));
}

CheckpointExecutor::CheckpointExecutor(const model::Checkpoint& ckpt, const dist::Groups& groups,
                                       const ExecutorOptions& opt)
    : opt_(opt) {
  const auto& g = groups.layout();
  check_model_layout(ckpt.config(), g);
  attn_tp_ = dist::make_mpi_communicator(groups.attn_tp());
  ep_ = dist::make_mpi_communicator(groups.ep());
  backend_ = std::make_unique<backend::CpuBackend>();
  model::ShardSpec shard{g.attn_tp, g.attn_tp_rank, g.ep, g.ep_rank};
  model::ForwardOptions fo;
  fo.page_size = opt.page_size;
  fo.n_pages = opt.n_pages;
  model_ = std::make_unique<model::Model>(ckpt, *backend_, shard,
                                          model::ParallelComms{attn_tp_.get(), ep_.get()}, fo);
}

CheckpointExecutor::~CheckpointExecutor() = default;

void CheckpointExecutor::forward(const std::vector<SeqChunk>& batch, std::vector<float>& logits) {
  inputs_.clear();
  for (const auto& c : batch)
    inputs_.push_back({c.tokens, c.start, c.pages, c.need_logits ? model::LogitsWanted::last : model::LogitsWanted::none});
  model_->forward(inputs_, logits);
}

int64_t CheckpointExecutor::vocab_size() const { return model_->config().vocab_size; }

int64_t CheckpointExecutor::max_position() const {
  return opt_.max_position > 0 ? opt_.max_position : model_->config().max_position_embeddings;
}

}  // namespace dpa::engine
