// The lockstep engine of DESIGN section 3. Every rank runs Engine::run() on its engine thread;
// each step: (1) rank 0 broadcasts new requests (with their routed replica), aborts and the
// shutdown flag; (2) every rank schedules its replica's batch; (3) a fixed-size header per rank
// is all-gathered, so every rank derives the same run_forward decision; (4) every rank runs the
// forward, idle ones with an empty batch, ending with the draw where the logits are; (5) replica
// leaders broadcast their tokens inside the replica; (6) leaders send their outputs to rank 0,
// which hands them to the sink.
// A watchdog thread ends the job, after dumping the last headers, when a step stalls; on rank 0
// it first calls the fatal handler (serve: an error to every waiting client), and the other
// ranks give rank 0 kFatalGraceS more seconds before they end the job themselves.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "dist/groups.h"
#include "engine/executor.h"
#include "engine/structured_output.h"
#include "engine/request.h"
#include "engine/router.h"
#include "engine/scheduler.h"

namespace dpa::engine {

struct EngineConfig {
  SchedulerConfig scheduler;
  RouterConfig router;               // policy and cache_aware parameters
  double watchdog_timeout_s = 600.0;  // 0: off
  std::vector<int32_t> eos_ids;
  // The vocabulary's token bytes, for structured output (SamplingParams::structure); null: such
  // requests are refused (a checkpoint without a tokenizer).
  std::shared_ptr<const TokenTrie> vocab_trie;
  uint64_t seed = 0;                  // fallback sampling seed base for unseeded requests
  // Schedule and launch each step while the one before still runs (SGLang's overlap scheduler,
  // vLLM's async scheduling): the host's work between steps hides behind the device's. Rows
  // whose logit edits or token masks follow the tokens drawn so far (penalties, structured
  // output, bad_words) get them once the step before is committed, while this step's forward
  // runs; prefill steps and steps with host waits inside run one at a time.
  // --disable-overlap-schedule: off.
  bool overlap_schedule = true;
  bool check_kv_accounting = true;    // verify free + used == total at exit
  bool collect_expert_stats = false;  // sum tokens per expert per layer to rank 0 every step
  // Fault injection for tests: world rank `fault_rank` stops answering (hangs) at step
  // `fault_step`, as a wedged GPU or a stuck peer would; the watchdog must end the job.
  int fault_rank = -1;
  int64_t fault_step = -1;
};

// The per-rank record all-gathered every step (fixed size, plain integers).
struct StepHeader {
  int64_t step = 0;
  int64_t n_tokens = 0;      // tokens this rank feeds this step
  int64_t n_running = 0;
  int64_t n_waiting = 0;
  int64_t pending_tokens = 0;
  int64_t free_blocks = 0;
  int64_t total_blocks = 0;
  int64_t mode = 0;          // 0 idle, 1 decode, 2 prefill (or mixed)
  // Prefix cache of the replica, cumulative (tokens looked up at admission, and reused), and the
  // pages now in its prefix tree (held or not; the unheld ones are counted in free_blocks).
  int64_t prefix_cache_queries = 0;
  int64_t prefix_cache_hits = 0;
  int64_t cached_blocks = 0;
};

// Rejection of a request before it runs (context too long, bad ids): delivered as a finished
// output with FinishReason::abort and this message on rank 0.
struct Rejection {
  uint64_t request_id;
  std::string message;
};

// What rank 0 learns at the end of each step that ran a forward (traces, metrics).
struct StepRecord {
  int64_t step = 0;
  double started_s = 0;   // steady clock, seconds
  double seconds = 0;     // wall time of the whole step
  const std::vector<StepHeader>* headers = nullptr;  // one per world rank
  // [n_layers * n_experts] routed slots per expert this step, summed over ranks; empty unless
  // EngineConfig::collect_expert_stats.
  const std::vector<int64_t>* expert_tokens = nullptr;
  int64_t n_layers = 0, n_experts = 0;
};

// A copy of the engine's view of the replicas, safe to take from any thread on rank 0.
struct LoadSnapshot {
  int64_t steps = 0;                 // steps run so far (> 0 once every rank ran one)
  std::vector<StepHeader> headers;   // last gathered, one per world rank
  int dp = 1, attn_tp = 1;           // replica r's leader is world rank r * attn_tp
  std::vector<int64_t> expert_tokens_total;  // cumulative [n_layers * n_experts] (expert stats)
  int64_t n_layers = 0, n_experts = 0;
};

class Engine {
 public:
  // A step's token outputs, all at once (rank 0, engine thread): one hand-over a step, not one
  // a token.
  using Sink = std::function<void(std::span<const TokenOutput>)>;
  using RejectSink = std::function<void(const Rejection&)>;
  using StepObserver = std::function<void(const StepRecord&)>;
  using FatalHandler = std::function<void(const std::string& why)>;
  static constexpr double kFatalGraceS = 3.0;

  Engine(const EngineConfig& cfg, const dist::Groups& groups, ModelExecutor& model);
  ~Engine();

  // Rank 0, any thread. Returns the request id (ids are assigned here when r.id == 0).
  uint64_t submit(Request r);
  void abort(uint64_t request_id);
  // Finish what was submitted, then every rank returns from run().
  void shutdown();
  // Every replica evicts the cached KV pages no request holds, in the same step on all its ranks
  // (travels with the intake broadcast); the router forgets its prefix trees.
  void flush_cache();

  // Every rank, the engine thread. On rank 0, `sink` gets every generated token and `reject`
  // every request refused at intake.
  void run(const Sink& sink, const RejectSink& reject = nullptr);

  // Rank 0, before run(): called on the engine thread after every step that ran a forward.
  void set_step_observer(StepObserver obs) { observer_ = std::move(obs); }
  // Rank 0, before the job ends on a stalled step: tell the clients (bounded: the handler must
  // return within kFatalGraceS). Set before run().
  void set_fatal_handler(FatalHandler h) { fatal_ = std::move(h); }
  // Rank 0, any thread.
  LoadSnapshot load_snapshot() const;

  // After run(): this rank's replica statistics.
  int64_t n_preemptions() const { return sched_.n_preemptions(); }
  int64_t prefix_cache_queries() const { return sched_.prefix_queries(); }
  int64_t prefix_cache_hits() const { return sched_.prefix_hits(); }
  bool kv_accounting_ok() const { return sched_.blocks().consistent(); }
  const std::vector<StepHeader>& last_headers() const { return headers_; }
  int64_t steps() const { return step_; }

 private:
  struct Intake {
    std::vector<Request> requests;  // with data_parallel_rank set to the routed replica
    std::vector<uint64_t> aborts;
    bool shutdown = false;
    bool flush_cache = false;
  };
  // A launched step not committed yet (the overlap: committed in the next iteration).
  struct Launched {
    StepPlan plan;
    std::vector<StepHeader> headers;  // the step's, for its record (kept only with an observer)
    int64_t step = 0;
    double started = 0;
    bool active = false;
  };
  Intake take_intake(bool may_block);
  void broadcast_intake(Intake& in);
  void admit(Intake& in, const RejectSink& reject);
  void gather_headers(const StepPlan& plan);
  // A sampled row whose logit edits or token mask follow its sequence's tokens [n_prompt, end):
  // made once they are all committed (edit_and_mask()).
  struct LateRow {
    Sequence* seq;
    int32_t row;      // of specs_
    int64_t end;      // its history's end (tokens.size() when planned)
    bool suppress;    // min_tokens not reached: EOS and stop ids banned
    bool masked;      // a structure or restrictions: a token mask (mask_rows_ in order)
  };
  // The step's SampleSpecs (specs_) and late_ rows.
  void plan_sampling(StepPlan& plan);
  // The late_ rows' edits (edits_) and masks (masks_), after the step before is committed.
  void edit_and_mask();
  // Structured output: the masks (masks_, one per masked row) of the tokens that keep each
  // output a prefix of what SamplingParams::structure asks for, and EOS only where the output
  // is complete. mask_output: one row's, into `mask` (zeroed; `allowed` is scratch).
  // restrict_output: a row without a structure but with allowed_token_ids or bad_words, after
  // `generated`.
  void constrain_outputs();
  void mask_output(const LateRow& r, std::vector<uint32_t>& allowed, std::span<uint32_t> mask) const;
  void restrict_output(const Sequence& s, std::span<const int32_t> generated, std::span<uint32_t> mask) const;
  // The launched step's draws, commit, outputs and statistics.
  void finish_step(Launched& l, const Sink& sink);
  std::vector<TokenOutput> sample_and_commit(StepPlan& plan);
  void send_outputs(const std::vector<TokenOutput>& mine, const Sink& sink);
  // Rank 0: outputs to the sink, but those the engine ended itself (FinishReason::abort: an
  // output structure that could not go on) to reject_, as errors of their requests.
  void deliver(std::span<const TokenOutput> outs, const Sink& sink) const;
  void collect_step_stats(const Launched& l);
  void watchdog_loop();
  [[noreturn]] void watchdog_fire(double stalled_s);

  EngineConfig cfg_;
  RejectSink reject_;  // run()'s, for deliver()
  const dist::Groups& groups_;
  ModelExecutor& model_;
  Scheduler sched_;
  std::unique_ptr<Router> router_;
  int64_t step_ = 0;
  std::vector<StepHeader> headers_;  // last gathered, one per world rank
  // This step's draws: specs and logit edits of the sampled rows, what came back.
  std::vector<backend::SampleSpec> specs_;
  std::vector<backend::LogitEdit> edits_;
  std::vector<backend::SampleOut> samples_;
  std::vector<int32_t> argmax_;
  std::vector<LateRow> late_;
  std::vector<int32_t> mask_rows_;  // masked rows (of specs_) and their token masks
  std::vector<uint32_t> masks_;
  std::vector<const LateRow*> masked_;  // the late_ rows of mask_rows_, while masking

  // Rank 0 intake queue, filled by other threads.
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Request> queue_;
  std::vector<uint64_t> abort_queue_;
  bool shutdown_requested_ = false;
  bool flush_requested_ = false;
  uint64_t next_id_ = 1;
  std::vector<int64_t> routed_since_;  // requests routed per replica since the last headers

  // Step statistics (rank 0).
  StepObserver observer_;
  FatalHandler fatal_;
  std::vector<int64_t> expert_step_, expert_total_;
  mutable std::mutex load_mu_;
  LoadSnapshot load_;

  // Watchdog.
  std::atomic<double> step_started_{0.0};  // seconds since epoch; 0 when not inside a step
  // Wall time of the iterations that launched or committed a step, by stage (logged when run()
  // ends): the intake and its broadcast, admission, scheduling and sampling plans, the header
  // all-gather, the launch, the wait for the draws, the commit, the outputs' gather and sink,
  // the step's statistics.
  static constexpr int kStages = 8;
  double stage_s_[kStages] = {};
  int64_t forward_steps_ = 0;
  int64_t overlapped_steps_ = 0;
  double dbg_[4] = {};
  int64_t dbg_n_ = 0;  // steps left running while the next was planned
  std::atomic<bool> stop_watchdog_{false};
  std::thread watchdog_;
};

}  // namespace dpa::engine
