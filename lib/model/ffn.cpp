// Feed-forward sub-layers: the dense SwiGLU MLP and DeepSeekMoE (MODEL.md §3):
//   y = shared_MLP(x) + sum_{i in TopK(x)} g_i * Expert_i(x)
// Token copies are grouped by expert (moe_route/permute), each expert runs its SwiGLU on a contiguous row block
// (grouped_matmul: one op for all experts, no per-expert loop here), and the outputs are weighted back
// (unpermute). No token is dropped.
#include "model/layers.h"
#include "ops/ops.h"

namespace ds {

void mlp_forward(const LayerEnv& env, Workspace& ws, const std::string& name, MlpActs& a, Tensor x,
                 const MlpWeights& w) {
  const Context& ctx = *env.ctx;
  const int64_t M = x.rows(), F = w.gate_proj.dim(0), D = w.down_proj.dim(0);
  const Tensor w_gu = stacked_weight(env, w.gate_proj, w.up_proj);  // [2F, D] = [gate ; up], or empty
  if (!w_gu.empty()) {  // one product [g | u], SwiGLU over its halves
    a.g = a.u = Tensor{};
    a.gu = ws.alloc(name + ".gate_up", env.dtype, {M, 2 * F});
    a.act = ws.alloc(name + ".act", env.dtype, {M, F});
    matmul_forward(ctx, a.gu, x, w_gu);
    swiglu_pair_forward(ctx, a.act, a.gu);
  } else {
    a.gu = Tensor{};
    a.g = ws.alloc(name + ".gate", env.dtype, {M, F});
    a.u = ws.alloc(name + ".up", env.dtype, {M, F});
    a.act = ws.alloc(name + ".act", env.dtype, {M, F});
    matmul_forward(ctx, a.g, x, w.gate_proj);
    matmul_forward(ctx, a.u, x, w.up_proj);
    swiglu_forward(ctx, a.act, a.g, a.u);
  }
  a.out = ws.alloc(name + ".out", env.dtype, {M, D});
  matmul_forward(ctx, a.out, a.act, w.down_proj);
}

void mlp_backward(const LayerEnv& env, Workspace& ws, Tensor d_x, Accum acc, MlpWeights& dw, Tensor d_out, Tensor x,
                  const MlpActs& a, const MlpWeights& w) {
  const Context& ctx = *env.ctx;
  const int64_t M = x.rows(), F = w.gate_proj.dim(0);
  Tensor d_act = ws.alloc("d_act", env.dtype, {M, F});
  matmul_backward(ctx, d_act, dw.down_proj, d_out, a.act, w.down_proj);
  if (!a.gu.empty()) {  // the forward's one product: [d_g | d_u], then one product back
    Tensor d_gu = ws.alloc("d_gate_up", env.dtype, {M, 2 * F});
    swiglu_pair_backward(ctx, d_gu, d_act, a.gu);
    stacked_matmul_backward(ctx, ws, d_x, acc, dw.gate_proj, dw.up_proj, d_gu, x, w.gate_proj, w.up_proj);
    return;
  }
  Tensor d_g = ws.alloc("d_gate", env.dtype, {M, F});
  Tensor d_u = ws.alloc("d_up", env.dtype, {M, F});
  swiglu_backward(ctx, d_g, d_u, d_act, a.g, a.u);
  matmul_backward(ctx, d_x, dw.gate_proj, d_g, x, w.gate_proj, acc);
  matmul_backward(ctx, d_x, dw.up_proj, d_u, x, w.up_proj, Accum::add);
}

void moe_experts_forward(const LayerEnv& env, Workspace& ws, const std::string& name, MoeActs& a, MoeLoad* load,
                         Tensor x, const MoeWeights& w) {
  const Context& ctx = *env.ctx;
  const ModelConfig& c = *env.cfg;
  const int64_t N = x.rows(), D = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok,
                F = c.moe_intermediate_size;
  const DType dt = env.dtype;
  const std::string p = name + ".moe.";

  // gate: scores from the unbiased affinities, selection with the bias (buffer), weights renormalised;
  // dispatch: token copies grouped by expert
  a.logits = ws.alloc(p + "router_logits", dt, {N, E});
  a.scores = ws.alloc(p + "scores", env.sdtype, {N, E});
  a.topk_idx = ws.alloc(p + "topk_idx", DType::i32, {N, K});
  a.topk_w = ws.alloc(p + "topk_w", env.sdtype, {N, K});
  a.row_of = ws.alloc(p + "row_of", DType::i32, {N, K});
  a.offsets = ws.alloc(p + "offsets", DType::i64, {E + 1});
  Tensor counts = load ? load->counts : ws.alloc(p + "counts", DType::i64, {E});
  a.xp = ws.alloc(p + "dispatched", dt, {N * K, D});
  if (env.inference && env.balance_alpha == 0) {  // the same four ops, fused
    // the router and the bias are parameters (settled): the fused kernel loads them before its wait
    moe_dispatch_forward(ctx, a.xp, a.row_of, a.offsets, counts, a.topk_idx, a.topk_w, a.scores, a.logits, x, w.router,
                         w.bias, c.gate_options(), Inputs::settled);
  } else {
    matmul_forward(ctx, a.logits, x, w.router);
    moe_gate_forward(ctx, a.topk_idx, a.topk_w, a.scores, a.logits, w.bias, c.gate_options());
    a.balance_loss = env.balance_alpha > 0
                         ? moe_balance_loss_forward(ctx, a.scores, a.topk_idx, env.T, env.balance_alpha)
                         : 0.0;
    moe_route(ctx, a.row_of, a.offsets, counts, a.topk_idx, E);
    moe_permute_forward(ctx, a.xp, x, a.row_of);
  }
  if (load && load->placement) {  // what each GPU would serve under the placement (accounting only)
    std::vector<int64_t> gpu = balance::routed_gpu_tokens(*load->placement, to_host_i64(a.topk_idx), K, load->gpus);
    load->gpu_tokens.resize(size_t(load->gpus), 0);
    for (size_t g = 0; g < gpu.size(); ++g) load->gpu_tokens[g] += gpu[g];
  }

  // experts: grouped linears over the row blocks (offsets stay on the device): the gate and up products and their
  // SwiGLU in one op (training keeps the products for the backward; inference does not)
  MlpActs& ea = a.experts;
  ea.act = ws.alloc(p + "experts.act", dt, {N * K, F});
  ea.out = ws.alloc(p + "experts.out", dt, {N * K, D});
  ea.g = env.inference ? Tensor{} : ws.alloc(p + "experts.gate", dt, {N * K, F});
  ea.u = env.inference ? Tensor{} : ws.alloc(p + "experts.up", dt, {N * K, F});
  grouped_swiglu_forward(ctx, ea.act, a.xp, w.gate_proj, w.up_proj, a.offsets, ea.g, ea.u);
  // the offsets are two or more launches old here (the SwiGLU ran since the dispatch or route wrote them)
  grouped_matmul_forward(ctx, ea.out, ea.act, w.down_proj, a.offsets, Accum::overwrite, Inputs::settled);
}

void moe_forward(const LayerEnv& env, Workspace& ws, const std::string& name, MoeActs& a, MoeLoad* load, Tensor x,
                 const MoeWeights& w, Tensor resid, Tensor out) {
  const Context& ctx = *env.ctx;
  const ModelConfig& c = *env.cfg;
  const std::string p = name + ".moe.";
  // the shared expert on the side stream while the routed experts run (their routing chain and permutes leave SMs
  // idle), then out = resid + (the weighted expert rows + shared) in one pass (the values of unpermute, axpy and add
  // one after the other)
  Tensor shared;
  if (c.n_shared_experts > 0) {
    mlp_forward(side_branch(env), ws, p + "shared", a.shared, x, w.shared);
    shared = a.shared.out;
  }
  moe_experts_forward(env, ws, name, a, load, x, w);
  if (c.n_shared_experts > 0) join_side(env);
  moe_combine_forward(ctx, out, resid, shared, a.experts.out, a.row_of, a.topk_w);
}

void moe_backward(const LayerEnv& env, Workspace& ws, Tensor d_x, MoeWeights& dw, Tensor d_out, Tensor x,
                  const MoeActs& a, const MoeWeights& w) {
  const Context& ctx = *env.ctx;
  const ModelConfig& c = *env.cfg;
  const int64_t N = x.rows(), D = c.hidden_size, E = c.n_routed_experts, K = c.num_experts_per_tok,
                F = c.moe_intermediate_size;
  const DType dt = env.dtype;

  // the shared expert on the side stream (d_x written over there), joined before the routed part adds onto d_x
  if (c.n_shared_experts > 0) {
    mlp_backward(side_branch(env), ws, d_x, Accum::overwrite, dw.shared, d_out, x, a.shared, w.shared);
  }

  // combine backward: gradients for the expert outputs and the routing weights
  Tensor d_eo = ws.alloc("d_experts_out", dt, {N * K, D});
  Tensor d_topk_w = ws.alloc("d_topk_w", env.sdtype, {N, K});
  moe_unpermute_backward(ctx, d_eo, d_topk_w, d_out, a.experts.out, a.row_of, a.topk_w);

  Tensor d_xp = ws.alloc("d_dispatched", dt, {N * K, D});
  Tensor d_g = ws.alloc("d_experts_gate", dt, {N * K, F});
  Tensor d_u = ws.alloc("d_experts_up", dt, {N * K, F});
  const MlpActs& ea = a.experts;
  // the down product's d_in through SwiGLU's backward (d_act on the op's scratch), then its d_weight
  grouped_matmul_swiglu_backward(ctx, d_g, d_u, d_eo, w.down_proj, a.offsets, ea.g, ea.u);
  grouped_matmul_backward(ctx, Tensor{}, dw.down_proj, d_eo, ea.act, w.down_proj, a.offsets, Accum::overwrite,
                          env.expert_grads);
  grouped_matmul_backward(ctx, Tensor{}, dw.gate_proj, d_g, a.xp, w.gate_proj, a.offsets, Accum::overwrite,
                          env.expert_grads);
  grouped_matmul_backward(ctx, Tensor{}, dw.up_proj, d_u, a.xp, w.up_proj, a.offsets, Accum::overwrite,
                          env.expert_grads);
  grouped_matmul_d_in_pair(ctx, d_xp, d_g, w.gate_proj, d_u, w.up_proj, a.offsets);  // d_g · W_gate + d_u · W_up
  if (c.n_shared_experts > 0) join_side(env);
  moe_permute_backward(ctx, d_x, d_xp, a.row_of, c.n_shared_experts > 0 ? Accum::add : Accum::overwrite);

  // gate backward: through the weights and, when on, the balance loss; the bias gets no gradient
  Tensor d_scores_extra;
  if (env.balance_alpha > 0) {
    d_scores_extra = ws.alloc("d_scores_balance", env.sdtype, {N, E});
    fill(ctx, d_scores_extra, 0.0);  // the op adds its gradient (the workspace does not zero)
    moe_balance_loss_backward(ctx, d_scores_extra, 1.0, a.scores, a.topk_idx, env.T, env.balance_alpha);
  }
  Tensor d_logits = ws.alloc("d_router_logits", dt, {N, E});
  moe_gate_backward(ctx, d_logits, d_topk_w, d_scores_extra, a.scores, a.topk_idx, c.gate_options());
  matmul_backward(ctx, d_x, dw.router, d_logits, x, w.router, Accum::add);
}

}  // namespace ds
