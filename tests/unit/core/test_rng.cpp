#include <catch2/catch.hpp>

#include <cmath>
#include <set>

#include "core/rng.h"

using namespace ds;

TEST_CASE("Philox4x32-10 matches the Random123 known-answer vectors", "[rng]") {
  CHECK(philox4x32(0, 0, 0) == std::array<uint32_t, 4>{0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u});
  CHECK(philox4x32(~0ull, ~0ull, ~0ull) == std::array<uint32_t, 4>{0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu});
  // Random123 kat_vectors: ctr = 243f6a88 85a308d3 13198a2e 03707344, key = a4093822 299f31d0.
  uint64_t ctr_lo = 0x85a308d3243f6a88ull, ctr_hi = 0x0370734413198a2eull, key = 0x299f31d0a4093822ull;
  CHECK(philox4x32(key, ctr_hi, ctr_lo) == std::array<uint32_t, 4>{0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u});
}

TEST_CASE("Rng is deterministic and stream/seed separated", "[rng]") {
  Rng a{42, 3, 0}, b{42, 3, 0}, c{42, 4, 0}, d{43, 3, 0};
  std::vector<uint64_t> va, vb, vc, vd;
  for (int i = 0; i < 100; ++i) {
    va.push_back(a.next_u64());
    vb.push_back(b.next_u64());
    vc.push_back(c.next_u64());
    vd.push_back(d.next_u64());
  }
  CHECK(va == vb);
  CHECK(va != vc);
  CHECK(va != vd);
  CHECK(a.counter == 100);

  // Resuming from a saved counter continues the same sequence.
  Rng r{42, 3, 50};
  CHECK(r.next_u64() == va[50]);

  // The stateless draws equal the stateful ones at the same counter.
  Rng u{9, 2, 17};
  CHECK(u.next_uniform() == rng_uniform_at(9, 2, 17));
  Rng n{9, 2, 17};
  CHECK(n.next_normal() == rng_normal_at(9, 2, 17));
}

TEST_CASE("uniform and normal draws have the right range and moments", "[rng]") {
  Rng r{1, 0, 0};
  const int n = 100000;
  double sum = 0, sum2 = 0, usum = 0;
  for (int i = 0; i < n; ++i) {
    double u = r.next_uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    usum += u;
    double z = rng_normal_at(1, 5, uint64_t(i));
    REQUIRE(std::isfinite(z));
    sum += z;
    sum2 += z * z;
  }
  CHECK(std::fabs(usum / n - 0.5) < 0.01);
  CHECK(std::fabs(sum / n) < 0.02);
  CHECK(std::fabs(sum2 / n - 1.0) < 0.03);
}

TEST_CASE("next_below stays in range and covers it", "[rng]") {
  Rng r{5, 0, 0};
  for (uint64_t n : {1ull, 2ull, 3ull, 7ull, 10ull, 1000ull, (1ull << 63) + 1, ~0ull}) {
    for (int i = 0; i < 2000; ++i) REQUIRE(r.next_below(n) < n);
  }
  std::vector<int> counts(10, 0);
  for (int i = 0; i < 20000; ++i) counts[r.next_below(10)]++;
  for (int c : counts) CHECK(std::abs(c - 2000) < 200);
}
