#include "model/rope.h"

#include <algorithm>
#include <cmath>

namespace ds {

namespace {
double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}
// The rotary dim index at which a wavelength makes `num_rotations` turns over the original context.
double find_correction_dim(double num_rotations, double dim, double base, double max_pos) {
  return dim * std::log(max_pos / (num_rotations * 2.0 * M_PI)) / (2.0 * std::log(base));
}
}  // namespace

std::vector<double> rope_inv_freq(const ModelConfig& c) {
  const int64_t dim = c.qk_rope_head_dim;
  const int64_t half = dim / 2;
  std::vector<double> inv(half);
  for (int64_t i = 0; i < half; ++i) inv[i] = 1.0 / std::pow(c.rope_theta, double(2 * i) / double(dim));
  if (!c.yarn.enabled) return inv;
  const YarnConfig& y = c.yarn;
  double low = std::floor(find_correction_dim(y.beta_fast, dim, c.rope_theta, y.original_max_position_embeddings));
  double high = std::ceil(find_correction_dim(y.beta_slow, dim, c.rope_theta, y.original_max_position_embeddings));
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;  // avoid a zero-width ramp
  for (int64_t i = 0; i < half; ++i) {
    double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
    // ramp 0: keep the original frequency (extrapolation); ramp 1: divide by the factor (interpolation).
    inv[i] = inv[i] / y.factor * ramp + inv[i] * (1.0 - ramp);
  }
  return inv;
}

double rope_attn_factor(const ModelConfig& c) {
  if (!c.yarn.enabled) return 1.0;
  const YarnConfig& y = c.yarn;
  if (y.mscale != 0.0 && y.mscale_all_dim != 0.0)
    return yarn_get_mscale(y.factor, y.mscale) / yarn_get_mscale(y.factor, y.mscale_all_dim);
  return yarn_get_mscale(y.factor, 1.0);
}

double attention_softmax_scale(const ModelConfig& c) {
  double s = 1.0 / std::sqrt(double(c.qk_head_dim()));
  if (c.yarn.enabled && c.yarn.mscale_all_dim != 0.0) {
    double m = yarn_get_mscale(c.yarn.factor, c.yarn.mscale_all_dim);
    s *= m * m;
  }
  return s;
}

}  // namespace ds
