// Sampler against the softmax written out in the test: greedy, truncation sets, penalties,
// seeded reproducibility, and the sampled frequencies of a temperature draw.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <random>

#include "engine/sampler.h"
#include "engine/wire.h"

namespace {
using namespace dpa::engine;

const std::vector<float> kLogits = {1.0f, 3.0f, 2.0f, 0.5f, 2.9f, -1.0f};

SampleResult draw(const SamplingParams& p, int64_t pos, std::vector<int32_t> gen = {}, uint64_t seed = 11) {
  std::vector<int32_t> prompt = {0};
  return sample_token(kLogits, p, prompt, gen, seed, pos, false, {});
}

TEST(Sampler, GreedyIsArgmaxWithLogprob) {
  SamplingParams p;
  p.temperature = 0;
  p.logprobs = 3;
  auto r = draw(p, 0);
  EXPECT_EQ(r.token, 1);
  double z = 0;
  for (float v : kLogits) z += std::exp(static_cast<double>(v));
  EXPECT_NEAR(r.logprob, 3.0 - std::log(z), 1e-6);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].token, 1);
  EXPECT_EQ(r.top[1].token, 4);
  EXPECT_EQ(r.top[2].token, 2);
}

TEST(Sampler, TruncationNeverLeavesTheKeptSet) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.top_k = 2;  // {1, 4}
  for (int pos = 0; pos < 500; ++pos) {
    int t = draw(p, pos).token;
    EXPECT_TRUE(t == 1 || t == 4) << t;
  }
  p.top_k = -1;
  p.top_p = 0.5f;  // softmax: p(1) ~ 0.36, p(4) ~ 0.33: the first two reach 0.5
  for (int pos = 0; pos < 500; ++pos) {
    int t = draw(p, pos).token;
    EXPECT_TRUE(t == 1 || t == 4) << t;
  }
  p.top_p = 1.0f;
  p.min_p = 0.5f;  // keep tokens with p >= 0.5 * p(1): 1, 4 (e^-0.1), 2 (e^-1 = 0.37 < 0.5: out)
  for (int pos = 0; pos < 500; ++pos) {
    int t = draw(p, pos).token;
    EXPECT_TRUE(t == 1 || t == 4) << t;
  }
}

TEST(Sampler, FrequenciesFollowTheTemperedSoftmax) {
  SamplingParams p;
  p.temperature = 2.0f;
  const int n = 20000;
  std::map<int, int> counts;
  for (int pos = 0; pos < n; ++pos) ++counts[draw(p, pos).token];
  double z = 0;
  for (float v : kLogits) z += std::exp(v / 2.0);
  for (int i = 0; i < 6; ++i) {
    const double want = std::exp(kLogits[i] / 2.0) / z;
    const double got = counts[i] / static_cast<double>(n);
    EXPECT_NEAR(got, want, 4 * std::sqrt(want * (1 - want) / n) + 1e-3) << "token " << i;
  }
}

TEST(Sampler, SeededDrawDependsOnlyOnSeedAndPosition) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.seed = 1234;
  std::vector<int> a, b;
  for (int pos = 0; pos < 50; ++pos) a.push_back(draw(p, pos, {}, 1).token);
  for (int pos = 0; pos < 50; ++pos) b.push_back(draw(p, pos, {}, 999).token);  // other fallback seed
  EXPECT_EQ(a, b);
  p.seed = 1235;
  std::vector<int> c;
  for (int pos = 0; pos < 50; ++pos) c.push_back(draw(p, pos, {}, 1).token);
  EXPECT_NE(a, c);
}

TEST(Sampler, PenaltiesAsDefined) {
  SamplingParams p;
  p.temperature = 0;
  p.frequency_penalty = 0.06f;  // token 1 generated twice: 3.0 - 0.12 = 2.88 < 2.9
  EXPECT_EQ(draw(p, 0, {1, 1}).token, 4);
  p.frequency_penalty = 0;
  p.presence_penalty = 0.2f;  // once is enough: 2.8 < 2.9
  EXPECT_EQ(draw(p, 0, {1}).token, 4);
  p.presence_penalty = 0;
  p.repetition_penalty = 1.1f;  // 3.0/1.1 = 2.73 < 2.9; token 4 unseen
  EXPECT_EQ(draw(p, 0, {1}).token, 4);
  // Suppressed EOS: token 1 banned.
  SamplingParams g;
  g.temperature = 0;
  std::vector<int32_t> prompt = {0}, eos = {1};
  EXPECT_EQ(sample_token(kLogits, g, prompt, {}, 0, 0, true, eos).token, 4);
}

// logit_bias is added to the logit (after repetition's scaling where both apply); a banned id
// stays banned whatever its bias; the logprobs are those of the biased logits.
TEST(Sampler, LogitBiasAsDefined) {
  SamplingParams p;
  p.temperature = 0;
  p.logit_bias = {{5, 100.0f}};  // the lowest logit (-1) wins by far
  SampleResult r = draw(p, 0);
  EXPECT_EQ(r.token, 5);
  EXPECT_GT(r.logprob, -1e-6f);
  p.logit_bias = {{1, -0.2f}};  // 2.8 < 2.9
  EXPECT_EQ(draw(p, 0).token, 4);
  p.logit_bias = {{1, -0.05f}};  // 2.95 > 2.9
  EXPECT_EQ(draw(p, 0).token, 1);
  p.logit_bias = {{1, 1.0f}, {4, 1.2f}, {9, 50.0f}};  // 4.0 < 4.1; id 9 is outside the vocabulary
  EXPECT_EQ(draw(p, 0).token, 4);
  // With repetition_penalty on the same token: scaled first, then biased: 3.0 / 1.5 + 0.95 = 2.95.
  p.logit_bias = {{1, 0.95f}};
  p.repetition_penalty = 1.5f;
  EXPECT_EQ(draw(p, 0, {1}).token, 1);
  p.logit_bias = {{1, 0.85f}};  // 2.85 < 2.9
  EXPECT_EQ(draw(p, 0, {1}).token, 4);
  // A suppressed EOS stays banned under a positive bias.
  SamplingParams g;
  g.temperature = 0;
  g.logit_bias = {{1, 100.0f}};
  std::vector<int32_t> prompt = {0}, eos = {1};
  EXPECT_EQ(sample_token(kLogits, g, prompt, {}, 0, 0, true, eos).token, 4);
  // The edits: one per (row, token), a penalty's edit taking the bias.
  std::vector<dpa::backend::LogitEdit> edits;
  SamplingParams q;
  q.presence_penalty = 0.5f;
  q.logit_bias = {{2, 3.0f}, {3, -4.0f}};
  std::vector<int32_t> gen = {2};
  logit_edits(q, prompt, gen, false, {}, 6, 7, edits);
  add_logit_bias(q, 6, 7, 0, edits);
  ASSERT_EQ(edits.size(), 2u);
  std::sort(edits.begin(), edits.end(), [](const auto& a, const auto& b) { return a.token < b.token; });
  EXPECT_EQ(edits[0].row, 7);
  EXPECT_EQ(edits[0].token, 2);
  EXPECT_FLOAT_EQ(edits[0].subtract, 0.5f - 3.0f);
  EXPECT_EQ(edits[1].row, 7);
  EXPECT_EQ(edits[1].token, 3);
  EXPECT_FLOAT_EQ(edits[1].subtract, 4.0f);
}

// PenaltyEdits, fed a history one generated token at a time (the vector reallocating as it grows,
// now and then a different history), gives the edits logit_edits counts from scratch.
TEST(Sampler, IncrementalPenaltyEditsMatchTheFullCount) {
  std::mt19937 rng(5);
  auto sorted = [](std::vector<dpa::backend::LogitEdit> v) {
    std::sort(v.begin(), v.end(), [](const auto& a, const auto& b) { return a.token < b.token; });
    return v;
  };
  struct P { float rep, presence, frequency; };
  for (const P& pp : {P{1.3f, 0.0f, 0.0f}, P{1.0f, 0.5f, 0.0f}, P{1.0f, 0.0f, 0.25f}, P{0.8f, -0.4f, 0.1f},
                      P{1.0f, 0.0f, 0.0f}}) {
    SamplingParams p;
    p.repetition_penalty = pp.rep, p.presence_penalty = pp.presence, p.frequency_penalty = pp.frequency;
    const int64_t vocab = 50;
    std::uniform_int_distribution<int32_t> tok(-3, 55);  // a few outside [0, vocab)
    PenaltyEdits inc;
    for (int history = 0; history < 3; ++history) {
      std::vector<int32_t> tokens(static_cast<std::size_t>(history == 1 ? 0 : 7 + 20 * history));
      for (auto& t : tokens) t = tok(rng);
      const std::size_t n_prompt = tokens.size();
      for (int step = 0; step < 60; ++step) {
        const std::span<const int32_t> prompt(tokens.data(), n_prompt),
            generated(tokens.data() + n_prompt, tokens.size() - n_prompt);
        const int32_t row = step % 4;
        std::vector<dpa::backend::LogitEdit> want, got(2);  // appended after what is there
        logit_edits(p, prompt, generated, false, {}, vocab, row, want);
        inc.append(p, prompt, generated, vocab, row, got);
        ASSERT_EQ(got.size(), want.size() + 2) << "history " << history << " step " << step;
        got.erase(got.begin(), got.begin() + 2);
        const auto a = sorted(got), b = sorted(want);
        for (std::size_t i = 0; i < a.size(); ++i) {
          EXPECT_EQ(a[i].row, b[i].row);
          EXPECT_EQ(a[i].token, b[i].token);
          EXPECT_EQ(a[i].repetition, b[i].repetition);
          EXPECT_EQ(a[i].subtract, b[i].subtract) << "token " << a[i].token;
        }
        tokens.push_back(step % 5 == 0 ? tok(rng) : tokens.empty() ? 3 : tokens[static_cast<std::size_t>(step) % tokens.size()]);
      }
    }
  }
}

// The sampler orders only the head of the vocabulary a draw needs; it must pick what a full sort
// of the vocabulary picks (temperature, then top-k / min-p / top-p on the ordered probabilities,
// then the seeded walk in that order). The reference below sorts everything.
int32_t full_sort_reference(const std::vector<float>& logits, const SamplingParams& p, uint64_t seed, int64_t pos) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  int64_t keep = p.top_k > 0 ? std::min<int64_t>(p.top_k, vocab) : vocab;
  const double t = p.temperature, top = logits[order[0]] / t;
  std::vector<double> prob(keep);
  double sum = 0;
  for (int64_t i = 0; i < keep; ++i) sum += prob[i] = std::exp(logits[order[i]] / t - top);
  for (auto& v : prob) v /= sum;
  if (p.min_p > 0.0f) {
    int64_t k = 1;
    while (k < keep && prob[k] >= p.min_p * prob[0]) ++k;
    keep = k;
  }
  if (p.top_p < 1.0f) {
    double acc = 0;
    int64_t k = 0;
    while (k < keep) {
      acc += prob[k++];
      if (acc >= p.top_p) break;
    }
    keep = std::max<int64_t>(k, 1);
  }
  double mass = 0;
  for (int64_t i = 0; i < keep; ++i) mass += prob[i];
  const double u = uniform_from(seed, pos) * mass;
  double acc = 0;
  for (int64_t i = 0; i < keep; ++i)
    if (u < (acc += prob[i])) return order[i];
  return order[keep - 1];
}

TEST(Sampler, PartialOrderingPicksWhatAFullSortPicks) {
  std::mt19937 g(5);
  const int64_t vocab = 20000;
  std::vector<float> logits(vocab);
  struct Cfg { float t, top_p, min_p; int top_k; };
  const Cfg cfgs[] = {{1.0f, 1.0f, 0.0f, 0}, {0.7f, 0.9f, 0.0f, 0}, {1.3f, 0.5f, 0.0f, 0},  {1.0f, 1.0f, 0.0f, 40},
                      {0.8f, 1.0f, 0.05f, 0}, {1.0f, 0.95f, 0.01f, 100}, {3.0f, 1.0f, 0.0f, 0}, {0.2f, 0.99f, 0.0f, 0}};
  int compared = 0, differ = 0;
  for (float spread : {0.5f, 3.0f, 8.0f}) {  // flat to peaked distributions
    std::normal_distribution<float> d(0.0f, spread);
    for (auto& x : logits) x = d(g);
    for (const Cfg& c : cfgs) {
      SamplingParams p;
      p.temperature = c.t, p.top_p = c.top_p, p.min_p = c.min_p, p.top_k = c.top_k;
      for (int64_t pos = 0; pos < 25; ++pos, ++compared)
        differ += sample_token(logits, p, {}, {}, 99, pos, false, {}).token != full_sort_reference(logits, p, 99, pos);
    }
  }
  // The sampler sums exponentials in single precision: a draw landing within ~1e-7 of a boundary
  // may go the other way; none is expected in this many.
  EXPECT_EQ(differ, 0) << differ << " of " << compared << " draws differ";
}

// Logits of a broken model: a NaN entry counts as -inf, so a row with NaNs draws exactly what
// the same row with -inf there draws (token, logprob and top logprobs), greedy or sampled.
TEST(Sampler, NanLogitsCountAsMinusInfinity) {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  std::vector<float> with_nan(300), with_inf;
  std::mt19937 g(3);
  std::normal_distribution<float> d(0.0f, 2.0f);
  for (auto& x : with_nan) x = d(g);
  for (int i : {0, 7, 8, 150, 299}) with_nan[i] = nan;
  with_inf = with_nan;
  for (auto& x : with_inf)
    if (std::isnan(x)) x = -inf;
  for (float t : {0.0f, 1.0f, 0.6f}) {
    SamplingParams p;
    p.temperature = t, p.top_p = 0.9f, p.top_k = 40, p.logprobs = 5;
    for (int64_t pos = 0; pos < 40; ++pos) {
      const SampleResult a = sample_token(with_nan, p, {}, {}, 5, pos, false, {});
      const SampleResult b = sample_token(with_inf, p, {}, {}, 5, pos, false, {});
      EXPECT_EQ(a.token, b.token);
      EXPECT_EQ(a.logprob, b.logprob);
      ASSERT_EQ(a.top.size(), b.top.size());
      for (std::size_t k = 0; k < a.top.size(); ++k)
        EXPECT_TRUE(a.top[k].token == b.top[k].token && a.top[k].logprob == b.top[k].logprob);
    }
  }
}

// A scored prompt token (SampleSpec::forced): the pick is the token given, whatever the
// temperature and draw; its logprob is the log-softmax of the raw row, its rank its place in the
// order (ties: lower id first; NaN as -inf), and the top logprobs are the row's.
TEST(Sampler, ForcedPickGivesItsLogprobAndRank) {
  double z = 0;
  for (float v : kLogits) z += std::exp(static_cast<double>(v));
  const int32_t want_rank[] = {4, 1, 3, 5, 2, 6};  // kLogits in descending order: 1, 4, 2, 0, 3, 5
  for (int32_t t = 0; t < 6; ++t)
    for (float temp : {0.0f, 1.0f}) {
      dpa::backend::SampleSpec spec;
      spec.temperature = temp;
      spec.u = 0.99;
      spec.n_top = 2;
      spec.forced = t;
      dpa::backend::SampleOut o;
      dpa::backend::sample_row_reference(kLogits.data(), 6, spec, o);
      EXPECT_EQ(o.token, t);
      EXPECT_NEAR(o.logprob, kLogits[t] - std::log(z), 1e-6);
      EXPECT_EQ(o.rank, want_rank[t]) << t;
      ASSERT_EQ(o.n_top, 2);
      EXPECT_EQ(o.top_token[0], 1);
      EXPECT_EQ(o.top_token[1], 4);
    }
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const std::vector<float> row = {nan, 2.0f, 2.0f, -inf, 0.5f};
  const int32_t ranks[] = {4, 1, 2, 5, 3};  // 1, 2 (tie: lower id first), 4, then 0 and 3 at -inf
  for (int32_t t = 0; t < 5; ++t) {
    dpa::backend::SampleSpec spec;
    spec.forced = t;
    dpa::backend::SampleOut o;
    dpa::backend::sample_row_reference(row.data(), 5, spec, o);
    EXPECT_EQ(o.token, t);
    EXPECT_EQ(o.rank, ranks[t]) << t;
  }
  dpa::backend::SampleSpec drawn;  // a drawn row's rank is not computed
  dpa::backend::SampleOut o;
  dpa::backend::sample_row_reference(kLogits.data(), 6, drawn, o);
  EXPECT_EQ(o.token, 1);
  EXPECT_EQ(o.rank, 0);
}

// vLLM's rule: a bad word's last token is banned where the output ends with its other tokens;
// a one-token word always; the prompt does not count (only `generated` is given).
TEST(Sampler, BadWordBans) {
  const std::vector<std::vector<int32_t>> words = {{5}, {6, 7, 8}, {7, 9}, {1, 2, 3, 4}};
  auto bans = [&](std::vector<int32_t> generated) {
    std::vector<int32_t> out;
    bad_word_bans(words, generated, out);
    std::sort(out.begin(), out.end());
    return out;
  };
  EXPECT_EQ(bans({}), (std::vector<int32_t>{5}));
  EXPECT_EQ(bans({6}), (std::vector<int32_t>{5}));
  EXPECT_EQ(bans({6, 7}), (std::vector<int32_t>{5, 8, 9}));
  EXPECT_EQ(bans({7, 6, 7}), (std::vector<int32_t>{5, 8, 9}));
  EXPECT_EQ(bans({6, 7, 8}), (std::vector<int32_t>{5}));
  EXPECT_EQ(bans({1, 2, 3}), (std::vector<int32_t>{4, 5}));
  EXPECT_EQ(bans({2, 3}), (std::vector<int32_t>{5}));  // shorter than the word's other tokens
}

TEST(Wire, IntakeAndOutputsRoundTrip) {
  Request r;
  r.id = 42;
  r.prompt = {5, 6, 7};
  r.data_parallel_rank = 3;
  r.priority = -7;  // orders admission on every rank of the replica: it must travel
  r.params.seed = 9;
  r.params.stop_token_ids = {2, 3};
  r.params.logprobs = 2;
  r.params.prompt_logprobs = 3;
  r.params.structure = Structure::choice;
  r.params.choices = {"no", "yes"};
  r.params.logit_bias = {{4, -2.5f}, {11, 100.0f}};
  auto blob = encode_intake({r}, {7, 8}, true);
  std::vector<Request> rs;
  std::vector<uint64_t> ab;
  bool sd = false;
  decode_intake(blob, &rs, &ab, &sd);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].id, 42u);
  EXPECT_EQ(rs[0].prompt, r.prompt);
  EXPECT_EQ(rs[0].data_parallel_rank, 3);
  EXPECT_EQ(rs[0].priority, -7);
  EXPECT_EQ(rs[0].params.seed, 9u);
  EXPECT_EQ(rs[0].params.prompt_logprobs, 3);
  EXPECT_EQ(rs[0].params.structure, Structure::choice);
  EXPECT_EQ(rs[0].params.choices, r.params.choices);
  EXPECT_TRUE(rs[0].params.json_schema.empty());
  EXPECT_EQ(rs[0].params.stop_token_ids, r.params.stop_token_ids);
  ASSERT_EQ(rs[0].params.logit_bias.size(), 2u);
  EXPECT_EQ(rs[0].params.logit_bias[1].token, 11);
  EXPECT_EQ(rs[0].params.logit_bias[0].bias, -2.5f);
  EXPECT_EQ(ab, (std::vector<uint64_t>{7, 8}));
  EXPECT_TRUE(sd);
  r.params.structure = Structure::json_schema;  // the schema's text travels; its compiled form does not
  r.params.json_schema = R"({"type": "integer", "minimum": 3})";
  decode_intake(encode_intake({r}, {}, false), &rs, &ab, &sd);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].params.structure, Structure::json_schema);
  EXPECT_EQ(rs[0].params.json_schema, r.params.json_schema);
  r.params.structure = Structure::regex;
  r.params.regex = R"(\d{3}-[a-z]+)";
  decode_intake(encode_intake({r}, {}, false), &rs, &ab, &sd);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].params.structure, Structure::regex);
  EXPECT_EQ(rs[0].params.regex, r.params.regex);
  r.params.structure = Structure::none;
  r.params.allowed_token_ids = {3, 9, 70000};
  r.params.bad_words = {{5}, {6, 7, 8}, {}};
  decode_intake(encode_intake({r}, {}, false), &rs, &ab, &sd);
  ASSERT_EQ(rs.size(), 1u);
  EXPECT_EQ(rs[0].params.allowed_token_ids, r.params.allowed_token_ids);
  EXPECT_EQ(rs[0].params.bad_words, r.params.bad_words);
  EXPECT_TRUE(rs[0].params.restricted());
  TokenOutput o{42, 17, -0.5f, FinishReason::length, {{1, -0.1f}, {2, -0.2f}}};
  o.prompt_logprobs = {{6, -1.5f, 3, {{9, -0.25f}}}, {7, -2.5f, 12, {}}};
  auto outs = decode_outputs(encode_outputs({o, TokenOutput{43, 5}}));
  ASSERT_EQ(outs.size(), 2u);
  ASSERT_EQ(outs[0].prompt_logprobs.size(), 2u);
  EXPECT_EQ(outs[0].prompt_logprobs[0].token, 6);
  EXPECT_EQ(outs[0].prompt_logprobs[0].logprob, -1.5f);
  EXPECT_EQ(outs[0].prompt_logprobs[0].rank, 3);
  ASSERT_EQ(outs[0].prompt_logprobs[0].top.size(), 1u);
  EXPECT_EQ(outs[0].prompt_logprobs[0].top[0].token, 9);
  EXPECT_EQ(outs[0].prompt_logprobs[1].rank, 12);
  EXPECT_TRUE(outs[1].prompt_logprobs.empty());
  EXPECT_EQ(outs[1].token, 5);
  EXPECT_EQ(outs[0].token, 17);
  EXPECT_EQ(outs[0].finish, FinishReason::length);
  ASSERT_EQ(outs[0].top.size(), 2u);
  EXPECT_EQ(outs[0].top[1].token, 2);
}
}  // namespace
