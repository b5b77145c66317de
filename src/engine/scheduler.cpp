// Continuous batching with chunked prefill and preemption by recompute.
#include "engine/scheduler.h"

#include <algorithm>

#include "core/error.h"

namespace dpa::engine {

Scheduler::Scheduler(const SchedulerConfig& cfg, int64_t n_pages, int64_t page_size)
    : cfg_(cfg), blocks_(n_pages, page_size) {}

void Scheduler::add(Request r) {
  auto s = std::make_unique<Sequence>();
  s->tokens = r.prompt;
  s->n_prompt = static_cast<int64_t>(r.prompt.size());
  s->req = std::move(r);
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

void Scheduler::preempt(Sequence* victim) {
  blocks_.release(victim->pages);
  victim->n_computed = 0;
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
  while (plan.chunks.empty() && !running_.empty()) {
    Sequence* victim = running_.front().get();
    for (auto& r : running_) if (r->admit_order > victim->admit_order) victim = r.get();
    preempt(victim);
    plan = plan_once();
  }
  return plan;
}

StepPlan Scheduler::plan_once() {
  StepPlan plan;
  int64_t budget = cfg_.max_num_batched_tokens;
  // 1. Decode: every running sequence whose prompt is fully computed takes one token. When pages
  // run out, the latest admitted sequence yields its pages (possibly the one asking).
  std::vector<Sequence*> order;
  for (auto& s : running_) order.push_back(s.get());
  std::sort(order.begin(), order.end(), [](auto* a, auto* b) { return a->admit_order < b->admit_order; });
  std::vector<Sequence*> decoding;
  for (Sequence* s : order) {
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    if (len - s->n_computed != 1) continue;  // still prefilling: handled below
    if (budget < 1) break;
    bool placed = false;
    while (!placed) {
      if (blocks_.grow(s->pages, len)) {
        placed = true;
        break;
      }
      // Victim: the latest admitted running sequence not already placed this step.
      Sequence* victim = nullptr;
      for (auto& r : running_)
        if (std::find(decoding.begin(), decoding.end(), r.get()) == decoding.end() &&
            (!victim || r->admit_order > victim->admit_order))
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
  }
  // 2. Prefill chunks: running sequences mid-prefill, then admit waiting ones in order.
  auto prefill = [&](Sequence* s) -> bool {
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    const int64_t n = std::min(len - s->n_computed, budget);
    if (n <= 0) return false;
    if (!blocks_.grow(s->pages, s->n_computed + n)) return false;
    plan.seqs.push_back(s);
    plan.chunks.push_back({std::span<const int32_t>(s->tokens).subspan(s->n_computed, n), s->n_computed, s->pages,
                           s->n_computed + n == len});
    budget -= n;
    plan.has_prefill = true;
    return true;
  };
  for (auto& s : running_) {
    if (budget <= 0) break;
    const int64_t len = static_cast<int64_t>(s->tokens.size());
    if (len - s->n_computed > 1) prefill(s.get());
  }
  while (budget > 0 && !waiting_.empty() && static_cast<int64_t>(running_.size()) < cfg_.max_num_seqs) {
    Sequence* s = waiting_.front().get();
    if (!prefill(s)) break;  // not enough pages: wait for sequences to finish
    s->admit_order = admit_counter_++;
    running_.push_back(std::move(waiting_.front()));
    waiting_.pop_front();
  }
  // Pages in the plan's spans must stay valid: tables only grow within this step.
  for (std::size_t i = 0; i < plan.seqs.size(); ++i) plan.chunks[i].pages = plan.seqs[i]->pages;
  for (auto& c : plan.chunks) plan.n_tokens += static_cast<int64_t>(c.tokens.size());
  return plan;
}

void Scheduler::commit(const StepPlan& plan, std::span<const int32_t> sampled) {
  std::size_t k = 0;
  for (std::size_t i = 0; i < plan.seqs.size(); ++i) {
    Sequence* s = plan.seqs[i];
    s->n_computed += static_cast<int64_t>(plan.chunks[i].tokens.size());
    if (plan.chunks[i].need_logits) {
      DPA_ASSERT(k < sampled.size(), "fewer sampled tokens than sequences with logits");
      s->tokens.push_back(sampled[k++]);
    }
  }
}

}  // namespace dpa::engine
