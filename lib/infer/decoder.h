#pragma once
// Incremental decoding with the absorbed MLA (MODEL.md §2.5): per token and layer only the normalised latent c
// and the rotated rope key are cached; queries are folded through W_UK (q_abs = W_UK^T q_nope) and outputs through
// W_UV, so attention is MQA over [c ; k_pe] with V = c. Any number of rows per call; rows of one sequence carry
// consecutive positions (MTP verification runs 2). Blocks reuse the model's dense / MoE forward.
#include <cstdint>
#include <vector>

#include "infer/kv_cache.h"
#include "model/layers.h"
#include "model/model.h"

namespace ds {

// Per decode call: where each row's token sits and what it may attend to.
struct DecodeRows {
  Tensor ids;          // [n] i32 token ids
  Tensor pos;          // [n] i32 positions
  Tensor slot_rows;    // [n] i32 pool row receiving the row's latent
  Tensor block_table;  // [n, max_blocks] i32 pages of the row's sequence
  Tensor kv_len;       // [n] i32 tokens visible to the row (its own position + 1)
};

class Decoder {
 public:
  explicit Decoder(Model& model);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;
  // Recomputes the per-head W_UK^T and the stacked weights after the model's weights changed (e.g. a GRPO step).
  void refresh();
  // Main model: rows -> logits [n, V] and final-normed hidden [n, D] (both from ws). Cache layers 0..L-1.
  void forward(Workspace& ws, PagedKvCache& cache, const DecodeRows& rows, Tensor* logits, Tensor* hidden);
  // MTP module k (1-based) on rows whose ids are t_{i+1} and prev_hidden the depth-(k-1) hidden of position i:
  // draft logits [n, V] and its output hidden [n, D]. Cache layer L + k - 1.
  void mtp_forward(Workspace& ws, PagedKvCache& cache, int64_t k, const DecodeRows& rows, Tensor prev_hidden,
                   Tensor* logits, Tensor* hidden);
  Model& model() { return model_; }

 private:
  Tensor block(Workspace& ws, PagedKvCache& cache, int64_t cache_layer, const DecodeRows& rows, Tensor x, Tensor h,
               const BlockWeights& w, size_t absorbed_index, MoeLoad* load, Tensor next_norm, Tensor* next_h);
  Tensor mla(Workspace& ws, Tensor pool, const DecodeRows& rows, Tensor x, const AttnWeights& w, size_t ai);
  Tensor mlp(const Context& ctx, Workspace& ws, const std::string& name, Tensor x, const MlpWeights& w,
             Tensor gate_up);
  LayerEnv env(int64_t n) const;
  // Independent branches of a step (the shared expert beside the routed ones, q_pe's RoPE beside the W_UK fold)
  // run on a second CUDA stream: fork() orders the side stream after the work so far and returns its context,
  // join() orders what follows on the main stream after the side work. In a captured decode step the two become
  // parallel graph branches, so a branch's launches leave the step's critical path. On the CPU fork() returns the
  // model's context and join() does nothing.
  const Context& fork();
  void join();
  const BlockWeights& block_weights(size_t b) const;

  Model& model_;
  // On CUDA, launches are what a decode step costs, so projections that read the same input run as one GEMM over
  // weights stacked here (the CPU keeps the separate products: its recorded runs stay bit-identical).
  bool stack_;
  SideStream side_;  // CUDA: gpu::kSideStream (one per device for the process)
  Arena absorbed_;
  std::vector<Tensor> w_uk_t_;   // per block: W_UK^T per head [H, Rkv, dn] (main layers, then MTP blocks)
  std::vector<Tensor> qkv_a_;    // per block (stack_, q_lora_rank > 0): [q_a_proj ; kv_a_proj]  [Q + Rkv + dr, D]
  std::vector<Tensor> gate_up_;  // per block (stack_): [gate_proj ; up_proj] of the dense MLP or shared expert
};

}  // namespace ds
