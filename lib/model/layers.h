#pragma once
// One decoder block of DeepSeek-V3, forward and backward, written out per sub-layer (llm.c style):
//   x_mid = x + MLA(RMSNorm(x));  x_out = x_mid + FFN(RMSNorm(x_mid)),  FFN = dense SwiGLU or DeepSeekMoE.
// Shapes: N = B*T tokens (row-major [B, T]), D hidden, H heads, dn/dr/dv head dims, Rq/Rkv latent ranks.
//
// Gradient rule (as in lib/ops): parameter gradients accumulate (+=); activation gradients overwrite, except
// the residual stream d_resid, which each block updates in place from d(x_out) to d(x_in).
#include <string>
#include <vector>

#include "balance/placement.h"
#include "model/config.h"
#include "model/weights.h"
#include "tensor/side_stream.h"
#include "tensor/workspace.h"

namespace ds {

// DS_FUSED_PROJ: on unless "0", read once (LayerEnv::fuse_proj's default; stacked.cpp).
bool fused_proj_default();

// What a forward pass needs besides weights: positions, RoPE tables, the batch shape, training switches.
struct LayerEnv {
  const Context* ctx = nullptr;
  // A second stream for a block's independent branches (the MoE layer's shared expert beside the routed experts,
  // MLA's key/value branch beside the query's): small or latency-bound kernels of one branch (the routing chain,
  // the permutes) leave SMs the other's products can use. Null (the CPU): the branches run in order.
  const SideStream* side = nullptr;
  const ModelConfig* cfg = nullptr;
  DType dtype = DType::f32;   // activations (and the compute weights): f32/f64, or bf16 on CUDA
  DType sdtype = DType::f32;  // saved statistics (rstd, lse, gate scores, routing weights): dtype, f32 when bf16
  int64_t B = 0, T = 0;
  Tensor pos;       // [N] i32, position of each token in its sequence
  Tensor inv_freq;  // [dr/2]
  double rope_attn_factor = 1.0;
  double softmax_scale = 1.0;
  double balance_alpha = 0.0;  // sequence-wise balance loss weight (0 = off)
  // Forward only (the decoder): activations kept only for the backward need not exist, so fused inference ops
  // may replace the ops that produce them (the routed experts' gate/up products).
  bool inference = false;
  // The routed experts' weight gradients: written over on the first backward after Model::zero_grads, which leaves
  // them (2.2 of the bench model's 2.7 GB of gradients), added onto after.
  Accum expert_grads = Accum::add;
  // Two projections of one input whose weights lie one after the other run as one product (stacked_weight):
  // DS_FUSED_PROJ=0 in the environment, or Model::set_fused_projections(false) (the CPU model's default), keeps the
  // two products.
  bool fuse_proj = fused_proj_default();
  int64_t N() const { return B * T; }
};

struct MlaActs {
  // x's down-projections, read in place by column: q_a(x) (q_lora only) at q_a's columns [0, Rq), kv_a(x) = the raw
  // latent ; the rope key before RoPE at kv_a's columns [kv_col, kv_col + Rkv + dr). Two products: q_a [N, Rq], kv_a
  // [N, Rkv + dr], kv_col 0; one (the weights adjacent, stacked_weight): q_a and kv_a are the same [N, Rq + Rkv + dr]
  // tensor, kv_col = Rq.
  Tensor q_a, kv_a;
  int64_t kv_col = 0;
  Tensor q_a_rstd, q_a_n;       // [N], [N, Rq]               (q_lora only)
  Tensor q_full;                // [N, H, dqk] nope ; rotated pe (q_b's output, rotated in place)
  Tensor kv_rstd, c;            // [N], [N, Rkv]: c is the normalised latent (what decode caches)
  Tensor k_pe;                  // [N, dr] after RoPE (the single shared rope key)
  Tensor kv_b;                  // [N, H*(dn+dv)]: each head's k_nope ; v (the attention reads them in place)
  Tensor attn, lse;             // [N, H, dv], [B, H, T]
  Tensor out;                   // [N, D] after o_proj
};

struct MlpActs {
  Tensor g, u;  // [M, F] the gate and up products, when two products made them
  Tensor gu;    // [M, 2F] = [g | u] when one product over the adjacent weights did (stacked_weight; g, u empty)
  Tensor act;   // [M, F]
  Tensor out;   // [M, D]
};

struct MoeActs {
  Tensor logits, scores;    // [N, E]
  Tensor topk_idx, topk_w;  // [N, K] i32, [N, K]
  Tensor row_of, offsets;   // [N, K] i32, [E+1] i64
  Tensor xp;                // [N*K, D] token copies grouped by expert
  MlpActs experts;          // rows of xp through their expert
  MlpActs shared;           // [N, ...] shared expert (when present)
  double balance_loss = 0;
};

struct BlockActs {
  Tensor x_in;                   // [N, D] residual input (owned by the caller)
  Tensor attn_n, attn_rstd;      // input_layernorm
  MlaActs mla;
  Tensor x_mid;                  // [N, D]
  Tensor ffn_n, ffn_rstd;        // post_attention_layernorm
  MlpActs mlp;                   // dense layers
  MoeActs moe;                   // MoE layers
  Tensor x_out;                  // [N, D]
};

// Expert load of a MoE layer, accumulated over a training step (for the bias update and --expert-stats).
struct MoeLoad {
  Tensor counts;  // [E] i64
  // With a redundant-expert placement (ds-rebalance): token n's copy for logical expert e is served by the physical
  // slot log2phy[e][n % logcnt[e]] (lib/balance route_slot); gpu_tokens counts what each GPU would receive. The
  // computation itself is unchanged on one process (replicas hold the same weights), so results are bit-identical.
  const balance::LayerPlacement* placement = nullptr;
  int64_t gpus = 0;
  std::vector<int64_t> gpu_tokens;  // [gpus]
};

// env for a branch on the side stream, ordered after the work queued so far on env.ctx's stream (its side is null:
// a branch does not fork again); env itself without a side stream. join_side: env.ctx's stream waits for the branch.
LayerEnv side_branch(const LayerEnv& env);
void join_side(const LayerEnv& env);

// ---- projections stacked in memory (stacked.cpp) ----
// The linears that read one input (q_a and kv_a; gate and up) are declared one after the other (weights.cpp), so in
// the parameter, compute-copy and gradient arenas they form one [n1 + n2, K] matrix whenever the first one's bytes
// are a multiple of the arena's 64-byte alignment: their product is one GEMM (one over K = n1 + n2 for d_x).

// The [a.rows + b.rows, K] matrix of two 2-D tensors of one dtype, device and width when b's rows follow a's in
// memory; empty otherwise.
Tensor adjacent_rows(const Tensor& a, const Tensor& b);
// adjacent_rows(w1, w2) where env allows one product (fuse_proj, and not a decoder's forward: the CPU decoder keeps
// its two products, lib/README.md; the CUDA one stacks copies of its own); empty otherwise.
Tensor stacked_weight(const LayerEnv& env, const Tensor& w1, const Tensor& w2);
// The backward of out = x · [w1 ; w2]^T (w1, w2 adjacent): d_x (=|+= per acc) in one product, dw1 and dw2 (+=) in
// one when they are adjacent too (as the model's gradient arena lays them out), else each from a copy of its
// columns of d_out.
void stacked_matmul_backward(const Context& ctx, Workspace& ws, Tensor d_x, Accum acc, Tensor dw1, Tensor dw2,
                             Tensor d_out, Tensor x, Tensor w1, Tensor w2);

void mla_forward(const LayerEnv& env, Workspace& ws, const std::string& name, MlaActs& a, Tensor x,
                 const AttnWeights& w);
// d_x (=|+= per acc) from d_out; weight gradients into dw.
void mla_backward(const LayerEnv& env, Workspace& ws, Tensor d_x, Accum acc, AttnWeights& dw, Tensor d_out,
                  Tensor x, const MlaActs& a, const AttnWeights& w);

void mlp_forward(const LayerEnv& env, Workspace& ws, const std::string& name, MlpActs& a, Tensor x,
                 const MlpWeights& w);
void mlp_backward(const LayerEnv& env, Workspace& ws, Tensor d_x, Accum acc, MlpWeights& dw, Tensor d_out, Tensor x,
                  const MlpActs& a, const MlpWeights& w);

// out = resid + MoE(x) (the block's residual add fused into the combine; out [N, D] allocated by the caller).
void moe_forward(const LayerEnv& env, Workspace& ws, const std::string& name, MoeActs& a, MoeLoad* load, Tensor x,
                 const MoeWeights& w, Tensor resid, Tensor out);
// The routed part of moe_forward alone (gate, dispatch, experts: a.experts.out in permuted rows); the decoder
// combines it with the shared expert and the residual in one op (moe_combine_forward).
void moe_experts_forward(const LayerEnv& env, Workspace& ws, const std::string& name, MoeActs& a, MoeLoad* load,
                         Tensor x, const MoeWeights& w);
void moe_backward(const LayerEnv& env, Workspace& ws, Tensor d_x, MoeWeights& dw, Tensor d_out, Tensor x,
                  const MoeActs& a, const MoeWeights& w);

// x_in -> a.x_out. `name` is e.g. "l3".
void block_forward(const LayerEnv& env, Workspace& ws, const std::string& name, BlockActs& a, MoeLoad* load,
                   Tensor x_in, const BlockWeights& w);
// d_resid: in = d(x_out), out = d(x_in) (updated in place). Temporaries come from `scratch` (reset inside).
void block_backward(const LayerEnv& env, Workspace& scratch, Tensor d_resid, BlockWeights& dw, const BlockActs& a,
                    const BlockWeights& w);

}  // namespace ds
