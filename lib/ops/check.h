#pragma once
// Argument checks and device dispatch shared by ops.cpp and ops_moe.cpp (internal to lib/ops). A failed check is
// a programming or shape error: DS_CHECK throws a runtime error naming the op, the argument, its shape, dtype and
// device.
//
// Float dtypes. On the CPU every float tensor of a call has the call's dtype, f32 or f64 (f64 for the gradient
// checks). On CUDA the call's dtype is f32 or bf16 (mixed precision, kernels/cuda_ops.h), and some tensors have
// their own rule, stated by the method that registers them:
//   f(name, t)     the call's dtype (CPU: f32/f64; CUDA: f32/bf16). The first one registered fixes it.
//   stat(name, t)  CUDA: always f32 (saved statistics rstd/lse, per-row losses, gate scores and routing weights,
//                  optimizer state, row scales, inv_freq); CPU: the call's dtype.
//   wide(name, t)  CUDA: f32 or the call's dtype (outputs that may be kept wider than the inputs: parameter
//                  gradients, matmul outputs); CPU: the call's dtype. Register it after the call's f() tensors.
//   narrow(name, t) bf16 or the call's dtype when that is f32, on either device (an output rounded once to the
//                  dtype of the op that reads it: cross_entropy_backward's d_logits for the bf16 head); the call's
//                  dtype otherwise. Register it after the call's f() tensors.
//
// Dispatch. DS_DISPATCH(chk, op(args)) returns cpu::op(args) on the CPU and cuda::op(args) on a GPU (a usage error
// when the build has no CUDA or the device does not exist). DS_DISPATCH_KERNEL(chk, FILE, op(args)) does the same
// for an op whose kernel file is not built yet: it stays a usage error "op X: CUDA kernel not built yet" until
// kernels/CMakeLists.txt builds kernels/<file>.cu, which defines DS_CUDA_KERNEL_<FILE>=1. `if (c.cpu()) cpu::op(..)`
// (CPU only: a usage error on CUDA) is the form for ops that have no CUDA twin at all.
#include <string>

#include "tensor/context.h"
#include "tensor/tensor.h"

#include "kernels/cuda_ops.h"  // declarations only; linked when DS_HAVE_CUDA
#if DS_HAVE_CUDA
#include "kernels/cuda_device.h"
#endif

// Kernel files of other work streams; kernels/CMakeLists.txt defines each as 1 once the file is built.
#ifndef DS_CUDA_KERNEL_ATTENTION
#define DS_CUDA_KERNEL_ATTENTION 0
#endif
#ifndef DS_CUDA_KERNEL_MLA_DECODE
#define DS_CUDA_KERNEL_MLA_DECODE 0
#endif
#ifndef DS_CUDA_KERNEL_MOE_GATE
#define DS_CUDA_KERNEL_MOE_GATE 0
#endif
#ifndef DS_CUDA_KERNEL_MOE_DISPATCH
#define DS_CUDA_KERNEL_MOE_DISPATCH 0
#endif
#ifndef DS_CUDA_KERNEL_GROUPED_MATMUL
#define DS_CUDA_KERNEL_GROUPED_MATMUL 0
#endif

namespace ds::opcheck {

#if DS_HAVE_CUDA
inline constexpr bool kHaveCuda = true;
#else
inline constexpr bool kHaveCuda = false;
#endif

inline std::string desc(const Tensor& t) {
  return t.shape_str() + " " + dtype_name(t.dtype) + " on " + t.device.str();
}
inline std::string rc(const Tensor& t) {
  return "(rows " + std::to_string(t.rows()) + ", cols " + std::to_string(t.cols()) + ")";
}

// Usage error unless `device` is a CUDA device this process can use (the count is read once).
inline void require_cuda_device(const char* op, const Device& device) {
#if DS_HAVE_CUDA
  static const int count = cuda::device_count();
  if (device.index < 0 || device.index >= count)
    throw_usage(std::string("op ") + op + ": no CUDA device " + device.str() + " (" + std::to_string(count) +
                " usable on this machine)");
#else
  (void)device;
  throw_usage(std::string("op ") + op +
              ": CUDA kernels not built yet: this build of ds has no CUDA support (rebuild where nvcc is present)");
#endif
}

// The checks of one op call.
struct Check {
  const Context& ctx;
  const char* op;
  DType fdtype = DType::f32;
  bool have_float = false;

  Check(const Context& c, const char* name) : ctx(c), op(name) {}

  bool on_cuda() const { return ctx.device.is_cuda(); }

  // A float tensor with the call's dtype, on the context's device.
  Check& f(const char* name, const Tensor& t) {
    DS_CHECK(!t.empty(), std::string(op) + ": " + name + " is required");
    if (on_cuda())
      DS_CHECK(t.dtype == DType::f32 || t.dtype == DType::bf16,
               std::string(op) + ": " + name + " " + desc(t) + " must be f32 or bf16 on CUDA");
    else
      DS_CHECK(t.dtype == DType::f32 || t.dtype == DType::f64,
               std::string(op) + ": " + name + " " + desc(t) + " must be f32 or f64");
    if (!have_float) {
      fdtype = t.dtype;
      have_float = true;
    }
    DS_CHECK(t.dtype == fdtype, std::string(op) + ": " + name + " " + desc(t) + " must have the call's float dtype " +
                                    dtype_name(fdtype));
    return device(name, t);
  }
  Check& f_opt(const char* name, const Tensor& t) { return t.empty() ? *this : f(name, t); }

  // f32 on CUDA whatever the call's dtype; the call's dtype on the CPU.
  Check& stat(const char* name, const Tensor& t) {
    if (!on_cuda()) return f(name, t);
    DS_CHECK(!t.empty(), std::string(op) + ": " + name + " is required");
    DS_CHECK(t.dtype == DType::f32, std::string(op) + ": " + name + " " + desc(t) + " must be f32 on CUDA");
    return device(name, t);
  }
  Check& stat_opt(const char* name, const Tensor& t) { return t.empty() ? *this : stat(name, t); }

  // f32 or the call's dtype on CUDA; the call's dtype on the CPU.
  Check& wide(const char* name, const Tensor& t) {
    if (!on_cuda() || t.empty() || t.dtype != DType::f32) return f(name, t);
    return device(name, t);
  }
  Check& wide_opt(const char* name, const Tensor& t) { return t.empty() ? *this : wide(name, t); }

  // bf16 when the call's dtype is f32 (CPU too: the reference of the rounding); the call's dtype otherwise.
  Check& narrow(const char* name, const Tensor& t) {
    if (t.empty() || t.dtype != DType::bf16 || (have_float && fdtype == DType::bf16)) return f(name, t);
    DS_CHECK(have_float && fdtype == DType::f32, std::string(op) + ": " + name + " " + desc(t) +
                                                     " may be bf16 only when the call's float dtype is f32, not " +
                                                     dtype_name(fdtype));
    return device(name, t);
  }

  // An index tensor of dtype dt on the context's device.
  Check& index(const char* name, const Tensor& t, DType dt) {
    DS_CHECK(!t.empty(), std::string(op) + ": " + name + " is required");
    DS_CHECK(t.dtype == dt, std::string(op) + ": " + name + " " + desc(t) + " must be " + dtype_name(dt));
    return device(name, t);
  }
  Check& index_opt(const char* name, const Tensor& t, DType dt) { return t.empty() ? *this : index(name, t, dt); }
  // grad_clip_verdict's output (f64 [3] on the context's device), where an op may read one
  Check& verdict_opt(const Tensor& t) {
    if (t.empty()) return *this;
    DS_CHECK(t.dtype == DType::f64 && t.numel() == 3, std::string(op) + ": verdict " + desc(t) + " must be f64 [3]");
    return device("verdict", t);
  }
  Check& device(const char* name, const Tensor& t) {
    DS_CHECK(t.device == ctx.device, std::string(op) + ": " + name + " " + desc(t) +
                                         " is not on the context's device " + ctx.device.str());
    return *this;
  }

  // Dispatch for ops with a CUDA twin: false on the CPU; true on a usable GPU of a CUDA build (usage error
  // otherwise).
  bool cuda() const {
    if (!on_cuda()) return false;
    require_cuda_device(op, ctx.device);
    return true;
  }
  // Dispatch for CPU-only ops: true on the CPU, a usage error on CUDA.
  bool cpu() const {
    if (on_cuda()) {
      if (kHaveCuda) pending();
      require_cuda_device(op, ctx.device);  // throws the "no CUDA support" usage error
    }
    return true;
  }
  [[noreturn]] void pending() const { throw_usage(std::string("op ") + op + ": CUDA kernel not built yet"); }
};

}  // namespace ds::opcheck

// DS_CHECK with the op name in front of the message (built only on failure).
#define OP_CHECK(chk, cond, msg) DS_CHECK(cond, std::string((chk).op) + ": " + (msg))

// `return cpu::CALL` on the CPU, `return cuda::CALL` on CUDA. Use as the last statement of an op.
#define DS_DISPATCH(chk, call)                                                     \
  if ((chk).cuda()) {                                                              \
    if constexpr (::ds::opcheck::kHaveCuda) return ::ds::cuda::call;               \
  }                                                                                \
  return ::ds::cpu::call

// As DS_DISPATCH, for an op whose kernel file (KERNEL: ATTENTION, MLA_DECODE, MOE_GATE, MOE_DISPATCH,
// GROUPED_MATMUL) may not be built yet: "op X: CUDA kernel not built yet" until it is.
#define DS_DISPATCH_KERNEL(chk, KERNEL, call)                                                  \
  if ((chk).cuda()) {                                                                          \
    if constexpr (::ds::opcheck::kHaveCuda && DS_CUDA_KERNEL_##KERNEL) return ::ds::cuda::call; \
    else (chk).pending();                                                                      \
  }                                                                                            \
  return ::ds::cpu::call
