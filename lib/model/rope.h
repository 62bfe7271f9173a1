#pragma once
// RoPE / YaRN constants from the config (host-side math; the rotation itself is the rope op).
// Follows transformers' _compute_yarn_parameters and DeepseekV3Attention, which equal DeepSeek's model.py
// for the V3 config (mscale = mscale_all_dim = 1).
#include <vector>

#include "model/config.h"

namespace ds {

// inv_freq[i], i < qk_rope_head_dim/2: theta^(-2i/d), blended towards inv_freq/factor over YaRN's ramp.
std::vector<double> rope_inv_freq(const ModelConfig& c);
// Multiplier of cos and sin (YaRN's "attention_factor"): get_mscale(s, mscale)/get_mscale(s, mscale_all_dim).
double rope_attn_factor(const ModelConfig& c);
// Softmax scale of q·k: qk_head_dim^-0.5, times get_mscale(s, mscale_all_dim)^2 under YaRN.
double attention_softmax_scale(const ModelConfig& c);

}  // namespace ds
