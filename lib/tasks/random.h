#pragma once
// Deterministic draws for the task generators, on top of the counter-based Philox Rng (core/rng.h).
// Every random choice in lib/tasks goes through these helpers, so a generator's output is a pure function of
// (seed, stream, counter): the same options and seed give the same bytes on any machine.
#include <cstdint>
#include <initializer_list>
#include <string_view>
#include <utility>
#include <vector>

#include "core/rng.h"

namespace ds::tasks {

// splitmix64's finaliser: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// A Philox stream id for one use (purpose, task, split, index, ...): the parts folded through mix64.
inline uint64_t stream_of(std::initializer_list<uint64_t> parts) {
  uint64_t h = 0x6473'7461'736B'7321ull;  // "dstask!"
  for (uint64_t p : parts) h = mix64(h ^ p);
  return h;
}

// FNV-1a over the bytes, then mix64: a fixed string hash (the split assignment depends on it, so it must
// never change).
inline uint64_t text_hash(std::string_view s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return mix64(h);
}

inline int64_t draw_range(Rng& r, int64_t lo, int64_t hi) {  // uniform in [lo, hi]
  return lo + int64_t(r.next_below(uint64_t(hi - lo) + 1));
}
inline bool draw_chance(Rng& r, double p) { return r.next_uniform() < p; }
template <class T>
const T& draw_pick(Rng& r, const std::vector<T>& v) {
  return v[r.next_below(v.size())];
}
template <class T, size_t N>
const T& draw_pick(Rng& r, const T (&v)[N]) {
  return v[r.next_below(N)];
}
template <class T>
void draw_shuffle(Rng& r, std::vector<T>& v) {  // Fisher-Yates
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[r.next_below(i)]);
}

}  // namespace ds::tasks
