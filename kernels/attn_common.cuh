#pragma once
// Device helpers shared by kernels/attention.cu and kernels/mla_decode.cu (cp.async also by
// grouped_matmul.cu): bf16 tensor-core MMA (mma.sync m16n8k16, f32 accumulation), ldmatrix, cp.async with zero
// fill, f32/bf16 loads and stores, and the host side of a launch (device guard, dynamic shared-memory opt-in,
// launch error check). Internal to kernels/.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, t = lane % 4):
//   A 16x16 (row): a0 (g, 2t..2t+1), a1 (g+8, 2t..), a2 (g, 2t+8..), a3 (g+8, 2t+8..)
//   B 16x8 (col):  b0 (k 2t..2t+1, n g), b1 (k 2t+8.., n g)
//   C 16x8:        c0 c1 (g, 2t..2t+1), c2 c3 (g+8, 2t..2t+1)
// The C fragments of two adjacent n-tiles are the A fragment of one k-step (FlashAttention-2's register reuse).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <map>
#include <mutex>
#include <utility>
#include <cstdint>
#include <string>

#include "core/error.h"
#include "tensor/context.h"
#include "tensor/tensor.h"
#include "kernels/common.cuh"  // launch(), pdl_enter()

namespace ds::cuda::attn {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// ---- element access -----------------------------------------------------------------------------------

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&v);
}

// ---- tensor cores -------------------------------------------------------------------------------------

__device__ __forceinline__ void mma_bf16(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void ldsm_x4(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t r[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}

// Lane addresses for ldmatrix x4 over a row-major bf16 tile in shared memory (pitch in elements):
//  A operand, rows = M, cols = K (16x16 at row0, col0): a0..a3 of mma.
__device__ __forceinline__ const __nv_bfloat16* lds_a(const __nv_bfloat16* base, int pitch, int row0, int col0,
                                                      int lane) {
  return base + (row0 + (lane & 15)) * pitch + col0 + ((lane >> 4) << 3);
}
//  B operand stored [n][k] (non-transposed): 16 n x 16 k -> r0,r1 = (b0,b1) of n-tile 0, r2,r3 of n-tile 1.
__device__ __forceinline__ const __nv_bfloat16* lds_b_nk(const __nv_bfloat16* base, int pitch, int n0, int k0,
                                                         int lane) {
  return base + (n0 + (lane & 7) + ((lane >> 4) << 3)) * pitch + k0 + (((lane >> 3) & 1) << 3);
}
//  B operand stored [k][n] (use with ldsm_x4_t): 16 k x 16 n -> r0,r1 = (b0,b1) of n-tile 0, r2,r3 of n-tile 1.
__device__ __forceinline__ const __nv_bfloat16* lds_b_kn(const __nv_bfloat16* base, int pitch, int k0, int n0,
                                                         int lane) {
  return base + (k0 + (lane & 7) + (((lane >> 3) & 1) << 3)) * pitch + n0 + ((lane >> 4) << 3);
}

// ---- cp.async -----------------------------------------------------------------------------------------

// 16-byte global -> shared copy; when !valid the destination is zero-filled and the source is not read.
__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(smem)), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- warp reductions over the 4 lanes of a quad (the lanes holding one mma row) --------------------------

__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

// exp2 that maps -inf - -inf (a fully masked row so far) to 0 instead of NaN.
__device__ __forceinline__ float safe_max(float m) { return m == -INFINITY ? 0.f : m; }

// ---- host side ----------------------------------------------------------------------------------------

inline void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw_runtime(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

// Makes ctx's device current for the scope of an op (restores the previous one). No synchronisation.
struct DeviceGuard {
  int prev = -1;
  explicit DeviceGuard(const Context& ctx) {
    int cur = 0;
    check(cudaGetDevice(&cur), "cudaGetDevice");
    if (cur != ctx.device.index) {
      prev = cur;
      check(cudaSetDevice(ctx.device.index), "cudaSetDevice");
    }
  }
  ~DeviceGuard() {
    if (prev >= 0) cudaSetDevice(prev);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;
};


inline int current_device() {
  int d = 0;
  check(cudaGetDevice(&d), "cudaGetDevice");
  return d;
}

// Per-device attribute, read once (ops run every step; cudaDeviceGetAttribute is not free).
inline int cached_attribute(cudaDeviceAttr attr, std::atomic<int>* cache, const char* what) {
  const int dev = current_device();
  DS_CHECK(dev >= 0 && dev < 64, "CUDA device index out of range");
  int v = cache[dev].load(std::memory_order_relaxed);
  if (v == 0) {
    check(cudaDeviceGetAttribute(&v, attr, dev), what);
    cache[dev].store(v, std::memory_order_relaxed);
  }
  return v;
}

inline size_t max_smem_optin() {
  static std::atomic<int> cache[64] = {};
  return size_t(cached_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, cache,
                                 "cudaDeviceGetAttribute(MaxSharedMemoryPerBlockOptin)"));
}

// Opts kernel k into `bytes` of dynamic shared memory on the current device when a launch needs more than 48 KB,
// raising the attribute whenever a launch needs more than any before it (it used to be set once, to the first
// size, so a larger shape after a smaller one failed with "invalid argument"). The first call happens outside graph
// capture in practice (the model runs a step before capturing); the attribute call itself is capture-safe.
template <class Kernel> void allow_smem(Kernel k, size_t bytes) {
  if (bytes <= 48 * 1024) return;
  static std::mutex mu;
  static std::map<std::pair<const void*, int>, size_t> set;  // (kernel, device) -> bytes allowed so far
  std::lock_guard<std::mutex> lock(mu);
  size_t& have = set[{reinterpret_cast<const void*>(k), current_device()}];
  if (bytes <= have) return;
  check(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)),
        "cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
  have = bytes;
}

inline int num_sms() {
  static std::atomic<int> cache[64] = {};
  return cached_attribute(cudaDevAttrMultiProcessorCount, cache, "cudaDeviceGetAttribute(MultiProcessorCount)");
}

inline void check_launch(const char* what) { check(cudaGetLastError(), what); }

inline bool aligned16(const Tensor& t) { return is_aligned16(t.data); }

}  // namespace ds::cuda::attn
