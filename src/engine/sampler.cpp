// CPU sampler: penalties, temperature, truncation, seeded draw, logprobs.
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <unordered_map>

namespace dpa::engine {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::none: return "none";
    case FinishReason::stop: return "stop";
    case FinishReason::length: return "length";
    case FinishReason::abort: return "abort";
  }
  return "?";
}

namespace {
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
}  // namespace

double uniform_from(uint64_t seed, int64_t position) {
  const uint64_t r = splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(position) * 0xd1b54a32d192ed03ull);
  return static_cast<double>(r >> 11) * 0x1.0p-53;
}

SampleResult sample_token(std::span<const float> logits, const SamplingParams& p, std::span<const int32_t> prompt,
                          std::span<const int32_t> generated, uint64_t fallback_seed, int64_t position,
                          bool suppress_eos, std::span<const int32_t> eos_ids) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  std::vector<double> x(logits.begin(), logits.end());
  // Penalties (vLLM semantics): repetition over prompt + output, presence/frequency over output.
  if (p.repetition_penalty != 1.0f) {
    std::vector<char> seen(vocab, 0);
    for (int32_t t : prompt) if (t >= 0 && t < vocab) seen[t] = 1;
    for (int32_t t : generated) if (t >= 0 && t < vocab) seen[t] = 1;
    for (int64_t i = 0; i < vocab; ++i)
      if (seen[i]) x[i] = x[i] > 0 ? x[i] / p.repetition_penalty : x[i] * p.repetition_penalty;
  }
  if (p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t t : generated) ++counts[t];
    for (auto [t, c] : counts)
      if (t >= 0 && t < vocab) x[t] -= p.frequency_penalty * c + p.presence_penalty;
  }
  constexpr double neg_inf = -std::numeric_limits<double>::infinity();
  if (suppress_eos)
    for (int32_t e : eos_ids) if (e >= 0 && e < vocab) x[e] = neg_inf;

  // Log-softmax of the processed logits: what logprobs report.
  // Sums of exponentials over the vocabulary: single-precision exp, double accumulation (the
  // terms' rounding is far below what a draw or a reported logprob resolves).
  const double mx = *std::max_element(x.begin(), x.end());
  auto sum_exp = [&](double scale, double shift) {
    double acc = 0;
    for (double v : x) acc += std::exp(static_cast<float>(v * scale - shift));
    return acc;
  };
  const double z = sum_exp(1.0, mx);
  const double log_z = mx + std::log(z);
  auto logprob_of = [&](int64_t i) { return static_cast<float>(x[i] - log_z); };

  // Ordering by logit (ties: lower id first) serves greedy, top-k, top-p and top_logprobs. Only
  // the prefix a request needs is ordered: sorted(n) puts the n largest first, in order, growing
  // the ordered prefix geometrically (one selection pass over the rest each time), so a draw that
  // stops early never pays for sorting the whole vocabulary.
  std::vector<int32_t> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  int64_t n_sorted = 0;
  auto sorted = [&](int64_t n) {
    if (n <= n_sorted) return;
    n = std::min<int64_t>(vocab, std::max<int64_t>({n, 8 * n_sorted, 64}));
    if (n_sorted == 0 && n <= vocab / 16) {
      // A small head: a heap selection rejects most entries with one comparison.
      std::partial_sort(order.begin(), order.begin() + n, order.end(), by_logit);
    } else {
      if (n < vocab) std::nth_element(order.begin() + n_sorted, order.begin() + n, order.end(), by_logit);
      std::sort(order.begin() + n_sorted, order.begin() + n, by_logit);
    }
    n_sorted = n;
  };

  SampleResult r;
  if (p.logprobs > 0) {
    const int64_t k = std::min<int64_t>(p.logprobs, vocab);
    sorted(k);
    for (int64_t i = 0; i < k; ++i) r.top.push_back({order[i], logprob_of(order[i])});
  }
  if (p.greedy()) {
    int64_t best = 0;
    for (int64_t i = 1; i < vocab; ++i) if (x[i] > x[best]) best = i;
    r.token = static_cast<int32_t>(best);
    r.logprob = logprob_of(best);
    return r;
  }
  // Temperature, then truncation on the probabilities: prob(i) of the i-th largest logit,
  // normalised over the top-k set (or the whole vocabulary without top-k).
  const double t = p.temperature, top = mx / t;
  int64_t keep = vocab;
  double sum = 0;
  if (p.top_k > 0) {
    keep = std::min<int64_t>(keep, p.top_k);
    sorted(keep);
    for (int64_t i = 0; i < keep; ++i) sum += std::exp(x[order[i]] / t - top);
  } else {
    sum = t == 1.0 ? z : sum_exp(1.0 / t, top);
  }
  auto prob = [&](int64_t i) {
    sorted(i + 1);
    return std::exp(x[order[i]] / t - top) / sum;
  };
  if (p.min_p > 0.0f) {
    const double floor = p.min_p * prob(0);
    int64_t k = 1;
    while (k < keep && prob(k) >= floor) ++k;
    keep = k;
  }
  bool truncated = keep < vocab;
  if (p.top_p < 1.0f) {
    double acc = 0;
    int64_t k = 0;
    while (k < keep) {
      acc += prob(k++);
      if (acc >= p.top_p) break;
    }
    keep = std::max<int64_t>(k, 1);
    truncated = true;
  }
  double mass = 1.0;  // the whole tempered distribution, normalised
  if (truncated) {
    mass = 0;
    for (int64_t i = 0; i < keep; ++i) mass += prob(i);
  }
  const double u = uniform_from(p.seed.value_or(fallback_seed), position) * mass;
  double acc = 0;
  int64_t pick = -1;
  for (int64_t i = 0; i < keep; ++i) {
    acc += prob(i);
    if (u < acc) { pick = i; break; }
  }
  if (pick < 0) {  // rounding left u at the very end of the mass
    pick = keep - 1;
    sorted(keep);
  }
  r.token = order[pick];
  r.logprob = logprob_of(r.token);
  return r;
}

}  // namespace dpa::engine
