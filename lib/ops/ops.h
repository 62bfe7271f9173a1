#pragma once
// Every op the model needs, forward and backward. One signature per op, shared by the CPU reference
// (lib/ops/cpu) and the CUDA twin (kernels/): the op checks shapes and dtypes, then dispatches on the device.
//
// Argument order (llm.c): context, outputs, saved statistics, inputs, weights, sizes/options.
// Float tensors of one call share one dtype: f32, or f64 (CPU only; used by the gradient checks).
// Index tensors (token ids, positions, targets, expert ids) are i32.
//
// Gradient rule, stated once:
//   * parameter gradients (d_weight, d_table, ...) ACCUMULATE (+=), so gradient accumulation works;
//   * activation gradients (d_in, d_q, ...) OVERWRITE, unless the caller passes Accum::add — the model does so
//     on the residual stream and where one activation feeds several branches.
//   * An empty Tensor for an optional gradient output means "not needed" and skips that work.
#include <cstdint>
#include <vector>

#include "tensor/context.h"
#include "tensor/tensor.h"

namespace ds {

enum class Accum : uint8_t { overwrite, add };

// When an op's index inputs (each op's comment names them) were last written. `settled`: at least two kernel
// launches earlier on the context's stream, or by a copy. Every CUDA kernel waits for the kernel before it and only
// then lets the next one start (programmatic dependent launch, kernels/common.cuh), so while a kernel runs, the
// one before its predecessor has completed: a kernel told `settled` loads those inputs — and what they point to —
// before its wait, overlapping the previous kernel. The decoder knows its order and says so; the CPU ignores it.
enum class Inputs : uint8_t { fresh, settled };

// ---- elementwise and utility -------------------------------------------------------------------------
void fill(const Context& ctx, Tensor t, double value);
void scale(const Context& ctx, Tensor t, double alpha);                     // t *= alpha
void axpy(const Context& ctx, Tensor y, double alpha, Tensor x);           // y += alpha * x (same shape)
void add(const Context& ctx, Tensor out, Tensor a, Tensor b);              // out = a + b (out may alias a or b)
// dst = src with dtype conversion (f32/f64/bf16) and across devices; same numel.
void copy(const Context& ctx, Tensor dst, Tensor src);
// Column block copy between 2-D views [rows, C]: dst[:, dst_col:dst_col+ncols] (=|+=) src[:, src_col:...].
// Serves split (forward) / concat (backward) along the last dim, e.g. q -> (q_nope, q_pe).
void copy_cols(const Context& ctx, Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t ncols,
               Accum acc = Accum::overwrite);
// The same column block into `copies` places of each row: dst[:, dst_col + j * stride : ... + ncols] =
// src[:, src_col : src_col + ncols] for j < copies (MLA's shared rope key into every head of k_full, one launch).
void copy_cols_repeat(const Context& ctx, Tensor dst, int64_t dst_col, int64_t stride, int64_t copies, Tensor src,
                      int64_t src_col, int64_t ncols);
// Its adjoint: dst[:, dst_col : dst_col + ncols] (=|+=) the sum over j < copies of src[:, src_col + j * stride :
// ... + ncols] (the gradient of MLA's shared rope key summed over the heads, one launch instead of H). Each element
// is summed in the float dtype's accumulator (f32 for f32 and bf16, f64 for f64) in order j = 0, 1, ..., copies - 1,
// starting from block 0 (Accum::add: from dst's value, block 0 added first), and rounded once to dst's dtype. So for
// f32 and f64 the result has exactly the bits of copy_cols(block 0) then copy_cols(block j, Accum::add) in turn;
// for bf16 it is rounded once instead of `copies` times.
void sum_cols_repeat(const Context& ctx, Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t stride,
                     int64_t copies, int64_t ncols, Accum acc = Accum::overwrite);
double sum(const Context& ctx, Tensor t);          // reduction to the host, in double
double sum_squares(const Context& ctx, Tensor t);  // for the gradient norm
// sum_squares of each tensor, in order, with one transfer to the host: the gradient norm over ~200 tensors. On CUDA
// one pass over all of them (two launches, a table of the tensors) in double, in a fixed order that depends only on
// the sizes: sum_squares' value up to double rounding.
std::vector<double> sum_squares_each(const Context& ctx, const std::vector<Tensor>& ts);
// sum_squares_each into out (f64 [ts.size()] on ctx's device), enqueued on ctx's stream with no host wait (CUDA):
// the gradient norm summed stage by stage beside backward, read once at the end. The same values.
void sum_squares_into(const Context& ctx, Tensor out, const std::vector<Tensor>& ts);
// sum(t) into out (f64 [1] on ctx's device), enqueued with no host wait (CUDA): sum()'s value, for a host that reads
// the step's loss a step later (lib/train/trainer.cpp).
void sum_into(const Context& ctx, Tensor out, Tensor t);
bool all_finite(const Context& ctx, Tensor t);     // no NaN/inf (f32/f64/bf16): skip a step on overflow

// ---- embedding -----------------------------------------------------------------------------------------
// out[N, D] = table[ids[N], :]
void embedding_forward(const Context& ctx, Tensor out, Tensor ids, Tensor table);
// d_table[ids[n]] += d_out[n]
void embedding_backward(const Context& ctx, Tensor d_table, Tensor d_out, Tensor ids);

// ---- linear (no bias anywhere in DeepSeek-V3) ----------------------------------------------------------
// out[M, N] (=|+=) in[M, K] · weight[N, K]^T      (in may be any shape whose last dim is K: M = in.rows())
// weight_written (Inputs): a model's parameters are settled (the decoder says so; CUDA's few-row GEMV then loads
// the weights before waiting for the kernel before it).
void matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Accum acc = Accum::overwrite,
                    Inputs weight_written = Inputs::fresh);
// d_in[M, K] (=|+=) d_out · weight;  d_weight[N, K] += d_out^T · in. Either output may be empty.
void matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                     Accum acc_in = Accum::overwrite);

// Per-head linear over [M, H, *] views (the absorbed-MLA folds W_UK^T q_nope and W_UV o_lat, all heads at once):
// out[m, h, 0:n] = in[m, h, 0:k] · weight[h, w_row0 : w_row0 + n, :]^T for every head h. in [M, H, Kin >= k] and
// out [M, H, Nout >= n] (only the first k / n values of each head are read / written; the rest of out is left as
// it is); weight [H, Wr >= w_row0 + n, k]. On CUDA one strided-batched cuBLASLt product; on the CPU one sgemm per
// head.
void matmul_heads_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, int64_t k, int64_t n,
                          int64_t w_row0 = 0, Inputs weight_written = Inputs::fresh);

// ---- RMSNorm over the last dim -------------------------------------------------------------------------
// out = weight * in * rstd,  rstd[rows] = 1 / sqrt(mean(in^2) + eps)
void rmsnorm_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, Tensor weight, double eps);
void rmsnorm_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                      Tensor rstd, Accum acc_in = Accum::overwrite);
// The same of a column block: out [rows, D] = rmsnorm(in[:, in_col : in_col + D]) with D = weight.numel(), in
// [rows, W] (the training MLA's latent, the first Rkv columns of kv_a). The same values as copy_cols then
// rmsnorm_forward.
void rmsnorm_cols_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, int64_t in_col, Tensor weight,
                          double eps);
// Its backward: d_in[:, d_in_col : d_in_col + D] (=|+=) the input gradient (d_in [rows, W'] may be empty; the rest
// of it is left as it is), d_weight += as rmsnorm_backward's of in's block. The same values as copy_cols,
// rmsnorm_backward, copy_cols.
void rmsnorm_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_weight, Tensor d_out, Tensor in,
                           int64_t in_col, Tensor weight, Tensor rstd, Accum acc_in = Accum::overwrite);
// sum = a + b (rounded to the dtype), out = rmsnorm(sum), rstd as rmsnorm_forward's (optional: decode skips it);
// the same values as add then rmsnorm_forward, in one pass. sum may alias a or b. The decoder's fusion, and the
// training block's x_mid = x + attention with its FFN norm.
void add_rmsnorm_forward(const Context& ctx, Tensor sum, Tensor out, Tensor a, Tensor b, Tensor weight, double eps,
                         Tensor rstd = {});

// ---- rotary embedding (RoPE / YaRN) --------------------------------------------------------------------
// in/out [N, H, R] (H may be 1). Interleaved pairs (x[2i], x[2i+1]) as DeepSeek's checkpoints store them:
// pair i of token n rotates by angle pos[n] * inv_freq[i]; cos and sin are multiplied by attn_factor
// (YaRN's mscale ratio; 1 for DeepSeek-V3). inv_freq [R/2] has the float dtype of in.
void rope_forward(const Context& ctx, Tensor out, Tensor in, Tensor pos, Tensor inv_freq, double attn_factor);
// d_in (=|+=) the transposed rotation of d_out.
void rope_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor pos, Tensor inv_freq, double attn_factor,
                   Accum acc = Accum::overwrite);
// rope_forward of a column block, between [N, H, W] views: out[:, :, out_col : out_col + R] =
// RoPE(in[:, :, in_col : in_col + R]) with R = 2 * inv_freq.numel(); the rest of out is left as it is. The same
// values as copy_cols, rope_forward, copy_cols (absorbed MLA: q_pe from q straight into q_lat; training MLA: q's
// rope columns in place, the rope key out of kv_a). out may alias in only with out_col == in_col and the same W.
void rope_cols_forward(const Context& ctx, Tensor out, int64_t out_col, Tensor in, int64_t in_col, Tensor pos,
                       Tensor inv_freq, double attn_factor);
// Its adjoint, rope_backward of a column block: d_in[:, :, d_in_col : + R] (=|+=) the transposed rotation of
// d_out[:, :, d_out_col : + R]; the rest of d_in is left as it is. The same values as copy_cols, rope_backward,
// copy_cols. d_in may alias d_out only with d_in_col == d_out_col and the same W.
void rope_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_out, int64_t d_out_col, Tensor pos,
                        Tensor inv_freq, double attn_factor, Accum acc = Accum::overwrite);

// ---- causal self-attention (qk head dim may differ from v head dim) ------------------------------------
// q, k [B, T, H, Dqk]; v [B, T, H, Dv]; out [B, T, H, Dv]; lse [B, H, T] = logsumexp_s(scale * q_t·k_s), s <= t.
void attention_forward(const Context& ctx, Tensor out, Tensor lse, Tensor q, Tensor k, Tensor v, double scale);
// d_q, d_k, d_v overwrite. Probabilities are recomputed from lse.
void attention_backward(const Context& ctx, Tensor d_q, Tensor d_k, Tensor d_v, Tensor d_out, Tensor out, Tensor lse,
                        Tensor q, Tensor k, Tensor v, double scale);
// MLA's attention with its keys and values read in place: kv [B, T, H, dn + Dv] is kv_b's output (each head's
// [k_nope | v]), k_pe [B, T, dr] the rope key every head shares; head h's key is [kv[.., h, :dn] | k_pe], its value
// kv[.., h, dn:]; q [B, T, H, dn + dr]. The values of attention_forward on those keys and values (materialised by
// copy_cols where no kernel reads them in place: the CPU, and CUDA outside the sm_90a 96/64 kernels).
void mla_attention_forward(const Context& ctx, Tensor out, Tensor lse, Tensor q, Tensor kv, Tensor k_pe, double scale);
// d_q, d_kv (k_nope's and v's gradients in kv's layout) and d_k_pe [B, T, H, dr] (each head's gradient of the shared
// rope key: the caller sums them) overwrite; as attention_backward's d_q, d_k, d_v split by copy_cols. Either d_q or
// d_kv with d_k_pe may be empty (not computed): two calls, one for each, may run on two streams at once.
void mla_attention_backward(const Context& ctx, Tensor d_q, Tensor d_kv, Tensor d_k_pe, Tensor d_out, Tensor out,
                            Tensor lse, Tensor q, Tensor kv, Tensor k_pe, double scale);

// ---- MLA decode over a paged latent cache (the absorbed form, MODEL.md §2.5; FlashMLA's contract) ---------
// kv_pool [P, S, C]: P pages of S token slots; a slot holds C = Rkv + dr values, the normalised latent c then the
// rotated rope key. kv_cache_write: pool row slot_rows[i] (= page * S + offset) <- [c[i] ; k_pe[i]]; a negative
// slot row writes nothing (the padding rows of a batched prefill).
void kv_cache_write(const Context& ctx, Tensor kv_pool, Tensor slot_rows, Tensor c, Tensor k_pe);
// Decode fusion, MLA's latent step for n new tokens: a [n, Q + R + dr] holds [q_a(x) ; kv_a(x)] (Q = 0 when q_a is
// computed apart). q_latent [n, Q] = rmsnorm(a[:, :Q], q_norm) (empty when Q = 0), and pool row slot_rows[i] <-
// [rmsnorm(a[i, Q:Q+R], kv_norm) ; RoPE(a[i, Q+R:], pos[i])]. The same values as the copy_cols / rmsnorm_forward /
// rope_forward / kv_cache_write sequence; R = kv_norm.numel(), dr = C - R of the pool.
void mla_latent_forward(const Context& ctx, Tensor q_latent, Tensor kv_pool, Tensor slot_rows, Tensor a, Tensor q_norm,
                        Tensor kv_norm, double eps, Tensor pos, Tensor inv_freq, double attn_factor);
// MQA with one shared KV head: query row i (q_lat [n, H, C] = [W_UK^T q_nope ; q_pe] per head) attends to the first
// kv_len[i] tokens of its sequence, whose slots are block_table[i, t / S] * S + t % S. K is the whole C-vector,
// V its first R = out.dim(2) values. out [n, H, R] = sum_t softmax_t(scale * q·k_t) v_t; lse [n, H] optional.
// cache: when kv_pool, block_table and kv_len were written (Inputs).
void mla_decode_attention(const Context& ctx, Tensor out, Tensor lse, Tensor q_lat, Tensor kv_pool, Tensor block_table,
                          Tensor kv_len, double scale, Inputs cache = Inputs::fresh);

// ---- SwiGLU --------------------------------------------------------------------------------------------
// out[N, F] = silu(gate) * up
void swiglu_forward(const Context& ctx, Tensor out, Tensor gate, Tensor up);
void swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up);
// Decode fusion: out[N, F] = silu(gate_up[:, :F]) * gate_up[:, F:] for gate_up [N, 2F], the output of one GEMM over
// the gate and up weights stacked (the same values as swiglu_forward of the two halves).
void swiglu_pair_forward(const Context& ctx, Tensor out, Tensor gate_up);
// Its backward (the training MLP's fused gate/up product): d_gate_up [N, 2F] = [d_gate | d_up] of
// swiglu_backward(d_out, gate_up's halves), the same values bit for bit (on CUDA the same per-element arithmetic as
// swiglu_backward's kernel). d_gate_up must not alias d_out or gate_up.
void swiglu_pair_backward(const Context& ctx, Tensor d_gate_up, Tensor d_out, Tensor gate_up);

// ---- MoE gate ------------------------------------------------------------------------------------------
enum class ScoreFunc : uint8_t { sigmoid, softmax };
enum class TopkMethod : uint8_t { greedy, group_limited_greedy, noaux_tc };
struct GateOptions {
  ScoreFunc score_func = ScoreFunc::sigmoid;
  TopkMethod topk_method = TopkMethod::noaux_tc;
  int n_group = 1;
  int topk_group = 1;
  int top_k = 1;
  bool norm_topk_prob = true;
  double routed_scaling_factor = 1.0;
};
// logits [N, E] -> scores [N, E] (sigmoid or softmax; saved), topk_idx [N, K] i32, topk_w [N, K].
// Selection: s' = scores + bias (bias [E] may be empty; noaux_tc only). With n_group > 1 the group score is the
// sum of the top-2 s' in the group (noaux_tc) or the max score (group_limited_greedy); the topk_group best
// groups are kept and every expert of the others is masked to -inf (official model.py, not HF's 0.0).
// Then top_k over the masked s'. Ties go to the lower expert index (and the lower group index).
// Weights come from the UNBIASED scores: w = scores[idx]; if norm_topk_prob w /= (sum w + 1e-20);
// then w *= routed_scaling_factor. topk_idx lists the chosen experts in descending s' order.
void moe_gate_forward(const Context& ctx, Tensor topk_idx, Tensor topk_w, Tensor scores, Tensor logits, Tensor bias,
                      const GateOptions& opt);
// d_logits [N, E] (overwrite) from d_topk_w [N, K], plus d_scores_extra [N, E] (may be empty) added to the
// gradient w.r.t. scores before the sigmoid/softmax backward (the balance loss uses it). Selection is treated
// as constant (no gradient through top-k), the bias gets none.
void moe_gate_backward(const Context& ctx, Tensor d_logits, Tensor d_topk_w, Tensor d_scores_extra, Tensor scores,
                       Tensor topk_idx, const GateOptions& opt);

// Complementary sequence-wise balance loss (V3 report §2.1.2), tokens grouped in sequences of seq_len rows:
// per sequence, f_i = E/(K*T) * #{t: i in topk_t}, P_i = mean_t scores[t,i] / sum_j scores[t,j];
// L = alpha * mean over sequences of sum_i f_i P_i. Returns L (host double).
double moe_balance_loss_forward(const Context& ctx, Tensor scores, Tensor topk_idx, int64_t seq_len, double alpha);
// d_scores [N, E] += d_loss * dL/dscores.
void moe_balance_loss_backward(const Context& ctx, Tensor d_scores, double d_loss, Tensor scores, Tensor topk_idx,
                               int64_t seq_len, double alpha);

// ---- MoE dispatch / combine ----------------------------------------------------------------------------
// Token copies grouped by expert. For each (n, k) with e = topk_idx[n, k], row_of[n, k] is its row in the
// permuted buffer: rows are ordered by expert, then by (n, k). offsets [E + 1] i64: expert e owns rows
// offsets[e] .. offsets[e+1]. counts [E] i64 += the number of rows of each expert (load statistics).
void moe_route(const Context& ctx, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx, int64_t n_experts);
// out[row_of[n, k]] = in[n]      (out [N*K, D])
void moe_permute_forward(const Context& ctx, Tensor out, Tensor in, Tensor row_of);
// Inference fusion, the start of a MoE block: logits = x · router^T (rounded to logits' dtype), then
// moe_gate_forward(topk_idx, topk_w, scores, logits, bias, opt), moe_route(row_of, offsets, counts, topk_idx, E)
// and moe_permute_forward(xp, x, row_of) — the same values; on CUDA one launch for decode-sized batches.
// weights_written: when router and bias were written (Inputs).
void moe_dispatch_forward(const Context& ctx, Tensor xp, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx,
                          Tensor topk_w, Tensor scores, Tensor logits, Tensor x, Tensor router, Tensor bias,
                          const GateOptions& opt, Inputs weights_written = Inputs::fresh);
// d_in[n] (=|+=) sum_k d_out[row_of[n, k]]
void moe_permute_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor row_of, Accum acc = Accum::overwrite);
// out[n] (=|+=) sum_k topk_w[n, k] * expert_out[row_of[n, k]]
void moe_unpermute_forward(const Context& ctx, Tensor out, Tensor expert_out, Tensor row_of, Tensor topk_w,
                           Accum acc = Accum::overwrite);
// d_expert_out[row_of[n,k]] = topk_w[n,k] * d_out[n];  d_topk_w[n,k] = d_out[n] · expert_out[row_of[n,k]] (overwrite)
void moe_unpermute_backward(const Context& ctx, Tensor d_expert_out, Tensor d_topk_w, Tensor d_out, Tensor expert_out,
                            Tensor row_of, Tensor topk_w);
// Decode fusion, the end of a MoE block: out[n] = resid[n] + (sum_k topk_w[n,k] * expert_out[row_of[n,k]] + shared[n]),
// rounded as moe_unpermute_forward, axpy(1, shared) and add do it one after the other (shared may be empty).
// out may alias resid. With norm_out: also norm_out = rmsnorm_forward(out, norm_weight, eps) — the next block's
// input norm (or the final norm) in the same pass. routing: when row_of, topk_w and resid were written (Inputs).
void moe_combine_forward(const Context& ctx, Tensor out, Tensor resid, Tensor shared, Tensor expert_out, Tensor row_of,
                         Tensor topk_w, Tensor norm_out = {}, Tensor norm_weight = {}, double eps = 0,
                         Inputs routing = Inputs::fresh);
// Auxiliary-loss-free balancing: bias[e] += gamma * sign(mean(load) - load[e]); load [E] i64 (one step's counts).
void moe_bias_update(const Context& ctx, Tensor bias, Tensor load, double gamma);
// moe_bias_update of every (biases[i], loads[i]) pair: the same values, one launch for all the layers (CUDA). With a
// verdict (grad_clip_verdict's, on the biases' device) the biases stay as they are on a skipped step.
void moe_bias_update_many(const Context& ctx, const std::vector<Tensor>& biases, const std::vector<Tensor>& loads,
                          double gamma, Tensor verdict = {});

// ---- grouped expert linear (the routed experts as one op: no per-expert loop on the host) ---------------
// The rows of the permuted buffer are grouped by expert as moe_route leaves them: expert e owns rows
// offsets[e] .. offsets[e+1] (offsets [E + 1] i64 on the context's device, offsets[0] = 0, offsets[E] = M).
// weight [E, N, K] holds the E experts' linear weights in the HF layout; an expert with no rows costs nothing.
// out[r] (=|+=) in[r] · weight[e]^T for each row r of expert e.        in [M, K], out [M, N]
// offsets_written: when offsets were written (Inputs).
void grouped_matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Tensor offsets,
                            Accum acc = Accum::overwrite, Inputs offsets_written = Inputs::fresh);
// d_in[r] (=|+=) d_out[r] · weight[e];  d_weight[e] (+=|=) d_out[rows of e]^T · in[rows of e] (written over: zero
// for an expert without rows). Either output may be empty.
void grouped_matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                             Tensor offsets, Accum acc_in = Accum::overwrite, Accum acc_w = Accum::add);
// The routed experts' down projection's input gradient through SwiGLU's backward: d_act = d_out[r] · weight[e]
// (grouped_matmul_backward's d_in), then swiglu_backward(d_gate, d_up, d_act, gate, up), rounded as those two ops
// round it (the same bits on CUDA; with DS_GROUPED_DSWIGLU=1, bf16 at training shapes is one launch and d_act is
// never stored). weight [E, N, F], d_out [M, N]; gate, up (the forward's products), d_gate, d_up [M, F], one dtype.
void grouped_matmul_swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor weight,
                                    Tensor offsets, Tensor gate, Tensor up);
// The routed experts' gate and up projections' input gradient in one product: d_in[r] = d_out1[r] · w1[e] +
// d_out2[r] · w2[e]. The same values as grouped_matmul_backward's d_in for (d_out1, w1) then its d_in += for
// (d_out2, w2), except that the GPU's one launch over both products (bf16, the TMA kernel) sums in f32 and rounds
// once. w1, w2 [E, N, K], d_out1, d_out2 [M, N], d_in [M, K].
void grouped_matmul_d_in_pair(const Context& ctx, Tensor d_in, Tensor d_out1, Tensor w1, Tensor d_out2, Tensor w2,
                              Tensor offsets);
// The routed experts' first half fused: out = swiglu_forward(in · gate_w[e]^T, in · up_w[e]^T) per row, rounded as
// the two grouped_matmul_forward calls and swiglu_forward round it (the same bits on CUDA). gate_w, up_w [E, F, K],
// out [M, F]. gate_out, up_out (optional, [M, F], out's dtype): the two products kept as those calls write them, for
// the backward (training); empty, the products are not kept (inference).
void grouped_swiglu_forward(const Context& ctx, Tensor out, Tensor in, Tensor gate_w, Tensor up_w, Tensor offsets,
                            Tensor gate_out = Tensor{}, Tensor up_out = Tensor{});

// ---- loss ----------------------------------------------------------------------------------------------
// loss[n] = lse[n] - logits[n, targets[n]];  lse[n] = logsumexp(logits[n]). Rows whose target equals
// ignore_index get loss 0 and lse 0. logits [N, V], targets [N] i32.
void cross_entropy_forward(const Context& ctx, Tensor loss, Tensor lse, Tensor logits, Tensor targets,
                           int ignore_index);
// d_logits[n] (=|+=) d_scale * row_scale[n] * (softmax(logits[n]) - onehot(targets[n])); ignored rows get 0.
// row_scale [N] (optional, the float dtype of logits) weighs rows individually: policy-gradient losses put
// -dL/dlogp(target) there. d_logits has the dtype of logits, or bf16 when logits are f32 (mixed precision: the
// gradient is computed as for f32 and rounded once into what the bf16 head's backward reads, with no f32 copy);
// with Accum::add the bf16 value is read, the gradient added in the wider precision, the sum rounded once.
void cross_entropy_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor lse, Tensor targets,
                            double d_scale, int ignore_index, Accum acc = Accum::overwrite, Tensor row_scale = {});
// cross_entropy_forward(loss, lse, logits, targets) then cross_entropy_backward(d_logits, logits, lse, targets,
// d_scale, Accum::overwrite) in one call, the same values bit for bit (d_logits' dtype rules as there). On CUDA one
// pass over the logits when a row fits the kernel's registers (V <= 32,768 with aligned rows, 8,192 otherwise): the
// training step's loss and gradient read the [N, V] logits once instead of twice. lse is required.
void cross_entropy_fused(const Context& ctx, Tensor loss, Tensor lse, Tensor d_logits, Tensor logits, Tensor targets,
                         double d_scale, int ignore_index);

// ---- logit distillation (beyond the R1 paper, which distils by SFT on teacher traces) --------------------
// loss[n] = KL(softmax(teacher[n]) || softmax(logits[n])) = sum_v p_t(v) (log p_t(v) - log p_s(v)), the forward KL
// of the student's distribution from the teacher's, per row; rows whose target equals ignore_index get 0.
// logits, teacher [N, V] (same vocabulary); targets [N] i32 only marks the rows that count.
void kl_div_forward(const Context& ctx, Tensor loss, Tensor logits, Tensor teacher, Tensor targets, int ignore_index);
// d_logits[n] (=|+=) d_scale * (softmax(logits[n]) - softmax(teacher[n])); ignored rows get 0 (nothing with add).
void kl_div_backward(const Context& ctx, Tensor d_logits, Tensor logits, Tensor teacher, Tensor targets, double d_scale,
                     int ignore_index, Accum acc = Accum::overwrite);

// ---- optimizer -----------------------------------------------------------------------------------------
struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.0;  // decoupled: p -= lr * wd * p
  int64_t step = 1;           // 1-based, for bias correction
  double grad_scale = 1.0;    // gradients are multiplied by this first (clipping, accumulation average)
  // Optional: grad_clip_verdict's f64 [3] on the update's device. When set, its scale replaces grad_scale, and on a
  // skipped step nothing is written (the host need not have read the gradient norm: lib/train/optimizer.h).
  Tensor verdict;
};
// The step's verdict on the device, from its gradients' sums of squares: norm = sqrt(ssq[0] + ssq[1] + ..., in
// order) * grad_scale; skipped when force_skip, when the norm is not finite or when a value of `finite` (f64, may be
// empty: the loss sums) is not; otherwise scale = grad_scale, times max_norm / norm when max_norm > 0 and norm >
// max_norm. verdict f64 [3] = (scale, skip, norm), scale 0 and skip 1 on a skipped step. The host's double arithmetic
// (AdamW::grad_norm and apply), so the same bits.
void grad_clip_verdict(const Context& ctx, Tensor verdict, Tensor ssq, Tensor finite, double grad_scale,
                       double max_norm, bool force_skip);
// param, grad, m, v: same shape; param/m/v f32 (or f64 on CPU), or m and v bf16 with an f32 param (DeepSeek-V3's
// optimizer state, MODEL.md 7.5: the new moments are stored rounded to bf16, the step uses them unrounded; with
// beta2 near 1 the second moment's increments fall under bf16's resolution). compute (optional, same numel, bf16 or the
// param's dtype) receives the updated parameter converted, as copy() would: the mixed-precision compute copy
// refreshed in the same pass instead of another one over every parameter.
void adamw_update(const Context& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWOptions& opt,
                  Tensor compute = {});
// adamw_update over many tensors (an optimizer step): slot i updated as adamw_update(param, grad, m, v, opt with
// weight_decay = slot.weight_decay, compute), the same values; on CUDA one launch per combination of dtypes instead
// of one per tensor (most tensors of a model are small: their launches cost more than their bytes).
struct AdamWSlot {
  Tensor param, grad, m, v, compute;
  double weight_decay = 0.0;
};
void adamw_update_many(const Context& ctx, const std::vector<AdamWSlot>& slots, const AdamWOptions& opt);

// ---- token sampling on the device (CUDA only; the CPU engine samples with lib/infer/sampler.h) ---------------
// One token per row of logits [n, V] (f32 or bf16): params [n, 4] f64 rows (temperature, top_p, top_k, u) with u the
// row's uniform draw in [0, 1); tokens [n] i32 and logprobs [n] f64 receive the choice and log softmax(logits /
// T)[token] (T = 1 when greedy). Same contract as sampling_distribution + draw_token + token_logprob
// (lib/infer/sampler.h), in double: greedy choices are identical to the CPU's; a sampled choice can differ only
// when u lies within rounding of a cumulative-probability boundary (sums run in another order).
void sample_tokens(const Context& ctx, Tensor tokens, Tensor logprobs, Tensor logits, Tensor params);

}  // namespace ds
