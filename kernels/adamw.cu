// CUDA twin of AdamW (lib/ops/cpu/adamw.cpp is the reference): f32 master parameters, moments f32 or bf16
// (DeepSeek-V3's optimizer state: stored rounded, the step uses them unrounded), gradients f32 or bf16, the update
// in f32 with the bias corrections computed once on the host in double.
// Also all_finite(): a NaN/inf scan (one flag word, one synchronisation) for skipping a step on overflow, and
// grad_clip_verdict(): the step's clip scale and skip decision on the device.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <tuple>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/cuda_ops.h"
#include "ops/step_verdict.h"

namespace ds::cuda {

namespace {

struct Hyper {
  float lr, b1, b2, inv_c1, inv_c2, eps, wd, grad_scale;
  const double* verdict;  // grad_clip_verdict's (scale, skip, norm) on the device, or null (AdamWOptions::verdict)
};

// With a verdict: false on a skipped step (the kernel writes nothing), else its scale in h. Each kernel's first step.
__device__ __forceinline__ bool adamw_go(Hyper& h) {
  if (!h.verdict) return true;
  if (h.verdict[1] != 0.0) return false;
  h.grad_scale = float(h.verdict[0]);  // as hyper() converts grad_scale on the host
  return true;
}

// One element: the moments and the parameter in place; returns the new parameter.
__device__ __forceinline__ float adamw_one(float& p, float g, float& m, float& v, const Hyper& h) {
  const float gi = g * h.grad_scale;
  m = h.b1 * m + (1.0f - h.b1) * gi;
  v = h.b2 * v + (1.0f - h.b2) * gi * gi;
  p = p - h.lr * ((m * h.inv_c1) / (sqrtf(v * h.inv_c2) + h.eps) + h.wd * p);
  return p;
}

// Element i. M: the moments' type; C: the compute copy's type (written when c is not null; float when there is
// none).
template <class G, class M, class C>
__device__ __forceinline__ void adamw_at(float* __restrict__ p, const G* __restrict__ g, M* __restrict__ m,
                                         M* __restrict__ v, C* __restrict__ c, int64_t i, const Hyper& h) {
  float pi = p[i], mi = ldf(m[i]), vi = ldf(v[i]);
  adamw_one(pi, ldf(g[i]), mi, vi, h);
  m[i] = cvt<M>(mi);
  v[i] = cvt<M>(vi);
  p[i] = pi;
  if (c) c[i] = cvtd<C>(double(pi));  // as copy() converts
}

template <class G, class M, class C>
__global__ void adamw_kernel(float* __restrict__ p, const G* __restrict__ g, M* __restrict__ m, M* __restrict__ v,
                             C* __restrict__ c, int64_t n, Hyper h) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  if (!adamw_go(h)) return;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    adamw_at(p, g, m, v, c, i, h);
}

// Elements 4 i .. 4 i + 3 as one 16-byte word of p (8 or 16 bytes of g, m, v, c): adamw_at's arithmetic for each.
template <class G, class M, class C>
__device__ __forceinline__ void adamw_at4(float* __restrict__ p, const G* __restrict__ g, M* __restrict__ m,
                                          M* __restrict__ v, C* __restrict__ c, int64_t i, const Hyper& h) {
  Pack<float, 4> pp = ld_pack<float, 4>(p + 4 * i);
  Pack<M, 4> mm = ld_pack<M, 4>(m + 4 * i), vv = ld_pack<M, 4>(v + 4 * i);
  const Pack<G, 4> gg = ld_pack<G, 4>(g + 4 * i);
  Pack<C, 4> cc;
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    float mj = ldf(mm.v[j]), vj = ldf(vv.v[j]);
    cc.v[j] = cvtd<C>(double(adamw_one(pp.v[j], ldf(gg.v[j]), mj, vj, h)));
    mm.v[j] = cvt<M>(mj);
    vv.v[j] = cvt<M>(vj);
  }
  st_pack(m + 4 * i, mm);
  st_pack(v + 4 * i, vv);
  st_pack(p + 4 * i, pp);
  if (c) st_pack(c + 4 * i, cc);
}

// The same update four elements a thread (16-byte words of p; 8 or 16 of g, m, v and c: all arrays 16-byte
// aligned), the n % 4 tail element-wise. Bits equal to adamw_kernel's: the same arithmetic per element.
template <class G, class M, class C>
__global__ void adamw_vec4_kernel(float* __restrict__ p, const G* __restrict__ g, M* __restrict__ m,
                                  M* __restrict__ v, C* __restrict__ c, int64_t n, Hyper h) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  if (!adamw_go(h)) return;
  const int64_t n4 = n / 4, stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  for (int64_t i = tid; i < n4; i += stride) {
    adamw_at4(p, g, m, v, c, i, h);
  }
  for (int64_t i = 4 * n4 + tid; i < n; i += stride) adamw_at(p, g, m, v, c, i, h);
}

// adamw_update_many: a table of tensors cut into chunks of adam_chunk() elements, a block a chunk (chunk0: a tensor's
// first chunk number; the block finds its tensor by binary search), each element updated as adamw_vec4_kernel
// updates it (the same arithmetic, so the same bits). Every pointer 16-byte aligned (the launcher's condition).
//
// Elements a block: short blocks matter when the update overlaps the training step (lib/train/optimizer.h): a
// kernel of the step that needs a whole SM waits for the update's blocks resident there to finish, and with 8
// blocks an SM sharing HBM with the step a block of 8192 lived ~60 us (the 17th session's trace). DS_ADAM_CHUNK
// sets it (a power of two from 1024) for A/Bs.
int64_t adam_chunk() {
  static const int64_t c = [] {
    const char* v = std::getenv("DS_ADAM_CHUNK");
    const int64_t n = v ? std::atoll(v) : 2048;
    return n >= 1024 && (n & (n - 1)) == 0 ? n : int64_t(2048);
  }();
  return c;
}
// The table travels in the kernel's parameters, kAdamTable tensors a launch (3 KB of the 4 KB classic limit): no
// staging copy on the stream, and no scratch to allocate for it.
constexpr int kAdamTable = 48;
struct AdamTensor {
  float* p;
  const void* g;
  void* m;
  void* v;
  void* c;  // the compute copy, or null
  int64_t n, chunk0;
  float wd;
};

struct AdamTable {
  AdamTensor t[kAdamTable];
};
static_assert(sizeof(AdamTable) + sizeof(Hyper) + sizeof(int) + sizeof(int64_t) <= 4096,
              "adamw_many_kernel's parameters");

template <class G, class M, class C>
__global__ void adamw_many_kernel(const __grid_constant__ AdamTable table, int ntensors, int64_t chunk_elems, Hyper h) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  if (!adamw_go(h)) return;
  const int64_t chunk = blockIdx.x;
  int lo = 0, hi = ntensors - 1;  // the last tensor whose chunk0 <= chunk
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (table.t[mid].chunk0 <= chunk) lo = mid;
    else hi = mid - 1;
  }
  const AdamTensor t = table.t[lo];
  h.wd = t.wd;
  const int64_t e0 = (chunk - t.chunk0) * chunk_elems, n = min(chunk_elems, t.n - e0);
  float* p = t.p + e0;
  const G* g = static_cast<const G*>(t.g) + e0;
  M* m = static_cast<M*>(t.m) + e0;
  M* v = static_cast<M*>(t.v) + e0;
  C* c = t.c ? static_cast<C*>(t.c) + e0 : nullptr;
  const int64_t n4 = n / 4;
  for (int64_t i = threadIdx.x; i < n4; i += blockDim.x) {
    adamw_at4(p, g, m, v, c, i, h);
  }
  for (int64_t i = 4 * n4 + threadIdx.x; i < n; i += blockDim.x) adamw_at(p, g, m, v, c, i, h);
}

template <class T> __global__ void nonfinite_kernel(const T* __restrict__ p, int64_t n, int* __restrict__ flag) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    bad |= !isfinite(ldf(p[i]));
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}
__global__ void nonfinite_kernel_f64(const double* __restrict__ p, int64_t n, int* __restrict__ flag) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  bool bad = false;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    bad |= !isfinite(p[i]);
  if (__syncthreads_or(bad) && threadIdx.x == 0) atomicOr(flag, 1);
}

}  // namespace

namespace {

Hyper hyper(const AdamWOptions& opt) {
  const double c1 = 1.0 - std::pow(opt.beta1, double(opt.step)), c2 = 1.0 - std::pow(opt.beta2, double(opt.step));
  return Hyper{float(opt.lr),   float(opt.beta1), float(opt.beta2),        float(1.0 / c1),
               float(1.0 / c2), float(opt.eps),   float(opt.weight_decay), float(opt.grad_scale),
               opt.verdict.empty() ? nullptr : static_cast<const double*>(opt.verdict.data)};
}

// The verdict in one block: the values to check in parallel, the sums of squares staged through shared memory and
// added by one thread in order (the host's order, so the host's bits), then step_verdict.
constexpr int kVerdictThreads = 256, kVerdictStage = 1024;
__global__ void grad_clip_verdict_kernel(double* __restrict__ out, const double* __restrict__ ssq, int64_t n,
                                         const double* __restrict__ finite, int64_t nf, double grad_scale,
                                         double max_norm, int force_skip) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  __shared__ double stage[kVerdictStage];
  bool bad = false;
  for (int64_t i = threadIdx.x; i < nf; i += blockDim.x) bad |= !isfinite(finite[i]);
  bad = __syncthreads_or(bad);
  double ss = 0.0;
  for (int64_t base = 0; base < n; base += kVerdictStage) {
    const int m = int(n - base < kVerdictStage ? n - base : int64_t(kVerdictStage));
    for (int i = threadIdx.x; i < m; i += blockDim.x) stage[i] = ssq[base + i];
    __syncthreads();
    if (threadIdx.x == 0)
      for (int i = 0; i < m; ++i) ss += stage[i];
    __syncthreads();
  }
  if (threadIdx.x != 0) return;
  const StepVerdict r = step_verdict(ss, !bad && !force_skip, grad_scale, max_norm);
  out[0] = r.scale;
  out[1] = r.skip;
  out[2] = r.norm;
}

}  // namespace

void grad_clip_verdict(const Context& ctx, Tensor verdict, Tensor ssq, Tensor finite, double grad_scale,
                       double max_norm, bool force_skip) {
  cudaStream_t st = prepare(ctx);
  launch(grad_clip_verdict_kernel, 1, kVerdictThreads, 0, st, dptr<double>(verdict), dptr<const double>(ssq),
         ssq.numel(), finite.empty() ? nullptr : dptr<const double>(finite), finite.numel(), grad_scale, max_norm,
         int(force_skip));
  DS_CUDA_LAUNCH_CHECK("grad_clip_verdict_kernel");
}

void adamw_update_many(const Context& ctx, const std::vector<AdamWSlot>& slots, const AdamWOptions& opt) {
  cudaStream_t st = prepare(ctx);
  // One launch per (grad, moment, compute) dtype combination over the 16-byte aligned f32 parameters; any other
  // slot goes through adamw_update alone.
  std::map<std::tuple<DType, DType, int>, std::vector<const AdamWSlot*>> groups;
  for (const AdamWSlot& s : slots) {
    if (s.param.numel() == 0) continue;
    const bool fits = s.param.dtype == DType::f32 && is_aligned16(s.param.data) && is_aligned16(s.grad.data) &&
                      is_aligned16(s.m.data) && is_aligned16(s.v.data) &&
                      (s.compute.empty() || is_aligned16(s.compute.data));
    if (fits) {
      groups[{s.grad.dtype, s.m.dtype, s.compute.empty() ? -1 : int(s.compute.dtype)}].push_back(&s);
    } else {
      AdamWOptions o = opt;
      o.weight_decay = s.weight_decay;
      cuda::adamw_update(ctx, s.param, s.grad, s.m, s.v, o, s.compute);
    }
  }
  const Hyper h = hyper(opt);
  const int64_t ce = adam_chunk();
  for (const auto& [key, group] : groups) {
    const DType cdt = std::get<2>(key) < 0 ? DType::f32 : DType(std::get<2>(key));
    for (size_t first = 0; first < group.size(); first += kAdamTable) {
      AdamTable table{};
      int64_t chunks = 0;
      const int count = int(std::min(group.size() - first, size_t(kAdamTable)));
      for (int j = 0; j < count; ++j) {
        const AdamWSlot* s = group[first + size_t(j)];
        table.t[j] = {static_cast<float*>(s->param.data), s->grad.data, s->m.data, s->v.data,
                      s->compute.empty() ? nullptr : s->compute.data, s->param.numel(), chunks,
                      float(s->weight_decay)};
        chunks += (s->param.numel() + ce - 1) / ce;
      }
      dispatch_fb(std::get<0>(key), "adamw_update_many", [&](auto gz) {
        using G = decltype(gz);
        dispatch_fb(std::get<1>(key), "adamw_update_many", [&](auto mz) {
          using M = decltype(mz);
          dispatch_fb(cdt, "adamw_update_many", [&](auto cz) {
            using C = decltype(cz);
            launch(adamw_many_kernel<G, M, C>, unsigned(chunks), 256, 0, st, table, count, ce, h);
          });
        });
      });
      DS_CUDA_LAUNCH_CHECK("adamw_many_kernel");
    }
  }
}

void adamw_update(const Context& ctx, Tensor param, Tensor grad, Tensor m, Tensor v, const AdamWOptions& opt,
                  Tensor compute) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = param.numel();
  if (n == 0) return;
  const Hyper h = hyper(opt);
  dispatch_fb(grad.dtype, "adamw_update", [&](auto zero) {
    using G = decltype(zero);
    dispatch_fb(m.dtype, "adamw_update", [&](auto mzero) {
      using M = decltype(mzero);
      dispatch_fb(compute.empty() ? DType::f32 : compute.dtype, "adamw_update", [&](auto czero) {
        using C = decltype(czero);
        C* cp = compute.empty() ? nullptr : dptr<C>(compute);
        const bool vec = is_aligned16(param.data) && is_aligned16(grad.data) && is_aligned16(m.data) &&
                         is_aligned16(v.data) && (cp == nullptr || is_aligned16(cp));
        if (vec)
          launch(adamw_vec4_kernel<G, M, C>, grid_for(std::max<int64_t>(n / 4, 1), 256), 256, 0, st,
                 dptr<float>(param), dptr<const G>(grad), dptr<M>(m), dptr<M>(v), cp, n, h);
        else
          launch(adamw_kernel<G, M, C>, grid_for(n, 256), 256, 0, st, dptr<float>(param), dptr<const G>(grad),
                 dptr<M>(m), dptr<M>(v), cp, n, h);
      });
    });
  });
  DS_CUDA_LAUNCH_CHECK("adamw_kernel");
}

bool all_finite(const Context& ctx, Tensor t) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = t.numel();
  if (n == 0) return true;
  TempBuffer flag(sizeof(int), st);
  DS_CUDA_CHECK(cudaMemsetAsync(flag.get(), 0, sizeof(int), st));
  const unsigned g = grid_for(n, 256, 4096);
  if (t.dtype == DType::f64) {
    launch(nonfinite_kernel_f64, g, 256, 0, st, dptr<const double>(t), n, flag.as<int>());
  } else {
    dispatch_fb(t.dtype, "all_finite", [&](auto zero) {
      using T = decltype(zero);
      launch(nonfinite_kernel<T>, g, 256, 0, st, dptr<const T>(t), n, flag.as<int>());
    });
  }
  DS_CUDA_LAUNCH_CHECK("nonfinite_kernel");
  int h = 0;
  DS_CUDA_CHECK(cudaMemcpyAsync(&h, flag.get(), sizeof(int), cudaMemcpyDeviceToHost, st));
  DS_CUDA_CHECK(cudaStreamSynchronize(st));
  return h == 0;
}

}  // namespace ds::cuda
