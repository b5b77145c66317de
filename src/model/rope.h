// Rotary frequencies of the rope part of MLA heads, as Hugging Face computes them (default or
// YaRN, float32 arithmetic), and the cos/sin scaling factor (YaRN mscale ratio).
#pragma once

#include <vector>

#include "model/config.h"

namespace dpa::model {

// inv_freq[i], i < qk_rope_head_dim / 2.
std::vector<float> rope_inv_freq(const ModelConfig& cfg);
// Factor on cos and sin: get_mscale(f, mscale) / get_mscale(f, mscale_all_dim) with YaRN, else 1.
float rope_attention_scaling(const ModelConfig& cfg);

}  // namespace dpa::model
