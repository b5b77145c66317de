// Scheduler and block allocator: budgets, chunking, preemption by recompute, accounting.
#include <gtest/gtest.h>

#include <numeric>

#include "engine/scheduler.h"

namespace {
using namespace dpa::engine;

Request make_req(uint64_t id, int n_prompt, int max_tokens) {
  Request r;
  r.id = id;
  r.prompt.resize(n_prompt);
  std::iota(r.prompt.begin(), r.prompt.end(), 1);
  r.params.max_tokens = max_tokens;
  return r;
}

// Feeds each plan as the engine would: one sampled token (= 7) per chunk that wants logits.
std::vector<int32_t> fake_tokens(const StepPlan& p) {
  std::vector<int32_t> t;
  for (auto& c : p.chunks) if (c.need_logits) t.push_back(7);
  return t;
}

TEST(BlockAllocator, GrowReleaseAccounting) {
  BlockAllocator b(10, 4);
  std::vector<int32_t> t1, t2;
  EXPECT_TRUE(b.grow(t1, 9));  // 3 pages
  EXPECT_EQ(t1.size(), 3u);
  EXPECT_TRUE(b.grow(t1, 12));  // still 3
  EXPECT_EQ(t1.size(), 3u);
  EXPECT_FALSE(b.grow(t2, 29));  // 8 pages > 7 free: no change
  EXPECT_TRUE(t2.empty());
  EXPECT_EQ(b.free_count(), 7);
  EXPECT_TRUE(b.consistent());
  b.release(t1);
  EXPECT_EQ(b.free_count(), 10);
  EXPECT_EQ(b.used_count(), 0);
  EXPECT_TRUE(b.consistent());
}

TEST(Scheduler, ChunkedPrefillRespectsBudget) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 16;
  Scheduler s(cfg, 100, 4);
  s.add(make_req(1, 40, 4));
  auto p1 = s.schedule();
  ASSERT_EQ(p1.chunks.size(), 1u);
  EXPECT_EQ(p1.chunks[0].tokens.size(), 16u);
  EXPECT_EQ(p1.chunks[0].start, 0);
  EXPECT_FALSE(p1.chunks[0].need_logits);
  s.commit(p1, fake_tokens(p1));
  auto p2 = s.schedule();
  EXPECT_EQ(p2.chunks[0].start, 16);
  s.commit(p2, fake_tokens(p2));
  auto p3 = s.schedule();
  EXPECT_EQ(p3.chunks[0].tokens.size(), 8u);  // the last 8 prompt tokens
  EXPECT_TRUE(p3.chunks[0].need_logits);
  s.commit(p3, fake_tokens(p3));
  auto p4 = s.schedule();  // now decoding the sampled token
  ASSERT_EQ(p4.chunks.size(), 1u);
  EXPECT_EQ(p4.chunks[0].tokens.size(), 1u);
  EXPECT_EQ(p4.chunks[0].tokens[0], 7);
  EXPECT_EQ(p4.chunks[0].start, 40);
}

// A scored prompt (prompt_logprobs): its chunks are cut to max_scored_rows scored positions a
// step, each chunk names the positions whose next token is the prompt's, it takes no cached
// prefix, and a draw's wanted row counts the scored rows ahead of it.
TEST(Scheduler, ScoredPromptChunksAndRows) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 64;
  cfg.max_scored_rows = 10;
  cfg.enable_prefix_caching = true;
  Scheduler s(cfg, 100, 4);
  s.add(make_req(1, 16, 2));  // computed and published first, so that the scored one could reuse it
  for (int i = 0; i < 2; ++i) {
    auto p = s.schedule();
    s.commit(p, fake_tokens(p));
  }
  Request r = make_req(2, 16, 2);
  r.params.prompt_logprobs = 0;
  s.add(r);
  s.add(make_req(3, 16, 2));  // the same prompt unscored: takes the cached prefix
  auto p1 = s.schedule();
  ASSERT_EQ(p1.chunks.size(), 3u);  // 1 decodes; 2 scores [0, 10); 3 reuses 12 tokens
  EXPECT_EQ(p1.chunks[1].start, 0);
  EXPECT_EQ(p1.chunks[1].tokens.size(), 10u);
  EXPECT_EQ(p1.chunks[1].scored_rows, 10);
  EXPECT_FALSE(p1.chunks[1].need_logits);
  EXPECT_EQ(p1.chunks[2].start, 12);
  EXPECT_EQ(p1.chunks[2].scored_rows, 0);
  s.advance(p1);
  EXPECT_EQ(p1.seqs[0]->pending_row, 0);
  EXPECT_EQ(p1.seqs[2]->pending_row, 11);  // behind the decode row and 10 scored rows
  s.commit(p1, fake_tokens(p1));
  auto p2 = s.schedule();
  const SeqChunk* c2 = nullptr;
  for (std::size_t i = 0; i < p2.seqs.size(); ++i)
    if (p2.seqs[i]->req.id == 2) c2 = &p2.chunks[i];
  ASSERT_NE(c2, nullptr);
  EXPECT_EQ(c2->start, 10);
  EXPECT_EQ(c2->tokens.size(), 6u);
  EXPECT_EQ(c2->scored_rows, 5);  // positions 10 .. 14; 15's next token is drawn
  EXPECT_TRUE(c2->need_logits);
  EXPECT_EQ(s.prefix_hits(), 12);  // request 3's only
  EXPECT_EQ(s.prefix_queries(), 32);  // requests 1 and 3: the scored one looks nothing up
  s.commit(p2, fake_tokens(p2));
  for (auto* q : p2.seqs)
    if (q->req.id == 2) EXPECT_FALSE(q->scoring());  // its first token is drawn
  // Two scored prompts queued ahead of an unscored one: the first takes the step's scored rows,
  // the second waits for the next step, and the unscored one behind it is not held up.
  Request a = make_req(4, 30, 2), b = make_req(5, 30, 2);
  a.params.prompt_logprobs = b.params.prompt_logprobs = 1;
  s.add(a);
  s.add(b);
  Request c = make_req(6, 8, 2);
  for (auto& t : c.prompt) t += 100;  // nothing cached
  s.add(c);
  auto p3 = s.schedule();
  std::vector<uint64_t> admitted;
  for (std::size_t i = 0; i < p3.seqs.size(); ++i)
    if (p3.chunks[i].start == 0) admitted.push_back(p3.seqs[i]->req.id);
  EXPECT_EQ(admitted, (std::vector<uint64_t>{4, 6}));
}

TEST(Scheduler, MaxNumSeqsAndDecodeFirst) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 2;
  cfg.max_num_batched_tokens = 100;
  Scheduler s(cfg, 100, 4);
  for (uint64_t i = 1; i <= 3; ++i) s.add(make_req(i, 5, 4));
  auto p1 = s.schedule();
  EXPECT_EQ(p1.chunks.size(), 2u);
  EXPECT_EQ(s.n_waiting(), 1);
  s.commit(p1, fake_tokens(p1));
  auto p2 = s.schedule();
  ASSERT_EQ(p2.chunks.size(), 2u);  // both decode; the third waits for a slot
  EXPECT_EQ(p2.chunks[0].tokens.size(), 1u);
  EXPECT_EQ(p2.chunks[1].tokens.size(), 1u);
  s.finish(p2.seqs[0]);
  s.commit(p2, fake_tokens(p2));
  auto p3 = s.schedule();  // finished one reaped; the third is admitted
  EXPECT_EQ(s.n_waiting(), 0);
  EXPECT_EQ(p3.chunks.size(), 2u);
}

TEST(Scheduler, PreemptsLatestWhenPagesRunOutAndRecomputes) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 100;
  // 4 pages of 4 tokens: two sequences of 7 prompt tokens take 2 pages each.
  Scheduler s(cfg, 4, 4);
  s.add(make_req(1, 7, 10));
  s.add(make_req(2, 7, 10));
  auto p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 2u);
  s.commit(p, fake_tokens(p));  // each has 8 tokens now, 7 computed
  p = s.schedule();              // decode of token 8 fits in page 2
  ASSERT_EQ(p.chunks.size(), 2u);
  s.commit(p, fake_tokens(p));  // 9 tokens, 8 computed: the next decode needs a third page each
  p = s.schedule();
  // Sequence 2 (admitted last) yields its pages; sequence 1 decodes.
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.seqs[0]->req.id, 1u);
  EXPECT_EQ(s.n_preemptions(), 1);
  EXPECT_EQ(s.n_waiting(), 1);
  EXPECT_TRUE(s.blocks().consistent());
  s.finish(p.seqs[0]);
  s.commit(p, fake_tokens(p));
  p = s.schedule();  // sequence 2 recomputes its 9 tokens from position 0
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.seqs[0]->req.id, 2u);
  EXPECT_EQ(p.chunks[0].start, 0);
  EXPECT_EQ(p.chunks[0].tokens.size(), 9u);
  EXPECT_TRUE(p.chunks[0].need_logits);
  s.finish(p.seqs[0]);
  s.commit(p, fake_tokens(p));
  s.schedule();
  EXPECT_EQ(s.blocks().used_count(), 0);
  EXPECT_TRUE(s.blocks().consistent());
}

// The overlap: the next step is planned after advance() and before commit() of the one before.
TEST(Scheduler, OverlapPlansOverPendingDraws) {
  Scheduler s(SchedulerConfig{}, 100, 4);
  s.add(make_req(1, 5, 3));
  s.add(make_req(2, 6, 10));
  auto p1 = s.schedule();
  ASSERT_EQ(p1.chunks.size(), 2u);
  EXPECT_EQ(p1.chunks[0].prev_row, -1);
  s.advance(p1);
  Sequence* a = p1.seqs[0];
  Sequence* b = p1.seqs[1];
  ASSERT_EQ(a->tokens.size(), 6u);
  EXPECT_EQ(a->tokens[5], kPendingToken);
  EXPECT_EQ(a->n_computed, 5);
  EXPECT_EQ(p1.token_index, (std::vector<int64_t>{5, 6}));

  auto p2 = s.schedule();  // both decode their pending draws, taken from p1's rows 0 and 1
  ASSERT_EQ(p2.chunks.size(), 2u);
  EXPECT_EQ(p2.chunks[0].start, 5);
  EXPECT_EQ(p2.chunks[0].prev_row, 0);
  EXPECT_EQ(p2.chunks[1].start, 6);
  EXPECT_EQ(p2.chunks[1].prev_row, 1);
  s.advance(p2);
  s.commit(p1, std::vector<int32_t>{11, 12});
  EXPECT_EQ(a->tokens[5], 11);
  EXPECT_EQ(b->tokens[6], 12);
  EXPECT_EQ(a->pending_index, 6);  // p2's draw is still pending
  EXPECT_EQ(a->tokens[6], kPendingToken);

  auto p3 = s.schedule();  // a: 2 drawn (one pending) of max_tokens 3: one more
  ASSERT_EQ(p3.chunks.size(), 2u);
  s.advance(p3);
  s.commit(p2, std::vector<int32_t>{21, 22});
  auto p4 = s.schedule();  // a's pending draw is its third and last: only b decodes
  ASSERT_EQ(p4.chunks.size(), 1u);
  EXPECT_EQ(p4.seqs[0], b);
  EXPECT_EQ(p4.chunks[0].prev_row, 1);
  s.advance(p4);
  // The engine finds a stop in b's draw of p3 while p4 runs: p4's row of b is skipped.
  s.commit(p3, std::vector<int32_t>{31, 32});
  s.finish(a);
  s.finish(b);
  const auto b_tokens = b->tokens;
  s.commit(p4, std::vector<int32_t>{42});
  EXPECT_EQ(b->tokens, b_tokens);
  EXPECT_EQ(a->tokens, (std::vector<int32_t>{1, 2, 3, 4, 5, 11, 21, 31}));
  EXPECT_TRUE(s.schedule().chunks.empty());
  EXPECT_EQ(s.blocks().used_count(), 0);
  EXPECT_TRUE(s.blocks().consistent());
}

TEST(Scheduler, OverlapNeverPreemptsASequenceWithAPendingDraw) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 100;
  Scheduler s(cfg, 4, 4);  // two sequences of 7 prompt tokens: 2 pages each, none left
  s.add(make_req(1, 7, 10));
  s.add(make_req(2, 7, 10));
  auto p1 = s.schedule();
  s.advance(p1);
  auto p2 = s.schedule();  // position 7 is still in page 2
  ASSERT_EQ(p2.chunks.size(), 2u);
  s.advance(p2);
  s.commit(p1, fake_tokens(p1));
  auto p3 = s.schedule();  // both need a third page, both have p2's draw pending: both wait
  EXPECT_TRUE(p3.chunks.empty());
  EXPECT_EQ(s.n_preemptions(), 0);
  EXPECT_EQ(s.n_running(), 2);
  s.commit(p2, fake_tokens(p2));
  auto p4 = s.schedule();  // known now: sequence 2 yields, sequence 1 decodes
  ASSERT_EQ(p4.chunks.size(), 1u);
  EXPECT_EQ(p4.seqs[0]->req.id, 1u);
  EXPECT_EQ(p4.chunks[0].prev_row, -1);
  EXPECT_EQ(s.n_preemptions(), 1);
  EXPECT_TRUE(s.blocks().consistent());
}

TEST(Scheduler, AbortFreesPages) {
  Scheduler s(SchedulerConfig{}, 10, 4);
  s.add(make_req(1, 9, 4));
  s.add(make_req(2, 9, 4));
  auto p = s.schedule();
  s.commit(p, fake_tokens(p));
  EXPECT_GT(s.blocks().used_count(), 0);
  EXPECT_TRUE(s.abort(1));
  EXPECT_TRUE(s.abort(2));
  EXPECT_FALSE(s.abort(3));
  s.schedule();
  EXPECT_EQ(s.blocks().used_count(), 0);
  EXPECT_EQ(s.n_unfinished(), 0);
}

// --scheduling-policy. A request with a given prompt and priority.
Request req_of(uint64_t id, std::vector<int32_t> prompt, int32_t priority = 0) {
  Request r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.params.max_tokens = 4;
  r.priority = priority;
  return r;
}

std::vector<int32_t> concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Runs the queue to the end one step at a time, each sequence finished after its first step
// (committed first, so that its computed pages are published); returns the ids in the order
// they were admitted. With max_num_seqs 1 that is the policy's admission order.
std::vector<uint64_t> admission_sequence(Scheduler& s) {
  std::vector<uint64_t> ids;
  while (s.n_unfinished() > 0) {
    auto p = s.schedule();
    if (p.seqs.empty()) break;
    for (auto* q : p.seqs) ids.push_back(q->req.id);
    s.commit(p, fake_tokens(p));
    for (auto* q : p.seqs) s.finish(q);
  }
  return ids;
}

TEST(SchedulingPolicy, PriorityAdmitsLowestValueFirstTiesByArrival) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 1;
  cfg.policy = SchedulingPolicy::priority;
  Scheduler s(cfg, 100, 4);
  const int32_t prio[] = {5, -1, 5, -1, 0};
  for (uint64_t i = 1; i <= 5; ++i) s.add(req_of(i, {1, 2, 3}, prio[i - 1]));
  EXPECT_EQ(admission_sequence(s), (std::vector<uint64_t>{2, 4, 5, 1, 3}));
}

TEST(SchedulingPolicy, FcfsIgnoresPriority) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 1;
  Scheduler s(cfg, 100, 4);
  const int32_t prio[] = {5, -1, 5, -1, 0};
  for (uint64_t i = 1; i <= 5; ++i) s.add(req_of(i, {1, 2, 3}, prio[i - 1]));
  EXPECT_EQ(admission_sequence(s), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
}

// Pages run out when both sequences need a third page (4 pages of 4 tokens, 7-token prompts).
// Sequence 1 is admitted first, sequence 2 one step later; returns who decodes in that step.
std::vector<uint64_t> decoders_when_pages_run_out(SchedulingPolicy policy, int32_t prio1, int32_t prio2,
                                                  int64_t* n_preemptions) {
  SchedulerConfig cfg;
  cfg.max_num_batched_tokens = 100;
  cfg.policy = policy;
  Scheduler s(cfg, 4, 4);
  s.add(req_of(1, {1, 2, 3, 4, 5, 6, 7}, prio1));
  auto p = s.schedule();
  s.commit(p, fake_tokens(p));  // 1: 8 tokens, 7 computed
  s.add(req_of(2, {1, 2, 3, 4, 5, 6, 7}, prio2));
  p = s.schedule();  // 1 decodes within its second page, 2 prefills into the last two
  EXPECT_EQ(p.seqs.size(), 2u);
  s.commit(p, fake_tokens(p));  // 1: 9 tokens, 8 computed (needs a third page); 2: 8, 7
  p = s.schedule();
  std::vector<uint64_t> ids;
  for (auto* q : p.seqs) ids.push_back(q->req.id);
  EXPECT_TRUE(s.blocks().consistent());
  *n_preemptions = s.n_preemptions();
  return ids;
}

TEST(SchedulingPolicy, PriorityPreemptsTheLargestPriorityThenLatestArrival) {
  int64_t n = 0;
  // fcfs: the latest admitted (2) yields, whatever the priorities.
  EXPECT_EQ(decoders_when_pages_run_out(SchedulingPolicy::fcfs, 1, 0, &n), (std::vector<uint64_t>{1}));
  EXPECT_EQ(n, 1);
  // priority: 1 has the larger value: it yields although admitted first, and 2 decodes.
  EXPECT_EQ(decoders_when_pages_run_out(SchedulingPolicy::priority, 1, 0, &n), (std::vector<uint64_t>{2}));
  EXPECT_EQ(n, 1);
  // Equal priorities: the later arrival yields.
  EXPECT_EQ(decoders_when_pages_run_out(SchedulingPolicy::priority, 3, 3, &n), (std::vector<uint64_t>{1}));
  EXPECT_EQ(n, 1);
}

// vLLM V1's rule: a waiting request never preempts running ones, whatever its priority; it is
// admitted when a slot frees, ahead of earlier arrivals with larger values.
TEST(SchedulingPolicy, PriorityNeverPreemptsToAdmit) {
  SchedulerConfig cfg;
  cfg.max_num_seqs = 1;
  cfg.policy = SchedulingPolicy::priority;
  Scheduler s(cfg, 100, 4);
  s.add(req_of(1, {1, 2, 3}, 5));
  auto p = s.schedule();
  s.commit(p, fake_tokens(p));
  s.add(req_of(2, {1, 2, 3}, 1));
  s.add(req_of(3, {1, 2, 3}, -5));
  p = s.schedule();
  ASSERT_EQ(p.seqs.size(), 1u);
  EXPECT_EQ(p.seqs[0]->req.id, 1u);
  EXPECT_EQ(s.n_waiting(), 2);
  EXPECT_EQ(s.n_preemptions(), 0);
  s.commit(p, fake_tokens(p));
  s.finish(p.seqs[0]);
  EXPECT_EQ(admission_sequence(s), (std::vector<uint64_t>{3, 2}));
}

// lpm against a hand-built cache: prefix A (3 pages of 4 tokens) and B (1 page) are published
// by two finished requests; the queue then holds prompts that would reuse 0, 1, 1, 2 and 3 pages.
struct LpmCase {
  std::vector<int32_t> A = {100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111};
  std::vector<int32_t> B = {200, 201, 202, 203};
  std::vector<uint64_t> run(SchedulingPolicy policy, int64_t lpm_max_waiting = 128, bool caching = true) {
    SchedulerConfig cfg;
    cfg.max_num_seqs = 1;
    cfg.enable_prefix_caching = caching;
    cfg.policy = policy;
    cfg.lpm_max_waiting = lpm_max_waiting;
    Scheduler s(cfg, 100, 4);
    s.add(req_of(90, concat(A, {9999})));
    s.add(req_of(91, concat(B, {9998})));
    admission_sequence(s);
    s.add(req_of(1, {1, 2, 3, 4, 5, 6, 7, 8, 9}));                              // 0 pages cached
    s.add(req_of(2, concat(B, {210, 211, 212, 213, 214})));                     // 1
    s.add(req_of(3, concat(B, {220, 221, 222, 223, 224})));                     // 1
    s.add(req_of(4, concat({A.begin(), A.begin() + 8}, {410, 411, 412, 413, 414})));  // 2
    s.add(req_of(5, concat(A, {310, 311, 312, 313, 314})));                     // 3
    auto ids = admission_sequence(s);
    hits = s.prefix_hits();
    return ids;
  }
  int64_t hits = 0;
};

TEST(SchedulingPolicy, LpmAdmitsTheLongestCachedPrefixFirst) {
  LpmCase c;
  EXPECT_EQ(c.run(SchedulingPolicy::lpm), (std::vector<uint64_t>{5, 4, 2, 3, 1}));  // ties (2, 3) by arrival
  EXPECT_EQ(c.hits, (3 + 2 + 1 + 1) * 4);  // the cache held what the comments say
}

TEST(SchedulingPolicy, LpmFallsBackToFcfsOnALongQueue) {
  LpmCase c;
  // 5 waiting > 3: fcfs takes 1, then 2; with 3 waiting lpm orders 5, 4, 3.
  EXPECT_EQ(c.run(SchedulingPolicy::lpm, 3), (std::vector<uint64_t>{1, 2, 5, 4, 3}));
  // Prefix caching off: nothing is cached, lpm is fcfs.
  EXPECT_EQ(c.run(SchedulingPolicy::lpm, 128, false), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
  EXPECT_EQ(c.run(SchedulingPolicy::fcfs), (std::vector<uint64_t>{1, 2, 3, 4, 5}));
}
}  // namespace
