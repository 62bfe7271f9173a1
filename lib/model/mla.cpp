// Multi-head Latent Attention, expanded ("naive") form for training and prefill (MODEL.md §2.2):
//   q      = q_b(RMSNorm(q_a(x)))              or q_proj(x) without q_lora      [N, H, dn + dr]
//   [c;kr] = kv_a(x);  c = RMSNorm(c)                                            [N, Rkv], [N, dr]
//   k_pe   = RoPE(kr)  (one rope key shared by all heads);  q_pe = RoPE(q[..., dn:])
//   [k_nope; v] = kv_b(c) per head                                               [N, H, dn], [N, H, dv]
//   out    = o_proj(softmax(scale * [q_nope; q_pe]·[k_nope; k_pe]) · v)
// The attention reads k_nope, v and k_pe where kv_b and RoPE left them (mla_attention_forward): no per-head
// [k_nope; k_pe] copies.
// The absorbed decode form caches only (c, k_pe) — exactly the tensors named here.
#include "model/layers.h"
#include "ops/attention_plan.h"
#include "ops/ops.h"

namespace ds {

// The latent norms (q_a_layernorm, kv_a_layernorm) use RMSNorm's default eps in DeepSeek's model.py and in
// transformers, whatever rms_norm_eps says; only the block norms follow the config.
constexpr double kLatentNormEps = 1e-6;

void mla_forward(const LayerEnv& env, Workspace& ws, const std::string& name, MlaActs& a, Tensor x,
                 const AttnWeights& w) {
  const Context& ctx = *env.ctx;
  const ModelConfig& c = *env.cfg;
  const int64_t N = env.N(), H = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dqk = c.qk_head_dim(), dv = c.v_head_dim, Rkv = c.kv_lora_rank;
  const DType dt = env.dtype;
  const std::string p = name + ".attn.";

  // x's down-projections: q_a (q_lora) and kv_a, one product when their weights are adjacent (MlaActs)
  const int64_t Rq = c.q_lora_rank;
  const Tensor w_qkv = Rq > 0 ? stacked_weight(env, w.q_a_proj, w.kv_a_proj) : Tensor{};  // [Rq + Rkv + dr, D]
  if (!w_qkv.empty()) {
    a.kv_a = a.q_a = ws.alloc(p + "qkv_a", dt, {N, Rq + Rkv + dr});
    a.kv_col = Rq;
    matmul_forward(ctx, a.kv_a, x, w_qkv);
  } else {
    if (Rq > 0) {
      a.q_a = ws.alloc(p + "q_latent_raw", dt, {N, Rq});
      matmul_forward(ctx, a.q_a, x, w.q_a_proj);
    }
    a.kv_a = ws.alloc(p + "kv_a", dt, {N, Rkv + dr});
    a.kv_col = 0;
    matmul_forward(ctx, a.kv_a, x, w.kv_a_proj);
  }

  // The key/value branch (the latent's norm, the rope key, kv_b) on the side stream while the query's runs here
  // (LayerEnv::side; in order on the CPU): each is a chain of small products and memory-bound passes.
  const Context& kv_ctx = *side_branch(env).ctx;

  // key/value latent and the shared rope key, both read in place from kv_a's columns
  const int64_t W = a.kv_a.cols();
  a.kv_rstd = ws.alloc(p + "kv_latent_rstd", env.sdtype, {N});
  a.c = ws.alloc(p + "kv_latent", dt, {N, Rkv});
  rmsnorm_cols_forward(kv_ctx, a.c, a.kv_rstd, a.kv_a, a.kv_col, w.kv_a_layernorm, kLatentNormEps);
  a.k_pe = ws.alloc(p + "k_pe", dt, {N, dr});
  rope_cols_forward(kv_ctx, a.k_pe.view({N, 1, dr}), 0, a.kv_a.view({N, 1, W}), a.kv_col + Rkv, env.pos,
                    env.inv_freq, env.rope_attn_factor);
  // expand the latent into per-head keys (without their rope part) and values
  a.kv_b = ws.alloc(p + "kv_b", dt, {N, H * (dn + dv)});
  matmul_forward(kv_ctx, a.kv_b, a.c, w.kv_b_proj);

  // query: q_b's output is q_full once RoPE has turned its rope columns in place
  a.q_full = ws.alloc(p + "q_full", dt, {N, H, dqk});
  Tensor q = a.q_full.view({N, H * dqk});
  if (Rq > 0) {
    a.q_a_rstd = ws.alloc(p + "q_latent_rstd", env.sdtype, {N});
    a.q_a_n = ws.alloc(p + "q_latent", dt, {N, Rq});
    rmsnorm_cols_forward(ctx, a.q_a_n, a.q_a_rstd, a.q_a, 0, w.q_a_layernorm, kLatentNormEps);
    matmul_forward(ctx, q, a.q_a_n, w.q_b_proj);
  } else {
    matmul_forward(ctx, q, x, w.q_proj);
  }
  rope_cols_forward(ctx, a.q_full, dn, a.q_full, dn, env.pos, env.inv_freq, env.rope_attn_factor);
  join_side(env);

  // attention (the shared rope key joins every head's key inside it) and output projection
  const int64_t B = env.B, T = env.T;
  a.attn = ws.alloc(p + "attn", dt, {N, H, dv});
  a.lse = ws.alloc(p + "lse", env.sdtype, {B, H, T});
  mla_attention_forward(ctx, a.attn.view({B, T, H, dv}), a.lse, a.q_full.view({B, T, H, dqk}),
                        a.kv_b.view({B, T, H, dn + dv}), a.k_pe.view({B, T, dr}), env.softmax_scale);
  a.out = ws.alloc(p + "out", dt, {N, c.hidden_size});
  matmul_forward(ctx, a.out, a.attn.view({N, H * dv}), w.o_proj);
}

void mla_backward(const LayerEnv& env, Workspace& ws, Tensor d_x, Accum acc, AttnWeights& dw, Tensor d_out,
                  Tensor x, const MlaActs& a, const AttnWeights& w) {
  const Context& ctx = *env.ctx;
  const ModelConfig& c = *env.cfg;
  const int64_t N = env.N(), H = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dqk = c.qk_head_dim(), dv = c.v_head_dim, Rkv = c.kv_lora_rank, B = env.B, T = env.T;
  const DType dt = env.dtype;

  Tensor d_attn = ws.alloc("d_attn", dt, {N, H * dv});
  matmul_backward(ctx, d_attn, dw.o_proj, d_out, a.attn.view({N, H * dv}), w.o_proj);
  // d_kv_b in kv_b's layout (k_nope's and v's gradients), and each head's gradient of the shared rope key
  Tensor d_q_full = ws.alloc("d_q_full", dt, {N, H, dqk});
  Tensor d_kv_b = ws.alloc("d_kv_b", dt, {N, H * (dn + dv)});
  Tensor d_k_pe_heads = ws.alloc("d_k_pe_heads", dt, {N, H, dr});
  const Tensor q4 = a.q_full.view({B, T, H, dqk}), kv4 = a.kv_b.view({B, T, H, dn + dv});
  const Tensor kpe3 = a.k_pe.view({B, T, dr}), o4 = a.attn.view({B, T, H, dv}), d_o4 = d_attn.view({B, T, H, dv});
  // The key/value branch (the rope key's and the latent's gradients, kv_b's) on the side stream while the query's
  // (q_b's) runs here. The attention backward itself: one call before the fork where its dQ reuses what its dK/dV
  // computes (attention_plan.h), else two, one for each output group (the same bits as one call), dK/dV on the side
  // stream beside dQ here. In order on the CPU.
  const bool one_call = env.side == nullptr || mla_attention_backward_one_call(ctx);
  if (one_call)
    mla_attention_backward(ctx, d_q_full.view({B, T, H, dqk}), d_kv_b.view({B, T, H, dn + dv}),
                           d_k_pe_heads.view({B, T, H, dr}), d_o4, o4, a.lse, q4, kv4, kpe3, env.softmax_scale);
  const Context& kv_ctx = *side_branch(env).ctx;
  if (!one_call)
    mla_attention_backward(kv_ctx, Tensor{}, d_kv_b.view({B, T, H, dn + dv}), d_k_pe_heads.view({B, T, H, dr}), d_o4,
                           o4, a.lse, q4, kv4, kpe3, env.softmax_scale);
  // d_kv_a in kv_a's layout (with q_a's columns when one product made both): the shared rope key's gradient summed
  // over the heads into kv_a's last dr columns and rotated back there, the latent's through its norm
  const int64_t kc = a.kv_col, W = a.kv_a.cols(), Rq = c.q_lora_rank;
  const bool one_product = kc > 0;
  Tensor d_kv_a = ws.alloc(one_product ? "d_qkv_a" : "d_kv_a", dt, {N, W});
  sum_cols_repeat(kv_ctx, d_kv_a, kc + Rkv, d_k_pe_heads.view({N, H * dr}), 0, dr, H, dr);
  Tensor d_kv_a3 = d_kv_a.view({N, 1, W});
  rope_cols_backward(kv_ctx, d_kv_a3, kc + Rkv, d_kv_a3, kc + Rkv, env.pos, env.inv_freq, env.rope_attn_factor);
  Tensor d_c = ws.alloc("d_kv_latent", dt, {N, Rkv});
  matmul_backward(kv_ctx, d_c, dw.kv_b_proj, d_kv_b, a.c, w.kv_b_proj);
  rmsnorm_cols_backward(kv_ctx, d_kv_a, kc, dw.kv_a_layernorm, d_c, a.kv_a, kc, w.kv_a_layernorm, a.kv_rstd);
  if (!one_product) matmul_backward(kv_ctx, d_x, dw.kv_a_proj, d_kv_a, x, w.kv_a_proj, acc);

  // query: d_q_full is q's gradient once its rope columns are turned back in place (d_kv_a's columns from kc on and
  // d_x written over are the side stream's until the join below)
  if (!one_call)
    mla_attention_backward(ctx, d_q_full.view({B, T, H, dqk}), Tensor{}, Tensor{}, d_o4, o4, a.lse, q4, kv4, kpe3,
                           env.softmax_scale);
  rope_cols_backward(ctx, d_q_full, dn, d_q_full, dn, env.pos, env.inv_freq, env.rope_attn_factor);
  Tensor d_q = d_q_full.view({N, H * dqk});
  if (Rq > 0) {
    Tensor d_q_a_n = ws.alloc("d_q_latent", dt, {N, Rq});
    matmul_backward(ctx, d_q_a_n, dw.q_b_proj, d_q, a.q_a_n, w.q_b_proj);
    if (one_product) {  // q_a's gradient into d_kv_a's first Rq columns, then one product back for both
      rmsnorm_cols_backward(ctx, d_kv_a, 0, dw.q_a_layernorm, d_q_a_n, a.q_a, 0, w.q_a_layernorm, a.q_a_rstd);
      join_side(env);
      stacked_matmul_backward(ctx, ws, d_x, acc, dw.q_a_proj, dw.kv_a_proj, d_kv_a, x, w.q_a_proj, w.kv_a_proj);
    } else {
      Tensor d_q_a = ws.alloc("d_q_latent_raw", dt, {N, Rq});
      rmsnorm_backward(ctx, d_q_a, dw.q_a_layernorm, d_q_a_n, a.q_a, w.q_a_layernorm, a.q_a_rstd);
      join_side(env);
      matmul_backward(ctx, d_x, dw.q_a_proj, d_q_a, x, w.q_a_proj, Accum::add);
    }
  } else {
    join_side(env);
    matmul_backward(ctx, d_x, dw.q_proj, d_q, x, w.q_proj, Accum::add);
  }
}

}  // namespace ds
