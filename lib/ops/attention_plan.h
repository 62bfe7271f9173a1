#pragma once
// How the attention ops prefer to be called on a context, for callers that schedule them over streams.
#include "tensor/context.h"

namespace ds {

// Whether mla_attention_backward on ctx is best called once for d_q and d_kv / d_k_pe together rather than split
// by output (two calls, one for each group, e.g. on two streams): true on CUDA where its dQ kernel reads the dS
// tiles its dK/dV kernel stores (kernels/attention.cu, dQ variant 7), so a d_q-alone call would recompute them.
bool mla_attention_backward_one_call(const Context& ctx);

}  // namespace ds
