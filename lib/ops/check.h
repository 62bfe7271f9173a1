#pragma once
// Argument checks shared by ops.cpp and ops_moe.cpp (internal to lib/ops). A failure is a programming or
// shape error: DS_CHECK throws a runtime error naming the op, the argument, its shape, dtype and device.
#include <string>

#include "tensor/context.h"
#include "tensor/tensor.h"

namespace ds::opcheck {

inline std::string desc(const Tensor& t) {
  return t.shape_str() + " " + dtype_name(t.dtype) + " on " + t.device.str();
}
inline std::string rc(const Tensor& t) {
  return "(rows " + std::to_string(t.rows()) + ", cols " + std::to_string(t.cols()) + ")";
}

// The checks of one op call. The first float tensor registered fixes the float dtype of the call.
struct Check {
  const Context& ctx;
  const char* op;
  DType fdtype = DType::f32;
  bool have_float = false;

  Check(const Context& c, const char* name) : ctx(c), op(name) {}

  // A float tensor (f32 or f64) on the context's device, with the call's float dtype.
  Check& f(const char* name, const Tensor& t) {
    DS_CHECK(!t.empty(), std::string(op) + ": " + name + " is required");
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
  // An index tensor of dtype dt on the context's device.
  Check& index(const char* name, const Tensor& t, DType dt) {
    DS_CHECK(!t.empty(), std::string(op) + ": " + name + " is required");
    DS_CHECK(t.dtype == dt, std::string(op) + ": " + name + " " + desc(t) + " must be " + dtype_name(dt));
    return device(name, t);
  }
  Check& index_opt(const char* name, const Tensor& t, DType dt) { return t.empty() ? *this : index(name, t, dt); }
  Check& device(const char* name, const Tensor& t) {
    DS_CHECK(t.device == ctx.device, std::string(op) + ": " + name + " " + desc(t) +
                                         " is not on the context's device " + ctx.device.str());
    return *this;
  }
  // Dispatch: true on the CPU. The CUDA twins (kernels/) are not built yet.
  bool cpu() const {
    if (ctx.device.is_cuda()) throw_usage(std::string("op ") + op + ": CUDA kernels not built yet");
    return true;
  }
};

}  // namespace ds::opcheck

// DS_CHECK with the op name in front of the message (built only on failure).
#define OP_CHECK(chk, cond, msg) DS_CHECK(cond, std::string((chk).op) + ": " + (msg))
