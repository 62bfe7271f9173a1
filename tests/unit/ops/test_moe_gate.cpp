// MoE gate semantics (MODEL.md §3.2), its gradient, the sequence-wise balance loss and the bias update.
#include "helpers.h"

using namespace ds;
using namespace ds::test;

namespace {

// Logits whose sigmoid is exactly-ish the given scores.
std::vector<double> logit_of(const std::vector<double>& s) {
  std::vector<double> l;
  for (double x : s) l.push_back(std::log(x / (1 - x)));
  return l;
}

struct GateOut {
  Owned idx, w, scores;
};

GateOut gate(const std::vector<double>& logits, int64_t N, int64_t E, const GateOptions& opt,
             const std::vector<double>& bias = {}, DType dt = DType::f64) {
  const Context ctx = cpu_ctx();
  GateOut g{zeros(DType::i32, {N, opt.top_k}), zeros(dt, {N, opt.top_k}), zeros(dt, {N, E})};
  Owned b = bias.empty() ? Owned{} : from(dt, {E}, bias);
  moe_gate_forward(ctx, g.idx, g.w, g.scores, from(dt, {N, E}, logits), b, opt);
  return g;
}

GateOptions v3_like(int n_group, int topk_group, int top_k, double scale = 2.5) {
  GateOptions o;
  o.score_func = ScoreFunc::sigmoid;
  o.topk_method = TopkMethod::noaux_tc;
  o.n_group = n_group;
  o.topk_group = topk_group;
  o.top_k = top_k;
  o.norm_topk_prob = true;
  o.routed_scaling_factor = scale;
  return o;
}

}  // namespace

TEST_CASE("sigmoid gate on a hand-made example", "[ops][gate]") {
  GateOut g = gate(logit_of({0.2, 0.9, 0.6, 0.7}), 1, 4, v3_like(1, 1, 2));
  CHECK(g.idx.i64() == std::vector<int64_t>{1, 3});  // descending score order
  CHECK(max_abs_diff(g.w.f64(), {0.9 / 1.6 * 2.5, 0.7 / 1.6 * 2.5}) < 1e-14);
  CHECK(max_abs_diff(g.scores.f64(), {0.2, 0.9, 0.6, 0.7}) < 1e-15);
}

TEST_CASE("bias changes the selection but not the weights", "[ops][gate]") {
  const std::vector<double> l = logit_of({0.9, 0.8, 0.3, 0.2});
  GateOut plain = gate(l, 1, 4, v3_like(1, 1, 2));
  CHECK(plain.idx.i64() == std::vector<int64_t>{0, 1});
  GateOut biased = gate(l, 1, 4, v3_like(1, 1, 2), {0, 0, 1.0, 0});
  CHECK(biased.idx.i64() == std::vector<int64_t>{2, 0});  // s' = 1.3, 0.9
  // Weights are the UNBIASED scores of the chosen experts, renormalised, times the scaling factor.
  CHECK(max_abs_diff(biased.w.f64(), {0.3 / 1.2 * 2.5, 0.9 / 1.2 * 2.5}) < 1e-14);
  CHECK(max_abs_diff(biased.scores.f64(), plain.scores.f64()) == 0.0);
}

TEST_CASE("dropped groups are masked to -inf, not 0.0", "[ops][gate]") {
  // Groups {0,1} and {2,3}. s' = s + b = [-0.2, -0.3, -0.3, -0.3]: group 0 (sum -0.5) beats group 1 (-0.6).
  // With HF's 0.0 mask, experts 2 and 3 (masked to 0.0 > -0.2) would win; the official -inf keeps 0 and 1.
  GateOut g = gate(logit_of({0.3, 0.2, 0.6, 0.6}), 1, 4, v3_like(2, 1, 2), {-0.5, -0.5, -0.9, -0.9});
  CHECK(g.idx.i64() == std::vector<int64_t>{0, 1});
  CHECK(max_abs_diff(g.w.f64(), {0.3 / 0.5 * 2.5, 0.2 / 0.5 * 2.5}) < 1e-13);
}

TEST_CASE("noaux_tc ranks groups by top-2 sum, group_limited_greedy by max", "[ops][gate]") {
  // Group 0 = {0.9, 0.1, 0.1} (max 0.9, top-2 1.0); group 1 = {0.8, 0.7, 0.1} (max 0.8, top-2 1.5).
  const std::vector<double> l = logit_of({0.9, 0.1, 0.1, 0.8, 0.7, 0.1});
  GateOut tc = gate(l, 1, 6, v3_like(2, 1, 1));
  CHECK(tc.idx.i64() == std::vector<int64_t>{3});
  GateOptions glg = v3_like(2, 1, 1);
  glg.topk_method = TopkMethod::group_limited_greedy;
  GateOut gg = gate(l, 1, 6, glg);
  CHECK(gg.idx.i64() == std::vector<int64_t>{0});
  GateOptions greedy = v3_like(2, 1, 2);  // greedy ignores groups
  greedy.topk_method = TopkMethod::greedy;
  CHECK(gate(l, 1, 6, greedy).idx.i64() == std::vector<int64_t>{0, 3});
}

TEST_CASE("exact ties go to the lower expert and group index", "[ops][gate]") {
  const std::vector<double> l(8, 0.0);  // every score is 0.5
  GateOut g = gate(l, 1, 8, v3_like(4, 2, 3));
  CHECK(g.idx.i64() == std::vector<int64_t>{0, 1, 2});
  CHECK(max_abs_diff(g.w.f64(), {2.5 / 3, 2.5 / 3, 2.5 / 3}) < 1e-14);
  // Groups 1 and 3 tie above 0 and 2: the lower of the tied groups wins, then the lower experts.
  GateOut h = gate({0, 0, 1, 1, 0, 0, 1, 1}, 1, 8, v3_like(4, 1, 2));
  CHECK(h.idx.i64() == std::vector<int64_t>{2, 3});
  GateOptions greedy = v3_like(1, 1, 4);
  greedy.topk_method = TopkMethod::greedy;
  CHECK(gate({1, 0, 1, 0, 1, 0, 1, 0}, 1, 8, greedy).idx.i64() == std::vector<int64_t>{0, 2, 4, 6});
}

TEST_CASE("softmax gate without renormalisation", "[ops][gate]") {
  GateOptions o;
  o.score_func = ScoreFunc::softmax;
  o.topk_method = TopkMethod::greedy;
  o.top_k = 2;
  o.norm_topk_prob = false;
  o.routed_scaling_factor = 1.5;
  GateOut g = gate({0, std::log(2.0), std::log(3.0), 0}, 1, 4, o);  // softmax = [1, 2, 3, 1] / 7
  CHECK(g.idx.i64() == std::vector<int64_t>{2, 1});
  CHECK(max_abs_diff(g.w.f64(), {3.0 / 7 * 1.5, 2.0 / 7 * 1.5}) < 1e-15);
  CHECK(std::abs(g.scores.f64()[3] - 1.0 / 7) < 1e-15);
}

TEST_CASE("moe gate gradient check", "[ops][gate][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 6, E = 8;
  struct Case {
    const char* name;
    GateOptions opt;
    bool bias;
  };
  GateOptions soft_norm = v3_like(1, 1, 3, 1.0);
  soft_norm.score_func = ScoreFunc::softmax;
  soft_norm.topk_method = TopkMethod::greedy;
  GateOptions soft_plain = soft_norm;
  soft_plain.norm_topk_prob = false;
  soft_plain.routed_scaling_factor = 16.0;
  GateOptions sig_plain = v3_like(4, 2, 3, 2.5);
  sig_plain.topk_method = TopkMethod::group_limited_greedy;
  sig_plain.norm_topk_prob = false;
  const Case cases[] = {{"moe_gate sigmoid noaux_tc", v3_like(4, 2, 3, 2.5), true},
                        {"moe_gate sigmoid glg no-norm", sig_plain, false},
                        {"moe_gate softmax norm", soft_norm, false},
                        {"moe_gate softmax no-norm", soft_plain, false}};
  for (const Case& cs : cases) {
    const GateOptions& opt = cs.opt;
    const int64_t K = opt.top_k;
    Owned logits = rand(DType::f64, {N, E}, 91, -2, 2), bias = cs.bias ? rand(DType::f64, {E}, 92, -0.3, 0.3) : Owned{};
    Owned R1 = rand(DType::f64, {N, K}, 93), R2 = rand(DType::f64, {N, E}, 94);
    Owned idx = zeros(DType::i32, {N, K}), w = zeros(DType::f64, {N, K}), scores = zeros(DType::f64, {N, E});
    Owned dl = zeros(DType::f64, {N, E});
    moe_gate_forward(ctx, idx, w, scores, logits, bias, opt);
    const std::vector<int64_t> chosen = idx.i64();
    moe_gate_backward(ctx, dl, R1, R2, scores, idx, opt);
    auto loss = [&] {
      moe_gate_forward(ctx, idx, w, scores, logits, bias, opt);
      REQUIRE(idx.i64() == chosen);  // the step must not flip the selection
      return dot(w, R1) + dot(scores, R2);
    };
    // Smooth for a fixed selection; measured ~1e-9 relative, bound 1e-6.
    CHECK(run_gradcheck(cs.name, {{"logits", logits, dl}}, loss) < 1e-6);
  }
}

TEST_CASE("moe gate f32 agrees with f64", "[ops][gate][precision]") {
  const int64_t N = 32, E = 16;
  const std::vector<double> l = uniform(N * E, 95, -3, 3), b = uniform(E, 96, -0.2, 0.2);
  GateOut a = gate(l, N, E, v3_like(4, 2, 4), b, DType::f32), c = gate(l, N, E, v3_like(4, 2, 4), b, DType::f64);
  CHECK(a.idx.i64() == c.idx.i64());
  CHECK(max_rel_diff(a.w.f64(), c.w.f64()) < 1e-6);
  CHECK(max_rel_diff(a.scores.f64(), c.scores.f64()) < 1e-6);
}

TEST_CASE("balance loss by hand", "[ops][balance]") {
  const Context ctx = cpu_ctx();
  // Two sequences of two tokens, E = 2, K = 1.
  Owned scores = from(DType::f64, {4, 2}, {0.5, 0.5, 0.2, 0.6, 0.9, 0.1, 0.3, 0.3});
  Owned idx = ints({4, 1}, {0, 1, 0, 0});
  // seq 1: f = [1, 1], P = [0.375, 0.625] -> 1.0;  seq 2: f = [2, 0], P0 = 0.7 -> 1.4;  L = 0.1 * 2.4 / 2.
  CHECK(std::abs(moe_balance_loss_forward(ctx, scores, idx, 2, 0.1) - 0.12) < 1e-15);
}

TEST_CASE("balance loss gradient check", "[ops][balance][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 8, E = 6, K = 2, T = 4;
  const double alpha = 0.7;
  Owned scores = rand(DType::f64, {N, E}, 101, 0.05, 0.95);
  Owned idx = ints({N, K}, {0, 1, 2, 3, 4, 5, 0, 5, 1, 2, 3, 0, 5, 4, 2, 1});
  Owned d = from(DType::f64, {N, E}, std::vector<double>(size_t(N * E), 0.25));  // accumulates onto this
  moe_balance_loss_backward(ctx, d, 2.0, scores, idx, T, alpha);
  axpy(ctx, d, -1.0, from(DType::f64, {N, E}, std::vector<double>(size_t(N * E), 0.25)));
  scale(ctx, d, 0.5);  // d_loss = 2 above
  auto loss = [&] { return moe_balance_loss_forward(ctx, scores, idx, T, alpha); };
  // Rational function of the scores; measured ~1e-10 relative, bound 1e-6.
  CHECK(run_gradcheck("moe_balance_loss", {{"scores", scores, d}}, loss) < 1e-6);
}

TEST_CASE("gate + balance loss chained through d_scores_extra", "[ops][gate][balance][gradcheck]") {
  const Context ctx = cpu_ctx();
  const int64_t N = 8, E = 8, T = 4;
  const GateOptions opt = v3_like(2, 1, 2, 2.5);
  Owned logits = rand(DType::f64, {N, E}, 111, -2, 2), bias = rand(DType::f64, {E}, 112, -0.2, 0.2);
  Owned R = rand(DType::f64, {N, 2}, 113);
  Owned idx = zeros(DType::i32, {N, 2}), w = zeros(DType::f64, {N, 2}), scores = zeros(DType::f64, {N, E});
  Owned dscores = zeros(DType::f64, {N, E}), dl = zeros(DType::f64, {N, E});
  moe_gate_forward(ctx, idx, w, scores, logits, bias, opt);
  moe_balance_loss_backward(ctx, dscores, 1.0, scores, idx, T, 0.5);
  moe_gate_backward(ctx, dl, R, dscores, scores, idx, opt);
  auto loss = [&] {
    moe_gate_forward(ctx, idx, w, scores, logits, bias, opt);
    return dot(w, R) + moe_balance_loss_forward(ctx, scores, idx, T, 0.5);
  };
  // Bound 1e-6 (measured ~1e-9).
  CHECK(run_gradcheck("moe_gate+balance_loss", {{"logits", logits, dl}}, loss) < 1e-6);
}

TEST_CASE("bias update sign rule", "[ops][gate]") {
  const Context ctx = cpu_ctx();
  Owned bias = from(DType::f32, {4}, {0.5, 0, 0, 0});
  Owned load = zeros(DType::i64, {4});
  const int64_t l[4] = {1, 3, 2, 2};  // mean 2
  std::memcpy(load.t.data, l, sizeof l);
  moe_bias_update(ctx, bias, load, 0.001);
  // Underloaded expert 0 gains gamma, overloaded expert 1 loses it, balanced ones stay.
  CHECK(max_abs_diff(bias.f64(), {double(0.5f + 0.001f), -0.001, 0, 0}) < 1e-9);
}

TEST_CASE("moe_bias_update_many: each layer's moe_bias_update; mismatched lists are bad input", "[ops][gate]") {
  const Context ctx = cpu_ctx();
  Owned b1 = rand(DType::f32, {4}, 3), b2 = rand(DType::f32, {6}, 4), l1 = zeros(DType::i64, {4}),
        l2 = zeros(DType::i64, {6});
  for (int e = 0; e < 4; ++e) l1.p<int64_t>()[e] = e;
  for (int e = 0; e < 6; ++e) l2.p<int64_t>()[e] = 10 - e;
  Owned r1 = clone(b1), r2 = clone(b2);
  moe_bias_update(ctx, r1, l1, 0.01);
  moe_bias_update(ctx, r2, l2, 0.01);
  moe_bias_update_many(ctx, {b1.t, b2.t}, {l1.t, l2.t}, 0.01);
  CHECK(b1.f64() == r1.f64());
  CHECK(b2.f64() == r2.f64());
  CHECK_THROWS_WITH(moe_bias_update_many(ctx, {b1.t, b2.t}, {l1.t}, 0.01), Catch::Contains("2 biases but 1 loads"));
  CHECK_THROWS_WITH(moe_bias_update_many(ctx, {b1.t}, {l2.t}, 0.01), Catch::Contains("must match bias"));
  // with a verdict (grad_clip_verdict's): a step on (scale, 0, norm), none on a skipped one (scale, 1, norm)
  Owned go = from(DType::f64, {3}, {1.0, 0.0, 0.5}), skip = from(DType::f64, {3}, {0.0, 1.0, NAN});
  moe_bias_update(ctx, r1, l1, 0.01);
  moe_bias_update_many(ctx, {b1.t}, {l1.t}, 0.01, go);
  CHECK(b1.f64() == r1.f64());
  moe_bias_update_many(ctx, {b1.t}, {l1.t}, 0.01, skip);
  CHECK(b1.f64() == r1.f64());
  Owned short_v = zeros(DType::f64, {2});
  CHECK_THROWS_WITH(moe_bias_update_many(ctx, {b1.t}, {l1.t}, 0.01, short_v), Catch::Contains("must be f64 [3]"));
}
