// Projections stacked in memory (lib/model/layers.h): q_a with kv_a and the MLPs' gate with up run as one product
// when their weights are adjacent. The one-product path against the two-product fallback (same loss and gradients
// up to the rounding of d_x's one sum over both), the adjacency the arenas give, the random init the reordering kept,
// and the fallback for gradients that lie apart.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "../common/model_fixtures.h"
#include "model/model.h"
#include "ops/ops.h"

using namespace ds;
using test::random_batch;
using test::rel_l2;
using test::tiny_v3;

namespace {

// One forward and backward of a model with the one-product path on or off.
LossInfo step(Model& m, const Batch& b, bool fused) {
  m.set_fused_projections(fused);
  m.enable_grads();
  m.zero_grads();
  ForwardOptions fo;
  fo.balance_alpha = 0.1;
  fo.mtp_lambda = 0.5;
  LossInfo li = m.forward(b, fo);
  m.backward();
  return li;
}

}  // namespace

TEST_CASE("fused projections: one product = two products (loss and every gradient)", "[model][fused_proj]") {
  for (DType dt : {DType::f32, DType::f64}) {
    for (int64_t q_lora : {int64_t(10), int64_t(0)}) {
      ModelConfig c = tiny_v3(16);
      c.q_lora_rank = q_lora;
      Context ctx;
      Model one(c, ctx, dt), two(c, ctx, dt);
      one.init_random(17);
      two.init_random(17);
      const Batch b = random_batch(c, 2, 6, 18);
      const LossInfo l1 = step(one, b, true), l2 = step(two, b, false);

      // the paths taken: the dense MLP, the shared expert and (with q_lora) MLA stacked, or not
      const BlockActs &d1 = one.layer_acts(0), &m1 = one.layer_acts(1), &d2 = two.layer_acts(0);
      CHECK(!d1.mlp.gu.empty());
      CHECK(d1.mlp.g.empty());
      CHECK(!m1.moe.shared.gu.empty());
      CHECK(d1.mla.kv_col == q_lora);
      CHECK(d2.mlp.gu.empty());
      CHECK(!d2.mlp.g.empty());
      CHECK(d2.mla.kv_col == 0);

      const double tol = dt == DType::f64 ? 1e-12 : 1e-5;
      const std::string what = std::string(dtype_name(dt)) + (q_lora ? " q_lora" : " q_proj");
      std::printf("fused_proj %s: loss one %.17g two %.17g\n", what.c_str(), l1.loss, l2.loss);
      INFO(what);
      CHECK(std::abs(l1.loss - l2.loss) <= tol * std::abs(l2.loss));
      CHECK(l1.balance_loss == Approx(l2.balance_loss).epsilon(tol));
      double worst = 0;
      std::string worst_name;
      for (size_t i = 0; i < one.grad_arena().size(); ++i) {
        const std::string& n = one.grad_arena().name(i);
        if (is_buffer_name(n)) continue;
        const double r = rel_l2(to_host_f64(one.grad_arena()[i]), to_host_f64(two.grad_arena()[i]));
        if (r > worst) worst = r, worst_name = n;
      }
      std::printf("fused_proj %s: worst gradient rel_l2 %.3e (%s)\n", what.c_str(), worst, worst_name.c_str());
      INFO("worst gradient " << worst_name);
      CHECK(worst <= (dt == DType::f64 ? 1e-11 : 1e-4));
    }
  }
}

TEST_CASE("fused projections: the arenas lay q_a with kv_a and gate with up side by side", "[model][fused_proj]") {
  ModelConfig c = tiny_v3(16);
  Context ctx;
  Model m(c, ctx);
  m.enable_grads();
  for (ModelWeights* w : {&m.weights(), &m.grads()}) {
    for (const BlockWeights& bw : w->layers) {
      const Tensor qkv = adjacent_rows(bw.attn.q_a_proj, bw.attn.kv_a_proj);
      REQUIRE(!qkv.empty());
      CHECK(qkv.dim(0) == c.q_lora_rank + c.kv_lora_rank + c.qk_rope_head_dim);
      const MlpWeights& mlp = bw.moe ? bw.moe_w.shared : bw.mlp;
      CHECK(!adjacent_rows(mlp.gate_proj, mlp.up_proj).empty());
    }
  }
  // D = 12 in f32: q_a_proj (10 x 12 x 4 = 480 bytes) and the shared gate_proj (6 x 12 x 4) end off the 64-byte
  // grid, so their partners start after a gap and the forward takes two products; the dense MLP's (16 rows) do not
  ModelConfig c12 = c;
  c12.hidden_size = 12;
  Model m12(c12, ctx);
  m12.init_random(3);
  CHECK(!m12.fused_projections());  // the CPU's default: two products (on CUDA one, unless DS_FUSED_PROJ=0)
  m12.set_fused_projections(true);
  CHECK(adjacent_rows(m12.weights().layers[0].attn.q_a_proj, m12.weights().layers[0].attn.kv_a_proj).empty());
  m12.forward(random_batch(c12, 1, 4, 4));
  CHECK(m12.layer_acts(0).mla.kv_col == 0);
  CHECK(!m12.layer_acts(0).mlp.gu.empty());
  CHECK(m12.layer_acts(1).moe.shared.gu.empty());

  // not adjacent: another order, another width, another dtype, a gap
  const BlockWeights& bw = m.weights().layers[0];
  CHECK(adjacent_rows(bw.attn.kv_a_proj, bw.attn.q_a_proj).empty());
  CHECK(adjacent_rows(bw.mlp.gate_proj, bw.mlp.down_proj).empty());  // same width, up_proj between
  std::vector<double> mem(64);
  const Tensor a(mem.data(), DType::f64, {2, 4}), b(mem.data() + 8, DType::f64, {3, 4});
  CHECK(adjacent_rows(a, b).dim(0) == 5);
  CHECK(adjacent_rows(a, Tensor(mem.data() + 8, DType::f32, {3, 8})).empty());
  CHECK(adjacent_rows(a, Tensor(mem.data() + 8, DType::f64, {3, 3})).empty());
  CHECK(adjacent_rows(a, Tensor(mem.data() + 9, DType::f64, {3, 4})).empty());
}

TEST_CASE("fused projections: a seed gives the weights of the declaration order before", "[model][fused_proj]") {
  // q_a_proj, kv_a_proj, q_a_layernorm, q_b_proj are declared in this order now; kv_a_proj was declared after q_b_proj
  ModelConfig c = tiny_v3(16);
  Context ctx;
  Model m(c, ctx);
  const uint64_t seed = 23;
  m.init_random(seed);
  const Arena& p = m.params();
  const std::vector<uint64_t> s = init_streams(p);
  std::vector<bool> seen(s.size(), false);
  for (uint64_t x : s) {
    REQUIRE(x < s.size());
    CHECK(!seen[x]);
    seen[x] = true;
  }
  for (const std::string layer : {"0", "1", "2"}) {
    const std::string a = "model.layers." + layer + ".self_attn.";
    const size_t qa = p.index(a + "q_a_proj.weight");
    CHECK(p.index(a + "kv_a_proj_with_mqa.weight") == qa + 1);
    // the streams of before: q_a_proj qa, q_a_layernorm qa + 1, q_b_proj qa + 2, kv_a_proj qa + 3
    for (auto [name, old] : {std::pair<std::string, size_t>{"kv_a_proj_with_mqa.weight", qa + 3},
                             {"q_b_proj.weight", qa + 2}, {"q_a_proj.weight", qa}}) {
      const std::vector<double> v = to_host_f64(p.get(a + name));
      for (size_t j : {size_t(0), size_t(5), v.size() - 1})
        CHECK(v[j] == double(float(c.initializer_range * rng_normal_at(seed, 1000 + old, j))));
    }
  }
  // a config without q_lora declares q_proj then kv_a_proj, as before
  ModelConfig c0 = c;
  c0.q_lora_rank = 0;
  Model m0(c0, ctx);
  const std::vector<uint64_t> s0 = init_streams(m0.params());
  for (size_t i = 0; i < s0.size(); ++i) CHECK(s0[i] == i);
}

TEST_CASE("fused projections: weights adjacent, gradients apart (the copy fallback)", "[model][fused_proj]") {
  // mlp_forward / mlp_backward on hand-made tensors: gate and up in one buffer, their gradients in two
  const int64_t M = 5, D = 4, F = 6;
  Context ctx;
  ModelConfig c = tiny_v3(16);
  LayerEnv env;
  env.ctx = &ctx;
  env.cfg = &c;
  env.dtype = env.sdtype = DType::f64;
  env.fuse_proj = true;
  auto fill = [](std::vector<double>& v, uint64_t stream) {
    for (size_t i = 0; i < v.size(); ++i) v[i] = rng_normal_at(31, stream, i);
  };
  std::vector<double> gu(size_t(2 * F * D)), down(size_t(D * F)), x(size_t(M * D)), dy(size_t(M * D));
  fill(gu, 1), fill(down, 2), fill(x, 3), fill(dy, 4);
  MlpWeights w;
  w.gate_proj = Tensor(gu.data(), DType::f64, {F, D});
  w.up_proj = Tensor(gu.data() + F * D, DType::f64, {F, D});
  w.down_proj = Tensor(down.data(), DType::f64, {D, F});
  const Tensor xt(x.data(), DType::f64, {M, D}), dyt(dy.data(), DType::f64, {M, D});

  auto run = [&](bool fused, bool grads_adjacent, std::vector<double>& dx, std::vector<double>& dg,
                 std::vector<double>& du, std::vector<double>& dd) {
    env.fuse_proj = fused;
    Workspace ws;
    MlpActs a;
    mlp_forward(env, ws, "mlp", a, xt, w);
    CHECK(a.gu.empty() == !fused);
    std::vector<double> gmem(size_t(2 * F * D + 8), 0.0);  // 8 doubles apart unless adjacent
    dd.assign(size_t(D * F), 0.0);
    MlpWeights g;
    g.gate_proj = Tensor(gmem.data(), DType::f64, {F, D});
    g.up_proj = Tensor(gmem.data() + F * D + (grads_adjacent ? 0 : 8), DType::f64, {F, D});
    g.down_proj = Tensor(dd.data(), DType::f64, {D, F});
    CHECK(adjacent_rows(g.gate_proj, g.up_proj).empty() == !grads_adjacent);
    dx.assign(size_t(M * D), 0.0);
    Workspace scratch;
    mlp_backward(env, scratch, Tensor(dx.data(), DType::f64, {M, D}), Accum::overwrite, g, dyt, xt, a, w);
    dg = to_host_f64(g.gate_proj);
    du = to_host_f64(g.up_proj);
  };
  std::vector<double> dx0, dg0, du0, dd0, dx1, dg1, du1, dd1, dx2, dg2, du2, dd2;
  run(false, true, dx0, dg0, du0, dd0);
  run(true, true, dx1, dg1, du1, dd1);
  run(true, false, dx2, dg2, du2, dd2);
  // the copy fallback makes the unfused weight-gradient products and the fused d_x product: the same bits
  CHECK(dg2 == dg0);
  CHECK(du2 == du0);
  CHECK(dd2 == dd0);
  CHECK(dx2 == dx1);
  // one product against two: the same sums for the weights (grouped by the BLAS), one over 2F instead of two for d_x
  CHECK(rel_l2(dg1, dg0) < 1e-14);
  CHECK(rel_l2(du1, du0) < 1e-14);
  CHECK(dd1 == dd0);
  CHECK(rel_l2(dx1, dx0) < 1e-14);
}
