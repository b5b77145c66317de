// The lockstep step protocol: intake, schedule, header all-gather, forward, sample, outputs.
#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <thread>

#include <fmt/format.h>

#include "core/error.h"
#include "core/log.h"
#include "dist/runtime.h"
#include "engine/grammar.h"
#include "engine/json_schema.h"
#include "engine/regex.h"
#include "engine/sampler.h"
#include "engine/wire.h"

namespace dpa::engine {
namespace {

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Waits for a nonblocking request, sleeping between tests so that idle ranks sharing cores with
// busy ones (CPU runs, oversubscribed) do not spin.
void wait_gently(MPI_Request* req) {
  int done = 0;
  for (int spins = 0;; ++spins) {
    DPA_CHECK_MPI(MPI_Test(req, &done, MPI_STATUS_IGNORE));
    if (done) return;
    if (spins > 64) std::this_thread::sleep_for(std::chrono::microseconds(spins > 4096 ? 1000 : 50));
  }
}

}  // namespace

Engine::Engine(const EngineConfig& cfg, const dist::Groups& groups, ModelExecutor& model)
    : cfg_(cfg),
      groups_(groups),
      model_(model),
      sched_(cfg.scheduler, model.num_pages(), model.page_size()),
      router_(make_router(cfg.router)),
      headers_(groups.layout().world_size),
      routed_since_(groups.layout().dp, 0) {
  if (cfg_.watchdog_timeout_s > 0) watchdog_ = std::thread([this] { watchdog_loop(); });
}

Engine::~Engine() {
  stop_watchdog_ = true;
  if (watchdog_.joinable()) watchdog_.join();
}

uint64_t Engine::submit(Request r) {
  std::lock_guard lk(mu_);
  if (r.id == 0) r.id = next_id_++;
  const uint64_t id = r.id;
  queue_.push_back(std::move(r));
  cv_.notify_one();
  return id;
}

void Engine::abort(uint64_t id) {
  std::lock_guard lk(mu_);
  abort_queue_.push_back(id);
  cv_.notify_one();
}

void Engine::shutdown() {
  std::lock_guard lk(mu_);
  shutdown_requested_ = true;
  cv_.notify_one();
}

void Engine::flush_cache() {
  std::lock_guard lk(mu_);
  flush_requested_ = true;
  cv_.notify_one();
}

Engine::Intake Engine::take_intake(bool may_block) {
  Intake in;
  std::unique_lock lk(mu_);
  if (may_block)
    cv_.wait(lk, [&] { return !queue_.empty() || !abort_queue_.empty() || shutdown_requested_ || flush_requested_; });
  in.requests.swap(queue_);
  in.aborts.swap(abort_queue_);
  in.shutdown = shutdown_requested_;
  in.flush_cache = flush_requested_;
  flush_requested_ = false;
  lk.unlock();
  if (in.flush_cache) router_->reset();
  // Route on rank 0: loads from the last headers plus what was routed since.
  const auto& g = groups_.layout();
  std::vector<ReplicaLoad> loads(g.dp);
  for (int r = 0; r < g.world_size; r += g.attn_tp) {  // replica leaders
    const auto& h = headers_[r];
    auto& l = loads[r / g.attn_tp];
    l.n_reqs = h.n_running + h.n_waiting + routed_since_[r / g.attn_tp];
    l.n_waiting = h.n_waiting + routed_since_[r / g.attn_tp];
    l.n_tokens = h.pending_tokens;
    l.free_blocks = h.free_blocks;
  }
  for (auto& r : in.requests) {
    if (r.data_parallel_rank < 0 || r.data_parallel_rank >= g.dp) r.data_parallel_rank = router_->route(r, loads);
    ++loads[r.data_parallel_rank].n_reqs;
    ++loads[r.data_parallel_rank].n_waiting;
    loads[r.data_parallel_rank].n_tokens += static_cast<int64_t>(r.prompt.size());
    ++routed_since_[r.data_parallel_rank];
  }
  return in;
}

void Engine::broadcast_intake(Intake& in) {
  const bool root = groups_.layout().world_rank == 0;
  std::vector<uint8_t> blob;
  if (root) blob = encode_intake(in.requests, in.aborts, in.shutdown, in.flush_cache);
  uint64_t size = blob.size();
  MPI_Request req;
  DPA_CHECK_MPI(MPI_Ibcast(&size, 1, MPI_UINT64_T, 0, groups_.world(), &req));
  wait_gently(&req);
  blob.resize(size);
  if (size) {
    DPA_CHECK_MPI(MPI_Ibcast(blob.data(), static_cast<int>(size), MPI_BYTE, 0, groups_.world(), &req));
    wait_gently(&req);
  }
  if (!root) decode_intake(blob, &in.requests, &in.aborts, &in.shutdown, &in.flush_cache);
}

void Engine::admit(Intake& in, const RejectSink& reject) {
  const auto& g = groups_.layout();
  const int64_t vocab = model_.vocab_size();
  const int64_t max_len = std::min(cfg_.scheduler.max_model_len, model_.max_position());
  for (auto& r : in.requests) {
    // Every rank validates identically; rank 0 reports.
    std::string why;
    const int64_t n = static_cast<int64_t>(r.prompt.size());
    if (n == 0) why = "the prompt is empty";
    for (int32_t t : r.prompt)
      if (why.empty() && (t < 0 || t >= vocab)) why = fmt::format("token id {} is outside the vocabulary [0, {})", t, vocab);
    if (why.empty() && n + std::max<int64_t>(r.params.max_tokens, 1) > max_len)
      why = fmt::format("this model's maximum context length is {} tokens; the request has {} prompt tokens and max_tokens {}",
                        max_len, n, r.params.max_tokens);
    if (why.empty() && r.params.structure != Structure::none && !cfg_.vocab_trie)
      why = "structured output (response_format, guided_choice, guided_json, guided_regex, guided_grammar) needs the model's tokenizer, and this checkpoint has none";
    if (why.empty() && r.params.structure == Structure::choice &&
        (r.params.choices.empty() || !std::is_sorted(r.params.choices.begin(), r.params.choices.end())))
      why = "guided_choice: the choices must be given (sorted, as the frontend sends them)";
    if (why.empty() && r.params.structure == Structure::json_schema) {
      try {  // the frontend checked it; every rank keeps its own (deterministic) copy, compiled once per text
        r.schema = JsonSchema::compile_cached(r.params.json_schema);
      } catch (const Error& e) {
        why = fmt::format("json_schema: {}", e.what());
      }
    }
    if (why.empty() && r.params.restricted() && r.params.structure != Structure::none)
      why = "allowed_token_ids and bad_words cannot be combined with an output structure";
    for (int32_t t : r.params.allowed_token_ids)
      if (why.empty() && (t < 0 || t >= vocab)) why = fmt::format("allowed_token_ids: {} is outside the vocabulary [0, {})", t, vocab);
    for (const auto& w : r.params.bad_words)
      for (int32_t t : w)
        if (why.empty() && (t < 0 || t >= vocab)) why = fmt::format("bad_words: token {} is outside the vocabulary [0, {})", t, vocab);
    if (why.empty() && r.params.structure == Structure::regex) {
      try {  // likewise
        r.regex = Regex::compile_cached(r.params.regex);
      } catch (const Error& e) {
        why = fmt::format("regex: {}", e.what());
      }
    }
    if (why.empty() && r.params.structure == Structure::grammar) {
      try {  // likewise
        r.grammar = Grammar::compile_cached(r.params.grammar);
      } catch (const Error& e) {
        why = fmt::format("grammar: {}", e.what());
      }
    }
    if (why.empty() && sched_.blocks().pages_for(n + r.params.max_tokens) > sched_.blocks().total())
      why = fmt::format("the request needs {} KV pages but a replica holds {}",
                        sched_.blocks().pages_for(n + r.params.max_tokens), sched_.blocks().total());
    if (!why.empty()) {
      if (g.world_rank == 0 && reject) reject({r.id, why});
      continue;
    }
    if (r.data_parallel_rank == g.dp_rank) sched_.add(std::move(r));
  }
  for (uint64_t id : in.aborts) sched_.abort(id);
  if (in.flush_cache) {
    const int64_t n = sched_.flush_cache();
    if (g.attn_tp_rank == 0) log::debug("replica {}: flushed {} cached KV pages", g.dp_rank, n);
  }
}

void Engine::gather_headers(const StepPlan& plan) {
  StepHeader h;
  h.step = step_;
  h.n_tokens = plan.n_tokens;
  h.n_running = sched_.n_running();
  h.n_waiting = sched_.n_waiting();
  h.pending_tokens = sched_.pending_tokens();
  h.free_blocks = sched_.blocks().free_count();
  h.total_blocks = sched_.blocks().total();
  h.mode = plan.n_tokens == 0 ? 0 : plan.has_prefill ? 2 : 1;
  h.prefix_cache_queries = sched_.prefix_queries();
  h.prefix_cache_hits = sched_.prefix_hits();
  h.cached_blocks = sched_.blocks().cached_count();
  static_assert(sizeof(StepHeader) % sizeof(int64_t) == 0);
  constexpr int n = sizeof(StepHeader) / sizeof(int64_t);
  MPI_Request req;
  DPA_CHECK_MPI(MPI_Iallgather(&h, n, MPI_INT64_T, headers_.data(), n, MPI_INT64_T, groups_.world(), &req));
  wait_gently(&req);
  std::fill(routed_since_.begin(), routed_since_.end(), 0);
}

// Greedy sequences that want no logprobs, penalties or EOS suppression need only the argmax of
// their logits: the executor computes it where the logits are (the GPU) and sends 4 bytes. The
// others are sampled there too, under a SampleSpec, the logit edits of their penalties and bias,
// and the token masks of their structure or restrictions. Edits and masks follow the tokens
// drawn so far, and a decode row's last one may still be on its way (the step before, launched
// and not committed): such rows are listed in late_ and get them in edit_and_mask(), after that
// commit, while the device runs this step's forward. The suppression (min_tokens) needs only
// how many tokens there are, which a pending draw's placeholder already counts.
void Engine::plan_sampling(StepPlan& plan) {
  specs_.clear();
  late_.clear();
  mask_rows_.clear();
  for (std::size_t i = 0; i < plan.seqs.size(); ++i) {
    SeqChunk& chunk = plan.chunks[i];
    Sequence* s = plan.seqs[i];
    const auto& p = s->req.params;
    for (int32_t k = 0; k < chunk.scored_rows; ++k) {  // the prompt's next token, on the raw logits
      backend::SampleSpec spec;
      spec.n_top = std::clamp<int32_t>(p.prompt_logprobs, 0, backend::kMaxTopLogprobs);
      spec.forced = s->tokens[static_cast<std::size_t>(chunk.start + k + 1)];
      specs_.push_back(spec);
    }
    if (!chunk.need_logits) continue;
    const bool suppress = s->n_generated() < p.min_tokens;
    const bool penalized = p.repetition_penalty != 1.0f || p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
    const bool masked = p.structure != Structure::none || p.restricted();
    chunk.argmax_only = chunk.scored_rows == 0 && p.greedy() && p.logprobs < 0 && !penalized && !suppress &&
                        p.logit_bias.empty() && !masked;
    if (chunk.argmax_only) continue;
    const auto row = static_cast<int32_t>(specs_.size());
    if (suppress || penalized || !p.logit_bias.empty() || masked) {
      late_.push_back({s, row, static_cast<int64_t>(s->tokens.size()), suppress, masked});
      if (masked) mask_rows_.push_back(row);
    }
    specs_.push_back(sample_spec(p, cfg_.seed * 0x9e3779b97f4a7c15ull + s->req.id, s->n_generated()));
  }
}

// The late_ rows' logit edits (edits_) and token masks (masks_, in mask_rows_ order), once every
// token before theirs is committed. A row whose sequence stopped at the step before gets none
// (its draw is thrown away).
void Engine::edit_and_mask() {
  const int64_t vocab = model_.vocab_size();
  edits_.clear();
  for (const LateRow& r : late_) {
    Sequence* s = r.seq;
    if (s->finished) continue;
    DPA_ASSERT(s->pending_index < 0 || s->pending_index >= r.end, "a row's edits planned over a pending draw");
    const auto& p = s->req.params;
    const std::span<const int32_t> prompt = std::span<const int32_t>(s->tokens).first(s->n_prompt),
                                   generated = std::span<const int32_t>(s->tokens).subspan(s->n_prompt, r.end - s->n_prompt);
    std::vector<int32_t> banned;
    if (r.suppress && !p.restricted()) {  // a restricted row's mask bans them (restrict_output)
      banned = cfg_.eos_ids;
      banned.insert(banned.end(), p.stop_token_ids.begin(), p.stop_token_ids.end());
    }
    const std::size_t first = edits_.size();
    if (r.suppress)  // a few steps at most (min_tokens): the whole count, EOS and stop ids included
      logit_edits(p, prompt, generated, true, banned, vocab, r.row, edits_);
    else  // the counts so far plus the newest token, not the whole history again
      s->penalty.append(p, prompt, generated, vocab, r.row, edits_);
    add_logit_bias(p, vocab, r.row, first, edits_);
  }
  constrain_outputs();
}

// The masked rows' masks, each row's independent of the others': with many rows, walked on
// several threads (a row's walk takes 5-40 us on DeepSeek-V3's vocabulary; a decode step's
// forward runs on the device meanwhile).
void Engine::constrain_outputs() {
  masked_.clear();
  for (const LateRow& r : late_)
    if (r.masked) masked_.push_back(&r);
  if (masked_.empty()) return masks_.clear();  // the usual step: nothing to walk, no thread count asked
  const std::size_t n = masked_.size(), words = static_cast<std::size_t>(backend::token_mask_words(model_.vocab_size()));
  masks_.assign(n * words, 0);
  auto run = [&](std::size_t first, std::size_t step) {
    std::vector<uint32_t> scratch;
    for (std::size_t i = first; i < n; i += step) mask_output(*masked_[i], scratch, std::span(masks_).subspan(i * words, words));
  };
  const std::size_t threads = std::min<std::size_t>({n / 8, std::max(1u, std::thread::hardware_concurrency()), 8});
  if (threads <= 1) {
    run(0, 1);
  } else {
    std::vector<std::jthread> pool;
    for (std::size_t t = 1; t < threads; ++t) pool.emplace_back(run, t, threads);
    run(0, threads);
  }
}

namespace {
// Every id of a vocabulary of `vocab` tokens in a token mask (the words past it stay zero).
void allow_all(std::span<uint32_t> mask, int64_t vocab) {
  std::fill(mask.begin(), mask.end(), ~0u);
  if (vocab % 32) mask[static_cast<std::size_t>(vocab / 32)] = (1u << (vocab % 32)) - 1;
}
}  // namespace

void Engine::mask_output(const LateRow& r, std::vector<uint32_t>& allowed, std::span<uint32_t> mask) const {
  Sequence& s = *r.seq;
  const int64_t vocab = model_.vocab_size();
  if (s.finished) return allow_all(mask, vocab);  // any token: the draw is thrown away
  const std::span<const int32_t> generated = std::span<const int32_t>(s.tokens).subspan(s.n_prompt, r.end - s.n_prompt);
  if (s.req.params.structure == Structure::none) return restrict_output(s, generated, mask);
  const bool complete = s.constraint.mask(*cfg_.vocab_trie, s.req, generated, allowed);
  // Ids past the tokenizer's are never allowed (mask is zeroed); those past the model's are not
  // looked at. A failed constraint's row draws EOS; the request ends with an error at the commit.
  if (!s.constraint.failed()) std::copy_n(allowed.begin(), std::min(allowed.size(), mask.size()), mask.begin());
  if (complete || s.constraint.failed())
    for (int32_t e : cfg_.eos_ids)
      if (e >= 0 && e < vocab) mask[static_cast<std::size_t>(e) >> 5] |= 1u << (e & 31);
}

// allowed_token_ids, then bad_words and (before min_tokens) the EOS and stop ids taken out. Where
// that leaves no token (every allowed one banned), EOS is drawn (the usual stop rules apply).
void Engine::restrict_output(const Sequence& s, std::span<const int32_t> generated, std::span<uint32_t> mask) const {
  const auto& p = s.req.params;
  const int64_t vocab = model_.vocab_size();
  auto in_vocab = [&](int32_t t) { return t >= 0 && t < vocab; };
  auto word = [&](int32_t t) -> uint32_t& { return mask[static_cast<std::size_t>(t) >> 5]; };
  if (p.allowed_token_ids.empty()) {
    allow_all(mask, vocab);
  } else {
    for (int32_t t : p.allowed_token_ids)
      if (in_vocab(t)) word(t) |= 1u << (t & 31);
  }
  std::vector<int32_t> bans;
  bad_word_bans(p.bad_words, generated, bans);
  if (static_cast<int64_t>(generated.size()) < p.min_tokens) {
    bans.insert(bans.end(), cfg_.eos_ids.begin(), cfg_.eos_ids.end());
    bans.insert(bans.end(), p.stop_token_ids.begin(), p.stop_token_ids.end());
  }
  for (int32_t t : bans)
    if (in_vocab(t)) word(t) &= ~(1u << (t & 31));
  if (std::all_of(mask.begin(), mask.end(), [](uint32_t w) { return w == 0; }))
    for (int32_t e : cfg_.eos_ids)
      if (in_vocab(e)) word(e) |= 1u << (e & 31);
}

// Sequences finished while the step ran (a stop in the step before it, an abort) get no output;
// their rows still take their place in the draws.
std::vector<TokenOutput> Engine::sample_and_commit(StepPlan& plan) {
  const auto& g = groups_.layout();
  const bool leader = g.attn_tp_rank == 0;
  std::vector<int32_t> tokens;
  std::vector<TokenOutput> outs;
  tokens.reserve(plan.seqs.size());
  if (leader) outs.reserve(plan.seqs.size());
  std::size_t row = 0, sampled = 0;
  for (std::size_t i = 0; i < plan.seqs.size(); ++i) {
    const SeqChunk& chunk = plan.chunks[i];
    Sequence* s = plan.seqs[i];
    if (chunk.scored_rows > 0 && leader) {  // entry p scores prompt token p + 1
      // A recompute (preempted before its first draw) scores its positions again.
      if (s->scored.size() > static_cast<std::size_t>(chunk.start)) s->scored.resize(static_cast<std::size_t>(chunk.start));
      DPA_ASSERT(s->scored.size() == static_cast<std::size_t>(chunk.start), "a scored prompt chunk out of order");
      for (int32_t k = 0; k < chunk.scored_rows; ++k) {
        const backend::SampleOut& d = samples_[sampled + static_cast<std::size_t>(k)];
        PromptLogprob e{d.token, d.logprob, d.rank, {}};
        for (int32_t j = 0; j < d.n_top; ++j) e.top.push_back({d.top_token[j], d.top_logprob[j]});
        s->scored.push_back(std::move(e));
      }
    }
    sampled += static_cast<std::size_t>(chunk.scored_rows);
    row += static_cast<std::size_t>(chunk.scored_rows);
    if (!chunk.need_logits) continue;
    TokenOutput o;
    o.request_id = s->req.id;
    const bool first = plan.token_index[i] == s->n_prompt;
    o.cached_tokens = first ? static_cast<int32_t>(std::max<int64_t>(s->n_cached, 0)) : -1;
    if (first && leader && s->req.params.prompt_logprobs >= 0) o.prompt_logprobs = std::move(s->scored);
    if (argmax_[row] >= 0) {
      o.token = argmax_[row];
    } else {
      const backend::SampleOut& d = samples_[sampled++];
      o.token = d.token;
      o.logprob = d.logprob;
      for (int32_t k = 0; k < d.n_top; ++k) o.top.push_back({d.top_token[k], d.top_logprob[k]});
    }
    tokens.push_back(o.token);
    if (leader && !s->finished) outs.push_back(std::move(o));
    ++row;
  }
  if (g.attn_tp > 1) {  // the replica's other ranks take the leader's tokens
    tokens.resize(row);
    DPA_CHECK_MPI(MPI_Bcast(tokens.data(), static_cast<int>(row), MPI_INT32_T, 0, groups_.attn_tp()));
  }
  sched_.commit(plan, tokens);
  // Stop conditions, identical on every rank of the replica, at the draw's place in the sequence
  // (a later step's draw may already be pending behind it). Sequences finished before this step's
  // commit have no output; the ones finished below are each visited once.
  std::size_t k = 0, out = 0;
  for (std::size_t i = 0; i < plan.seqs.size(); ++i) {
    if (!plan.chunks[i].need_logits) continue;
    Sequence* s = plan.seqs[i];
    if (s->finished) {
      ++k;
      continue;
    }
    const auto& p = s->req.params;
    const int32_t t = tokens[k];
    const int64_t at = plan.token_index[i], generated = at - s->n_prompt + 1;
    FinishReason fin = FinishReason::none;
    // The structure could not go on (this step's mask said so, on every rank alike): an error.
    if (s->constraint.failed()) fin = FinishReason::abort;
    // EOS and stop ids were suppressed while fewer than min_tokens had been generated.
    const bool may_stop = generated > p.min_tokens;
    if (fin == FinishReason::none && may_stop && !p.ignore_eos &&
        std::find(cfg_.eos_ids.begin(), cfg_.eos_ids.end(), t) != cfg_.eos_ids.end())
      fin = FinishReason::stop;
    if (fin == FinishReason::none && may_stop && std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), t) != p.stop_token_ids.end())
      fin = FinishReason::stop;
    if (fin == FinishReason::none && generated >= p.max_tokens) fin = FinishReason::length;
    if (fin == FinishReason::none && at + 1 >= cfg_.scheduler.max_model_len) fin = FinishReason::length;
    if (fin != FinishReason::none) sched_.finish(s);
    if (leader) outs[out++].finish = fin;
    ++k;
  }
  return outs;
}

void Engine::send_outputs(const std::vector<TokenOutput>& mine, const Sink& sink) {
  const auto& g = groups_.layout();
  if (g.world_size == 1) {  // nothing to gather: straight to the sink
    deliver(mine, sink);
    return;
  }
  std::vector<uint8_t> blob = encode_outputs(mine);
  int len = static_cast<int>(blob.size());
  std::vector<int> lens(g.world_rank == 0 ? g.world_size : 0), displs(lens.size());
  DPA_CHECK_MPI(MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, groups_.world()));
  std::vector<uint8_t> all;
  if (g.world_rank == 0) {
    int total = 0;
    for (int r = 0; r < g.world_size; ++r) displs[r] = total, total += lens[r];
    all.resize(total);
  }
  DPA_CHECK_MPI(MPI_Gatherv(blob.data(), len, MPI_BYTE, all.data(), lens.data(), displs.data(), MPI_BYTE, 0,
                            groups_.world()));
  if (g.world_rank == 0) {
    std::vector<TokenOutput> outs;
    for (int r = 0; r < g.world_size; ++r)
      for (auto& o : decode_outputs(std::span<const uint8_t>(all).subspan(displs[r], lens[r])))
        outs.push_back(std::move(o));
    deliver(outs, sink);
  }
}

void Engine::deliver(std::span<const TokenOutput> outs, const Sink& sink) const {
  if (outs.empty()) return;
  const bool any_failed =
      reject_ && std::any_of(outs.begin(), outs.end(), [](const TokenOutput& o) { return o.finish == FinishReason::abort; });
  if (!any_failed) {
    if (sink) sink(outs);
    return;
  }
  std::vector<TokenOutput> fine;
  for (const TokenOutput& o : outs) {
    if (o.finish != FinishReason::abort) {
      fine.push_back(o);
      continue;
    }
    log::warn("request {}: its grammar's recognizer could not go on within its limits; the request ends with an error",
              o.request_id);
    reject_({o.request_id,
             fmt::format("grammar: the output could not go on within the recognizer's limits (at most {} parses at once, {} "
                         "rules open in one parse, {} parse steps for one token's mask); write a less ambiguous grammar",
                         Grammar::kMaxItems, Grammar::kMaxDepth, Grammar::kMaxWalkWork)});
  }
  if (sink && !fine.empty()) sink(fine);
}

void Engine::run(const Sink& sink, const RejectSink& reject) {
  reject_ = reject;
  const auto& g = groups_.layout();
  const bool root = g.world_rank == 0;
  const bool overlap = cfg_.overlap_schedule;
  bool all_idle = true;
  Launched prev;  // launched in the last iteration, committed in this one (the overlap)
  for (;;) {
    Intake in;
    // Rank 0 may block for work only when the last headers said every replica is idle.
    double t[kStages + 1];
    t[0] = now_s();
    if (root) in = take_intake(all_idle);
    broadcast_intake(in);
    step_started_ = now_s();
    // An idle wait for work is not the step's: its stages start here then.
    if (all_idle) t[0] = step_started_;
    if (g.world_rank == cfg_.fault_rank && step_ >= cfg_.fault_step && cfg_.fault_step >= 0) {
      log::warn("fault injection: rank {} stops answering at step {}", g.world_rank, step_);
      for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
    }
    t[1] = step_started_;
    admit(in, reject);
    StepPlan plan = sched_.schedule();
    plan_sampling(plan);
    t[2] = now_s();
    gather_headers(plan);
    t[3] = now_s();
    int64_t total_tokens = 0, unfinished = 0, most = 0;
    bool decode = true;
    for (const auto& h : headers_) {
      total_tokens += h.n_tokens, unfinished += h.n_running + h.n_waiting, most = std::max(most, h.n_tokens);
      decode &= h.mode != 2;
    }
    // This step is left running while the next is planned only when its launch returns before the
    // device has run it: a pure decode step the model queues whole. Otherwise (prefill chunks: the
    // first tokens; steps with host waits) the step before is committed first and this one at once.
    const bool overlapped = overlap && total_tokens > 0 && decode && model_.queues_decode(most);
    const bool worked = prev.active || total_tokens > 0;
    if (prev.active && !overlapped) finish_step(prev, sink);
    const double launch_from = now_s();
    Launched cur;
    if (total_tokens > 0) {
      int64_t ep_most = 0;  // this rank's EP group: world ranks [ep_group * ep, + ep)
      for (int r = g.ep_group * g.ep; r < (g.ep_group + 1) * g.ep && r < static_cast<int>(headers_.size()); ++r)
        ep_most = std::max(ep_most, headers_[static_cast<std::size_t>(r)].n_tokens);
      model_.set_ep_step_tokens(ep_most);
      model_.launch_forward(plan.chunks);
      sched_.advance(plan);  // after the launch: the placeholders may move the tokens the chunks point at
      cur.plan = std::move(plan);
      if (observer_) cur.headers = headers_;  // only the step record reads them
      cur.step = step_, cur.started = step_started_, cur.active = true;
    }
    t[4] = now_s();
    // The step before is committed while this one runs; then this one's edits and masks, which
    // follow that commit, and its sampling behind its forward.
    if (prev.active) finish_step(prev, sink);
    if (cur.active) {
      const double t0 = now_s();
      edit_and_mask();
      model_.launch_sampling(specs_, edits_, {mask_rows_, masks_});
      stage_s_[3] += now_s() - t0;
    }
    if (cur.active && !overlapped) finish_step(cur, sink);
    else prev = std::move(cur);
    overlapped_steps_ += overlapped;
    if (worked) {
      for (int i = 0; i < 3; ++i) stage_s_[i] += t[i + 1] - t[i];
      stage_s_[3] += t[4] - launch_from;
      ++forward_steps_;
    } else if (root) {
      std::lock_guard lk(load_mu_);
      load_.steps = step_ + 1;
      load_.headers = headers_;
    }
    ++step_;
    step_started_ = 0.0;
    all_idle = total_tokens == 0 && unfinished == 0 && !prev.active;
    if (in.shutdown && all_idle) break;
  }
  // Preemptions over every replica (leaders only, so each replica counts once).
  long long mine = g.attn_tp_rank == 0 ? sched_.n_preemptions() : 0, total = 0;
  DPA_CHECK_MPI(MPI_Reduce(&mine, &total, 1, MPI_LONG_LONG, MPI_SUM, 0, groups_.world()));
  long long cache[2] = {g.attn_tp_rank == 0 ? sched_.prefix_queries() : 0, g.attn_tp_rank == 0 ? sched_.prefix_hits() : 0};
  long long cache_total[2] = {0, 0};
  DPA_CHECK_MPI(MPI_Reduce(cache, cache_total, 2, MPI_LONG_LONG, MPI_SUM, 0, groups_.world()));
  if (root) log::info("engine: steps={} preemptions={} prefix_cache_hits={}/{} tokens", step_, total, cache_total[1], cache_total[0]);
  if (root && forward_steps_ > 0) {
    const double k = 1e3 / static_cast<double>(forward_steps_);
    log::info("engine: per step with a forward (ms): intake {:.3f}, schedule {:.3f}, headers {:.3f}, launch {:.3f}, "
              "wait {:.3f}, commit {:.3f}, outputs {:.3f}, stats {:.3f}; {} decode steps overlapped with the next "
              "one's planning",
              k * stage_s_[0], k * stage_s_[1], k * stage_s_[2], k * stage_s_[3], k * stage_s_[4], k * stage_s_[5],
              k * stage_s_[6], k * stage_s_[7], overlapped_steps_);
  }
  // Cached pages nobody holds are released before the check, so it is exact.
  sched_.flush_cache();
  if (cfg_.check_kv_accounting && !sched_.blocks().consistent())
    fail_one("engine", "free + used == total", __FILE__, __LINE__,
             fmt::format("KV accounting broken on replica {}: free {} used {} total {}", g.dp_rank,
                         sched_.blocks().free_count(), sched_.blocks().used_count(), sched_.blocks().total()));
  if (cfg_.check_kv_accounting && sched_.blocks().used_count() != 0)
    fail_one("engine", "used == 0 at exit", __FILE__, __LINE__,
             fmt::format("replica {} still holds {} KV pages after every request finished", g.dp_rank,
                         sched_.blocks().used_count()));
}

void Engine::finish_step(Launched& l, const Sink& sink) {
  double t[5];
  t[0] = now_s();
  model_.collect(samples_, argmax_);
  t[1] = now_s();
  auto outs = sample_and_commit(l.plan);
  t[2] = now_s();
  send_outputs(outs, sink);
  t[3] = now_s();
  collect_step_stats(l);
  t[4] = now_s();
  for (int i = 0; i < 4; ++i) stage_s_[4 + i] += t[i + 1] - t[i];
  l.active = false;
  l.plan = StepPlan{};
}

void Engine::collect_step_stats(const Launched& l) {
  const int64_t step = l.step;
  const auto& g = groups_.layout();
  const bool root = g.world_rank == 0;
  const int64_t n_layers = model_.n_layers(), n_experts = model_.n_experts();
  const bool experts = cfg_.collect_expert_stats && n_layers * n_experts > 0;
  if (experts) {
    const auto& mine = model_.expert_counts();
    const std::size_t n = static_cast<std::size_t>(n_layers * n_experts);
    std::vector<int64_t> send(n, 0);
    std::copy_n(mine.begin(), std::min(n, mine.size()), send.begin());
    expert_step_.assign(n, 0);
    DPA_CHECK_MPI(MPI_Reduce(send.data(), expert_step_.data(), static_cast<int>(n), MPI_INT64_T, MPI_SUM, 0,
                             groups_.world()));
    if (root) {
      if (expert_total_.size() != n) expert_total_.assign(n, 0);
      for (std::size_t i = 0; i < n; ++i) expert_total_[i] += expert_step_[i];
    }
  }
  if (!root) return;
  {
    std::lock_guard lk(load_mu_);
    load_.steps = step + 1;
    load_.headers = headers_;
    if (experts) load_.expert_tokens_total = expert_total_;
    load_.n_layers = n_layers, load_.n_experts = n_experts;
  }
  if (observer_) {
    StepRecord rec;
    rec.step = step;
    rec.started_s = l.started;
    rec.seconds = now_s() - l.started;
    rec.headers = &l.headers;
    rec.expert_tokens = &expert_step_;
    rec.n_layers = experts ? n_layers : 0;
    rec.n_experts = experts ? n_experts : 0;
    observer_(rec);
  }
}

LoadSnapshot Engine::load_snapshot() const {
  std::lock_guard lk(load_mu_);
  LoadSnapshot s = load_;
  s.dp = groups_.layout().dp;
  s.attn_tp = groups_.layout().attn_tp;
  if (s.headers.empty()) s.headers.assign(groups_.layout().world_size, StepHeader{});
  return s;
}

void Engine::watchdog_loop() {
  // Rank 0 fires first, so that it can answer its clients before the job ends.
  const double limit = cfg_.watchdog_timeout_s + (groups_.layout().world_rank == 0 ? 0.0 : kFatalGraceS);
  while (!stop_watchdog_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    const double started = step_started_;
    if (started > 0 && now_s() - started > limit) watchdog_fire(now_s() - started);
  }
}

void Engine::watchdog_fire(double stalled_s) {
  std::string dump = fmt::format("{} watchdog: step {} made no progress for {:.1f} s (--watchdog-timeout {}); last headers:\n",
                                 identity_prefix(), step_, stalled_s, cfg_.watchdog_timeout_s);
  for (std::size_t r = 0; r < headers_.size(); ++r) {
    const auto& h = headers_[r];
    dump += fmt::format("  rank {}: step {} tokens {} running {} waiting {} pending {} free_blocks {}/{} cached_blocks {} mode {}\n", r,
                        h.step, h.n_tokens, h.n_running, h.n_waiting, h.pending_tokens, h.free_blocks, h.total_blocks,
                        h.cached_blocks, h.mode);
  }
  std::fputs(dump.c_str(), stderr);
  std::fflush(stderr);
  if (fatal_) {
    try {
      fatal_(fmt::format("the engine stopped: step {} made no progress for {:.1f} s on some rank; the job is ending",
                         step_, stalled_s));
    } catch (...) {  // the job ends either way
    }
  }
  dist::abort_job(3);
}

}  // namespace dpa::engine
