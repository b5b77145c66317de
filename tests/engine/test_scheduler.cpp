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
}  // namespace
