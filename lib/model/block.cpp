// One pre-norm decoder block: x_mid = x + MLA(norm(x)); x_out = x_mid + FFN(norm(x_mid)).
#include "model/layers.h"
#include "ops/ops.h"

namespace ds {

LayerEnv side_branch(const LayerEnv& env) {
  if (!env.side) return env;
  LayerEnv b = env;
  b.ctx = &env.side->fork(*env.ctx);
  b.side = nullptr;
  return b;
}

void join_side(const LayerEnv& env) {
  if (env.side) env.side->join(*env.ctx);
}

void block_forward(const LayerEnv& env, Workspace& ws, const std::string& name, BlockActs& a, MoeLoad* load,
                   Tensor x_in, const BlockWeights& w) {
  const Context& ctx = *env.ctx;
  const ModelConfig& c = *env.cfg;
  const int64_t N = env.N(), D = c.hidden_size;
  const DType dt = env.dtype;
  a.x_in = x_in;
  a.attn_n = ws.alloc(name + ".attn_norm", dt, {N, D});
  a.attn_rstd = ws.alloc(name + ".attn_norm_rstd", env.sdtype, {N});
  rmsnorm_forward(ctx, a.attn_n, a.attn_rstd, x_in, w.input_layernorm, c.rms_norm_eps);
  mla_forward(env, ws, name, a.mla, a.attn_n, w.attn);
  a.x_mid = ws.alloc(name + ".x_mid", dt, {N, D});
  a.ffn_n = ws.alloc(name + ".ffn_norm", dt, {N, D});
  a.ffn_rstd = ws.alloc(name + ".ffn_norm_rstd", env.sdtype, {N});
  // x_mid = x_in + attention and its norm in one pass (the values of add, then rmsnorm_forward)
  add_rmsnorm_forward(ctx, a.x_mid, a.ffn_n, x_in, a.mla.out, w.post_attention_layernorm, c.rms_norm_eps, a.ffn_rstd);
  a.x_out = ws.alloc(name + ".x_out", dt, {N, D});
  if (w.moe) {
    moe_forward(env, ws, name, a.moe, load, a.ffn_n, w.moe_w, a.x_mid, a.x_out);  // x_out = x_mid + MoE(ffn_n)
  } else {
    mlp_forward(env, ws, name + ".mlp", a.mlp, a.ffn_n, w.mlp);
    add(ctx, a.x_out, a.x_mid, a.mlp.out);
  }
}

void block_backward(const LayerEnv& env, Workspace& scratch, Tensor d_resid, BlockWeights& dw, const BlockActs& a,
                    const BlockWeights& w) {
  const Context& ctx = *env.ctx;
  const int64_t N = env.N(), D = env.cfg->hidden_size;
  scratch.reset();
  // FFN: d_resid = d(x_out) -> d(x_mid)
  Tensor d_ffn_n = scratch.alloc("d_ffn_norm", env.dtype, {N, D});
  if (w.moe) moe_backward(env, scratch, d_ffn_n, dw.moe_w, d_resid, a.ffn_n, a.moe, w.moe_w);
  else mlp_backward(env, scratch, d_ffn_n, Accum::overwrite, dw.mlp, d_resid, a.ffn_n, a.mlp, w.mlp);
  rmsnorm_backward(ctx, d_resid, dw.post_attention_layernorm, d_ffn_n, a.x_mid, w.post_attention_layernorm,
                   a.ffn_rstd, Accum::add);
  // attention: d(x_mid) -> d(x_in)
  Tensor d_attn_n = scratch.alloc("d_attn_norm", env.dtype, {N, D});
  mla_backward(env, scratch, d_attn_n, Accum::overwrite, dw.attn, d_resid, a.attn_n, a.mla, w.attn);
  rmsnorm_backward(ctx, d_resid, dw.input_layernorm, d_attn_n, a.x_in, w.input_layernorm, a.attn_rstd, Accum::add);
}

}  // namespace ds
