// Whole-model finite-difference gradient checks in double precision: MLA (with and without q_lora), a dense
// layer, a grouped sigmoid MoE layer with a shared expert and the balance loss, and an MTP module.
#include <catch2/catch.hpp>

#include <cmath>
#include <memory>
#include <string>
#include <vector>

#include "../common/gradcheck.h"
#include "../common/model_fixtures.h"
#include "model/model.h"

using namespace ds;
using test::random_batch;
using test::tiny_v3;

namespace {

// Runs the check over every trainable tensor (a random subset of each) and returns the result.
test::GradCheckResult check_model(const ModelConfig& cfg, const ForwardOptions& fo, uint64_t seed) {
  Context ctx;
  Model m(cfg, ctx, DType::f64);
  m.init_random(seed);
  // Non-zero router biases, so that selection differs from the unbiased ranking.
  for (auto& l : m.weights().layers)
    if (l.moe && !l.moe_w.bias.empty()) {
      std::vector<double> b(size_t(cfg.n_routed_experts));
      for (size_t i = 0; i < b.size(); ++i) b[i] = 0.05 * double(i % 3) - 0.03;
      from_host(l.moe_w.bias, b);
    }
  Batch batch = random_batch(cfg, 2, 5, seed + 1);
  m.enable_grads();
  m.zero_grads();
  m.forward(batch, fo);
  m.backward();
  std::vector<test::GradParam> params;
  for (size_t i = 0; i < m.params().size(); ++i) {
    const std::string& n = m.params().name(i);
    if (is_buffer_name(n)) continue;
    params.push_back({n, m.params()[i], m.grad_arena()[i]});
  }
  test::GradCheckOptions opt;
  opt.max_elements = 6;
  opt.step = 1e-6;
  return test::gradcheck(params, [&] { return m.forward(batch, fo).loss; }, opt);
}

}  // namespace

TEST_CASE("model gradient: MLA with q_lora, dense + grouped MoE with shared expert, MTP, balance loss", "[model][grad]") {
  ModelConfig c = tiny_v3();
  ForwardOptions fo;
  fo.balance_alpha = 0.1;
  fo.mtp_lambda = 0.5;
  auto r = check_model(c, fo, 7);
  INFO(r.summary());
  // Double precision, h = 1e-6: truncation ~h^2 and rounding ~1e-16/h leave ~1e-9 relative error; the bound
  // leaves room for the rare element near a top-k selection boundary, which would show up as O(1) instead.
  CHECK(r.max_rel_err < 1e-5);
  CHECK(r.checked > 200);
}

TEST_CASE("model gradient: plain q_proj, softmax group-limited gate, tied embeddings, no MTP", "[model][grad]") {
  ModelConfig c = tiny_v3();
  c.q_lora_rank = 0;
  c.scoring_func = ScoreFunc::softmax;
  c.topk_method = TopkMethod::group_limited_greedy;
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 1.5;
  c.tie_word_embeddings = true;
  c.num_nextn_predict_layers = 0;
  c.yarn.enabled = false;
  auto r = check_model(c, ForwardOptions{}, 11);
  INFO(r.summary());
  CHECK(r.max_rel_err < 1e-5);
}

TEST_CASE("policy-gradient backward: dL/dlogp per token through temperature-scaled log-probs", "[model][grad]") {
  ModelConfig c = tiny_v3();
  c.num_nextn_predict_layers = 0;
  Context ctx;
  Model m(c, ctx, DType::f64);
  m.init_random(13);
  Batch batch = random_batch(c, 2, 5, 14);
  batch.loss_mask.assign(batch.tokens.size(), 1);
  batch.loss_mask[1] = 0;  // a prompt token: not a target
  ForwardOptions fo;
  fo.mtp = false;
  fo.logit_temperature = 0.7;
  // L = sum_t coef_t * logp_t with arbitrary coefficients (what a GRPO loss hands back per token)
  std::vector<double> coef(10);
  for (size_t i = 0; i < coef.size(); ++i) coef[i] = 0.3 * double(int(i % 5) - 2);
  coef[0] = 0.0;  // row 0 predicts token 1, which is masked
  auto loss = [&] {
    m.forward(batch, fo);
    std::vector<double> lp = m.target_logprobs();
    double l = 0;
    for (size_t i = 0; i < lp.size(); ++i) l += coef[i] * lp[i];
    return l;
  };
  m.enable_grads();
  m.zero_grads();
  loss();
  m.backward_policy(coef);
  std::vector<test::GradParam> params;
  for (size_t i = 0; i < m.params().size(); ++i)
    if (!is_buffer_name(m.params().name(i))) params.push_back({m.params().name(i), m.params()[i], m.grad_arena()[i]});
  test::GradCheckOptions opt;
  opt.max_elements = 5;
  opt.step = 1e-6;
  auto r = test::gradcheck(params, loss, opt);
  INFO(r.summary());
  CHECK(r.max_rel_err < 1e-5);
}

TEST_CASE("distillation backward: cross-entropy + MTP + weight * KL(teacher || student)", "[model][grad][distill]") {
  ModelConfig c = tiny_v3();
  Context ctx;
  Model student(c, ctx, DType::f64), teacher(c, ctx, DType::f64);
  student.init_random(21);
  teacher.init_random(22);
  Batch batch = random_batch(c, 2, 5, 23);
  batch.loss_mask.assign(batch.tokens.size(), 1);
  batch.loss_mask[2] = 0;  // a prompt token: no CE and no KL at its row
  ForwardOptions fo;
  fo.mtp_lambda = 0.4;
  teacher.forward(batch, fo);
  Tensor t_logits = teacher.logits();
  const double w = 0.7;
  auto loss = [&] {
    LossInfo li = student.forward(batch, fo);
    return li.loss + w * student.distill_loss(t_logits);
  };
  student.enable_grads();
  student.zero_grads();
  const double l0 = loss();
  CHECK(student.distill_loss(t_logits) > 0.0);
  student.backward_distill(t_logits, w);
  std::vector<test::GradParam> params;
  for (size_t i = 0; i < student.params().size(); ++i)
    if (!is_buffer_name(student.params().name(i)))
      params.push_back({student.params().name(i), student.params()[i], student.grad_arena()[i]});
  test::GradCheckOptions opt;
  opt.max_elements = 5;
  opt.step = 1e-6;
  auto r = test::gradcheck(params, loss, opt);
  INFO(r.summary() << " loss " << l0);
  CHECK(r.max_rel_err < 1e-5);
  // The teacher against itself: KL 0.
  teacher.forward(batch, fo);
  CHECK(std::abs(teacher.distill_loss(teacher.logits())) < 1e-14);
}

TEST_CASE("gradients after zero_grads: the first backward writes them (the routed experts' too), later ones add",
          "[model][grad][zero]") {
  // zero_grads leaves the routed experts' gradient blocks for the next backward to write over (no memset of them);
  // what must hold is the plain semantics: zero, then += each backward's gradient.
  const ModelConfig cfg = tiny_v3();
  Context ctx;
  auto make = [&] {
    auto m = std::make_unique<Model>(cfg, ctx, DType::f64);
    m->init_random(5);
    m->enable_grads();
    return m;
  };
  auto grads = [](Model& m) {
    std::vector<std::vector<double>> g;
    for (size_t i = 0; i < m.grad_arena().size(); ++i) g.push_back(to_host_f64(m.grad_arena()[i]));
    return g;
  };
  const Batch b1 = random_batch(cfg, 2, 5, 6), b2 = random_batch(cfg, 2, 5, 7);
  auto fresh = make();  // b2's gradient on a model that never had another
  fresh->zero_grads();
  fresh->forward(b2);
  fresh->backward();
  const auto want2 = grads(*fresh);

  auto m = make();
  m->zero_grads();
  m->forward(b1);
  m->backward();
  const auto g1 = grads(*m);
  m->zero_grads();
  m->forward(b2);
  m->backward();
  CHECK(grads(*m) == want2);  // nothing of b1's left, bit for bit

  m->zero_grads();  // read before any backward: zeros
  for (const auto& t : grads(*m))
    for (double v : t) CHECK(v == 0.0);

  m->zero_grads();  // two backwards: the sum
  m->forward(b1);
  m->backward();
  m->forward(b2);
  m->backward();
  const auto g12 = grads(*m);
  for (size_t i = 0; i < g12.size(); ++i)
    for (size_t j = 0; j < g12[i].size(); ++j)
      CHECK(g12[i][j] == Approx(g1[i][j] + want2[i][j]).epsilon(1e-12).margin(1e-15));

  // A forward without the MTP module: its experts' gradients read zero after the backward, not b1's.
  m->zero_grads();
  m->forward(b1);
  m->backward();
  ForwardOptions no_mtp;
  no_mtp.mtp = false;
  m->zero_grads();
  m->forward(b2, no_mtp);
  m->backward();
  const std::string mtp = "model.layers." + std::to_string(cfg.num_hidden_layers) + ".mlp.experts.*.";
  int checked = 0;
  for (size_t i = 0; i < m->grad_arena().size(); ++i) {
    if (m->grad_arena().name(i).rfind(mtp, 0) != 0) continue;
    ++checked;
    for (double v : to_host_f64(m->grad_arena()[i])) CHECK(v == 0.0);
  }
  CHECK(checked == 3);
}

TEST_CASE("loss_grad: the forward's fused cross-entropy gradient gives backward's gradients, bit for bit",
          "[model][grad][loss_grad]") {
  // ForwardOptions::loss_grad moves the main head's d_logits into the forward's pass over the logits; the gradients
  // must not change: with MTP (whose heads reuse backward's d_logits before the main head's product), without it,
  // with a temperature and masked targets; backward_policy / backward_distill after such a forward recompute it; a
  // later plain forward forgets it.
  ModelConfig cfg = tiny_v3();
  Context ctx;
  auto grads = [](Model& m) {
    std::vector<std::vector<double>> g;
    for (size_t i = 0; i < m.grad_arena().size(); ++i) g.push_back(to_host_f64(m.grad_arena()[i]));
    return g;
  };
  Batch b = random_batch(cfg, 2, 5, 31);
  b.loss_mask.assign(b.tokens.size(), 1);
  b.loss_mask[3] = 0;
  for (DType dt : {DType::f32, DType::f64}) {
    for (bool mtp : {true, false}) {
      INFO(dtype_name(dt) << (mtp ? " with MTP" : " without MTP"));
      Model m(cfg, ctx, dt);
      m.init_random(32);
      m.enable_grads();
      ForwardOptions plain;
      plain.mtp = mtp;
      plain.logit_temperature = 1.3;
      plain.balance_alpha = 1e-2;
      ForwardOptions fused = plain;
      fused.loss_grad = true;
      auto step = [&](const ForwardOptions& fo, int backward_kind) {
        m.zero_grads();
        const LossInfo li = m.forward(b, fo);
        if (backward_kind == 0) m.backward();
        if (backward_kind == 1) {
          std::vector<double> coef(size_t(b.B * b.T));
          for (size_t i = 0; i < coef.size(); ++i) coef[i] = i == 2 ? 0.0 : 0.2 * double(int(i % 4) - 1);
          m.backward_policy(coef);
        }
        if (backward_kind == 2) m.backward_distill(m.logits(), 0.5);  // its own logits: the KL term adds 0
        return std::pair{li.loss, grads(m)};
      };
      const auto want = step(plain, 0);
      const auto got = step(fused, 0);
      CHECK(got.first == want.first);
      CHECK(got.second == want.second);
      // a plain forward after a fused one: backward computes the gradient itself again
      m.zero_grads();
      m.forward(b, fused);
      CHECK(step(plain, 0).second == want.second);
      if (!mtp) {  // backward_policy needs a forward without MTP
        const auto want_pg = step(plain, 1);
        CHECK(step(fused, 1).second == want_pg.second);
      }
      const auto want_kd = step(plain, 2);
      CHECK(step(fused, 2).second == want_kd.second);
    }
  }
}

TEST_CASE("defer_loss: read_loss after backward gives the forward's losses, and the gradients keep their bits",
          "[model][grad][defer_loss]") {
  // ForwardOptions::defer_loss (the trainer's step): the cross-entropy sums are read after backward; NaN before.
  ModelConfig cfg = tiny_v3();
  Context ctx;
  Batch b = random_batch(cfg, 2, 5, 41);
  b.loss_mask.assign(b.tokens.size(), 1);
  b.loss_mask[4] = 0;
  for (bool mtp : {true, false}) {
    INFO((mtp ? "with MTP" : "without MTP"));
    Model m(cfg, ctx, DType::f64);
    m.init_random(33);
    m.enable_grads();
    ForwardOptions plain;
    plain.mtp = mtp;
    plain.balance_alpha = 1e-2;
    ForwardOptions deferred = plain;
    deferred.defer_loss = true;
    auto grads = [&] {
      std::vector<std::vector<double>> g;
      for (size_t i = 0; i < m.grad_arena().size(); ++i) g.push_back(to_host_f64(m.grad_arena()[i]));
      return g;
    };
    m.zero_grads();
    const LossInfo want = m.forward(b, plain);
    m.backward();
    const auto want_g = grads();
    m.zero_grads();
    LossInfo got = m.forward(b, deferred);
    CHECK(std::isnan(got.loss));
    CHECK(std::isnan(got.main_loss));
    CHECK(std::isnan(got.mtp_loss));
    CHECK(got.balance_loss == want.balance_loss);
    CHECK(got.n_targets == want.n_targets);
    m.backward();
    m.read_loss(got);
    CHECK(got.loss == want.loss);
    CHECK(got.main_loss == want.main_loss);
    CHECK(got.mtp_loss == want.mtp_loss);
    CHECK(grads() == want_g);
  }
}
