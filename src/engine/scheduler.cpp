// Continuous batching with chunked prefill and preemption by recompute.
#include "engine/scheduler.h"

#include <algorithm>
#include <numeric>

#include "core/error.h"

namespace dpa::engine {

Scheduler::Scheduler(const SchedulerConfig& cfg, int64_t n_pages, int64_t page_size)
    : cfg_(cfg), blocks_(n_pages, page_size, cfg.enable_prefix_caching) {}

void Scheduler::add(Request r) {
  auto s = std::make_unique<Sequence>();
  s->tokens = r.prompt;
  s->n_prompt = static_cast<int64_t>(r.prompt.size());
  s->req = std::move(r);
  s->arrival = arrival_counter_++;
  if (blocks_.prefix_caching()) {  // FNV-1a over the tokens, chained page to page
    const int64_t P = blocks_.page_size();
    uint64_t h = 0xcbf29ce484222325ull;
    for (int64_t i = 0; i + P <= s->n_prompt; i += P) {
      for (int64_t k = i; k < i + P; ++k) h = (h ^ static_cast<uint32_t>(s->tokens[k])) * 0x100000001b3ull;
      s->page_hash.push_back(h);
    }
  }
  waiting_.push_back(std::move(s));
}

bool Scheduler::abort(uint64_t id) {
  for (auto it = waiting_.begin(); it != waiting_.end(); ++it)
    if ((*it)->req.id == id) {
      blocks_.release((*it)->pages);
      waiting_.erase(it);
      return true;
    }
  for (auto& s : running_)
    if (s->req.id == id && !s->finished) {
      finish(s.get());
      return true;
    }
  return false;
}

void Scheduler::finish(Sequence* s) {
  s->finished = true;
  blocks_.release(s->pages);
}

int64_t Scheduler::pending_tokens() const {
  int64_t n = 0;
  for (auto& s : running_) n += static_cast<int64_t>(s->tokens.size()) - s->n_computed;
  for (auto& s : waiting_) n += static_cast<int64_t>(s->tokens.size()) - s->n_computed;
  return n;
}

// (priority, arrival): under the priority policy, a runs before b.
static bool runs_before(const Sequence& a, const Sequence& b) {
  return a.req.priority != b.req.priority ? a.req.priority < b.req.priority : a.arrival < b.arrival;
}

bool Scheduler::yields_before(const Sequence& a, const Sequence& b) const {
  if (cfg_.policy == SchedulingPolicy::priority) return runs_before(b, a);
  return a.admit_order > b.admit_order;
}

std::vector<std::size_t> Scheduler::admission_order() const {
  std::vector<std::size_t> order(waiting_.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  if (cfg_.policy == SchedulingPolicy::priority) {
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return runs_before(*waiting_[a], *waiting_[b]); });
  } else if (cfg_.policy == SchedulingPolicy::lpm && blocks_.prefix_caching() &&
             static_cast<int64_t>(waiting_.size()) <= cfg_.lpm_max_waiting) {
    // Cached pages each would take at admission (none for a scored prompt: it takes no prefix).
    const int64_t P = blocks_.page_size();
    std::vector<int64_t> cached(waiting_.size(), 0);
    for (std::size_t i = 0; i < waiting_.size(); ++i) {
      const Sequence& s = *waiting_[i];
      if (!s.scoring()) cached[i] = static_cast<int64_t>(blocks_.match(s.tokens, (static_cast<int64_t>(s.tokens.size()) - 1) / P).size());
    }
    std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return cached[a] > cached[b]; });
  }
  return order;
}

void Scheduler::preempt(Sequence* victim) {
  blocks_.release(victim->pages);
  victim->n_computed = 0;
  victim->n_published = 0;
  ++victim->n_preempted;
  ++n_preemptions_;
  auto it = std::find_if(running_.begin(), running_.end(), [&](auto& p) { return p.get() == victim; });
  waiting_.push_front(std::move(*it));
  running_.erase(it);
}

void Scheduler::reap() {
  done_.clear();
  for (auto it = running_.begin(); it != running_.end();) {
    if ((*it)->finished) {
      done_.push_back(std::move(*it));
      it = running_.erase(it);
    } else {
      ++it;
    }
  }
}

StepPlan Scheduler::schedule() {
  reap();
  StepPlan plan = plan_once();
  // Sequences mid-prefill may hold every page while none can grow: free the latest admitted.
  // Sequences with a pending draw are not preempted: their step is still running.
  while (plan.chunks.empty() && !running_.empty()) {
    Sequence* victim = nullptr;
    for (auto& r : running_)
      if (r->pending_index < 0 && (!victim || yields_before(*r, *victim))) victim = r.get();
    if (!victim) break;
    preempt(victim);
    plan = plan_once();
  }
  return plan;
}

StepPlan Scheduler::plan_once() {
  StepPlan plan;
  int64_t budget = cfg_.max_num_batched_tokens;
  // 1. Decode: every running sequence whose prompt is fully computed takes one token. When pages
  // run out, the policy's victim yields its pages (possibly the one asking). Sequences go in the
  // reverse of the victim order, so that none placed this step would have yielded to a later one.
  std::vector<Sequence*> order;
  for (auto& s : running_) order.push_back(s.get());
  std::sort(order.begin(), order.end(), [&](auto* a, auto* b) { return yields_before(*b, *a); });
  std::vector<Sequence*> decoding;
  for (Sequence* s : order) {
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    if (len - s->n_computed != 1) continue;  // still prefilling: handled below
    // A pending draw that will end the sequence by length: nothing to decode after it.
    if (s->pending_index >= 0 && (s->n_generated() >= s->req.params.max_tokens || len >= cfg_.max_model_len))
      continue;
    if (budget < 1) break;
    bool placed = false;
    while (!placed) {
      if (blocks_.grow(s->pages, len)) {
        placed = true;
        break;
      }
      // Victim: the policy's first running sequence not already placed this step.
      Sequence* victim = nullptr;
      for (auto& r : running_)
        if (r->pending_index < 0 && std::find(decoding.begin(), decoding.end(), r.get()) == decoding.end() &&
            (!victim || yields_before(*r, *victim)))
          victim = r.get();
      if (!victim) break;
      const bool self = victim == s;
      preempt(victim);
      if (self) break;
    }
    if (placed) {
      decoding.push_back(s);
      --budget;
    }
  }
  for (Sequence* s : decoding) {
    plan.seqs.push_back(s);
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    plan.chunks.push_back({std::span<const int32_t>(s->tokens).subspan(len - 1, 1), len - 1, s->pages, true});
    if (s->pending_index == len - 1) plan.chunks.back().prev_row = s->pending_row;
  }
  // 2. Prefill chunks: running sequences mid-prefill, then admit waiting ones in order.
  int64_t scored_budget = cfg_.max_scored_rows;
  auto prefill = [&](Sequence* s) -> bool {
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    int64_t n = std::min(len - s->n_computed, budget);
    if (s->scoring()) n = std::min(n, scored_budget);
    if (n <= 0) return false;
    if (!blocks_.grow(s->pages, s->n_computed + n)) return false;
    plan.seqs.push_back(s);
    plan.chunks.push_back({std::span<const int32_t>(s->tokens).subspan(s->n_computed, n), s->n_computed, s->pages,
                           s->n_computed + n == len});
    if (s->scoring()) {  // positions whose next token is the prompt's
      const int64_t scored = std::max<int64_t>(0, std::min(s->n_computed + n, s->n_prompt - 1) - s->n_computed);
      plan.chunks.back().scored_rows = static_cast<int32_t>(scored);
      scored_budget -= scored;
    }
    budget -= n;
    plan.has_prefill = true;
    return true;
  };
  for (auto& s : running_) {
    if (budget <= 0) break;
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    if (len - s->n_computed > 1) prefill(s.get());
  }
  // Admission from the queue, in the policy's order. With prefix caching a sequence first takes
  // its cached prefix (only when the pages for its first chunk are there too); one whose next page
  // a running sequence is computing now waits a step and lets the ones behind it go. Admitted
  // ones leave an empty slot in waiting_, swept after the loop.
  const int64_t P = blocks_.page_size();
  // The order is only worked out when a sequence could be admitted: a full batch in front of a
  // long queue (lpm matches every waiting prompt against the cache) costs the step nothing.
  const bool room = budget > 0 && !waiting_.empty() && static_cast<int64_t>(running_.size()) < cfg_.max_num_seqs;
  const std::vector<std::size_t> admit = room ? admission_order() : std::vector<std::size_t>();
  bool admitted = false;
  for (std::size_t k = 0; budget > 0 && k < admit.size() && static_cast<int64_t>(running_.size()) < cfg_.max_num_seqs; ++k) {
    std::unique_ptr<Sequence>& slot = waiting_[admit[k]];
    Sequence* s = slot.get();
    if (s->scoring() && scored_budget <= 0) continue;  // this step's scored rows are taken: the others may go
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    std::vector<int32_t> hit;
    const bool lookup = blocks_.prefix_caching() && !s->scoring();
    if (lookup) {
      hit = blocks_.match(s->tokens, (len - 1) / P);
      const std::size_t m = hit.size();
      bool defer = false;
      if (static_cast<int64_t>(m) < (len - 1) / P && m < s->page_hash.size())
        for (auto& r : running_)
          if (!r->finished && r->page_hash.size() > m && r->page_hash[m] == s->page_hash[m] &&
              r->n_published <= static_cast<int64_t>(m)) {  // computing it, or computed and not yet committed
            defer = true;
            break;
          }
      if (defer) continue;
      // Room for the first chunk beside the shared pages (idle ones among them stop being free).
      const int64_t start = static_cast<int64_t>(m) * P;
      const int64_t n = std::min(len - start, budget);
      int64_t idle = 0;
      for (int32_t p : hit) idle += blocks_.ref_count(p) == 0;
      if (blocks_.pages_for(start + n) - static_cast<int64_t>(m) > blocks_.free_count() - idle) break;
      blocks_.share(s->pages, hit);
      s->n_computed = start;
      s->n_published = static_cast<int64_t>(m);
    }
    if (!prefill(s)) {  // not enough pages: wait for sequences to finish
      blocks_.release(s->pages);
      s->n_computed = 0;
      s->n_published = 0;
      break;
    }
    const int64_t reused = static_cast<int64_t>(hit.size()) * P;
    if (lookup) prefix_queries_ += len;
    prefix_hits_ += reused;
    if (s->n_cached < 0) s->n_cached = reused;
    s->admit_order = admit_counter_++;
    running_.push_back(std::move(slot));
    admitted = true;
  }
  if (admitted) std::erase_if(waiting_, [](const auto& w) { return !w; });
  // Pages in the plan's spans must stay valid: tables only grow within this step.
  for (std::size_t i = 0; i < plan.seqs.size(); ++i) plan.chunks[i].pages = plan.seqs[i]->pages;
  for (auto& c : plan.chunks) plan.n_tokens += static_cast<int64_t>(c.tokens.size());
  return plan;
}

void Scheduler::advance(StepPlan& plan) {
  plan.token_index.assign(plan.seqs.size(), -1);
  int32_t row = 0;
  for (std::size_t i = 0; i < plan.seqs.size(); ++i) {
    Sequence* s = plan.seqs[i];
    s->n_computed += static_cast<int64_t>(plan.chunks[i].tokens.size());
    row += plan.chunks[i].scored_rows;  // the wanted rows: a chunk's scored ones come first
    if (!plan.chunks[i].need_logits) continue;
    plan.token_index[i] = static_cast<int64_t>(s->tokens.size());
    s->pending_index = plan.token_index[i];
    s->pending_row = row++;
    s->tokens.push_back(kPendingToken);
  }
}

void Scheduler::commit(StepPlan& plan, std::span<const int32_t> sampled) {
  if (plan.token_index.size() != plan.seqs.size()) advance(plan);
  std::size_t k = 0;
  for (std::size_t i = 0; i < plan.seqs.size(); ++i) {
    Sequence* s = plan.seqs[i];
    const int64_t at = plan.token_index[i];
    if (at >= 0) DPA_ASSERT(k < sampled.size(), "fewer sampled tokens than sequences with logits");
    const int32_t token = at >= 0 ? sampled[k++] : kPendingToken;
    if (s->finished) continue;
    if (at >= 0) {
      s->tokens[static_cast<std::size_t>(at)] = token;
      if (s->pending_index == at) s->pending_index = -1, s->pending_row = -1;
    }
    if (blocks_.prefix_caching()) {  // pages whose tokens are all known (a later draw may be pending)
      const int64_t known = s->pending_index >= 0 ? s->pending_index : static_cast<int64_t>(s->tokens.size());
      s->n_published = blocks_.publish(s->pages, s->tokens, s->n_published,
                                       std::min(s->n_computed, known) / blocks_.page_size());
    }
  }
}

}  // namespace dpa::engine
