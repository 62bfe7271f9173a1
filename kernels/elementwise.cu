// CUDA twins of the elementwise ops, conversions and copies, reductions to the host, SwiGLU
// (lib/ops/cpu/elementwise.cpp is the reference). Arithmetic in f32 (f64 for f64 tensors and the reductions);
// bf16 stores round to nearest even.
#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/cuda_ops.h"

namespace ds::cuda {

namespace {

constexpr int kThreads = 256;

// ---- fill / scale / axpy / add -------------------------------------------------------------------------------

template <class T> __global__ void fill_kernel(T* __restrict__ p, int64_t n, T v) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = v;
}

template <class T> __global__ void scale_kernel(T* __restrict__ p, int64_t n, float a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = cvt<T>(ldf(p[i]) * a);
}
__global__ void scale_kernel_f64(double* __restrict__ p, int64_t n, double a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    p[i] *= a;
}

// ---- W elements a thread per access: 16-byte words for the memory-bound elementwise kernels ---------------------
// Scalar bf16 accesses left add / axpy / SwiGLU at 30-65% of the H200's bandwidth in a training step (bench/README,
// 11th session). With every pointer 16-byte aligned the kernels below take W = kVec<T> elements a word (the
// tail past the last whole word element by element; Pack, common.cuh); the per-element arithmetic is unchanged, so
// are the bits.
bool aligned16(std::initializer_list<const void*> ps) {  // null pointers (absent outputs) pass
  for (const void* p : ps)
    if (p && !is_aligned16(p)) return false;
  return true;
}
// f(i) for i in [0, count), a grid-stride loop.
template <class F> __device__ __forceinline__ void grid_loop(int64_t count, F&& f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += stride) f(i);
}

template <class Y, class X, int W>
__global__ void axpy_kernel(Y* __restrict__ y, const X* __restrict__ x, int64_t n, float a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  static_assert(W == 1 || sizeof(X) == sizeof(Y), "words of one element size");
  grid_loop(n / W, [&](int64_t w) {
    Pack<Y, W> yv = ld_pack<Y, W>(y + w * W);
    const Pack<X, W> xv = ld_pack<X, W>(x + w * W);
#pragma unroll
    for (int j = 0; j < W; ++j) yv.v[j] = cvt<Y>(ldf(yv.v[j]) + a * ldf(xv.v[j]));
    st_pack<Y, W>(y + w * W, yv);
  });
  const int64_t t0 = n / W * W;  // the tail past the last whole word
  grid_loop(n - t0, [&](int64_t r) { y[t0 + r] = cvt<Y>(ldf(y[t0 + r]) + a * ldf(x[t0 + r])); });
}

// out may alias a or b (same index read before written).
template <class T, int W> __global__ void add_kernel(T* out, const T* a, const T* b, int64_t n) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  grid_loop(n / W, [&](int64_t w) {
    const Pack<T, W> av = ld_pack<T, W>(a + w * W), bv = ld_pack<T, W>(b + w * W);
    Pack<T, W> o;
#pragma unroll
    for (int j = 0; j < W; ++j) o.v[j] = cvt<T>(ldf(av.v[j]) + ldf(bv.v[j]));
    st_pack<T, W>(out + w * W, o);
  });
  const int64_t t0 = n / W * W;
  grid_loop(n - t0, [&](int64_t r) { out[t0 + r] = cvt<T>(ldf(a[t0 + r]) + ldf(b[t0 + r])); });
}

template <class D, class S> __global__ void convert_kernel(D* __restrict__ dst, const S* __restrict__ src, int64_t n) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = cvtd<D>(ldd(src[i]));
}

template <class T>
__global__ void add_cols_kernel(T* __restrict__ dst, int64_t dc, int64_t dst_col, const T* __restrict__ src, int64_t sc,
                                int64_t src_col, int64_t rows, int64_t ncols) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int64_t n = rows * ncols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / ncols, c = i - r * ncols;
    T* d = dst + r * dc + dst_col + c;
    *d = cvt<T>(ldf(*d) + ldf(src[r * sc + src_col + c]));
  }
}

// dst[r, dst_col + c] = src[r, src_col + c] in units of U (16, 8, 4, 2 or 1 bytes: the widest the row starts,
// pitches and width allow). A kernel, not cudaMemcpy2DAsync: a 2D copy of narrow rows (a head's 64-byte RoPE
// slice) took the copy path at ~6-10 us each with no programmatic launch, ~20 of them a layer in the expanded
// MLA forward — 1.6 ms of a 128-token prefill's ~5 ms (bench/README.md, tenth session).
// With copies > 1 each source unit also goes to `copies` places of its row, cstride bytes apart (copy_cols_repeat).
template <class U>
__global__ void copy_cols_kernel(char* __restrict__ dst, int64_t dpitch, const char* __restrict__ src, int64_t spitch,
                                 int64_t rows, int64_t units, int64_t copies, int64_t cstride) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int64_t n = rows * units;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / units, c = i - r * units;
    const U v = reinterpret_cast<const U*>(src + r * spitch)[c];
    for (int64_t j = 0; j < copies; ++j) reinterpret_cast<U*>(dst + r * dpitch + j * cstride)[c] = v;
  }
}

// copy_cols / copy_cols_repeat (overwrite): the widest unit dividing the row starts, pitches, width and stride.
void launch_copy_cols(cudaStream_t st, Tensor dst, int64_t dst_col, int64_t stride, int64_t copies, Tensor src,
                      int64_t src_col, int64_t ncols) {
  const int64_t rows = dst.rows(), es = int64_t(dtype_size(dst.dtype)), width = ncols * es, dp = dst.cols() * es,
                sp = src.cols() * es, cs = stride * es;
  if (rows == 0 || ncols == 0 || copies == 0) return;
  char* d = static_cast<char*>(dst.data) + dst_col * es;
  const char* s = static_cast<const char*>(src.data) + src_col * es;
  int64_t u = 16;
  while (u > 1 && ((reinterpret_cast<uintptr_t>(d) | reinterpret_cast<uintptr_t>(s)) % uintptr_t(u) != 0 ||
                   dp % u != 0 || sp % u != 0 || width % u != 0 || cs % u != 0))
    u >>= 1;
  const int64_t units = width / u;
  const unsigned grid = grid_for(rows * units, kThreads);
  switch (u) {
    case 16: launch(copy_cols_kernel<uint4>, grid, kThreads, 0, st, d, dp, s, sp, rows, units, copies, cs); break;
    case 8: launch(copy_cols_kernel<uint2>, grid, kThreads, 0, st, d, dp, s, sp, rows, units, copies, cs); break;
    case 4: launch(copy_cols_kernel<uint32_t>, grid, kThreads, 0, st, d, dp, s, sp, rows, units, copies, cs); break;
    case 2: launch(copy_cols_kernel<uint16_t>, grid, kThreads, 0, st, d, dp, s, sp, rows, units, copies, cs); break;
    default: launch(copy_cols_kernel<uint8_t>, grid, kThreads, 0, st, d, dp, s, sp, rows, units, copies, cs); break;
  }
  DS_CUDA_LAUNCH_CHECK("copy_cols_kernel");
}

// sum_cols_repeat: dst[r, c] (=|+=) sum over j < copies of src[r, j * stride + c] (pointers at the first column),
// one thread per W adjacent output elements, each summed in f32 in order j = 0, 1, ... from block 0 (or from dst,
// block 0 added first) and rounded once: for f32 the bits of copy_cols' overwrite + add_cols_kernel loop. W = kVec<T>
// (16-byte words) when every block start is 16-byte aligned and ncols a multiple of W, else 1.
template <class T, int W>
__global__ void sum_cols_kernel(T* __restrict__ dst, int64_t dc, const T* __restrict__ src, int64_t sc,
                                int64_t rows, int64_t words, int64_t copies, int64_t stride, bool add) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  grid_loop(rows * words, [&](int64_t i) {
    const int64_t r = i / words, c = (i - r * words) * W;
    T* d = dst + r * dc + c;
    const T* s = src + r * sc + c;
    float v[W];
    const Pack<T, W> s0 = ld_pack<T, W>(s);
    if (add) {
      const Pack<T, W> d0 = ld_pack<T, W>(d);
#pragma unroll
      for (int k = 0; k < W; ++k) v[k] = ldf(d0.v[k]) + ldf(s0.v[k]);
    } else {
#pragma unroll
      for (int k = 0; k < W; ++k) v[k] = ldf(s0.v[k]);
    }
    for (int64_t j = 1; j < copies; ++j) {
      const Pack<T, W> sj = ld_pack<T, W>(s + j * stride);
#pragma unroll
      for (int k = 0; k < W; ++k) v[k] += ldf(sj.v[k]);
    }
    Pack<T, W> o;
#pragma unroll
    for (int k = 0; k < W; ++k) o.v[k] = cvt<T>(v[k]);
    st_pack<T, W>(d, o);
  });
}

// ---- reductions (deterministic: a fixed grid for a given n, partials summed in a fixed order) ---------------

constexpr int kReduceThreads = 512;
constexpr int kReduceMaxBlocks = 1024;

template <class T, bool kSquare>
__global__ void reduce_partial_kernel(const T* __restrict__ p, int64_t n, double* __restrict__ part) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double x = ldd(p[i]);
    s += kSquare ? x * x : x;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) part[blockIdx.x] = s;
}

__global__ void reduce_final_kernel(const double* __restrict__ part, int n, double* __restrict__ out) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += part[i];
  s = block_sum(s);
  if (threadIdx.x == 0) *out = s;
}

// The partial blocks of a reduction over n elements (a fixed grid for a given n: the result does not depend on
// anything else).
int reduce_blocks(int64_t n) { return int(std::min<int64_t>(kReduceMaxBlocks, (n + kReduceThreads - 1) / kReduceThreads)); }

// Enqueues the reduction of t into *out (device), using part[0, reduce_blocks(n)) as scratch; n > 0.
template <bool kSquare> void reduce_into(cudaStream_t st, const Tensor& t, const char* op, double* part, double* out) {
  const int64_t n = t.numel();
  const int blocks = reduce_blocks(n);
  dispatch_fbd(t.dtype, op, [&](auto zero) {
    using T = decltype(zero);
    launch(reduce_partial_kernel<T, kSquare>, blocks, kReduceThreads, 0, st, dptr<const T>(t), n, part);
  });
  DS_CUDA_LAUNCH_CHECK("reduce_partial_kernel");
  launch(reduce_final_kernel, 1, kReduceMaxBlocks, 0, st, part, blocks, out);
  DS_CUDA_LAUNCH_CHECK("reduce_final_kernel");
}

template <bool kSquare> double reduce(const Context& ctx, const Tensor& t, const char* op) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = t.numel();
  if (n == 0) return 0.0;
  const int blocks = reduce_blocks(n);
  TempBuffer buf(sizeof(double) * (blocks + 1), st);
  double* part = buf.as<double>();
  reduce_into<kSquare>(st, t, op, part, part + blocks);
  double r = 0.0;
  DS_CUDA_CHECK(cudaMemcpyAsync(&r, part + blocks, sizeof(double), cudaMemcpyDeviceToHost, st));
  DS_CUDA_CHECK(cudaStreamSynchronize(st));
  return r;
}

// ---- sum of squares of many tensors (the gradient norm) --------------------------------------------------------
// Launches of up to kSsqTable tensors (the table in the kernel's parameters: no staging copy, so nothing the host
// must wait for): each tensor is cut into chunks of kSsqChunkBytes, one block per chunk (a block finds its tensor by
// binary search in the table), thread t summing the 16-byte groups t, t + 256, ... of the chunk in order (whole
// words when the tensor is 16-byte aligned, element by element otherwise: the same elements in the same order either
// way), then block_sum; a second launch adds each tensor's chunk partials (one block per tensor, block_sum of fixed
// strided sums). All in double; the order depends only on the tensor's size and dtype, not on its neighbours.

constexpr int kSsqThreads = 256;
constexpr int kSsqGroups = 8;  // 16-byte groups per thread per chunk, all loads in flight
constexpr int64_t kSsqChunkBytes = int64_t(kSsqThreads) * kSsqGroups * 16;
constexpr int kSsqTable = 64;

struct SsqTensor {
  const void* p;
  int64_t n;       // elements
  int64_t chunk0;  // its first chunk
  int32_t dtype;   // 0 f32, 1 bf16, 2 f64
  int32_t aligned;
};

struct SsqTable {
  SsqTensor t[kSsqTable];
};
static_assert(sizeof(SsqTable) + 2 * sizeof(int64_t) + 2 * sizeof(void*) <= 4096, "ssq kernels' parameters");

template <class T>
__device__ __forceinline__ double ssq_chunk(const SsqTensor& t, int64_t chunk_in_tensor) {
  constexpr int VE = int(16 / sizeof(T));
  constexpr int64_t chunk_elems = kSsqChunkBytes / int64_t(sizeof(T));
  const T* base = static_cast<const T*>(t.p) + chunk_in_tensor * chunk_elems;
  const int64_t left = min(chunk_elems, t.n - chunk_in_tensor * chunk_elems);
  double s = 0.0;
  if (t.aligned && left == chunk_elems) {  // a whole chunk of whole words
    uint4 v[kSsqGroups];
#pragma unroll
    for (int i = 0; i < kSsqGroups; ++i) v[i] = reinterpret_cast<const uint4*>(base)[i * kSsqThreads + threadIdx.x];
#pragma unroll
    for (int i = 0; i < kSsqGroups; ++i) {
      const T* e = reinterpret_cast<const T*>(&v[i]);
#pragma unroll
      for (int k = 0; k < VE; ++k) {
        const double x = ldd(e[k]);
        s += x * x;
      }
    }
    return s;
  }
  for (int i = 0; i < kSsqGroups; ++i) {
    const int64_t g0 = (int64_t(i) * kSsqThreads + threadIdx.x) * VE;
#pragma unroll
    for (int k = 0; k < VE; ++k) {
      if (g0 + k >= left) break;
      const double x = ldd(base[g0 + k]);
      s += x * x;
    }
  }
  return s;
}

__global__ void __launch_bounds__(kSsqThreads)
    ssq_partial_kernel(const __grid_constant__ SsqTable ts, int nt, double* __restrict__ part) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  __shared__ int which;
  const int64_t chunk = blockIdx.x;
  if (threadIdx.x == 0) {  // the last tensor whose first chunk is <= this one (never an empty one: it shares its
                           // chunk0 with the next tensor, and a last empty tensor's chunk0 is past every chunk)
    int lo = 0, hi = nt - 1;
    while (lo < hi) {
      const int mid = (lo + hi + 1) / 2;
      if (ts.t[mid].chunk0 <= chunk) lo = mid;
      else hi = mid - 1;
    }
    which = lo;
  }
  __syncthreads();
  const SsqTensor t = ts.t[which];
  const int64_t c = chunk - t.chunk0;
  double s = t.dtype == 0 ? ssq_chunk<float>(t, c) : t.dtype == 1 ? ssq_chunk<bf16_t>(t, c) : ssq_chunk<double>(t, c);
  s = block_sum(s);
  if (threadIdx.x == 0) part[chunk] = s;
}

__global__ void __launch_bounds__(kSsqThreads)
    ssq_final_kernel(const __grid_constant__ SsqTable ts, int64_t total_chunks, const double* __restrict__ part,
                     double* __restrict__ out) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int i = blockIdx.x;
  const int64_t c0 = ts.t[i].chunk0, c1 = i + 1 < int(gridDim.x) ? ts.t[i + 1].chunk0 : total_chunks;
  double s = 0.0;
  for (int64_t c = c0 + threadIdx.x; c < c1; c += blockDim.x) s += part[c];
  s = block_sum(s);
  if (threadIdx.x == 0) out[i] = s;
}

// ---- SwiGLU ---------------------------------------------------------------------------------------------------

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

template <class T> __device__ __forceinline__ T swiglu_fwd1(T gate, T up) {
  const float g = ldf(gate);
  return cvt<T>(g * sigmoidf_(g) * ldf(up));
}
template <class T, int W>
__global__ void swiglu_fwd_kernel(T* __restrict__ out, const T* __restrict__ gate, const T* __restrict__ up, int64_t n) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  grid_loop(n / W, [&](int64_t w) {
    const Pack<T, W> gv = ld_pack<T, W>(gate + w * W), uv = ld_pack<T, W>(up + w * W);
    Pack<T, W> o;
#pragma unroll
    for (int j = 0; j < W; ++j) o.v[j] = swiglu_fwd1(gv.v[j], uv.v[j]);
    st_pack<T, W>(out + w * W, o);
  });
  const int64_t t0 = n / W * W;
  grid_loop(n - t0, [&](int64_t r) { out[t0 + r] = swiglu_fwd1(gate[t0 + r], up[t0 + r]); });
}

// out[r, c] = silu(gu[r, c]) * gu[r, F + c] for gu [N, 2F] (swiglu_fwd_kernel's arithmetic). W > 1: element i's
// word of W never crosses a row or a half (F % W == 0) and every pointer is 16-byte aligned (the training MLP's
// [M, 2F] product); W = 1 element by element (decode's odd shapes).
template <class T, int W>
__global__ void swiglu_pair_kernel(T* __restrict__ out, const T* __restrict__ gu, int64_t n, int64_t F) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  grid_loop(n / W, [&](int64_t w) {
    const int64_t i = w * W, r = i / F, c = i - r * F;
    const T* row = gu + r * 2 * F;
    const Pack<T, W> gv = ld_pack<T, W>(row + c), uv = ld_pack<T, W>(row + F + c);
    Pack<T, W> o;
#pragma unroll
    for (int j = 0; j < W; ++j) o.v[j] = swiglu_fwd1(gv.v[j], uv.v[j]);
    st_pack<T, W>(out + i, o);
  });
}

// d_gate = d_out * u * s * (1 + g * (1 - s)),  d_up = d_out * g * s,  s = sigmoid(g): one element, shared by
// swiglu_bwd_kernel and swiglu_pair_bwd_kernel (the same arithmetic, so the same bits). Either output may be null.
template <class T>
__device__ __forceinline__ void swiglu_bwd1(T d_out, T gate, T up, T* d_gate, T* d_up) {
  const float g = ldf(gate), s = sigmoidf_(g), dy = ldf(d_out);
  if (d_gate) *d_gate = cvt<T>(dy * ldf(up) * s * (1.0f + g * (1.0f - s)));
  if (d_up) *d_up = cvt<T>(dy * g * s);
}

template <class T, int W>
__global__ void swiglu_bwd_kernel(T* __restrict__ d_gate, T* __restrict__ d_up, const T* __restrict__ d_out,
                                  const T* __restrict__ gate, const T* __restrict__ up, int64_t n) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  grid_loop(n / W, [&](int64_t w) {
    const Pack<T, W> gv = ld_pack<T, W>(gate + w * W), dv = ld_pack<T, W>(d_out + w * W);
    Pack<T, W> uv{}, dg, du;
    if (d_gate) uv = ld_pack<T, W>(up + w * W);
#pragma unroll
    for (int j = 0; j < W; ++j)
      swiglu_bwd1(dv.v[j], gv.v[j], uv.v[j], d_gate ? &dg.v[j] : nullptr, d_up ? &du.v[j] : nullptr);
    if (d_gate) st_pack<T, W>(d_gate + w * W, dg);
    if (d_up) st_pack<T, W>(d_up + w * W, du);
  });
  const int64_t t0 = n / W * W;
  grid_loop(n - t0, [&](int64_t r) {
    const int64_t i = t0 + r;
    swiglu_bwd1(d_out[i], gate[i], d_gate ? up[i] : T{}, d_gate ? d_gate + i : nullptr, d_up ? d_up + i : nullptr);
  });
}

// [d_g | d_u] rows of d_gu [N, 2F] from d_out [N, F] and gu [N, 2F] = [g | u] (swiglu_bwd1; words as in
// swiglu_pair_kernel).
template <class T, int W>
__global__ void swiglu_pair_bwd_kernel(T* __restrict__ d_gu, const T* __restrict__ d_out, const T* __restrict__ gu,
                                       int64_t n, int64_t F) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  grid_loop(n / W, [&](int64_t w) {
    const int64_t i = w * W, r = i / F, c = i - r * F;
    const T* row = gu + r * 2 * F;
    T* drow = d_gu + r * 2 * F;
    const Pack<T, W> gv = ld_pack<T, W>(row + c), uv = ld_pack<T, W>(row + F + c), dv = ld_pack<T, W>(d_out + i);
    Pack<T, W> dg, du;
#pragma unroll
    for (int j = 0; j < W; ++j) swiglu_bwd1(dv.v[j], gv.v[j], uv.v[j], &dg.v[j], &du.v[j]);
    st_pack<T, W>(drow + c, dg);
    st_pack<T, W>(drow + F + c, du);
  });
}

// Device-to-device conversion (same device) between f32, f64 and bf16.
void convert_on_device(cudaStream_t st, void* dst, DType dt, const void* src, DType sdt, int64_t n) {
  if (n == 0) return;
  dispatch_fbd(dt, "copy", [&](auto dz) {
    using D = decltype(dz);
    dispatch_fbd(sdt, "copy", [&](auto sz) {
      using S = decltype(sz);
      launch(convert_kernel<D, S>, grid_for(n, kThreads), kThreads, 0, st, static_cast<D*>(dst), static_cast<const S*>(src), n);
    });
  });
  DS_CUDA_LAUNCH_CHECK("convert_kernel");
}

}  // namespace

void fill(const Context& ctx, Tensor t, double value) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = t.numel();
  if (n == 0) return;
  const unsigned g = grid_for(n, kThreads);
  switch (t.dtype) {
    case DType::f32: launch(fill_kernel<float>, g, kThreads, 0, st, dptr<float>(t), n, float(value)); break;
    case DType::f64: launch(fill_kernel<double>, g, kThreads, 0, st, dptr<double>(t), n, value); break;
    case DType::bf16: {
      __nv_bfloat16_raw raw;
      raw.x = f32_to_bf16(float(value)).bits;  // as the CPU reference rounds
      launch(fill_kernel<bf16_t>, g, kThreads, 0, st, dptr<bf16_t>(t), n, bf16_t(raw));
      break;
    }
    case DType::i32: launch(fill_kernel<int32_t>, g, kThreads, 0, st, dptr<int32_t>(t), n, int32_t(value)); break;
    case DType::i64: launch(fill_kernel<int64_t>, g, kThreads, 0, st, dptr<int64_t>(t), n, int64_t(value)); break;
    default: throw_runtime(std::string("fill: no CUDA kernel for dtype ") + dtype_name(t.dtype));
  }
  DS_CUDA_LAUNCH_CHECK("fill_kernel");
}

void scale(const Context& ctx, Tensor t, double alpha) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = t.numel();
  if (n == 0) return;
  if (t.dtype == DType::f64) {
    launch(scale_kernel_f64, grid_for(n, kThreads), kThreads, 0, st, dptr<double>(t), n, alpha);
  } else {
    dispatch_fb(t.dtype, "scale", [&](auto zero) {
      using T = decltype(zero);
      launch(scale_kernel<T>, grid_for(n, kThreads), kThreads, 0, st, dptr<T>(t), n, float(alpha));
    });
  }
  DS_CUDA_LAUNCH_CHECK("scale_kernel");
}

void axpy(const Context& ctx, Tensor y, double alpha, Tensor x) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = y.numel();
  if (n == 0) return;
  dispatch_fb(y.dtype, "axpy", [&](auto yz) {
    using Y = decltype(yz);
    dispatch_fb(x.dtype, "axpy", [&](auto xz) {
      using X = decltype(xz);
      if constexpr (sizeof(Y) == sizeof(X)) {
        if (aligned16({y.data, x.data})) {
          constexpr int W = kVec<Y>;
          launch(axpy_kernel<Y, X, W>, grid_for(n / W + 1, kThreads), kThreads, 0, st, dptr<Y>(y), dptr<const X>(x), n,
                 float(alpha));
          return;
        }
      }
      launch(axpy_kernel<Y, X, 1>, grid_for(n, kThreads), kThreads, 0, st, dptr<Y>(y), dptr<const X>(x), n,
             float(alpha));
    });
  });
  DS_CUDA_LAUNCH_CHECK("axpy_kernel");
}

void add(const Context& ctx, Tensor out, Tensor a, Tensor b) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_fb(out.dtype, "add", [&](auto zero) {
    using T = decltype(zero);
    constexpr int W = kVec<T>;
    if (aligned16({out.data, a.data, b.data}))
      launch(add_kernel<T, W>, grid_for(n / W + 1, kThreads), kThreads, 0, st, dptr<T>(out), dptr<const T>(a),
             dptr<const T>(b), n);
    else
      launch(add_kernel<T, 1>, grid_for(n, kThreads), kThreads, 0, st, dptr<T>(out), dptr<const T>(a),
             dptr<const T>(b), n);
  });
  DS_CUDA_LAUNCH_CHECK("add_kernel");
}

// dst = src across devices and dtypes. Device-side conversions; host transfers finish before returning (the host
// buffer may be reused at once). Runs on ctx's stream, on the GPU of whichever side is on one.
void copy(const Context& ctx, Tensor dst, Tensor src) {
  const int64_t n = dst.numel();
  if (n == 0) return;
  const bool dd = dst.device.is_cuda(), sd = src.device.is_cuda();
  cudaStream_t st = stream_of(ctx);
  if (dd && sd) {
    use_device(dst.device);
    if (dst.device.index == src.device.index) {
      if (dst.dtype == src.dtype) {
        DS_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, dst.nbytes(), cudaMemcpyDeviceToDevice, st));
      } else {
        convert_on_device(st, dst.data, dst.dtype, src.data, src.dtype, n);
      }
      return;
    }
    // Across GPUs: bring src's bytes over, then convert on dst's device.
    if (dst.dtype == src.dtype) {
      DS_CUDA_CHECK(cudaMemcpyPeerAsync(dst.data, dst.device.index, src.data, src.device.index, dst.nbytes(), st));
      return;
    }
    TempBuffer tmp(src.nbytes(), st);
    DS_CUDA_CHECK(cudaMemcpyPeerAsync(tmp.get(), dst.device.index, src.data, src.device.index, src.nbytes(), st));
    convert_on_device(st, dst.data, dst.dtype, tmp.get(), src.dtype, n);
    return;
  }
  if (dd) {  // host -> device
    use_device(dst.device);
    if (dst.dtype == src.dtype) {
      DS_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, dst.nbytes(), cudaMemcpyHostToDevice, st));
    } else {
      TempBuffer tmp(src.nbytes(), st);
      DS_CUDA_CHECK(cudaMemcpyAsync(tmp.get(), src.data, src.nbytes(), cudaMemcpyHostToDevice, st));
      convert_on_device(st, dst.data, dst.dtype, tmp.get(), src.dtype, n);
    }
    DS_CUDA_CHECK(cudaStreamSynchronize(st));
    return;
  }
  // device -> host
  use_device(src.device);
  if (dst.dtype == src.dtype) {
    DS_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, dst.nbytes(), cudaMemcpyDeviceToHost, st));
  } else {
    TempBuffer tmp(dst.nbytes(), st);
    convert_on_device(st, tmp.get(), dst.dtype, src.data, src.dtype, n);
    DS_CUDA_CHECK(cudaMemcpyAsync(dst.data, tmp.get(), dst.nbytes(), cudaMemcpyDeviceToHost, st));
  }
  DS_CUDA_CHECK(cudaStreamSynchronize(st));
}

void copy_cols(const Context& ctx, Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t ncols,
               Accum acc) {
  cudaStream_t st = prepare(ctx);
  const int64_t rows = dst.rows(), dc = dst.cols(), sc = src.cols();
  if (rows == 0 || ncols == 0) return;
  if (acc == Accum::overwrite) {  // any dtype: a strided byte copy
    launch_copy_cols(st, dst, dst_col, 0, 1, src, src_col, ncols);
    return;
  }
  dispatch_fb(dst.dtype, "copy_cols", [&](auto zero) {
    using T = decltype(zero);
    launch(add_cols_kernel<T>, grid_for(rows * ncols, kThreads), kThreads, 0, st, dptr<T>(dst), dc, dst_col,
                                                                            dptr<const T>(src), sc, src_col, rows,
                                                                            ncols);
  });
  DS_CUDA_LAUNCH_CHECK("add_cols_kernel");
}

void copy_cols_repeat(const Context& ctx, Tensor dst, int64_t dst_col, int64_t stride, int64_t copies, Tensor src,
                      int64_t src_col, int64_t ncols) {
  launch_copy_cols(prepare(ctx), dst, dst_col, stride, copies, src, src_col, ncols);
}

void sum_cols_repeat(const Context& ctx, Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t stride,
                     int64_t copies, int64_t ncols, Accum acc) {
  cudaStream_t st = prepare(ctx);
  const int64_t rows = dst.rows(), dc = dst.cols(), sc = src.cols();
  if (rows == 0 || ncols == 0) return;
  // f32 or bf16 (ops.cpp's check): f64 tensors are not a CUDA dtype of this op, so the accumulator is f32.
  dispatch_fb(dst.dtype, "sum_cols_repeat", [&](auto zero) {
    using T = decltype(zero);
    constexpr int W = kVec<T>;
    T* d = dptr<T>(dst) + dst_col;
    const T* s = dptr<const T>(src) + src_col;
    const bool add = acc == Accum::add;
    // Row starts and block starts advance by dc, sc and stride elements: all must keep the 16-byte alignment.
    if (aligned16({d, s}) && dc % W == 0 && sc % W == 0 && (copies == 1 || stride % W == 0) && ncols % W == 0) {
      const int64_t words = ncols / W;
      launch(sum_cols_kernel<T, W>, grid_for(rows * words, kThreads), kThreads, 0, st, d, dc, s, sc, rows, words,
             copies, stride, add);
    } else {
      launch(sum_cols_kernel<T, 1>, grid_for(rows * ncols, kThreads), kThreads, 0, st, d, dc, s, sc, rows, ncols,
             copies, stride, add);
    }
  });
  DS_CUDA_LAUNCH_CHECK("sum_cols_kernel");
}

double sum(const Context& ctx, Tensor t) { return reduce<false>(ctx, t, "sum"); }
double sum_squares(const Context& ctx, Tensor t) { return reduce<true>(ctx, t, "sum_squares"); }

void sum_squares_into(const Context& ctx, Tensor out, const std::vector<Tensor>& ts) {
  cudaStream_t st = prepare(ctx);
  double* o = dptr<double>(out);
  for (size_t first = 0; first < ts.size(); first += kSsqTable) {
    const int count = int(std::min(ts.size() - first, size_t(kSsqTable)));
    SsqTable table{};
    int64_t chunks = 0;
    for (int j = 0; j < count; ++j) {
      const Tensor& t = ts[first + size_t(j)];
      const int32_t dt = t.dtype == DType::f32 ? 0 : t.dtype == DType::bf16 ? 1 : t.dtype == DType::f64 ? 2 : -1;
      if (dt < 0)
        throw_runtime(std::string("sum_squares_into: CUDA kernel has no ") + dtype_name(t.dtype) + " variant");
      const int64_t bytes = t.numel() * int64_t(dtype_size(t.dtype));
      table.t[j] = SsqTensor{t.data, t.numel(), chunks, dt, int32_t(is_aligned16(t.data))};
      chunks += (bytes + kSsqChunkBytes - 1) / kSsqChunkBytes;
    }
    TempBuffer part(sizeof(double) * size_t(std::max<int64_t>(chunks, 1)), st);  // stream-ordered: no host wait
    if (chunks > 0) {
      launch(ssq_partial_kernel, unsigned(chunks), kSsqThreads, 0, st, table, count, part.as<double>());
      DS_CUDA_LAUNCH_CHECK("ssq_partial_kernel");
    }
    launch(ssq_final_kernel, unsigned(count), kSsqThreads, 0, st, table, chunks,
           static_cast<const double*>(part.as<double>()), o + first);
    DS_CUDA_LAUNCH_CHECK("ssq_final_kernel");
  }
}

void sum_into(const Context& ctx, Tensor out, Tensor t) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = t.numel();
  if (n == 0) {
    DS_CUDA_CHECK(cudaMemsetAsync(out.data, 0, sizeof(double), st));  // sum()'s 0 (all-zero bytes are +0.0)
    return;
  }
  TempBuffer part(sizeof(double) * size_t(reduce_blocks(n)), st);  // stream-ordered: no host wait
  reduce_into<false>(st, t, "sum_into", part.as<double>(), dptr<double>(out));
}

std::vector<double> sum_squares_each(const Context& ctx, const std::vector<Tensor>& ts) {
  cudaStream_t st = prepare(ctx);
  std::vector<double> r(ts.size(), 0.0);
  if (ts.empty()) return r;
  TempBuffer out(sizeof(double) * ts.size(), st);
  cuda::sum_squares_into(ctx, Tensor(out.get(), DType::f64, {int64_t(ts.size())}, ctx.device), ts);
  DS_CUDA_CHECK(cudaMemcpyAsync(r.data(), out.get(), sizeof(double) * ts.size(), cudaMemcpyDeviceToHost, st));
  DS_CUDA_CHECK(cudaStreamSynchronize(st));
  return r;
}

void swiglu_forward(const Context& ctx, Tensor out, Tensor gate, Tensor up) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = out.numel();
  if (n == 0) return;
  dispatch_fb(out.dtype, "swiglu_forward", [&](auto zero) {
    using T = decltype(zero);
    constexpr int W = kVec<T>;
    if (aligned16({out.data, gate.data, up.data}))
      launch(swiglu_fwd_kernel<T, W>, grid_for(n / W + 1, kThreads), kThreads, 0, st, dptr<T>(out),
             dptr<const T>(gate), dptr<const T>(up), n);
    else
      launch(swiglu_fwd_kernel<T, 1>, grid_for(n, kThreads), kThreads, 0, st, dptr<T>(out), dptr<const T>(gate),
             dptr<const T>(up), n);
  });
  DS_CUDA_LAUNCH_CHECK("swiglu_fwd_kernel");
}

void swiglu_pair_forward(const Context& ctx, Tensor out, Tensor gate_up) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = out.numel(), F = out.cols();
  if (n == 0) return;
  dispatch_fb(out.dtype, "swiglu_pair_forward", [&](auto zero) {
    using T = decltype(zero);
    constexpr int W = kVec<T>;
    if (F % W == 0 && aligned16({out.data, gate_up.data}))
      launch(swiglu_pair_kernel<T, W>, grid_for(n / W, kThreads), kThreads, 0, st, dptr<T>(out),
             dptr<const T>(gate_up), n, F);
    else
      launch(swiglu_pair_kernel<T, 1>, grid_for(n, kThreads), kThreads, 0, st, dptr<T>(out), dptr<const T>(gate_up),
             n, F);
  });
  DS_CUDA_LAUNCH_CHECK("swiglu_pair_kernel");
}

void swiglu_pair_backward(const Context& ctx, Tensor d_gate_up, Tensor d_out, Tensor gate_up) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = d_out.numel(), F = d_out.cols();
  if (n == 0) return;
  dispatch_fb(d_out.dtype, "swiglu_pair_backward", [&](auto zero) {
    using T = decltype(zero);
    constexpr int W = kVec<T>;
    if (F % W == 0 && aligned16({d_gate_up.data, d_out.data, gate_up.data}))
      launch(swiglu_pair_bwd_kernel<T, W>, grid_for(n / W, kThreads), kThreads, 0, st, dptr<T>(d_gate_up),
             dptr<const T>(d_out), dptr<const T>(gate_up), n, F);
    else
      launch(swiglu_pair_bwd_kernel<T, 1>, grid_for(n, kThreads), kThreads, 0, st, dptr<T>(d_gate_up),
             dptr<const T>(d_out), dptr<const T>(gate_up), n, F);
  });
  DS_CUDA_LAUNCH_CHECK("swiglu_pair_bwd_kernel");
}

void swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = d_out.numel();
  if (n == 0 || (d_gate.empty() && d_up.empty())) return;
  dispatch_fb(d_out.dtype, "swiglu_backward", [&](auto zero) {
    using T = decltype(zero);
    T* dg = d_gate.empty() ? nullptr : dptr<T>(d_gate);
    T* du = d_up.empty() ? nullptr : dptr<T>(d_up);
    constexpr int W = kVec<T>;
    if (aligned16({dg, du, d_out.data, gate.data, up.data}))
      launch(swiglu_bwd_kernel<T, W>, grid_for(n / W + 1, kThreads), kThreads, 0, st, dg, du, dptr<const T>(d_out),
             dptr<const T>(gate), dptr<const T>(up), n);
    else
      launch(swiglu_bwd_kernel<T, 1>, grid_for(n, kThreads), kThreads, 0, st, dg, du, dptr<const T>(d_out),
             dptr<const T>(gate), dptr<const T>(up), n);
  });
  DS_CUDA_LAUNCH_CHECK("swiglu_bwd_kernel");
}

}  // namespace ds::cuda
