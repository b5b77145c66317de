// Sampling where the logits are: edit_logits, mask_logits and sample, CUDA against the CPU
// reference. The edits and masks must match bit for bit; the picks (forced ones with their
// ranks) and top-logprob ids too (the weights are summed as integers on both sides, so only a
// one-ulp difference of exp() at a rounding boundary could move a pick: none is expected in
// these draws); logprobs within 1e-5.
#include <limits>
#include <utility>

#include "parity_util.h"

namespace dpa::backend {
namespace {

// Logits of one row: normal with `spread`, optionally on a coarse grid (many ties) and with a
// few -inf entries (banned ids).
std::vector<float> logits_row(int64_t vocab, float spread, bool ties, bool banned) {
  std::normal_distribution<float> d(0.0f, spread);
  std::vector<float> l(vocab);
  for (auto& x : l) x = d(rng());
  if (ties)
    for (auto& x : l) x = std::round(x * 4.0f) / 4.0f;
  if (banned)
    for (int k = 0; k < 3 && vocab > 1; ++k) l[rnd_int(0, vocab - 1)] = -INFINITY;
  return l;
}

SampleSpec random_spec(int64_t vocab) {
  SampleSpec s;
  const float temps[] = {0.0f, 0.3f, 0.7f, 1.0f, 1.5f};
  const int32_t ks[] = {0, 0, 1, 5, 50, static_cast<int32_t>(vocab + 3)};
  const float ps[] = {1.0f, 1.0f, 0.95f, 0.5f, 0.05f};
  const float mins[] = {0.0f, 0.0f, 0.05f, 0.5f};
  const int32_t tops[] = {0, 0, 1, 5, 20};
  s.temperature = temps[rnd_int(0, 4)];
  s.top_k = ks[rnd_int(0, 5)];
  s.top_p = ps[rnd_int(0, 4)];
  s.min_p = mins[rnd_int(0, 3)];
  s.n_top = tops[rnd_int(0, 4)];
  const int64_t pick = rnd_int(0, 9);
  s.u = pick == 0 ? 0.0 : (pick == 1 ? 0.9999999999 : std::uniform_real_distribution<double>(0.0, 1.0)(rng()));
  if (rnd_int(0, 4) == 0) s.forced = static_cast<int32_t>(rnd_int(0, vocab - 1));  // a scored prompt token
  return s;
}

std::string spec_text(const SampleSpec& s) {
  char b[128];
  std::snprintf(b, sizeof b, "t=%.2f k=%d p=%.2f min_p=%.2f top=%d u=%.3f forced=%d", s.temperature, s.top_k, s.top_p,
                s.min_p, s.n_top, s.u, s.forced);
  return b;
}

// sample() of the same rows on both backends: (CPU outputs, GPU outputs).
std::pair<std::vector<SampleOut>, std::vector<SampleOut>> sample_both(const std::vector<float>& l,
                                                                      const std::vector<SampleSpec>& specs,
                                                                      int64_t vocab) {
  const int64_t n = static_cast<int64_t>(specs.size());
  Dual<float> dl(l);
  Dual<SampleSpec> ds(specs);
  Dual<SampleOut> out(static_cast<std::size_t>(n));
  cpu().sample(dl.c.data(), n, vocab, ds.c.data(), out.c.data());
  gpu().sample(dl.g.data(), n, vocab, ds.g.data(), out.g.data());
  return {out.on_cpu(), out.on_gpu()};
}

TEST(BackendParity, Sample) {
  struct Case {
    int64_t vocab, n;
    float spread;
    bool ties, banned;
  };
  const Case cases[] = {{1, 3, 1.0f, false, false},      {7, 0, 1.0f, false, false},      {7, 16, 1.0f, true, false},
                        {1000, 1, 3.0f, false, true},    {1000, 64, 0.5f, false, false},  {1000, 64, 3.0f, true, true},
                        {1000, 64, 8.0f, false, false},  {129280, 48, 3.0f, false, true}, {129280, 16, 0.02f, true, false},
                        {102400, 32, 8.0f, false, false}};
  for (const Case& c : cases) {
    std::vector<float> l;
    std::vector<SampleSpec> specs;
    std::vector<LogitEdit> edits;
    for (int64_t r = 0; r < c.n; ++r) {
      auto row = logits_row(c.vocab, c.spread, c.ties, c.banned);
      if (r == 2) std::fill(row.begin(), row.end(), 0.5f);  // one all-equal row
      l.insert(l.end(), row.begin(), row.end());
      specs.push_back(random_spec(c.vocab));
      // Edits on distinct ids: repetition penalties either way, subtractions, bans.
      std::vector<int32_t> ids(static_cast<std::size_t>(c.vocab));
      std::iota(ids.begin(), ids.end(), 0);
      std::shuffle(ids.begin(), ids.end(), rng());
      for (int64_t k = 0; k < std::min<int64_t>(c.vocab - 1, 6); ++k) {
        LogitEdit e;
        e.row = static_cast<int32_t>(r), e.token = ids[k];
        e.repetition = k % 3 == 0 ? 1.3f : (k % 3 == 1 ? 0.8f : 1.0f);
        e.subtract = k == 5 ? INFINITY : 0.25f * static_cast<float>(k);
        edits.push_back(e);
      }
    }
    const std::string shape = shp({{"n", c.n}, {"vocab", c.vocab}}) + (c.ties ? " ties" : "") + (c.banned ? " -inf" : "");
    Dual<float> dl(l);
    Dual<LogitEdit> de(edits);
    Dual<SampleSpec> ds(specs);
    Dual<SampleOut> out(static_cast<std::size_t>(c.n));
    cpu().edit_logits(dl.c.data(), c.vocab, de.c.data(), static_cast<int64_t>(edits.size()));
    gpu().edit_logits(dl.g.data(), c.vocab, de.g.data(), static_cast<int64_t>(edits.size()));
    EXPECT_TRUE(exact("edit_logits", shape, dl.on_cpu(), dl.on_gpu()));
    // Structured output's masks on every third row, after the edits: half the ids, one id, all.
    std::vector<int32_t> mask_rows;
    for (int64_t r = 1; r < c.n; r += 3) mask_rows.push_back(static_cast<int32_t>(r));
    std::shuffle(mask_rows.begin(), mask_rows.end(), rng());  // any order; each mask follows its row
    const int64_t words = token_mask_words(c.vocab);
    std::vector<uint32_t> masks(mask_rows.size() * static_cast<std::size_t>(words), 0);
    for (std::size_t i = 0; i < mask_rows.size(); ++i) {
      const int64_t form = (mask_rows[i] / 3) % 3;
      for (int64_t t = 0; t < c.vocab; ++t)
        if (form == 2 || (form == 0 && rnd_int(0, 1) == 1) || (form == 1 && t == c.vocab / 2))
          masks[i * static_cast<std::size_t>(words) + static_cast<std::size_t>(t >> 5)] |= 1u << (t & 31);
      // A row keeps a token at least (structured output always allows one; with none the
      // log-partition is NaN on both sides).
      const int64_t one = rnd_int(0, c.vocab - 1);
      masks[i * static_cast<std::size_t>(words) + static_cast<std::size_t>(one >> 5)] |= 1u << (one & 31);
    }
    Dual<int32_t> dmr(mask_rows);
    Dual<uint32_t> dm(masks);
    const auto n_masked = static_cast<int64_t>(mask_rows.size());
    cpu().mask_logits(dl.c.data(), c.vocab, dm.c.data(), dmr.c.data(), n_masked);
    gpu().mask_logits(dl.g.data(), c.vocab, dm.g.data(), dmr.g.data(), n_masked);
    EXPECT_TRUE(exact("mask_logits", shape, dl.on_cpu(), dl.on_gpu()));
    cpu().sample(dl.c.data(), c.n, c.vocab, ds.c.data(), out.c.data());
    gpu().sample(dl.g.data(), c.n, c.vocab, ds.g.data(), out.g.data());
    const auto ref = out.on_cpu(), got = out.on_gpu();
    std::vector<int32_t> tok_ref, tok_got, top_ref, top_got;
    std::vector<float> lp_ref, lp_got, inf_ref, inf_got;  // banned ids have logprob -inf on both
    auto logprob = [&](float a, float b) {
      const bool inf = std::isinf(a) || std::isinf(b);
      (inf ? inf_ref : lp_ref).push_back(a);
      (inf ? inf_got : lp_got).push_back(b);
    };
    for (int64_t r = 0; r < c.n; ++r) {
      const SampleOut &a = ref[r], &b = got[r];
      if (a.token != b.token || a.n_top != b.n_top)
        std::printf("  row %lld (%s): cpu %d / %d top, gpu %d / %d top\n", static_cast<long long>(r),
                    spec_text(specs[r]).c_str(), a.token, a.n_top, b.token, b.n_top);
      tok_ref.push_back(a.token), tok_got.push_back(b.token);
      tok_ref.push_back(a.n_top), tok_got.push_back(b.n_top);
      tok_ref.push_back(a.rank), tok_got.push_back(b.rank);
      logprob(a.logprob, b.logprob);
      for (int k = 0; k < std::min(a.n_top, b.n_top); ++k) {
        top_ref.push_back(a.top_token[k]), top_got.push_back(b.top_token[k]);
        logprob(a.top_logprob[k], b.top_logprob[k]);
      }
    }
    EXPECT_TRUE(exact("sample", shape + " tokens", tok_ref, tok_got));
    EXPECT_TRUE(exact("sample", shape + " top ids", top_ref, top_got));
    EXPECT_TRUE(close("sample", shape + " logprobs", lp_ref, lp_got, 0.0, 1e-5));
    if (!inf_ref.empty()) {
      EXPECT_TRUE(exact("sample", shape + " -inf logprobs", inf_ref, inf_got));
    }
    // The same inputs twice give the same picks (integer sums: no order dependence).
    gpu().sample(dl.g.data(), c.n, c.vocab, ds.g.data(), out.g.data());
    const auto again = out.on_gpu();
    int64_t moved = 0;
    for (int64_t r = 0; r < c.n; ++r) moved += again[r].token != got[r].token;
    EXPECT_TRUE(exact("sample", shape + " rerun", std::vector<int64_t>{0}, std::vector<int64_t>{moved}));
  }
}

// A seeded draw over many positions: the GPU's token frequencies follow the CPU's picks one by
// one, over a long run of u values on one row (every part of the distribution gets hit).
TEST(BackendParity, SampleSweep) {
  const int64_t vocab = 32000, n = 256;
  const auto row = logits_row(vocab, 2.0f, false, false);
  std::vector<float> l;
  std::vector<SampleSpec> specs;
  for (int64_t r = 0; r < n; ++r) {
    l.insert(l.end(), row.begin(), row.end());
    SampleSpec s;
    s.temperature = 1.0f;
    s.top_p = r % 2 ? 0.9f : 1.0f;
    s.top_k = r % 3 == 0 ? 200 : 0;
    s.u = (static_cast<double>(r) + 0.5) / static_cast<double>(n);
    specs.push_back(s);
  }
  const auto [ref, got] = sample_both(l, specs, vocab);
  std::vector<int32_t> a, b;
  for (const auto& o : ref) a.push_back(o.token);
  for (const auto& o : got) b.push_back(o.token);
  EXPECT_TRUE(exact("sample", shp({{"n", n}, {"vocab", vocab}}) + " u sweep", a, b));
}

// Rows with NaN logits (a broken model): NaN counts as -inf on both backends.
TEST(BackendParity, SampleNan) {
  const int64_t vocab = 5000, n = 32;
  std::vector<float> l;
  std::vector<SampleSpec> specs;
  for (int64_t r = 0; r < n; ++r) {
    auto row = logits_row(vocab, 2.0f, false, false);
    for (int k = 0; k < 20; ++k) row[rnd_int(0, vocab - 1)] = std::numeric_limits<float>::quiet_NaN();
    if (r % 4 == 0) row[0] = std::numeric_limits<float>::quiet_NaN();
    l.insert(l.end(), row.begin(), row.end());
    specs.push_back(random_spec(vocab));
  }
  const auto [ref, got] = sample_both(l, specs, vocab);
  std::vector<int32_t> a, b;
  std::vector<float> la, lb;
  for (const auto& o : ref) a.push_back(o.token), a.push_back(o.rank), la.push_back(o.logprob);
  for (const auto& o : got) b.push_back(o.token), b.push_back(o.rank), lb.push_back(o.logprob);
  EXPECT_TRUE(exact("sample", shp({{"n", n}, {"vocab", vocab}}) + " NaN tokens", a, b));
  EXPECT_TRUE(close("sample", shp({{"n", n}, {"vocab", vocab}}) + " NaN logprobs", la, lb, 0.0, 1e-5));
}

// The next step's ids taken from a step's draws (argmax outputs, SampleOut::token by stride), and
// the draws' downloads that do not wait: each ticket's bytes are there once it is waited for,
// while later copies are still queued.
TEST(BackendParity, TakeTokensAndDownloadAsync) {
  for (int64_t n : {1, 7, 600}) {
    std::vector<int32_t> ids(static_cast<std::size_t>(n + 5));
    for (auto& x : ids) x = static_cast<int32_t>(rnd_int(0, 1000));
    std::vector<SampleOut> draws(static_cast<std::size_t>(n));
    for (auto& d : draws) d.token = static_cast<int32_t>(rnd_int(0, 100000)), d.logprob = -1.0f;
    std::vector<int32_t> am(static_cast<std::size_t>(n));
    for (auto& x : am) x = static_cast<int32_t>(rnd_int(0, 100000));
    std::vector<int32_t> pairs_a, pairs_s;  // distinct rows of ids, from any draw
    std::vector<int32_t> rows(ids.size());
    std::iota(rows.begin(), rows.end(), 0);
    std::shuffle(rows.begin(), rows.end(), rng());
    for (int64_t i = 0; i < n; ++i) {
      auto& p = i % 3 ? pairs_a : pairs_s;
      p.push_back(rows[static_cast<std::size_t>(i)]);
      p.push_back(static_cast<int32_t>(rnd_int(0, n - 1)));
    }
    Dual<int32_t> di(ids), da(am), dpa(pairs_a), dps(pairs_s);
    Dual<SampleOut> ds(draws);
    const int64_t stride = sizeof(SampleOut) / sizeof(int32_t);
    for (Backend* be : {&cpu(), &gpu()}) {
      const bool g = be == &gpu();
      be->take_tokens((g ? di.g : di.c).data(), (g ? da.g : da.c).data(), 1, (g ? dpa.g : dpa.c).data(),
                      static_cast<int64_t>(pairs_a.size() / 2));
      be->take_tokens((g ? di.g : di.c).data(), reinterpret_cast<const int32_t*>((g ? ds.g : ds.c).data()), stride,
                      (g ? dps.g : dps.c).data(), static_cast<int64_t>(pairs_s.size() / 2));
    }
    auto want = ids;
    for (std::size_t i = 0; i < pairs_a.size(); i += 2) want[pairs_a[i]] = am[pairs_a[i + 1]];
    for (std::size_t i = 0; i < pairs_s.size(); i += 2) want[pairs_s[i]] = draws[pairs_s[i + 1]].token;
    const std::string shape = shp({{"n", n}});
    EXPECT_TRUE(exact("take_tokens cpu", shape, want, di.on_cpu()));
    EXPECT_TRUE(exact("take_tokens", shape, want, di.on_gpu()));
    // Two downloads queued behind a long copy; the first ticket's bytes are in place when waited.
    Buffer<float> big(gpu(), std::size_t{64} << 20), big2(gpu(), std::size_t{64} << 20);
    auto* host = static_cast<int32_t*>(gpu().host_alloc(ids.size() * sizeof(int32_t) * 2));
    gpu().copy(big2.data(), big.data(), (std::size_t{64} << 20) * sizeof(float));
    const uint64_t t1 = gpu().download_async(host, di.g.data(), ids.size() * sizeof(int32_t));
    gpu().copy(big.data(), big2.data(), (std::size_t{64} << 20) * sizeof(float));
    const uint64_t t2 = gpu().download_async(host + ids.size(), da.g.data(), am.size() * sizeof(int32_t));
    EXPECT_GT(t2, t1);
    gpu().download_wait(t1);
    EXPECT_TRUE(exact("download_async", shape, want, std::vector<int32_t>(host, host + ids.size())));
    gpu().download_wait(t2);
    EXPECT_TRUE(exact("download_async 2", shape, am, std::vector<int32_t>(host + ids.size(), host + ids.size() + am.size())));
    gpu().host_release(host);
  }
}

}  // namespace
}  // namespace dpa::backend
