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

// The training MLA's column-block ropes: q's rope columns in place, the rope key out of / its gradient into kv_a.
TEST_CASE("rope_cols forward and backward = copy_cols / rope / copy_cols", "[ops][rope]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 3, H = 2, W = 10, Wo = 7, R = 4, col = 5, ocol = 1;
  std::vector<double> f;
  for (int i = 0; i < R / 2; ++i) f.push_back(std::pow(10000.0, -2.0 * i / double(R)));
  for (DType dt : {DType::f32, DType::f64}) {
    Owned freq = from(dt, {R / 2}, f), pos = ints({N}, {0, 9, 300});
    auto rows = [&](const Owned& t, int64_t w) { return t.t.view({N * H, w}); };
    // the sequence the block ops replace: raw = x[cols], rot = rope(raw), y[cols] (=|+=) rot
    auto sequence = [&](const Owned& y, int64_t ycol, int64_t yw, const Owned& x, int64_t xcol, int64_t xw,
                        bool backward, Accum acc) {
      Owned raw = zeros(dt, {N, H, R}), rot = zeros(dt, {N, H, R});
      copy_cols(ctx, rows(raw, R), 0, rows(x, xw), xcol, R);
      if (backward)
        rope_backward(ctx, rot, raw, pos, freq, 1.3);
      else
        rope_forward(ctx, rot, raw, pos, freq, 1.3);
      copy_cols(ctx, rows(y, yw), ycol, rows(rot, R), 0, R, acc);
    };
    Owned x = rand(dt, {N, H, W}, 61), y = rand(dt, {N, H, Wo}, 62), ref = clone(y);
    rope_cols_forward(ctx, y, ocol, x, col, pos, freq, 1.3);
    sequence(ref, ocol, Wo, x, col, W, false, Accum::overwrite);
    CHECK(bitwise_equal(y, ref));
    for (Accum acc : {Accum::overwrite, Accum::add}) {
      Owned d = rand(dt, {N, H, Wo}, 63), dref = clone(d);
      rope_cols_backward(ctx, d, ocol, x, col, pos, freq, 1.3, acc);
      sequence(dref, ocol, Wo, x, col, W, true, acc);
      CHECK(bitwise_equal(d, dref));
    }
    // in place: the rope columns of each head of x, the other columns untouched
    Owned inplace = clone(x), iref = clone(x);
    rope_cols_forward(ctx, inplace, col, inplace, col, pos, freq, 1.3);
    sequence(iref, col, W, x, col, W, false, Accum::overwrite);
    CHECK(bitwise_equal(inplace, iref));
    rope_cols_backward(ctx, inplace, col, inplace, col, pos, freq, 1.3);
    sequence(iref, col, W, clone(iref), col, W, true, Accum::overwrite);
    CHECK(bitwise_equal(inplace, iref));
  }
  // H = 1 views of a [N, Rkv + dr] matrix (kv_a's rope key) and aliasing / range checks
  Owned kv = rand(DType::f64, {N, 1, 9}, 64), kpe = zeros(DType::f64, {N, 1, R}), freq = from(DType::f64, {R / 2}, f);
  Owned pos = ints({N}, {1, 2, 3});
  rope_cols_forward(ctx, kpe, 0, kv, 5, pos, freq, 1.0);
  Owned kref = zeros(DType::f64, {N, 1, R});
  copy_cols(ctx, kref.t.view({N, R}), 0, kv.t.view({N, 9}), 5, R);
  rope_forward(ctx, kref, kref, pos, freq, 1.0);
  CHECK(bitwise_equal(kpe, kref));
  CHECK_THROWS_AS(rope_cols_forward(ctx, kv, 4, kv, 5, pos, freq, 1.0), Error);      // aliasing, other columns
  CHECK_THROWS_AS(rope_cols_backward(ctx, kv, 5, kv, 4, pos, freq, 1.0), Error);     // the same for the backward
  CHECK_THROWS_AS(rope_cols_backward(ctx, kv, 6, kpe, 0, pos, freq, 1.0), Error);    // 6 + 4 > 9
  CHECK_THROWS_AS(rope_cols_backward(ctx, kv, 0, kpe, 0, ints({2}, {0, 1}), freq, 1.0), Error);  // N != pos
}

TEST_CASE("rope_cols gradient check", "[ops][rope][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 3, H = 2, W = 11, Wo = 9, R = 6, col = 4, ocol = 2;
  std::vector<double> f;
  for (int i = 0; i < R / 2; ++i) f.push_back(std::pow(10000.0, -2.0 * i / double(R)));
  Owned freq = from(DType::f64, {R / 2}, f), pos = ints({N}, {0, 5, 17});
  Owned x = rand(DType::f64, {N, H, W}, 65), Rm = rand(DType::f64, {N, H, Wo}, 66);
  Owned out = zeros(DType::f64, {N, H, Wo}), dx = zeros(DType::f64, {N, H, W});
  const double af = 1.3;
  rope_cols_backward(ctx, dx, col, Rm, ocol, pos, freq, af);  // the columns outside the block keep gradient 0
  auto loss = [&] {
    rope_cols_forward(ctx, out, ocol, x, col, pos, freq, af);
    return dot(out, Rm);  // out's other columns stay 0: no dependence on x
  };
  CHECK(run_gradcheck("rope_cols", {{"in", x, dx}}, loss) < 1e-6);
}

// The training MLA's latent norm read from / its gradient written into the first columns of kv_a.
TEST_CASE("rmsnorm_cols forward and backward = copy_cols / rmsnorm / copy_cols", "[ops][rmsnorm]") {
  const Context ctx = cpu_ctx(2);
  const int64_t rows = 5, D = 8, W = 13, col = 3, Wd = 11, dcol = 2;
  for (DType dt : {DType::f32, DType::f64}) {
    Owned x = rand(dt, {rows, W}, 71), w = rand(dt, {D}, 72, 0.5, 1.5), dy = rand(dt, {rows, D}, 73);
    Owned out = zeros(dt, {rows, D}), rstd = zeros(dt, {rows}), raw = zeros(dt, {rows, D});
    Owned ref = zeros(dt, {rows, D}), ref_rstd = zeros(dt, {rows});
    rmsnorm_cols_forward(ctx, out, rstd, x, col, w, 1e-6);
    copy_cols(ctx, raw, 0, x, col, D);
    rmsnorm_forward(ctx, ref, ref_rstd, raw, w, 1e-6);
    CHECK(bitwise_equal(out, ref));
    CHECK(bitwise_equal(rstd, ref_rstd));
    for (Accum acc : {Accum::overwrite, Accum::add}) {
      Owned dx = rand(dt, {rows, Wd}, 74), dx_ref = clone(dx), dw = rand(dt, {D}, 75), dw_ref = clone(dw);
      Owned d_raw = zeros(dt, {rows, D});
      rmsnorm_cols_backward(ctx, dx, dcol, dw, dy, x, col, w, rstd, acc);
      rmsnorm_backward(ctx, d_raw, dw_ref, dy, raw, w, rstd);
      copy_cols(ctx, dx_ref, dcol, d_raw, 0, D, acc);
      CHECK(bitwise_equal(dx, dx_ref));  // the columns outside the block untouched
      CHECK(bitwise_equal(dw, dw_ref));
    }
    Owned dw = zeros(dt, {D}), dw_ref = zeros(dt, {D});  // d_in may be empty
    rmsnorm_cols_backward(ctx, Tensor{}, 0, dw, dy, x, col, w, rstd);
    rmsnorm_backward(ctx, Tensor{}, dw_ref, dy, raw, w, rstd);
    CHECK(bitwise_equal(dw, dw_ref));
  }
  Owned x = rand(DType::f64, {rows, W}, 71), w = rand(DType::f64, {D}, 72), out = zeros(DType::f64, {rows, D});
  Owned rstd = zeros(DType::f64, {rows}), dx = zeros(DType::f64, {rows, 9});
  CHECK_THROWS_AS(rmsnorm_cols_forward(ctx, out, rstd, x, 6, w, 1e-6), Error);                  // 6 + 8 > 13
  CHECK_THROWS_AS(rmsnorm_cols_forward(ctx, out, rstd, x.t.view({rows * W}), 0, w, 1e-6), Error);  // rows differ
  CHECK_THROWS_AS(rmsnorm_cols_backward(ctx, dx, 2, Tensor{}, out, x, 0, w, rstd), Error);        // 2 + 8 > 9
  CHECK_THROWS_AS(rmsnorm_cols_backward(ctx, x, 0, Tensor{}, out, x, 0, w, rstd), Error);         // d_in aliases in
}

TEST_CASE("rmsnorm_cols gradient check", "[ops][rmsnorm][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t rows = 4, D = 6, W = 10, col = 3;
  Owned x = rand(DType::f64, {rows, W}, 76), w = rand(DType::f64, {D}, 77, 0.5, 1.5);
  Owned R = rand(DType::f64, {rows, D}, 78);
  Owned out = zeros(DType::f64, {rows, D}), rstd = zeros(DType::f64, {rows});
  Owned dx = zeros(DType::f64, {rows, W}), dw = zeros(DType::f64, {D});
  rmsnorm_cols_forward(ctx, out, rstd, x, col, w, 1e-6);
  rmsnorm_cols_backward(ctx, dx, col, dw, R, x, col, w, rstd);  // columns outside the block keep gradient 0
  auto loss = [&] {
    rmsnorm_cols_forward(ctx, out, rstd, x, col, w, 1e-6);
    return dot(out, R);
  };
  CHECK(run_gradcheck("rmsnorm_cols", {{"in", x, dx}, {"weight", w, dw}}, loss) < 1e-6);
}
