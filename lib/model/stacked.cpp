// Projections stacked in memory (layers.h): two linears that read the same input and whose weights lie one after
// the other run as one product.
#include <algorithm>

#include "core/env.h"
#include "model/layers.h"
#include "ops/ops.h"

namespace ds {

bool fused_proj_default() {
  static const bool on = env_switch("DS_FUSED_PROJ");
  return on;
}

Tensor adjacent_rows(const Tensor& a, const Tensor& b) {
  if (a.empty() || b.empty() || a.ndim != 2 || b.ndim != 2 || a.dtype != b.dtype || !(a.device == b.device) ||
      a.cols() != b.cols())
    return Tensor{};
  if (b.data != static_cast<const char*>(a.data) + a.nbytes()) return Tensor{};
  return Tensor(a.data, a.dtype, {a.rows() + b.rows(), a.cols()}, a.device);
}

Tensor stacked_weight(const LayerEnv& env, const Tensor& w1, const Tensor& w2) {
  if (!env.fuse_proj || env.inference) return Tensor{};
  return adjacent_rows(w1, w2);
}

void stacked_matmul_backward(const Context& ctx, Workspace& ws, Tensor d_x, Accum acc, Tensor dw1, Tensor dw2,
                             Tensor d_out, Tensor x, Tensor w1, Tensor w2) {
  const Tensor w = adjacent_rows(w1, w2), dw = adjacent_rows(dw1, dw2);
  DS_CHECK(!w.empty(), "stacked_matmul_backward: the weights " + w1.shape_str() + " and " + w2.shape_str() +
                           " are not adjacent");
  if (!dw.empty()) return matmul_backward(ctx, d_x, dw, d_out, x, w, acc);
  // the gradients lie apart: d_x in one product, each weight's gradient from a copy of its columns of d_out
  matmul_backward(ctx, d_x, Tensor{}, d_out, x, w, acc);
  const int64_t M = d_out.rows(), n1 = w1.dim(0), n2 = w2.dim(0);
  Tensor part = ws.alloc("d_stacked_part", d_out.dtype, {M * std::max(n1, n2)});
  const Tensor p1 = part.slice0(0, M * n1).view({M, n1}), p2 = part.slice0(0, M * n2).view({M, n2});
  copy_cols(ctx, p1, 0, d_out, 0, n1);
  matmul_backward(ctx, Tensor{}, dw1, p1, x, w1);
  copy_cols(ctx, p2, 0, d_out, n1, n2);
  matmul_backward(ctx, Tensor{}, dw2, p2, x, w2);
}

}  // namespace ds
