#include "model/weights.h"

namespace ds {

namespace {

// Declares tensors and binds the Tensor slots once the arena is allocated.
class Binder {
 public:
  Binder(Arena& a, DType dt) : arena_(a), dtype_(dt) {}
  void add(Tensor& slot, const std::string& name, std::vector<int64_t> shape, DType dt) {
    pending_.push_back({&slot, arena_.add(name, dt, shape)});
  }
  void add(Tensor& slot, const std::string& name, std::vector<int64_t> shape) { add(slot, name, shape, dtype_); }
  void finish() {
    arena_.allocate();
    for (auto& [slot, i] : pending_) *slot = arena_[i];
  }

 private:
  Arena& arena_;
  DType dtype_;
  std::vector<std::pair<Tensor*, size_t>> pending_;
};

void declare_mlp(Binder& b, MlpWeights& m, const std::string& p, int64_t D, int64_t F) {
  b.add(m.gate_proj, p + "gate_proj.weight", {F, D});
  b.add(m.up_proj, p + "up_proj.weight", {F, D});
  b.add(m.down_proj, p + "down_proj.weight", {D, F});
}

void declare_block(Binder& b, BlockWeights& bw, const ModelConfig& c, int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  b.add(bw.input_layernorm, p + "input_layernorm.weight", {D});
  b.add(bw.post_attention_layernorm, p + "post_attention_layernorm.weight", {D});
  AttnWeights& a = bw.attn;
  const std::string s = p + "self_attn.";
  const std::vector<int64_t> kv_a_shape{c.kv_lora_rank + c.qk_rope_head_dim, D};
  if (c.q_lora_rank > 0) {
    // q_a_proj and kv_a_proj_with_mqa one after the other: both read x, and adjacent they are one product (layers.h;
    // init_streams keeps the random init of the order before)
    b.add(a.q_a_proj, s + "q_a_proj.weight", {c.q_lora_rank, D});
    b.add(a.kv_a_proj, s + "kv_a_proj_with_mqa.weight", kv_a_shape);
    b.add(a.q_a_layernorm, s + "q_a_layernorm.weight", {c.q_lora_rank});
    b.add(a.q_b_proj, s + "q_b_proj.weight", {H * c.qk_head_dim(), c.q_lora_rank});
  } else {
    b.add(a.q_proj, s + "q_proj.weight", {H * c.qk_head_dim(), D});
    b.add(a.kv_a_proj, s + "kv_a_proj_with_mqa.weight", kv_a_shape);
  }
  b.add(a.kv_a_layernorm, s + "kv_a_layernorm.weight", {c.kv_lora_rank});
  b.add(a.kv_b_proj, s + "kv_b_proj.weight", {H * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank});
  b.add(a.o_proj, s + "o_proj.weight", {D, H * c.v_head_dim});
  bw.moe = c.is_moe_layer(layer);
  if (!bw.moe) {
    declare_mlp(b, bw.mlp, p + "mlp.", D, c.intermediate_size);
    return;
  }
  MoeWeights& m = bw.moe_w;
  const int64_t E = c.n_routed_experts, F = c.moe_intermediate_size;
  b.add(m.router, p + "mlp.gate.weight", {E, D});
  // The bias stays f32 (or the compute dtype for the f64 checks), as DeepSeek keeps it fp32.
  if (c.has_router_bias()) b.add(m.bias, p + "mlp.gate.e_score_correction_bias", {E});
  // Expert blocks: arena names are the per-expert HF names with "experts.*".
  b.add(m.gate_proj, p + "mlp.experts.*.gate_proj.weight", {E, F, D});
  b.add(m.up_proj, p + "mlp.experts.*.up_proj.weight", {E, F, D});
  b.add(m.down_proj, p + "mlp.experts.*.down_proj.weight", {E, D, F});
  if (c.n_shared_experts > 0) declare_mlp(b, m.shared, p + "mlp.shared_experts.", D, F * c.n_shared_experts);
}

}  // namespace

ModelWeights bind_weights(const ModelConfig& c, Arena& arena, DType dtype) {
  ModelWeights w;
  w.layers.resize(size_t(c.num_hidden_layers));
  w.mtp.resize(size_t(c.num_nextn_predict_layers));
  Binder b(arena, dtype);
  const int64_t D = c.hidden_size;
  b.add(w.embed_tokens, "model.embed_tokens.weight", {c.vocab_size, D});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) declare_block(b, w.layers[l], c, l);
  b.add(w.norm, "model.norm.weight", {D});
  if (!c.tie_word_embeddings) b.add(w.lm_head, "lm_head.weight", {c.vocab_size, D});
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    const int64_t layer = c.num_hidden_layers + k;
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    MtpWeights& m = w.mtp[k];
    b.add(m.enorm, p + "enorm.weight", {D});
    b.add(m.hnorm, p + "hnorm.weight", {D});
    b.add(m.eh_proj, p + "eh_proj.weight", {D, 2 * D});
    b.add(m.shared_head_norm, p + "shared_head.norm.weight", {D});
    declare_block(b, m.block, c, layer);
  }
  b.finish();
  if (c.tie_word_embeddings) w.lm_head = w.embed_tokens;
  return w;
}

namespace {
bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}
}  // namespace

std::vector<uint64_t> init_streams(const Arena& params) {
  std::vector<uint64_t> s(params.size());
  for (size_t i = 0; i < s.size(); ++i) s[i] = i;
  for (size_t i = 0; i + 3 < s.size(); ++i) {
    if (!ends_with(params.name(i), ".self_attn.q_a_proj.weight")) continue;
    // declared q_a_proj, kv_a_proj_with_mqa, q_a_layernorm, q_b_proj; before: q_a_proj, q_a_layernorm, q_b_proj, kv_a
    DS_CHECK(ends_with(params.name(i + 1), ".self_attn.kv_a_proj_with_mqa.weight") &&
                 ends_with(params.name(i + 2), ".self_attn.q_a_layernorm.weight") &&
                 ends_with(params.name(i + 3), ".self_attn.q_b_proj.weight"),
             "init_streams: unexpected declaration order after " + params.name(i));
    s[i + 1] = i + 3;
    s[i + 2] = i + 1;
    s[i + 3] = i + 2;
  }
  return s;
}

namespace {
void push_block(std::vector<std::pair<std::string, Tensor>>& out, const ModelConfig& c, const BlockWeights& bw,
                int64_t layer) {
  const std::string p = "model.layers." + std::to_string(layer) + ".";
  auto put = [&](const std::string& n, const Tensor& t) {
    if (!t.empty()) out.emplace_back(p + n, t);
  };
  put("input_layernorm.weight", bw.input_layernorm);
  put("post_attention_layernorm.weight", bw.post_attention_layernorm);
  const AttnWeights& a = bw.attn;
  put("self_attn.q_proj.weight", a.q_proj);
  put("self_attn.q_a_proj.weight", a.q_a_proj);
  put("self_attn.q_a_layernorm.weight", a.q_a_layernorm);
  put("self_attn.q_b_proj.weight", a.q_b_proj);
  put("self_attn.kv_a_proj_with_mqa.weight", a.kv_a_proj);
  put("self_attn.kv_a_layernorm.weight", a.kv_a_layernorm);
  put("self_attn.kv_b_proj.weight", a.kv_b_proj);
  put("self_attn.o_proj.weight", a.o_proj);
  auto put_mlp = [&](const std::string& q, const MlpWeights& m) {
    put(q + "gate_proj.weight", m.gate_proj);
    put(q + "up_proj.weight", m.up_proj);
    put(q + "down_proj.weight", m.down_proj);
  };
  if (!bw.moe) {
    put_mlp("mlp.", bw.mlp);
    return;
  }
  const MoeWeights& m = bw.moe_w;
  put("mlp.gate.weight", m.router);
  put("mlp.gate.e_score_correction_bias", m.bias);
  for (int64_t e = 0; e < c.n_routed_experts; ++e) {
    const std::string q = "mlp.experts." + std::to_string(e) + ".";
    put(q + "gate_proj.weight", m.gate_proj.index0(e));
    put(q + "up_proj.weight", m.up_proj.index0(e));
    put(q + "down_proj.weight", m.down_proj.index0(e));
  }
  if (c.n_shared_experts > 0) put_mlp("mlp.shared_experts.", m.shared);
}
}  // namespace

std::vector<std::pair<std::string, Tensor>> checkpoint_tensors(const ModelConfig& c, const ModelWeights& w,
                                                               bool with_mtp_copies) {
  std::vector<std::pair<std::string, Tensor>> out;
  out.emplace_back("model.embed_tokens.weight", w.embed_tokens);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) push_block(out, c, w.layers[l], l);
  out.emplace_back("model.norm.weight", w.norm);
  if (!c.tie_word_embeddings) out.emplace_back("lm_head.weight", w.lm_head);
  for (int64_t k = 0; k < c.num_nextn_predict_layers; ++k) {
    const int64_t layer = c.num_hidden_layers + k;
    const std::string p = "model.layers." + std::to_string(layer) + ".";
    const MtpWeights& m = w.mtp[k];
    out.emplace_back(p + "enorm.weight", m.enorm);
    out.emplace_back(p + "hnorm.weight", m.hnorm);
    out.emplace_back(p + "eh_proj.weight", m.eh_proj);
    out.emplace_back(p + "shared_head.norm.weight", m.shared_head_norm);
    if (with_mtp_copies) {
      // DeepSeek-V3 stores the shared embedding and head again inside the MTP layer.
      out.emplace_back(p + "embed_tokens.weight", w.embed_tokens);
      out.emplace_back(p + "shared_head.head.weight", w.lm_head);
    }
    push_block(out, c, m.block, layer);
  }
  return out;
}

bool is_buffer_name(const std::string& n) {
  return n.size() >= 23 && n.compare(n.size() - 23, 23, "e_score_correction_bias") == 0;
}

bool is_decay_exempt(const Tensor& t) { return t.ndim <= 1; }

}  // namespace ds
