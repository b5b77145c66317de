// Router policies against their definitions on synthetic loads.
#include <gtest/gtest.h>

#include <map>
#include <set>

#include "core/error.h"
#include "engine/router.h"

using namespace dpa::engine;

namespace {

std::vector<ReplicaLoad> loads_of(std::vector<int64_t> reqs, std::vector<int64_t> tokens = {}) {
  std::vector<ReplicaLoad> l(reqs.size());
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    l[i].n_reqs = reqs[i];
    l[i].n_tokens = i < tokens.size() ? tokens[i] : 0;
  }
  return l;
}

Request req(std::vector<int32_t> prompt) {
  Request r;
  r.prompt = std::move(prompt);
  return r;
}

std::vector<int32_t> seq(int32_t from, int n) {
  std::vector<int32_t> v;
  for (int i = 0; i < n; ++i) v.push_back(from + i);
  return v;
}

RouterConfig cfg(const std::string& policy) {
  RouterConfig c;
  c.policy = policy;
  c.seed = 42;
  return c;
}

}  // namespace

TEST(Router, UnknownPolicyIsAConfigError) {
  EXPECT_THROW(make_router(cfg("fastest")), dpa::ConfigError);
  for (const char* p : {"round_robin", "random", "shortest_queue", "power_of_two", "cache_aware"})
    EXPECT_EQ(make_router(cfg(p))->name(), p);
}

TEST(Router, RoundRobinCycles) {
  auto r = make_router(cfg("round_robin"));
  const auto l = loads_of({100, 0, 0});
  for (int i = 0; i < 9; ++i) EXPECT_EQ(r->route(req({1}), l), i % 3);
}

TEST(Router, ShortestQueueTakesFewestRequestsThenTokens) {
  auto r = make_router(cfg("shortest_queue"));
  EXPECT_EQ(r->route(req({1}), loads_of({3, 1, 2})), 1);
  EXPECT_EQ(r->route(req({1}), loads_of({2, 2, 2}, {50, 10, 30})), 1);
  EXPECT_EQ(r->route(req({1}), loads_of({2, 2, 2}, {5, 5, 5})), 0);  // full tie: lowest index
}

TEST(Router, RandomIsUniformAndSeeded) {
  auto a = make_router(cfg("random")), b = make_router(cfg("random"));
  const auto l = loads_of({0, 0, 0, 0});
  std::map<int, int> hist;
  for (int i = 0; i < 4000; ++i) {
    const int x = a->route(req({1}), l);
    EXPECT_EQ(x, b->route(req({1}), l));  // same seed, same choices
    ++hist[x];
  }
  ASSERT_EQ(hist.size(), 4u);
  for (auto [k, n] : hist) EXPECT_NEAR(n, 1000, 150) << "replica " << k;
}

TEST(Router, PowerOfTwoPicksTheLessLoadedOfTwoDistinct) {
  auto r = make_router(cfg("power_of_two"));
  // The most loaded replica can never win: whichever pair is drawn holds a less loaded one.
  const auto l = loads_of({1, 5, 9, 3});
  std::map<int, int> hist;
  for (int i = 0; i < 3000; ++i) ++hist[r->route(req({1}), l)];
  EXPECT_EQ(hist.count(2), 0u);
  // P(win) for the least loaded replica 0: every pair containing it = 3 of 6 pairs.
  EXPECT_NEAR(hist[0], 1500, 150);
  // Replica 3 (load 3) wins against 1 and 2: 2 of 6 pairs; replica 1 (load 5) beats only 2: 1 of 6.
  EXPECT_NEAR(hist[3], 1000, 150);
  EXPECT_NEAR(hist[1], 500, 120);
  // Two replicas: always the less loaded.
  for (int i = 0; i < 50; ++i) EXPECT_EQ(r->route(req({1}), loads_of({7, 2})), 1);
  EXPECT_EQ(r->route(req({1}), loads_of({4})), 0);
}

TEST(Router, CacheAwareFollowsTheLongestPrefixAboveTheThreshold) {
  CacheAwareRouter r(cfg("cache_aware"), [] { return 0.0; });
  const auto balanced = loads_of({0, 0, 0});
  const auto a = seq(1000, 20), b = seq(5000, 20);
  // Empty trees: no match, the smallest tree (all 0: lowest index).
  EXPECT_EQ(r.route(req(a), balanced), 0);
  EXPECT_EQ(r.tree_size(0), 20);
  // b matches nothing: smallest tree is replica 1.
  EXPECT_EQ(r.route(req(b), balanced), 1);
  // a with a different tail: 15/20 = 0.75 > 0.5 -> replica 0.
  auto a2 = seq(1000, 15);
  for (int i = 0; i < 5; ++i) a2.push_back(9000 + i);
  EXPECT_EQ(r.match_len(a2, 0), 15);
  EXPECT_EQ(r.route(req(a2), balanced), 0);
  EXPECT_EQ(r.tree_size(0), 25);
  // b's first 8 tokens then new ones: 8/20 = 0.4 <= 0.5 -> smallest tree, replica 2.
  auto b2 = seq(5000, 8);
  for (int i = 0; i < 12; ++i) b2.push_back(7000 + i);
  EXPECT_EQ(r.route(req(b2), balanced), 2);
  // Exactly at the threshold (10/20 = 0.5) is not above it: smallest tree again (replica 1: 20 < 25, 20).
  auto b3 = seq(5000, 10);
  for (int i = 0; i < 10; ++i) b3.push_back(8000 + i);
  EXPECT_EQ(r.route(req(b3), balanced), 1);
}

TEST(Router, CacheAwareBalancesWhenImbalanced) {
  RouterConfig c = cfg("cache_aware");
  CacheAwareRouter r(c, [] { return 0.0; });
  const auto a = seq(1, 30);
  r.insert(a, 0);
  // Replica 0 holds the prefix; loads differ by 40 > 32 and 50 > 1.0001 * 10: shortest queue wins.
  EXPECT_EQ(r.route(req(a), loads_of({50, 10, 20})), 1);
  // Difference 32 is not above the absolute threshold: cache wins.
  EXPECT_EQ(r.route(req(a), loads_of({42, 10, 20})), 0);
  // Above the absolute threshold but not the relative one.
  c.balance_rel_threshold = 10.0;
  CacheAwareRouter r2(c, [] { return 0.0; });
  r2.insert(a, 0);
  EXPECT_EQ(r2.route(req(a), loads_of({90, 10, 20})), 0);
  EXPECT_EQ(r2.route(req(a), loads_of({101, 10, 20})), 1);
}

TEST(Router, CacheAwareEvictsLeastRecentlyUsedLeaves) {
  double now = 0;
  RouterConfig c = cfg("cache_aware");
  c.eviction_interval_secs = 10;
  c.max_tree_size = 25;
  CacheAwareRouter r(c, [&] { return now; });
  const auto old_p = seq(100, 20), new_p = seq(300, 20);
  r.insert(old_p, 0);
  now = 1;
  r.insert(new_p, 0);
  EXPECT_EQ(r.tree_size(0), 40);
  r.evict(25);
  EXPECT_EQ(r.tree_size(0), 25);
  EXPECT_EQ(r.match_len(new_p, 0), 20);  // the recent prompt survives whole
  EXPECT_EQ(r.match_len(old_p, 0), 5);   // the old one lost its tail
  // Shared prefixes count once; other replicas are untouched.
  r.insert(new_p, 1);
  EXPECT_EQ(r.tree_size(1), 20);
  r.evict(10);
  EXPECT_EQ(r.tree_size(0), 10);
  EXPECT_EQ(r.tree_size(1), 10);
  // route() evicts on its interval.
  now = 5;
  r.route(req(seq(900, 30)), loads_of({0, 0}));  // smallest tree: both 10 -> replica 0
  EXPECT_EQ(r.tree_size(0), 40);
  now = 20;
  r.route(req(seq(2000, 5)), loads_of({0, 0}));  // replica 1 (10 < 40); then eviction to 25
  EXPECT_LE(r.tree_size(0), 25);
  EXPECT_LE(r.tree_size(1), 25);
  r.reset();
  EXPECT_EQ(r.tree_size(0), 0);
}
