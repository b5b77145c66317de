// Sampling parameters as the backends take them (logit edits, SampleSpec), and sample_token: the
// same draw on the host through the backends' reference.
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

void bad_word_bans(const std::vector<std::vector<int32_t>>& bad_words, std::span<const int32_t> generated,
                   std::vector<int32_t>& out) {
  for (const auto& w : bad_words) {
    if (w.empty() || w.size() - 1 > generated.size()) continue;
    if (std::equal(w.begin(), w.end() - 1, generated.end() - static_cast<std::ptrdiff_t>(w.size() - 1))) out.push_back(w.back());
  }
}

double uniform_from(uint64_t seed, int64_t position) {
  const uint64_t r = splitmix64(splitmix64(seed) ^ static_cast<uint64_t>(position) * 0xd1b54a32d192ed03ull);
  return static_cast<double>(r >> 11) * 0x1.0p-53;
}

void logit_edits(const SamplingParams& p, std::span<const int32_t> prompt, std::span<const int32_t> generated,
                 bool suppress_eos, std::span<const int32_t> eos_ids, int64_t vocab, int32_t row,
                 std::vector<backend::LogitEdit>& out) {
  const bool repetition = p.repetition_penalty != 1.0f;
  const bool additive = p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  if (!repetition && !additive && !suppress_eos) return;
  // Vocabulary id -> (seen, generated count); histories are short next to the vocabulary.
  std::unordered_map<int32_t, int> count;
  auto valid = [&](int32_t t) { return t >= 0 && t < vocab; };
  if (repetition)
    for (int32_t t : prompt)
      if (valid(t)) count.emplace(t, 0);
  if (repetition || additive)
    for (int32_t t : generated)
      if (valid(t)) ++count[t];
  if (suppress_eos)
    for (int32_t t : eos_ids)
      if (valid(t)) count.emplace(t, 0);
  for (auto [t, c] : count) {
    backend::LogitEdit e;
    e.row = row, e.token = t;
    if (repetition) e.repetition = p.repetition_penalty;
    if (additive && c > 0) e.subtract = p.frequency_penalty * c + p.presence_penalty;
    if (suppress_eos && std::find(eos_ids.begin(), eos_ids.end(), t) != eos_ids.end())
      e.subtract = std::numeric_limits<float>::infinity();
    out.push_back(e);
  }
}

void add_logit_bias(const SamplingParams& p, int64_t vocab, int32_t row, std::size_t first,
                    std::vector<backend::LogitEdit>& out) {
  if (p.logit_bias.empty()) return;
  std::unordered_map<int32_t, std::size_t> at;  // token -> its edit among out[first, end)
  for (std::size_t i = first; i < out.size(); ++i) at.emplace(out[i].token, i);
  for (const LogitBias& b : p.logit_bias) {
    if (b.token < 0 || b.token >= vocab) continue;
    if (auto it = at.find(b.token); it != at.end()) {
      out[it->second].subtract -= b.bias;  // +inf (a banned id) stays +inf
    } else {
      backend::LogitEdit e;
      e.row = row, e.token = b.token, e.subtract = -b.bias;
      out.push_back(e);
    }
  }
}

void PenaltyEdits::append(const SamplingParams& p, std::span<const int32_t> prompt,
                          std::span<const int32_t> generated, int64_t vocab, int32_t row,
                          std::vector<backend::LogitEdit>& out) {
  const bool repetition = p.repetition_penalty != 1.0f;
  const bool additive = p.presence_penalty != 0.0f || p.frequency_penalty != 0.0f;
  if (!repetition && !additive) return;
  // A sequence's history only grows: the same prompt and at least the tokens folded in so far
  // continue it; anything else is counted afresh.
  const bool same = prompt.size() == n_prompt_ && generated.size() >= n_generated_;
  if (!same) {
    edits_.clear(), generated_count_.clear(), at_.clear();
    n_prompt_ = prompt.size(), n_generated_ = 0;
  }
  auto valid = [&](int32_t t) { return t >= 0 && t < vocab; };
  auto entry = [&](int32_t t) -> std::size_t {
    auto [it, fresh] = at_.try_emplace(t, edits_.size());
    if (fresh) {
      backend::LogitEdit e;
      e.token = t;
      if (repetition) e.repetition = p.repetition_penalty;
      edits_.push_back(e);
      generated_count_.push_back(0);
    }
    return it->second;
  };
  if (!same && repetition)
    for (int32_t t : prompt)
      if (valid(t)) entry(t);
  for (std::size_t i = n_generated_; i < generated.size(); ++i) {
    const int32_t t = generated[i];
    if (!valid(t)) continue;
    const std::size_t k = entry(t);
    const int32_t c = ++generated_count_[k];
    if (additive) edits_[k].subtract = p.frequency_penalty * c + p.presence_penalty;
  }
  n_generated_ = generated.size();
  const std::size_t base = out.size();
  out.insert(out.end(), edits_.begin(), edits_.end());
  for (std::size_t i = base; i < out.size(); ++i) out[i].row = row;
}

backend::SampleSpec sample_spec(const SamplingParams& p, uint64_t fallback_seed, int64_t position) {
  backend::SampleSpec s;
  s.temperature = p.greedy() ? 0.0f : p.temperature;
  s.top_k = p.top_k > 0 ? p.top_k : 0;
  s.top_p = p.top_p;
  s.min_p = p.min_p;
  s.u = uniform_from(p.seed.value_or(fallback_seed), position);
  s.n_top = std::clamp<int32_t>(p.logprobs, 0, backend::kMaxTopLogprobs);
  return s;
}

SampleResult sample_token(std::span<const float> logits, const SamplingParams& p, std::span<const int32_t> prompt,
                          std::span<const int32_t> generated, uint64_t fallback_seed, int64_t position,
                          bool suppress_eos, std::span<const int32_t> eos_ids) {
  const int64_t vocab = static_cast<int64_t>(logits.size());
  std::vector<float> x(logits.begin(), logits.end());
  std::vector<backend::LogitEdit> edits;
  logit_edits(p, prompt, generated, suppress_eos, eos_ids, vocab, 0, edits);
  add_logit_bias(p, vocab, 0, 0, edits);
  for (const auto& e : edits) x[e.token] = backend::apply_logit_edit(x[e.token], e);
  backend::SampleOut o;
  backend::sample_row_reference(x.data(), vocab, sample_spec(p, fallback_seed, position), o);
  SampleResult r;
  r.token = o.token;
  r.logprob = o.logprob;
  for (int32_t i = 0; i < o.n_top; ++i) r.top.push_back({o.top_token[i], o.top_logprob[i]});
  return r;
}

}  // namespace dpa::engine
