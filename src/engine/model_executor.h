// The ModelExecutor backed by a real checkpoint: owns this rank's communicators, backend and
// model::Model (its heads and experts only), and turns scheduled chunks into model inputs.
#pragma once

#include <memory>

#include "dist/communicator.h"
#include "dist/groups.h"
#include "engine/executor.h"
#include "model/checkpoint.h"
#include "model/forward.h"

namespace dpa::engine {

struct ExecutorOptions {
  int64_t page_size = 16;
  int64_t n_pages = 256;
  int64_t max_position = 0;  // 0: the model's max_position_embeddings
};

class CheckpointExecutor final : public ModelExecutor {
 public:
  // Collective over the world (communicator creation). Throws dpa::Error when heads or experts
  // do not divide by attn_tp / ep (naming the flag).
  CheckpointExecutor(const model::Checkpoint& ckpt, const dist::Groups& groups, const ExecutorOptions& opt);
  ~CheckpointExecutor() override;

  void forward(const std::vector<SeqChunk>& batch, std::vector<float>& logits) override;
  int64_t vocab_size() const override;
  int64_t page_size() const override { return opt_.page_size; }
  int64_t num_pages() const override { return opt_.n_pages; }
  int64_t max_position() const override;

 private:
  ExecutorOptions opt_;
  std::unique_ptr<dist::Communicator> attn_tp_, ep_;
  std::unique_ptr<backend::Backend> backend_;
  std::unique_ptr<model::Model> model_;
  std::vector<model::SeqInput> inputs_;
};

// Checks the model against the layout on every rank (same decision everywhere): heads divisible
// by attn_tp, routed experts by ep. Throws ConfigError naming --dp or --ep.
void check_model_layout(const model::ModelConfig& cfg, const dist::GroupLayout& g);

}  // namespace dpa::engine
