#pragma once
// DeepSeek-V3 model configuration: the keys of a Hugging Face `config.json` (model_type deepseek_v3),
// grouped as in the paper. Loaded from config.json or built from a named preset.
#include <cstdint>
#include <string>
#include <vector>

#include "ops/ops.h"

namespace ds {

struct YarnConfig {
  bool enabled = false;                            // rope_scaling / rope_parameters of type "yarn"
  double factor = 1.0;                             // s
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 1.0;
};

struct ModelConfig {
  // sizes
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;             // d_model
  int64_t intermediate_size = 0;       // dense SwiGLU width (layers < first_k_dense_replace)
  int64_t moe_intermediate_size = 0;   // width of one routed expert
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t max_position_embeddings = 4096;
  // mla
  int64_t q_lora_rank = 0;             // 0 (null in JSON) = plain q_proj, as V2-Lite
  int64_t kv_lora_rank = 0;            // the cached latent
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;        // also the single shared RoPE key dim
  int64_t v_head_dim = 0;
  // moe
  int64_t n_routed_experts = 0;        // 0 = every layer dense
  int64_t n_shared_experts = 0;        // one MLP of width n_shared * moe_intermediate
  int64_t num_experts_per_tok = 0;     // top-K
  int64_t n_group = 1;
  int64_t topk_group = 1;
  double routed_scaling_factor = 1.0;
  ScoreFunc scoring_func = ScoreFunc::sigmoid;
  TopkMethod topk_method = TopkMethod::noaux_tc;  // noaux_tc keeps e_score_correction_bias
  bool norm_topk_prob = true;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  // norms, rope
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  YarnConfig yarn;
  // heads
  bool tie_word_embeddings = false;
  int64_t num_nextn_predict_layers = 0;  // MTP depth D
  // tokens
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 1;
  double initializer_range = 0.02;

  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  bool is_moe_layer(int64_t layer) const;  // HF rule; the MTP blocks are MoE whenever experts exist
  bool has_router_bias() const { return topk_method == TopkMethod::noaux_tc; }
  GateOptions gate_options() const;
};

// Parses config.json text; `origin` names the file in errors. Missing required keys and bad values are
// bad-input errors naming the key and the file. Accepts rope_scaling (DeepSeek) or rope_parameters (HF 5.x).
ModelConfig config_from_json(const std::string& json, const std::string& origin);
ModelConfig config_load(const std::string& path);  // a config.json file or a directory holding one
// config.json as transformers writes it for DeepseekV3ForCausalLM (also readable by DeepSeek's tools).
std::string config_to_json(const ModelConfig& cfg);
// Named presets: "tiny" (unit tests, trains in seconds), "small" (the CPU demo).
ModelConfig config_preset(const std::string& name);
std::vector<std::string> config_preset_names();
// Divisibility and range checks, each a bad-input error naming the key.
void config_validate(const ModelConfig& cfg, const std::string& origin);
int64_t config_param_count(const ModelConfig& cfg, bool include_mtp = true);

}  // namespace ds
