#pragma once
// Small helpers shared by the MoE kernel files (moe_gate.cu, moe_dispatch.cu, grouped_matmul.cu).
// They read Tensor fields directly (no calls into lib/tensor, which links after ds_kernels).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "core/error.h"
#include "tensor/context.h"
#include "tensor/tensor.h"
#include "kernels/common.cuh"  // launch(), pdl_enter()

namespace ds::cuda::moe {

inline cudaStream_t stream_of(const Context& ctx) { return static_cast<cudaStream_t>(ctx.cuda_stream); }

inline int64_t numel(const Tensor& t) {
  int64_t n = 1;
  for (int i = 0; i < t.ndim; ++i) n *= t.shape[i];
  return n;
}
inline int64_t cols(const Tensor& t) { return t.ndim ? t.shape[t.ndim - 1] : 1; }
inline int64_t rows(const Tensor& t) {
  const int64_t c = cols(t);
  return c ? numel(t) / c : 0;
}

inline int64_t esize(const Tensor& t) {
  switch (t.dtype) {
    case DType::f64: case DType::i64: return 8;
    case DType::f32: case DType::i32: return 4;
    case DType::bf16: case DType::f16: return 2;
    default: return 1;
  }
}

inline void ok(cudaError_t e, const char* op, const char* what) {
  if (e != cudaSuccess) throw_runtime(std::string(op) + ": " + what + ": " + cudaGetErrorString(e));
}
// After a launch: configuration errors surface here (execution errors surface at the next synchronisation).
inline void launched(const char* op) { ok(cudaGetLastError(), op, "kernel launch"); }

inline void set_device(const Context& ctx, const char* op) { ok(cudaSetDevice(ctx.device.index), op, "cudaSetDevice"); }

// Float tensors of these kernels are f32 or bf16; the flag travels with the pointer (a uniform branch).
inline bool is_bf16(const Tensor& t, const char* op, const char* name) {
  if (t.dtype == DType::bf16) return true;
  if (t.dtype == DType::f32) return false;
  throw_runtime(std::string(op) + ": " + name + " must be f32 or bf16 on CUDA, got " + std::to_string(int(t.dtype)));
}

struct FPtr {  // a float tensor's data, f32 or bf16
  void* p = nullptr;
  int bf = 0;
};
inline FPtr fptr(const Tensor& t, const char* op, const char* name) {
  if (t.empty()) return FPtr{};
  return FPtr{t.data, is_bf16(t, op, name) ? 1 : 0};
}

__device__ __forceinline__ float ldf(FPtr t, int64_t i) {
  return t.bf ? __bfloat162float(static_cast<const __nv_bfloat16*>(t.p)[i]) : static_cast<const float*>(t.p)[i];
}
__device__ __forceinline__ void stf(FPtr t, int64_t i, float v) {
  if (t.bf)
    static_cast<__nv_bfloat16*>(t.p)[i] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(t.p)[i] = v;
}
// The value v becomes once stored in t's dtype.
__device__ __forceinline__ float roundf_to(FPtr t, float v) {
  return t.bf ? __bfloat162float(__float2bfloat16_rn(v)) : v;
}

// Typed element access for templated kernels (T = float or __nv_bfloat16).
template <class T> __device__ __forceinline__ float to_f(T x);
template <> __device__ __forceinline__ float to_f<float>(float x) { return x; }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Calls f(float{}) or f(__nv_bfloat16{}) by dt.
template <class F> void dispatch_f32_bf16(const Tensor& t, const char* op, const char* name, F&& f) {
  if (is_bf16(t, op, name))
    f(__nv_bfloat16{});
  else
    f(float{});
}

inline unsigned grid_for(int64_t work, int per_block, int64_t cap = 1 << 20) {
  int64_t g = (work + per_block - 1) / per_block;
  if (g < 1) g = 1;
  if (g > cap) g = cap;
  return unsigned(g);
}

}  // namespace ds::cuda::moe
