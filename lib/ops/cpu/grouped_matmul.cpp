// Grouped expert linear: one matmul per expert over its contiguous block of rows. The CPU reference is the
// per-expert loop itself (the same BLAS calls on the same row blocks as a caller's loop would make), so the MoE
// layer's results are bit-identical to the loop it replaces; the CUDA twin runs all experts in one launch.
#include <string>

#include "ops/cpu/cpu_ops.h"
#include "tensor/arena.h"

namespace ds::cpu {

namespace {

// offsets [E + 1] must partition the M rows: 0 = o[0] <= o[1] <= ... <= o[E] = M.
const int64_t* checked_offsets(const Tensor& offsets, int64_t M, const char* op) {
  const int64_t* o = offsets.ptr<int64_t>();
  const int64_t E = offsets.numel() - 1;
  DS_CHECK(o[0] == 0 && o[E] == M, std::string(op) + ": offsets must run from 0 to the " + std::to_string(M) +
                                       " rows, got " + std::to_string(o[0]) + " .. " + std::to_string(o[E]));
  for (int64_t e = 0; e < E; ++e)
    DS_CHECK(o[e] <= o[e + 1], std::string(op) + ": offsets decrease at expert " + std::to_string(e));
  return o;
}

}  // namespace

void grouped_matmul_forward(const Context& ctx, Tensor out, Tensor in, Tensor weight, Tensor offsets, Accum acc,
                            Inputs /*offsets_written*/) {
  const int64_t M = in.rows(), K = in.cols(), E = weight.dim(0);
  const int64_t* o = checked_offsets(offsets, M, "grouped_matmul_forward");
  const Tensor in2 = in.view({M, K}), out2 = out.view({M, out.cols()});
  for (int64_t e = 0; e < E; ++e) {
    if (o[e] == o[e + 1]) continue;
    cpu::matmul_forward(ctx, out2.slice0(o[e], o[e + 1]), in2.slice0(o[e], o[e + 1]), weight.index0(e), acc,
                        Inputs::fresh);
  }
}

void grouped_matmul_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                             Tensor offsets, Accum acc_in, Accum acc_w) {
  const int64_t M = d_out.rows(), E = weight.dim(0);
  const int64_t* o = checked_offsets(offsets, M, "grouped_matmul_backward");
  // written over: zeros, then the sums added (the bits of a zeroed gradient accumulated onto)
  if (!d_weight.empty() && acc_w == Accum::overwrite) device_memset0(d_weight.device, d_weight.data, d_weight.nbytes());
  const Tensor d_out2 = d_out.view({M, d_out.cols()});
  const Tensor d_in2 = d_in.empty() ? Tensor{} : d_in.view({M, d_in.cols()});
  const Tensor in2 = in.empty() ? Tensor{} : in.view({M, in.cols()});
  for (int64_t e = 0; e < E; ++e) {
    if (o[e] == o[e + 1]) continue;
    const int64_t r0 = o[e], r1 = o[e + 1];
    cpu::matmul_backward(ctx, d_in2.empty() ? Tensor{} : d_in2.slice0(r0, r1),
                         d_weight.empty() ? Tensor{} : d_weight.index0(e), d_out2.slice0(r0, r1),
                         in2.empty() ? Tensor{} : in2.slice0(r0, r1), weight.index0(e), acc_in);
  }
}

}  // namespace ds::cpu
