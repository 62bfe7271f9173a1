// MoE routing table, permute and weighted unpermute.
#include "helpers.h"

using namespace ds;
using namespace ds::test;

TEST_CASE("moe_route orders rows by expert, then (n, k)", "[ops][dispatch]") {
  const Context ctx = cpu_ctx();
  // N = 3 tokens, K = 2, E = 4.
  Owned idx = ints({3, 2}, {2, 0, 0, 3, 2, 0});
  Owned row_of = zeros(DType::i32, {3, 2}), offsets = zeros(DType::i64, {5}), counts = zeros(DType::i64, {4});
  fill(ctx, counts, 1);
  moe_route(ctx, row_of, offsets, counts, idx, 4);
  // expert 0: (0,1) (1,0) (2,1) -> rows 0 1 2; expert 2: (0,0) (2,0) -> rows 3 4; expert 3: (1,1) -> row 5.
  CHECK(row_of.i64() == std::vector<int64_t>{3, 0, 1, 5, 4, 2});
  CHECK(offsets.i64() == std::vector<int64_t>{0, 3, 3, 5, 6});
  CHECK(counts.i64() == std::vector<int64_t>{4, 1, 3, 2});  // += onto 1
  moe_route(ctx, row_of, offsets, Tensor{}, idx, 4);  // counts optional
  Owned bad = ints({1, 1}, {4});
  CHECK_THROWS_AS(moe_route(ctx, row_of.t.view({6, 1}).slice0(0, 1), offsets, Tensor{}, bad, 4), Error);
}

TEST_CASE("permute / unpermute round trip", "[ops][dispatch]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 5, K = 2, E = 3, D = 4;
  Owned idx = ints({N, K}, {0, 2, 1, 0, 2, 1, 0, 1, 2, 0});
  Owned row_of = zeros(DType::i32, {N, K}), offsets = zeros(DType::i64, {E + 1});
  moe_route(ctx, row_of, offsets, Tensor{}, idx, E);
  Owned in = rand(DType::f64, {N, D}, 121), perm = zeros(DType::f64, {N * K, D});
  moe_permute_forward(ctx, perm, in, row_of);
  // Every row of expert e's block is a copy of a token routed to e.
  const std::vector<int64_t> off = offsets.i64(), ro = row_of.i64(), ids = idx.i64();
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t r = ro[size_t(n * K + k)], e = ids[size_t(n * K + k)];
      CHECK((off[size_t(e)] <= r && r < off[size_t(e + 1)]));
      for (int64_t d = 0; d < D; ++d) CHECK(perm.f64()[size_t(r * D + d)] == in.f64()[size_t(n * D + d)]);
    }
  // Weights summing to 1 per token bring the tokens back unchanged.
  Owned w = from(DType::f64, {N, K}, {0.25, 0.75, 0.5, 0.5, 1, 0, 0.1, 0.9, 0.6, 0.4});
  Owned out = zeros(DType::f64, {N, D});
  moe_unpermute_forward(ctx, out, perm, row_of, w);
  CHECK(max_abs_diff(out.f64(), in.f64()) < 1e-15);
  moe_unpermute_forward(ctx, out, perm, row_of, w, Accum::add);
  std::vector<double> twice = in.f64();
  for (double& v : twice) v *= 2;
  CHECK(max_abs_diff(out.f64(), twice) < 1e-15);
}

TEST_CASE("permute and unpermute gradient checks", "[ops][dispatch][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 4, K = 2, E = 3, D = 3;
  Owned idx = ints({N, K}, {1, 0, 2, 1, 0, 2, 1, 2});
  Owned row_of = zeros(DType::i32, {N, K}), offsets = zeros(DType::i64, {E + 1});
  moe_route(ctx, row_of, offsets, Tensor{}, idx, E);

  Owned in = rand(DType::f64, {N, D}, 131), R = rand(DType::f64, {N * K, D}, 132);
  Owned perm = zeros(DType::f64, {N * K, D}), din = zeros(DType::f64, {N, D});
  moe_permute_backward(ctx, din, R, row_of);
  auto loss_p = [&] {
    moe_permute_forward(ctx, perm, in, row_of);
    return dot(perm, R);
  };
  // Linear: exact up to rounding; bound 1e-6.
  CHECK(run_gradcheck("moe_permute", {{"in", in, din}}, loss_p) < 1e-6);

  Owned eo = rand(DType::f64, {N * K, D}, 133), w = rand(DType::f64, {N, K}, 134), R2 = rand(DType::f64, {N, D}, 135);
  Owned out = zeros(DType::f64, {N, D}), deo = zeros(DType::f64, {N * K, D}), dw = zeros(DType::f64, {N, K});
  moe_unpermute_backward(ctx, deo, dw, R2, eo, row_of, w);
  auto loss_u = [&] {
    moe_unpermute_forward(ctx, out, eo, row_of, w);
    return dot(out, R2);
  };
  // Bilinear: exact up to rounding; bound 1e-6.
  CHECK(run_gradcheck("moe_unpermute", {{"expert_out", eo, deo}, {"topk_w", w, dw}}, loss_u) < 1e-6);

  Owned din2 = clone(din);
  moe_permute_backward(ctx, din2, R, row_of, Accum::add);
  std::vector<double> twice = din.f64();
  for (double& v : twice) v *= 2;
  CHECK(max_abs_diff(din2.f64(), twice) < 1e-15);
}
