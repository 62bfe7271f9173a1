#include "infer/decoder.h"

#include "ops/ops.h"

namespace ds {

namespace {
constexpr double kLatentNormEps = 1e-6;  // as in lib/model/mla.cpp (model.py's default for the latent norms)
}

Decoder::Decoder(Model& model) : model_(model), absorbed_(model.context().device) {
  const ModelConfig& c = model_.config();
  const int64_t n_blocks = c.num_hidden_layers + c.num_nextn_predict_layers;
  std::vector<size_t> idx;
  for (int64_t b = 0; b < n_blocks; ++b)
    idx.push_back(absorbed_.add("w_uk_t." + std::to_string(b), model_.dtype(),
                                {c.num_attention_heads, c.kv_lora_rank, c.qk_nope_head_dim}));
  absorbed_.allocate();
  for (size_t i : idx) w_uk_t_.push_back(absorbed_[i]);
  refresh();
}

void Decoder::refresh() {
  const ModelConfig& c = model_.config();
  const int64_t H = c.num_attention_heads, dn = c.qk_nope_head_dim, dv = c.v_head_dim, R = c.kv_lora_rank;
  for (size_t b = 0; b < w_uk_t_.size(); ++b) {
    const int64_t L = c.num_hidden_layers;
    const BlockWeights& bw =
        int64_t(b) < L ? model_.compute_weights().layers[b] : model_.compute_weights().mtp[b - L].block;
    // kv_b_proj rows per head: W_UK (dn rows) then W_UV (dv rows), each row of length R. Transpose W_UK on the host
    // (once per weight update) so the per-head fold is a plain matmul.
    std::vector<double> kvb = to_host_f64(bw.attn.kv_b_proj);
    std::vector<double> t(size_t(H * R * dn));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < dn; ++i)
        for (int64_t r = 0; r < R; ++r) t[size_t((h * R + r) * dn + i)] = kvb[size_t((h * (dn + dv) + i) * R + r)];
    from_host(w_uk_t_[b], t);
  }
}

LayerEnv Decoder::env(int64_t n) const {
  LayerEnv e;
  e.ctx = &model_.context();
  e.cfg = &model_.config();
  e.dtype = model_.dtype();
  e.sdtype = model_.stat_dtype();
  e.B = 1;
  e.T = n;
  e.inv_freq = model_.inv_freq();
  e.rope_attn_factor = model_.rope_attn_factor();
  e.softmax_scale = model_.softmax_scale();
  e.balance_alpha = 0;
  return e;
}

// Absorbed MLA for n rows: writes each row's (c, k_pe) into the cache, then attends over the cached latents.
Tensor Decoder::mla(Workspace& ws, Tensor pool, const DecodeRows& rows, Tensor x, const AttnWeights& w, size_t ai) {
  const Context& ctx = model_.context();
  const ModelConfig& c = model_.config();
  const int64_t n = x.rows(), H = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dqk = c.qk_head_dim(), dv = c.v_head_dim, R = c.kv_lora_rank, C = R + dr;
  const DType dt = model_.dtype();
  Tensor q = ws.alloc("q", dt, {n, H * dqk});  // [n, H*dqk]
  if (c.q_lora_rank > 0) {
    Tensor qa = ws.alloc("q_latent_raw", dt, {n, c.q_lora_rank});
    Tensor qn = ws.alloc("q_latent", dt, {n, c.q_lora_rank});
    matmul_forward(ctx, qa, x, w.q_a_proj);
    rmsnorm_forward(ctx, qn, Tensor{}, qa, w.q_a_layernorm, kLatentNormEps);
    matmul_forward(ctx, q, qn, w.q_b_proj);
  } else {
    matmul_forward(ctx, q, x, w.q_proj);
  }
  // the new tokens' latent and rope key go into the cache first: each row attends to itself too
  Tensor kv_a = ws.alloc("kv_a", dt, {n, C});
  matmul_forward(ctx, kv_a, x, w.kv_a_proj);
  Tensor c_raw = ws.alloc("c_raw", dt, {n, R}), c_n = ws.alloc("c", dt, {n, R});
  copy_cols(ctx, c_raw, 0, kv_a, 0, R);
  rmsnorm_forward(ctx, c_n, Tensor{}, c_raw, w.kv_a_layernorm, kLatentNormEps);
  Tensor kpe_raw = ws.alloc("k_pe_raw", dt, {n, 1, dr}), kpe = ws.alloc("k_pe", dt, {n, 1, dr});
  copy_cols(ctx, kpe_raw.view({n, dr}), 0, kv_a, R, dr);
  rope_forward(ctx, kpe, kpe_raw, rows.pos, model_.inv_freq(), model_.rope_attn_factor());
  kv_cache_write(ctx, pool, rows.slot_rows, c_n, kpe.view({n, dr}));

  // q_lat per head = [W_UK^T q_nope ; RoPE(q_pe)]  [n, H, R + dr]
  Tensor q_lat = ws.alloc("q_lat", dt, {n, H, C});
  Tensor q_lat_nh = q_lat.view({n, H * C});
  // On CUDA all heads in one strided-batched product written straight into q_lat; the CPU keeps its per-head
  // sgemm on contiguous copies (results bit-identical to before).
  const bool batched = ctx.device.is_cuda();
  if (batched) {
    matmul_heads_forward(ctx, q_lat, q.view({n, H, dqk}), w_uk_t_[ai], dn, R);
  } else {
    Tensor q_nope_h = ws.alloc("q_nope_h", dt, {n, dn}), q_abs_h = ws.alloc("q_abs_h", dt, {n, R});
    for (int64_t h = 0; h < H; ++h) {
      copy_cols(ctx, q_nope_h, 0, q, h * dqk, dn);
      matmul_forward(ctx, q_abs_h, q_nope_h, w_uk_t_[ai].index0(h));  // [n, dn] · ([R, dn])^T
      copy_cols(ctx, q_lat_nh, h * C, q_abs_h, 0, R);
    }
  }
  Tensor q_pe = ws.alloc("q_pe_raw", dt, {n, H, dr}), q_pe_rot = ws.alloc("q_pe", dt, {n, H, dr});
  copy_cols(ctx, q_pe.view({n * H, dr}), 0, q.view({n * H, dqk}), dn, dr);
  rope_forward(ctx, q_pe_rot, q_pe, rows.pos, model_.inv_freq(), model_.rope_attn_factor());
  copy_cols(ctx, q_lat.view({n * H, C}), R, q_pe_rot.view({n * H, dr}), 0, dr);

  Tensor o_lat = ws.alloc("o_latent", dt, {n, H, R});
  mla_decode_attention(ctx, o_lat, Tensor{}, q_lat, pool, rows.block_table, rows.kv_len, model_.softmax_scale());
  // o_h = W_UV^h o_lat_h, then o_proj
  Tensor o = ws.alloc("o", dt, {n, H * dv});
  Tensor kvb = w.kv_b_proj.view({H, dn + dv, R});
  if (batched) {
    matmul_heads_forward(ctx, o.view({n, H, dv}), o_lat, kvb, R, dv, dn);  // W_UV^h = kvb[h, dn:dn+dv, :]
  } else {
    Tensor o_lat_h = ws.alloc("o_lat_h", dt, {n, R}), o_h = ws.alloc("o_h", dt, {n, dv});
    for (int64_t h = 0; h < H; ++h) {
      copy_cols(ctx, o_lat_h, 0, o_lat.view({n, H * R}), h * R, R);
      matmul_forward(ctx, o_h, o_lat_h, kvb.index0(h).slice0(dn, dn + dv));  // W_UV^h [dv, R]
      copy_cols(ctx, o, h * dv, o_h, 0, dv);
    }
  }
  Tensor out = ws.alloc("attn_out", dt, {n, c.hidden_size});
  matmul_forward(ctx, out, o, w.o_proj);
  return out;
}

Tensor Decoder::block(Workspace& ws, PagedKvCache& cache, int64_t cache_layer, const DecodeRows& rows, Tensor x,
                      const BlockWeights& w, size_t ai, MoeLoad* load) {
  const Context& ctx = model_.context();
  const ModelConfig& c = model_.config();
  const int64_t n = x.rows(), D = c.hidden_size;
  const DType dt = model_.dtype();
  const LayerEnv e = env(n);
  Tensor h = ws.alloc("attn_norm", dt, {n, D});
  rmsnorm_forward(ctx, h, Tensor{}, x, w.input_layernorm, c.rms_norm_eps);
  Tensor attn = mla(ws, cache.pool(cache_layer), rows, h, w.attn, ai);
  Tensor x_mid = ws.alloc("x_mid", dt, {n, D});
  add(ctx, x_mid, x, attn);
  Tensor f = ws.alloc("ffn_norm", dt, {n, D});
  rmsnorm_forward(ctx, f, Tensor{}, x_mid, w.post_attention_layernorm, c.rms_norm_eps);
  Tensor ffn;
  if (w.moe) {
    MoeActs a;
    moe_forward(e, ws, "moe", a, load, f, w.moe_w);
    ffn = a.out;
  } else {
    MlpActs a;
    mlp_forward(e, ws, "mlp", a, f, w.mlp);
    ffn = a.out;
  }
  Tensor x_out = ws.alloc("x_out", dt, {n, D});
  add(ctx, x_out, x_mid, ffn);
  return x_out;
}

void Decoder::forward(Workspace& ws, PagedKvCache& cache, const DecodeRows& rows, Tensor* logits, Tensor* hidden) {
  const Context& ctx = model_.context();
  const ModelConfig& c = model_.config();
  ModelWeights& w = model_.compute_weights();
  const int64_t n = rows.ids.numel(), D = c.hidden_size;
  Tensor x = ws.alloc("embed", model_.dtype(), {n, D});
  embedding_forward(ctx, x, rows.ids, w.embed_tokens);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l)
    x = block(ws, cache, l, rows, x, w.layers[l], size_t(l), w.layers[l].moe ? model_.moe_load(l) : nullptr);
  *hidden = ws.alloc("final_norm", model_.dtype(), {n, D});
  rmsnorm_forward(ctx, *hidden, Tensor{}, x, w.norm, c.rms_norm_eps);
  *logits = ws.alloc("logits", model_.stat_dtype(), {n, c.vocab_size});  // f32 in mixed precision
  matmul_forward(ctx, *logits, *hidden, w.lm_head);
}

void Decoder::mtp_forward(Workspace& ws, PagedKvCache& cache, int64_t k, const DecodeRows& rows, Tensor prev_hidden,
                          Tensor* logits, Tensor* hidden) {
  const Context& ctx = model_.context();
  const ModelConfig& c = model_.config();
  ModelWeights& w = model_.compute_weights();
  const MtpWeights& m = w.mtp.at(size_t(k - 1));
  const int64_t n = rows.ids.numel(), D = c.hidden_size, L = c.num_hidden_layers;
  const DType dt = model_.dtype();
  Tensor e = ws.alloc("mtp.embed", dt, {n, D}), en = ws.alloc("mtp.enorm", dt, {n, D});
  embedding_forward(ctx, e, rows.ids, w.embed_tokens);
  rmsnorm_forward(ctx, en, Tensor{}, e, m.enorm, c.rms_norm_eps);
  Tensor hn = ws.alloc("mtp.hnorm", dt, {n, D});
  rmsnorm_forward(ctx, hn, Tensor{}, prev_hidden, m.hnorm, c.rms_norm_eps);
  Tensor cat = ws.alloc("mtp.concat", dt, {n, 2 * D});
  copy_cols(ctx, cat, 0, en, 0, D);
  copy_cols(ctx, cat, D, hn, 0, D);
  Tensor hp = ws.alloc("mtp.eh_proj", dt, {n, D});
  matmul_forward(ctx, hp, cat, m.eh_proj);
  const int64_t layer = L + k - 1;
  *hidden = block(ws, cache, layer, rows, hp, m.block, size_t(layer), model_.moe_load(layer));
  Tensor hn2 = ws.alloc("mtp.head_norm", dt, {n, D});
  rmsnorm_forward(ctx, hn2, Tensor{}, *hidden, m.shared_head_norm, c.rms_norm_eps);
  *logits = ws.alloc("mtp.logits", model_.stat_dtype(), {n, c.vocab_size});
  matmul_forward(ctx, *logits, hn2, w.lm_head);
}

}  // namespace ds
