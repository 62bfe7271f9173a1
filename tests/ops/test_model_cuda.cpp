// The whole model on CUDA against the CPU reference (issue 5): the same config, weights (init_random + the same
// router biases) and batch on both devices; losses, every parameter gradient, expert loads, one AdamW step, the
// router-bias update and greedy decoding through the engine must agree. Then bf16 mixed precision (bf16 compute
// weights and activations, f32 master weights / gradients / statistics) against the CPU f32 reference.
//
// Error measures: a gradient tensor's norm_err = max|gpu - cpu| / max|cpu| (parity.h); rel_l2 = ||gpu - cpu||_2 /
// ||cpu||_2 for whole-update and bf16 comparisons, where single elements are not meaningful (an AdamW step moves an
// element whose gradient is noise-sized by up to lr whatever its sign; bf16 rounds every activation).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "core/rng.h"
#include "infer/engine.h"
#include "model/model.h"
#include "parity.h"
#include "tests/unit/common/model_fixtures.h"
#include "train/optimizer.h"

using namespace ds;
using namespace ds::parity;
using ds::test::rel_l2;

namespace {

ModelConfig tiny_cfg() { return config_preset("tiny"); }  // q_lora, dense + grouped sigmoid MoE + shared, MTP

ModelConfig small_cfg() {
  ModelConfig c = config_preset("small");  // 4 layers, 16 experts top-4 in 4 groups, MTP
  c.vocab_size = 1024;
  return c;
}

// q_proj, softmax group-limited gate without bias, tied embeddings, no MTP (the gradcheck's second variant).
ModelConfig variant_cfg() {
  ModelConfig c = config_preset("tiny");
  c.q_lora_rank = 0;
  c.scoring_func = ScoreFunc::softmax;
  c.topk_method = TopkMethod::group_limited_greedy;
  c.norm_topk_prob = false;
  c.routed_scaling_factor = 1.5;
  c.tie_word_embeddings = true;
  c.num_nextn_predict_layers = 0;
  c.yarn.enabled = false;
  return c;
}

// some targets not counted in the loss
Batch random_batch(const ModelConfig& c, int64_t B, int64_t T, uint64_t seed) {
  return test::random_batch(c, B, T, seed, 7);
}

void set_biases(Model& m) {
  for (auto& l : m.weights().layers)
    if (l.moe && !l.moe_w.bias.empty()) {
      std::vector<double> b(size_t(m.config().n_routed_experts));
      for (size_t i = 0; i < b.size(); ++i) b[i] = 0.02 * double(i % 3) - 0.015;
      from_host(l.moe_w.bias, b);
    }
  for (auto& k : m.weights().mtp)
    if (k.block.moe && !k.block.moe_w.bias.empty()) {
      std::vector<double> b(size_t(m.config().n_routed_experts), 0.01);
      from_host(k.block.moe_w.bias, b);
    }
}

double rel(double got, double ref) { return std::abs(got - ref) / std::max(std::abs(ref), 1e-30); }

// Top-k selections of every MoE layer of the last forward; returns the number of rows that differ.
int64_t selection_diff(const Model& a, const Model& b) {
  int64_t diff = 0;
  for (int64_t l = 0; l < a.config().num_hidden_layers; ++l) {
    const Tensor ia = a.layer_acts(l).moe.topk_idx, ib = b.layer_acts(l).moe.topk_idx;
    if (ia.empty()) continue;
    auto x = to_host_i64(ia), y = to_host_i64(ib);
    for (size_t i = 0; i < x.size(); ++i) diff += x[i] != y[i];
  }
  for (int64_t k = 1; k <= a.config().num_nextn_predict_layers; ++k) {
    const BlockActs *pa = a.mtp_block_acts(k), *pb = b.mtp_block_acts(k);
    if (!pa || !pb || pa->moe.topk_idx.empty()) continue;
    auto x = to_host_i64(pa->moe.topk_idx), y = to_host_i64(pb->moe.topk_idx);
    for (size_t i = 0; i < x.size(); ++i) diff += x[i] != y[i];
  }
  return diff;
}

void print_loss(const char* what, const LossInfo& g, const LossInfo& c) {
  std::printf("model %-34s loss gpu %.9f cpu %.9f rel %.2e | main rel %.2e | mtp rel %.2e | balance gpu %.6e cpu %.6e\n",
              what, g.loss, c.loss, rel(g.loss, c.loss), rel(g.main_loss, c.main_loss),
              c.mtp_loss ? rel(g.mtp_loss, c.mtp_loss) : 0.0, g.balance_loss, c.balance_loss);
  std::fflush(stdout);
}

struct GradStats {
  double worst_norm = 0, global_rel_l2 = 0, worst_rel_l2 = 0;
  std::string worst_name;
};

// Compares every gradient (buffers excepted). tol bounds each tensor's norm_err (f32); 0 = only report.
GradStats compare_grads(const std::string& what, Model& g, Model& c, double tol, const std::string& reason) {
  GradStats s;
  double num = 0, den = 0;
  for (size_t i = 0; i < c.grad_arena().size(); ++i) {
    const std::string& n = c.grad_arena().name(i);
    if (is_buffer_name(n)) continue;
    std::vector<double> gv = to_host_f64(g.grad_arena()[i]), cv = to_host_f64(c.grad_arena()[i]);
    const Err e = compare(gv, cv);
    const double r = rel_l2(gv, cv);
    for (size_t j = 0; j < cv.size(); ++j) {
      num += (gv[j] - cv[j]) * (gv[j] - cv[j]);
      den += cv[j] * cv[j];
    }
    if (e.norm > s.worst_norm) {
      s.worst_norm = e.norm;
      s.worst_name = n;
    }
    s.worst_rel_l2 = std::max(s.worst_rel_l2, r);
    if (tol > 0) {
      INFO(what << " grad " << n << ": norm_err " << e.norm << " > " << tol << " (" << reason << ")");
      CHECK(e.nonfinite == 0);
      CHECK(e.norm <= tol);
    } else {
      INFO(what << " grad " << n << " not finite");
      CHECK(e.nonfinite == 0);
    }
  }
  s.global_rel_l2 = den > 0 ? std::sqrt(num / den) : 0;
  std::printf("model %-34s grads: worst norm_err %.3e (%s), worst tensor rel_l2 %.3e, all-gradient rel_l2 %.3e "
              "(tol %.1e) [%s]\n",
              what.c_str(), s.worst_norm, s.worst_name.c_str(), s.worst_rel_l2, s.global_rel_l2, tol, reason.c_str());
  std::fflush(stdout);
  return s;
}

std::vector<double> all_params(Model& m) {
  std::vector<double> out;
  for (size_t i = 0; i < m.params().size(); ++i) {
    auto v = to_host_f64(m.params()[i]);
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

std::vector<double> all_biases(Model& m) {
  std::vector<double> out;
  for (size_t i = 0; i < m.params().size(); ++i)
    if (is_buffer_name(m.params().name(i))) {
      auto v = to_host_f64(m.params()[i]);
      out.insert(out.end(), v.begin(), v.end());
    }
  return out;
}

// The CPU and GPU models of a comparison: the same random weights and router biases.
void init_twins(Model& c, Model& g, uint64_t seed) {
  c.init_random(seed);
  g.init_random(seed);
  set_biases(c);
  set_biases(g);
}

// Every gradient's values, in the arena's order.
std::vector<double> all_grads(Model& m) {
  std::vector<double> v;
  for (size_t i = 0; i < m.grad_arena().size(); ++i) {
    const std::vector<double> t = to_host_f64(m.grad_arena()[i]);
    v.insert(v.end(), t.begin(), t.end());
  }
  return v;
}

// The f32 comparison of one config: forward, backward, loads, AdamW step, bias update, a second forward.
void check_f32(const std::string& what, const ModelConfig& cfg, int64_t B, int64_t T, ForwardOptions fo,
               uint64_t seed) {
  Context cpu;
  Context gpu = cuda_ctx();
  Model c(cfg, cpu, DType::f32), g(cfg, gpu, DType::f32);
  init_twins(c, g, seed);
  const Batch batch = random_batch(cfg, B, T, seed + 1);
  c.enable_grads();
  g.enable_grads();
  c.zero_grads();
  g.zero_grads();
  const LossInfo lc = c.forward(batch, fo), lg = g.forward(batch, fo);
  device_sync();
  print_loss((what + " f32").c_str(), lg, lc);
  const int64_t sel = selection_diff(g, c);
  std::printf("model %-34s top-k selections differing: %lld\n", (what + " f32").c_str(), (long long)sel);
  // A differing selection (a near tie broken the other way by fp32 rounding) changes that token's gradient at
  // O(1): the comparison below would not be a parity check any more.
  REQUIRE(sel == 0);
  CHECK(lc.n_targets == lg.n_targets);
  // Losses: sums of N fp32 cross-entropies computed in different orders; 1e-5 relative is ~100 ulps.
  CHECK(rel(lg.loss, lc.loss) < 1e-5);
  CHECK(rel(lg.main_loss, lc.main_loss) < 1e-5);
  if (lc.mtp_loss) CHECK(rel(lg.mtp_loss, lc.mtp_loss) < 1e-5);
  if (lc.balance_loss) CHECK(rel(lg.balance_loss, lc.balance_loss) < 1e-4);
  // Expert loads: integer counts of identical selections.
  CHECK(g.expert_load() == c.expert_load());

  c.backward();
  g.backward();
  device_sync();
  // fp32 everywhere, different reduction orders (cuBLASLt tiles vs OpenBLAS, warp-tree vs sequential sums, the
  // device's expf/rsqrtf): per tensor a few hundred ulps of its largest entry through ~10 chained ops.
  compare_grads(what + " f32", g, c, 1e-4, "fp32, different reduction orders through the whole backward");

  // One AdamW step (clipping on) and the router-bias update, then the same batch again. Adam's first step is
  // lr * g / (|g| + eps): with the default eps an element whose gradient is at the fp32 noise level moves by up to
  // +-lr on either device. eps = 1e-3 (about a typical clipped gradient element) keeps the step a smooth function
  // of g, so the whole update can be compared tightly.
  OptimizerOptions oo;
  oo.grad_clip = 1.0;
  oo.eps = 1e-3;
  AdamW ac(c, oo), ag(g, oo);
  const std::vector<double> p0 = all_params(c);
  const double nc = ac.step(1, 2e-3, 1.0), ng = ag.step(1, 2e-3, 1.0);
  std::printf("model %-34s grad norm gpu %.9f cpu %.9f rel %.2e\n", (what + " f32").c_str(), ng, nc, rel(ng, nc));
  CHECK(rel(ng, nc) < 1e-5);
  std::vector<double> dc = all_params(c), dg = all_params(g);
  for (size_t i = 0; i < p0.size(); ++i) {
    dc[i] -= p0[i];
    dg[i] -= p0[i];
  }
  const double upd = rel_l2(dg, dc);
  std::printf("model %-34s AdamW update rel_l2 %.3e\n", (what + " f32").c_str(), upd);
  CHECK(upd < 1e-3);  // gradient differences (~1e-6 of their norm) times at most 1/eps
  c.update_router_bias(1e-3);
  g.update_router_bias(1e-3);
  CHECK(all_biases(g) == all_biases(c));  // the same ±gamma steps from equal loads, in f32
  c.reset_expert_load();
  g.reset_expert_load();
  const LossInfo lc2 = c.forward(batch, fo), lg2 = g.forward(batch, fo);
  print_loss((what + " f32 after a step").c_str(), lg2, lc2);
  CHECK(lc2.loss < lc.loss);
  CHECK(rel(lg2.loss, lc2.loss) < 1e-4);
}

}  // namespace

TEST_CASE("model on CUDA, f32: tiny preset (q_lora, dense + grouped MoE + shared, MTP, balance loss) matches the CPU",
          "[model][cuda]") {
  ForwardOptions fo;
  fo.balance_alpha = 0.01;
  fo.mtp_lambda = 0.3;
  check_f32("tiny B4 T32", tiny_cfg(), 4, 32, fo, 21);
}

TEST_CASE("model on CUDA, f32: small preset (4 layers, 16 experts top-4) matches the CPU", "[model][cuda]") {
  ForwardOptions fo;
  fo.balance_alpha = 1e-3;
  check_f32("small B2 T64", small_cfg(), 2, 64, fo, 31);
}

TEST_CASE("model on CUDA, f32: q_proj, softmax gate, tied embeddings, no MTP matches the CPU", "[model][cuda]") {
  check_f32("variant B3 T16", variant_cfg(), 3, 16, ForwardOptions{}, 41);
}

TEST_CASE("model on CUDA, f32: policy-gradient backward (temperature, dL/dlogp per row) matches the CPU",
          "[model][cuda]") {
  ModelConfig cfg = tiny_cfg();
  Context cpu;
  Context gpu = cuda_ctx();
  Model c(cfg, cpu, DType::f32), g(cfg, gpu, DType::f32);
  c.init_random(51);
  g.init_random(51);
  const Batch batch = random_batch(cfg, 2, 24, 52);
  ForwardOptions fo;
  fo.mtp = false;
  fo.logit_temperature = 0.7;
  c.forward(batch, fo);
  g.forward(batch, fo);
  REQUIRE(selection_diff(g, c) == 0);
  const std::vector<double> lpc = c.target_logprobs(), lpg = g.target_logprobs();
  expect_close_values("model policy target_logprobs", lpg, lpc, 1e-5, "fp32 log-softmax, different sum order");
  std::vector<double> coef(lpc.size());
  for (size_t i = 0; i < coef.size(); ++i) coef[i] = lpc[i] == 0.0 ? 0.0 : 0.1 * double(int(i % 5) - 2);
  c.enable_grads();
  g.enable_grads();
  c.zero_grads();
  g.zero_grads();
  c.backward_policy(coef);
  g.backward_policy(coef);
  device_sync();
  compare_grads("policy tiny f32", g, c, 1e-4, "fp32, different reduction orders");
}

TEST_CASE("engine on CUDA, f32: greedy decoding (plain and MTP speculative) gives the CPU's tokens", "[model][cuda]") {
  ModelConfig cfg = tiny_cfg();
  Context cpu;
  Context gpu = cuda_ctx();
  // A larger init than the default so that the random model's argmax is well separated (no near ties).
  cfg.initializer_range = 0.2;
  Model c2(cfg, cpu, DType::f32), g2(cfg, gpu, DType::f32);
  c2.init_random(61);
  g2.init_random(61);
  auto run = [&](Model& m, bool spec) {
    EngineOptions eo;
    eo.page_size = 16;
    eo.mtp_speculative = spec;
    Engine e(m, nullptr, eo);
    for (int r = 0; r < 3; ++r) {
      GenRequest q;
      q.id = uint64_t(r);
      Rng rng{uint64_t(70 + r), 1, 0};
      for (int i = 0; i < 5 + 4 * r; ++i) q.prompt.push_back(int32_t(rng.next_below(uint64_t(cfg.vocab_size))));
      q.sp.temperature = 0;
      q.sp.max_new_tokens = 24;
      q.stop_at_eos = false;
      e.submit(q);
    }
    auto out = e.run_to_completion();
    std::sort(out.begin(), out.end(), [](const GenSample& a, const GenSample& b) { return a.request_id < b.request_id; });
    return out;
  };
  const auto oc = run(c2, false), og = run(g2, false), os = run(g2, true);
  REQUIRE(oc.size() == 3);
  REQUIRE(og.size() == 3);
  REQUIRE(os.size() == 3);
  double worst_lp = 0;
  int64_t same = 0, total = 0;
  for (size_t r = 0; r < 3; ++r) {
    CHECK(og[r].tokens == oc[r].tokens);
    CHECK(os[r].tokens == og[r].tokens);  // speculative decoding on the GPU: the same greedy tokens
    for (size_t i = 0; i < std::min(og[r].tokens.size(), oc[r].tokens.size()); ++i) {
      ++total;
      if (og[r].tokens[i] != oc[r].tokens[i]) break;
      ++same;
      worst_lp = std::max(worst_lp, std::abs(og[r].logprobs[i] - oc[r].logprobs[i]));
    }
  }
  std::printf("engine greedy f32: %lld of %lld tokens equal before any divergence, max |logprob diff| %.3e\n",
              (long long)same, (long long)total, worst_lp);
  CHECK(worst_lp < 1e-4);
}

TEST_CASE("engine on CUDA: CUDA-graph decode gives the eager steps' tokens and log-probs", "[model][cuda][graph]") {
  // The graph steps run ahead (each launched before the host reads the previous one's tokens): samples that end by
  // length, by EOS (seen one step late) and admissions into a full batch must all come out as the eager steps'.
  for (const DType dt : {DType::f32, DType::bf16}) {
    ModelConfig cfg = tiny_cfg();
    cfg.initializer_range = 0.2;
    Context gpu = cuda_ctx();
    Model m(cfg, gpu, dt);
    m.init_random(91);
    for (const bool greedy : {true, false}) {
      auto run = [&](Model& model, bool graph, bool eos, EngineStats* st) {
        EngineOptions eo;
        eo.page_size = 8;  // block tables widen during the run: several (batch, width) shapes
        eo.max_batch = 6;
        eo.cuda_graph = graph;
        Engine e(model, nullptr, eo);
        for (int r = 0; r < 4; ++r) {
          GenRequest q;
          q.id = uint64_t(r);
          Rng rng{uint64_t(170 + r), 1, 0};
          for (int i = 0; i < 3 + 5 * r; ++i) q.prompt.push_back(int32_t(rng.next_below(uint64_t(cfg.vocab_size))));
          q.n = 2;
          q.sp.temperature = greedy ? 0.0 : 0.9;
          q.sp.top_p = greedy ? 1.0 : 0.9;
          q.sp.top_k = greedy ? 0 : 20;
          q.sp.seed = 1234 + uint64_t(r);
          q.sp.max_new_tokens = 12 + 6 * r;  // samples finish at different steps: the batch shrinks
          q.stop_at_eos = eos;
          e.submit(q);
        }
        auto out = e.run_to_completion();
        std::sort(out.begin(), out.end(), [](const GenSample& a, const GenSample& b) {
          return a.request_id != b.request_id ? a.request_id < b.request_id : a.sample < b.sample;
        });
        *st = e.stats();
        return out;
      };
      auto compare = [&](const std::string& what, Model& model, bool eos) {
        INFO(what);
        EngineStats se, sg;
        const auto oe = run(model, false, eos, &se), og = run(model, true, eos, &sg);
        REQUIRE(oe.size() == 8);
        REQUIRE(og.size() == 8);
        CHECK(se.graph_captures == 0);
        CHECK(se.graph_replays == 0);
        CHECK(sg.graph_captures > 1);
        CHECK(sg.graph_failures == 0);
        CHECK(sg.graph_replays > 0);
        double worst = 0;
        for (size_t r = 0; r < oe.size(); ++r) {
          CHECK(og[r].tokens == oe[r].tokens);
          CHECK(og[r].finish_reason == oe[r].finish_reason);
          REQUIRE(og[r].logprobs.size() == oe[r].logprobs.size());
          for (size_t i = 0; i < oe[r].logprobs.size(); ++i)
            worst = std::max(worst, std::abs(og[r].logprobs[i] - oe[r].logprobs[i]));
        }
        std::printf("engine CUDA graph %s: %lld shapes captured, %lld of %lld steps replayed, max |logprob diff| "
                    "vs eager %.3e\n",
                    what.c_str(), (long long)sg.graph_captures, (long long)sg.graph_replays,
                    (long long)sg.decode_steps, worst);
        CHECK(worst < 1e-6);  // the same kernels on the same inputs: expected 0 (printed above)
        return oe;
      };
      const std::string what = std::string(dt == DType::bf16 ? "bf16" : "f32") + (greedy ? " greedy" : " sampled");
      const auto plain = compare(what, m, false);
      // EOS stops: the token in the middle of the first sample becomes the EOS id (the weights do not depend on it)
      ModelConfig ce = cfg;
      ce.eos_token_id = plain[0].tokens[plain[0].tokens.size() / 2];
      Model me(ce, gpu, dt);
      me.init_random(91);
      const auto stopped = compare(what + ", EOS stops", me, true);
      int64_t early = 0;
      for (const GenSample& g : stopped) early += g.finish_reason == "stop";
      CHECK(early > 0);
    }
  }
}

TEST_CASE("model on CUDA, bf16 mixed precision: losses and gradients near the CPU f32 reference", "[model][cuda][bf16]") {
  for (int which = 0; which < 2; ++which) {
    const ModelConfig cfg = which == 0 ? tiny_cfg() : small_cfg();
    const std::string what = which == 0 ? "tiny B4 T32 bf16" : "small B2 T64 bf16";
    const int64_t B = which == 0 ? 4 : 2, T = which == 0 ? 32 : 64;
    Context cpu;
    Context gpu = cuda_ctx();
    Model c(cfg, cpu, DType::f32), g(cfg, gpu, DType::bf16);
    init_twins(c, g, 81);
    CHECK(g.params()[0].dtype == DType::f32);            // master weights
    CHECK(g.compute_weights().embed_tokens.dtype == DType::bf16);
    const Batch batch = random_batch(cfg, B, T, 82);
    ForwardOptions fo;
    fo.balance_alpha = 1e-3;
    c.enable_grads();
    g.enable_grads();
    c.zero_grads();
    g.zero_grads();
    const LossInfo lc = c.forward(batch, fo), lg = g.forward(batch, fo);
    device_sync();
    print_loss(what.c_str(), lg, lc);
    std::printf("model %-34s top-k selections differing: %lld (bf16 rounding breaks near ties differently)\n",
                what.c_str(), (long long)selection_diff(g, c));
    // bf16 keeps 8 significant bits (unit roundoff 2^-8 = 3.9e-3) on every weight and activation; the loss is a
    // mean over many tokens, so its error is far below the per-element one.
    CHECK(std::isfinite(lg.loss));
    CHECK(rel(lg.loss, lc.loss) < 1e-2);
    c.backward();
    g.backward();
    device_sync();
    CHECK(g.grad_arena()[0].dtype == DType::f32);
    const GradStats s = compare_grads(what, g, c, 0, "bf16 weights/activations, f32 gradients: rel_l2 reported");
    // Gradients as a whole: a few bf16 roundoffs through the chain, plus tokens routed differently.
    CHECK(s.global_rel_l2 < 0.1);
    OptimizerOptions oo;
    AdamW ag(g, oo);
    const double n = ag.step(1, 1e-3, 1.0);
    CHECK(std::isfinite(n));
    // The bf16 compute copy follows the f32 master after the step.
    auto master = to_host_f64(g.weights().embed_tokens), comp = to_host_f64(g.compute_weights().embed_tokens);
    double worst = 0;
    for (size_t i = 0; i < master.size(); ++i) worst = std::max(worst, std::abs(master[i] - comp[i]) / std::max(std::abs(master[i]), 1e-30));
    CHECK(worst <= 1.0 / 256);
    const LossInfo lg2 = g.forward(batch, fo);
    std::printf("model %-34s loss after one AdamW step %.6f (before %.6f)\n", what.c_str(), lg2.loss, lg.loss);
    CHECK(lg2.loss < lg.loss);
  }
}

// bf16 logits (ForwardOptions::compute_dtype_logits, the trainer's default in mixed precision): the heads' product
// writes bf16 and the loss reads it, the sums in f32. Against the CPU f32 model as the f32-logit run above, and
// against that run itself: a logit rounded to bf16 moves by at most 2^-9 of itself, and the loss (a mean over B*T
// rows of lse - logit) and the gradients (one more rounding of a bf16 chain) by far less than bf16's other roundings.
TEST_CASE("model on CUDA, bf16 logits: losses and gradients near f32 logits and the CPU", "[model][cuda][bf16]") {
  const ModelConfig cfg = small_cfg();  // MTP on: its heads' logits too
  const int64_t B = 2, T = 64;
  Context cpu;
  Context gpu = cuda_ctx();
  Model c(cfg, cpu, DType::f32), g(cfg, gpu, DType::bf16);
  init_twins(c, g, 83);
  const Batch batch = random_batch(cfg, B, T, 84);
  ForwardOptions fo;
  fo.balance_alpha = 1e-3;
  c.enable_grads();
  g.enable_grads();
  c.zero_grads();
  const LossInfo lc = c.forward(batch, fo);
  c.backward();
  std::vector<double> f32_grads;
  double f32_loss = 0;
  for (const bool bf16_logits : {false, true}) {
    ForwardOptions f = fo;
    f.compute_dtype_logits = bf16_logits;
    g.zero_grads();
    const LossInfo lg = g.forward(batch, f);
    REQUIRE(g.logits().dtype == (bf16_logits ? DType::bf16 : DType::f32));
    g.backward();
    device_sync();
    const std::string what = bf16_logits ? "small bf16, bf16 logits" : "small bf16, f32 logits";
    print_loss(what.c_str(), lg, lc);
    CHECK(std::isfinite(lg.loss));
    CHECK(rel(lg.loss, lc.loss) < 1e-2);  // as the bf16 test above
    const GradStats s = compare_grads(what, g, c, 0, "bf16 weights/activations, f32 gradients: rel_l2 reported");
    CHECK(s.global_rel_l2 < 0.1);
    if (!bf16_logits) {
      f32_loss = lg.loss;
      f32_grads = all_grads(g);
      continue;
    }
    const std::vector<double> v = all_grads(g);
    const double r = rel_l2(v, f32_grads);
    std::printf("model %-34s against f32 logits: loss %.9f / %.9f, gradients rel_l2 %.3e\n", what.c_str(), lg.loss,
                f32_loss, r);
    CHECK(rel(lg.loss, f32_loss) < 1e-3);
    CHECK(r < 2e-2);
  }
}

// The optimizer's overlap (AdamW::set_overlap, the trainer's CUDA default): the update runs on its own stream stage
// by stage while the next forward runs on the trainer's stream, and the gradient norm's sums stage by stage beside
// backward (begin_grad_norm, before the host waits for the loss). Same kernels on the same data, so the same bits as
// the in-order update; a missing wait (a stage read before its update, gradients zeroed before they were read, a
// stage's sums taken before backward finished it) changes them.
TEST_CASE("model on CUDA, bf16: the overlapped optimizer gives the in-order update's bits", "[model][cuda][overlap]") {
  const ModelConfig cfg = small_cfg();
  Context gpu = cuda_ctx();
  Model a(cfg, gpu, DType::bf16), b(cfg, gpu, DType::bf16);
  a.init_random(91);
  b.init_random(91);
  set_biases(a);
  set_biases(b);
  OptimizerOptions oo;
  AdamW oa(a, oo), ob(b, oo);
  b.set_cuda_stream(gpu::process_stream(gpu.device, gpu::kTrainStream));
  ob.set_overlap(true);
  REQUIRE(ob.overlap());
  ForwardOptions fo;
  fo.balance_alpha = 1e-3;
  for (int step = 1; step <= 4; ++step) {
    const Batch batch = random_batch(cfg, 4, 64, 100 + uint64_t(step));
    double loss[2] = {0, 0}, norm[2] = {0, 0};
    for (int k = 0; k < 2; ++k) {
      Model& m = k == 0 ? a : b;
      m.zero_grads();
      if (k == 0) {
        loss[k] = m.forward(batch, fo).loss;
        m.backward();
      } else {  // the trainer's order: the loss read after backward, the norm's sums enqueued before it
        ForwardOptions fd = fo;
        fd.defer_loss = true;
        LossInfo li = m.forward(batch, fd);
        m.backward();
        ob.begin_grad_norm();
        m.read_loss(li);
        loss[k] = li.loss;
      }
      norm[k] = (k == 0 ? oa : ob).step(step, 1e-3, 1.0);
    }
    std::printf("model %-34s step %d loss %.9f / %.9f, gradient norm %.9f / %.9f\n", "small bf16 in order/overlap",
                step, loss[0], loss[1], norm[0], norm[1]);
    CHECK(loss[0] == loss[1]);
    CHECK(norm[0] == norm[1]);
  }
  ob.finish();
  const LossInfo la = a.forward(random_batch(cfg, 4, 64, 200), fo), lb = b.forward(random_batch(cfg, 4, 64, 200), fo);
  CHECK(la.loss == lb.loss);
  const std::vector<double> pa = all_params(a), pb = all_params(b);
  REQUIRE(pa.size() == pb.size());
  size_t differ = 0;
  for (size_t i = 0; i < pa.size(); ++i) differ += pa[i] != pb[i];
  CHECK(differ == 0);  // master weights
  differ = 0;
  for (size_t i = 0; i < a.params().size(); ++i)
    if (!is_buffer_name(a.params().name(i)) &&
        to_host_f64(a.compute_param(i)) != to_host_f64(b.compute_param(i)))
      ++differ;
  CHECK(differ == 0);  // compute (bf16) copies
  ob.set_overlap(false);
  b.set_cuda_stream(nullptr);
}

// ForwardOptions::loss_grad (the trainer's plain step): the main head's d_logits from the forward's one pass over the
// logits (cross_entropy_fused) instead of backward's second pass. Same values, so every gradient keeps its bits; with
// MTP (whose heads reuse backward's d_logits buffer before the main head's product reads the fused one) and without,
// f32 and bf16. And ForwardOptions::defer_loss (the trainer's step): the losses read after backward (read_loss) are
// the forward's own, the gradients the same bits.
TEST_CASE("model on CUDA: loss_grad's fused cross-entropy and defer_loss's late read keep backward's gradient bits",
          "[model][cuda][loss_grad][defer_loss]") {
  for (int which = 0; which < 2; ++which) {
    const ModelConfig cfg = which == 0 ? small_cfg() : variant_cfg();
    for (DType dt : {DType::f32, DType::bf16}) {
      const std::string what = std::string(which == 0 ? "small (MTP) " : "variant (no MTP, bf16 logits) ") +
                               dtype_name(dt);
      Context gpu = cuda_ctx();
      Model m(cfg, gpu, dt);
      m.init_random(95);
      set_biases(m);
      m.enable_grads();
      const Batch batch = random_batch(cfg, 2, 64, 96);
      ForwardOptions fo;
      fo.balance_alpha = 1e-3;
      fo.logit_temperature = 1.25;
      fo.compute_dtype_logits = which == 1;  // bf16 logits in the variant's bf16 run (the fused kernel's bf16 rows)
      auto run = [&](bool fused, bool defer) {
        ForwardOptions f = fo;
        f.loss_grad = fused;
        f.defer_loss = defer;
        m.zero_grads();
        LossInfo li = m.forward(batch, f);
        CHECK(std::isnan(li.loss) == defer);
        m.backward();
        if (defer) m.read_loss(li);
        const double loss = li.loss;
        device_sync();
        return std::pair{loss, all_grads(m)};
      };
      const auto plain = run(false, false);
      for (const bool fused : {true, false}) {
        const auto other = run(fused, !fused);
        REQUIRE(plain.second.size() == other.second.size());
        size_t differ = 0;
        for (size_t i = 0; i < plain.second.size(); ++i) differ += plain.second[i] != other.second[i];
        std::printf("model %-34s %-10s loss %.9f / %.9f, %zu of %zu gradient values differ\n", what.c_str(),
                    fused ? "loss_grad" : "defer_loss", plain.first, other.first, differ, plain.second.size());
        CHECK(plain.first == other.first);
        CHECK(differ == 0);
      }
    }
  }
}
