// Per-replica continuous-batching scheduler. Every rank of a replica runs the same scheduler on
// the same inputs, so they agree on every batch without talking. Each step: running sequences
// decode one token, then prefill chunks (sequences mid-prefill first, then waiting ones in the
// policy's order, FIFO by default) fill the --max-num-batched-tokens budget under --max-num-seqs.
// When pages run out a victim (by default the most recently admitted sequence) is preempted: its
// pages are freed and it recomputes later, which leaves greedy outputs unchanged.
// Prefix caching (SchedulerConfig::enable_prefix_caching; the CLI's --enable-prefix-caching is on
// by default): a sequence admitted from the queue first takes the cached pages of its longest
// cached prefix, at most (tokens - 1) / page_size of them, so the last token is always computed;
// its full pages are published after each step that computes them. A waiting sequence whose next
// page a running one is computing waits (others go ahead) and then reuses that page.
// A sequence whose prompt is scored (SamplingParams::prompt_logprobs) takes no cached prefix:
// every position's logits are wanted, at most max_scored_rows a step.
// SchedulerConfig::policy orders admission from the queue and chooses the preemption victim
// (SchedulingPolicy). Its inputs are the Request (sent to every rank), the order of add() and the
// prefix cache, all the same on every rank of the replica, so the ranks still agree.
#pragma once

#include <cstdint>
#include <deque>
#include <memory>
#include <vector>

#include "engine/executor.h"
#include "engine/kv_blocks.h"
#include "engine/output_constraint.h"
#include "engine/request.h"
#include "engine/sampler.h"

namespace dpa::engine {

// --scheduling-policy. Whatever the policy, a waiting sequence only goes ahead of those before
// it when they cannot be admitted (pages, --max-num-seqs, the token budget); running sequences are
// never preempted to admit a waiting one (vLLM V1 does the same: it preempts only for a running
// request's pages, and stops admitting when the batch is full).
enum class SchedulingPolicy : uint8_t {
  // Arrival order, a preempted sequence first; the victim is the latest admitted.
  fcfs,
  // vLLM's: (Request::priority, arrival) ascending, a preempted sequence by its first arrival;
  // the victim is the running sequence with the largest (priority, arrival), and running
  // sequences decode in (priority, arrival) order so that the higher ones take pages first.
  // A steady stream of low values starves the high ones: there is no aging (vLLM has none).
  priority,
  // SGLang's longest prefix match: the most prompt tokens in this replica's prefix cache first,
  // ties in fcfs order; the victim as fcfs. With more than lpm_max_waiting waiting sequences, or
  // prefix caching off, plain fcfs (SGLang falls back likewise, at 128).
  lpm,
};

struct SchedulerConfig {
  SchedulingPolicy policy = SchedulingPolicy::fcfs;
  // lpm matches every waiting sequence against the cache each step: at most this many.
  int64_t lpm_max_waiting = 128;
  int64_t max_num_seqs = 256;
  int64_t max_num_batched_tokens = 8192;
  int64_t max_model_len = 4096;  // prompt + output tokens of one sequence
  bool enable_prefix_caching = false;  // the CLI turns it on by default (--enable-prefix-caching)
  // Prompt positions scored per step (SamplingParams::prompt_logprobs): each one's logits row,
  // vocab floats, is held until sampled, so the chunks of a scored prompt are cut to fit.
  int64_t max_scored_rows = 256;
};

struct Sequence {
  Request req;
  std::vector<int32_t> tokens;  // prompt then generated
  int64_t n_prompt = 0;
  int64_t n_computed = 0;       // tokens whose KV is cached
  std::vector<int32_t> pages;
  uint64_t admit_order = 0;     // for choosing the preemption victim
  uint64_t arrival = 0;         // order of add() on this replica, kept through preemption
  int64_t n_preempted = 0;
  int64_t n_published = 0;      // leading pages that are in the prefix tree
  int64_t n_cached = -1;        // prompt tokens reused from the cache at first admission (-1: not yet)
  std::vector<uint64_t> page_hash;  // chain hash of each full prompt page (prefix caching)
  bool finished = false;
  PenaltyEdits penalty;  // its penalties' logit edits, kept as tokens are added
  OutputConstraint constraint;  // structured output: its recognizer, kept as tokens are added
  // The last launched step's draw for it, not yet committed: a placeholder (kPendingToken) at
  // tokens[pending_index], drawn for that step's wanted row pending_row; -1: none.
  int64_t pending_index = -1;
  int32_t pending_row = -1;
  // Prompt scoring (SamplingParams::prompt_logprobs), on the replica's leader: entry p scores
  // prompt token p + 1; complete when the first token is drawn, and sent with it.
  std::vector<PromptLogprob> scored;
  int64_t n_generated() const { return static_cast<int64_t>(tokens.size()) - n_prompt; }
  // Its prompt is scored as it is computed: asked for, and no token drawn yet (a sequence
  // preempted before its first draw scores its prompt again as it recomputes it).
  bool scoring() const { return req.params.prompt_logprobs >= 0 && n_generated() == 0; }
};

// What a Sequence's tokens hold where a launched step's draw will go.
inline constexpr int32_t kPendingToken = -1;

// The scheduled work of one step on one replica.
struct StepPlan {
  std::vector<Sequence*> seqs;   // in batch order
  std::vector<SeqChunk> chunks;  // parallel to seqs
  // Parallel to seqs, from advance(): where in the sequence's tokens its draw goes (-1: none).
  std::vector<int64_t> token_index;
  int64_t n_tokens = 0;
  bool has_prefill = false;
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& cfg, int64_t n_pages, int64_t page_size);

  void add(Request r);
  // Removes a request wherever it is; frees its pages. False if unknown.
  bool abort(uint64_t request_id);
  // The next step's plan. Sequences of a launched step not yet committed (advance() without
  // commit()) decode their pending draw (SeqChunk::prev_row) unless it will end them by length
  // (max_tokens, max_model_len); they are never preempted, and one without room waits a step.
  StepPlan schedule();
  // Once the plan is launched (the chunks' spans read): the computed tokens count as cached and
  // each sequence with logits gets a placeholder for its draw, so that schedule() can plan the
  // next step before this one's draws are known.
  void advance(StepPlan& plan);
  // The step's draws, one per sequence with logits in plan order, replace the placeholders;
  // full pages of known tokens are published. Sequences finished meanwhile (a stop found in the
  // step before, an abort) are skipped; they stay valid until the schedule() after the next.
  // A plan not advanced yet is advanced first (a step run and committed at once).
  void commit(StepPlan& plan, std::span<const int32_t> sampled);
  // Marks and frees a sequence (stop condition found).
  void finish(Sequence* s);
  // Evicts every cached page no sequence holds. Returns how many.
  int64_t flush_cache() { return blocks_.flush(); }

  int64_t n_running() const { return static_cast<int64_t>(running_.size()); }
  int64_t n_waiting() const { return static_cast<int64_t>(waiting_.size()); }
  int64_t n_unfinished() const { return n_running() + n_waiting(); }
  int64_t n_preemptions() const { return n_preemptions_; }
  // Prefix cache statistics, in tokens, cumulative: tokens looked up at admission, and reused.
  int64_t prefix_queries() const { return prefix_queries_; }
  int64_t prefix_hits() const { return prefix_hits_; }
  const BlockAllocator& blocks() const { return blocks_; }
  // Tokens still to compute over every sequence (a load measure for routing).
  int64_t pending_tokens() const;

 private:
  StepPlan plan_once();
  // Indices into waiting_ in the order the policy admits them.
  std::vector<std::size_t> admission_order() const;
  // Under the policy, a is preempted before b.
  bool yields_before(const Sequence& a, const Sequence& b) const;
  void preempt(Sequence* victim);
  void reap();

  SchedulerConfig cfg_;
  BlockAllocator blocks_;
  std::deque<std::unique_ptr<Sequence>> waiting_;
  std::vector<std::unique_ptr<Sequence>> running_;
  std::vector<std::unique_ptr<Sequence>> done_;  // finished last step, freed at next schedule()
  uint64_t admit_counter_ = 0;
  uint64_t arrival_counter_ = 0;
  int64_t n_preemptions_ = 0;
  int64_t prefix_queries_ = 0, prefix_hits_ = 0;
};

}  // namespace dpa::engine
