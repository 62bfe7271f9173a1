#pragma once
// Shared device helpers of the CUDA twins (kernels/*.cu): error checks with file:line, the context's stream and
// device, bf16/f32/f64 loads and stores through float, warp/block reductions, dtype dispatch on the host.
// Internal to kernels/.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <utility>

#include "core/env.h"
#include "core/error.h"
#include "tensor/context.h"
#include "tensor/tensor.h"

namespace ds::cuda {

// ---- errors ---------------------------------------------------------------------------------------------

[[noreturn]] inline void fail(cudaError_t e, const char* what, const char* file, int line) {
  throw_runtime(std::string("CUDA error: ") + what + ": " + cudaGetErrorString(e) + " (" + file + ":" +
                std::to_string(line) + ")");
}

}  // namespace ds::cuda

// Checks a CUDA runtime call; a failure throws a runtime error with the call, the CUDA message and file:line.
#define DS_CUDA_CHECK(call)                                                      \
  do {                                                                           \
    const cudaError_t ds_cuda_err_ = (call);                                     \
    if (ds_cuda_err_ != cudaSuccess) ::ds::cuda::fail(ds_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: launch-configuration errors (and sticky errors of earlier kernels) with file:line.
#define DS_CUDA_LAUNCH_CHECK(kernel_name)                                         \
  do {                                                                            \
    const cudaError_t ds_cuda_err_ = cudaGetLastError();                          \
    if (ds_cuda_err_ != cudaSuccess) ::ds::cuda::fail(ds_cuda_err_, "launch of " kernel_name, __FILE__, __LINE__); \
  } while (0)

namespace ds::cuda {

// ---- context ----------------------------------------------------------------------------------------------

inline cudaStream_t stream_of(const Context& ctx) { return static_cast<cudaStream_t>(ctx.cuda_stream); }

// Makes `device` current for this host thread (cheap when it already is).
inline void use_device(const Device& device) {
  int cur = -1;
  DS_CUDA_CHECK(cudaGetDevice(&cur));
  if (cur != device.index) DS_CUDA_CHECK(cudaSetDevice(device.index));
}
// Makes ctx's device current and returns ctx's stream.
inline cudaStream_t prepare(const Context& ctx) {
  use_device(ctx.device);
  return stream_of(ctx);
}

// Launch sizes: a grid-stride loop over n elements with `threads` per block, capped (the loop covers the rest).
inline unsigned grid_for(int64_t n, int threads, int64_t max_blocks = 65535LL * 16) {
  int64_t b = (n + threads - 1) / threads;
  if (b < 1) b = 1;
  if (b > max_blocks) b = max_blocks;
  return unsigned(b);
}

// ---- launches: programmatic dependent launch (Hopper) -------------------------------------------------------
// A decode step is ~270 small kernels, each paying the launch and drain of the one before it. Every kernel here is
// launched through launch(), which (on sm_90+, unless DS_PDL=0) lets it start while the previous kernel in the stream
// is still running: its blocks become resident and wait in pdl_enter() — the first statement of every kernel
// in kernels/ — until that kernel has completed and its writes are visible; then they allow the next kernel to be
// launched in turn. So at most the next grid is resident ahead of time and nothing is read or written before the
// data it depends on is complete. A kernel may do work before pdl_enter() only when that work touches no memory
// another kernel writes (gemv_kernel's L2 prefetch of its weights: a prefetch never changes what is read), or
// memory last written two or more launches back: because every kernel waits before it lets the next one start,
// while kernel N runs kernel N - 2 has completed (a kernel N - 1 launched without the attribute, after a copy or
// as cuBLAS's, began only after N - 2 completed). Ops say so per call with Inputs::settled (lib/ops/ops.h); never
// trigger the next launch before the wait, or this breaks. Launches after a copy, memset or foreign (cuBLAS) kernel
// keep ordinary stream order.
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_enter() {
  pdl_wait();
  pdl_launch_dependents();
}

// pdl_enter() with a kernel's first loads of settled inputs (Inputs::settled, the rule above) ahead of it when
// `early`, right after it otherwise (the GEMV's weights, the fused dispatch's router row).
template <class F> __device__ __forceinline__ void pdl_enter_with(bool early, F&& load) {
  if (early) load();
  pdl_enter();
  if (!early) load();
}

// L2 prefetch of [p, p + bytes) (16-byte aligned, a multiple of 16) by the calling thread: one TMA bulk prefetch.
// What a kernel may do before pdl_enter() with weights: it never changes the values later reads see.
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}

// Whether launch() asks for programmatic serialisation: the current device is sm_90+ and DS_PDL is not "0".
bool pdl_enabled();
// env_switch (core/env.h): the A/B switches for benchmarks.

// kernel<<<grid, block, smem, st>>>(args...) with programmatic dependent launch when pdl_enabled(); the kernel must
// begin with pdl_enter() (see above). Launch errors throw with the kernel's file:line from the caller's check.
template <class... P, class... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t st, A&&... args) {
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid;
  cfg.blockDim = block;
  cfg.dynamicSmemBytes = smem;
  cfg.stream = st;
  cfg.attrs = attr;
  cfg.numAttrs = pdl_enabled() ? 1 : 0;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...);
  if (e != cudaSuccess) fail(e, "cudaLaunchKernelEx", __FILE__, __LINE__);
}

// Threads of a block that normalises one row of D (RMSNorm and the kernels that fuse it: the block size fixes
// the per-thread sums, so kernels sharing a norm share this).
inline int row_threads(int64_t D) {
  if (D >= 2048) return 512;
  if (D >= 512) return 256;
  if (D >= 128) return 128;
  return 32;
}

// ---- element types ------------------------------------------------------------------------------------------

using bf16_t = __nv_bfloat16;

// Loads as float / double.
__device__ __forceinline__ float ldf(float x) { return x; }
__device__ __forceinline__ float ldf(double x) { return float(x); }
__device__ __forceinline__ float ldf(bf16_t x) { return __bfloat162float(x); }
__device__ __forceinline__ double ldd(float x) { return double(x); }
__device__ __forceinline__ double ldd(double x) { return x; }
__device__ __forceinline__ double ldd(bf16_t x) { return double(__bfloat162float(x)); }

// Stores a float (or double) into T: bf16 rounds to nearest even (as tensor.h's f32_to_bf16 does).
template <class T> __device__ __forceinline__ T cvt(float x) { return T(x); }
template <> __device__ __forceinline__ bf16_t cvt<bf16_t>(float x) { return __float2bfloat16_rn(x); }
template <class T> __device__ __forceinline__ T cvtd(double x) { return T(x); }
// double -> bf16 goes through float, as the CPU reference (f32_to_bf16(float(x))) does.
template <> __device__ __forceinline__ bf16_t cvtd<bf16_t>(double x) { return __float2bfloat16_rn(float(x)); }

// acc + w · x over 8 bf16 pairs held in 16 bytes each, as f32 fmaf in element order. The bf16 GEMV and every kernel
// that must reproduce its bits (the fused MoE dispatch's router product) accumulate through this.
__device__ __forceinline__ float dot_bf16x8(uint4 w, uint4 x, float acc) {
  const __nv_bfloat162* wp = reinterpret_cast<const __nv_bfloat162*>(&w);
  const __nv_bfloat162* xp = reinterpret_cast<const __nv_bfloat162*>(&x);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 p = __bfloat1622float2(wp[j]), q = __bfloat1622float2(xp[j]);
    acc = fmaf(p.x, q.x, acc);
    acc = fmaf(p.y, q.y, acc);
  }
  return acc;
}

// ---- 16-byte vectors -------------------------------------------------------------------------------------------
// The memory-bound row kernels move rows as 16-byte words: kVec<T> elements (8 bf16 or 4 f32) unpacked to floats.

template <class T> inline constexpr int kVec = int(16 / sizeof(T));

__device__ __forceinline__ void unpack16(uint4 u, float (&f)[8]) {
  const __nv_bfloat162* p = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const float2 q = __bfloat1622float2(p[j]);
    f[2 * j] = q.x;
    f[2 * j + 1] = q.y;
  }
}
__device__ __forceinline__ void unpack16(uint4 u, float (&f)[4]) {
  f[0] = __uint_as_float(u.x);
  f[1] = __uint_as_float(u.y);
  f[2] = __uint_as_float(u.z);
  f[3] = __uint_as_float(u.w);
}
// Rounds as cvt<T> does element by element (bf16: to nearest even).
__device__ __forceinline__ uint4 pack16(const float (&f)[8]) {
  uint4 u;
  __nv_bfloat162* p = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
  for (int j = 0; j < 4; ++j) p[j] = __floats2bfloat162_rn(f[2 * j], f[2 * j + 1]);
  return u;
}
__device__ __forceinline__ uint4 pack16(const float (&f)[4]) {
  return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]), __float_as_uint(f[3]));
}

inline bool is_aligned_to(const void* p, size_t bytes) { return reinterpret_cast<uintptr_t>(p) % bytes == 0; }
inline bool is_aligned16(const void* p) { return is_aligned_to(p, 16); }

// N consecutive elements of T as one aligned load / store (N * sizeof(T) of 8 or 16 bytes: a vector access).
template <class T, int N> struct alignas(sizeof(T) * N) Pack {
  T v[N];
};
template <class T, int N> __device__ __forceinline__ Pack<T, N> ld_pack(const T* p) {
  return *reinterpret_cast<const Pack<T, N>*>(p);
}
template <class T, int N> __device__ __forceinline__ void st_pack(T* p, const Pack<T, N>& x) {
  *reinterpret_cast<Pack<T, N>*>(p) = x;
}

// ---- reductions ---------------------------------------------------------------------------------------------

template <class T> __device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <class T> __device__ __forceinline__ T warp_max(T v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. Uses 32 slots of
// shared memory of T; safe to call repeatedly (synchronises before reuse).
template <class T> __device__ T block_sum(T v) {
  __shared__ T part[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  v = warp_sum(v);
  __syncthreads();  // earlier readers of part[] are done
  if (lane == 0) part[warp] = v;
  __syncthreads();
  T r = lane < nwarps ? part[lane] : T(0);
  return warp_sum(r);
}

// block_sum of two values at once (one pair of barriers): each is summed exactly as block_sum sums it.
__device__ inline void block_sum2(float& a, float& b) {
  __shared__ float part[2][32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
  a = warp_sum(a);
  b = warp_sum(b);
  __syncthreads();  // earlier readers of part[] are done
  if (lane == 0) {
    part[0][warp] = a;
    part[1][warp] = b;
  }
  __syncthreads();
  a = warp_sum(lane < nwarps ? part[0][lane] : 0.0f);
  b = warp_sum(lane < nwarps ? part[1][lane] : 0.0f);
}

// ---- host-side dtype dispatch ---------------------------------------------------------------------------------

// Calls f(T{}) with T = float or bf16_t (the CUDA float dtypes of a call).
template <class F> void dispatch_fb(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::bf16: f(bf16_t{}); return;
    default: throw_runtime(std::string(op) + ": CUDA kernel has no " + dtype_name(dt) + " variant (f32 or bf16)");
  }
}
// Also f64 (conversions, fills, reductions).
template <class F> void dispatch_fbd(DType dt, const char* op, F&& f) {
  switch (dt) {
    case DType::f32: f(float{}); return;
    case DType::bf16: f(bf16_t{}); return;
    case DType::f64: f(double{}); return;
    default: throw_runtime(std::string(op) + ": CUDA kernel has no " + dtype_name(dt) + " variant");
  }
}

template <class T> inline T* dptr(const Tensor& t) { return static_cast<T*>(t.data); }

// Stream-ordered temporary device memory (cudaMallocAsync on the current device), released on the same stream
// when it goes out of scope.
class TempBuffer {
 public:
  TempBuffer(size_t bytes, cudaStream_t stream) : stream_(stream) {
    if (bytes) DS_CUDA_CHECK(cudaMallocAsync(&p_, bytes, stream));
  }
  ~TempBuffer() {
    if (p_) cudaFreeAsync(p_, stream_);
  }
  TempBuffer(const TempBuffer&) = delete;
  TempBuffer& operator=(const TempBuffer&) = delete;
  template <class T> T* as() const { return static_cast<T*>(p_); }
  void* get() const { return p_; }

 private:
  void* p_ = nullptr;
  cudaStream_t stream_;
};

}  // namespace ds::cuda
