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

TEST_CASE("sum_cols_repeat sums column blocks in order: the bits of the copy_cols loop", "[ops][elementwise]") {
  // The MLA use, small: the rope key's gradient summed over H heads of width dqk = dn + dr, plus an odd layout.
  // Values over several binades, so that the order of the f32 additions shows in the bits.
  const Context ctx = cpu_ctx(2);  // the 600-row case is large enough to take the OpenMP loop
  struct Case { int64_t rows, scols, scol, stride, copies, dcols, dcol, n; };
  for (const Case& k : {Case{5, 4 * 7, 4, 7, 4, 3, 0, 3}, Case{600, 16 * 12, 8, 12, 16, 4, 0, 4},
                        Case{3, 40, 3, 9, 4, 11, 2, 5}, Case{2, 6, 1, 0, 1, 4, 1, 3}}) {
    for (DType dt : {DType::f32, DType::f64}) {
      for (Accum acc : {Accum::overwrite, Accum::add}) {
        std::vector<double> sv = uniform(k.rows * k.scols, 41);
        for (size_t i = 0; i < sv.size(); ++i) sv[i] *= std::ldexp(1.0, int(i % 23) - 11);
        const Owned src = from(dt, {k.rows, k.scols}, sv);
        const Owned dst0 = rand(dt, {k.rows, k.dcols}, 42);
        Owned got = clone(dst0), loop = clone(dst0);
        sum_cols_repeat(ctx, got, k.dcol, src, k.scol, k.stride, k.copies, k.n, acc);
        for (int64_t j = 0; j < k.copies; ++j)
          copy_cols(ctx, loop, k.dcol, src, k.scol + j * k.stride, k.n, j == 0 ? acc : Accum::add);
        INFO(dtype_name(dt) << (acc == Accum::add ? " add" : " overwrite") << " rows " << k.rows << " x"
                            << k.copies);
        CHECK(bitwise_equal(got, loop));  // columns outside the block are untouched by both
      }
    }
  }
  // exact values: 2 rows, three 3-wide heads, columns 1..2 of each summed
  Owned heads = from(DType::f32, {2, 9}, {9, 1, 2, 9, 10, 20, 9, 100, 200, 9, 3, 4, 9, 30, 40, 9, 300, 400});
  Owned k = from(DType::f32, {2, 2}, {-1, -1, -1, -1});
  sum_cols_repeat(ctx, k, 0, heads, 1, 3, 3, 2);
  CHECK(k.f64() == std::vector<double>{111, 222, 333, 444});
  sum_cols_repeat(ctx, k, 0, heads, 1, 3, 3, 2, Accum::add);
  CHECK(k.f64() == std::vector<double>{222, 444, 666, 888});
  // block 0 starts the sum: a lone -0 stays -0, as copy_cols would leave it
  Owned nz = from(DType::f32, {1, 1}, {-0.0}), out = from(DType::f32, {1, 1}, {1.0});
  sum_cols_repeat(ctx, out, 0, nz, 0, 1, 1, 1);
  CHECK(std::signbit(out.p<float>()[0]));
  CHECK_THROWS_AS(sum_cols_repeat(ctx, k, 0, heads, 1, 1, 3, 2), Error);  // blocks would overlap
  CHECK_THROWS_AS(sum_cols_repeat(ctx, k, 0, heads, 2, 3, 3, 2), Error);  // the last block runs past column 8
  CHECK_THROWS_AS(sum_cols_repeat(ctx, k, 1, heads, 1, 3, 3, 2), Error);  // dst has 2 columns
  CHECK_THROWS_AS(sum_cols_repeat(ctx, k, 0, heads, 1, 3, 0, 2), Error);  // no copies
  Owned k64 = zeros(DType::f64, {2, 2}), k3 = zeros(DType::f32, {3, 2});
  CHECK_THROWS_AS(sum_cols_repeat(ctx, k64, 0, heads, 1, 3, 3, 2), Error);  // dtypes differ
  CHECK_THROWS_AS(sum_cols_repeat(ctx, k3, 0, heads, 1, 3, 3, 2), Error);   // rows differ
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

TEST_CASE("sum_squares_into: sum_squares_each's values into a f64 tensor; a wrong out is bad input",
          "[ops][elementwise]") {
  const Context ctx = cpu_ctx();
  Owned a = from(DType::f32, {2, 2}, {1, -2, 3, 4}), b = rand(DType::bf16, {1000}, 9), out = zeros(DType::f64, {3});
  sum_squares_into(ctx, out, {a, b, a});
  const std::vector<double> r = sum_squares_each(ctx, {a, b, a});
  CHECK(out.f64() == r);
  Owned short_out = zeros(DType::f64, {2}), f32_out = zeros(DType::f32, {3});
  CHECK_THROWS_WITH(sum_squares_into(ctx, short_out, {a, b, a}), Catch::Contains("one element a tensor"));
  CHECK_THROWS_WITH(sum_squares_into(ctx, f32_out, {a, b, a}), Catch::Contains("must be f64"));
  sum_squares_into(ctx, Tensor(), {});  // nothing to sum: nothing written
}

TEST_CASE("sum_into: sum's value into an f64 [1] tensor; a wrong out is bad input", "[ops][elementwise]") {
  const Context ctx = cpu_ctx();
  Owned a = rand(DType::f32, {1000, 3}, 11), b = rand(DType::f64, {7}, 12), out = zeros(DType::f64, {3});
  sum_into(ctx, out.t.slice0(1, 2), a);
  sum_into(ctx, out.t.slice0(2, 3), b);
  CHECK(out.f64()[0] == 0.0);  // untouched
  CHECK(out.f64()[1] == sum(ctx, a));
  CHECK(out.f64()[2] == sum(ctx, b));
  Owned f32_out = zeros(DType::f32, {1});
  CHECK_THROWS_WITH(sum_into(ctx, out, a), Catch::Contains("must be f64 [1]"));
  CHECK_THROWS_WITH(sum_into(ctx, f32_out, a), Catch::Contains("must be f64 [1]"));
  CHECK_THROWS_WITH(sum_into(ctx, Tensor(), a), Catch::Contains("out is required"));
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

TEST_CASE("swiglu_pair gradient check", "[ops][swiglu][gradcheck]") {
  const Context ctx = cpu_ctx();
  Owned gu = rand(DType::f64, {3, 14}, 4, -3, 3), R = rand(DType::f64, {3, 7}, 5);
  Owned out = zeros(DType::f64, {3, 7}), d_gu = zeros(DType::f64, {3, 14});
  swiglu_pair_backward(ctx, d_gu, R, gu);
  auto loss = [&] {
    swiglu_pair_forward(ctx, out, gu);
    return dot(out, R);
  };
  CHECK(run_gradcheck("swiglu_pair", {{"gate_up", gu, d_gu}}, loss) < 1e-6);
}
