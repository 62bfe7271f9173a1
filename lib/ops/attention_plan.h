#pragma once
// The MLA attention backward in two calls, for a caller that forks between them (the training block runs the
// key/value branch on a side stream beside dQ, lib/model/mla.cpp). Where dQ comes from the dS tiles the dK/dV
// kernel stores (CUDA, sm_90a, kernels/attention.cu's dQ variant 7), the two calls share them through `ds`, a buffer
// of mla_attention_ds_bytes bytes the caller owns: the first call (d_kv and d_k_pe) fills it, the second (d_q)
// reads it, and both give the bits of one mla_attention_backward call. Elsewhere mla_attention_ds_bytes is 0 and
// each call is mla_attention_backward for its outputs (d_q alone recomputes dS).
#include <cstddef>

#include "tensor/tensor.h"
#include "tensor/context.h"

namespace ds {

// Bytes of dS scratch for mla_attention_backward_ds on these arguments (mla_attention_backward's), 0 where the
// split calls would not share it.
size_t mla_attention_ds_bytes(const Context& ctx, Tensor q, Tensor kv, Tensor k_pe, Tensor out, double scale);

// mla_attention_backward for d_kv and d_k_pe alone (d_q empty), or for d_q alone (d_kv, d_k_pe empty) after that
// call on the same inputs and the same ds, in stream order.
void mla_attention_backward_ds(const Context& ctx, Tensor ds, Tensor d_q, Tensor d_kv, Tensor d_k_pe, Tensor d_out,
                               Tensor out, Tensor lse, Tensor q, Tensor kv, Tensor k_pe, double scale);

}  // namespace ds
