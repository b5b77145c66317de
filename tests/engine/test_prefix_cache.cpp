// Prefix cache: the page tree of BlockAllocator (reference counts, LRU eviction of unreferenced
// leaves, partial pages, duplicates, flush) and the scheduler's use of it (reuse capped below the
// last prompt token, waiting for a page being computed, abort and preemption release).
#include <gtest/gtest.h>

#include <numeric>

#include "engine/scheduler.h"
#include "engine/wire.h"

namespace {
using namespace dpa::engine;

std::vector<int32_t> iota_tokens(int n, int first = 1) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

Request make_req(uint64_t id, std::vector<int32_t> prompt, int max_tokens) {
  Request r;
  r.id = id;
  r.prompt = std::move(prompt);
  r.params.max_tokens = max_tokens;
  return r;
}

std::vector<int32_t> fake_tokens(const StepPlan& p) {
  std::vector<int32_t> t;
  for (auto& c : p.chunks) if (c.need_logits) t.push_back(7);
  return t;
}

// One engine step without a model: commit, then finish what reached max_tokens.
void step(Scheduler& s, StepPlan& p) {
  s.commit(p, fake_tokens(p));
  for (Sequence* q : p.seqs)
    if (p.chunks.size() && q->n_generated() >= q->req.params.max_tokens && !q->finished) s.finish(q);
}

// Runs until every request finished; checks the accounting after every step.
void drain(Scheduler& s, int max_steps = 1000) {
  for (int i = 0; i < max_steps && s.n_unfinished() > 0; ++i) {
    auto p = s.schedule();
    ASSERT_TRUE(s.blocks().consistent());
    step(s, p);
    ASSERT_TRUE(s.blocks().consistent());
  }
  s.schedule();  // reap
  ASSERT_EQ(s.n_unfinished(), 0);
}

SchedulerConfig caching_cfg() {
  SchedulerConfig c;
  c.enable_prefix_caching = true;
  c.max_num_batched_tokens = 1000;
  return c;
}

TEST(PrefixCacheBlocks, PublishMatchShareRefcounts) {
  BlockAllocator b(10, 4, true);
  const auto tok = iota_tokens(12);
  std::vector<int32_t> t1, t2;
  ASSERT_TRUE(b.grow(t1, 12));
  EXPECT_EQ(b.publish(t1, tok, 0, 3), 3);
  EXPECT_EQ(b.cached_count(), 3);
  EXPECT_EQ(b.match(tok, 10), t1);
  auto two = b.match(tok, 2);
  ASSERT_EQ(two.size(), 2u);
  b.share(t2, two);
  EXPECT_EQ(b.ref_count(t1[0]), 2);
  EXPECT_EQ(b.ref_count(t1[2]), 1);
  EXPECT_EQ(b.used_count(), 3);
  b.release(t1);
  EXPECT_EQ(b.ref_count(two[0]), 1);
  EXPECT_EQ(b.used_count(), 2);
  EXPECT_EQ(b.idle_cached_count(), 1);  // the third page: cached, held by nobody
  EXPECT_EQ(b.free_count(), 8);         // 7 on the free list + 1 evictable
  EXPECT_TRUE(b.consistent());
  b.release(t2);
  EXPECT_EQ(b.used_count(), 0);
  EXPECT_EQ(b.idle_cached_count(), 3);
  EXPECT_EQ(b.free_count(), 10);
  EXPECT_TRUE(b.consistent());
  EXPECT_EQ(b.flush(), 3);
  EXPECT_EQ(b.cached_count(), 0);
  EXPECT_TRUE(b.match(tok, 10).empty());
  EXPECT_TRUE(b.consistent());
}

TEST(PrefixCacheBlocks, PartialPagesAreNeverShared) {
  BlockAllocator b(10, 4, true);
  const auto tok = iota_tokens(10);  // 2 full pages + 2 tokens
  std::vector<int32_t> t;
  ASSERT_TRUE(b.grow(t, 10));
  EXPECT_EQ(b.publish(t, tok, 0, 10 / 4), 2);
  EXPECT_EQ(b.cached_count(), 2);
  EXPECT_FALSE(b.is_cached(t[2]));
  EXPECT_EQ(b.match(tok, 10).size(), 2u);
  // A different token inside the second page: only the first page matches.
  auto other = tok;
  other[5] = 99;
  EXPECT_EQ(b.match(other, 10).size(), 1u);
  b.release(t);
  EXPECT_EQ(b.free_count(), 10);
  EXPECT_TRUE(b.consistent());
}

TEST(PrefixCacheBlocks, EvictsLeastRecentlyReleasedLeavesFirst) {
  BlockAllocator b(6, 2, true);
  const auto a = iota_tokens(4, 100), c = iota_tokens(4, 200);
  std::vector<int32_t> ta, tc;
  ASSERT_TRUE(b.grow(ta, 4));
  b.publish(ta, a, 0, 2);
  ASSERT_TRUE(b.grow(tc, 4));
  b.publish(tc, c, 0, 2);
  const auto pa = ta, pc = tc;
  b.release(ta);  // a released first: older
  b.release(tc);
  EXPECT_EQ(b.free_count(), 6);
  std::vector<int32_t> x;
  ASSERT_TRUE(b.grow(x, 6));  // 2 free pages, then one eviction: a's leaf (its second page)
  EXPECT_FALSE(b.is_cached(pa[1]));
  EXPECT_TRUE(b.is_cached(pa[0]));
  EXPECT_TRUE(b.is_cached(pc[0]) && b.is_cached(pc[1]));
  EXPECT_EQ(b.match(a, 2).size(), 1u);
  std::vector<int32_t> y;
  ASSERT_TRUE(b.grow(y, 2));  // a's first page is now the oldest leaf
  EXPECT_FALSE(b.is_cached(pa[0]));
  EXPECT_EQ(b.match(c, 2).size(), 2u);
  ASSERT_TRUE(b.grow(y, 4));  // then c's leaf before c's root page
  EXPECT_FALSE(b.is_cached(pc[1]));
  EXPECT_TRUE(b.is_cached(pc[0]));
  EXPECT_TRUE(b.consistent());
  std::vector<int32_t> z;
  EXPECT_FALSE(b.grow(z, 4));  // only one page left
  EXPECT_TRUE(z.empty());
  b.release(x);
  b.release(y);
  b.flush();
  EXPECT_EQ(b.free_count(), 6);
  EXPECT_EQ(b.used_count(), 0);
  EXPECT_TRUE(b.consistent());
}

TEST(PrefixCacheBlocks, ReuseRefreshesRecency) {
  BlockAllocator b(4, 2, true);
  const auto a = iota_tokens(2, 100), c = iota_tokens(2, 200);
  std::vector<int32_t> ta, tc, t;
  ASSERT_TRUE(b.grow(ta, 2));
  b.publish(ta, a, 0, 1);
  ASSERT_TRUE(b.grow(tc, 2));
  b.publish(tc, c, 0, 1);
  b.release(ta);
  b.release(tc);
  b.share(t, b.match(a, 1));  // a used again: now c is the least recent
  b.release(t);
  std::vector<int32_t> x;
  ASSERT_TRUE(b.grow(x, 6));  // 2 free + 1 eviction
  EXPECT_EQ(b.match(a, 1).size(), 1u);
  EXPECT_TRUE(b.match(c, 1).empty());
  b.release(x);
  EXPECT_TRUE(b.consistent());
}

TEST(PrefixCacheBlocks, HeldPagesAreNeverEvicted) {
  BlockAllocator b(4, 2, true);
  const auto a = iota_tokens(4);
  std::vector<int32_t> t, x;
  ASSERT_TRUE(b.grow(t, 4));
  b.publish(t, a, 0, 2);
  EXPECT_EQ(b.free_count(), 2);
  EXPECT_FALSE(b.grow(x, 6));
  EXPECT_EQ(b.flush(), 0);  // held: not flushed
  EXPECT_EQ(b.cached_count(), 2);
  b.release(t);
  EXPECT_EQ(b.flush(), 2);
  EXPECT_TRUE(b.consistent());
}

TEST(PrefixCacheBlocks, DuplicateComputationKeepsTheCachedPage) {
  BlockAllocator b(8, 2, true);
  const auto a = iota_tokens(4);
  std::vector<int32_t> t1, t2;
  ASSERT_TRUE(b.grow(t1, 4));
  ASSERT_TRUE(b.grow(t2, 4));  // computed side by side, privately
  b.publish(t1, a, 0, 2);
  const auto own = t2;
  EXPECT_EQ(b.publish(t2, a, 0, 2), 2);
  EXPECT_EQ(t2, t1);  // t2 now shares t1's pages; its own went back to the free list
  EXPECT_EQ(b.ref_count(t1[0]), 2);
  EXPECT_EQ(b.ref_count(own[0]), 0);
  EXPECT_FALSE(b.is_cached(own[0]));
  EXPECT_EQ(b.used_count(), 2);
  EXPECT_TRUE(b.consistent());
  b.release(t1);
  b.release(t2);
  EXPECT_EQ(b.used_count(), 0);
  EXPECT_EQ(b.free_count(), 8);
  EXPECT_TRUE(b.consistent());
}

TEST(PrefixCacheBlocks, OffMeansNoTree) {
  BlockAllocator b(8, 2, false);
  const auto a = iota_tokens(4);
  std::vector<int32_t> t;
  ASSERT_TRUE(b.grow(t, 4));
  EXPECT_EQ(b.publish(t, a, 0, 2), 0);
  EXPECT_TRUE(b.match(a, 2).empty());
  b.release(t);
  EXPECT_EQ(b.cached_count(), 0);
  EXPECT_TRUE(b.consistent());
}

TEST(PrefixCacheScheduler, SecondRequestReusesAllButTheLastToken) {
  Scheduler s(caching_cfg(), 100, 4);
  s.add(make_req(1, iota_tokens(40), 2));
  drain(s);
  EXPECT_EQ(s.prefix_queries(), 40);
  EXPECT_EQ(s.prefix_hits(), 0);
  EXPECT_GT(s.blocks().idle_cached_count(), 0);
  // Whole prompt cached (40 = 10 full pages): reuse is capped at (40 - 1) / 4 = 9 pages.
  s.add(make_req(2, iota_tokens(40), 2));
  auto p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].start, 36);
  EXPECT_EQ(p.chunks[0].tokens.size(), 4u);
  EXPECT_TRUE(p.chunks[0].need_logits);
  EXPECT_EQ(p.seqs[0]->n_cached, 36);
  EXPECT_EQ(s.prefix_hits(), 36);
  step(s, p);
  drain(s);
  // 41 tokens: 10 pages reused, one token computed.
  s.add(make_req(3, iota_tokens(41), 1));
  p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.chunks[0].start, 40);
  EXPECT_EQ(p.chunks[0].tokens.size(), 1u);
  step(s, p);
  drain(s);
  EXPECT_EQ(s.prefix_queries(), 121);
  EXPECT_EQ(s.prefix_hits(), 76);
  EXPECT_EQ(s.blocks().used_count(), 0);
  EXPECT_EQ(s.blocks().free_count(), 100);
}

TEST(PrefixCacheScheduler, GeneratedTokensArePublishedToo) {
  Scheduler s(caching_cfg(), 100, 4);
  s.add(make_req(1, iota_tokens(6), 6));  // 6 prompt + 6 generated (7s), 11 computed
  drain(s);
  std::vector<int32_t> seen = iota_tokens(6);
  seen.insert(seen.end(), 6, 7);
  EXPECT_EQ(s.blocks().match(seen, 10).size(), 2u);  // tokens 0..7: two full computed pages
}

TEST(PrefixCacheScheduler, WaitsForAPageBeingComputed) {
  Scheduler s(caching_cfg(), 100, 4);
  auto shared = iota_tokens(32);
  auto a = shared, b = shared, c = iota_tokens(20, 500);
  a.insert(a.end(), {1000, 1001, 1002});
  b.insert(b.end(), {2000, 2001, 2002});
  s.add(make_req(1, a, 1));
  s.add(make_req(2, b, 1));
  s.add(make_req(3, c, 1));  // unrelated: goes ahead of the waiting one
  auto p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.seqs[0]->req.id, 1u);
  EXPECT_EQ(p.seqs[1]->req.id, 3u);
  EXPECT_EQ(s.n_waiting(), 1);
  step(s, p);
  p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.seqs[0]->req.id, 2u);
  EXPECT_EQ(p.chunks[0].start, 32);
  EXPECT_EQ(p.chunks[0].tokens.size(), 3u);
  step(s, p);
  drain(s);
  EXPECT_EQ(s.prefix_hits(), 32);
  EXPECT_EQ(s.blocks().used_count(), 0);
}

TEST(PrefixCacheScheduler, ChunkedPrefillPublishesAsItGoes) {
  auto cfg = caching_cfg();
  cfg.max_num_batched_tokens = 8;
  Scheduler s(cfg, 100, 4);
  s.add(make_req(1, iota_tokens(20), 1));
  auto p = s.schedule();  // tokens 0..7
  step(s, p);
  EXPECT_EQ(s.blocks().match(iota_tokens(20), 10).size(), 2u);
  s.add(make_req(2, iota_tokens(20), 1));
  p = s.schedule();  // 1 continues (8..15); 2 waits for page 2, which 1 computes now
  ASSERT_EQ(p.chunks.size(), 1u);
  EXPECT_EQ(p.seqs[0]->req.id, 1u);
  step(s, p);
  p = s.schedule();  // 1 finishes its prompt (16..19, 4 tokens); 2 takes pages 0..3 and its last 4 tokens
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.seqs[1]->req.id, 2u);
  EXPECT_EQ(p.chunks[1].start, 16);
  step(s, p);
  drain(s);
  EXPECT_EQ(s.prefix_hits(), 16);
  EXPECT_EQ(s.blocks().used_count(), 0);
  EXPECT_TRUE(s.blocks().consistent());
}

TEST(PrefixCacheScheduler, AbortReleasesSharedPages) {
  Scheduler s(caching_cfg(), 20, 4);
  s.add(make_req(1, iota_tokens(17), 50));
  auto p = s.schedule();
  step(s, p);  // 1 is decoding, its 4 full pages are published
  s.add(make_req(2, iota_tokens(17), 50));
  p = s.schedule();
  ASSERT_EQ(p.chunks.size(), 2u);
  EXPECT_EQ(p.chunks[1].start, 16);
  const int32_t first = p.seqs[1]->pages[0];
  EXPECT_EQ(s.blocks().ref_count(first), 2);
  step(s, p);
  EXPECT_TRUE(s.abort(2));
  s.schedule();
  EXPECT_EQ(s.blocks().ref_count(first), 1);
  EXPECT_TRUE(s.blocks().consistent());
  EXPECT_TRUE(s.abort(1));
  s.schedule();
  EXPECT_EQ(s.blocks().ref_count(first), 0);
  EXPECT_EQ(s.blocks().used_count(), 0);
  EXPECT_EQ(s.blocks().free_count(), 20);
  EXPECT_TRUE(s.blocks().consistent());
}

TEST(PrefixCacheScheduler, PreemptedSequenceReusesItsPublishedPages) {
  auto cfg = caching_cfg();
  // 6 pages of 4 tokens: two sequences of 9 prompt tokens take 3 pages each, then run short.
  Scheduler s(cfg, 6, 4);
  s.add(make_req(1, iota_tokens(9, 1), 12));
  s.add(make_req(2, iota_tokens(9, 100), 12));
  for (int i = 0; i < 200 && s.n_unfinished() > 0; ++i) {
    auto p = s.schedule();
    ASSERT_TRUE(s.blocks().consistent());
    for (std::size_t k = 0; k < p.seqs.size(); ++k)  // a page in the plan is held by its sequence
      for (int32_t pg : p.seqs[k]->pages) ASSERT_GT(s.blocks().ref_count(pg), 0);
    step(s, p);
    ASSERT_TRUE(s.blocks().consistent());
  }
  s.schedule();
  EXPECT_EQ(s.n_unfinished(), 0);
  EXPECT_GT(s.n_preemptions(), 0);
  EXPECT_GT(s.prefix_hits(), 0);  // the recompute started from its own cached pages
  EXPECT_EQ(s.blocks().used_count(), 0);
  EXPECT_EQ(s.blocks().free_count(), 6);
  s.flush_cache();
  EXPECT_EQ(s.blocks().cached_count(), 0);
  EXPECT_TRUE(s.blocks().consistent());
}

TEST(PrefixCacheScheduler, EvictionUnderPressureKeepsServing) {
  auto cfg = caching_cfg();
  Scheduler s(cfg, 8, 4);
  // Many distinct prompts through a small cache: cached pages are evicted to admit new ones.
  for (uint64_t i = 1; i <= 12; ++i) s.add(make_req(i, iota_tokens(10, static_cast<int>(i) * 50), 3));
  drain(s);
  EXPECT_EQ(s.blocks().used_count(), 0);
  EXPECT_EQ(s.blocks().free_count(), 8);
  EXPECT_LE(s.blocks().cached_count(), 8);
}

TEST(PrefixCacheWire, FlushFlagAndCachedTokensCross) {
  Request r = make_req(5, iota_tokens(3), 2);
  std::vector<Request> rs;
  std::vector<uint64_t> ab;
  bool sd = true, fl = false;
  decode_intake(encode_intake({}, {}, false, true), &rs, &ab, &sd, &fl);  // a flush alone is sent
  EXPECT_TRUE(fl);
  EXPECT_FALSE(sd);
  decode_intake(encode_intake({r}, {9}, false, false), &rs, &ab, &sd, &fl);
  EXPECT_FALSE(fl);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].prompt, r.prompt);
  TokenOutput o;
  o.request_id = 3;
  o.token = 11;
  o.cached_tokens = 48;
  auto outs = decode_outputs(encode_outputs({o}));
  ASSERT_EQ(outs.size(), 1u);
  EXPECT_EQ(outs[0].cached_tokens, 48);
}

TEST(PrefixCacheScheduler, OffReusesNothing) {
  SchedulerConfig cfg;
  cfg.enable_prefix_caching = false;
  Scheduler s(cfg, 100, 4);
  s.add(make_req(1, iota_tokens(40), 2));
  drain(s);
  s.add(make_req(2, iota_tokens(40), 2));
  auto p = s.schedule();
  EXPECT_EQ(p.chunks[0].start, 0);
  EXPECT_EQ(s.prefix_hits(), 0);
  EXPECT_EQ(s.blocks().cached_count(), 0);
}
}  // namespace
