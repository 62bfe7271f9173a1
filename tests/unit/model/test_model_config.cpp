// config.json parsing (DeepSeek's and transformers 5.x's spellings), validation errors, presets, YaRN constants.
#include <catch2/catch.hpp>
#include <cmath>

#include "core/io.h"
#include "model/config.h"
#include "model/rope.h"

using namespace ds;

namespace {
std::string fixture(const std::string& name) { return std::string(DS_TEST_FIXTURES) + "/" + name; }

std::string replace(std::string s, const std::string& from, const std::string& to) {
  auto p = s.find(from);
  REQUIRE(p != std::string::npos);
  return s.replace(p, from.size(), to);
}

int error_code_of(const std::function<void()>& f, std::string* msg) {
  try {
    f();
  } catch (const Error& e) {
    *msg = e.what();
    return e.exit_code();
  }
  return 0;
}
}  // namespace

TEST_CASE("DeepSeek-V3 config.json: every key, V3 derived facts", "[model][config]") {
  ModelConfig c = config_load(fixture("deepseek_v3_config.json"));
  CHECK(c.vocab_size == 129280);
  CHECK(c.q_lora_rank == 1536);
  CHECK(c.kv_lora_rank == 512);
  CHECK(c.qk_head_dim() == 192);
  CHECK(c.n_group == 8);
  CHECK(c.topk_group == 4);
  CHECK(c.scoring_func == ScoreFunc::sigmoid);
  CHECK(c.topk_method == TopkMethod::noaux_tc);
  CHECK(c.yarn.enabled);
  CHECK(c.yarn.factor == 40);
  CHECK(c.num_nextn_predict_layers == 1);
  CHECK(!c.is_moe_layer(2));
  CHECK(c.is_moe_layer(3));
  CHECK(c.is_moe_layer(61));  // the MTP block
  // MODEL.md §2.4: softmax scale 192^-0.5 * (0.1 ln 40 + 1)^2 = 0.1352338; cos/sin factor 1.
  CHECK(attention_softmax_scale(c) == Approx(0.1352338).epsilon(1e-6));
  CHECK(rope_attn_factor(c) == Approx(1.0));
  // YaRN ramp over dims 10..23 of 32: i <= 10 keeps theta^(-2i/64), i >= 23 is divided by 40.
  std::vector<double> f = rope_inv_freq(c);
  REQUIRE(f.size() == 32);
  for (int i : {0, 5, 10}) CHECK(f[i] == Approx(std::pow(10000.0, -2.0 * i / 64)).epsilon(1e-12));
  for (int i : {23, 31}) CHECK(f[i] == Approx(std::pow(10000.0, -2.0 * i / 64) / 40).epsilon(1e-12));
  CHECK(f[16] < std::pow(10000.0, -2.0 * 16 / 64));
  CHECK(f[16] > std::pow(10000.0, -2.0 * 16 / 64) / 40);
  // 671B total with MTP excluded (MODEL.md §1.4).
  CHECK(double(config_param_count(c, false)) == Approx(671.03e9).epsilon(2e-3));
}

TEST_CASE("config round trip through config_to_json; transformers 5.x spelling", "[model][config]") {
  ModelConfig a = config_preset("small");
  a.vocab_size = 1000;
  ModelConfig b = config_from_json(config_to_json(a), "round-trip");
  CHECK(b.hidden_size == a.hidden_size);
  CHECK(b.q_lora_rank == a.q_lora_rank);
  CHECK(b.yarn.factor == a.yarn.factor);
  CHECK(b.n_group == a.n_group);
  CHECK(b.num_nextn_predict_layers == a.num_nextn_predict_layers);

  // transformers 5.x: rope_parameters instead of rope_scaling, scoring_func/topk_method left out, q_lora null
  std::string j = read_file(fixture("deepseek_v3_config.json"));
  j = replace(j, "\"rope_scaling\"", "\"rope_parameters\"");
  j = replace(j, "\"type\": \"yarn\"", "\"rope_type\": \"yarn\", \"rope_theta\": 50000");
  j = replace(j, "\"scoring_func\": \"sigmoid\",", "");
  j = replace(j, "\"topk_method\": \"noaux_tc\",", "");
  j = replace(j, "\"q_lora_rank\": 1536", "\"q_lora_rank\": null");
  ModelConfig c = config_from_json(j, "hf5.json");
  CHECK(c.yarn.enabled);
  CHECK(c.rope_theta == 50000);
  CHECK(c.scoring_func == ScoreFunc::sigmoid);
  CHECK(c.topk_method == TopkMethod::noaux_tc);
  CHECK(c.q_lora_rank == 0);
}

TEST_CASE("bad config.json: missing key, bad value, wrong type -> bad input (exit 3) naming the key", "[model][config]") {
  std::string j = read_file(fixture("deepseek_v3_config.json"));
  std::string msg;
  CHECK(error_code_of([&] { config_from_json(replace(j, "\"kv_lora_rank\": 512,", ""), "c.json"); }, &msg) == 3);
  CHECK(msg.find("kv_lora_rank") != std::string::npos);
  CHECK(msg.find("c.json") != std::string::npos);
  CHECK(error_code_of([&] { config_from_json(replace(j, "\"n_group\": 8", "\"n_group\": 7"), "c.json"); }, &msg) == 3);
  CHECK(msg.find("n_group") != std::string::npos);
  CHECK(error_code_of([&] { config_from_json(replace(j, "\"hidden_size\": 7168", "\"hidden_size\": \"big\""), "c.json"); },
                      &msg) == 3);
  CHECK(msg.find("hidden_size") != std::string::npos);
  CHECK(error_code_of([&] { config_from_json("{\"vocab_size\": 5,", "c.json"); }, &msg) == 3);
  CHECK(error_code_of([&] { config_preset("huge"); }, &msg) == 2);
}
