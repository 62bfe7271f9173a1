// RMSNorm and rotary embedding.
#include <numbers>

#include "helpers.h"

using namespace ds;
using namespace ds::test;

TEST_CASE("rmsnorm forward by hand", "[ops][rmsnorm]") {
  const Context ctx = cpu_ctx();
  for (DType dt : {DType::f32, DType::f64}) {
    Owned x = from(dt, {2, 2}, {3, 4, 0, 1}), w = from(dt, {2}, {1, 2});
    Owned out = zeros(dt, {2, 2}), rstd = zeros(dt, {2});
    rmsnorm_forward(ctx, out, rstd, x, w, 0.0);
    const double r0 = 1 / std::sqrt(12.5), r1 = 1 / std::sqrt(0.5);
    const double tol = dt == DType::f32 ? 1e-6 : 1e-15;
    CHECK(max_abs_diff(rstd.f64(), {r0, r1}) < tol);
    CHECK(max_abs_diff(out.f64(), {3 * r0, 8 * r0, 0, 2 * r1}) < tol);
  }
  // eps enters inside the square root.
  const Context c = cpu_ctx();
  Owned x = from(DType::f64, {1, 1}, {1}), w = from(DType::f64, {1}, {1}), out = zeros(DType::f64, {1, 1});
  rmsnorm_forward(c, out, Tensor{}, x, w, 3.0);  // rstd may be omitted (inference)
  CHECK(std::abs(out.f64()[0] - 0.5) < 1e-15);
}

TEST_CASE("rmsnorm gradient check", "[ops][rmsnorm][gradcheck]") {
  const Context ctx = cpu_ctx();
  Owned x = rand(DType::f64, {4, 8}, 41), w = rand(DType::f64, {8}, 42, 0.5, 1.5), R = rand(DType::f64, {4, 8}, 43);
  Owned out = zeros(DType::f64, {4, 8}), rstd = zeros(DType::f64, {4});
  Owned dx = zeros(DType::f64, {4, 8}), dw = zeros(DType::f64, {8});
  rmsnorm_forward(ctx, out, rstd, x, w, 1e-6);
  rmsnorm_backward(ctx, dx, dw, R, x, w, rstd);
  auto loss = [&] {
    rmsnorm_forward(ctx, out, rstd, x, w, 1e-6);
    return dot(out, R);
  };
  // Smooth; measured ~1e-9 relative, bound 1e-6.
  CHECK(run_gradcheck("rmsnorm", {{"in", x, dx}, {"weight", w, dw}}, loss) < 1e-6);
  // Accum::add on d_in adds; d_weight always accumulates.
  Owned dx2 = clone(dx), dw2 = clone(dw);
  rmsnorm_forward(ctx, out, rstd, x, w, 1e-6);
  rmsnorm_backward(ctx, dx2, dw2, R, x, w, rstd, Accum::add);
  std::vector<double> twice = dx.f64(), twice_w = dw.f64();
  for (double& v : twice) v *= 2;
  for (double& v : twice_w) v *= 2;
  CHECK(max_abs_diff(dx2.f64(), twice) < 1e-14);
  CHECK(max_abs_diff(dw2.f64(), twice_w) < 1e-14);
}

TEST_CASE("rmsnorm f32 agrees with f64", "[ops][rmsnorm][precision]") {
  const Context ctx = cpu_ctx();
  Owned x = rand(DType::f64, {5, 64}, 44), w = rand(DType::f64, {64}, 45), R = rand(DType::f64, {5, 64}, 46);
  Owned o64 = zeros(DType::f64, {5, 64}), r64 = zeros(DType::f64, {5}), d64 = zeros(DType::f64, {5, 64});
  Owned o32 = zeros(DType::f32, {5, 64}), r32 = zeros(DType::f32, {5}), d32 = zeros(DType::f32, {5, 64});
  Owned dw64 = zeros(DType::f64, {64}), dw32 = zeros(DType::f32, {64});
  Owned x32 = as(DType::f32, x), w32 = as(DType::f32, w), R32 = as(DType::f32, R);
  rmsnorm_forward(ctx, o64, r64, x, w, 1e-6);
  rmsnorm_forward(ctx, o32, r32, x32, w32, 1e-6);
  rmsnorm_backward(ctx, d64, dw64, R, x, w, r64);
  rmsnorm_backward(ctx, d32, dw32, R32, x32, w32, r32);
  CHECK(max_rel_diff(o32.f64(), o64.f64()) < 1e-5);
  CHECK(max_rel_diff(d32.f64(), d64.f64()) < 1e-5);
  CHECK(max_rel_diff(dw32.f64(), dw64.f64()) < 1e-5);
}

TEST_CASE("rope rotates interleaved pairs", "[ops][rope]") {
  const Context ctx = cpu_ctx();
  const double pi = std::numbers::pi;
  // One token, one head, R = 4: pair 0 turns by pos * pi/2, pair 1 by pos * pi.
  Owned x = from(DType::f64, {1, 1, 4}, {1, 0, 1, 0}), freq = from(DType::f64, {2}, {pi / 2, pi});
  Owned out = zeros(DType::f64, {1, 1, 4});
  rope_forward(ctx, out, x, ints({1}, {1}), freq, 1.0);
  CHECK(max_abs_diff(out.f64(), {0, 1, -1, 0}) < 1e-15);
  rope_forward(ctx, out, x, ints({1}, {0}), freq, 2.0);  // position 0: identity times attn_factor
  CHECK(max_abs_diff(out.f64(), {2, 0, 2, 0}) < 1e-15);
  // Two tokens, two heads share the token's angle; in place (out aliases in).
  Owned y = from(DType::f64, {2, 2, 2}, {1, 0, 0, 1, 1, 0, 0, 1});
  rope_forward(ctx, y, y, ints({2}, {0, 1}), from(DType::f64, {1}, {pi / 2}), 1.0);
  CHECK(max_abs_diff(y.f64(), {1, 0, 0, 1, 0, 1, -1, 0}) < 1e-15);
}

TEST_CASE("rope gradient check and transpose", "[ops][rope][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 3, H = 2, R = 8;
  std::vector<double> f;
  for (int i = 0; i < R / 2; ++i) f.push_back(std::pow(10000.0, -2.0 * i / double(R)));
  Owned freq = from(DType::f64, {R / 2}, f), pos = ints({N}, {0, 5, 17});
  Owned x = rand(DType::f64, {N, H, R}, 51), Rm = rand(DType::f64, {N, H, R}, 52);
  Owned out = zeros(DType::f64, {N, H, R}), dx = zeros(DType::f64, {N, H, R});
  const double af = 1.3;
  rope_backward(ctx, dx, Rm, pos, freq, af);
  auto loss = [&] {
    rope_forward(ctx, out, x, pos, freq, af);
    return dot(out, Rm);
  };
  // Linear in x: exact up to rounding; bound 1e-6.
  CHECK(run_gradcheck("rope", {{"in", x, dx}}, loss) < 1e-6);
  Owned dx2 = clone(dx);
  rope_backward(ctx, dx2, Rm, pos, freq, af, Accum::add);
  std::vector<double> twice = dx.f64();
  for (double& v : twice) v *= 2;
  CHECK(max_abs_diff(dx2.f64(), twice) < 1e-14);
}

TEST_CASE("rope f32 agrees with f64", "[ops][rope][precision]") {
  const Context ctx = cpu_ctx();
  Owned x = rand(DType::f64, {4, 3, 16}, 53), freq = rand(DType::f64, {8}, 54, 0.0, 1.0);
  Owned pos = ints({4}, {0, 1, 100, 4000});
  Owned o64 = zeros(DType::f64, {4, 3, 16}), o32 = zeros(DType::f32, {4, 3, 16});
  rope_forward(ctx, o64, x, pos, freq, 1.0);
  // f32 inv_freq is rounded, so the angle at pos 4000 differs by up to pos * ulp(freq); compare with that freq.
  Owned freq32 = as(DType::f32, freq);
  Owned o64b = zeros(DType::f64, {4, 3, 16});
  rope_forward(ctx, o64b, x, pos, as(DType::f64, freq32), 1.0);
  rope_forward(ctx, o32, as(DType::f32, x), pos, freq32, 1.0);
  CHECK(max_rel_diff(o32.f64(), o64b.f64()) < 1e-6);
}
