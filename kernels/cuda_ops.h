#pragma once
// The CUDA twins of lib/ops (issue 5): every op of ops.h with the identical signature, in namespace ds::cuda.
// lib/ops/ops.cpp checks the arguments once and dispatches here when ctx.device is a GPU, so these functions
// trust their arguments (shapes, devices) as the CPU kernels of lib/ops/cpu do.
//
// Precision (mixed, as on the H200): float tensors may be f32 or bf16. Activations and weights are bf16 in
// training and decoding; master weights and AdamW moments, saved statistics (rstd, lse, per-row losses, gate
// scores and routing weights) and reductions are f32, and every kernel accumulates in f32. Which tensors of an
// op may be bf16 is stated by its check in ops.cpp; the parity tests (tests/ops) run each op in f32 and bf16.
// Each op runs on ctx's stream; nothing here synchronises except the reductions that return a host value.
#include <cstdint>

#include "ops/ops.h"

namespace ds::cuda {

// ---- elementwise and utility, embedding, SwiGLU (kernels/elementwise.cu, kernels/embedding.cu)
void fill(const Context& ctx, Tensor t, double value);
void scale(const Context& ctx, Tensor t, double alpha);
void axpy(const Context& ctx, Tensor y, double alpha, Tensor x);
void add(const Context& ctx, Tensor out, Tensor a, Tensor b);
void copy(const Context& ctx, Tensor dst, Tensor src);
void copy_cols(const Context& ctx, Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t ncols, Accum acc);
void copy_cols_repeat(const Context& ctx, Tensor dst, int64_t dst_col, int64_t stride, int64_t copies, Tensor src,
                      int64_t src_col, int64_t ncols);
void sum_cols_repeat(const Context& ctx, Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t stride,
                     int64_t copies, int64_t ncols, Accum acc);
double sum(const Context& ctx, Tensor t);
double sum_squares(const Context& ctx, Tensor t);
std::vector<double> sum_squares_each(const Context& ctx, const std::vector<Tensor>& ts);
void sum_squares_into(const Context& ctx, Tensor out, const std::vector<Tensor>& ts);
void sum_into(const Context& ctx, Tensor out, Tensor t);
void embedding_forward(const Context& ctx, Tensor out, Tensor ids, Tensor table);
void embedding_backward(const Context& ctx, Tensor d_table, Tensor d_out, Tensor ids);
void swiglu_forward(const Context& ctx, Tensor out, Tensor gate, Tensor up);
void swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up);
void swiglu_pair_forward(const Context& ctx, Tensor out, Tensor gate_up);
void swiglu_pair_backward(const Context& ctx, Tensor d_gate_up, Tensor d_out, Tensor gate_up);

// ---- linear through cuBLASLt (kernels/matmul.cu)
void matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Accum acc, Inputs weight_written);
void matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
    Accum acc_in);
void matmul_heads_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, int64_t k, int64_t n,
                          int64_t w_row0, Inputs weight_written);

// ---- token sampling, one block per row (kernels/sampling.cu)
void sample_tokens(const Context& ctx, Tensor tokens, Tensor logprobs, Tensor logits, Tensor params);

// ---- RMSNorm and RoPE (kernels/norm_rope.cu)
void rmsnorm_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, Tensor weight, double eps);
void rmsnorm_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
    Tensor rstd, Accum acc_in);
void rmsnorm_cols_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, int64_t in_col, Tensor weight,
                          double eps);
void rmsnorm_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_weight, Tensor d_out, Tensor in,
                           int64_t in_col, Tensor weight, Tensor rstd, Accum acc_in);
void rope_forward(const Context& ctx, Tensor out, Tensor in, Tensor pos, Tensor inv_freq, double attn_factor);
void rope_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor pos, Tensor inv_freq, double attn_factor,
    Accum acc);
void add_rmsnorm_forward(const Context& ctx, Tensor sum, Tensor out, Tensor a, Tensor b, Tensor weight, double eps,
                         Tensor rstd = {});
void rope_cols_forward(const Context& ctx, Tensor out, int64_t out_col, Tensor in, int64_t in_col, Tensor pos,
                       Tensor inv_freq, double attn_factor);
void rope_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_out, int64_t d_out_col, Tensor pos,
                        Tensor inv_freq, double attn_factor, Accum acc);
void mla_latent_forward(const Context& ctx, Tensor q_latent, Tensor kv_pool, Tensor slot_rows, Tensor a, Tensor q_norm,
                        Tensor kv_norm, double eps, Tensor pos, Tensor inv_freq, double attn_factor);

// ---- flash-style causal attention (kernels/attention.cu)
void attention_forward(const Context& ctx, Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, double scale);
void attention_backward(const Context& ctx, Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor out, Tensor lse,
    Tensor q, Tensor k, Tensor v, double scale);
// MLA in place (ops.h); false where no kernel reads kv_b's layout (the op then materialises the keys and values).
bool mla_attention_forward(const Context& ctx, Tensor out, Tensor lse, Tensor q, Tensor kv, Tensor k_pe, double scale);
bool mla_attention_backward(const Context& ctx, Tensor d_q, Tensor d_kv, Tensor d_k_pe, Tensor d_out, Tensor out,
                            Tensor lse, Tensor q, Tensor kv, Tensor k_pe, double scale);

// ---- paged latent cache and absorbed-MLA decode (kernels/mla_decode.cu)
void kv_cache_write(const Context& ctx, Tensor kv_pool, Tensor slot_rows, Tensor c, Tensor k_pe);
void mla_decode_attention(const Context& ctx, Tensor out, Tensor lse, Tensor q_lat, Tensor kv_pool, Tensor block_table,
                          Tensor kv_len, double scale, Inputs cache);

// ---- MoE gate, balance loss, bias update (kernels/moe_gate.cu)
void moe_gate_forward(const Context& ctx, Tensor topk_idx, Tensor topk_w, Tensor scores, Tensor logits, Tensor bias,
    const GateOptions& opt);
void moe_gate_backward(const Context& ctx, Tensor d_logits, Tensor d_topk_w, Tensor d_scores_extra, Tensor scores,
    Tensor topk_idx, const GateOptions& opt);
double moe_balance_loss_forward(const Context& ctx, Tensor scores, Tensor topk_idx, int64_t seq_len, double alpha);
void moe_balance_loss_backward(const Context& ctx, Tensor d_scores, double d_loss, Tensor scores, Tensor topk_idx,
    int64_t seq_len, double alpha);
void moe_bias_update(const Context& ctx, Tensor bias, Tensor load, double gamma);
void moe_bias_update_many(const Context& ctx, const std::vector<Tensor>& biases, const std::vector<Tensor>& loads,
                          double gamma, Tensor verdict);

// ---- MoE dispatch (kernels/moe_dispatch.cu)
void moe_route(const Context& ctx, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx, int64_t n_experts);
void moe_permute_forward(const Context& ctx, Tensor out, Tensor in, Tensor row_of);
void moe_dispatch_forward(const Context& ctx, Tensor xp, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx,
                          Tensor topk_w, Tensor scores, Tensor logits, Tensor x, Tensor router, Tensor bias,
                          const GateOptions& opt, Inputs weights_written);
void moe_permute_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor row_of, Accum acc);
void moe_unpermute_forward(const Context& ctx, Tensor out, Tensor expert_out, Tensor row_of, Tensor topk_w, Accum acc);
void moe_unpermute_backward(const Context& ctx, Tensor d_expert_out, Tensor d_topk_w, Tensor d_out, Tensor expert_out,
    Tensor row_of, Tensor topk_w);
void moe_combine_forward(const Context& ctx, Tensor out, Tensor resid, Tensor shared, Tensor expert_out, Tensor row_of,
                         Tensor topk_w, Tensor norm_out, Tensor norm_weight, double eps, Inputs routing);

// ---- grouped expert linear, all experts in one launch, offsets read on the device (kernels/grouped_matmul.cu)
void grouped_matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Tensor offsets, Accum acc,
                            Inputs offsets_written);
void grouped_swiglu_forward(const Context& ctx, Tensor out, Tensor in, Tensor gate_w, Tensor up_w, Tensor offsets,
                            Tensor gate_out, Tensor up_out);
void grouped_matmul_swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor weight,
                                    Tensor offsets, Tensor gate, Tensor up);
void grouped_matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
    Tensor offsets, Accum acc_in, Accum acc_w = Accum::add);
void grouped_matmul_d_in_pair(const Context& ctx, Tensor d_in, Tensor d_out1, Tensor w1, Tensor d_out2, Tensor w2,
                              Tensor offsets);

// ---- fused cross-entropy and AdamW (kernels/loss.cu, kernels/adamw.cu)
void cross_entropy_forward(const Context& ctx, Tensor loss, Tensor lse, Tensor logits, Tensor targets,
    int ignore_index);
void cross_entropy_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
    double d_scale, int ignore_index, Accum acc, Tensor row_scale);
void cross_entropy_fused(const Context& ctx, Tensor loss, Tensor lse, Tensor d_logits, Tensor logits, Tensor targets,
    double d_scale, int ignore_index);
void kl_div_forward(const Context& ctx, Tensor loss, Tensor logits, Tensor teacher, Tensor targets, int ignore_index);
void kl_div_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor teacher, Tensor targets, double d_scale,
    int ignore_index, Accum acc);
void adamw_update_many(const Context& ctx, const std::vector<AdamWSlot>& slots, const AdamWOptions& opt);
void grad_clip_verdict(const Context& ctx, Tensor verdict, Tensor ssq, Tensor finite, double grad_scale,
                       double max_norm, bool force_skip);
void adamw_update(const Context& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWOptions& opt,
                  Tensor compute);
bool all_finite(const Context& ctx, Tensor t);  // in adamw.cu

}  // namespace ds::cuda
