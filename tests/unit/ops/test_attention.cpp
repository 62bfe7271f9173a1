// Causal self-attention.
#include "helpers.h"

using namespace ds;
using namespace ds::test;

namespace {

// Naive reference for one (b, h): explicit softmax over s <= t.
std::vector<double> naive_attention(const std::vector<double>& q, const std::vector<double>& k,
                                    const std::vector<double>& v, int64_t B, int64_t T, int64_t H, int64_t Dqk,
                                    int64_t Dv, double scale) {
  std::vector<double> out(size_t(B * T * H * Dv), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t t = 0; t < T; ++t) {
        std::vector<double> s;
        for (int64_t j = 0; j <= t; ++j) {
          double d = 0;
          for (int64_t c = 0; c < Dqk; ++c)
            d += q[size_t(((b * T + t) * H + h) * Dqk + c)] * k[size_t(((b * T + j) * H + h) * Dqk + c)];
          s.push_back(std::exp(scale * d));
        }
        double z = 0;
        for (double x : s) z += x;
        for (int64_t j = 0; j <= t; ++j)
          for (int64_t c = 0; c < Dv; ++c)
            out[size_t(((b * T + t) * H + h) * Dv + c)] += s[size_t(j)] / z * v[size_t(((b * T + j) * H + h) * Dv + c)];
      }
  return out;
}

}  // namespace

TEST_CASE("attention T=1 returns v, T=2 matches a hand softmax", "[ops][attention]") {
  const Context ctx = cpu_ctx();
  Owned q = from(DType::f64, {1, 1, 1, 2}, {1, 2}), k = from(DType::f64, {1, 1, 1, 2}, {3, -1});
  Owned v = from(DType::f64, {1, 1, 1, 3}, {7, 8, 9});
  Owned out = zeros(DType::f64, {1, 1, 1, 3}), lse = zeros(DType::f64, {1, 1, 1});
  attention_forward(ctx, out, lse, q, k, v, 0.5);
  CHECK(out.f64() == std::vector<double>{7, 8, 9});
  CHECK(std::abs(lse.f64()[0] - 0.5) < 1e-15);  // 0.5 * (3 - 2)

  Owned q2 = from(DType::f64, {1, 2, 1, 1}, {1, 2}), k2 = from(DType::f64, {1, 2, 1, 1}, {1, 3});
  Owned v2 = from(DType::f64, {1, 2, 1, 1}, {10, 20});
  Owned o2 = zeros(DType::f64, {1, 2, 1, 1}), l2 = zeros(DType::f64, {1, 1, 2});
  attention_forward(ctx, o2, l2, q2, k2, v2, 1.0);
  const double s0 = 2 * 1, s1 = 2 * 3;  // t = 1 attends to both keys
  const double p0 = std::exp(s0) / (std::exp(s0) + std::exp(s1));
  CHECK(std::abs(o2.f64()[0] - 10) < 1e-14);  // t = 0 sees only itself
  CHECK(std::abs(o2.f64()[1] - (p0 * 10 + (1 - p0) * 20)) < 1e-12);
  CHECK(std::abs(l2.f64()[1] - std::log(std::exp(s0) + std::exp(s1))) < 1e-14);
}

TEST_CASE("attention matches the naive reference (Dqk != Dv)", "[ops][attention]") {
  const Context ctx = cpu_ctx();
  const int64_t B = 2, T = 6, H = 3, Dqk = 5, Dv = 4;
  Owned q = rand(DType::f64, {B, T, H, Dqk}, 61), k = rand(DType::f64, {B, T, H, Dqk}, 62);
  Owned v = rand(DType::f64, {B, T, H, Dv}, 63);
  Owned out = zeros(DType::f64, {B, T, H, Dv}), lse = zeros(DType::f64, {B, H, T});
  attention_forward(ctx, out, lse, q, k, v, 0.7);
  CHECK(max_abs_diff(out.f64(), naive_attention(q.f64(), k.f64(), v.f64(), B, T, H, Dqk, Dv, 0.7)) < 1e-14);
}

TEST_CASE("attention gradient check", "[ops][attention][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t B = 2, T = 5, H = 2, Dqk = 6, Dv = 4;
  const double scale = 0.4;
  Owned q = rand(DType::f64, {B, T, H, Dqk}, 71), k = rand(DType::f64, {B, T, H, Dqk}, 72);
  Owned v = rand(DType::f64, {B, T, H, Dv}, 73), R = rand(DType::f64, {B, T, H, Dv}, 74);
  Owned out = zeros(DType::f64, {B, T, H, Dv}), lse = zeros(DType::f64, {B, H, T});
  Owned dq = zeros(DType::f64, {B, T, H, Dqk}), dk = zeros(DType::f64, {B, T, H, Dqk});
  Owned dv = zeros(DType::f64, {B, T, H, Dv});
  attention_forward(ctx, out, lse, q, k, v, scale);
  attention_backward(ctx, dq, dk, dv, R, out, lse, q, k, v, scale);
  auto loss = [&] {
    attention_forward(ctx, out, lse, q, k, v, scale);
    return dot(out, R);
  };
  // Smooth (softmax); measured ~1e-9 relative, bound 1e-6.
  CHECK(run_gradcheck("attention", {{"q", q, dq}, {"k", k, dk}, {"v", v, dv}}, loss) < 1e-6);
  // Gradients overwrite: a second call gives the same values.
  attention_forward(ctx, out, lse, q, k, v, scale);
  Owned dq2 = clone(dq);
  attention_backward(ctx, dq2, Tensor{}, Tensor{}, R, out, lse, q, k, v, scale);
  CHECK(bitwise_equal(dq2, dq));
}

TEST_CASE("attention f32 agrees with f64", "[ops][attention][precision]") {
  // The f32 path is a separate implementation (sgemm per (batch, head) pair), so several shapes, incl. T = 1.
  const Context ctx = cpu_ctx();
  struct Shape { int64_t B, T, H, Dqk, Dv; };
  for (Shape s : {Shape{1, 16, 2, 12, 8}, Shape{2, 1, 3, 6, 4}, Shape{2, 37, 3, 24, 16}, Shape{1, 64, 1, 8, 8}}) {
    const auto [B, T, H, Dqk, Dv] = s;
    Owned q = rand(DType::f64, {B, T, H, Dqk}, 81), k = rand(DType::f64, {B, T, H, Dqk}, 82);
    Owned v = rand(DType::f64, {B, T, H, Dv}, 83), R = rand(DType::f64, {B, T, H, Dv}, 84);
    auto run = [&](DType dt) {
      Owned qq = as(dt, q), kk = as(dt, k), vv = as(dt, v), RR = as(dt, R);
      Owned out = zeros(dt, {B, T, H, Dv}), lse = zeros(dt, {B, H, T});
      Owned dq = zeros(dt, {B, T, H, Dqk}), dk = zeros(dt, {B, T, H, Dqk}), dv = zeros(dt, {B, T, H, Dv});
      attention_forward(ctx, out, lse, qq, kk, vv, 0.3);
      attention_backward(ctx, dq, dk, dv, RR, out, lse, qq, kk, vv, 0.3);
      return std::vector<Owned>{out, lse, dq, dk, dv};
    };
    std::vector<Owned> a = run(DType::f32), b = run(DType::f64);
    INFO("B " << B << " T " << T << " H " << H << " Dqk " << Dqk << " Dv " << Dv);
    // f32 products over at most T terms: relative error ~1e-7 * sqrt(T); dq/dk vanish at T = 1 (abs check).
    for (size_t i = 0; i < a.size(); ++i) {
      if (T == 1 && (i == 2 || i == 3)) CHECK(max_abs_diff(a[i].f64(), b[i].f64()) < 1e-6);
      else CHECK(max_rel_diff(a[i].f64(), b[i].f64()) < 5e-6);
    }
  }
}

TEST_CASE("mla_attention: kv_b's layout in place, gradient check", "[ops][attention][mla][gradcheck]") {
  // Head h's key is [kv[.., h, :dn] | k_pe], its value kv[.., h, dn:]: the forward equals attention_forward on those
  // keys built by hand, and the gradients (d_k_pe summed over the heads) pass a finite-difference check.
  const Context ctx = cpu_ctx();
  const int64_t B = 2, T = 5, H = 3, dn = 4, dr = 2, Dv = 3, Dqk = dn + dr, W = dn + Dv;
  const double scale = 0.45;
  Owned q = rand(DType::f64, {B, T, H, Dqk}, 91), kv = rand(DType::f64, {B, T, H, W}, 92);
  Owned pe = rand(DType::f64, {B, T, dr}, 93), R = rand(DType::f64, {B, T, H, Dv}, 94);
  Owned k = zeros(DType::f64, {B, T, H, Dqk}), v = zeros(DType::f64, {B, T, H, Dv});
  for (int64_t n = 0; n < B * T; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const double* src = kv.p<double>() + (n * H + h) * W;
      double* kr = k.p<double>() + (n * H + h) * Dqk;
      double* vr = v.p<double>() + (n * H + h) * Dv;
      for (int64_t c = 0; c < dn; ++c) kr[c] = src[c];
      for (int64_t c = 0; c < dr; ++c) kr[dn + c] = pe.p<double>()[n * dr + c];
      for (int64_t c = 0; c < Dv; ++c) vr[c] = src[dn + c];
    }
  Owned out = zeros(DType::f64, {B, T, H, Dv}), lse = zeros(DType::f64, {B, H, T});
  Owned out2 = zeros(DType::f64, {B, T, H, Dv}), lse2 = zeros(DType::f64, {B, H, T});
  mla_attention_forward(ctx, out, lse, q, kv, pe, scale);
  attention_forward(ctx, out2, lse2, q, k, v, scale);
  CHECK(bitwise_equal(out, out2));
  CHECK(bitwise_equal(lse, lse2));

  Owned dq = zeros(DType::f64, {B, T, H, Dqk}), dkv = zeros(DType::f64, {B, T, H, W});
  Owned dpe_h = zeros(DType::f64, {B, T, H, dr}), dpe = zeros(DType::f64, {B, T, dr});
  mla_attention_backward(ctx, dq, dkv, dpe_h, R, out, lse, q, kv, pe, scale);
  for (int64_t n = 0; n < B * T; ++n)
    for (int64_t c = 0; c < dr; ++c) {
      double s = 0;
      for (int64_t h = 0; h < H; ++h) s += dpe_h.p<double>()[(n * H + h) * dr + c];
      dpe.p<double>()[n * dr + c] = s;
    }
  auto loss = [&] {
    mla_attention_forward(ctx, out, lse, q, kv, pe, scale);
    return dot(out, R);
  };
  // Smooth (softmax), as attention's check: measured ~1e-9 relative, bound 1e-6.
  CHECK(run_gradcheck("mla_attention", {{"q", q, dq}, {"kv", kv, dkv}, {"k_pe", pe, dpe}}, loss) < 1e-6);
  // d_q alone and d_kv with d_k_pe alone (two calls, as on two streams): the joint call's bits
  mla_attention_forward(ctx, out, lse, q, kv, pe, scale);
  mla_attention_backward(ctx, dq, dkv, dpe_h, R, out, lse, q, kv, pe, scale);
  Owned dq1 = zeros(DType::f64, {B, T, H, Dqk}), dkv1 = zeros(DType::f64, {B, T, H, W});
  Owned dpe1 = zeros(DType::f64, {B, T, H, dr});
  mla_attention_backward(ctx, dq1, Tensor{}, Tensor{}, R, out, lse, q, kv, pe, scale);
  mla_attention_backward(ctx, Tensor{}, dkv1, dpe1, R, out, lse, q, kv, pe, scale);
  CHECK(bitwise_equal(dq1, dq));
  CHECK(bitwise_equal(dkv1, dkv));
  CHECK(bitwise_equal(dpe1, dpe_h));
  CHECK_THROWS_WITH(mla_attention_backward(ctx, Tensor{}, Tensor{}, Tensor{}, R, out, lse, q, kv, pe, scale),
                    Catch::Contains("nothing to compute"));
  CHECK_THROWS_WITH(mla_attention_backward(ctx, dq1, dkv1, Tensor{}, R, out, lse, q, kv, pe, scale),
                    Catch::Contains("together"));
  // shapes are checked: a k_pe of the wrong width
  Owned bad = zeros(DType::f64, {B, T, dr + 1});
  CHECK_THROWS_WITH(mla_attention_forward(ctx, out, lse, q, kv, bad, scale), Catch::Contains("k_pe"));
}
