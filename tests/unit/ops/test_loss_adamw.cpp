// Cross-entropy and AdamW.
#include "helpers.h"

using namespace ds;
using namespace ds::test;

TEST_CASE("cross_entropy of uniform logits is log V, ignored rows are 0", "[ops][loss]") {
  const Context ctx = cpu_ctx();
  for (DType dt : {DType::f32, DType::f64}) {
    const int64_t V = 10;
    Owned logits = from(dt, {3, V}, std::vector<double>(3 * V, 0.7));
    Owned loss = zeros(dt, {3}), lse = zeros(dt, {3});
    cross_entropy_forward(ctx, loss, lse, logits, ints({3}, {4, -100, 9}), -100);
    const double tol = dt == DType::f32 ? 1e-6 : 1e-14;
    CHECK(max_abs_diff(loss.f64(), {std::log(10.0), 0, std::log(10.0)}) < tol);
    CHECK(max_abs_diff(lse.f64(), {0.7 + std::log(10.0), 0, 0.7 + std::log(10.0)}) < tol);
  }
  // Huge logits stay finite (max subtraction).
  Owned big = from(DType::f32, {1, 3}, {1000, 1000, 0}), l = zeros(DType::f32, {1}), s = zeros(DType::f32, {1});
  cross_entropy_forward(ctx, l, s, big, ints({1}, {2}), -1);
  CHECK(std::abs(l.f64()[0] - (1000 + std::log(2.0))) < 1e-3);
  CHECK_THROWS_AS(cross_entropy_forward(ctx, l, s, big, ints({1}, {3}), -1), Error);
}

TEST_CASE("cross_entropy gradient check", "[ops][loss][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 5, V = 7;
  const double d_scale = 0.37;
  Owned logits = rand(DType::f64, {N, V}, 141, -3, 3), targets = ints({N}, {3, 0, -100, 6, 3});
  Owned loss = zeros(DType::f64, {N}), lse = zeros(DType::f64, {N}), d = zeros(DType::f64, {N, V});
  cross_entropy_forward(ctx, loss, lse, logits, targets, -100);
  cross_entropy_backward(ctx, d, logits, lse, targets, d_scale, -100);
  for (int64_t v = 0; v < V; ++v) CHECK(d.f64()[size_t(2 * V + v)] == 0.0);  // ignored row
  auto f = [&] {
    cross_entropy_forward(ctx, loss, lse, logits, targets, -100);
    return d_scale * sum(ctx, loss);
  };
  // Smooth; measured ~1e-10 relative, bound 1e-6.
  CHECK(run_gradcheck("cross_entropy", {{"logits", logits, d}}, f) < 1e-6);
  cross_entropy_forward(ctx, loss, lse, logits, targets, -100);  // lse of the unperturbed logits again
  Owned d2 = clone(d);
  cross_entropy_backward(ctx, d2, logits, lse, targets, d_scale, -100, Accum::add);
  std::vector<double> twice = d.f64();
  for (double& v : twice) v *= 2;
  CHECK(max_abs_diff(d2.f64(), twice) < 1e-15);
}

TEST_CASE("cross_entropy f32 agrees with f64", "[ops][loss][precision]") {
  const Context ctx = cpu_ctx();
  Owned logits = rand(DType::f64, {6, 300}, 142, -8, 8), targets = ints({6}, {1, 299, 0, 5, 150, 7});
  auto run = [&](DType dt) {
    Owned x = as(dt, logits), loss = zeros(dt, {6}), lse = zeros(dt, {6}), d = zeros(dt, {6, 300});
    cross_entropy_forward(ctx, loss, lse, x, targets, -1);
    cross_entropy_backward(ctx, d, x, lse, targets, 1.0, -1);
    return std::vector<Owned>{loss, d};
  };
  std::vector<Owned> a = run(DType::f32), b = run(DType::f64);
  CHECK(max_rel_diff(a[0].f64(), b[0].f64()) < 1e-6);
  CHECK(max_abs_diff(a[1].f64(), b[1].f64()) < 1e-6);
}

TEST_CASE("cross_entropy_backward into bf16 d_logits: the f32 gradient rounded once", "[ops][loss][bf16]") {
  // Mixed precision writes the f32 logits' gradient straight into the bf16 tensor the head's backward reads: each
  // element must be the f32-logits gradient (computed in double, as for f32 d_logits) rounded once to bf16, and
  // with Accum::add the bf16 value plus that gradient, rounded once. V 13: no vector-friendly width.
  const Context ctx = cpu_ctx();
  const int64_t N = 5, V = 13;
  Owned logits = rand(DType::f32, {N, V}, 143, -6, 6), targets = ints({N}, {3, -100, 12, 0, 7});
  Owned loss = zeros(DType::f32, {N}), lse = zeros(DType::f32, {N}), rs = from(DType::f32, {N}, {1, 2, -0.5, 3, 0.25});
  cross_entropy_forward(ctx, loss, lse, logits, targets, -100);
  const std::vector<double> x = logits.f64(), l = lse.f64(), r = rs.f64();
  const int32_t tg[N] = {3, -100, 12, 0, 7};
  auto bf16_of = [](double v) { return double(bf16_to_f32(f32_to_bf16(float(v)))); };
  for (bool with_scale : {false, true}) {
    const double d_scale = 0.37;
    std::vector<double> start(size_t(N * V));
    for (size_t i = 0; i < start.size(); ++i) start[i] = bf16_of(0.01 * double(int(i % 7) - 3));
    Owned d = zeros(DType::bf16, {N, V}), d_add = from(DType::bf16, {N, V}, start);
    fill(ctx, d, 5.0);  // overwritten everywhere, ignored rows included
    const Tensor row_scale = with_scale ? Tensor(rs) : Tensor{};
    cross_entropy_backward(ctx, d, logits, lse, targets, d_scale, -100, Accum::overwrite, row_scale);
    cross_entropy_backward(ctx, d_add, logits, lse, targets, d_scale, -100, Accum::add, row_scale);
    const std::vector<double> got = d.f64(), got_add = d_add.f64();
    int64_t bad = 0, bad_add = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t v = 0; v < V; ++v) {
        const size_t i = size_t(n * V + v);
        double g = 0.0;
        if (tg[n] != -100) {
          const double k = with_scale ? d_scale * r[size_t(n)] : d_scale;
          g = k * (std::exp(x[i] - l[size_t(n)]) - (v == tg[n] ? 1.0 : 0.0));
        }
        bad += got[i] != bf16_of(g);
        bad_add += got_add[i] != (tg[n] == -100 ? start[i] : bf16_of(start[i] + g));
      }
    INFO("row_scale " << with_scale);
    CHECK(bad == 0);
    CHECK(bad_add == 0);
  }
  // Within bf16 rounding (half an ulp: 2^-8 of the value) of the f32 d_logits.
  Owned d32 = zeros(DType::f32, {N, V}), d16 = zeros(DType::bf16, {N, V});
  cross_entropy_backward(ctx, d32, logits, lse, targets, 1.0, -100);
  cross_entropy_backward(ctx, d16, logits, lse, targets, 1.0, -100);
  const std::vector<double> a = d32.f64(), b = d16.f64();
  for (size_t i = 0; i < a.size(); ++i) CHECK(std::abs(a[i] - b[i]) <= std::abs(a[i]) * 0x1p-8);
}

TEST_CASE("cross_entropy_fused: the loss and gradient of forward then backward, the same bits", "[ops][loss]") {
  // The fused op is the two passes in one call; every pair of dtypes the pair of ops takes (bf16 d_logits: mixed
  // precision), ignored rows (0 in loss, lse and d_logits, over poisoned outputs), odd V, several threads.
  const Context ctx = cpu_ctx(2);
  const int64_t N = 9, V = 37;
  const std::vector<int32_t> tg = {3, -100, 36, 0, 7, -100, 12, 1, 35};
  Owned targets = ints({N}, tg);
  for (auto [dt, ddt] : {std::pair{DType::f32, DType::f32}, std::pair{DType::f32, DType::bf16},
                         std::pair{DType::f64, DType::f64}}) {
    INFO(dtype_name(dt) << " logits, " << dtype_name(ddt) << " d_logits");
    Owned logits = rand(dt, {N, V}, 151, -7, 7);
    Owned loss = zeros(dt, {N}), lse = zeros(dt, {N}), d = zeros(ddt, {N, V});
    cross_entropy_forward(ctx, loss, lse, logits, targets, -100);
    cross_entropy_backward(ctx, d, logits, lse, targets, 0.29, -100);
    Owned loss2 = zeros(dt, {N}), lse2 = zeros(dt, {N}), d2 = zeros(ddt, {N, V});
    fill(ctx, loss2, 5.0);
    fill(ctx, lse2, 5.0);
    fill(ctx, d2, 5.0);  // overwritten everywhere, ignored rows included
    cross_entropy_fused(ctx, loss2, lse2, d2, logits, targets, 0.29, -100);
    CHECK(bitwise_equal(loss, loss2));
    CHECK(bitwise_equal(lse, lse2));
    CHECK(bitwise_equal(d, d2));
    CHECK(loss2.f64()[1] == 0.0);
    CHECK(lse2.f64()[5] == 0.0);
  }
  // Bad shapes and targets are refused as by the two ops.
  Owned x = rand(DType::f32, {2, 4}, 152), l = zeros(DType::f32, {2}), s = zeros(DType::f32, {2});
  Owned d = zeros(DType::f32, {2, 5});
  CHECK_THROWS_AS(cross_entropy_fused(ctx, l, s, d, x, ints({2}, {1, 2}), 1.0, -100), Error);
  Owned d_ok = zeros(DType::f32, {2, 4});
  CHECK_THROWS_AS(cross_entropy_fused(ctx, l, s, d_ok, x, ints({2}, {1, 4}), 1.0, -100), Error);
}

TEST_CASE("cross_entropy_backward: d_logits dtype rules", "[ops][loss][checks]") {
  const Context ctx = cpu_ctx();
  Owned targets = ints({2}, {1, 2});
  Owned x64 = zeros(DType::f64, {2, 4}), lse64 = zeros(DType::f64, {2}), d16 = zeros(DType::bf16, {2, 4});
  try {
    cross_entropy_backward(ctx, d16, x64, lse64, targets, 1.0, -100);
    FAIL("bf16 d_logits with f64 logits accepted");
  } catch (const Error& e) {
    INFO(e.what());
    CHECK(e.kind() == ErrorKind::runtime);
    CHECK(std::string(e.what()).find("cross_entropy_backward: d_logits") != std::string::npos);
    CHECK(std::string(e.what()).find("bf16 only when the call's float dtype is f32") != std::string::npos);
  }
  Owned x32 = zeros(DType::f32, {2, 4}), lse32 = zeros(DType::f32, {2}), d64 = zeros(DType::f64, {2, 4});
  CHECK_THROWS_AS(cross_entropy_backward(ctx, d64, x32, lse32, targets, 1.0, -100), Error);  // wider: no
  Owned x16 = zeros(DType::bf16, {2, 4});
  CHECK_THROWS_AS(cross_entropy_backward(ctx, d16, x16, lse32, targets, 1.0, -100), Error);  // bf16 on the CPU: no
}

TEST_CASE("adamw: one step by hand", "[ops][adamw]") {
  const Context ctx = cpu_ctx();
  AdamWOptions o;
  o.lr = 0.1;
  o.beta1 = 0.9;
  o.beta2 = 0.99;
  o.eps = 1e-8;
  o.weight_decay = 0.01;
  o.grad_scale = 0.5;
  for (int64_t step : {1, 3}) {
    o.step = step;
    Owned p = from(DType::f64, {2}, {1.0, -2.0}), g = from(DType::f64, {2}, {0.4, -1.0});
    Owned m = from(DType::f64, {2}, {0.1, 0.0}), v = from(DType::f64, {2}, {0.01, 0.0});
    adamw_update(ctx, p, g, m, v, o);
    const double P[2] = {1.0, -2.0}, G[2] = {0.2, -0.5}, M0[2] = {0.1, 0.0}, V0[2] = {0.01, 0.0};
    for (int i = 0; i < 2; ++i) {
      const double mi = 0.9 * M0[i] + 0.1 * G[i], vi = 0.99 * V0[i] + 0.01 * G[i] * G[i];
      const double mh = mi / (1 - std::pow(0.9, double(step))), vh = vi / (1 - std::pow(0.99, double(step)));
      const double pi = P[i] - 0.1 * (mh / (std::sqrt(vh) + 1e-8) + 0.01 * P[i]);
      CHECK(std::abs(m.f64()[size_t(i)] - mi) < 1e-15);
      CHECK(std::abs(v.f64()[size_t(i)] - vi) < 1e-15);
      CHECK(std::abs(p.f64()[size_t(i)] - pi) < 1e-14);
    }
  }
  // Step 1 with no decay moves every parameter by about lr * sign(grad).
  o.step = 1;
  o.weight_decay = 0;
  o.grad_scale = 1;
  Owned p = zeros(DType::f32, {3}), g = from(DType::f32, {3}, {3, -0.01, 100});
  Owned m = zeros(DType::f32, {3}), v = zeros(DType::f32, {3});
  adamw_update(ctx, p, g, m, v, o);
  CHECK(max_abs_diff(p.f64(), {-0.1, 0.1, -0.1}) < 1e-6);
}

TEST_CASE("adamw_update_many: each slot as adamw_update with its weight decay", "[ops][adamw]") {
  const Context ctx = cpu_ctx();
  AdamWOptions o;
  o.lr = 0.05;
  o.step = 2;
  o.grad_scale = 0.5;
  Owned p1 = from(DType::f32, {3}, {1, -2, 3}), g1 = from(DType::f32, {3}, {0.5, 0.25, -1});
  Owned m1 = from(DType::f32, {3}, {0.1, 0, 0}), v1 = from(DType::f32, {3}, {0.01, 0, 0.2});
  Owned p2 = from(DType::f64, {2}, {4, 5}), g2 = from(DType::f64, {2}, {-3, 2});
  Owned m2 = zeros(DType::f64, {2}), v2 = zeros(DType::f64, {2});
  Owned q1 = from(DType::f32, {3}, {1, -2, 3}), h1 = from(DType::f32, {3}, {0.5, 0.25, -1});
  Owned n1 = from(DType::f32, {3}, {0.1, 0, 0}), w1 = from(DType::f32, {3}, {0.01, 0, 0.2});
  Owned q2 = from(DType::f64, {2}, {4, 5}), h2 = from(DType::f64, {2}, {-3, 2});
  Owned n2 = zeros(DType::f64, {2}), w2 = zeros(DType::f64, {2});
  adamw_update_many(ctx, {{p1, g1, m1, v1, {}, 0.1}, {p2, g2, m2, v2, {}, 0.0}}, o);
  AdamWOptions o1 = o, o2 = o;
  o1.weight_decay = 0.1;
  adamw_update(ctx, q1, h1, n1, w1, o1);
  adamw_update(ctx, q2, h2, n2, w2, o2);
  CHECK(max_abs_diff(p1.f64(), q1.f64()) == 0);
  CHECK(max_abs_diff(m1.f64(), n1.f64()) == 0);
  CHECK(max_abs_diff(v1.f64(), w1.f64()) == 0);
  CHECK(max_abs_diff(p2.f64(), q2.f64()) == 0);
  CHECK(max_abs_diff(v2.f64(), w2.f64()) == 0);
  CHECK(p1.f64()[0] != 1.0);  // it moved
  // a slot's sizes are checked like adamw_update's
  Owned bad = zeros(DType::f32, {2});
  CHECK_THROWS_WITH(adamw_update_many(ctx, {{p1, g1, m1, bad, {}, 0.0}}, o), Catch::Contains("differ in size"));
}

TEST_CASE("grad_clip_verdict: the host's norm, clip and skip rule on the device's values", "[ops][adamw]") {
  const Context ctx = cpu_ctx();
  const std::vector<double> sq = {0.25, 3.5, 0.0, 1e-3, 12.0};
  double ss = 0;
  for (double x : sq) ss += x;  // the order the op promises
  Owned ssq = from(DType::f64, {5}, sq), verdict = zeros(DType::f64, {3}), losses = from(DType::f64, {2}, {3.0, 7.5});
  auto run = [&](Tensor finite, double scale, double max_norm, bool force) {
    grad_clip_verdict(ctx, verdict, ssq, finite, scale, max_norm, force);
    return verdict.f64();
  };
  // no clip: the norm under max_norm, or clipping off
  const double norm = std::sqrt(ss) * 0.5;
  CHECK(run(losses, 0.5, 10.0, false) == std::vector<double>{0.5, 0.0, norm});
  CHECK(run(Tensor(), 0.5, 0.0, false) == std::vector<double>{0.5, 0.0, norm});
  // clip: scale * max_norm / norm
  CHECK(run(losses, 0.5, 1.0, false) == std::vector<double>{0.5 * (1.0 / norm), 0.0, norm});
  // skips: forced, a loss not finite, a sum of squares not finite (the norm is reported as it came out)
  CHECK(run(losses, 0.5, 1.0, true) == std::vector<double>{0.0, 1.0, norm});
  losses.p<double>()[1] = std::nan("");
  CHECK(run(losses, 0.5, 1.0, false) == std::vector<double>{0.0, 1.0, norm});
  losses.p<double>()[1] = 7.5;
  ssq.p<double>()[2] = INFINITY;
  std::vector<double> v = run(losses, 0.5, 1.0, false);
  CHECK(v[0] == 0.0);
  CHECK(v[1] == 1.0);
  CHECK(std::isinf(v[2]));
  // bad input
  Owned short_v = zeros(DType::f64, {2}), f32_ssq = zeros(DType::f32, {5});
  CHECK_THROWS_WITH(grad_clip_verdict(ctx, short_v, ssq, {}, 1.0, 1.0, false), Catch::Contains("must be f64 [3]"));
  CHECK_THROWS_WITH(grad_clip_verdict(ctx, verdict, f32_ssq, {}, 1.0, 1.0, false), Catch::Contains("must be f64"));
  CHECK_THROWS_WITH(grad_clip_verdict(ctx, verdict, ssq, {}, 1.0, -1.0, false), Catch::Contains("max_norm"));
  CHECK_THROWS_WITH(grad_clip_verdict(ctx, verdict, ssq, {}, NAN, 1.0, false), Catch::Contains("grad_scale"));
}

TEST_CASE("adamw with a verdict: its scale as grad_scale; a skipped one writes nothing", "[ops][adamw]") {
  const Context ctx = cpu_ctx();
  AdamWOptions o;
  o.lr = 0.05;
  o.step = 3;
  o.weight_decay = 0.1;
  auto fresh = [] {
    return std::vector<Owned>{from(DType::f32, {3}, {1, -2, 3}), from(DType::f32, {3}, {0.5, 0.25, -1}),
                              from(DType::f32, {3}, {0.1, 0, 0}), from(DType::f32, {3}, {0.01, 0, 0.2}),
                              zeros(DType::bf16, {3})};
  };
  std::vector<Owned> a = fresh(), b = fresh();
  Owned verdict = from(DType::f64, {3}, {0.375, 0.0, 2.0});
  AdamWOptions ov = o;
  ov.grad_scale = 99.0;  // replaced by the verdict's
  ov.verdict = verdict;
  adamw_update_many(ctx, {{a[0], a[1], a[2], a[3], a[4], 0.1}}, ov);
  o.grad_scale = 0.375;
  adamw_update_many(ctx, {{b[0], b[1], b[2], b[3], b[4], 0.1}}, o);
  for (size_t k = 0; k < 5; ++k) CHECK(a[k].f64() == b[k].f64());
  CHECK(a[0].f64()[0] != 1.0);  // it moved
  // skipped: nothing written, the compute copy included
  std::vector<Owned> c = fresh();
  verdict.p<double>()[1] = 1.0;
  adamw_update_many(ctx, {{c[0], c[1], c[2], c[3], c[4], 0.1}}, ov);
  adamw_update(ctx, c[0], c[1], c[2], c[3], ov, c[4]);
  std::vector<Owned> d = fresh();
  for (size_t k = 0; k < 5; ++k) CHECK(c[k].f64() == d[k].f64());
  Owned short_v = zeros(DType::f64, {2});
  ov.verdict = short_v;
  CHECK_THROWS_WITH(adamw_update(ctx, c[0], c[1], c[2], c[3], ov), Catch::Contains("must be f64 [3]"));
}

TEST_CASE("adamw: bf16 moments are the f32 update's moments rounded to bf16", "[ops][adamw]") {
  // Each step from the same state: bf16 m, v = round(the f32 path's new m, v); the parameter step uses the unrounded
  // moments, so it equals the f32 path's when both start from the same (bf16-representable) moments.
  const Context ctx = cpu_ctx();
  AdamWOptions o;
  o.lr = 1e-2;
  o.weight_decay = 0.1;
  o.grad_scale = 0.7;
  const int64_t n = 64;
  std::vector<double> p0(n), g0(n), m0(n), v0(n);
  for (int64_t i = 0; i < n; ++i) {  // moments exactly representable in bf16 (8 significant bits)
    p0[size_t(i)] = std::sin(0.3 * double(i));
    g0[size_t(i)] = std::cos(0.7 * double(i)) * 0.1;
    m0[size_t(i)] = double(int(i % 17) - 8) / 256.0;
    v0[size_t(i)] = double(1 + i % 13) / 4096.0;
  }
  for (int64_t step : {1, 5}) {
    o.step = step;
    Owned p32 = from(DType::f32, {n}, p0), g32 = from(DType::f32, {n}, g0);
    Owned m32 = from(DType::f32, {n}, m0), v32 = from(DType::f32, {n}, v0);
    Owned pb = from(DType::f32, {n}, p0), mb = from(DType::bf16, {n}, m0), vb = from(DType::bf16, {n}, v0);
    REQUIRE(max_abs_diff(mb.f64(), m0) == 0.0);
    adamw_update(ctx, p32, g32, m32, v32, o);
    adamw_update(ctx, pb, g32, mb, vb, o);
    CHECK(max_abs_diff(pb.f64(), p32.f64()) == 0.0);
    const std::vector<double> m = m32.f64(), v = v32.f64(), mr = mb.f64(), vr = vb.f64();
    for (size_t i = 0; i < size_t(n); ++i) {
      CHECK(mr[i] == double(bf16_to_f32(f32_to_bf16(float(m[i])))));
      CHECK(vr[i] == double(bf16_to_f32(f32_to_bf16(float(v[i])))));
    }
  }
  // Mixed state dtypes and bf16 moments of a non-f32 parameter are refused.
  Owned p = zeros(DType::f64, {4}), g = zeros(DType::f64, {4}), mb = zeros(DType::bf16, {4});
  Owned v = zeros(DType::f64, {4});
  CHECK_THROWS_WITH(adamw_update(ctx, p, g, mb, v, o), Catch::Contains("bf16 moments"));
  Owned p32 = zeros(DType::f32, {4}), g32 = zeros(DType::f32, {4}), vb = zeros(DType::bf16, {4});
  CHECK_THROWS_WITH(adamw_update(ctx, p, g, mb, vb, o), Catch::Contains("f32 param"));
  CHECK_NOTHROW(adamw_update(ctx, p32, g32, mb, vb, o));
}

TEST_CASE("kl_div: zero for equal distributions, hand value, gradient check", "[ops][loss][kl][gradcheck]") {
  const Context ctx = cpu_ctx();
  // Shifting a row by a constant leaves its softmax unchanged: KL 0 and gradient 0.
  Owned s = rand(DType::f64, {2, 5}, 151, -2, 2);
  Owned t = clone(s);
  for (double* p = t.t.ptr<double>(); p != t.t.ptr<double>() + 10; ++p) *p += 3.0;
  Owned loss = zeros(DType::f64, {2}), d = zeros(DType::f64, {2, 5});
  kl_div_forward(ctx, loss, s, t, ints({2}, {0, 0}), -100);
  CHECK(max_abs_diff(loss.f64(), {0, 0}) < 1e-15);
  kl_div_backward(ctx, d, s, t, ints({2}, {0, 0}), 1.0, -100);
  CHECK(max_abs_diff(d.f64(), std::vector<double>(10, 0.0)) < 1e-15);
  // Two classes by hand: p_t = (0.5, 0.5), p_s = softmax(0, log 3) = (0.25, 0.75):
  // KL = 0.5 log(0.5/0.25) + 0.5 log(0.5/0.75) = 0.5 log(4/3).
  Owned s2 = from(DType::f64, {1, 2}, {0.0, std::log(3.0)}), t2 = from(DType::f64, {1, 2}, {1.0, 1.0});
  Owned l2 = zeros(DType::f64, {1});
  kl_div_forward(ctx, l2, s2, t2, ints({1}, {1}), -100);
  CHECK(std::abs(l2.f64()[0] - 0.5 * std::log(4.0 / 3.0)) < 1e-15);

  const int64_t N = 4, V = 6;
  const double d_scale = 0.41;
  Owned logits = rand(DType::f64, {N, V}, 152, -3, 3), teacher = rand(DType::f64, {N, V}, 153, -3, 3);
  Owned targets = ints({N}, {1, -100, 0, 5});
  Owned l = zeros(DType::f64, {N}), g = zeros(DType::f64, {N, V});
  kl_div_backward(ctx, g, logits, teacher, targets, d_scale, -100);
  for (int64_t v = 0; v < V; ++v) CHECK(g.f64()[size_t(V + v)] == 0.0);  // ignored row
  auto f = [&] {
    kl_div_forward(ctx, l, logits, teacher, targets, -100);
    return d_scale * sum(ctx, l);
  };
  // Smooth; the same bound as cross-entropy's check.
  CHECK(run_gradcheck("kl_div", {{"logits", logits, g}}, f) < 1e-6);
  Owned g2 = clone(g);
  kl_div_backward(ctx, g2, logits, teacher, targets, d_scale, -100, Accum::add);
  std::vector<double> twice = g.f64();
  for (double& v : twice) v *= 2;
  CHECK(max_abs_diff(g2.f64(), twice) < 1e-15);
  // f32 agrees with f64.
  Owned l32 = zeros(DType::f32, {N}), g32 = zeros(DType::f32, {N, V});
  kl_div_forward(ctx, l32, as(DType::f32, logits), as(DType::f32, teacher), targets, -100);
  kl_div_backward(ctx, g32, as(DType::f32, logits), as(DType::f32, teacher), targets, d_scale, -100);
  kl_div_forward(ctx, l, logits, teacher, targets, -100);
  CHECK(max_abs_diff(l32.f64(), l.f64()) < 1e-6);
  CHECK(max_abs_diff(g32.f64(), g.f64()) < 1e-6);
}
