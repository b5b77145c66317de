// The engine's view of the model: one forward over this rank's slice of the step. The real
// implementation (model/) runs the parallel forward; every rank calls forward() on every step
// that any rank has work, with an empty batch when it has none, so that collectives match.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "backend/backend.h"

namespace dpa::engine {

// The tokens of one sequence fed in one step: positions [start, start + tokens.size()).
struct SeqChunk {
  std::span<const int32_t> tokens;
  int64_t start = 0;                // tokens of this sequence already in the KV cache
  std::span<const int32_t> pages;   // the sequence's page table (covers start + tokens.size())
  bool need_logits = false;         // logits of the chunk's last position wanted
  bool argmax_only = false;         // only their argmax is (greedy, no logprobs, no penalties)
  // >= 0: a decode chunk whose one token is the previous launch's draw for its wanted row
  // prev_row (in that batch's need_logits order); tokens[0] is a placeholder. The executor takes
  // it where the draws are, so the step can be launched before the previous one is collected.
  int32_t prev_row = -1;
  // A prompt being scored (SamplingParams::prompt_logprobs): the logits of the chunk's first
  // scored_rows positions are wanted too, ahead of the need_logits row, each drawn under its own
  // spec (a forced pick: the prompt's next token). Never with argmax_only.
  int32_t scored_rows = 0;
};

class ModelExecutor {
 public:
  virtual ~ModelExecutor() = default;
  // One step's forward in three parts. launch_forward() is collective over the world and may
  // return before the device has run the step; it reads the chunks' spans before it returns.
  // launch_sampling() (local; next, before any other launch) queues the draws of the rows that
  // are not argmax_only, so that their edits and masks may wait for the step before to be
  // collected and committed while the device runs this one's forward. collect() hands over
  // that step's draws: for the wanted rows (each chunk's scored rows, then its need_logits row),
  // in batch order, `argmax` gets one entry each (the row's argmax, lowest id on ties, for
  // argmax_only chunks; -1 otherwise) and `samples` one entry per row of a chunk that is not
  // argmax_only, drawn under specs[i] after the edits (LogitEdit::row indexes specs) and the
  // masks (TokenMasks::rows index specs too), where the logits are. Identical on the ranks of
  // one replica. The next step may be launched before this one is collected (two in flight at
  // most); collects come in launch order.
  virtual void launch_forward(const std::vector<SeqChunk>& batch) = 0;
  virtual void launch_sampling(std::span<const backend::SampleSpec> specs, std::span<const backend::LogitEdit> edits,
                               backend::TokenMasks masks) = 0;
  virtual void collect(std::vector<backend::SampleOut>& samples, std::vector<int32_t>& argmax) = 0;
  // Before forward(): the most tokens any rank of this rank's EP group feeds the coming step (from
  // the step headers every rank holds), so that a model sizing its exchange by it needs no
  // collective of its own. Identical on the group's ranks; optional.
  virtual void set_ep_step_tokens(int64_t most) { (void)most; }
  // Whether a pure decode step of up to `most` tokens a rank runs with no host wait inside, so
  // that launch() returns while the device still runs it (what makes overlapping the host's work
  // worth a step of latency). Identical on every rank.
  virtual bool queues_decode(int64_t most) const { (void)most; return false; }
  virtual int64_t vocab_size() const = 0;
  virtual int64_t page_size() const = 0;
  virtual int64_t num_pages() const = 0;      // KV pages this replica's cache holds
  virtual int64_t max_position() const = 0;   // longest sequence the model takes
  // Routed slots per expert of the last collected step on this rank, [n_layers * n_experts]
  // (zeros for dense layers); empty when the model has no routed experts or was not asked to
  // keep them (ExecutorOptions::keep_expert_counts).
  virtual const std::vector<int64_t>& expert_counts() const {
    static const std::vector<int64_t> none;
    return none;
  }
  virtual int64_t n_layers() const { return 0; }
  virtual int64_t n_experts() const { return 0; }
};

}  // namespace dpa::engine
