#pragma once
// The model's tensors, named as in Hugging Face checkpoints. One layout serves parameters and gradients:
// bind_weights() declares every tensor of a config in an arena (HF name, shape) and points the structs
// below at them. Routed experts are contiguous blocks [n_experts, ...]; the checkpoint names of expert e
// (model.layers.N.mlp.experts.e.gate_proj.weight) are views index0(e) of those blocks.
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "tensor/arena.h"

namespace ds {

struct AttnWeights {
  Tensor q_proj;         // [H*dqk, D]      when q_lora_rank == 0
  Tensor q_a_proj;       // [Rq, D]         when q_lora_rank > 0
  Tensor q_a_layernorm;  // [Rq]
  Tensor q_b_proj;       // [H*dqk, Rq]
  Tensor kv_a_proj;      // [Rkv + dr, D]   (kv_a_proj_with_mqa: latent then the shared rope key)
  Tensor kv_a_layernorm; // [Rkv]
  Tensor kv_b_proj;      // [H*(dn + dv), Rkv], per head rows: W_UK (dn) then W_UV (dv)
  Tensor o_proj;         // [D, H*dv]
};

struct MlpWeights {
  Tensor gate_proj;  // [F, D]
  Tensor up_proj;    // [F, D]
  Tensor down_proj;  // [D, F]
};

struct MoeWeights {
  Tensor router;     // mlp.gate.weight [E, D]
  Tensor bias;       // mlp.gate.e_score_correction_bias [E] (a buffer: selection only, no gradient)
  Tensor gate_proj;  // [E, F, D]
  Tensor up_proj;    // [E, F, D]
  Tensor down_proj;  // [E, D, F]
  MlpWeights shared; // width n_shared * F (absent when n_shared_experts == 0)
};

struct BlockWeights {
  bool moe = false;
  Tensor input_layernorm;           // [D]
  Tensor post_attention_layernorm;  // [D]
  AttnWeights attn;
  MlpWeights mlp;  // dense layers
  MoeWeights moe_w;
};

struct MtpWeights {
  Tensor enorm;             // [D] on the embedding of the next token
  Tensor hnorm;             // [D] on the previous depth's hidden state
  Tensor eh_proj;           // [D, 2D], input [enorm(emb) ; hnorm(h)]
  Tensor shared_head_norm;  // [D]
  BlockWeights block;
};

struct ModelWeights {
  Tensor embed_tokens;  // [V, D]
  Tensor norm;          // [D]
  Tensor lm_head;       // [V, D] (the same tensor as embed_tokens when tied)
  std::vector<BlockWeights> layers;
  std::vector<MtpWeights> mtp;  // module k is checkpoint layer num_hidden_layers + k
};

// Declares every tensor in `arena` (not yet allocated) and returns the structs bound after allocation.
// Usage: ModelWeights w = bind_weights(cfg, arena, dtype); (allocates the arena).
ModelWeights bind_weights(const ModelConfig& cfg, Arena& arena, DType dtype);

// Checkpoint view: (HF name, tensor) for every tensor, expert blocks split per expert, MTP modules numbered
// after the last decoder layer with their copies of embed_tokens and shared_head.head as DeepSeek-V3 stores them
// (when with_mtp_copies).
std::vector<std::pair<std::string, Tensor>> checkpoint_tensors(const ModelConfig& cfg, const ModelWeights& w,
                                                               bool with_mtp_copies = true);

// The random-init stream of each tensor of an arena bound by bind_weights (Model::init_random): its index in the table
// as declared before kv_a_proj_with_mqa moved up next to q_a_proj (to be one product with it), so that a seed gives
// the weights it gave before.
std::vector<uint64_t> init_streams(const Arena& params);

// Tensors that receive no gradient and no optimizer update (the router biases).
bool is_buffer_name(const std::string& arena_name);
// Tensors exempt from weight decay (norms and buffers: everything 1-D).
bool is_decay_exempt(const Tensor& t);

}  // namespace ds
