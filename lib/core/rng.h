#pragma once
// Counter-based RNG (Philox4x32-10, as in cuRAND and JAX): the value at (seed, stream, counter) is a pure
// function, so results never depend on thread count, call order or device. Streams separate uses
// (init, shuffle, dropout, sampling); the counter indexes the draw.
#include <array>
#include <cstdint>

namespace ds {

std::array<uint32_t, 4> philox4x32(uint64_t key, uint64_t counter_hi, uint64_t counter_lo);

struct Rng {
  uint64_t seed = 0;
  uint64_t stream = 0;
  uint64_t counter = 0;  // advances with every draw; part of the saved training state

  uint32_t next_u32();
  uint64_t next_u64();
  double next_uniform();        // [0, 1), 53-bit
  double next_normal();         // standard normal (Box-Muller)
  uint64_t next_below(uint64_t n);  // uniform in [0, n), unbiased
};

// Stateless draws for element i of a tensor: uniform/normal at (seed, stream, i).
double rng_uniform_at(uint64_t seed, uint64_t stream, uint64_t i);
double rng_normal_at(uint64_t seed, uint64_t stream, uint64_t i);

}  // namespace ds
