// Argument checking and device dispatch for the MoE ops of ops.h (gate, balance loss, dispatch/combine).
#include <string>
#include <utility>

#include "ops/check.h"
#include "ops/cpu/cpu_ops.h"
#include "ops/ops.h"

namespace ds {

using opcheck::Check;

namespace {

std::string s(int64_t v) { return std::to_string(v); }

// [N, K] index/weight tensors: 2-D with N rows and K cols.
void check_nk(Check& c, const char* name, const Tensor& t, int64_t N, int64_t K) {
  OP_CHECK(c, t.ndim == 2 && t.dim(0) == N && t.dim(1) == K,
           std::string(name) + " " + t.shape_str() + " must be [N, K] = [" + s(N) + ", " + s(K) + "]");
}

void check_ne(Check& c, const char* name, const Tensor& t, int64_t N, int64_t E) {
  OP_CHECK(c, t.rows() == N && t.cols() == E,
           std::string(name) + " " + t.shape_str() + " must be [N, E] = [" + s(N) + ", " + s(E) + "]");
}

}  // namespace

// ---- gate ----------------------------------------------------------------------------------------------

static void check_gate(Check& c, const Tensor& topk_idx, const Tensor& topk_w, const Tensor& scores,
                       const Tensor& logits, const Tensor& bias, const GateOptions& opt) {
  c.f("logits", logits).stat("scores", scores).stat("topk_w", topk_w).stat_opt("bias", bias);
  c.index("topk_idx", topk_idx, DType::i32);
  const int64_t N = logits.rows(), E = logits.cols(), K = opt.top_k;
  check_ne(c, "scores", scores, N, E);
  check_nk(c, "topk_idx", topk_idx, N, K);
  check_nk(c, "topk_w", topk_w, N, K);
  OP_CHECK(c, bias.empty() || opt.topk_method == TopkMethod::noaux_tc,
           "a selection bias is only used by topk_method noaux_tc");
  OP_CHECK(c, bias.empty() || bias.numel() == E, "bias " + bias.shape_str() + " must be [E] = [" + s(E) + "]");
  OP_CHECK(c, opt.n_group >= 1 && E % opt.n_group == 0,
           "n_group " + s(opt.n_group) + " must divide the " + s(E) + " experts");
  OP_CHECK(c, opt.topk_group >= 1 && opt.topk_group <= opt.n_group,
           "topk_group " + s(opt.topk_group) + " must lie in [1, n_group = " + s(opt.n_group) + "]");
  const bool grouped = opt.topk_method != TopkMethod::greedy && opt.n_group > 1;
  const int64_t eligible = grouped ? E / opt.n_group * opt.topk_group : E;
  OP_CHECK(c, K >= 1 && K <= eligible,
           "top_k " + s(K) + " must lie in [1, " + s(eligible) + "] (experts left after group limiting)");
}

void moe_gate_forward(const Context& ctx, Tensor topk_idx, Tensor topk_w, Tensor scores, Tensor logits, Tensor bias,
                      const GateOptions& opt) {
  Check c(ctx, "moe_gate_forward");
  check_gate(c, topk_idx, topk_w, scores, logits, bias, opt);
  DS_DISPATCH_KERNEL(c, MOE_GATE, moe_gate_forward(ctx, topk_idx, topk_w, scores, logits, bias, opt));
}

void moe_gate_backward(const Context& ctx, Tensor d_logits, Tensor d_topk_w, Tensor d_scores_extra, Tensor scores,
                       Tensor topk_idx, const GateOptions& opt) {
  Check c(ctx, "moe_gate_backward");
  c.f("d_logits", d_logits).stat("scores", scores).stat("d_topk_w", d_topk_w);
  c.stat_opt("d_scores_extra", d_scores_extra);
  c.index("topk_idx", topk_idx, DType::i32);
  const int64_t N = scores.rows(), E = scores.cols();
  OP_CHECK(c, topk_idx.ndim == 2, "topk_idx " + topk_idx.shape_str() + " must be [N, K]");
  const int64_t K = topk_idx.dim(1);
  check_nk(c, "topk_idx", topk_idx, N, K);
  check_nk(c, "d_topk_w", d_topk_w, N, K);
  check_ne(c, "d_logits", d_logits, N, E);
  if (!d_scores_extra.empty()) check_ne(c, "d_scores_extra", d_scores_extra, N, E);
  DS_DISPATCH_KERNEL(c, MOE_GATE, moe_gate_backward(ctx, d_logits, d_topk_w, d_scores_extra, scores, topk_idx, opt));
}

static void check_balance(Check& c, const Tensor& scores, const Tensor& topk_idx, int64_t seq_len) {
  c.stat("scores", scores).index("topk_idx", topk_idx, DType::i32);
  OP_CHECK(c, topk_idx.ndim == 2 && topk_idx.dim(0) == scores.rows(),
           "topk_idx " + topk_idx.shape_str() + " must be [N, K] for scores " + scores.shape_str());
  OP_CHECK(c, seq_len >= 1 && scores.rows() % seq_len == 0,
           "seq_len " + s(seq_len) + " must divide the " + s(scores.rows()) + " rows of scores");
}

double moe_balance_loss_forward(const Context& ctx, Tensor scores, Tensor topk_idx, int64_t seq_len, double alpha) {
  Check c(ctx, "moe_balance_loss_forward");
  check_balance(c, scores, topk_idx, seq_len);
  DS_DISPATCH_KERNEL(c, MOE_GATE, moe_balance_loss_forward(ctx, scores, topk_idx, seq_len, alpha));
}

void moe_balance_loss_backward(const Context& ctx, Tensor d_scores, double d_loss, Tensor scores, Tensor topk_idx,
                               int64_t seq_len, double alpha) {
  Check c(ctx, "moe_balance_loss_backward");
  check_balance(c, scores, topk_idx, seq_len);
  c.stat("d_scores", d_scores);
  check_ne(c, "d_scores", d_scores, scores.rows(), scores.cols());
  DS_DISPATCH_KERNEL(c, MOE_GATE,
                     moe_balance_loss_backward(ctx, d_scores, d_loss, scores, topk_idx, seq_len, alpha));
}

void moe_bias_update(const Context& ctx, Tensor bias, Tensor load, double gamma) {
  Check c(ctx, "moe_bias_update");
  c.stat("bias", bias).index("load", load, DType::i64);
  OP_CHECK(c, load.numel() == bias.numel(), "load " + load.shape_str() + " must match bias " + bias.shape_str());
  DS_DISPATCH_KERNEL(c, MOE_GATE, moe_bias_update(ctx, bias, load, gamma));
}

void moe_bias_update_many(const Context& ctx, const std::vector<Tensor>& biases, const std::vector<Tensor>& loads,
                          double gamma, Tensor verdict) {
  Check c(ctx, "moe_bias_update_many");
  OP_CHECK(c, biases.size() == loads.size(),
           std::to_string(biases.size()) + " biases but " + std::to_string(loads.size()) + " loads");
  for (size_t i = 0; i < biases.size(); ++i) {
    c.stat("bias", biases[i]).index("load", loads[i], DType::i64);
    OP_CHECK(c, loads[i].numel() == biases[i].numel(),
             "load " + loads[i].shape_str() + " must match bias " + biases[i].shape_str() + " (layer " +
                 std::to_string(i) + ")");
  }
  c.verdict_opt(verdict);
  DS_DISPATCH_KERNEL(c, MOE_GATE, moe_bias_update_many(ctx, biases, loads, gamma, verdict));
}

// ---- dispatch / combine --------------------------------------------------------------------------------

static void check_route(Check& c, const Tensor& row_of, const Tensor& offsets, const Tensor& counts,
                        const Tensor& topk_idx, int64_t n_experts) {
  c.index("row_of", row_of, DType::i32).index("offsets", offsets, DType::i64).index_opt("counts", counts, DType::i64);
  c.index("topk_idx", topk_idx, DType::i32);
  OP_CHECK(c, topk_idx.ndim == 2, "topk_idx " + topk_idx.shape_str() + " must be [N, K]");
  check_nk(c, "row_of", row_of, topk_idx.dim(0), topk_idx.dim(1));
  OP_CHECK(c, n_experts >= 1, "n_experts must be >= 1, got " + s(n_experts));
  OP_CHECK(c, offsets.numel() == n_experts + 1, "offsets " + offsets.shape_str() + " must be [E + 1] = [" +
                                                    s(n_experts + 1) + "]");
  OP_CHECK(c, counts.empty() || counts.numel() == n_experts,
           "counts " + counts.shape_str() + " must be [E] = [" + s(n_experts) + "]");
  OP_CHECK(c, topk_idx.numel() < (int64_t(1) << 31), "N*K = " + s(topk_idx.numel()) + " rows overflow i32 row_of");
}

void moe_route(const Context& ctx, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx, int64_t n_experts) {
  Check c(ctx, "moe_route");
  check_route(c, row_of, offsets, counts, topk_idx, n_experts);
  DS_DISPATCH_KERNEL(c, MOE_DISPATCH, moe_route(ctx, row_of, offsets, counts, topk_idx, n_experts));
}

// row_of [N, K]; the permuted buffer has N*K rows of width D.
static void check_permuted(Check& c, const Tensor& row_of, const char* name, const Tensor& buf, int64_t D) {
  c.index("row_of", row_of, DType::i32);
  OP_CHECK(c, row_of.ndim == 2, "row_of " + row_of.shape_str() + " must be [N, K]");
  OP_CHECK(c, buf.rows() == row_of.numel() && buf.cols() == D,
           std::string(name) + " " + buf.shape_str() + " must be [N*K, D] = [" + s(row_of.numel()) + ", " + s(D) +
               "] for row_of " + row_of.shape_str());
}

static void check_tokens(Check& c, const char* name, const Tensor& t, const Tensor& row_of) {
  OP_CHECK(c, t.rows() == row_of.dim(0), std::string(name) + " " + t.shape_str() +
                                             " must have one row per token of row_of " + row_of.shape_str());
}

void moe_permute_forward(const Context& ctx, Tensor out, Tensor in, Tensor row_of) {
  Check c(ctx, "moe_permute_forward");
  c.f("out", out).f("in", in);
  check_permuted(c, row_of, "out", out, in.cols());
  check_tokens(c, "in", in, row_of);
  DS_DISPATCH_KERNEL(c, MOE_DISPATCH, moe_permute_forward(ctx, out, in, row_of));
}

void moe_dispatch_forward(const Context& ctx, Tensor xp, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx,
                          Tensor topk_w, Tensor scores, Tensor logits, Tensor x, Tensor router, Tensor bias,
                          const GateOptions& opt, Inputs weights_written) {
  Check c(ctx, "moe_dispatch_forward");
  c.f("x", x).f("router", router).f("xp", xp);
  OP_CHECK(c, router.ndim == 2 && router.cols() == x.cols() && logits.cols() == router.dim(0) &&
                  logits.rows() == x.rows(),
           "router " + router.shape_str() + " must be [E, D] for x " + x.shape_str() + " and logits " +
               logits.shape_str());
  check_gate(c, topk_idx, topk_w, scores, logits, bias, opt);
  check_route(c, row_of, offsets, counts, topk_idx, router.dim(0));
  check_permuted(c, row_of, "xp", xp, x.cols());
  check_tokens(c, "x", x, row_of);
  DS_DISPATCH_KERNEL(c, MOE_DISPATCH,
                     moe_dispatch_forward(ctx, xp, row_of, offsets, counts, topk_idx, topk_w, scores, logits, x, router,
                                          bias, opt, weights_written));
}

void moe_permute_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor row_of, Accum acc) {
  Check c(ctx, "moe_permute_backward");
  c.f("d_in", d_in).f("d_out", d_out);
  check_permuted(c, row_of, "d_out", d_out, d_in.cols());
  check_tokens(c, "d_in", d_in, row_of);
  DS_DISPATCH_KERNEL(c, MOE_DISPATCH, moe_permute_backward(ctx, d_in, d_out, row_of, acc));
}

void moe_unpermute_forward(const Context& ctx, Tensor out, Tensor expert_out, Tensor row_of, Tensor topk_w,
                           Accum acc) {
  Check c(ctx, "moe_unpermute_forward");
  c.f("out", out).f("expert_out", expert_out).stat("topk_w", topk_w);
  check_permuted(c, row_of, "expert_out", expert_out, out.cols());
  check_tokens(c, "out", out, row_of);
  check_nk(c, "topk_w", topk_w, row_of.dim(0), row_of.dim(1));
  DS_DISPATCH_KERNEL(c, MOE_DISPATCH, moe_unpermute_forward(ctx, out, expert_out, row_of, topk_w, acc));
}

void moe_unpermute_backward(const Context& ctx, Tensor d_expert_out, Tensor d_topk_w, Tensor d_out, Tensor expert_out,
                            Tensor row_of, Tensor topk_w) {
  Check c(ctx, "moe_unpermute_backward");
  c.f("d_out", d_out).f("expert_out", expert_out).stat("topk_w", topk_w).f_opt("d_expert_out", d_expert_out);
  c.stat_opt("d_topk_w", d_topk_w);
  check_permuted(c, row_of, "expert_out", expert_out, d_out.cols());
  check_tokens(c, "d_out", d_out, row_of);
  check_nk(c, "topk_w", topk_w, row_of.dim(0), row_of.dim(1));
  if (!d_expert_out.empty()) check_permuted(c, row_of, "d_expert_out", d_expert_out, d_out.cols());
  if (!d_topk_w.empty()) check_nk(c, "d_topk_w", d_topk_w, row_of.dim(0), row_of.dim(1));
  DS_DISPATCH_KERNEL(c, MOE_DISPATCH,
                     moe_unpermute_backward(ctx, d_expert_out, d_topk_w, d_out, expert_out, row_of, topk_w));
}

void moe_combine_forward(const Context& ctx, Tensor out, Tensor resid, Tensor shared, Tensor expert_out, Tensor row_of,
                         Tensor topk_w, Tensor norm_out, Tensor norm_weight, double eps, Inputs routing) {
  Check c(ctx, "moe_combine_forward");
  c.f("out", out).f("resid", resid).f_opt("shared", shared).f("expert_out", expert_out).stat("topk_w", topk_w);
  check_permuted(c, row_of, "expert_out", expert_out, out.cols());
  check_tokens(c, "out", out, row_of);
  check_nk(c, "topk_w", topk_w, row_of.dim(0), row_of.dim(1));
  OP_CHECK(c, same_shape(resid, out) || resid.numel() == out.numel(),
           "resid " + resid.shape_str() + " must match out " + out.shape_str());
  OP_CHECK(c, shared.empty() || shared.numel() == out.numel(),
           "shared " + shared.shape_str() + " must match out " + out.shape_str());
  if (!norm_out.empty()) {
    c.f("norm_out", norm_out).f("norm_weight", norm_weight);
    OP_CHECK(c, same_shape(norm_out, out) || (norm_out.numel() == out.numel() && norm_out.cols() == out.cols()),
             "norm_out " + norm_out.shape_str() + " must match out " + out.shape_str());
    OP_CHECK(c, norm_weight.numel() == out.cols(),
             "norm_weight " + norm_weight.shape_str() + " must be [" + std::to_string(out.cols()) + "]");
    OP_CHECK(c, eps >= 0, "eps must be >= 0, got " + std::to_string(eps));
  }
  DS_DISPATCH_KERNEL(c, MOE_DISPATCH, moe_combine_forward(ctx, out, resid, shared, expert_out, row_of, topk_w,
                                                          norm_out, norm_weight, eps, routing));
}

// ---- grouped expert linear -------------------------------------------------------------------------------

// weight [E, N, K] and offsets [E + 1]; rows of in/out/d_in/d_out are the M permuted rows.
static void check_grouped(Check& c, const Tensor& weight, const Tensor& offsets) {
  c.index("offsets", offsets, DType::i64);
  OP_CHECK(c, weight.ndim == 3, "weight " + weight.shape_str() + " must be [E, N, K]");
  OP_CHECK(c, offsets.numel() == weight.dim(0) + 1,
           "offsets " + offsets.shape_str() + " must be [E + 1] = [" + s(weight.dim(0) + 1) + "] for weight " +
               weight.shape_str());
}

void grouped_matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Tensor offsets, Accum acc,
                            Inputs offsets_written) {
  Check c(ctx, "grouped_matmul_forward");
  c.f("in", in).f("weight", weight).wide("out", out);
  check_grouped(c, weight, offsets);
  OP_CHECK(c, in.cols() == weight.dim(2),
           "weight " + weight.shape_str() + " must be [E, N, K] with K = last dim of in " + in.shape_str());
  OP_CHECK(c, out.rows() == in.rows() && out.cols() == weight.dim(1),
           "out " + out.shape_str() + " must be [M, N] for in " + in.shape_str() + " and weight " + weight.shape_str());
  DS_DISPATCH_KERNEL(c, GROUPED_MATMUL, grouped_matmul_forward(ctx, out, in, weight, offsets, acc, offsets_written));
}

void grouped_swiglu_forward(const Context& ctx, Tensor out, Tensor in, Tensor gate_w, Tensor up_w, Tensor offsets,
                            Tensor gate_out, Tensor up_out) {
  Check c(ctx, "grouped_swiglu_forward");
  c.f("in", in).f("gate_w", gate_w).f("up_w", up_w).f("out", out);
  for (const auto& [name, kept] : {std::pair{"gate_out", gate_out}, std::pair{"up_out", up_out}}) {
    if (kept.empty()) continue;
    c.f(name, kept);
    OP_CHECK(c, same_shape(kept, out) && kept.dtype == out.dtype,
             std::string(name) + " " + kept.shape_str() + " must have out's shape and dtype " + out.shape_str());
    OP_CHECK(c, kept.data != out.data, std::string(name) + " must not alias out");
  }
  OP_CHECK(c, gate_out.empty() || gate_out.data != up_out.data, "gate_out and up_out must not alias each other");
  check_grouped(c, gate_w, offsets);
  OP_CHECK(c, same_shape(gate_w, up_w),
           "up_w " + up_w.shape_str() + " must have the shape of gate_w " + gate_w.shape_str());
  OP_CHECK(c, in.cols() == gate_w.dim(2),
           "gate_w " + gate_w.shape_str() + " must be [E, F, K] with K = last dim of in " + in.shape_str());
  OP_CHECK(c, out.rows() == in.rows() && out.cols() == gate_w.dim(1),
           "out " + out.shape_str() + " must be [M, F] for in " + in.shape_str() + " and gate_w " + gate_w.shape_str());
  DS_DISPATCH_KERNEL(c, GROUPED_MATMUL, grouped_swiglu_forward(ctx, out, in, gate_w, up_w, offsets, gate_out, up_out));
}

void grouped_matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                             Tensor offsets, Accum acc_in, Accum acc_w) {
  Check c(ctx, "grouped_matmul_backward");
  c.f("d_out", d_out).f("weight", weight).wide_opt("d_in", d_in).wide_opt("d_weight", d_weight);
  check_grouped(c, weight, offsets);
  OP_CHECK(c, d_out.cols() == weight.dim(1),
           "weight " + weight.shape_str() + " must be [E, N, K] with N = last dim of d_out " + d_out.shape_str());
  if (!d_in.empty())
    OP_CHECK(c, d_in.rows() == d_out.rows() && d_in.cols() == weight.dim(2),
             "d_in " + d_in.shape_str() + " must be [M, K] for d_out " + d_out.shape_str() + " and weight " +
                 weight.shape_str());
  if (!d_weight.empty()) {
    c.f("in", in);
    OP_CHECK(c, same_shape(d_weight, weight),
             "d_weight " + d_weight.shape_str() + " must match weight " + weight.shape_str());
    OP_CHECK(c, in.rows() == d_out.rows() && in.cols() == weight.dim(2),
             "in " + in.shape_str() + " must be [M, K] for d_out " + d_out.shape_str() + " and weight " +
                 weight.shape_str());
  }
  DS_DISPATCH_KERNEL(c, GROUPED_MATMUL,
                     grouped_matmul_backward(ctx, d_in, d_weight, d_out, in, weight, offsets, acc_in, acc_w));
}

void grouped_matmul_swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor weight,
                                    Tensor offsets, Tensor gate, Tensor up) {
  Check c(ctx, "grouped_matmul_swiglu_backward");
  c.f("d_out", d_out).f("weight", weight).f("gate", gate).f("up", up).f("d_gate", d_gate).f("d_up", d_up);
  check_grouped(c, weight, offsets);
  OP_CHECK(c, d_out.cols() == weight.dim(1),
           "weight " + weight.shape_str() + " must be [E, N, F] with N = last dim of d_out " + d_out.shape_str());
  for (const auto& [name, t] : {std::pair{"gate", gate}, std::pair{"up", up}, std::pair{"d_gate", d_gate},
                                std::pair{"d_up", d_up}}) {
    OP_CHECK(c, t.rows() == d_out.rows() && t.cols() == weight.dim(2),
             std::string(name) + " " + t.shape_str() + " must be [M, F] for d_out " + d_out.shape_str() +
                 " and weight " + weight.shape_str());
    OP_CHECK(c, t.dtype == d_out.dtype, std::string(name) + " must have d_out's dtype");
  }
  OP_CHECK(c, d_gate.data != d_up.data, "d_gate and d_up must not alias each other");
  for (const Tensor& in : {gate, up, d_out})
    OP_CHECK(c, in.data != d_gate.data && in.data != d_up.data, "d_gate and d_up must not alias an input");
  DS_DISPATCH_KERNEL(c, GROUPED_MATMUL, grouped_matmul_swiglu_backward(ctx, d_gate, d_up, d_out, weight, offsets, gate,
                                                                       up));
}

void grouped_matmul_d_in_pair(const Context& ctx, Tensor d_in, Tensor d_out1, Tensor w1, Tensor d_out2, Tensor w2,
                              Tensor offsets) {
  Check c(ctx, "grouped_matmul_d_in_pair");
  c.f("d_out1", d_out1).f("w1", w1).f("d_out2", d_out2).f("w2", w2).wide("d_in", d_in);
  check_grouped(c, w1, offsets);
  OP_CHECK(c, same_shape(w1, w2), "w2 " + w2.shape_str() + " must have the shape of w1 " + w1.shape_str());
  OP_CHECK(c, same_shape(d_out1, d_out2),
           "d_out2 " + d_out2.shape_str() + " must have the shape of d_out1 " + d_out1.shape_str());
  OP_CHECK(c, d_out1.cols() == w1.dim(1),
           "w1 " + w1.shape_str() + " must be [E, N, K] with N = last dim of d_out1 " + d_out1.shape_str());
  OP_CHECK(c, d_in.rows() == d_out1.rows() && d_in.cols() == w1.dim(2),
           "d_in " + d_in.shape_str() + " must be [M, K] for d_out1 " + d_out1.shape_str() + " and w1 " +
               w1.shape_str());
  DS_DISPATCH_KERNEL(c, GROUPED_MATMUL, grouped_matmul_d_in_pair(ctx, d_in, d_out1, w1, d_out2, w2, offsets));
}

}  // namespace ds

// ---- MLA decode (paged latent cache) ----------------------------------------------------------------------

namespace ds {

void kv_cache_write(const Context& ctx, Tensor kv_pool, Tensor slot_rows, Tensor c, Tensor k_pe) {
  opcheck::Check chk(ctx, "kv_cache_write");
  chk.f("kv_pool", kv_pool).f("c", c).f("k_pe", k_pe).index("slot_rows", slot_rows, DType::i32);
  OP_CHECK(chk, kv_pool.ndim == 3, "kv_pool " + kv_pool.shape_str() + " must be [P, S, C]");
  OP_CHECK(chk, c.rows() == slot_rows.numel() && k_pe.rows() == slot_rows.numel(),
           "c, k_pe and slot_rows must have one row per token");
  OP_CHECK(chk, c.cols() + k_pe.cols() == kv_pool.dim(2),
           "c " + c.shape_str() + " + k_pe " + k_pe.shape_str() + " must fill a slot of " + kv_pool.shape_str());
  DS_DISPATCH_KERNEL(chk, MLA_DECODE, kv_cache_write(ctx, kv_pool, slot_rows, c, k_pe));
}

void mla_latent_forward(const Context& ctx, Tensor q_latent, Tensor kv_pool, Tensor slot_rows, Tensor a, Tensor q_norm,
                        Tensor kv_norm, double eps, Tensor pos, Tensor inv_freq, double attn_factor) {
  opcheck::Check chk(ctx, "mla_latent_forward");
  chk.f("kv_pool", kv_pool).f("a", a).f("kv_norm", kv_norm).f_opt("q_latent", q_latent).f_opt("q_norm", q_norm);
  chk.index("slot_rows", slot_rows, DType::i32).index("pos", pos, DType::i32).stat("inv_freq", inv_freq);
  OP_CHECK(chk, kv_pool.ndim == 3, "kv_pool " + kv_pool.shape_str() + " must be [P, S, C]");
  const int64_t n = slot_rows.numel(), Q = q_norm.empty() ? 0 : q_norm.numel(), R = kv_norm.numel(), dr = kv_pool.dim(2) - R;
  OP_CHECK(chk, q_latent.empty() == (Q == 0), "q_latent and q_norm go together");
  OP_CHECK(chk, dr > 0 && dr == 2 * inv_freq.numel(),
           "kv_pool " + kv_pool.shape_str() + " minus kv_norm " + kv_norm.shape_str() + " must leave the rope dim " +
               std::to_string(2 * inv_freq.numel()));
  OP_CHECK(chk, a.rows() == n && a.cols() == Q + R + dr && pos.numel() == n,
           "a " + a.shape_str() + " must be [n, Q + R + dr] = [" + std::to_string(n) + ", " + std::to_string(Q + R + dr) +
               "] with one pos and slot row per token");
  OP_CHECK(chk, Q == 0 || (q_latent.rows() == n && q_latent.cols() == Q),
           "q_latent " + q_latent.shape_str() + " must be [n, Q] with Q = q_norm " + q_norm.shape_str());
  OP_CHECK(chk, eps >= 0, "eps must be >= 0");
  DS_DISPATCH(chk, mla_latent_forward(ctx, q_latent, kv_pool, slot_rows, a, q_norm, kv_norm, eps, pos, inv_freq,
                                      attn_factor));
}

void mla_decode_attention(const Context& ctx, Tensor out, Tensor lse, Tensor q_lat, Tensor kv_pool, Tensor block_table,
                          Tensor kv_len, double scale, Inputs cache) {
  opcheck::Check chk(ctx, "mla_decode_attention");
  chk.f("out", out).f("q_lat", q_lat).f("kv_pool", kv_pool).stat_opt("lse", lse);
  chk.index("block_table", block_table, DType::i32).index("kv_len", kv_len, DType::i32);
  OP_CHECK(chk, q_lat.ndim == 3 && out.ndim == 3 && kv_pool.ndim == 3 && block_table.ndim == 2,
           "q_lat [n, H, C], out [n, H, R], kv_pool [P, S, C], block_table [n, B]");
  const int64_t n = q_lat.dim(0), H = q_lat.dim(1), C = q_lat.dim(2);
  OP_CHECK(chk, kv_pool.dim(2) == C, "q_lat " + q_lat.shape_str() + " and kv_pool " + kv_pool.shape_str() + " differ in C");
  OP_CHECK(chk, out.dim(0) == n && out.dim(1) == H && out.dim(2) <= C, "out " + out.shape_str() + " must be [n, H, R<=C]");
  OP_CHECK(chk, block_table.dim(0) == n && kv_len.numel() == n, "block_table and kv_len need one row per query");
  OP_CHECK(chk, lse.empty() || lse.numel() == n * H, "lse must be [n, H]");
  DS_DISPATCH_KERNEL(chk, MLA_DECODE,
                     mla_decode_attention(ctx, out, lse, q_lat, kv_pool, block_table, kv_len, scale, cache));
}

}  // namespace ds
