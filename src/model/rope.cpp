// YaRN and default rotary frequencies, following transformers' _compute_yarn_parameters.
#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace dpa::model {

namespace {

double get_mscale(double scale, double mscale) {
  return scale <= 1.0 ? 1.0 : 0.1 * mscale * std::log(scale) + 1.0;
}

// The dimension index at which `n_rot` full rotations fit in `max_pos` positions.
double correction_dim(double n_rot, int64_t dim, double base, double max_pos) {
  return (static_cast<double>(dim) * std::log(max_pos / (n_rot * 2.0 * std::numbers::pi))) /
         (2.0 * std::log(base));
}

}  // namespace

std::vector<float> rope_inv_freq(const ModelConfig& cfg) {
  const int64_t dim = cfg.qk_rope_head_dim, half = dim / 2;
  const float base = static_cast<float>(cfg.rope_theta);
  std::vector<float> inv(half);
  std::vector<float> pos_freq(half);
  for (int64_t i = 0; i < half; ++i)
    pos_freq[i] = std::pow(base, static_cast<float>(2 * i) / static_cast<float>(dim));
  if (cfg.rope_scaling.type != "yarn") {
    for (int64_t i = 0; i < half; ++i) inv[i] = 1.0f / pos_freq[i];
    return inv;
  }
  const auto& y = cfg.rope_scaling;
  const float factor = static_cast<float>(y.factor);
  const double orig = static_cast<double>(y.original_max_position_embeddings);
  double low = std::floor(correction_dim(y.beta_fast, dim, cfg.rope_theta, orig));
  double high = std::ceil(correction_dim(y.beta_slow, dim, cfg.rope_theta, orig));
  low = std::max(low, 0.0);
  high = std::min(high, static_cast<double>(dim - 1));
  if (low == high) high += 0.001;
  const float lo = static_cast<float>(low), hi = static_cast<float>(high);
  for (int64_t i = 0; i < half; ++i) {
    const float ramp = std::clamp((static_cast<float>(i) - lo) / (hi - lo), 0.0f, 1.0f);
    const float extrap_factor = 1.0f - ramp;  // 1: keep the original frequency (fast dims)
    const float extrap = 1.0f / pos_freq[i];
    const float interp = 1.0f / (factor * pos_freq[i]);
    inv[i] = interp * (1.0f - extrap_factor) + extrap * extrap_factor;
  }
  return inv;
}

float rope_attention_scaling(const ModelConfig& cfg) {
  if (cfg.rope_scaling.type != "yarn") return 1.0f;
  const auto& y = cfg.rope_scaling;
  if (y.mscale != 0.0 && y.mscale_all_dim != 0.0)
    return static_cast<float>(get_mscale(y.factor, y.mscale) / get_mscale(y.factor, y.mscale_all_dim));
  return static_cast<float>(get_mscale(y.factor, 1.0));
}

}  // namespace dpa::model
