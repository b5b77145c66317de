// Group arithmetic of DESIGN section 2, checked by enumeration: every replica's ranks are
// contiguous, every EP group covers its ranks once, and bad layouts name their flag.
#include <gtest/gtest.h>

#include <set>

#include "core/config.h"
#include "core/error.h"
#include "dist/groups.h"

namespace {
using namespace dpa;

TEST(Layout, DefaultsToWorldSize) {
  ParallelConfig c;
  c.resolve(8);
  EXPECT_EQ(c.dp, 8);
  EXPECT_EQ(c.ep, 8);
  EXPECT_EQ(c.attn_tp(8), 1);
}

TEST(Layout, EveryRankPlacedOnce) {
  for (int w : {1, 2, 3, 4, 6, 8, 12, 16})
    for (int dp = 1; dp <= w; ++dp)
      for (int ep = 1; ep <= w; ++ep) {
        if (w % dp || w % ep) continue;
        ParallelConfig c;
        c.dp_flag = dp;
        c.ep_flag = ep;
        c.resolve(w);
        std::set<std::pair<int, int>> replica_pos, ep_pos;
        for (int r = 0; r < w; ++r) {
          auto g = dist::GroupLayout::compute(r, w, c);
          ASSERT_EQ(g.attn_tp * g.dp, w);
          ASSERT_LT(g.dp_rank, dp);
          ASSERT_EQ(g.dp_rank * g.attn_tp + g.attn_tp_rank, r);  // replicas are contiguous
          ASSERT_EQ(g.ep_group * ep + g.ep_rank, r);
          replica_pos.insert({g.dp_rank, g.attn_tp_rank});
          ep_pos.insert({g.ep_group, g.ep_rank});
        }
        EXPECT_EQ(static_cast<int>(replica_pos.size()), w);
        EXPECT_EQ(static_cast<int>(ep_pos.size()), w);
      }
}

void expect_flag_error(int w, std::optional<int> dp, std::optional<int> ep, const std::string& flag) {
  ParallelConfig c;
  c.dp_flag = dp;
  c.ep_flag = ep;
  try {
    c.resolve(w);
    FAIL() << "accepted a bad layout";
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.flag(), flag);
    EXPECT_NE(std::string(e.what()).find("--" + flag), std::string::npos);
  }
}

TEST(Layout, BadLayoutsNameTheFlag) {
  expect_flag_error(8, 3, std::nullopt, "dp");
  expect_flag_error(8, 16, std::nullopt, "dp");
  expect_flag_error(8, 0, std::nullopt, "dp");
  expect_flag_error(8, -2, std::nullopt, "dp");
  expect_flag_error(8, 4, 3, "ep");
  expect_flag_error(8, 4, 0, "ep");
  expect_flag_error(4, std::nullopt, -1, "ep");
}

TEST(Layout, DeviceNames) {
  EXPECT_EQ(parse_device("cpu"), DeviceKind::cpu);
  EXPECT_EQ(parse_device("auto"), DeviceKind::automatic);
  EXPECT_THROW(parse_device("tpu"), ConfigError);
}
}  // namespace
