// The decode fusions (ops.h) against the op sequences they replace: the same values bit for bit on the CPU, by
// hand where the math is short, and their argument checks.
#include <cmath>

#include "helpers.h"

using namespace ds;
using namespace ds::test;

namespace {
Owned inv_freq(int64_t R) {
  std::vector<double> v;
  for (int64_t i = 0; i < R / 2; ++i) v.push_back(std::pow(10000.0, -2.0 * double(i) / double(R)));
  return from(DType::f64, {R / 2}, v);
}
// The offsets [5] of 5 tokens routed top-2 over 4 experts (moe_route), for the grouped-GEMM fusions' cases.
Owned route_5x2_over_4(const Context& ctx) {
  Owned idx = ints({5, 2}, {0, 2, 1, 0, 2, 3, 0, 1, 3, 3});
  Owned row_of = zeros(DType::i32, {5, 2}), offsets = zeros(DType::i64, {5});
  moe_route(ctx, row_of, offsets, Tensor{}, idx, 4);
  return offsets;
}
}  // namespace

TEST_CASE("add_rmsnorm_forward = add then rmsnorm_forward", "[ops][fused]") {
  const Context ctx = cpu_ctx();
  for (DType dt : {DType::f32, DType::f64}) {
    Owned a = rand(dt, {5, 24}, 1), b = rand(dt, {5, 24}, 2), w = rand(dt, {24}, 3, 0.5, 1.5);
    Owned sum = zeros(dt, {5, 24}), out = zeros(dt, {5, 24}), ref_sum = zeros(dt, {5, 24}), ref = zeros(dt, {5, 24});
    add_rmsnorm_forward(ctx, sum, out, a, b, w, 1e-6);
    add(ctx, ref_sum, a, b);
    rmsnorm_forward(ctx, ref, Tensor{}, ref_sum, w, 1e-6);
    CHECK(bitwise_equal(sum, ref_sum));
    CHECK(bitwise_equal(out, ref));
    add_rmsnorm_forward(ctx, a, out, a, b, w, 1e-6);  // sum aliasing a
    CHECK(bitwise_equal(a, ref_sum));
    CHECK(bitwise_equal(out, ref));
    // with rstd (the training block): rmsnorm_forward's
    Owned rs = zeros(dt, {5}), ref_rs = zeros(dt, {5});
    add_rmsnorm_forward(ctx, sum, out, ref_sum, b, w, 1e-6, rs);
    add(ctx, a, ref_sum, b);
    rmsnorm_forward(ctx, ref, ref_rs, a, w, 1e-6);
    CHECK(bitwise_equal(sum, a));
    CHECK(bitwise_equal(out, ref));
    CHECK(bitwise_equal(rs, ref_rs));
  }
  {
    Owned a = rand(DType::f32, {5, 24}, 1), out = zeros(DType::f32, {5, 24}), w = rand(DType::f32, {24}, 3);
    Owned rs = zeros(DType::f32, {4});
    CHECK_THROWS_AS(add_rmsnorm_forward(ctx, out, out, a, a, w, 1e-6, rs), Error);  // rstd not one a row
  }
  Owned a = rand(DType::f64, {2, 4}, 1), w = rand(DType::f64, {3}, 3);
  CHECK_THROWS_AS(add_rmsnorm_forward(ctx, a, a, a, a, w, 1e-6), Error);  // weight is not [D]
}

TEST_CASE("rope_cols_forward rotates one column block in place of copy / rope / copy", "[ops][fused]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 3, H = 2, Win = 10, Wout = 12, R = 4;
  Owned in = rand(DType::f64, {N, H, Win}, 5), out = rand(DType::f64, {N, H, Wout}, 6), pos = ints({N}, {0, 7, 300});
  Owned f = inv_freq(R), ref = clone(out);
  rope_cols_forward(ctx, out, 8, in, 3, pos, f, 1.0);
  Owned raw = zeros(DType::f64, {N, H, R}), rot = zeros(DType::f64, {N, H, R});
  copy_cols(ctx, raw.t.view({N * H, R}), 0, in.t.view({N * H, Win}), 3, R);
  rope_forward(ctx, rot, raw, pos, f, 1.0);
  copy_cols(ctx, ref.t.view({N * H, Wout}), 8, rot.t.view({N * H, R}), 0, R);
  CHECK(bitwise_equal(out, ref));
  // by hand: token 1 (pos 7), head 1, first pair rotates by 7 rad
  const std::vector<double> x = in.f64(), y = out.f64();
  const double x0 = x[size_t((1 * H + 1) * Win + 3)], x1 = x[size_t((1 * H + 1) * Win + 4)];
  CHECK(y[size_t((1 * H + 1) * Wout + 8)] == Approx(x0 * std::cos(7.0) - x1 * std::sin(7.0)).epsilon(1e-12));
  CHECK_THROWS_AS(rope_cols_forward(ctx, out, 9, in, 3, pos, f, 1.0), Error);  // 9 + 4 > 12
}

TEST_CASE("mla_latent_forward = split, norm, rope and cache write", "[ops][fused]") {
  const Context ctx = cpu_ctx();
  const int64_t n = 3, Q = 6, R = 8, dr = 4, C = R + dr, P = 2, S = 4;
  Owned a = rand(DType::f64, {n, Q + C}, 7), qn = rand(DType::f64, {Q}, 8, 0.5, 1.5), kvn = rand(DType::f64, {R}, 9, 0.5, 1.5);
  Owned pos = ints({n}, {4, 0, 9}), slots = ints({n}, {5, 0, 2}), f = inv_freq(dr);
  Owned pool = rand(DType::f64, {P, S, C}, 10), ref_pool = clone(pool), ql = zeros(DType::f64, {n, Q});
  mla_latent_forward(ctx, ql, pool, slots, a, qn, kvn, 1e-6, pos, f, 1.0);
  Owned q_raw = zeros(DType::f64, {n, Q}), ref_ql = zeros(DType::f64, {n, Q});
  copy_cols(ctx, q_raw, 0, a, 0, Q);
  rmsnorm_forward(ctx, ref_ql, Tensor{}, q_raw, qn, 1e-6);
  Owned c_raw = zeros(DType::f64, {n, R}), c = zeros(DType::f64, {n, R});
  Owned kr = zeros(DType::f64, {n, 1, dr}), k = zeros(DType::f64, {n, 1, dr});
  copy_cols(ctx, c_raw, 0, a, Q, R);
  rmsnorm_forward(ctx, c, Tensor{}, c_raw, kvn, 1e-6);
  copy_cols(ctx, kr.t.view({n, dr}), 0, a, Q + R, dr);
  rope_forward(ctx, k, kr, pos, f, 1.0);
  kv_cache_write(ctx, ref_pool, slots, c, k.t.view({n, dr}));
  CHECK(bitwise_equal(ql, ref_ql));
  CHECK(bitwise_equal(pool, ref_pool));
  // Q = 0: a holds kv_a alone
  Owned pool0 = clone(pool);
  Owned a0 = zeros(DType::f64, {n, C});
  copy_cols(ctx, a0, 0, a, Q, C);
  mla_latent_forward(ctx, Tensor{}, pool0, slots, a0, Tensor{}, kvn, 1e-6, pos, f, 1.0);
  CHECK(bitwise_equal(pool0, ref_pool));
  // a negative slot row writes nothing (a padded prefill's padding rows)
  Owned pool1 = clone(pool), skip = ints({n}, {5, -1, 2});
  kv_cache_write(ctx, pool1, skip, c, k.t.view({n, dr}));
  const std::vector<double> before = pool.f64(), after = pool1.f64(), want = ref_pool.f64();
  for (int64_t j = 0; j < C; ++j) CHECK(after[size_t(j)] == before[size_t(j)]);            // slot 0: untouched
  for (int64_t j = 0; j < C; ++j) CHECK(after[size_t(5 * C + j)] == want[size_t(5 * C + j)]);  // slot 5: written
  Owned bad = ints({n}, {5, int32_t(P * S), 2});
  CHECK_THROWS_AS(kv_cache_write(ctx, pool1, bad, c, k.t.view({n, dr})), Error);
  CHECK_THROWS_AS(mla_latent_forward(ctx, Tensor{}, pool0, slots, a, Tensor{}, kvn, 1e-6, pos, f, 1.0), Error);
}

TEST_CASE("swiglu_pair_forward and moe_combine_forward = their unfused sequences", "[ops][fused]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 4, F = 5, K = 2, E = 3, D = 6;
  Owned gu = rand(DType::f32, {N, 2 * F}, 11), out = zeros(DType::f32, {N, F}), ref = zeros(DType::f32, {N, F});
  Owned g = zeros(DType::f32, {N, F}), u = zeros(DType::f32, {N, F});
  swiglu_pair_forward(ctx, out, gu);
  copy_cols(ctx, g, 0, gu, 0, F);
  copy_cols(ctx, u, 0, gu, F, F);
  swiglu_forward(ctx, ref, g, u);
  CHECK(bitwise_equal(out, ref));
  CHECK_THROWS_AS(swiglu_pair_forward(ctx, out, g), Error);

  Owned idx = ints({N, K}, {0, 2, 1, 0, 2, 1, 0, 1});
  Owned row_of = zeros(DType::i32, {N, K}), offsets = zeros(DType::i64, {E + 1});
  moe_route(ctx, row_of, offsets, Tensor{}, idx, E);
  Owned eo = rand(DType::f32, {N * K, D}, 12), w = rand(DType::f32, {N, K}, 13, 0, 1);
  Owned resid = rand(DType::f32, {N, D}, 14), shared = rand(DType::f32, {N, D}, 15);
  Owned x_out = zeros(DType::f32, {N, D}), ffn = zeros(DType::f32, {N, D}), want = zeros(DType::f32, {N, D});
  moe_combine_forward(ctx, x_out, resid, shared, eo, row_of, w);
  moe_unpermute_forward(ctx, ffn, eo, row_of, w);
  axpy(ctx, ffn, 1.0, shared);
  add(ctx, want, resid, ffn);
  CHECK(bitwise_equal(x_out, want));
  Owned nw = rand(DType::f32, {D}, 16, 0.5, 1.5), normed = zeros(DType::f32, {N, D}), want_n = zeros(DType::f32, {N, D});
  Owned x_out2 = zeros(DType::f32, {N, D});
  moe_combine_forward(ctx, x_out2, resid, shared, eo, row_of, w, normed, nw, 1e-6);  // with the next block's norm
  rmsnorm_forward(ctx, want_n, Tensor{}, want, nw, 1e-6);
  CHECK(bitwise_equal(x_out2, want));
  CHECK(bitwise_equal(normed, want_n));
  CHECK_THROWS_AS(moe_combine_forward(ctx, x_out2, resid, shared, eo, row_of, w, normed, g, 1e-6), Error);
  moe_combine_forward(ctx, resid, resid, shared, eo, row_of, w);  // out aliasing resid
  CHECK(bitwise_equal(resid, want));
}

TEST_CASE("swiglu_pair_backward = swiglu_backward of the two halves", "[ops][fused][swiglu]") {
  for (int threads : {1, 3}) {  // bits do not depend on the thread count
    const Context ctx = cpu_ctx(threads);
    for (DType dt : {DType::f32, DType::f64}) {
      const int64_t N = 6, F = 7;
      Owned gu = rand(dt, {N, 2 * F}, 21, -4, 4), dout = rand(dt, {N, F}, 22), d_gu = zeros(dt, {N, 2 * F});
      swiglu_pair_backward(ctx, d_gu, dout, gu);
      Owned g = zeros(dt, {N, F}), u = zeros(dt, {N, F}), dg = zeros(dt, {N, F}), du = zeros(dt, {N, F});
      copy_cols(ctx, g, 0, gu, 0, F);
      copy_cols(ctx, u, 0, gu, F, F);
      swiglu_backward(ctx, dg, du, dout, g, u);
      Owned got_g = zeros(dt, {N, F}), got_u = zeros(dt, {N, F});
      copy_cols(ctx, got_g, 0, d_gu, 0, F);
      copy_cols(ctx, got_u, 0, d_gu, F, F);
      CHECK(bitwise_equal(got_g, dg));
      CHECK(bitwise_equal(got_u, du));
    }
  }
  const Context ctx = cpu_ctx();
  Owned gu = rand(DType::f32, {4, 10}, 1), dout = rand(DType::f32, {4, 5}, 2), d_gu = zeros(DType::f32, {4, 10});
  Owned odd = zeros(DType::f32, {4, 9}), d_gu64 = zeros(DType::f64, {4, 10});
  CHECK_THROWS_AS(swiglu_pair_backward(ctx, d_gu, dout, odd), Error);     // gate_up not [N, 2F]
  CHECK_THROWS_AS(swiglu_pair_backward(ctx, odd, dout, gu), Error);       // d_gate_up not gate_up's shape
  CHECK_THROWS_AS(swiglu_pair_backward(ctx, gu, dout, gu), Error);        // in place
  CHECK_THROWS_AS(swiglu_pair_backward(ctx, d_gu64, dout, gu), Error);    // mixed dtypes
}

TEST_CASE("grouped_swiglu_forward = two grouped_matmul_forward then swiglu_forward", "[ops][fused]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 5, K = 2, E = 4, D = 8, F = 6;
  Owned offsets = route_5x2_over_4(ctx);
  for (DType dt : {DType::f32, DType::f64}) {
    Owned xp = rand(dt, {N * K, D}, 21), gw = rand(dt, {E, F, D}, 22, -0.3, 0.3), uw = rand(dt, {E, F, D}, 23, -0.3, 0.3);
    Owned act = zeros(dt, {N * K, F}), g = zeros(dt, {N * K, F}), u = zeros(dt, {N * K, F}), want = zeros(dt, {N * K, F});
    grouped_swiglu_forward(ctx, act, xp, gw, uw, offsets);
    grouped_matmul_forward(ctx, g, xp, gw, offsets);
    grouped_matmul_forward(ctx, u, xp, uw, offsets);
    swiglu_forward(ctx, want, g, u);
    CHECK(bitwise_equal(act, want));
    // keeping the products (training): the same output, and the products as grouped_matmul_forward writes them
    Owned act2 = zeros(dt, {N * K, F}), g2 = zeros(dt, {N * K, F}), u2 = zeros(dt, {N * K, F});
    grouped_swiglu_forward(ctx, act2, xp, gw, uw, offsets, g2, u2);
    CHECK(bitwise_equal(act2, want));
    CHECK(bitwise_equal(g2, g));
    CHECK(bitwise_equal(u2, u));
    Owned bad = rand(dt, {E, F + 1, D}, 24), narrow = zeros(dt, {N * K, F - 1});
    CHECK_THROWS_AS(grouped_swiglu_forward(ctx, act, xp, gw, bad, offsets), Error);
    CHECK_THROWS_AS(grouped_swiglu_forward(ctx, act2, xp, gw, uw, offsets, narrow, u2), Error);  // not out's shape
    CHECK_THROWS_AS(grouped_swiglu_forward(ctx, act2, xp, gw, uw, offsets, act2, u2), Error);    // aliases out
    CHECK_THROWS_AS(grouped_swiglu_forward(ctx, act2, xp, gw, uw, offsets, g2, g2), Error);      // gate_out = up_out
  }
}

TEST_CASE("grouped_matmul_swiglu_backward = grouped_matmul_backward's d_in, then swiglu_backward", "[ops][fused]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 5, K = 2, E = 4, D = 8, F = 6;
  Owned offsets = route_5x2_over_4(ctx);
  for (DType dt : {DType::f32, DType::f64}) {
    Owned d_out = rand(dt, {N * K, D}, 31), w = rand(dt, {E, D, F}, 32, -0.3, 0.3);
    Owned g = rand(dt, {N * K, F}, 33), u = rand(dt, {N * K, F}, 34);
    Owned dg = zeros(dt, {N * K, F}), du = zeros(dt, {N * K, F});
    grouped_matmul_swiglu_backward(ctx, dg, du, d_out, w, offsets, g, u);
    Owned d_act = zeros(dt, {N * K, F}), want_g = zeros(dt, {N * K, F}), want_u = zeros(dt, {N * K, F});
    grouped_matmul_backward(ctx, d_act, Tensor{}, d_out, Tensor{}, w, offsets);
    swiglu_backward(ctx, want_g, want_u, d_act, g, u);
    CHECK(bitwise_equal(dg, want_g));
    CHECK(bitwise_equal(du, want_u));
    Owned narrow = zeros(dt, {N * K, F - 1}), bad_w = rand(dt, {E, D + 1, F}, 35);
    CHECK_THROWS_AS(grouped_matmul_swiglu_backward(ctx, dg, du, d_out, bad_w, offsets, g, u), Error);  // N != D
    CHECK_THROWS_AS(grouped_matmul_swiglu_backward(ctx, narrow, du, d_out, w, offsets, g, u), Error);  // not [M, F]
    CHECK_THROWS_AS(grouped_matmul_swiglu_backward(ctx, dg, dg, d_out, w, offsets, g, u), Error);      // d_gate = d_up
    CHECK_THROWS_AS(grouped_matmul_swiglu_backward(ctx, g, du, d_out, w, offsets, g, u), Error);       // over gate
  }
}

TEST_CASE("grouped_matmul_d_in_pair = grouped_matmul_backward's d_in, then its d_in +=", "[ops][fused]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 5, K = 2, E = 4, D = 8, F = 6;
  Owned offsets = route_5x2_over_4(ctx);
  for (DType dt : {DType::f32, DType::f64}) {
    Owned dg = rand(dt, {N * K, F}, 31), du = rand(dt, {N * K, F}, 32), gw = rand(dt, {E, F, D}, 33, -0.3, 0.3),
          uw = rand(dt, {E, F, D}, 34, -0.3, 0.3);
    Owned got = rand(dt, {N * K, D}, 35), want = zeros(dt, {N * K, D});  // written over, whatever it held
    grouped_matmul_d_in_pair(ctx, got, dg, gw, du, uw, offsets);
    grouped_matmul_backward(ctx, want, Tensor{}, dg, Tensor{}, gw, offsets);
    grouped_matmul_backward(ctx, want, Tensor{}, du, Tensor{}, uw, offsets, Accum::add);
    CHECK(bitwise_equal(got, want));
    Owned bad_w = rand(dt, {E, F + 1, D}, 36), bad_d = rand(dt, {N * K, F + 1}, 37);
    CHECK_THROWS_AS(grouped_matmul_d_in_pair(ctx, got, dg, gw, du, bad_w, offsets), Error);
    CHECK_THROWS_AS(grouped_matmul_d_in_pair(ctx, got, dg, gw, bad_d, uw, offsets), Error);
    Owned bad_in = zeros(dt, {N * K, D + 1});
    CHECK_THROWS_AS(grouped_matmul_d_in_pair(ctx, bad_in, dg, gw, du, uw, offsets), Error);
  }
}

TEST_CASE("moe_dispatch_forward = router matmul, gate, route and permute", "[ops][fused]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 3, D = 8, E = 8;
  GateOptions opt;
  opt.score_func = ScoreFunc::sigmoid;
  opt.topk_method = TopkMethod::noaux_tc;
  opt.n_group = 4;
  opt.topk_group = 2;
  opt.top_k = 2;
  opt.norm_topk_prob = true;
  opt.routed_scaling_factor = 2.5;
  const int64_t K = opt.top_k;
  for (DType dt : {DType::f32, DType::f64}) {
    Owned x = rand(dt, {N, D}, 31), router = rand(dt, {E, D}, 32, -0.5, 0.5), bias = rand(dt, {E}, 33, -0.1, 0.1);
    struct Outs {
      Owned xp, row_of, offsets, counts, idx, w, scores, logits;
    };
    auto outs = [&] {
      return Outs{zeros(dt, {N * K, D}), zeros(DType::i32, {N, K}), zeros(DType::i64, {E + 1}), zeros(DType::i64, {E}),
                  zeros(DType::i32, {N, K}), zeros(dt, {N, K}), zeros(dt, {N, E}), zeros(dt, {N, E})};
    };
    Outs f = outs(), s = outs();
    moe_dispatch_forward(ctx, f.xp, f.row_of, f.offsets, f.counts, f.idx, f.w, f.scores, f.logits, x, router, bias, opt);
    matmul_forward(ctx, s.logits, x, router);
    moe_gate_forward(ctx, s.idx, s.w, s.scores, s.logits, bias, opt);
    moe_route(ctx, s.row_of, s.offsets, s.counts, s.idx, E);
    moe_permute_forward(ctx, s.xp, x, s.row_of);
    CHECK(bitwise_equal(f.logits, s.logits));
    CHECK(bitwise_equal(f.scores, s.scores));
    CHECK(bitwise_equal(f.idx, s.idx));
    CHECK(bitwise_equal(f.w, s.w));
    CHECK(bitwise_equal(f.row_of, s.row_of));
    CHECK(bitwise_equal(f.offsets, s.offsets));
    CHECK(bitwise_equal(f.counts, s.counts));
    CHECK(bitwise_equal(f.xp, s.xp));
    Owned bad = zeros(dt, {N * K, D + 1});
    CHECK_THROWS_AS(moe_dispatch_forward(ctx, bad, f.row_of, f.offsets, f.counts, f.idx, f.w, f.scores, f.logits, x,
                                         router, bias, opt),
                    Error);
  }
}
