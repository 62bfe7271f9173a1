// Embedding and linear layers.
#include "helpers.h"

using namespace ds;
using namespace ds::test;

TEST_CASE("embedding forward gathers rows, backward scatters with repeats", "[ops][embedding]") {
  const Context ctx = cpu_ctx();
  Owned table = from(DType::f32, {3, 2}, {0, 1, 10, 11, 20, 21});
  Owned ids = ints({4}, {2, 0, 2, 1});
  Owned out = zeros(DType::f32, {4, 2});
  embedding_forward(ctx, out, ids, table);
  CHECK(out.f64() == std::vector<double>{20, 21, 0, 1, 20, 21, 10, 11});
  Owned dt = from(DType::f32, {3, 2}, {1, 1, 1, 1, 1, 1});  // accumulates
  Owned dout = from(DType::f32, {4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  embedding_backward(ctx, dt, dout, ids);
  CHECK(dt.f64() == std::vector<double>{4, 5, 8, 9, 7, 9});
  Owned bad = ints({1}, {3});
  CHECK_THROWS_AS(embedding_forward(ctx, out.t.slice0(0, 1), bad, table), Error);
}

TEST_CASE("embedding gradient check", "[ops][embedding][gradcheck]") {
  const Context ctx = cpu_ctx();
  Owned table = rand(DType::f64, {6, 4}, 11), ids = ints({5}, {3, 1, 3, 5, 0});
  Owned R = rand(DType::f64, {5, 4}, 12), out = zeros(DType::f64, {5, 4}), dt = zeros(DType::f64, {6, 4});
  embedding_backward(ctx, dt, R, ids);
  auto loss = [&] {
    embedding_forward(ctx, out, ids, table);
    return dot(out, R);
  };
  // Linear in the table: exact up to rounding; bound 1e-6.
  CHECK(run_gradcheck("embedding", {{"table", table, dt}}, loss) < 1e-6);
}

TEST_CASE("matmul forward by hand, with accumulation", "[ops][matmul]") {
  const Context ctx = cpu_ctx();
  for (DType dt : {DType::f32, DType::f64}) {
    Owned in = from(dt, {2, 2}, {1, 2, 3, 4});
    Owned w = from(dt, {3, 2}, {1, 0, 0, 1, 1, 1});  // [N, K]: out = in · W^T
    Owned out = zeros(dt, {2, 3});
    matmul_forward(ctx, out, in, w);
    CHECK(out.f64() == std::vector<double>{1, 2, 3, 3, 4, 7});
    matmul_forward(ctx, out, in, w, Accum::add);
    CHECK(out.f64() == std::vector<double>{2, 4, 6, 6, 8, 14});
    // in of any rank: [1, 2, 2] is M = 2 rows.
    matmul_forward(ctx, out, in.t.view({1, 2, 2}), w);
    CHECK(out.f64() == std::vector<double>{1, 2, 3, 3, 4, 7});
  }
}

TEST_CASE("matmul gradient check (d_in overwrite and add, d_weight accumulates)", "[ops][matmul][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t M = 5, K = 4, N = 3;
  Owned in = rand(DType::f64, {M, K}, 21), w = rand(DType::f64, {N, K}, 22), R = rand(DType::f64, {M, N}, 23);
  Owned out = zeros(DType::f64, {M, N}), din = zeros(DType::f64, {M, K}), dw = zeros(DType::f64, {N, K});
  matmul_backward(ctx, din, dw, R, in, w);
  auto loss = [&] {
    matmul_forward(ctx, out, in, w);
    return dot(out, R);
  };
  // Bilinear: the central difference is exact up to rounding (~1e-11); bound 1e-6.
  CHECK(run_gradcheck("matmul", {{"in", in, din}, {"weight", w, dw}}, loss) < 1e-6);

  // Accumulation rules: d_weight +=, d_in += only with Accum::add.
  Owned din2 = clone(din), dw2 = clone(dw);
  matmul_backward(ctx, din2, dw2, R, in, w, Accum::add);
  CHECK(max_abs_diff(din2.f64(), [&] { auto v = din.f64(); for (double& x : v) x *= 2; return v; }()) < 1e-14);
  CHECK(max_abs_diff(dw2.f64(), [&] { auto v = dw.f64(); for (double& x : v) x *= 2; return v; }()) < 1e-14);
  Owned din3 = clone(din);
  matmul_backward(ctx, din3, Tensor{}, R, in, w);  // overwrite, no d_weight
  CHECK(max_abs_diff(din3.f64(), din.f64()) == 0.0);
}

TEST_CASE("matmul f32 agrees with f64", "[ops][matmul][precision]") {
  const Context ctx = cpu_ctx();
  Owned in = rand(DType::f64, {7, 33}, 31), w = rand(DType::f64, {9, 33}, 32);
  Owned o64 = zeros(DType::f64, {7, 9}), o32 = zeros(DType::f32, {7, 9});
  matmul_forward(ctx, o64, in, w);
  matmul_forward(ctx, o32, as(DType::f32, in), as(DType::f32, w));
  CHECK(max_rel_diff(o32.f64(), o64.f64()) < 1e-5);
}

TEST_CASE("matmul_heads_forward equals one matmul per head on column blocks", "[ops][matmul][heads]") {
  // the absorbed-MLA folds: in [M, H, Kin] (first k of each head), weight [H, Wr, k] rows row0.., out [M, H, Nout]
  const Context ctx = cpu_ctx();
  const int64_t M = 3, H = 4, Kin = 7, k = 5, Wr = 9, n = 4, row0 = 3, Nout = 6;
  for (DType dt : {DType::f32, DType::f64}) {
    Owned in = rand(dt, {M, H, Kin}, 21), w = rand(dt, {H, Wr, k}, 22), out = zeros(dt, {M, H, Nout});
    fill(ctx, out, 0.5);  // columns past n stay
    matmul_heads_forward(ctx, out, in, w, k, n, row0);
    std::vector<double> want(size_t(M * H * Nout), 0.5);
    Owned ih = zeros(dt, {M, k}), oh = zeros(dt, {M, n});
    for (int64_t h = 0; h < H; ++h) {
      copy_cols(ctx, ih.t, 0, in.t.view({M, H * Kin}), h * Kin, k);
      matmul_forward(ctx, oh, ih, w.t.index0(h).slice0(row0, row0 + n));
      const std::vector<double> o = oh.f64();
      for (int64_t m = 0; m < M; ++m)
        for (int64_t j = 0; j < n; ++j) want[size_t((m * H + h) * Nout + j)] = o[size_t(m * n + j)];
    }
    const std::vector<double> got = out.f64();
    double d = 0;
    for (size_t i = 0; i < got.size(); ++i) d = std::max(d, std::fabs(got[i] - want[i]));
    CHECK(d <= (dt == DType::f32 ? 1e-6 : 1e-14));
  }
  Owned in = rand(DType::f32, {M, H, Kin}, 23), w = rand(DType::f32, {H, Wr, k}, 24), out = zeros(DType::f32, {M, H, Nout});
  CHECK_THROWS_AS(matmul_heads_forward(ctx, out, in, w, k, n, Wr - n + 1), Error);  // rows past the weight
  CHECK_THROWS_AS(matmul_heads_forward(ctx, out, in, w, k, Nout + 1, 0), Error);    // n wider than out
}

TEST_CASE("sample_tokens is CUDA only", "[ops][sampling]") {
  const Context ctx = cpu_ctx();
  Owned logits = rand(DType::f32, {2, 5}, 25), tok = ints({2}, {0, 0}), lp = zeros(DType::f64, {2}),
        prm = zeros(DType::f64, {2, 4});
  CHECK_THROWS_AS(sample_tokens(ctx, tok, lp, logits, prm), Error);
}
