// CPU backend MoE ops: the three router methods on hand-worked cases, the expert sort, the row
// gather and the weighted combine.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "core/error.h"

namespace dpa::backend {
namespace {

double sigm(double x) { return 1.0 / (1.0 + std::exp(-x)); }

TEST(BackendMoe, SoftmaxGreedy) {
  auto be = make_cpu_backend();
  const std::vector<float> logits = {0, 1, 2, 3, /**/ 5, 1, 1, 0};
  GateParams p;
  p.n_experts = 4;
  p.top_k = 2;
  p.routed_scaling_factor = 1.5f;
  int32_t ids[4];
  float w[4];
  be->moe_gate(logits.data(), 2, p, ids, w);
  const double z0 = 1 + std::exp(1) + std::exp(2) + std::exp(3);
  EXPECT_EQ(ids[0], 3);
  EXPECT_EQ(ids[1], 2);
  EXPECT_NEAR(w[0], std::exp(3) / z0 * 1.5, 1e-6);
  EXPECT_NEAR(w[1], std::exp(2) / z0 * 1.5, 1e-6);
  EXPECT_EQ(ids[2], 0);
  EXPECT_EQ(ids[3], 1);  // tie between experts 1 and 2: the lower id
}

// Shared slots: each token's top-k as without them, then experts E, E + 1 at weight 1.
TEST(BackendMoe, SharedSlotsFollowTheTopK) {
  auto be = make_cpu_backend();
  const std::vector<float> logits = {0.5f, -1, 2, 3, 1, /**/ 4, 1, 0, 2, -2};
  GateParams p;
  p.n_experts = 5, p.top_k = 2, p.routed_scaling_factor = 2.5f, p.norm_topk_prob = true;
  int32_t ids0[4], ids[8];
  float w0[4], w[8];
  be->moe_gate(logits.data(), 2, p, ids0, w0);
  p.shared_slots = 2;
  be->moe_gate(logits.data(), 2, p, ids, w);
  for (int t = 0; t < 2; ++t) {
    for (int k = 0; k < 2; ++k) {
      EXPECT_EQ(ids[t * 4 + k], ids0[t * 2 + k]);
      EXPECT_EQ(w[t * 4 + k], w0[t * 2 + k]);
    }
    EXPECT_EQ(ids[t * 4 + 2], 5);
    EXPECT_EQ(ids[t * 4 + 3], 6);
    EXPECT_EQ(w[t * 4 + 2], 1.0f);  // unscaled
    EXPECT_EQ(w[t * 4 + 3], 1.0f);
  }
  p.shared_slots = -1;
  EXPECT_THROW(be->moe_gate(logits.data(), 2, p, ids, w), Error);
}

TEST(BackendMoe, GroupLimitedGreedyUsesGroupMax) {
  auto be = make_cpu_backend();
  // Groups of 2: g0 = {3, 0} (max 3), g1 = {2.5, 2.4} (max 2.5, sum larger). One group kept: g0.
  const std::vector<float> logits = {3, 0, 2.5f, 2.4f, -1, -1, -1, -1};
  GateParams p;
  p.n_experts = 8;
  p.top_k = 2;
  p.n_group = 4;
  p.topk_group = 1;
  p.method = TopkMethod::group_limited_greedy;
  int32_t ids[2];
  float w[2];
  be->moe_gate(logits.data(), 1, p, ids, w);
  double z = 0;
  for (float l : logits) z += std::exp(l);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 1);
  EXPECT_NEAR(w[1], 1.0 / z, 1e-6);
  // Plain greedy ignores groups.
  p.method = TopkMethod::greedy;
  be->moe_gate(logits.data(), 1, p, ids, w);
  EXPECT_EQ(ids[0], 0);
  EXPECT_EQ(ids[1], 2);
}

TEST(BackendMoe, SigmoidNoauxTcBiasSelectsOnly) {
  auto be = make_cpu_backend();
  const std::vector<float> logits = {2.0f, -1.0f, 0.5f, 0.4f, -2.0f, 1.5f, 0.0f, 0.1f};
  const std::vector<float> bias = {0, 0, 0, 0, 3, 0, 0, 0};
  GateParams p;
  p.n_experts = 8;
  p.top_k = 2;
  p.n_group = 4;
  p.topk_group = 2;
  p.scoring = Scoring::sigmoid;
  p.method = TopkMethod::noaux_tc;
  p.norm_topk_prob = true;
  p.routed_scaling_factor = 2.5f;
  p.correction_bias = bias.data();
  int32_t ids[2];
  float w[2];
  be->moe_gate(logits.data(), 1, p, ids, w);
  // Group scores (sum of top-2 biased): g0 1.150, g1 1.221, g2 3.937, g3 1.025 -> g2, g1 kept;
  // expert 0 (the best unbiased score) is excluded with its group; expert 4 wins by its bias.
  EXPECT_EQ(ids[0], 4);
  EXPECT_EQ(ids[1], 5);
  const double s4 = sigm(-2.0), s5 = sigm(1.5);
  EXPECT_NEAR(w[0], s4 / (s4 + s5) * 2.5, 1e-6);
  EXPECT_NEAR(w[1], s5 / (s4 + s5) * 2.5, 1e-6);
}

// moe_counts reads the counts of the moe_sort before it, once; ops issued in between do not
// disturb them; a bad expert id is an error, not a count.
TEST(BackendMoe, SortThenCounts) {
  auto be = make_cpu_backend();
  std::vector<int64_t> counts(3, -1);
  EXPECT_THROW(be->moe_counts(counts.data()), dpa::Error);
  const std::vector<int32_t> ids = {1, 1, 0, 2};
  std::vector<int32_t> order(4);
  be->moe_sort(ids.data(), 4, 3, order.data(), nullptr);
  const std::vector<float> x = {1, 2, 3, 4};
  std::vector<float> g(4);
  be->gather_rows_div(x.data(), order.data(), 2, 4, 1, g.data());  // issued before the wait
  std::vector<int64_t> in_backend(3, -1);  // CPU backend memory is host memory
  be->moe_counts_to(in_backend.data());     // a copy in stream order; moe_counts may still follow
  EXPECT_EQ(in_backend, (std::vector<int64_t>{1, 2, 1}));
  be->moe_counts(counts.data());
  EXPECT_EQ(counts, (std::vector<int64_t>{1, 2, 1}));
  EXPECT_EQ(g, (std::vector<float>{2, 1, 1, 2}));  // slots 2, 0, 1, 3 -> tokens 1, 0, 0, 1
  EXPECT_THROW(be->moe_counts(counts.data()), dpa::Error);  // read once
  EXPECT_THROW(be->moe_counts_to(in_backend.data()), dpa::Error);
  be->moe_sort(ids.data(), 0, 3, order.data(), nullptr);    // no slots: zeros
  be->moe_counts(counts.data());
  EXPECT_EQ(counts, (std::vector<int64_t>{0, 0, 0}));
  const std::vector<int32_t> bad = {0, 3};
  EXPECT_THROW(
      {
        be->moe_sort(bad.data(), 2, 3, order.data(), nullptr);
        be->moe_counts(counts.data());
      },
      dpa::Error);
}

TEST(BackendMoe, SortGatherCombine) {
  auto be = make_cpu_backend();
  const std::vector<int32_t> ids = {2, 0, 2, 1, 0, 2};  // 3 tokens x top-2
  std::vector<int32_t> order(6), position(6);
  std::vector<int64_t> counts(3);
  be->moe_sort(ids.data(), 6, 3, order.data(), position.data());
  be->moe_counts(counts.data());
  EXPECT_EQ(counts, (std::vector<int64_t>{2, 1, 3}));
  EXPECT_EQ(order, (std::vector<int32_t>{1, 4, 3, 0, 2, 5}));  // stable within an expert
  EXPECT_EQ(position, (std::vector<int32_t>{3, 0, 4, 2, 1, 5}));  // position[order[j]] = j
  const std::vector<float> x = {0, 1, 10, 11, 20, 21};
  const int32_t rows[3] = {2, 0, 2};
  std::vector<float> g(6);
  be->gather_rows(x.data(), rows, 3, 2, g.data());
  EXPECT_EQ(g, (std::vector<float>{20, 21, 0, 1, 20, 21}));
  const std::vector<float> y = {1, 2, 3, 4, /**/ 5, 6, 7, 8};  // 2 tokens x top-2 x d=2
  const std::vector<float> w = {0.5f, 2.0f, 1.0f, -1.0f};
  std::vector<float> out = {100, 100, 0, 0};
  be->moe_combine(y.data(), nullptr, w.data(), 2, 2, 2, out.data(), true);
  EXPECT_EQ(out, (std::vector<float>{100 + 0.5f + 6, 100 + 1 + 8, 5 - 7, 6 - 8}));
  // The same results stored in another row order, read through their rows.
  const std::vector<float> y_moved = {7, 8, 1, 2, 5, 6, 3, 4};  // slots 3, 0, 2, 1
  const std::vector<int32_t> where = {1, 3, 2, 0};              // slot s is row where[s]
  std::vector<float> out2 = {100, 100, 0, 0};
  be->moe_combine(y_moved.data(), where.data(), w.data(), 2, 2, 2, out2.data(), true);
  EXPECT_EQ(out2, out);
  // Without accumulate the sum replaces what out held.
  std::vector<float> out3 = {100, 100, 0, 0};
  be->moe_combine(y_moved.data(), where.data(), w.data(), 2, 2, 2, out3.data(), false);
  EXPECT_EQ(out3, (std::vector<float>{0.5f + 6, 1 + 8, 5 - 7, 6 - 8}));
  // The same results in bf16 (exact here) give the same sums.
  std::vector<uint16_t> yb(y_moved.size());
  for (std::size_t i = 0; i < yb.size(); ++i) yb[i] = f32_to_bf16(y_moved[i]);
  std::vector<float> out4 = {100, 100, 0, 0};
  be->moe_combine(yb.data(), where.data(), w.data(), 2, 2, 2, out4.data(), false, DType::bf16);
  EXPECT_EQ(out4, out3);
  EXPECT_THROW(be->moe_combine(yb.data(), where.data(), w.data(), 2, 2, 2, out4.data(), false, DType::f16), Error);
}

// The fixed-capacity experts' bf16 results are their f32 results rounded, row by row where a slot
// names one; a row past the result rows said is refused.
// Two tiny f32 experts (hidden 4, intermediate 3) with fixed weights, and two tokens routed to
// both (top-2): their slots sorted by expert and the counts.
struct TinyExperts {
  static constexpr int64_t D = 4, I = 3, E = 2;
  const std::vector<float> x = {1.01f, -2.3f, 0.517f, 3.0f, /**/ 0.25f, 1.59f, -1.0f, 2.001f};
  const std::vector<int32_t> order = {0, 3, 1, 2};  // slots (token * 2 + k): expert 0 then 1
  const std::vector<int64_t> counts = {2, 2};
  std::vector<float> wg = std::vector<float>(E * I * D), wu = std::vector<float>(E * I * D),
                     wd = std::vector<float>(E * D * I);
  std::vector<WeightView> g, u, d;
  TinyExperts() {
    for (std::size_t i = 0; i < wg.size(); ++i) wg[i] = 0.1f * static_cast<float>(i % 7) - 0.3f;
    for (std::size_t i = 0; i < wu.size(); ++i) wu[i] = 0.05f * static_cast<float>(i % 5) + 0.1f;
    for (std::size_t i = 0; i < wd.size(); ++i) wd[i] = 0.2f * static_cast<float>(i % 3) - 0.17f;
    for (int64_t e = 0; e < E; ++e) {
      g.push_back(WeightView::dense(wg.data() + e * I * D, DType::f32, I, D));
      u.push_back(WeightView::dense(wu.data() + e * I * D, DType::f32, I, D));
      d.push_back(WeightView::dense(wd.data() + e * D * I, DType::f32, D, I));
    }
  }
  TinyExperts(const TinyExperts&) = delete;
  TinyExperts& operator=(const TinyExperts&) = delete;
};

TEST(BackendMoe, FixedExpertsBf16Results) {
  auto be = make_cpu_backend();
  const TinyExperts ex;
  std::vector<float> f(4 * TinyExperts::D, 7.0f);
  auto experts = [&](void* out, DType dt, int64_t out_rows) {
    be->moe_experts_fixed(ex.x.data(), ex.order.data(), 2, ex.counts.data(), TinyExperts::E, 2, 4, ex.g.data(),
                          ex.u.data(), ex.d.data(), out, dt, out_rows);
  };
  experts(f.data(), DType::f32, 0);
  std::vector<uint16_t> b(f.size(), 0);
  experts(b.data(), DType::bf16, 4);
  for (std::size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i], f32_to_bf16(f[i])) << i;
  EXPECT_THROW(experts(b.data(), DType::bf16, 3), Error);
}

// An exchange's bf16 rows: the gather and the pack round each value (bit for bit f32_to_bf16),
// and the experts given bf16 rows (x_div 1, their count as out_rows) compute what they compute
// from those values in f32.
TEST(BackendMoe, Bf16RowsForTheExchange) {
  auto be = make_cpu_backend();
  const TinyExperts ex;
  constexpr int64_t D = TinyExperts::D, E = TinyExperts::E;
  const std::vector<float>& x = ex.x;
  const std::vector<int32_t>& order = ex.order;
  const std::vector<int64_t>& counts = ex.counts;
  std::vector<uint16_t> rows(4 * D);
  be->gather_rows_div(x.data(), order.data(), 2, 4, D, rows.data(), DType::bf16);
  for (int64_t j = 0; j < 4; ++j)
    for (int64_t c = 0; c < D; ++c) EXPECT_EQ(rows[j * D + c], f32_to_bf16(x[order[j] / 2 * D + c])) << j;
  std::vector<uint16_t> send(2 * 2 * D, 0);  // 2 peers, blocks of 2 rows
  std::vector<int32_t> slot_row(4);
  be->moe_ep_pack(x.data(), order.data(), 2, counts.data(), 2, 1, 2, 4, D, send.data(), slot_row.data(), DType::bf16);
  EXPECT_EQ(send, rows);  // one expert a peer: the blocks are the sorted rows
  EXPECT_THROW(be->gather_rows_div(x.data(), order.data(), 2, 4, 2, rows.data(), DType::bf16), Error);  // d % 4

  std::vector<float> rounded(rows.size());
  std::transform(rows.begin(), rows.end(), rounded.begin(), bf16_to_f32);
  const std::vector<int32_t> self = {0, 1, 2, 3};  // the received rows, already in expert order
  std::vector<float> want(4 * D, 7.0f), got(4 * D, 7.0f);
  be->moe_experts_fixed(rounded.data(), self.data(), 1, counts.data(), E, 2, 4, ex.g.data(), ex.u.data(), ex.d.data(),
                        want.data());
  be->moe_experts_fixed(rows.data(), self.data(), 1, counts.data(), E, 2, 4, ex.g.data(), ex.u.data(), ex.d.data(),
                        got.data(), DType::f32, 4, DType::bf16);
  EXPECT_EQ(got, want);
  auto grouped = [&](int64_t x_div, int64_t out_rows) {
    be->moe_experts(rows.data(), self.data(), x_div, counts.data(), E, ex.g.data(), ex.u.data(), ex.d.data(),
                    got.data(), DType::f32, out_rows, DType::bf16);
  };
  grouped(1, 4);
  EXPECT_EQ(got, want);
  // bf16 rows need row divisor 1 and their count.
  EXPECT_THROW(grouped(2, 4), Error);
  EXPECT_THROW(grouped(1, 0), Error);
}

// Each token of rank r must get sum_k w[t, k] (id[t, k] + 1) x[t]: the exchange round trips
// below run "experts" that scale a row by its global expert id + 1.
void expect_scaled_sum(const std::vector<float>& out, const std::vector<int32_t>& ids, const std::vector<float>& x,
                       const std::vector<float>& w, int64_t tokens, int64_t k, int64_t d, int r) {
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t c = 0; c < d; ++c) {
      float want = 0;
      for (int64_t j = 0; j < k; ++j) want += w[t * k + j] * (static_cast<float>(ids[t * k + j]) + 1) * x[t * d + c];
      EXPECT_FLOAT_EQ(out[t * d + c], want) << "rank " << r << " token " << t;
    }
}

// The padded EP exchange's layouts: two ranks simulated in one process, each with 3 tokens x
// top-2 over 4 experts (2 per rank). Pack, swap the blocks as the all-to-all would, unpack, apply
// "experts" that scale a row by (global expert id + 1), swap back and combine: every token must
// get sum_k w[t, k] (id[t, k] + 1) x[t].
TEST(BackendMoe, PaddedExchangeLayoutsRoundTrip) {
  auto be = make_cpu_backend();
  constexpr int64_t kPeers = 2, kPer = 2, kTokens = 3, kK = 2, kD = 2, kCap = kTokens * kK;
  const std::vector<std::vector<int32_t>> ids = {{2, 0, 3, 2, 1, 0}, {0, 1, 1, 3, 2, 3}};
  const std::vector<std::vector<float>> x = {{1, 2, 3, 4, 5, 6}, {-1, 1, 2, -2, 7, 0.5f}};
  const std::vector<float> w = {0.5f, 2, 1, -1, 0.25f, 4};
  std::vector<std::vector<float>> send(kPeers, std::vector<float>(kPeers * kCap * kD, -9));
  std::vector<std::vector<int32_t>> slot_row(kPeers, std::vector<int32_t>(kTokens * kK, -1));
  std::vector<std::vector<int64_t>> counts(kPeers, std::vector<int64_t>(kPeers * kPer));
  for (int r = 0; r < kPeers; ++r) {
    std::vector<int32_t> order(kTokens * kK);
    be->moe_sort(ids[r].data(), kTokens * kK, kPeers * kPer, order.data(), nullptr);
    be->moe_counts_to(counts[r].data());
    be->moe_ep_pack(x[r].data(), order.data(), kK, counts[r].data(), kPeers, kPer, kCap, kTokens * kK, kD,
                    send[r].data(), slot_row[r].data());
  }
  // Rank 0's routing: experts 0 0 1 2 2 3 for slots 1 5 4 0 3 2, so peer 0 gets slots 1 5 4 at
  // rows 0 1 2 (tokens 0 2 2) and peer 1 slots 0 3 2 at rows 6 7 8 (tokens 0 1 1).
  EXPECT_EQ(slot_row[0], (std::vector<int32_t>{6, 0, 8, 7, 2, 1}));
  EXPECT_EQ(std::vector<float>(send[0].begin(), send[0].begin() + 6), (std::vector<float>{1, 2, 5, 6, 5, 6}));
  EXPECT_EQ(std::vector<float>(send[0].begin() + 12, send[0].begin() + 18), (std::vector<float>{1, 2, 3, 4, 3, 4}));
  EXPECT_EQ(send[0][6], -9);  // past peer 0's three rows: untouched
  std::vector<std::vector<float>> back(kPeers, std::vector<float>(kPeers * kCap * kD));
  std::vector<std::vector<float>> results(kPeers, std::vector<float>(kPeers * kCap * kD, 0));
  for (int r = 0; r < kPeers; ++r) {  // rank r receives block r of every source
    std::vector<float> recv(kPeers * kCap * kD);
    std::vector<int64_t> rc(kPeers * kPer), local(kPer);
    for (int p = 0; p < kPeers; ++p) {
      std::copy_n(send[p].begin() + r * kCap * kD, kCap * kD, recv.begin() + p * kCap * kD);
      std::copy_n(counts[p].begin() + r * kPer, kPer, rc.begin() + p * kPer);
    }
    std::vector<int32_t> order(kPeers * kCap, -1);
    be->moe_ep_unpack(rc.data(), kPeers, kPer, kCap, local.data(), order.data());
    for (int64_t e = 0, q = 0; e < kPer; ++e)
      for (int64_t i = 0; i < local[e]; ++i, ++q)
        for (int64_t c = 0; c < kD; ++c)
          results[r][order[q] * kD + c] = recv[order[q] * kD + c] * static_cast<float>(r * kPer + e + 1);
    if (r == 1) {  // experts 2, 3: rank 0 sent 2 rows of 2 and 1 of 3; rank 1 1 row of 2 and 2 of 3
      EXPECT_EQ(local, (std::vector<int64_t>{3, 3}));
      EXPECT_EQ(std::vector<int32_t>(order.begin(), order.begin() + 6), (std::vector<int32_t>{0, 1, 6, 2, 7, 8}));
    }
  }
  for (int r = 0; r < kPeers; ++r) {
    for (int p = 0; p < kPeers; ++p)
      std::copy_n(results[p].begin() + r * kCap * kD, kCap * kD, back[r].begin() + p * kCap * kD);
    std::vector<float> out(kTokens * kD, 0);
    be->moe_combine(back[r].data(), slot_row[r].data(), w.data(), kTokens, kK, kD, out.data(), true);
    expect_scaled_sum(out, ids[r], x[r], w, kTokens, kK, kD, r);
  }
}

// The peer-memory form of the same exchange, every rank's area in this one process: rank r's
// area holds [recv blocks | return blocks | recv flags | return flags], block p at row p * S. The
// rows go out and the results come back in f32 or bf16 (rows of kD bf16 values: half of the
// blocks' room); every value here is a small integer, exact in bf16.
void peer_memory_round_trip(DType rows_dt, DType dt) {
  auto be = make_cpu_backend();
  const std::size_t esize = dpa::dtype_size(dt), rsize = dpa::dtype_size(rows_dt);
  constexpr int64_t kPeers = 2, kPer = 2, kTokens = 3, kK = 2, kD = 8, kCap = kTokens * kK, kS = kCap + 1;
  const std::vector<std::vector<int32_t>> ids = {{2, 0, 3, 2, 1, 0}, {0, 1, 1, 3, 2, 3}};
  std::vector<std::vector<float>> x(kPeers);
  for (int r = 0; r < kPeers; ++r)
    for (int64_t i = 0; i < kTokens * kD; ++i) x[r].push_back(static_cast<float>(r * 20 + i));
  const std::vector<float> w = {0.5f, 2, 1, -1, 0.25f, 4};
  const int64_t area_floats = 2 * kPeers * kS * kD;
  std::vector<std::vector<float>> area(kPeers, std::vector<float>(area_floats + 2 * kPeers * 2, -9));
  auto flags_of = [&](int r) { return reinterpret_cast<int64_t*>(area[r].data() + area_floats); };
  auto back_of = [&](int r) { return reinterpret_cast<char*>(area[r].data() + kPeers * kS * kD); };
  for (int r = 0; r < kPeers; ++r) std::fill_n(flags_of(r), 2 * kPeers, 0);
  std::vector<int64_t> seq(kPeers, 0);
  std::vector<int32_t> done(kPeers, 0);
  struct Rank {
    std::vector<float*> blocks, back_blocks;
    std::vector<int64_t*> flags, back_flags;
    std::vector<int32_t> order, slot_row = std::vector<int32_t>(kTokens * kK);
    std::vector<int64_t> counts = std::vector<int64_t>(kPeers * kPer), recv_counts = std::vector<int64_t>(kPeers * kPer);
  };
  std::vector<Rank> rk(kPeers);
  for (int r = 0; r < kPeers; ++r)
    for (int p = 0; p < kPeers; ++p) {
      rk[r].blocks.push_back(reinterpret_cast<float*>(reinterpret_cast<char*>(area[p].data()) + r * kS * kD * rsize));
      rk[r].back_blocks.push_back(reinterpret_cast<float*>(back_of(p) + r * kS * kD * esize));
      rk[r].flags.push_back(flags_of(p) + r);
      rk[r].back_flags.push_back(flags_of(p) + kPeers + r);
    }
  for (int r = 0; r < kPeers; ++r) {  // dispatch
    rk[r].order.resize(kTokens * kK);
    be->moe_sort(ids[r].data(), kTokens * kK, kPeers * kPer, rk[r].order.data(), nullptr);
    be->moe_counts_to(rk[r].counts.data());
    const EpPeers peers{rk[r].blocks.data(), rk[r].flags.data(), &seq[r], &done[r]};
    be->moe_ep_pack_peers(x[r].data(), rk[r].order.data(), kK, rk[r].counts.data(), kPeers, kPer, kCap, kS,
                          kTokens * kK, kD, peers, rk[r].slot_row.data(), rows_dt);
  }
  EXPECT_EQ(rk[0].slot_row, (std::vector<int32_t>{7, 0, 9, 8, 2, 1}));  // as the layout test, blocks of 7 rows
  EXPECT_EQ(seq, (std::vector<int64_t>{1, 1}));
  for (int r = 0; r < kPeers; ++r) {  // receive, "experts" scale by (global expert id + 1), return
    std::vector<int64_t> local(kPer);
    std::vector<int32_t> order(kPeers * kS);
    be->moe_ep_unpack_peers(area[r].data(), flags_of(r), &seq[r], kPeers, kPer, kCap, kS, kD, rk[r].recv_counts.data(),
                            local.data(), order.data(), rows_dt);
    auto received = [&](int64_t at) {
      return rows_dt == DType::bf16 ? bf16_to_f32(reinterpret_cast<const uint16_t*>(area[r].data())[at])
                                    : area[r][at];
    };
    std::vector<float> results(kPeers * kS * kD, 0);
    std::vector<uint16_t> results_bf16(results.size(), 0);
    for (int64_t e = 0, q = 0; e < kPer; ++e)
      for (int64_t i = 0; i < local[e]; ++i, ++q)
        for (int64_t c = 0; c < kD; ++c) {
          const int64_t at = order[q] * kD + c;
          results[at] = received(at) * static_cast<float>(r * kPer + e + 1);
          results_bf16[at] = dpa::f32_to_bf16(results[at]);
        }
    const EpPeers back{rk[r].back_blocks.data(), rk[r].back_flags.data(), &seq[r], &done[r]};
    const void* res = dt == DType::bf16 ? static_cast<const void*>(results_bf16.data()) : results.data();
    be->moe_ep_return_peers(res, rk[r].recv_counts.data(), kPeers, kPer, kCap, kS, kD, back, dt);
  }
  for (int r = 0; r < kPeers; ++r) {
    be->moe_ep_wait(flags_of(r) + kPeers, kPeers, &seq[r]);
    std::vector<float> out(kTokens * kD, 0);
    be->moe_combine(back_of(r), rk[r].slot_row.data(), w.data(), kTokens, kK, kD, out.data(), true, dt);
    expect_scaled_sum(out, ids[r], x[r], w, kTokens, kK, kD, r);
  }
  // A flag short of the rank's count would be waited on forever: the reference says so.
  seq[0] = 5;
  EXPECT_THROW(be->moe_ep_wait(flags_of(0), kPeers, &seq[0]), dpa::Error);
  // Counts must fit a row, and a block must hold its capacity and the header.
  const EpPeers peers{rk[0].blocks.data(), rk[0].flags.data(), &seq[0], &done[0]};
  EXPECT_THROW(be->moe_ep_pack_peers(x[0].data(), rk[0].order.data(), kK, rk[0].counts.data(), kPeers, kPer, kCap,
                                     kCap, kTokens * kK, kD, peers, rk[0].slot_row.data()),
               dpa::Error);
  EXPECT_THROW(be->moe_ep_pack_peers(x[0].data(), rk[0].order.data(), kK, rk[0].counts.data(), kPeers, kPer, kCap,
                                     kS, kTokens * kK, 3, peers, rk[0].slot_row.data()),
               dpa::Error);
  // bf16 rows must hold the header's counts too: 2 counts need 16 bytes, a row of 4 bf16 has 8.
  EXPECT_THROW(be->moe_ep_pack_peers(x[0].data(), rk[0].order.data(), kK, rk[0].counts.data(), kPeers, kPer, kCap,
                                     kS, kTokens * kK, 4, peers, rk[0].slot_row.data(), DType::bf16),
               dpa::Error);
  // Results are f32 or bf16 rows (bf16: an even count, whole 4-byte words).
  const EpPeers back{rk[0].back_blocks.data(), rk[0].back_flags.data(), &seq[0], &done[0]};
  const std::vector<float> none(kPeers * kS * kD, 0);
  EXPECT_THROW(be->moe_ep_return_peers(none.data(), rk[0].recv_counts.data(), kPeers, kPer, kCap, kS, kD, back,
                                       DType::i32),
               dpa::Error);
}


TEST(BackendMoe, PaddedExchangeOverPeerMemoryRoundTrip) {
  for (const DType rows : {DType::f32, DType::bf16})
    for (const DType results : {DType::f32, DType::bf16}) {
      SCOPED_TRACE("rows " + std::string(dpa::dtype_name(rows)) + ", results " + std::string(dpa::dtype_name(results)));
      peer_memory_round_trip(rows, results);
    }
}

TEST(BackendMoe, PaddedExchangeLayoutsRejectBadCounts) {
  auto be = make_cpu_backend();
  const std::vector<float> x(8, 1);
  const std::vector<int32_t> order = {0, 1, 2, 3};
  std::vector<float> send(64);
  std::vector<int32_t> slot_row(4), uorder(16);
  std::vector<int64_t> local(2);
  const std::vector<int64_t> three_to_peer0 = {2, 1, 1, 0};
  EXPECT_THROW(be->moe_ep_pack(x.data(), order.data(), 1, three_to_peer0.data(), 2, 2, 2, 4, 2, send.data(),
                               slot_row.data()),
               dpa::Error);  // peer 0 gets 3 rows, capacity 2
  EXPECT_THROW(be->moe_ep_pack(x.data(), order.data(), 1, three_to_peer0.data(), 2, 2, 4, 3, 2, send.data(),
                               slot_row.data()),
               dpa::Error);  // the counts hold 4 slots, 3 given
  EXPECT_THROW(be->moe_ep_pack(x.data(), order.data(), 0, three_to_peer0.data(), 2, 2, 4, 4, 2, send.data(),
                               slot_row.data()),
               dpa::Error);  // row divisor 0
  const std::vector<int64_t> negative = {1, -1, 0, 0};
  EXPECT_THROW(be->moe_ep_unpack(negative.data(), 2, 2, 4, local.data(), uorder.data()), dpa::Error);
  const std::vector<int64_t> too_many = {3, 2, 0, 0};  // source 0: 5 rows in a block of 4
  EXPECT_THROW(be->moe_ep_unpack(too_many.data(), 2, 2, 4, local.data(), uorder.data()), dpa::Error);
}

}  // namespace
}  // namespace dpa::backend
