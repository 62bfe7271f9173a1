// SFT end to end: the loss counts the assistant tokens only, and run_sft on a tiny base checkpoint lowers the
// assistant-token loss, writes a checkpoint and follows ds-pretrain's --resume/--overwrite rules.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>

#include "core/error.h"
#include "core/io.h"
#include "core/jsonl.h"
#include "sft_fixture.h"
#include "train/sft.h"

using namespace ds;
using ds::test::arith_chat;
using ds::test::chat_tokenizer;
using ds::test::SftTmp;
using ds::test::write_chats;

namespace {

Context one_thread() {
  Context ctx;
  init_threads(ctx, 1);
  return ctx;
}

std::vector<std::vector<ChatMessage>> arith_chats(int n) {
  std::vector<std::vector<ChatMessage>> out;
  for (int i = 0; i < n; ++i) out.push_back(arith_chat(i));
  return out;
}

int64_t mask_targets(const Batch& b) {
  int64_t n = 0;
  for (int64_t s = 0; s < b.B; ++s)
    for (int64_t i = 1; i <= b.T; ++i) n += b.loss_mask[size_t(s * (b.T + 1) + i)] != 0;
  return n;
}

struct StepRecord {
  int64_t step;
  double main_loss;
};

void read_metrics(const std::string& path, std::vector<StepRecord>& steps, std::vector<StepRecord>& evals) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    JsonlRecord r = parse_object(line, path);
    if (r.has("main_loss")) steps.push_back({r.get_int("step"), r.get_double("main_loss")});
    if (r.has("eval_loss")) evals.push_back({r.get_int("step"), r.get_double("eval_loss")});
  }
}

SftOptions tiny_run(const SftTmp& dir, const std::string& input, const std::string& out) {
  SftOptions o;
  o.input = input;
  o.output_dir = out;
  o.init_from = dir / "base";
  o.data.seq_len = 64;
  o.data.eval_fraction = 0.1;
  o.train.batch_size = 4;
  o.train.lr.lr = 3e-3;
  o.train.lr.warmup_steps = 3;
  o.train.optim.weight_decay = 0;
  o.train.progress = false;
  return o;
}

}  // namespace

TEST_CASE("sft loss: the counted targets are the assistant tokens, whatever the user says", "[sft][train]") {
  const Tokenizer& tok = chat_tokenizer();
  Context ctx = one_thread();
  SftTmp dir;
  auto chats = arith_chats(6);
  // The same answers after other questions (different user tokens, different lengths).
  auto other = chats;
  for (size_t k = 0; k < other.size(); ++k) other[k][0].content = "Please compute this for me: " + chats[k][0].content;
  write_chats(dir / "a.jsonl", chats);
  write_chats(dir / "b.jsonl", other);
  SftDataOptions o;
  o.seq_len = 128;
  o.packing = false;
  o.eval_fraction = 0;
  SftData a = load_sft_data(dir / "a.jsonl", tok, o);
  SftData b = load_sft_data(dir / "b.jsonl", tok, o);
  REQUIRE(a.n_truncated == 0);
  REQUIRE(b.n_truncated == 0);
  int64_t assistant_tokens = 0;
  for (const auto& c : chats) assistant_tokens += render_chat(tok, c).n_trainable();
  CHECK(a.n_trainable == assistant_tokens);
  CHECK(b.n_trainable == assistant_tokens);

  Model m(ds::test::tiny_config(tok), ctx);
  m.init_random(11);
  const int64_t V = m.config().vocab_size;
  for (const SftData* d : {&a, &b}) {
    Batch batch = fixed_batches(d->train, 6, 1)[0];
    LossInfo li = m.forward(batch);
    CHECK(li.n_targets == mask_targets(batch));
    CHECK(li.n_targets == assistant_tokens);
    // main_loss is the mean cross-entropy over exactly the masked targets.
    std::vector<double> logits = to_host_f64(m.logits());
    double total = 0;
    for (int64_t s = 0; s < batch.B; ++s)
      for (int64_t i = 0; i < batch.T; ++i) {
        const size_t j = size_t(s * (batch.T + 1) + i + 1);
        if (!batch.loss_mask[j]) continue;
        const double* row = logits.data() + (s * batch.T + i) * V;
        double mx = row[0];
        for (int64_t v = 1; v < V; ++v) mx = std::max(mx, row[v]);
        double se = 0;
        for (int64_t v = 0; v < V; ++v) se += std::exp(row[v] - mx);
        total += mx + std::log(se) - row[batch.tokens[j]];
      }
    CHECK(li.main_loss == Approx(total / double(assistant_tokens)).epsilon(1e-5));
  }
}

TEST_CASE("run_sft: a tiny base model learns the assistant answers in 30 steps", "[sft][train]") {
  const Tokenizer& tok = chat_tokenizer();
  Context ctx = one_thread();
  SftTmp dir;
  ds::test::write_base_checkpoint(dir / "base", tok, ctx);
  write_chats(dir / "chat.jsonl", arith_chats(80));
  SftOptions o = tiny_run(dir, dir / "chat.jsonl", dir / "sft");
  o.train.max_steps = 30;
  o.train.eval_every = 15;
  o.train.metrics_path = dir / "m.jsonl";
  const double final_eval = run_sft(ctx, o);

  std::vector<StepRecord> steps, evals;
  read_metrics(dir / "m.jsonl", steps, evals);
  REQUIRE(steps.size() == 30);
  REQUIRE(evals.size() == 3);  // steps 0, 15, 30
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += steps[size_t(i)].main_loss / 5, last += steps[size_t(25 + i)].main_loss / 5;
  INFO("assistant-token loss: first 5 steps " << first << ", last 5 steps " << last << "; held-out "
                                              << evals[0].main_loss << " -> " << evals[2].main_loss);
  CHECK(last < 0.7 * first);
  CHECK(evals[0].step == 0);
  CHECK(evals[2].main_loss < 0.7 * evals[0].main_loss);
  CHECK(final_eval == Approx(evals[2].main_loss));
  // A complete checkpoint with the base model's tokenizer.
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json",
                        "optimizer.safetensors", "trainer_state.json"})
    CHECK(path_exists(dir / ("sft/" + std::string(f))));
  CHECK(read_trainer_state(dir / "sft").step == 30);
  CHECK(Tokenizer::load(dir / "sft").serialized_model() == tok.serialized_model());

  SECTION("an existing checkpoint needs --resume or --overwrite") {
    SftOptions again = tiny_run(dir, dir / "chat.jsonl", dir / "sft");
    again.train.max_steps = 2;
    try {
      run_sft(ctx, again);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(e.kind() == ErrorKind::usage);
      CHECK(std::string(e.what()).find("--overwrite") != std::string::npos);
    }
    again.resume = true;
    again.train.max_steps = 32;
    again.train.metrics_path = dir / "m.jsonl";
    run_sft(ctx, again);
    CHECK(read_trainer_state(dir / "sft").step == 32);
    std::vector<StepRecord> s2, e2;
    read_metrics(dir / "m.jsonl", s2, e2);
    CHECK(s2.size() == 32);
  }
}

TEST_CASE("run_sft: --epochs sets the steps, --init-from is required, bad data writes nothing", "[sft][train]") {
  const Tokenizer& tok = chat_tokenizer();
  Context ctx = one_thread();
  SftTmp dir;
  ds::test::write_base_checkpoint(dir / "base", tok, ctx);
  write_chats(dir / "chat.jsonl", arith_chats(12));
  SftOptions o = tiny_run(dir, dir / "chat.jsonl", dir / "e");
  o.epochs = 2;
  o.data.eval_fraction = 0;
  SftData d = load_sft_data(o.input, tok, o.data);
  run_sft(ctx, o);
  CHECK(read_trainer_state(dir / "e").step == sft_steps_for_epochs(2, d.train.size(), 4));

  SftOptions no_base = tiny_run(dir, dir / "chat.jsonl", dir / "n");
  no_base.init_from.clear();
  CHECK_THROWS_AS(run_sft(ctx, no_base), Error);
  CHECK(!path_exists(dir / "n"));

  ds::test::write_text(dir / "bad.jsonl", ds::test::messages_json(arith_chat(0)) + "\n{\"messages\": 3}\n");
  SftOptions bad = tiny_run(dir, dir / "bad.jsonl", dir / "b");
  try {
    run_sft(ctx, bad);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.kind() == ErrorKind::bad_input);
    CHECK(std::string(e.what()).find("bad.jsonl:2)") != std::string::npos);
  }
  CHECK(!path_exists(dir / "b"));
}
