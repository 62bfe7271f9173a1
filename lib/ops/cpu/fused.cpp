// The fusions of ops.h (decode's, and the routed experts' gate/up + SwiGLU) on the CPU: each is the sequence of
// reference ops it replaces, run on host scratch (or on the caller's tensors where it keeps the intermediates),
// so the fused and unfused paths give the same values bit for bit (the CUDA twins fuse the work into one kernel
// and keep the same rounding steps).
#include <vector>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

namespace {

// Host scratch tensor of the given dtype and shape (8-byte aligned).
struct Scratch {
  std::vector<double> mem;
  Tensor t;
  Scratch(DType dt, std::initializer_list<int64_t> dims) : t(nullptr, dt, dims) {
    mem.resize(t.nbytes() / 8 + 1);
    t.data = mem.data();
  }
};

}  // namespace

void add_rmsnorm_forward(const Context& ctx, Tensor sum, Tensor out, Tensor a, Tensor b, Tensor weight, double eps,
                         Tensor rstd) {
  cpu::add(ctx, sum, a, b);
  cpu::rmsnorm_forward(ctx, out, rstd, sum, weight, eps);
}

void mla_latent_forward(const Context& ctx, Tensor q_latent, Tensor kv_pool, Tensor slot_rows, Tensor a, Tensor q_norm,
                        Tensor kv_norm, double eps, Tensor pos, Tensor inv_freq, double attn_factor) {
  const int64_t n = slot_rows.numel(), Q = q_norm.empty() ? 0 : q_norm.numel(), R = kv_norm.numel(), dr = kv_pool.dim(2) - R;
  const DType dt = a.dtype;
  if (Q > 0) {
    Scratch q_raw(dt, {n, Q});
    cpu::copy_cols(ctx, q_raw.t, 0, a, 0, Q, Accum::overwrite);
    cpu::rmsnorm_forward(ctx, q_latent, Tensor{}, q_raw.t, q_norm, eps);
  }
  Scratch c_raw(dt, {n, R}), c(dt, {n, R}), kpe_raw(dt, {n, 1, dr}), kpe(dt, {n, 1, dr});
  cpu::copy_cols(ctx, c_raw.t, 0, a, Q, R, Accum::overwrite);
  cpu::rmsnorm_forward(ctx, c.t, Tensor{}, c_raw.t, kv_norm, eps);
  cpu::copy_cols(ctx, kpe_raw.t.view({n, dr}), 0, a, Q + R, dr, Accum::overwrite);
  cpu::rope_forward(ctx, kpe.t, kpe_raw.t, pos, inv_freq, attn_factor);
  cpu::kv_cache_write(ctx, kv_pool, slot_rows, c.t, kpe.t.view({n, dr}));
}

void swiglu_pair_forward(const Context& ctx, Tensor out, Tensor gate_up) {
  const int64_t N = out.rows(), F = out.cols();
  Scratch g(out.dtype, {N, F}), u(out.dtype, {N, F});
  cpu::copy_cols(ctx, g.t, 0, gate_up, 0, F, Accum::overwrite);
  cpu::copy_cols(ctx, u.t, 0, gate_up, F, F, Accum::overwrite);
  cpu::swiglu_forward(ctx, out, g.t, u.t);
}

void grouped_matmul_d_in_pair(const Context& ctx, Tensor d_in, Tensor d_out1, Tensor w1, Tensor d_out2, Tensor w2,
                              Tensor offsets) {
  cpu::grouped_matmul_backward(ctx, d_in, Tensor{}, d_out1, Tensor{}, w1, offsets, Accum::overwrite);
  cpu::grouped_matmul_backward(ctx, d_in, Tensor{}, d_out2, Tensor{}, w2, offsets, Accum::add);
}

void moe_combine_forward(const Context& ctx, Tensor out, Tensor resid, Tensor shared, Tensor expert_out, Tensor row_of,
                         Tensor topk_w, Tensor norm_out, Tensor norm_weight, double eps, Inputs /*routing*/) {
  Scratch ffn(out.dtype, {out.rows(), out.cols()});
  cpu::moe_unpermute_forward(ctx, ffn.t, expert_out, row_of, topk_w, Accum::overwrite);
  if (!shared.empty()) cpu::axpy(ctx, ffn.t, 1.0, shared);
  cpu::add(ctx, out, resid, ffn.t);
  if (!norm_out.empty()) cpu::rmsnorm_forward(ctx, norm_out, Tensor{}, out, norm_weight, eps);
}

void moe_dispatch_forward(const Context& ctx, Tensor xp, Tensor row_of, Tensor offsets, Tensor counts, Tensor topk_idx,
                          Tensor topk_w, Tensor scores, Tensor logits, Tensor x, Tensor router, Tensor bias,
                          const GateOptions& opt, Inputs /*weights_written*/) {
  cpu::matmul_forward(ctx, logits, x, router, Accum::overwrite, Inputs::fresh);
  cpu::moe_gate_forward(ctx, topk_idx, topk_w, scores, logits, bias, opt);
  cpu::moe_route(ctx, row_of, offsets, counts, topk_idx, router.dim(0));
  cpu::moe_permute_forward(ctx, xp, x, row_of);
}

void grouped_swiglu_forward(const Context& ctx, Tensor out, Tensor in, Tensor gate_w, Tensor up_w, Tensor offsets,
                            Tensor gate_out, Tensor up_out) {
  const int64_t M = out.rows(), F = out.cols();
  Scratch g(out.dtype, {gate_out.empty() ? M : 0, F}), u(out.dtype, {up_out.empty() ? M : 0, F});
  const Tensor gt = gate_out.empty() ? g.t : gate_out, ut = up_out.empty() ? u.t : up_out;
  cpu::grouped_matmul_forward(ctx, gt, in, gate_w, offsets, Accum::overwrite, Inputs::fresh);
  cpu::grouped_matmul_forward(ctx, ut, in, up_w, offsets, Accum::overwrite, Inputs::fresh);
  cpu::swiglu_forward(ctx, out, gt, ut);
}

void grouped_matmul_swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor weight,
                                    Tensor offsets, Tensor gate, Tensor up) {
  Scratch d_act(d_gate.dtype, {d_gate.rows(), d_gate.cols()});
  cpu::grouped_matmul_backward(ctx, d_act.t, Tensor{}, d_out, Tensor{}, weight, offsets, Accum::overwrite, Accum::add);
  cpu::swiglu_backward(ctx, d_gate, d_up, d_act.t, gate, up);
}

}  // namespace ds::cpu
