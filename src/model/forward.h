// The model forward of one rank: embedding -> layers (MLA attention with heads split inside
// attn_tp, dense MLP or MoE with experts sharded over ep) -> LM head. Collective over attn_tp and
// ep: every rank calls forward() on the same steps, with an empty batch when it has no tokens.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "backend/backend.h"
#include "dist/communicator.h"
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
};

// How attention reads the cache: expanded k/v (prefill form), absorbed latent (decode form), or
// auto: expanded for chunks of several tokens, absorbed for single tokens.
enum class AttentionForm : uint8_t { automatic, expanded, absorbed };

struct ForwardOptions {
  int64_t page_size = 16;
  int64_t n_pages = 256;
  AttentionForm attention = AttentionForm::automatic;
};

// The groups a rank's forward talks to; null communicators mean a group of one.
struct ParallelComms {
  dist::Communicator* attn_tp = nullptr;
  dist::Communicator* ep = nullptr;
};

class Model {
 public:
  Model(const Checkpoint& ckpt, backend::Backend& be, const ShardSpec& shard, ParallelComms comms,
        const ForwardOptions& opts);

  const ModelConfig& config() const { return weights_.config(); }
  KvCache& cache() { return cache_; }
  ForwardOptions& options() { return opts_; }

  // Runs the batch; writes the wanted logits rows (vocab_size each) in batch order, positions in
  // order within a sequence. Identical on the ranks of one replica.
  void forward(const std::vector<SeqInput>& batch, std::vector<float>& logits);

 private:
  // h [n, hidden] -> out [n, hidden] for the local heads, all-reduced over attn_tp.
  void attention(int64_t layer, const std::vector<SeqInput>& batch, const float* h, int64_t n,
                 const std::vector<int64_t>& positions, float* out);
  // h [n, hidden] -> out [n, hidden]: dense MLP, or MoE with dispatch/combine over ep.
  void mlp(const MlpWeights& w, const float* h, int64_t n, float* out);
  void moe(int64_t layer, const float* h, int64_t n, float* out);

  ModelWeights weights_;
  backend::Backend& be_;
  ShardSpec shard_;
  ParallelComms comms_;
  ForwardOptions opts_;
  KvCache cache_;
  std::vector<float> inv_freq_;
  backend::RopeParams rope_;
};

}  // namespace dpa::model
