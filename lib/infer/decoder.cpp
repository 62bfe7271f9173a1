#include "infer/decoder.h"

#include <cstdint>

#include "ops/ops.h"
#include "tensor/arena.h"

namespace ds {

namespace {
constexpr double kLatentNormEps = 1e-6;  // as in lib/model/mla.cpp (model.py's default for the latent norms)

// out = in · weight^T with one of the model's (or the decoder's derived) weights: written when the model was loaded
// or by the optimizer, never by the kernel just before, so settled (a few-row CUDA product loads it before waiting).
void linear(const Context& ctx, Tensor out, Tensor in, Tensor weight) {
  matmul_forward(ctx, out, in, weight, Accum::overwrite, Inputs::settled);
}
}  // namespace

Decoder::Decoder(Model& model)
    : model_(model), stack_(model.context().device.is_cuda()), side_(model.context(), gpu::kSideStream),
      absorbed_(model.context().device) {
  const ModelConfig& c = model_.config();
  const int64_t n_blocks = c.num_hidden_layers + c.num_nextn_predict_layers;
  const size_t nb = size_t(n_blocks);
  std::vector<size_t> uk(nb), qkv(nb, SIZE_MAX), gu(nb, SIZE_MAX);
  for (int64_t b = 0; b < n_blocks; ++b) {
    const std::string s = std::to_string(b);
    uk[size_t(b)] = absorbed_.add("w_uk_t." + s, model_.dtype(), {c.num_attention_heads, c.kv_lora_rank, c.qk_nope_head_dim});
    if (!stack_) continue;
    const BlockWeights& bw = block_weights(size_t(b));
    if (c.q_lora_rank > 0)
      qkv[size_t(b)] = absorbed_.add("qkv_a." + s, model_.dtype(),
                                     {bw.attn.q_a_proj.dim(0) + bw.attn.kv_a_proj.dim(0), c.hidden_size});
    const MlpWeights* m = bw.moe ? (c.n_shared_experts > 0 ? &bw.moe_w.shared : nullptr) : &bw.mlp;
    if (m) gu[size_t(b)] = absorbed_.add("gate_up." + s, model_.dtype(), {2 * m->gate_proj.dim(0), c.hidden_size});
  }
  absorbed_.allocate();
  for (int64_t b = 0; b < n_blocks; ++b) {
    w_uk_t_.push_back(absorbed_[uk[size_t(b)]]);
    qkv_a_.push_back(qkv[size_t(b)] == SIZE_MAX ? Tensor{} : absorbed_[qkv[size_t(b)]]);
    gate_up_.push_back(gu[size_t(b)] == SIZE_MAX ? Tensor{} : absorbed_[gu[size_t(b)]]);
  }
  refresh();
}

Decoder::~Decoder() = default;

const Context& Decoder::fork() { return side_.fork(model_.context()); }

void Decoder::join() { side_.join(model_.context()); }

const BlockWeights& Decoder::block_weights(size_t b) const {
  const size_t L = size_t(model_.config().num_hidden_layers);
  return b < L ? model_.compute_weights().layers[b] : model_.compute_weights().mtp[b - L].block;
}

void Decoder::refresh() {
  const Context& ctx = model_.context();
  const ModelConfig& c = model_.config();
  const int64_t H = c.num_attention_heads, dn = c.qk_nope_head_dim, dv = c.v_head_dim, R = c.kv_lora_rank;
  for (size_t b = 0; b < w_uk_t_.size(); ++b) {
    const BlockWeights& bw = block_weights(b);
    // kv_b_proj rows per head: W_UK (dn rows) then W_UV (dv rows), each row of length R. Transpose W_UK on the host
    // (once per weight update) so the per-head fold is a plain matmul.
    std::vector<double> kvb = to_host_f64(bw.attn.kv_b_proj);
    std::vector<double> t(size_t(H * R * dn));
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < dn; ++i)
        for (int64_t r = 0; r < R; ++r) t[size_t((h * R + r) * dn + i)] = kvb[size_t((h * (dn + dv) + i) * R + r)];
    from_host(w_uk_t_[b], t);
    auto stack = [&](Tensor dst, Tensor top, Tensor bottom) {  // rows of top, then rows of bottom
      copy(ctx, dst.slice0(0, top.dim(0)), top);
      copy(ctx, dst.slice0(top.dim(0), dst.dim(0)), bottom);
    };
    if (!qkv_a_[b].empty()) stack(qkv_a_[b], bw.attn.q_a_proj, bw.attn.kv_a_proj);
    if (!gate_up_[b].empty()) {
      const MlpWeights& m = bw.moe ? bw.moe_w.shared : bw.mlp;
      stack(gate_up_[b], m.gate_proj, m.up_proj);
    }
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
  e.inference = true;
  return e;
}

// Absorbed MLA for n rows: writes each row's (c, k_pe) into the cache, then attends over the cached latents.
Tensor Decoder::mla(Workspace& ws, Tensor pool, const DecodeRows& rows, Tensor x, const AttnWeights& w, size_t ai) {
  const Context& ctx = model_.context();
  const ModelConfig& c = model_.config();
  const int64_t n = x.rows(), H = c.num_attention_heads, dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim,
                dqk = c.qk_head_dim(), dv = c.v_head_dim, R = c.kv_lora_rank, C = R + dr;
  const DType dt = model_.dtype();
  const Tensor inv_freq = model_.inv_freq();
  const double f = model_.rope_attn_factor();
  // The latents: q's (normalised) and the new tokens' (c, k_pe) straight into the cache — each row attends to
  // itself too.
  Tensor q = ws.alloc("q", dt, {n, H * dqk});  // [n, H*dqk]
  if (!qkv_a_[ai].empty()) {  // one GEMM for q_a and kv_a
    const int64_t Q = c.q_lora_rank;
    Tensor a = ws.alloc("qkv_a", dt, {n, Q + C}), qn = ws.alloc("q_latent", dt, {n, Q});
    linear(ctx, a, x, qkv_a_[ai]);
    mla_latent_forward(ctx, qn, pool, rows.slot_rows, a, w.q_a_layernorm, w.kv_a_layernorm, kLatentNormEps, rows.pos,
                       inv_freq, f);
    linear(ctx, q, qn, w.q_b_proj);
  } else {
    if (c.q_lora_rank > 0) {
      Tensor qa = ws.alloc("q_latent_raw", dt, {n, c.q_lora_rank});
      Tensor qn = ws.alloc("q_latent", dt, {n, c.q_lora_rank});
      linear(ctx, qa, x, w.q_a_proj);
      rmsnorm_forward(ctx, qn, Tensor{}, qa, w.q_a_layernorm, kLatentNormEps);
      linear(ctx, q, qn, w.q_b_proj);
    } else {
      linear(ctx, q, x, w.q_proj);
    }
    Tensor kv_a = ws.alloc("kv_a", dt, {n, C});
    linear(ctx, kv_a, x, w.kv_a_proj);
    mla_latent_forward(ctx, Tensor{}, pool, rows.slot_rows, kv_a, Tensor{}, w.kv_a_layernorm, kLatentNormEps, rows.pos,
                       inv_freq, f);
  }

  // q_lat per head = [W_UK^T q_nope ; RoPE(q_pe)]  [n, H, R + dr]
  Tensor q_lat = ws.alloc("q_lat", dt, {n, H, C});
  Tensor q_lat_nh = q_lat.view({n, H * C});
  // On CUDA all heads in one strided-batched product written straight into q_lat; the CPU keeps its per-head
  // sgemm on contiguous copies (results bit-identical to before).
  const bool batched = ctx.device.is_cuda();
  if (batched) {  // q_pe's RoPE (columns R..) beside the fold (columns ..R)
    rope_cols_forward(fork(), q_lat, R, q.view({n, H, dqk}), dn, rows.pos, inv_freq, f);
    matmul_heads_forward(ctx, q_lat, q.view({n, H, dqk}), w_uk_t_[ai], dn, R, 0, Inputs::settled);
    join();
  } else {
    Tensor q_nope_h = ws.alloc("q_nope_h", dt, {n, dn}), q_abs_h = ws.alloc("q_abs_h", dt, {n, R});
    for (int64_t h = 0; h < H; ++h) {
      copy_cols(ctx, q_nope_h, 0, q, h * dqk, dn);
      linear(ctx, q_abs_h, q_nope_h, w_uk_t_[ai].index0(h));  // [n, dn] · ([R, dn])^T
      copy_cols(ctx, q_lat_nh, h * C, q_abs_h, 0, R);
    }
    rope_cols_forward(ctx, q_lat, R, q.view({n, H, dqk}), dn, rows.pos, inv_freq, f);
  }

  Tensor o_lat = ws.alloc("o_latent", dt, {n, H, R});
  // the cache, table and lengths were written by mla_latent_forward (two or more launches back) and the step's copy
  mla_decode_attention(ctx, o_lat, Tensor{}, q_lat, pool, rows.block_table, rows.kv_len, model_.softmax_scale(),
                       Inputs::settled);
  // o_h = W_UV^h o_lat_h, then o_proj
  Tensor o = ws.alloc("o", dt, {n, H * dv});
  Tensor kvb = w.kv_b_proj.view({H, dn + dv, R});
  if (batched) {
    // W_UV^h = kvb[h, dn:dn+dv, :]
    matmul_heads_forward(ctx, o.view({n, H, dv}), o_lat, kvb, R, dv, dn, Inputs::settled);
  } else {
    Tensor o_lat_h = ws.alloc("o_lat_h", dt, {n, R}), o_h = ws.alloc("o_h", dt, {n, dv});
    for (int64_t h = 0; h < H; ++h) {
      copy_cols(ctx, o_lat_h, 0, o_lat.view({n, H * R}), h * R, R);
      linear(ctx, o_h, o_lat_h, kvb.index0(h).slice0(dn, dn + dv));  // W_UV^h [dv, R]
      copy_cols(ctx, o, h * dv, o_h, 0, dv);
    }
  }
  Tensor out = ws.alloc("attn_out", dt, {n, c.hidden_size});
  linear(ctx, out, o, w.o_proj);
  return out;
}

// SwiGLU MLP (the dense layers' and the shared expert); gate_up, when given, is [gate_proj ; up_proj] stacked.
Tensor Decoder::mlp(const Context& ctx, Workspace& ws, const std::string& name, Tensor x, const MlpWeights& w,
                    Tensor gate_up) {
  if (gate_up.empty()) {
    MlpActs a;
    LayerEnv e = env(x.rows());
    e.ctx = &ctx;
    mlp_forward(e, ws, name, a, x, w);
    return a.out;
  }
  const int64_t n = x.rows(), F = w.gate_proj.dim(0);
  const DType dt = model_.dtype();
  Tensor gu = ws.alloc(name + ".gate_up", dt, {n, 2 * F}), act = ws.alloc(name + ".act", dt, {n, F});
  Tensor out = ws.alloc(name + ".out", dt, {n, w.down_proj.dim(0)});
  linear(ctx, gu, x, gate_up);
  swiglu_pair_forward(ctx, act, gu);
  linear(ctx, out, act, w.down_proj);
  return out;
}

// One block on x whose input norm h is already computed; returns x_out and writes *next_h = RMSNorm(x_out) with
// next_norm (the next block's input norm, the final norm or MTP's head norm), fused into the block's last op.
Tensor Decoder::block(Workspace& ws, PagedKvCache& cache, int64_t cache_layer, const DecodeRows& rows, Tensor x,
                      Tensor h, const BlockWeights& w, size_t ai, MoeLoad* load, Tensor next_norm, Tensor* next_h) {
  const Context& ctx = model_.context();
  const ModelConfig& c = model_.config();
  const int64_t n = x.rows(), D = c.hidden_size;
  const DType dt = model_.dtype();
  Tensor attn = mla(ws, cache.pool(cache_layer), rows, h, w.attn, ai);
  Tensor x_mid = ws.alloc("x_mid", dt, {n, D}), f = ws.alloc("ffn_norm", dt, {n, D});
  add_rmsnorm_forward(ctx, x_mid, f, x, attn, w.post_attention_layernorm, c.rms_norm_eps);
  Tensor x_out = ws.alloc("x_out", dt, {n, D});
  *next_h = ws.alloc("next_norm", dt, {n, D});
  if (w.moe) {  // the shared expert beside the routed ones, then x_out = x_mid + (routed + shared) in one pass
    const bool shared_expert = c.n_shared_experts > 0;
    const Tensor shared = shared_expert ? mlp(fork(), ws, "moe.shared", f, w.moe_w.shared, gate_up_[ai]) : Tensor{};
    MoeActs a;
    moe_experts_forward(env(n), ws, "moe", a, load, f, w.moe_w);
    if (shared_expert) join();
    // routing and x_mid settled: the dispatch and add_rmsnorm ran three and four launches back on this stream
    moe_combine_forward(ctx, x_out, x_mid, shared, a.experts.out, a.row_of, a.topk_w, *next_h, next_norm,
                        c.rms_norm_eps, Inputs::settled);
  } else {
    add_rmsnorm_forward(ctx, x_out, *next_h, x_mid, mlp(ctx, ws, "mlp", f, w.mlp, gate_up_[ai]), next_norm,
                        c.rms_norm_eps);
  }
  return x_out;
}

void Decoder::forward(Workspace& ws, PagedKvCache& cache, const DecodeRows& rows, Tensor* logits, Tensor* hidden) {
  const Context& ctx = model_.context();
  const ModelConfig& c = model_.config();
  ModelWeights& w = model_.compute_weights();
  const int64_t n = rows.ids.numel(), D = c.hidden_size, L = c.num_hidden_layers;
  Tensor x = ws.alloc("embed", model_.dtype(), {n, D}), h = ws.alloc("attn_norm", model_.dtype(), {n, D});
  embedding_forward(ctx, x, rows.ids, w.embed_tokens);
  if (L > 0) rmsnorm_forward(ctx, h, Tensor{}, x, w.layers[0].input_layernorm, c.rms_norm_eps);
  else rmsnorm_forward(ctx, h, Tensor{}, x, w.norm, c.rms_norm_eps);
  for (int64_t l = 0; l < L; ++l) {  // each block ends with the next one's input norm (the final norm after the last)
    const Tensor next_norm = l + 1 < L ? w.layers[size_t(l + 1)].input_layernorm : w.norm;
    x = block(ws, cache, l, rows, x, h, w.layers[size_t(l)], size_t(l),
              w.layers[size_t(l)].moe ? model_.moe_load(l) : nullptr, next_norm, &h);
  }
  *hidden = h;
  *logits = ws.alloc("logits", model_.stat_dtype(), {n, c.vocab_size});  // f32 in mixed precision
  linear(ctx, *logits, *hidden, w.lm_head);
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
  Tensor hp = ws.alloc("mtp.eh_proj", dt, {n, D}), hp_n = ws.alloc("mtp.attn_norm", dt, {n, D});
  linear(ctx, hp, cat, m.eh_proj);
  rmsnorm_forward(ctx, hp_n, Tensor{}, hp, m.block.input_layernorm, c.rms_norm_eps);
  const int64_t layer = L + k - 1;
  Tensor hn2;  // the shared head's norm of the block output, fused into the block's last op
  *hidden = block(ws, cache, layer, rows, hp, hp_n, m.block, size_t(layer), model_.moe_load(layer), m.shared_head_norm,
                  &hn2);
  *logits = ws.alloc("mtp.logits", model_.stat_dtype(), {n, c.vocab_size});
  linear(ctx, *logits, hn2, w.lm_head);
}

}  // namespace ds
