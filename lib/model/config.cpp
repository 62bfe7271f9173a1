#include "model/config.h"

#include <cmath>

#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"

namespace ds {

bool ModelConfig::is_moe_layer(int64_t layer) const {
  if (n_routed_experts <= 0) return false;
  if (layer >= num_hidden_layers) return true;  // MTP blocks follow the MoE layers (V3: layer 61)
  return layer >= first_k_dense_replace && moe_layer_freq > 0 && layer % moe_layer_freq == 0;
}

GateOptions ModelConfig::gate_options() const {
  GateOptions g;
  g.score_func = scoring_func;
  g.topk_method = topk_method;
  g.n_group = int(n_group);
  g.topk_group = int(topk_group);
  g.top_k = int(num_experts_per_tok);
  g.norm_topk_prob = norm_topk_prob;
  g.routed_scaling_factor = routed_scaling_factor;
  return g;
}

namespace {

struct Reader {
  const JsonlRecord& rec;
  const std::string& origin;
  bool present(const char* k) const { return rec.has(k) && !rec.is_null(k); }
  int64_t req_int(const char* k) const {
    if (!present(k)) throw_bad_input(std::string("missing config key '") + k + "'", origin);
    return rec.get_int(k);
  }
  int64_t opt_int(const char* k, int64_t def) const { return present(k) ? rec.get_int(k) : def; }
  double opt_double(const char* k, double def) const { return present(k) ? rec.get_double(k) : def; }
  bool opt_bool(const char* k, bool def) const { return present(k) ? rec.get_bool(k) : def; }
  std::string opt_string(const char* k, const std::string& def) const { return present(k) ? rec.get_string(k) : def; }
};

void read_yarn(const JsonlRecord& rs, const std::string& origin, ModelConfig& c) {
  Reader r{rs, origin};
  std::string type = r.opt_string("type", r.opt_string("rope_type", "default"));
  if (r.present("rope_theta")) c.rope_theta = r.opt_double("rope_theta", c.rope_theta);
  if (type == "default" || type == "none") return;
  if (type != "yarn") throw_bad_input("unsupported rope scaling type '" + type + "' (only yarn)", origin);
  c.yarn.enabled = true;
  c.yarn.factor = r.opt_double("factor", 1.0);
  c.yarn.original_max_position_embeddings =
      r.opt_int("original_max_position_embeddings", c.max_position_embeddings);
  c.yarn.beta_fast = r.opt_double("beta_fast", 32.0);
  c.yarn.beta_slow = r.opt_double("beta_slow", 1.0);
  c.yarn.mscale = r.opt_double("mscale", 0.0);
  c.yarn.mscale_all_dim = r.opt_double("mscale_all_dim", 0.0);
}

}  // namespace

ModelConfig config_from_json(const std::string& json, const std::string& origin) {
  JsonlRecord rec = parse_object(json, origin);
  Reader r{rec, origin};
  ModelConfig c;
  std::string mt = r.opt_string("model_type", "deepseek_v3");
  if (mt != "deepseek_v3" && mt != "deepseek_v2")
    throw_bad_input("model_type is '" + mt + "', expected deepseek_v3", origin);
  c.vocab_size = r.req_int("vocab_size");
  c.hidden_size = r.req_int("hidden_size");
  c.intermediate_size = r.req_int("intermediate_size");
  c.num_hidden_layers = r.req_int("num_hidden_layers");
  c.num_attention_heads = r.req_int("num_attention_heads");
  c.max_position_embeddings = r.opt_int("max_position_embeddings", 4096);
  c.q_lora_rank = r.opt_int("q_lora_rank", 0);  // null = no query compression
  c.kv_lora_rank = r.req_int("kv_lora_rank");
  c.qk_nope_head_dim = r.req_int("qk_nope_head_dim");
  c.qk_rope_head_dim = r.req_int("qk_rope_head_dim");
  c.v_head_dim = r.req_int("v_head_dim");
  c.n_routed_experts = r.opt_int("n_routed_experts", 0);
  c.moe_intermediate_size = c.n_routed_experts > 0 ? r.req_int("moe_intermediate_size")
                                                    : r.opt_int("moe_intermediate_size", 0);
  c.n_shared_experts = r.opt_int("n_shared_experts", 0);
  c.num_experts_per_tok = c.n_routed_experts > 0 ? r.req_int("num_experts_per_tok") : 0;
  c.n_group = r.opt_int("n_group", 1);
  c.topk_group = r.opt_int("topk_group", 1);
  c.routed_scaling_factor = r.opt_double("routed_scaling_factor", 1.0);
  // transformers 5.x leaves scoring_func/topk_method out for deepseek_v3: sigmoid + noaux_tc (MODEL.md §10).
  std::string sf = r.opt_string("scoring_func", "sigmoid");
  if (sf == "sigmoid") c.scoring_func = ScoreFunc::sigmoid;
  else if (sf == "softmax") c.scoring_func = ScoreFunc::softmax;
  else throw_bad_input("unsupported scoring_func '" + sf + "'", origin);
  std::string tm = r.opt_string("topk_method", "noaux_tc");
  if (tm == "noaux_tc") c.topk_method = TopkMethod::noaux_tc;
  else if (tm == "group_limited_greedy") c.topk_method = TopkMethod::group_limited_greedy;
  else if (tm == "greedy") c.topk_method = TopkMethod::greedy;
  else throw_bad_input("unsupported topk_method '" + tm + "'", origin);
  c.norm_topk_prob = r.opt_bool("norm_topk_prob", true);
  c.first_k_dense_replace = r.opt_int("first_k_dense_replace", 0);
  c.moe_layer_freq = r.opt_int("moe_layer_freq", 1);
  c.rms_norm_eps = r.opt_double("rms_norm_eps", 1e-6);
  c.rope_theta = r.opt_double("rope_theta", 10000.0);
  if (r.present("rope_scaling")) read_yarn(rec.get_object("rope_scaling"), origin, c);
  else if (r.present("rope_parameters")) read_yarn(rec.get_object("rope_parameters"), origin, c);
  c.tie_word_embeddings = r.opt_bool("tie_word_embeddings", false);
  c.num_nextn_predict_layers = r.opt_int("num_nextn_predict_layers", 0);
  c.bos_token_id = r.opt_int("bos_token_id", 0);
  c.eos_token_id = r.opt_int("eos_token_id", 1);
  c.initializer_range = r.opt_double("initializer_range", 0.02);
  if (r.present("rope_interleave") && !r.opt_bool("rope_interleave", true))
    throw_bad_input("rope_interleave false is not supported (DeepSeek checkpoints use interleaved pairs)", origin);
  config_validate(c, origin);
  return c;
}

ModelConfig config_load(const std::string& path) {
  std::string file = is_directory(path) ? path + "/config.json" : path;
  return config_from_json(read_file(file), file);
}

void config_validate(const ModelConfig& c, const std::string& origin) {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw_bad_input("invalid config: " + what, origin);
  };
  need(c.vocab_size > 0, "vocab_size must be > 0");
  need(c.hidden_size > 0, "hidden_size must be > 0");
  need(c.num_hidden_layers > 0, "num_hidden_layers must be > 0");
  need(c.num_attention_heads > 0, "num_attention_heads must be > 0");
  need(c.q_lora_rank >= 0, "q_lora_rank must be >= 0 or null");
  need(c.kv_lora_rank > 0, "kv_lora_rank must be > 0");
  need(c.qk_nope_head_dim > 0, "qk_nope_head_dim must be > 0");
  need(c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0, "qk_rope_head_dim must be even and > 0");
  need(c.v_head_dim > 0, "v_head_dim must be > 0");
  need(c.rms_norm_eps > 0, "rms_norm_eps must be > 0");
  need(c.num_nextn_predict_layers >= 0, "num_nextn_predict_layers must be >= 0");
  need(c.first_k_dense_replace >= 0, "first_k_dense_replace must be >= 0");
  bool any_dense = c.n_routed_experts == 0 || c.first_k_dense_replace > 0 || c.moe_layer_freq != 1;
  if (any_dense) need(c.intermediate_size > 0, "intermediate_size must be > 0");
  if (c.n_routed_experts > 0) {
    need(c.moe_intermediate_size > 0, "moe_intermediate_size must be > 0");
    need(c.moe_layer_freq > 0, "moe_layer_freq must be > 0");
    need(c.num_experts_per_tok > 0 && c.num_experts_per_tok <= c.n_routed_experts,
         "num_experts_per_tok must be in 1..n_routed_experts");
    need(c.n_group > 0 && c.n_routed_experts % c.n_group == 0, "n_routed_experts must be divisible by n_group");
    need(c.topk_group > 0 && c.topk_group <= c.n_group, "topk_group must be in 1..n_group");
    int64_t per_group = c.n_routed_experts / c.n_group;
    need(c.num_experts_per_tok <= c.topk_group * per_group,
         "num_experts_per_tok exceeds the experts of topk_group groups");
    need(c.topk_method != TopkMethod::noaux_tc || c.n_group == 1 || per_group >= 2,
         "noaux_tc group scores need at least 2 experts per group");
    need(c.routed_scaling_factor > 0, "routed_scaling_factor must be > 0");
  }
  if (c.yarn.enabled) need(c.yarn.factor >= 1.0, "rope_scaling.factor must be >= 1");
}

static void write_rope(JsonWriter& w, const ModelConfig& c) {
  w.kv("rope_theta", c.rope_theta);
  w.key("rope_scaling");
  if (!c.yarn.enabled) {
    w.null();
    return;
  }
  w.begin_object();
  w.kv("type", "yarn");
  w.kv("factor", c.yarn.factor);
  w.kv("original_max_position_embeddings", c.yarn.original_max_position_embeddings);
  w.kv("beta_fast", c.yarn.beta_fast);
  w.kv("beta_slow", c.yarn.beta_slow);
  w.kv("mscale", c.yarn.mscale);
  w.kv("mscale_all_dim", c.yarn.mscale_all_dim);
  w.end_object();
}

std::string config_to_json(const ModelConfig& c) {
  JsonWriter w(true);
  w.begin_object();
  w.key("architectures").begin_array().value("DeepseekV3ForCausalLM").end_array();
  w.kv("model_type", "deepseek_v3");
  w.kv("vocab_size", c.vocab_size);
  w.kv("hidden_size", c.hidden_size);
  w.kv("intermediate_size", c.intermediate_size);
  w.kv("moe_intermediate_size", c.moe_intermediate_size);
  w.kv("num_hidden_layers", c.num_hidden_layers);
  w.kv("num_attention_heads", c.num_attention_heads);
  w.kv("num_key_value_heads", c.num_attention_heads);
  w.kv("max_position_embeddings", c.max_position_embeddings);
  w.key("q_lora_rank");
  if (c.q_lora_rank > 0) w.value(c.q_lora_rank); else w.null();
  w.kv("kv_lora_rank", c.kv_lora_rank);
  w.kv("qk_nope_head_dim", c.qk_nope_head_dim);
  w.kv("qk_rope_head_dim", c.qk_rope_head_dim);
  w.kv("v_head_dim", c.v_head_dim);
  w.kv("head_dim", c.qk_rope_head_dim);  // transformers uses head_dim for the rotary dim
  w.kv("n_routed_experts", c.n_routed_experts);
  w.kv("n_shared_experts", c.n_shared_experts);
  w.kv("num_experts_per_tok", c.num_experts_per_tok);
  w.kv("n_group", c.n_group);
  w.kv("topk_group", c.topk_group);
  w.kv("routed_scaling_factor", c.routed_scaling_factor);
  w.kv("scoring_func", c.scoring_func == ScoreFunc::sigmoid ? "sigmoid" : "softmax");
  w.kv("topk_method", c.topk_method == TopkMethod::noaux_tc             ? "noaux_tc"
                      : c.topk_method == TopkMethod::group_limited_greedy ? "group_limited_greedy"
                                                                          : "greedy");
  w.kv("norm_topk_prob", c.norm_topk_prob);
  w.kv("first_k_dense_replace", c.first_k_dense_replace);
  w.kv("moe_layer_freq", c.moe_layer_freq);
  w.kv("hidden_act", "silu");
  w.kv("rms_norm_eps", c.rms_norm_eps);
  write_rope(w, c);
  w.kv("rope_interleave", true);
  w.kv("attention_bias", false);
  w.kv("attention_dropout", 0.0);
  w.kv("tie_word_embeddings", c.tie_word_embeddings);
  w.kv("num_nextn_predict_layers", c.num_nextn_predict_layers);
  w.kv("bos_token_id", c.bos_token_id);
  w.kv("eos_token_id", c.eos_token_id);
  w.kv("initializer_range", c.initializer_range);
  w.kv("use_cache", true);
  w.kv("torch_dtype", "float32");
  w.end_object();
  return w.take() + "\n";
}

ModelConfig config_preset(const std::string& name) {
  ModelConfig c;
  c.rms_norm_eps = 1e-6;
  c.rope_theta = 10000.0;
  c.scoring_func = ScoreFunc::sigmoid;
  c.topk_method = TopkMethod::noaux_tc;
  c.norm_topk_prob = true;
  c.yarn.enabled = true;  // exercise YaRN as V3 does (factor > 1 on a short original context)
  c.yarn.mscale = 1.0;
  c.yarn.mscale_all_dim = 1.0;
  c.yarn.beta_fast = 32;
  c.yarn.beta_slow = 1;
  if (name == "tiny") {
    // Every V3 feature at toy size: q_lora, a dense layer, grouped sigmoid MoE with a shared expert, MTP.
    c.vocab_size = 512;
    c.hidden_size = 32;
    c.intermediate_size = 64;
    c.moe_intermediate_size = 16;
    c.num_hidden_layers = 2;
    c.num_attention_heads = 2;
    c.max_position_embeddings = 256;
    c.q_lora_rank = 24;
    c.kv_lora_rank = 16;
    c.qk_nope_head_dim = 8;
    c.qk_rope_head_dim = 8;
    c.v_head_dim = 8;
    c.n_routed_experts = 8;
    c.n_shared_experts = 1;
    c.num_experts_per_tok = 2;
    c.n_group = 2;
    c.topk_group = 1;
    c.routed_scaling_factor = 2.5;
    c.first_k_dense_replace = 1;
    c.num_nextn_predict_layers = 1;
    c.yarn.factor = 4;
    c.yarn.original_max_position_embeddings = 64;
  } else if (name == "small") {
    // The CPU demo model (~5M parameters with a 4k vocab): trains for minutes on a laptop.
    c.vocab_size = 4096;
    c.hidden_size = 192;
    c.intermediate_size = 512;
    c.moe_intermediate_size = 96;
    c.num_hidden_layers = 4;
    c.num_attention_heads = 4;
    c.max_position_embeddings = 1024;
    c.q_lora_rank = 96;
    c.kv_lora_rank = 64;
    c.qk_nope_head_dim = 32;
    c.qk_rope_head_dim = 16;
    c.v_head_dim = 32;
    c.n_routed_experts = 16;
    c.n_shared_experts = 1;
    c.num_experts_per_tok = 4;
    c.n_group = 4;
    c.topk_group = 2;
    c.routed_scaling_factor = 2.5;
    c.first_k_dense_replace = 1;
    c.num_nextn_predict_layers = 1;
    c.yarn.factor = 4;
    c.yarn.original_max_position_embeddings = 256;
  } else {
    std::string names;
    for (auto& n : config_preset_names()) names += (names.empty() ? "" : ", ") + n;
    throw_usage("unknown model preset '" + name + "' (presets: " + names + ")");
  }
  return c;
}

std::vector<std::string> config_preset_names() { return {"tiny", "small"}; }

int64_t config_param_count(const ModelConfig& c, bool include_mtp) {
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  int64_t attn = (c.q_lora_rank > 0 ? D * c.q_lora_rank + c.q_lora_rank + c.q_lora_rank * H * c.qk_head_dim()
                                    : D * H * c.qk_head_dim()) +
                 D * (c.kv_lora_rank + c.qk_rope_head_dim) + c.kv_lora_rank +
                 c.kv_lora_rank * H * (c.qk_nope_head_dim + c.v_head_dim) + H * c.v_head_dim * D + 2 * D;
  int64_t dense = 3 * D * c.intermediate_size;
  int64_t moe = c.n_routed_experts * 3 * D * c.moe_intermediate_size +
                3 * D * c.moe_intermediate_size * c.n_shared_experts + c.n_routed_experts * D +
                (c.has_router_bias() ? c.n_routed_experts : 0);
  int64_t n = c.vocab_size * D * (c.tie_word_embeddings ? 1 : 2) + D;
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) n += attn + (c.is_moe_layer(l) ? moe : dense);
  if (include_mtp)
    n += c.num_nextn_predict_layers * (attn + (c.n_routed_experts > 0 ? moe : dense) + 3 * D + 2 * D * D);
  return n;
}

}  // namespace ds
