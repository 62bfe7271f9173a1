#include "core/rng.h"

#include <cmath>
#include <numbers>

#include "core/error.h"

namespace ds {

// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), bit-exact with
// Random123's philox4x32_R(10, ...): ten rounds, the key bumped by the Weyl constants between rounds.
std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t k0 = uint32_t(key), k1 = uint32_t(key >> 32);
  uint32_t c0 = uint32_t(counter_lo), c1 = uint32_t(counter_lo >> 32);
  uint32_t c2 = uint32_t(counter_hi), c3 = uint32_t(counter_hi >> 32);
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    uint64_t p0 = uint64_t(kM0) * c0;
    uint64_t p1 = uint64_t(kM1) * c2;
    uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
  }
  return {c0, c1, c2, c3};
}

namespace {

// One Philox block per draw: (key = seed, counter = (stream, index)).
std::array<uint32_t, 4> block(uint64_t seed, uint64_t stream, uint64_t index) { return philox4x32(seed, stream, index); }

uint64_t words_u64(uint32_t lo, uint32_t hi) { return uint64_t(lo) | (uint64_t(hi) << 32); }

// [0, 1) with 53 random bits.
double to_uniform(uint64_t u) { return double(u >> 11) * 0x1.0p-53; }

// Box-Muller on the block's two 64-bit halves; 1 - u keeps the log argument in (0, 1].
double to_normal(const std::array<uint32_t, 4>& w) {
  double u1 = 1.0 - to_uniform(words_u64(w[0], w[1]));
  double u2 = to_uniform(words_u64(w[2], w[3]));
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * u2);
}

}  // namespace

uint32_t Rng::next_u32() { return block(seed, stream, counter++)[0]; }

uint64_t Rng::next_u64() {
  auto w = block(seed, stream, counter++);
  return words_u64(w[0], w[1]);
}

double Rng::next_uniform() { return to_uniform(next_u64()); }

double Rng::next_normal() { return to_normal(block(seed, stream, counter++)); }

uint64_t Rng::next_below(uint64_t n) {
  DS_CHECK(n > 0, "next_below(0)");
  // Lemire's multiply-shift with rejection: unbiased, and rarely needs a second draw.
  unsigned __int128 m = (unsigned __int128)next_u64() * n;
  uint64_t low = uint64_t(m);
  if (low < n) {
    uint64_t threshold = (0 - n) % n;
    while (low < threshold) {
      m = (unsigned __int128)next_u64() * n;
      low = uint64_t(m);
    }
  }
  return uint64_t(m >> 64);
}

double rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t i) {
  auto w = block(seed, stream, i);
  return to_uniform(words_u64(w[0], w[1]));
}

double rng_normal_at(uint64_t seed, uint64_t stream, uint64_t i) { return to_normal(block(seed, stream, i)); }

}  // namespace ds
