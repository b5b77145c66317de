// The sampling reference every backend matches: logit edits, then one row's draw (SampleSpec).
// Weights are summed as integers (fixed point) so that a backend summing in another order, as a
// GPU does, reaches the same sums and so the same picks.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "backend/backend.h"

namespace dpa::backend {

int sampling_fixed_bits(int64_t vocab) {
  int bits = 0;
  while ((int64_t{1} << bits) < vocab) ++bits;
  return 61 - bits;  // vocab weights of at most 1 each sum below 2^61
}

float apply_logit_edit(float x, const LogitEdit& e) {
  double v = x;
  if (e.repetition != 1.0f) v = v > 0 ? v / e.repetition : v * e.repetition;
  v -= e.subtract;
  return static_cast<float>(v);
}

void sample_row_reference(const float* row, int64_t vocab, const SampleSpec& spec, SampleOut& out) {
  out = SampleOut{};
  if (vocab <= 0) return;
  // A NaN logit (a broken model) counts as -inf: never picked, weight 0, and the ordering below
  // stays a strict weak order.
  std::vector<float> xs(row, row + vocab);
  for (float& v : xs)
    if (std::isnan(v)) v = -std::numeric_limits<float>::infinity();
  const float* x = xs.data();
  int64_t best = 0;
  for (int64_t i = 1; i < vocab; ++i)
    if (x[i] > x[best]) best = i;
  const double mx = x[best];
  // w: exp(x - max) here, the tempered weights below (the same values at temperature 1).
  std::vector<double> w(static_cast<std::size_t>(vocab));
  double z = 0;
  for (int64_t i = 0; i < vocab; ++i) z += w[i] = std::exp(static_cast<double>(x[i]) - mx);
  const double log_z = mx + std::log(z);
  auto logprob_of = [&](int64_t i) { return static_cast<float>(static_cast<double>(x[i]) - log_z); };

  // Ordering by logit (ties: lower id first) serves top-k, top-p, the walk and top logprobs.
  // Only the prefix a row needs is ordered: sorted(n) puts the n largest first, in order,
  // growing the ordered prefix geometrically (one selection pass over the rest each time).
  std::vector<int32_t> order(static_cast<std::size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); };
  int64_t n_sorted = 0;
  auto sorted = [&](int64_t n) {
    if (n <= n_sorted) return;
    n = std::min<int64_t>(vocab, std::max<int64_t>({n, 8 * n_sorted, 64}));
    if (n_sorted == 0 && n <= vocab / 16) {
      std::partial_sort(order.begin(), order.begin() + n, order.end(), by_logit);
    } else {
      if (n < vocab) std::nth_element(order.begin() + n_sorted, order.begin() + n, order.end(), by_logit);
      std::sort(order.begin() + n_sorted, order.begin() + n, by_logit);
    }
    n_sorted = n;
  };

  out.n_top = static_cast<int32_t>(std::clamp<int64_t>(spec.n_top, 0, std::min<int64_t>(kMaxTopLogprobs, vocab)));
  sorted(out.n_top);
  for (int32_t i = 0; i < out.n_top; ++i) {
    out.top_token[i] = order[i];
    out.top_logprob[i] = logprob_of(order[i]);
  }
  auto finish = [&](int64_t token) {
    out.token = static_cast<int32_t>(token);
    out.logprob = logprob_of(token);
  };
  if (spec.forced >= 0 && spec.forced < vocab) {
    const float f = x[spec.forced];
    int64_t before = 0;
    for (int64_t i = 0; i < vocab; ++i) before += x[i] > f || (x[i] == f && i < spec.forced);
    out.rank = static_cast<int32_t>(before + 1);
    return finish(spec.forced);
  }
  if (spec.temperature <= 0.0f || !std::isfinite(mx)) return finish(best);

  // Weights w_i = exp(x_i / t - max / t) in (0, 1], quantized to F fraction bits.
  const double t = spec.temperature, top = mx / t, scale = std::ldexp(1.0, sampling_fixed_bits(vocab));
  auto quantize = [scale](double w) { return static_cast<uint64_t>(std::nearbyint(w * scale)); };
  uint64_t total = 0;
  for (int64_t i = 0; i < vocab; ++i) {
    if (t != 1.0) w[i] = std::exp(static_cast<double>(x[i]) / t - top);
    total += quantize(w[i]);
  }
  std::vector<uint64_t> cum;  // cum[k - 1]: the weight of the first k ordered ids
  auto weight_of_first = [&](int64_t k) -> uint64_t {
    if (k <= 0) return 0;
    sorted(k);
    while (static_cast<int64_t>(cum.size()) < k) {
      const int32_t id = order[cum.size()];
      cum.push_back((cum.empty() ? 0 : cum.back()) + quantize(w[id]));
    }
    return cum[k - 1];
  };
  int64_t keep = vocab;
  uint64_t top_k_weight = total;
  if (spec.top_k > 0 && spec.top_k < vocab) {
    keep = spec.top_k;
    top_k_weight = weight_of_first(keep);
  }
  if (spec.min_p > 0.0f) {
    int64_t above = 0;
    for (int64_t i = 0; i < vocab; ++i) above += w[i] >= static_cast<double>(spec.min_p);
    keep = std::max<int64_t>(1, std::min(keep, above));
  }
  if (spec.top_p < 1.0f) {
    const auto need = static_cast<uint64_t>(std::ceil(static_cast<double>(spec.top_p) * static_cast<double>(top_k_weight)));
    for (int64_t k = 1; k <= keep; ++k)
      if (weight_of_first(k) >= need) {
        keep = k;
        break;
      }
  }
  const uint64_t kept = keep == vocab ? total : weight_of_first(keep);
  const auto u = static_cast<uint64_t>(std::floor(spec.u * static_cast<double>(kept)));
  int64_t pick = keep - 1;  // when rounding leaves u at the very end of the kept weight
  for (int64_t k = 1; k <= keep; ++k)
    if (weight_of_first(k) > u) {
      pick = k - 1;
      break;
    }
  sorted(pick + 1);
  finish(order[pick]);
}

}  // namespace dpa::backend
