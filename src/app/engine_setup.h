// What serve, batch and bench share: the engine and model flags, loading the checkpoint with
// its tokenizer and chat template, building the executor and the engine, and the signal flag.
#pragma once

#include <atomic>
#include <memory>
#include <string>

#include "app/cli.h"
#include "dist/groups.h"
#include "engine/engine.h"
#include "engine/model_executor.h"
#include "model/checkpoint.h"
#include "serve/openai_request.h"
#include "text/chat_template.h"
#include "text/tokenizer.h"

namespace dpa::app {

struct EngineFlags {
  std::string model;
  std::string served_model_name;
  int64_t page_size = 16;
  int64_t max_total_tokens = 0;  // KV tokens per replica (0: 16384 on the CPU, what memory allows on GPUs)
  double gpu_memory_utilization = 0.9;
  std::string kv_cache_dtype = "auto";  // auto | float32 | bfloat16
  bool profile_phases = false;          // bench --profile-phases
  bool enforce_eager = false;           // no decode graphs (vLLM's flag)
  int64_t cuda_graph_max_bs = 512;      // decode graphs for steps of up to this many sequences (SGLang's flag)
  std::string ep_exchange = "exact";     // ep > 1: "exact" (counts via the host) or "padded" (fixed-size blocks)
  bool disable_overlap_schedule = false;  // SGLang's flag: schedule a step only once the one before is done
  bool two_batch_overlap = false;        // SGLang's --enable-two-batch-overlap
  int64_t tbo_min_tokens = 0;            // ... for steps of at least this many tokens a rank (0: auto)
  int64_t max_num_seqs = 256;
  std::string scheduling_policy = "fcfs";  // fcfs | priority (vLLM's) | lpm (SGLang's --schedule-policy lpm)
  int64_t max_num_batched_tokens = 0;  // 0: 8192 on GPUs, 4096 on the CPU
  int64_t max_model_len = 0;  // 0: min(max_position_embeddings, max_total_tokens)
  engine::RouterConfig router;  // --router-policy and the cache_aware parameters
  bool enable_prefix_caching = true;  // --enable-prefix-caching[=true|false]
  bool no_prefix_caching = false;     // --no-prefix-caching
  bool collect_expert_stats = false;  // tokens per expert to rank 0 every step (serve: /metrics)
  double watchdog_timeout = 600;
  int fault_rank = -1;         // test only: this rank hangs at step fault_step
  int64_t fault_step = -1;
  uint64_t seed = 0;
  std::string chat_template;             // --chat-template: a file or the template itself (default: the tokenizer's)
  std::string tool_call_parser = "auto";  // auto | none | deepseek_v3 | deepseek_v31 (vLLM's names)
  bool enable_auto_tool_choice = false;   // vLLM's flag, accepted; tool_choice "auto" follows the parser
  std::string reasoning_parser = "none";   // none | deepseek_r1
};
void add_engine_options(po::options_description& desc, EngineFlags& f);

// Everything one rank needs to run requests. Built collectively on every rank.
struct EngineStack {
  std::unique_ptr<dist::Groups> groups;
  std::unique_ptr<model::Checkpoint> checkpoint;
  std::unique_ptr<text::Tokenizer> tokenizer;        // null when the checkpoint has none
  std::unique_ptr<text::ChatTemplate> chat_template;  // null when none
  std::unique_ptr<engine::CheckpointExecutor> executor;
  std::unique_ptr<engine::Engine> engine;
  serve::ModelInfo info;
};
EngineStack build_engine(Context& ctx, const EngineFlags& f);

// Set by SIGTERM, SIGINT and SIGUSR1 (installed by install_signal_handlers). Only rank 0 acts on
// it; the other ranks follow rank 0's shutdown through the step protocol.
const std::atomic<bool>& interrupted();
void install_signal_handlers();

}  // namespace dpa::app
