// CheckpointExecutor: communicators, CPU backend, model, chunk conversion.
#include "engine/model_executor.h"

#include <fmt/format.h>

#include <algorithm>

#include "backend/cpu/cpu_backend.h"
#include "backend/cuda/device.h"
#include "core/error.h"
#include "core/log.h"
#include "dist/mpi_communicator.h"
#include "dist/runtime.h"
#include "model/staged_communicator.h"
#ifdef DPA_HAVE_CUDA
#include "backend/cuda/cuda_backend.h"
#include "dist/nccl_communicator.h"
#endif

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
  model::ForwardOptions fo;
  fo.page_size = opt.page_size;
  fo.n_pages = opt.n_pages;
  fo.kv_dtype = opt.kv_dtype;
  fo.profile_phases = opt.profile_phases;
  fo.ep_padded_max_tokens = opt.ep_padded_max_tokens;
  fo.two_batch_overlap_min_tokens = opt.two_batch_overlap_min_tokens;
  fo.ep_self_exchange = opt.ep_self_exchange;
  if (opt.gpu < 0) {
    attn_tp_ = dist::make_mpi_communicator(groups.attn_tp());
    ep_ = dist::make_mpi_communicator(groups.ep());
    backend_ = std::make_unique<backend::CpuBackend>();
  } else {
#ifdef DPA_HAVE_CUDA
    // NCCL on the backend's stream, so collectives are ordered with the ops around them.
    backend_ = backend::make_cuda_backend(opt.gpu);
    auto device_comm = [&](MPI_Comm c, void* stream) {
      return opt.gpu_sharers > 1 ? model::make_staged_communicator(dist::make_mpi_communicator(c), *backend_)
                                 : dist::make_nccl_communicator(c, stream);
    };
    if (g.attn_tp > 1) attn_tp_ = device_comm(groups.attn_tp(), backend_->stream());
    const bool exchange = g.ep > 1 || opt.ep_self_exchange;
    if (exchange) ep_ = device_comm(groups.ep(), backend_->stream());
    // The two-batch overlap's exchanges run on the backend's lane 1: the group again, there.
    if (exchange && opt.ep_padded_max_tokens > 0 && opt.two_batch_overlap_min_tokens > 0)
      ep_lane1_ = device_comm(groups.ep(), backend_->lane_stream(1));
    fo.n_pages = 0;  // sized from the memory the weights leave
    fo.cuda_graph_max_tokens = opt.cuda_graph_max_tokens;
#else
    throw Error("this dpa_serve was built without CUDA");
#endif
  }
  model::ShardSpec shard{g.attn_tp, g.attn_tp_rank, g.ep, g.ep_rank};
  model_ = std::make_unique<model::Model>(ckpt, *backend_, shard,
                                          model::ParallelComms{attn_tp_.get(), ep_.get(), ep_lane1_.get()}, fo);
  model_->keep_expert_counts(opt.keep_expert_counts);
  if (opt.gpu >= 0) size_cache_from_memory(groups);
}

void CheckpointExecutor::size_cache_from_memory(const dist::Groups& groups) {
  std::size_t free_b = 0, total_b = 0;
  cuda::memory_info(&free_b, &total_b);
  const double used = static_cast<double>(total_b - free_b);
  const double budget =
      (opt_.gpu_memory_utilization * static_cast<double>(total_b) - used) / std::max(opt_.gpu_sharers, 1);
  long long pages = budget > 0 ? static_cast<long long>(budget / static_cast<double>(model_->page_bytes())) : 0;
  if (opt_.max_pages > 0) pages = std::min<long long>(pages, opt_.max_pages);
  long long min_pages = 0;
  DPA_CHECK_MPI(MPI_Allreduce(&pages, &min_pages, 1, MPI_LONG_LONG, MPI_MIN, groups.world()));
  if (min_pages < 1)
    throw ConfigError("gpu-memory-utilization",
                      fmt::format("no room for KV pages: the weights use {:.1f} of {:.1f} GiB on some GPU and "
                                  "--gpu-memory-utilization {} allows {:.1f} GiB",
                                  used / (1 << 30), static_cast<double>(total_b) / (1 << 30),
                                  opt_.gpu_memory_utilization, opt_.gpu_memory_utilization * static_cast<double>(total_b) / (1 << 30)));
  opt_.n_pages = min_pages;
  model_->allocate_cache(min_pages);
  if (groups.layout().world_rank == 0)
    log::info("KV cache: {} pages of {} tokens per replica ({:.1f} GiB per rank, {}); weights and runtime took {:.1f} GiB",
              min_pages, opt_.page_size, static_cast<double>(min_pages * model_->page_bytes()) / (1 << 30),
              dtype_name(model_->kv_dtype()), used / (1 << 30));
}

CheckpointExecutor::~CheckpointExecutor() = default;

void CheckpointExecutor::set_ep_step_tokens(int64_t most) { model_->set_ep_step_tokens(most); }

void CheckpointExecutor::launch_forward(const std::vector<SeqChunk>& batch) {
  inputs_.clear();
  for (const auto& c : batch)
    inputs_.push_back({c.tokens, c.start, c.pages, c.need_logits ? model::LogitsWanted::last : model::LogitsWanted::none,
                       c.argmax_only, c.prev_row, c.scored_rows});
  model_->launch_forward(inputs_);
}

void CheckpointExecutor::launch_sampling(std::span<const backend::SampleSpec> specs,
                                         std::span<const backend::LogitEdit> edits, backend::TokenMasks masks) {
  model_->launch_sampling(specs, edits, masks);
}

void CheckpointExecutor::collect(std::vector<backend::SampleOut>& samples, std::vector<int32_t>& argmax) {
  model_->collect(argmax, samples);
}

int64_t CheckpointExecutor::vocab_size() const { return model_->config().vocab_size; }

int64_t CheckpointExecutor::n_layers() const { return model_->config().num_hidden_layers; }
int64_t CheckpointExecutor::n_experts() const { return model_->config().n_routed_experts; }

int64_t CheckpointExecutor::max_position() const {
  return opt_.max_position > 0 ? opt_.max_position : model_->config().max_position_embeddings;
}

}  // namespace dpa::engine
