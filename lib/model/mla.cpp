// Multi-head Latent Attention, expanded ("naive") form for training and prefill (MODEL.md §2.2):
//   q      = q_b(RMSNorm(q_a(x)))              or q_proj(x) without q_lora      [N, H, dn + dr]
//   [c;kr] = kv_a(x);  c = RMSNorm(c)                                            [N, Rkv], [N, dr]
//   k_pe   = RoPE(kr)  (one rope key shared by all heads);  q_pe = RoPE(q[..., dn:])
//   [k_nope; v] = kv_b(c) per head                                               [N, H, dn], [N, H, dv]
//   out    = o_proj(softmax(scale * [q_nope; q_pe]·[k_nope; k_pe]) · v)
// The absorbed decode form caches only (c, k_pe) — exactly the tensors named here.
#include "model/layers.h"
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

  // query
  a.q = ws.alloc(p + "q", dt, {N, H * dqk});
  if (c.q_lora_rank > 0) {
    a.q_a = ws.alloc(p + "q_latent_raw", dt, {N, c.q_lora_rank});
    a.q_a_rstd = ws.alloc(p + "q_latent_rstd", env.sdtype, {N});
    a.q_a_n = ws.alloc(p + "q_latent", dt, {N, c.q_lora_rank});
    matmul_forward(ctx, a.q_a, x, w.q_a_proj);
    rmsnorm_forward(ctx, a.q_a_n, a.q_a_rstd, a.q_a, w.q_a_layernorm, kLatentNormEps);
    matmul_forward(ctx, a.q, a.q_a_n, w.q_b_proj);
  } else {
    matmul_forward(ctx, a.q, x, w.q_proj);
  }
  Tensor q_rows = a.q.view({N * H, dqk});
  a.q_pe = ws.alloc(p + "q_pe_raw", dt, {N, H, dr});
  copy_cols(ctx, a.q_pe.view({N * H, dr}), 0, q_rows, dn, dr);
  a.q_full = ws.alloc(p + "q_full", dt, {N, H, dqk});
  Tensor q_full_rows = a.q_full.view({N * H, dqk});
  copy_cols(ctx, q_full_rows, 0, q_rows, 0, dn);
  Tensor q_pe_rot = ws.alloc(p + "q_pe", dt, {N, H, dr});
  rope_forward(ctx, q_pe_rot, a.q_pe, env.pos, env.inv_freq, env.rope_attn_factor);
  copy_cols(ctx, q_full_rows, dn, q_pe_rot.view({N * H, dr}), 0, dr);

  // key/value latent and the shared rope key
  a.kv_a = ws.alloc(p + "kv_a", dt, {N, Rkv + dr});
  matmul_forward(ctx, a.kv_a, x, w.kv_a_proj);
  a.c_raw = ws.alloc(p + "kv_latent_raw", dt, {N, Rkv});
  copy_cols(ctx, a.c_raw, 0, a.kv_a, 0, Rkv);
  a.kv_rstd = ws.alloc(p + "kv_latent_rstd", env.sdtype, {N});
  a.c = ws.alloc(p + "kv_latent", dt, {N, Rkv});
  rmsnorm_forward(ctx, a.c, a.kv_rstd, a.c_raw, w.kv_a_layernorm, kLatentNormEps);
  a.k_pe_raw = ws.alloc(p + "k_pe_raw", dt, {N, dr});
  copy_cols(ctx, a.k_pe_raw, 0, a.kv_a, Rkv, dr);
  a.k_pe = ws.alloc(p + "k_pe", dt, {N, dr});
  rope_forward(ctx, a.k_pe.view({N, 1, dr}), a.k_pe_raw.view({N, 1, dr}), env.pos, env.inv_freq,
               env.rope_attn_factor);

  // expand the latent into per-head keys and values
  a.kv_b = ws.alloc(p + "kv_b", dt, {N, H * (dn + dv)});
  matmul_forward(ctx, a.kv_b, a.c, w.kv_b_proj);
  Tensor kv_b_rows = a.kv_b.view({N * H, dn + dv});
  a.k_full = ws.alloc(p + "k_full", dt, {N, H, dqk});
  Tensor k_full_nh = a.k_full.view({N, H * dqk});
  copy_cols(ctx, a.k_full.view({N * H, dqk}), 0, kv_b_rows, 0, dn);
  copy_cols_repeat(ctx, k_full_nh, dn, dqk, H, a.k_pe, 0, dr);  // the shared rope key into every head
  a.v = ws.alloc(p + "v", dt, {N, H, dv});
  copy_cols(ctx, a.v.view({N * H, dv}), 0, kv_b_rows, dn, dv);

  // attention and output projection
  const int64_t B = env.B, T = env.T;
  a.attn = ws.alloc(p + "attn", dt, {N, H, dv});
  a.lse = ws.alloc(p + "lse", env.sdtype, {B, H, T});
  attention_forward(ctx, a.attn.view({B, T, H, dv}), a.lse, a.q_full.view({B, T, H, dqk}),
                    a.k_full.view({B, T, H, dqk}), a.v.view({B, T, H, dv}), env.softmax_scale);
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
  Tensor d_q_full = ws.alloc("d_q_full", dt, {N, H, dqk});
  Tensor d_k_full = ws.alloc("d_k_full", dt, {N, H, dqk});
  Tensor d_v = ws.alloc("d_v", dt, {N, H, dv});
  attention_backward(ctx, d_q_full.view({B, T, H, dqk}), d_k_full.view({B, T, H, dqk}), d_v.view({B, T, H, dv}),
                     d_attn.view({B, T, H, dv}), a.attn.view({B, T, H, dv}), a.lse, a.q_full.view({B, T, H, dqk}),
                     a.k_full.view({B, T, H, dqk}), a.v.view({B, T, H, dv}), env.softmax_scale);

  // keys and values back into the latent
  Tensor d_kv_b = ws.alloc("d_kv_b", dt, {N, H * (dn + dv)});
  Tensor d_kv_b_rows = d_kv_b.view({N * H, dn + dv});
  copy_cols(ctx, d_kv_b_rows, 0, d_k_full.view({N * H, dqk}), 0, dn);
  copy_cols(ctx, d_kv_b_rows, dn, d_v.view({N * H, dv}), 0, dv);
  Tensor d_k_pe = ws.alloc("d_k_pe", dt, {N, dr});
  Tensor d_k_full_nh = d_k_full.view({N, H * dqk});
  sum_cols_repeat(ctx, d_k_pe, 0, d_k_full_nh, dn, dqk, H, dr);  // the shared rope key's gradient: sum over heads
  Tensor d_kv_a = ws.alloc("d_kv_a", dt, {N, Rkv + dr});
  Tensor d_k_pe_raw = ws.alloc("d_k_pe_raw", dt, {N, dr});
  rope_backward(ctx, d_k_pe_raw.view({N, 1, dr}), d_k_pe.view({N, 1, dr}), env.pos, env.inv_freq,
                env.rope_attn_factor);
  copy_cols(ctx, d_kv_a, Rkv, d_k_pe_raw, 0, dr);
  Tensor d_c = ws.alloc("d_kv_latent", dt, {N, Rkv});
  matmul_backward(ctx, d_c, dw.kv_b_proj, d_kv_b, a.c, w.kv_b_proj);
  Tensor d_c_raw = ws.alloc("d_kv_latent_raw", dt, {N, Rkv});
  rmsnorm_backward(ctx, d_c_raw, dw.kv_a_layernorm, d_c, a.c_raw, w.kv_a_layernorm, a.kv_rstd);
  copy_cols(ctx, d_kv_a, 0, d_c_raw, 0, Rkv);
  matmul_backward(ctx, d_x, dw.kv_a_proj, d_kv_a, x, w.kv_a_proj, acc);

  // query
  Tensor d_q = ws.alloc("d_q", dt, {N, H * dqk});
  Tensor d_q_rows = d_q.view({N * H, dqk});
  Tensor d_q_full_rows = d_q_full.view({N * H, dqk});
  copy_cols(ctx, d_q_rows, 0, d_q_full_rows, 0, dn);
  Tensor d_q_pe_rot = ws.alloc("d_q_pe", dt, {N, H, dr});
  copy_cols(ctx, d_q_pe_rot.view({N * H, dr}), 0, d_q_full_rows, dn, dr);
  Tensor d_q_pe = ws.alloc("d_q_pe_raw", dt, {N, H, dr});
  rope_backward(ctx, d_q_pe, d_q_pe_rot, env.pos, env.inv_freq, env.rope_attn_factor);
  copy_cols(ctx, d_q_rows, dn, d_q_pe.view({N * H, dr}), 0, dr);
  if (c.q_lora_rank > 0) {
    Tensor d_q_a_n = ws.alloc("d_q_latent", dt, {N, c.q_lora_rank});
    matmul_backward(ctx, d_q_a_n, dw.q_b_proj, d_q, a.q_a_n, w.q_b_proj);
    Tensor d_q_a = ws.alloc("d_q_latent_raw", dt, {N, c.q_lora_rank});
    rmsnorm_backward(ctx, d_q_a, dw.q_a_layernorm, d_q_a_n, a.q_a, w.q_a_layernorm, a.q_a_rstd);
    matmul_backward(ctx, d_x, dw.q_a_proj, d_q_a, x, w.q_a_proj, Accum::add);
  } else {
    matmul_backward(ctx, d_x, dw.q_proj, d_q, x, w.q_proj, Accum::add);
  }
}

}  // namespace ds
