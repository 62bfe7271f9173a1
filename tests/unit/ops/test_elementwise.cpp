// Elementwise ops, conversions, column copies, reductions and SwiGLU.
#include <limits>

#include "helpers.h"

using namespace ds;
using namespace ds::test;

TEST_CASE("fill, scale, axpy, add", "[ops][elementwise]") {
  const Context ctx = cpu_ctx();
  for (DType dt : {DType::f32, DType::f64}) {
    Owned y = zeros(dt, {2, 3}), x = from(dt, {2, 3}, {1, 2, 3, 4, 5, 6});
    fill(ctx, y, 2.0);
    CHECK(y.f64() == std::vector<double>{2, 2, 2, 2, 2, 2});
    axpy(ctx, y, 0.5, x);
    CHECK(y.f64() == std::vector<double>{2.5, 3, 3.5, 4, 4.5, 5});
    scale(ctx, y, 2.0);
    CHECK(y.f64() == std::vector<double>{5, 6, 7, 8, 9, 10});
    add(ctx, y, y, x);  // out aliases a
    CHECK(y.f64() == std::vector<double>{6, 8, 10, 12, 14, 16});
  }
  Owned i = zeros(DType::i64, {3});
  fill(ctx, i, 7);
  CHECK(i.i64() == std::vector<int64_t>{7, 7, 7});
}

TEST_CASE("copy converts f32, f64 and bf16", "[ops][elementwise]") {
  const Context ctx = cpu_ctx();
  Owned d = from(DType::f64, {4}, {1.0, -2.5, 1.0 / 3.0, 65504.0});
  Owned f = zeros(DType::f32, {4}), b = zeros(DType::bf16, {4}), d2 = zeros(DType::f64, {2, 2});
  copy(ctx, f, d);
  CHECK(f.p<float>()[2] == float(1.0 / 3.0));
  copy(ctx, b, f);
  for (int i = 0; i < 4; ++i) CHECK(b.p<bf16>()[i].bits == f32_to_bf16(f.p<float>()[i]).bits);
  copy(ctx, d2, b);  // bf16 -> f64, any shape with the same numel
  CHECK(d2.f64()[0] == 1.0);
  CHECK(d2.f64()[1] == -2.5);
  CHECK(d2.f64()[2] == double(bf16_to_f32(f32_to_bf16(float(1.0 / 3.0)))));
  Owned same = zeros(DType::f64, {4});
  copy(ctx, same, d);
  CHECK(same.f64() == d.f64());
}

TEST_CASE("copy_cols splits and concatenates along the last dim", "[ops][elementwise]") {
  const Context ctx = cpu_ctx();
  Owned q = from(DType::f32, {2, 5}, {0, 1, 2, 3, 4, 10, 11, 12, 13, 14});
  Owned a = zeros(DType::f32, {2, 3}), b = zeros(DType::f32, {2, 2});
  copy_cols(ctx, a, 0, q, 0, 3);
  copy_cols(ctx, b, 0, q, 3, 2);
  CHECK(a.f64() == std::vector<double>{0, 1, 2, 10, 11, 12});
  CHECK(b.f64() == std::vector<double>{3, 4, 13, 14});
  Owned back = zeros(DType::f32, {2, 5});
  copy_cols(ctx, back, 0, a, 0, 3);
  copy_cols(ctx, back, 3, b, 0, 2);
  CHECK(back.f64() == q.f64());
  copy_cols(ctx, back, 3, b, 0, 2, Accum::add);
  CHECK(back.f64() == std::vector<double>{0, 1, 2, 6, 8, 10, 11, 12, 26, 28});
  Owned idx = zeros(DType::i32, {2, 1}), src = ints({2, 2}, {5, 6, 7, 8});
  copy_cols(ctx, idx, 0, src, 1, 1);  // overwrite works for any dtype
  CHECK(idx.i64() == std::vector<int64_t>{6, 8});
}

TEST_CASE("copy_cols_repeat puts one column block into several places of each row", "[ops][elementwise]") {
  const Context ctx = cpu_ctx();
  Owned k = from(DType::f32, {2, 2}, {1, 2, 3, 4});
  Owned heads = from(DType::f32, {2, 9}, {9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9});
  copy_cols_repeat(ctx, heads, 1, 3, 3, k, 0, 2);  // three 3-wide heads, the key in columns 1..2 of each
  CHECK(heads.f64() == std::vector<double>{9, 1, 2, 9, 1, 2, 9, 1, 2, 9, 3, 4, 9, 3, 4, 9, 3, 4});
  CHECK_THROWS_AS(copy_cols_repeat(ctx, heads, 1, 1, 3, k, 0, 2), Error);  // copies would overlap
  CHECK_THROWS_AS(copy_cols_repeat(ctx, heads, 2, 3, 3, k, 0, 2), Error);  // the last copy runs past column 8
}

TEST_CASE("sum and sum_squares", "[ops][elementwise]") {
  const Context ctx = cpu_ctx();
  Owned t = from(DType::f32, {2, 2}, {1, -2, 3, 4});
  CHECK(sum(ctx, t) == 6.0);
  CHECK(sum_squares(ctx, t) == 30.0);
  // Many chunks: compare with a plain double sum.
  Owned big = rand(DType::f64, {100003}, 7);
  double ref = 0, ref2 = 0;
  for (double x : big.f64()) {
    ref += x;
    ref2 += x * x;
  }
  CHECK(std::abs(sum(ctx, big) - ref) < 1e-9);
  CHECK(std::abs(sum_squares(ctx, big) - ref2) < 1e-9);
}

TEST_CASE("sum_squares_each: each tensor's sum_squares, in order (the gradient norm)", "[ops][elementwise]") {
  const Context ctx = cpu_ctx();
  Owned a = from(DType::f32, {2, 2}, {1, -2, 3, 4}), b = rand(DType::f64, {100003}, 8), c = from(DType::f64, {1}, {-3});
  const Tensor empty(a.t.data, DType::f32, {0});  // no elements: 0
  const std::vector<double> r = sum_squares_each(ctx, {a, empty, b, c, a});
  REQUIRE(r.size() == 5);
  CHECK(r[0] == 30.0);
  CHECK(r[1] == 0.0);
  CHECK(r[2] == sum_squares(ctx, b));
  CHECK(r[3] == 9.0);
  CHECK(r[4] == 30.0);
  CHECK(sum_squares_each(ctx, {}).empty());
}

TEST_CASE("swiglu forward by hand", "[ops][swiglu]") {
  const Context ctx = cpu_ctx();
  Owned g = from(DType::f64, {3}, {0.0, 1.0, -2.0}), u = from(DType::f64, {3}, {5.0, 2.0, 3.0});
  Owned out = zeros(DType::f64, {3});
  swiglu_forward(ctx, out, g, u);
  const std::vector<double> o = out.f64();
  CHECK(o[0] == 0.0);
  CHECK(std::abs(o[1] - 2.0 / (1 + std::exp(-1.0))) < 1e-15);
  CHECK(std::abs(o[2] - 3.0 * -2.0 / (1 + std::exp(2.0))) < 1e-15);
}

TEST_CASE("swiglu gradient check", "[ops][swiglu][gradcheck]") {
  const Context ctx = cpu_ctx();
  Owned g = rand(DType::f64, {3, 7}, 1, -3, 3), u = rand(DType::f64, {3, 7}, 2), R = rand(DType::f64, {3, 7}, 3);
  Owned out = zeros(DType::f64, {3, 7}), dg = zeros(DType::f64, {3, 7}), du = zeros(DType::f64, {3, 7});
  swiglu_backward(ctx, dg, du, R, g, u);
  auto loss = [&] {
    swiglu_forward(ctx, out, g, u);
    return dot(out, R);
  };
  // Smooth elementwise op: central differences agree to ~1e-10; bound 1e-6.
  CHECK(run_gradcheck("swiglu", {{"gate", g, dg}, {"up", u, du}}, loss) < 1e-6);
}
