#pragma once
// Test helpers for the ops: owned host tensors, random fills, comparisons, the gradient-check wrapper.
#if __has_include(<catch2/catch.hpp>)
#include <catch2/catch.hpp>  // Catch2 v2 (Debian 12)
#else
#include <catch2/catch_all.hpp>  // Catch2 v3
#endif

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ops/ops.h"
#include "tensor/arena.h"
#include "tests/unit/common/gradcheck.h"

namespace ds::test {

// A CPU tensor with its own storage; converts to Tensor so it can be passed to ops directly.
struct Owned {
  std::shared_ptr<std::vector<uint64_t>> mem;  // 8-byte aligned storage
  Tensor t;
  operator Tensor() const { return t; }
  template <class T> T* p() const { return t.ptr<T>(); }
  std::vector<double> f64() const { return to_host_f64(t); }
  std::vector<int64_t> i64() const { return to_host_i64(t); }
};

inline Owned zeros(DType dt, const std::vector<int64_t>& shape) {
  Owned o;
  Tensor probe(nullptr, dt, shape);
  o.mem = std::make_shared<std::vector<uint64_t>>((probe.nbytes() + 7) / 8 + 1, 0);
  o.t = Tensor(o.mem->data(), dt, shape);
  return o;
}

inline Owned from(DType dt, const std::vector<int64_t>& shape, const std::vector<double>& v) {
  Owned o = zeros(dt, shape);
  from_host(o.t, v);
  return o;
}

inline Owned ints(const std::vector<int64_t>& shape, const std::vector<int32_t>& v) {
  Owned o = zeros(DType::i32, shape);
  from_host(o.t, v);
  return o;
}

inline std::vector<double> uniform(int64_t n, uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  std::vector<double> v(static_cast<size_t>(n));
  for (double& x : v) x = d(rng);
  return v;
}

inline Owned rand(DType dt, const std::vector<int64_t>& shape, uint64_t seed, double lo = -1, double hi = 1) {
  Owned o = zeros(dt, shape);
  from_host(o.t, uniform(o.t.numel(), seed, lo, hi));
  return o;
}

// The same values in another float dtype (f32 <-> f64).
inline Owned as(DType dt, const Owned& src) { return from(dt, src.t.dims(), src.f64()); }

inline Owned clone(const Owned& src) {
  Owned o = zeros(src.t.dtype, src.t.dims());
  std::memcpy(o.t.data, src.t.data, src.t.nbytes());
  return o;
}

inline Context cpu_ctx(int threads = 1) {
  Context c;
  c.threads = threads;
  return c;
}

// sum(a * b) for the random-projection losses of the gradient checks.
inline double dot(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = to_host_f64(a), y = to_host_f64(b);
  double s = 0;
  for (size_t i = 0; i < x.size(); ++i) s += x[i] * y[i];
  return s;
}

inline double max_abs_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]));
  return m;
}

// max |a - b| / max(|b|, 1): relative for large values, absolute near zero.
inline double max_rel_diff(const std::vector<double>& a, const std::vector<double>& b) {
  REQUIRE(a.size() == b.size());
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i]) / std::max(std::abs(b[i]), 1.0));
  return m;
}

inline bool bitwise_equal(const Tensor& a, const Tensor& b) {
  return a.nbytes() == b.nbytes() && std::memcmp(a.data, b.data, a.nbytes()) == 0;
}

// Runs the gradient check, prints the measured error (the numbers quoted in reports) and returns it.
inline double run_gradcheck(const char* op, const std::vector<GradParam>& params, const std::function<double()>& loss,
                            GradCheckOptions opt = {}) {
  GradCheckResult r = gradcheck(params, loss, opt);
  std::printf("gradcheck %-28s %s\n", op, r.summary().c_str());
  INFO(op << ": " << r.summary());
  CHECK(r.checked > 0);
  return r.max_rel_err;
}

}  // namespace ds::test
