// Grouped expert linear: the per-expert loop it replaces, finite differences, accumulation rules, checks.
#include "helpers.h"

using namespace ds;
using namespace ds::test;

namespace {

Owned i64s(const std::vector<int64_t>& v) {
  Owned t = zeros(DType::i64, {int64_t(v.size())});
  std::copy(v.begin(), v.end(), t.p<int64_t>());
  return t;
}

// Offsets [E + 1] for row counts per expert (some experts empty).
Owned offsets_for(const std::vector<int64_t>& rows_per_expert) {
  std::vector<int64_t> o{0};
  for (int64_t r : rows_per_expert) o.push_back(o.back() + r);
  return i64s(o);
}

}  // namespace

TEST_CASE("grouped_matmul is bit-identical to the per-expert matmul loop", "[ops][grouped_matmul]") {
  const Context ctx = cpu_ctx(2);
  const std::vector<int64_t> counts{3, 0, 7, 1, 0, 5};  // empty experts in the middle and at the end
  const int64_t E = 6, M = 16, K = 9, N = 5;
  Owned off = offsets_for(counts);
  const std::vector<int64_t> o = off.i64();
  for (DType dt : {DType::f32, DType::f64}) {
    Owned in = rand(dt, {M, K}, 301), w = rand(dt, {E, N, K}, 302), dout = rand(dt, {M, N}, 303);
    // forward, overwrite then add
    for (Accum acc : {Accum::overwrite, Accum::add}) {
      Owned got = rand(dt, {M, N}, 304), ref = clone(got);
      grouped_matmul_forward(ctx, got, in, w, off, acc);
      for (int64_t e = 0; e < E; ++e)
        if (o[size_t(e)] < o[size_t(e + 1)])
          matmul_forward(ctx, ref.t.slice0(o[size_t(e)], o[size_t(e + 1)]), in.t.slice0(o[size_t(e)], o[size_t(e + 1)]),
                         w.t.index0(e), acc);
      CHECK(bitwise_equal(got, ref));
    }
    // backward: d_in (overwrite / add) and d_weight (accumulates)
    for (Accum acc : {Accum::overwrite, Accum::add}) {
      Owned din = rand(dt, {M, K}, 305), dw = rand(dt, {E, N, K}, 306);
      Owned din_ref = clone(din), dw_ref = clone(dw);
      grouped_matmul_backward(ctx, din, dw, dout, in, w, off, acc);
      for (int64_t e = 0; e < E; ++e) {
        const int64_t r0 = o[size_t(e)], r1 = o[size_t(e + 1)];
        if (r0 == r1) continue;
        matmul_backward(ctx, din_ref.t.slice0(r0, r1), dw_ref.t.index0(e), dout.t.slice0(r0, r1), in.t.slice0(r0, r1),
                        w.t.index0(e), acc);
      }
      CHECK(bitwise_equal(din, din_ref));
      CHECK(bitwise_equal(dw, dw_ref));
    }
    // Either output may be empty.
    Owned din = zeros(dt, {M, K}), din_ref = zeros(dt, {M, K}), dw = zeros(dt, {E, N, K});
    grouped_matmul_backward(ctx, din, Tensor{}, dout, Tensor{}, w, off);
    grouped_matmul_backward(ctx, din_ref, dw, dout, in, w, off);
    CHECK(bitwise_equal(din, din_ref));
    Owned dw2 = zeros(dt, {E, N, K});
    grouped_matmul_backward(ctx, Tensor{}, dw2, dout, in, w, off);
    CHECK(bitwise_equal(dw2, dw));
    // An empty expert's weight gradient is untouched (+= nothing).
    for (double v : to_host_f64(dw.t.index0(1))) CHECK(v == 0.0);
    // d_weight written over: what it held is gone (empty experts' blocks zero), the bits of a zeroed one added onto
    Owned dw3 = rand(dt, {E, N, K}, 307);
    grouped_matmul_backward(ctx, Tensor{}, dw3, dout, in, w, off, Accum::overwrite, Accum::overwrite);
    CHECK(bitwise_equal(dw3, dw));
    // no rows at all: zeros
    Owned none = offsets_for({0, 0, 0, 0, 0, 0});
    Owned dw4 = rand(dt, {E, N, K}, 308);
    grouped_matmul_backward(ctx, Tensor{}, dw4, dout.t.slice0(0, 0), in.t.slice0(0, 0), w, none, Accum::overwrite,
                            Accum::overwrite);
    for (double v : to_host_f64(dw4)) CHECK(v == 0.0);
  }
}

TEST_CASE("grouped_matmul gradient check", "[ops][grouped_matmul][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t E = 4, M = 7, K = 3, N = 4;
  Owned off = offsets_for({2, 0, 4, 1});
  Owned in = rand(DType::f64, {M, K}, 311), w = rand(DType::f64, {E, N, K}, 312), R = rand(DType::f64, {M, N}, 313);
  Owned out = zeros(DType::f64, {M, N}), din = zeros(DType::f64, {M, K}), dw = zeros(DType::f64, {E, N, K});
  grouped_matmul_backward(ctx, din, dw, R, in, w, off);
  auto loss = [&] {
    grouped_matmul_forward(ctx, out, in, w, off);
    return dot(out, R);
  };
  // Bilinear: the central difference is exact up to rounding; bound 1e-6.
  CHECK(run_gradcheck("grouped_matmul", {{"in", in, din}, {"weight", w, dw}}, loss) < 1e-6);
}

TEST_CASE("grouped_matmul checks shapes and offsets", "[ops][grouped_matmul][checks]") {
  const Context ctx = cpu_ctx();
  const int64_t E = 3, M = 5, K = 2, N = 3;
  Owned in = rand(DType::f32, {M, K}, 321), w = rand(DType::f32, {E, N, K}, 322), out = zeros(DType::f32, {M, N});
  Owned off = offsets_for({2, 1, 2});
  grouped_matmul_forward(ctx, out, in, w, off);
  CHECK_THROWS_AS(grouped_matmul_forward(ctx, out, in, w.t.index0(0), off), Error);           // weight not [E, N, K]
  CHECK_THROWS_AS(grouped_matmul_forward(ctx, out, in, w, offsets_for({2, 3})), Error);       // offsets not [E + 1]
  CHECK_THROWS_AS(grouped_matmul_forward(ctx, out, in, w, offsets_for({2, 1, 1})), Error);    // rows do not add up
  CHECK_THROWS_AS(grouped_matmul_forward(ctx, out, in, w, i64s({0, 3, 2, 5})), Error);                  // decreasing
  CHECK_THROWS_AS(grouped_matmul_forward(ctx, out.t.slice0(0, 4), in, w, off), Error);       // out rows
  CHECK_THROWS_AS(grouped_matmul_backward(ctx, Tensor{}, zeros(DType::f32, {E, N, K + 1}), out, in, w, off), Error);
}
