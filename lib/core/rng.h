#pragma once
// Counter-based RNG (Philox4x32-10, as in cuRAND and JAX): the value at (seed, stream, counter) is a pure
// function, so results never depend on thread count, call order or device. Streams separate uses
// (init, shuffle, dropout, sampling); the counter indexes the draw.
//
// Exact mapping (CUDA twins must reproduce it): key words = (lo32(key), hi32(key)); counter words =
// (lo32(counter_lo), hi32(counter_lo), lo32(counter_hi), hi32(counter_hi)). A draw of Rng uses the block
// philox4x32(seed, stream, counter) and then increments counter by one, whatever the draw:
//   next_u32 = w0;  next_u64 = w0 | w1 << 32;  next_uniform = (next_u64 >> 11) * 2^-53;
//   next_normal = sqrt(-2 ln(1 - U(w0,w1))) * cos(2 pi U(w2,w3))  (Box-Muller, one value per block).
// rng_uniform_at / rng_normal_at(seed, stream, i) equal Rng{seed, stream, i}.next_uniform() / next_normal().
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
