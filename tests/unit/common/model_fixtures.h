#pragma once
// Shared pieces of the model tests (CPU and GPU): the tiny DeepSeek-V3-shaped config, seeded random batches, and
// the relative L2 distance they compare gradients by.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "core/rng.h"
#include "model/model.h"

namespace ds::test {

// Every path of the model at toy size: q_lora, a dense layer then a MoE layer (group-limited routing, a shared
// expert), an MTP module, qk head dim (8) != v head dim (6). hidden_size 12 by default; 16 makes every stacked
// projection pair's first weight a multiple of 64 bytes in f32 and f64 (10, 16 and 6 rows of 16).
inline ModelConfig tiny_v3(int64_t hidden_size = 12) {
  ModelConfig c = config_preset("tiny");
  c.vocab_size = 23;
  c.hidden_size = hidden_size;
  c.intermediate_size = 16;
  c.moe_intermediate_size = 6;
  c.num_attention_heads = 2;
  c.q_lora_rank = 10;
  c.kv_lora_rank = 8;
  c.qk_nope_head_dim = 4;
  c.qk_rope_head_dim = 4;
  c.v_head_dim = 6;
  c.n_routed_experts = 8;
  c.n_group = 4;
  c.topk_group = 2;
  c.num_experts_per_tok = 3;
  c.n_shared_experts = 1;
  c.num_hidden_layers = 2;  // layer 0 dense, layer 1 MoE; MTP module = layer 2 (MoE)
  c.first_k_dense_replace = 1;
  c.num_nextn_predict_layers = 1;
  c.initializer_range = 0.3;  // large enough that every path carries signal in a tiny model
  return c;
}

// B rows of T + 1 seeded random token ids below the config's vocabulary; mask_every > 0 leaves every
// mask_every-th target out of the loss.
inline Batch random_batch(const ModelConfig& c, int64_t B, int64_t T, uint64_t seed, size_t mask_every = 0) {
  Batch b;
  b.B = B;
  b.T = T;
  Rng rng{seed, 1, 0};
  for (int64_t i = 0; i < B * (T + 1); ++i) b.tokens.push_back(int32_t(rng.next_below(uint64_t(c.vocab_size))));
  if (mask_every > 0) {
    b.loss_mask.assign(b.tokens.size(), 1);
    for (size_t i = 0; i < b.loss_mask.size(); i += mask_every) b.loss_mask[i] = 0;
  }
  return b;
}

// ||got - ref|| / ||ref|| (the absolute norm where ref is all zeros).
inline double rel_l2(const std::vector<double>& got, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    num += (got[i] - ref[i]) * (got[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

}  // namespace ds::test
