#pragma once
// CPU reference kernels (internal to lib/ops). Same signatures as ops.h; ops.cpp has already checked shapes,
// dtypes and devices, so these only dispatch on the float dtype (f32 / f64) and compute.
//
// Determinism: no result depends on ctx.threads. Parallel loops split independent rows; reductions either run
// per row or over fixed-size chunks summed in order (see kReduceChunk).
#include <cstdint>
#include <string>
#include <vector>

#include "ops/ops.h"

namespace ds::cpu {

// Below this many elements of work a loop runs on one thread (OpenMP start-up costs more than it saves).
constexpr int64_t kParallelMin = 1 << 14;
// Reductions to a scalar sum fixed chunks of this many elements, then add the chunk sums in order.
constexpr int64_t kReduceChunk = 4096;

// Calls f(T{}) with T = float or double according to dt.
template <class F> void dispatch_float(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::f64: f(double{}); return;
    default: throw_runtime(std::string(op) + ": CPU kernel has no " + dtype_name(dt) + " variant (f32 or f64)");
  }
}

// OpenMP thread count for a loop over `work` elements.
inline int threads_for(const Context& ctx, int64_t work) {
  return work >= kParallelMin && ctx.threads > 1 ? ctx.threads : 1;
}

// elementwise.cpp
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
bool all_finite(const Context& ctx, Tensor t);
double sum_squares(const Context& ctx, Tensor t);
std::vector<double> sum_squares_each(const Context& ctx, const std::vector<Tensor>& ts);
void sum_squares_into(const Context& ctx, Tensor out, const std::vector<Tensor>& ts);
void sum_into(const Context& ctx, Tensor out, Tensor t);
void swiglu_forward(const Context& ctx, Tensor out, Tensor gate, Tensor up);
void swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up);
void swiglu_pair_backward(const Context& ctx, Tensor d_gate_up, Tensor d_out, Tensor gate_up);

// matmul.cpp
void embedding_forward(const Context& ctx, Tensor out, Tensor ids, Tensor table);
void embedding_backward(const Context& ctx, Tensor d_table, Tensor d_out, Tensor ids);
void matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Accum acc, Inputs weight_written);
void matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                     Accum acc_in);
void matmul_heads_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, int64_t k, int64_t n,
                          int64_t w_row0, Inputs weight_written);

// norm_rope.cpp
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
void rope_cols_forward(const Context& ctx, Tensor out, int64_t out_col, Tensor in, int64_t in_col, Tensor pos,
                       Tensor inv_freq, double attn_factor);
void rope_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_out, int64_t d_out_col, Tensor pos,
                        Tensor inv_freq, double attn_factor, Accum acc);

// attention.cpp
void attention_forward(const Context& ctx, Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, double scale);
void attention_backward(const Context& ctx, Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor out, Tensor lse,
                        Tensor q, Tensor k, Tensor v, double scale);

// moe_gate.cpp
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

// moe_dispatch.cpp
void moe_route(const Context& ctx, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx, int64_t n_experts);
void moe_permute_forward(const Context& ctx, Tensor out, Tensor in, Tensor row_of);
void moe_dispatch_forward(const Context& ctx, Tensor xp, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx,
                          Tensor topk_w, Tensor scores, Tensor logits, Tensor x, Tensor router, Tensor bias,
                          const GateOptions& opt, Inputs weights_written);
void moe_permute_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor row_of, Accum acc);
void moe_unpermute_forward(const Context& ctx, Tensor out, Tensor expert_out, Tensor row_of, Tensor topk_w,
                           Accum acc);
void moe_unpermute_backward(const Context& ctx, Tensor d_expert_out, Tensor d_topk_w, Tensor d_out, Tensor expert_out,
                            Tensor row_of, Tensor topk_w);

// grouped_matmul.cpp
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

// loss.cpp
void cross_entropy_forward(const Context& ctx, Tensor loss, Tensor lse, Tensor logits, Tensor targets,
                           int ignore_index);
void cross_entropy_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
                            double d_scale, int ignore_index, Accum acc, Tensor row_scale);
void cross_entropy_fused(const Context& ctx, Tensor loss, Tensor lse, Tensor d_logits, Tensor logits, Tensor targets,
                         double d_scale, int ignore_index);
void kl_div_forward(const Context& ctx, Tensor loss, Tensor logits, Tensor teacher, Tensor targets, int ignore_index);
void kl_div_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor teacher, Tensor targets, double d_scale,
                     int ignore_index, Accum acc);

// mla_decode.cpp
void kv_cache_write(const Context& ctx, Tensor kv_pool, Tensor slot_rows, Tensor c, Tensor k_pe);
void mla_decode_attention(const Context& ctx, Tensor out, Tensor lse, Tensor q_lat, Tensor kv_pool, Tensor block_table,
                          Tensor kv_len, double scale, Inputs cache);

// adamw.cpp
void adamw_update(const Context& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWOptions& opt,
                  Tensor compute);
void grad_clip_verdict(const Context& ctx, Tensor verdict, Tensor ssq, Tensor finite, double grad_scale,
                       double max_norm, bool force_skip);

// fused.cpp: the decode fusions, composed of the reference ops above (so their values are those ops' values)
void add_rmsnorm_forward(const Context& ctx, Tensor sum, Tensor out, Tensor a, Tensor b, Tensor weight, double eps,
                         Tensor rstd);
void mla_latent_forward(const Context& ctx, Tensor q_latent, Tensor kv_pool, Tensor slot_rows, Tensor a, Tensor q_norm,
                        Tensor kv_norm, double eps, Tensor pos, Tensor inv_freq, double attn_factor);
void swiglu_pair_forward(const Context& ctx, Tensor out, Tensor gate_up);
void moe_combine_forward(const Context& ctx, Tensor out, Tensor resid, Tensor shared, Tensor expert_out, Tensor row_of,
                         Tensor topk_w, Tensor norm_out, Tensor norm_weight, double eps, Inputs routing);

}  // namespace ds::cpu
