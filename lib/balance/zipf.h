#pragma once
// Seeded Zipf-like expert-load matrices (tests and bench): expert popularity ~ 1/rank^s over a random permutation,
// times multiplicative noise, scaled to token counts.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace ds::balance::testing {

inline std::vector<std::vector<double>> zipf_loads(int64_t layers, int64_t experts, uint64_t seed, double s) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> noise(0.7, 1.3);
  std::vector<std::vector<double>> out(layers, std::vector<double>(experts));
  std::vector<int64_t> perm(experts);
  for (auto& row : out) {
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t r = 0; r < experts; ++r)
      row[perm[r]] = std::round(10000.0 * noise(rng) / std::pow(double(r + 1), s));
  }
  return out;
}

}  // namespace ds::balance::testing
