// The generation engine: absorbed decode vs the expanded forward, sampling properties, log-probs, and MTP
// speculative decoding.
#include <catch2/catch.hpp>
#include <cmath>

#include "balance/placement.h"
#include "core/rng.h"
#include "infer/engine.h"
#include "train/trainer.h"

using namespace ds;

namespace {

ModelConfig tiny(int64_t vocab = 64) {
  ModelConfig c = config_preset("tiny");
  c.vocab_size = vocab;
  c.initializer_range = 0.2;  // spread-out logits, so greedy choices are not near-ties
  return c;
}

std::vector<int32_t> random_ids(int64_t n, int64_t vocab, uint64_t seed) {
  Rng r{seed, 3, 0};
  std::vector<int32_t> v;
  for (int64_t i = 0; i < n; ++i) v.push_back(int32_t(r.next_below(uint64_t(vocab))));
  return v;
}

// Logits [T, V] of the training (expanded) forward over ids.
std::vector<double> full_logits(Model& m, const std::vector<int32_t>& ids) {
  Batch b;
  b.B = 1;
  b.T = int64_t(ids.size());
  b.tokens = ids;
  b.tokens.push_back(0);
  ForwardOptions fo;
  fo.mtp = false;
  m.forward(b, fo);
  return to_host_f64(m.logits());
}

double log_softmax_at(const double* l, int64_t V, int32_t t) {
  double mx = -INFINITY, z = 0;
  for (int64_t i = 0; i < V; ++i) mx = std::max(mx, l[i]);
  for (int64_t i = 0; i < V; ++i) z += std::exp(l[i] - mx);
  return l[t] - mx - std::log(z);
}

}  // namespace

TEST_CASE("absorbed decode over the latent cache equals the expanded forward at every position", "[infer]") {
  for (DType dt : {DType::f64, DType::f32}) {
    Context ctx;
    Model m(tiny(), ctx, dt);
    m.init_random(1);
    const std::vector<int32_t> ids = random_ids(20, 64, 2);
    const std::vector<double> ref = full_logits(m, ids);
    Decoder dec(m);
    PagedKvCache cache(m.config(), m.config().num_hidden_layers, 8, 4, ctx.device, dt);  // 4-token pages
    SeqCache seq;
    Workspace ws;
    const int64_t V = 64;
    double worst = 0, scale = 0;
    for (int64_t t = 0; t < int64_t(ids.size()); ++t) {
      ws.reset();
      REQUIRE(cache.reserve(seq, t, t + 1));
      DecodeRows r;
      r.ids = ws.alloc("ids", DType::i32, {1});
      r.pos = ws.alloc("pos", DType::i32, {1});
      r.slot_rows = ws.alloc("slots", DType::i32, {1});
      r.kv_len = ws.alloc("len", DType::i32, {1});
      r.block_table = ws.alloc("table", DType::i32, {1, int64_t(seq.pages.size())});
      from_host(r.ids, std::vector<int32_t>{ids[size_t(t)]});
      from_host(r.pos, std::vector<int32_t>{int32_t(t)});
      from_host(r.slot_rows, std::vector<int32_t>{cache.slot_row(seq, t)});
      from_host(r.kv_len, std::vector<int32_t>{int32_t(t + 1)});
      from_host(r.block_table, seq.pages);
      Tensor logits, hidden;
      dec.forward(ws, cache, r, &logits, &hidden);
      seq.len = t + 1;
      std::vector<double> got = to_host_f64(logits);
      for (int64_t v = 0; v < V; ++v) {
        worst = std::max(worst, std::abs(got[size_t(v)] - ref[size_t(t * V + v)]));
        scale = std::max(scale, std::abs(ref[size_t(t * V + v)]));
      }
    }
    INFO("dtype " << dtype_name(dt) << ": max |diff| " << worst << " of max |logit| " << scale);
    // f64: the two forms differ only by summation order (~1e-15 relative); f32: by fp32 rounding (~1e-6).
    CHECK(worst / scale < (dt == DType::f64 ? 1e-12 : 2e-5));
  }
}

TEST_CASE("greedy decoding follows the argmax of the full forward; cache bytes per token are the latent's", "[infer]") {
  Context ctx;
  Model m(tiny(), ctx, DType::f64);
  m.init_random(4);
  Tokenizer none;
  EngineOptions eo;
  eo.page_size = 8;
  Engine eng(m, nullptr, eo);
  const ModelConfig& c = m.config();
  CHECK(eng.stats().cache_bytes_per_token == size_t((c.kv_lora_rank + c.qk_rope_head_dim) * c.num_hidden_layers * 8));
  GenRequest r;
  r.prompt = random_ids(7, 64, 5);
  r.sp.temperature = 0;
  r.sp.max_new_tokens = 12;
  r.stop_at_eos = false;
  eng.submit(r);
  std::vector<GenSample> out = eng.run_to_completion();
  REQUIRE(out.size() == 1);
  REQUIRE(out[0].tokens.size() == 12);
  CHECK(out[0].finish_reason == "length");
  std::vector<int32_t> seq = r.prompt;
  seq.insert(seq.end(), out[0].tokens.begin(), out[0].tokens.end());
  std::vector<double> ref = full_logits(m, seq);
  for (size_t i = 0; i < out[0].tokens.size(); ++i) {
    const double* l = ref.data() + (r.prompt.size() - 1 + i) * 64;
    int32_t best = int32_t(std::max_element(l, l + 64) - l);
    CHECK(out[0].tokens[i] == best);
    CHECK(out[0].logprobs[i] == Approx(log_softmax_at(l, 64, best)).margin(1e-9));
  }
}

TEST_CASE("sampling: seeded, reproducible, independent of the batch; log-probs match the training forward", "[infer]") {
  Context ctx;
  Model m(tiny(), ctx);
  m.init_random(6);
  auto request = [](uint64_t id, uint64_t seed, int64_t n, int64_t len) {
    GenRequest r;
    r.id = id;
    r.prompt = random_ids(len, 64, 100 + id);
    r.n = n;
    r.sp.temperature = 0.9;
    r.sp.top_p = 0.95;
    r.sp.seed = seed;
    r.sp.max_new_tokens = 10;
    r.stop_at_eos = false;
    return r;
  };
  auto run = [&](std::vector<GenRequest> reqs) {
    EngineOptions eo;
    eo.page_size = 4;
    Engine e(m, nullptr, eo);
    for (auto& r : reqs) e.submit(r);
    std::vector<GenSample> out = e.run_to_completion();
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return std::tie(a.request_id, a.sample) < std::tie(b.request_id, b.sample); });
    return out;
  };
  std::vector<GenSample> alone = run({request(1, 42, 3, 6)});
  std::vector<GenSample> crowd = run({request(0, 7, 2, 9), request(1, 42, 3, 6), request(2, 9, 4, 3)});
  std::vector<GenSample> again = run({request(1, 42, 3, 6)});
  REQUIRE(alone.size() == 3);
  for (int s = 0; s < 3; ++s) {
    const GenSample* in_crowd = nullptr;
    for (auto& g : crowd)
      if (g.request_id == 1 && g.sample == s) in_crowd = &g;
    REQUIRE(in_crowd);
    CHECK(alone[s].tokens == in_crowd->tokens);
    CHECK(alone[s].tokens == again[s].tokens);
    for (size_t i = 0; i < alone[s].logprobs.size(); ++i)
      CHECK(alone[s].logprobs[i] == Approx(in_crowd->logprobs[i]).margin(1e-5));
  }
  CHECK((alone[0].tokens != alone[1].tokens || alone[1].tokens != alone[2].tokens));  // samples differ
  // log-probs: log softmax(logits / T) of the training forward over prompt + completion
  GenRequest r = request(1, 42, 3, 6);
  for (const GenSample& g : alone) {
    std::vector<int32_t> seq = r.prompt;
    seq.insert(seq.end(), g.tokens.begin(), g.tokens.end());
    std::vector<double> ref = full_logits(m, seq);
    for (size_t i = 0; i < g.tokens.size(); ++i) {
      std::vector<double> l(ref.begin() + int64_t(r.prompt.size() - 1 + i) * 64,
                            ref.begin() + int64_t(r.prompt.size() + i) * 64);
      for (double& x : l) x /= 0.9;
      CHECK(g.logprobs[i] == Approx(log_softmax_at(l.data(), 64, g.tokens[i])).margin(2e-4));
    }
  }
}

TEST_CASE("batched prefill (right-padded prompts in one forward) samples what one prompt per forward does", "[infer]") {
  Context ctx;
  Model m(tiny(), ctx, DType::f64);
  m.init_random(8);
  auto run = [&](int64_t prefill_tokens, const std::vector<int64_t>& lens, int64_t& batches) {
    EngineOptions eo;
    eo.page_size = 4;
    eo.prefill_tokens = prefill_tokens;
    Engine e(m, nullptr, eo);
    for (size_t i = 0; i < lens.size(); ++i) {
      GenRequest r;
      r.id = i;
      r.prompt = random_ids(lens[i], 64, 300 + i);
      r.n = 2;
      r.sp.temperature = 0.8;
      r.sp.seed = 11 + i;
      r.sp.max_new_tokens = 6;
      r.stop_at_eos = false;
      e.submit(r);
    }
    std::vector<GenSample> out = e.run_to_completion();
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return std::tie(a.request_id, a.sample) < std::tie(b.request_id, b.sample); });
    batches = e.stats().prefill_batches;
    CHECK(e.stats().prompts == int64_t(lens.size()));
    return out;
  };
  for (const std::vector<int64_t>& lens : {std::vector<int64_t>{5, 9, 7, 6}, std::vector<int64_t>{6, 6, 6}}) {
    int64_t one_batches = 0, many_batches = 0;
    const std::vector<GenSample> one = run(0, lens, one_batches);
    const std::vector<GenSample> many = run(256, lens, many_batches);
    CHECK(one_batches == int64_t(lens.size()));
    CHECK(many_batches == 1);  // padding 36 vs 27 real tokens: within the 2x bound
    REQUIRE(one.size() == many.size());
    for (size_t i = 0; i < one.size(); ++i) {
      CHECK(one[i].tokens == many[i].tokens);
      CHECK(one[i].prompt_tokens == many[i].prompt_tokens);
      for (size_t j = 0; j < one[i].logprobs.size(); ++j) CHECK(one[i].logprobs[j] == Approx(many[i].logprobs[j]).margin(1e-12));
    }
  }
  int64_t batches = 0;
  run(256, {2, 12, 3}, batches);  // 2 and 12 pad to 24 for 14 real; the 3 would make 36 for 17 (over 2x)
  CHECK(batches == 2);
  run(20, {6, 6, 6, 6}, batches);  // the token budget: 3 x 6 = 18 <= 20
  CHECK(batches == 2);
  // Under a placement report padding would count as served tokens: only prompts of one length go together, and
  // the report matches one prompt per forward.
  balance::LayerPlacement pl;
  pl.phy2log = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1};
  pl.log2phy = {{0, 8}, {1, 9}, {2}, {3}, {4}, {5}, {6}, {7}};
  pl.logcnt = {2, 2, 1, 1, 1, 1, 1, 1};
  m.set_placement({1}, {pl}, 2);
  m.reset_expert_load();
  run(0, {5, 9, 9, 6}, batches);
  const auto alone = m.gpu_load();
  m.reset_expert_load();
  run(256, {5, 9, 9, 6}, batches);
  CHECK(batches == 3);  // 5 | 9 9 | 6
  CHECK(m.gpu_load() == alone);
}

TEST_CASE("MTP speculative decoding: same greedy tokens as plain decoding; acceptance on a trained model", "[infer][mtp]") {
  Context ctx;
  init_threads(ctx, 1);
  Model m(tiny(), ctx);
  m.init_random(3);
  // Train briefly on deterministic patterns so the MTP module has something to predict.
  WindowSet w;
  w.T = 32;
  for (int64_t s = 0; s < 8; ++s)
    for (int64_t i = 0; i <= 32; ++i) w.tokens.push_back(int32_t((s % 4) * 7 + (i * (1 + s % 4)) % 13));
  TrainerOptions o;
  o.batch_size = 8;
  o.max_steps = 120;
  o.lr.lr = 1e-2;
  o.lr.warmup_steps = 5;
  o.optim.weight_decay = 0;
  o.progress = false;
  Tokenizer none;
  WindowSet empty;
  Trainer(m, none, w, empty, o).run();

  auto generate = [&](bool spec) {
    EngineOptions eo;
    eo.page_size = 8;
    eo.mtp_speculative = spec;
    Engine e(m, nullptr, eo);
    for (int64_t s = 0; s < 4; ++s) {
      GenRequest r;
      r.id = uint64_t(s);
      r.prompt.assign(w.tokens.begin() + s * 33, w.tokens.begin() + s * 33 + 6);
      r.sp.temperature = 0;
      r.sp.max_new_tokens = 20;
      r.stop_at_eos = false;
      e.submit(r);
    }
    std::vector<GenSample> out = e.run_to_completion();
    std::sort(out.begin(), out.end(), [](auto& a, auto& b) { return a.request_id < b.request_id; });
    return std::make_pair(out, e.stats());
  };
  auto [plain, ps] = generate(false);
  auto [spec, ss] = generate(true);
  REQUIRE(plain.size() == spec.size());
  for (size_t i = 0; i < plain.size(); ++i) CHECK(plain[i].tokens == spec[i].tokens);
  INFO("MTP acceptance " << ss.acceptance_rate() << " (" << ss.accepted << "/" << ss.drafted << "), decode steps "
                         << ss.decode_steps << " vs " << ps.decode_steps << " plain");
  CHECK(ss.drafted > 0);
  CHECK(ss.acceptance_rate() > 0.5);
  CHECK(ss.decode_steps < ps.decode_steps);
  WARN("MTP acceptance on the trained tiny model: " << ss.acceptance_rate() << " (" << ss.accepted << "/"
                                                   << ss.drafted << "), " << ss.decode_steps << " decode steps vs "
                                                   << ps.decode_steps);
}
