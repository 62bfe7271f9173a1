#pragma once
// One token row of the MoE gate forward (moe_gate.cu's kernel, and the fused decode dispatch in moe_decode.cu):
// scores, group limiting, top-k and the weights, by one warp, with the semantics stated in moe_gate.cu. Internal
// to kernels/.
#include <cmath>
#include <cstdint>

#include "kernels/moe_util.cuh"
#include "ops/ops.h"  // GateOptions

namespace ds::cuda {
namespace {

using moe::FPtr;

constexpr unsigned kFull = 0xffffffffu;

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}
__device__ __forceinline__ double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) v = fmax(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

// (v, i) before (w, j): higher value first, ties to the lower index; i < 0 marks "no candidate".
__device__ __forceinline__ bool before(float v, int i, float w, int j) {
  if (j < 0) return i >= 0;
  if (i < 0) return false;
  return v > w || (v == w && i < j);
}
__device__ __forceinline__ void warp_argmax(float& v, int& i) {
  for (int o = 16; o > 0; o >>= 1) {
    const float w = __shfl_xor_sync(kFull, v, o);
    const int j = __shfl_xor_sync(kFull, i, o);
    if (before(w, j, v, i)) {
      v = w;
      i = j;
    }
  }
}

struct GateArgs {
  FPtr logits, bias, scores, topk_w;
  int32_t* topk_idx;
  int64_t N;
  int E, K, G, topk_group, gsz;
  int sigmoid, method;  // method: 0 greedy, 1 group_limited_greedy, 2 noaux_tc
  int norm;
  double scaling;
};

// Per-warp shared scratch: sc[E] (the stored scores), sel[E] (masked selection scores), ex[E] (softmax exps,
// double), gs[G] group scores, keep[G], idx[K].
__host__ __device__ inline size_t gate_smem_per_warp(int E, int G, int K) {
  size_t b = size_t(E) * sizeof(double);
  b += size_t(E) * 2 * sizeof(float) + size_t(G) * (sizeof(float) + sizeof(int)) + size_t(K) * sizeof(int);
  return (b + 15) / 16 * 16;
}

inline GateArgs gate_args(const Tensor& topk_idx, const Tensor& topk_w, const Tensor& scores, const Tensor& logits,
                          const Tensor& bias, const GateOptions& opt, const char* op) {
  GateArgs a;
  a.logits = moe::fptr(logits, op, "logits");
  a.bias = moe::fptr(bias, op, "bias");
  a.scores = moe::fptr(scores, op, "scores");
  a.topk_w = moe::fptr(topk_w, op, "topk_w");
  a.topk_idx = static_cast<int32_t*>(topk_idx.data);
  a.N = moe::rows(logits);
  a.E = int(moe::cols(logits));
  a.K = opt.top_k;
  a.G = opt.n_group > 1 ? opt.n_group : 1;
  a.topk_group = opt.topk_group;
  a.gsz = a.E / a.G;
  a.sigmoid = opt.score_func == ScoreFunc::sigmoid;
  a.method = opt.topk_method == TopkMethod::greedy ? 0 : opt.topk_method == TopkMethod::group_limited_greedy ? 1 : 2;
  a.norm = opt.norm_topk_prob;
  a.scaling = opt.routed_scaling_factor;
  return a;
}

// Shared-memory copies the fused decode dispatch (moe_dispatch.cu) keeps to spare the gate global round trips: the
// logits [N, E] and the bias [E] as stored (rounded to their dtypes) to read instead of global memory, and idx
// [N, K] to receive the chosen experts besides topk_idx. nullptr: global memory only.
struct GateRowShared {
  const float* logits = nullptr;
  const float* bias = nullptr;
  int* idx = nullptr;
};

// Row n by the calling warp (all 32 lanes); base: the warp's gate_smem_per_warp(E, G, K) bytes of shared memory.
__device__ __forceinline__ void gate_row(const GateArgs& a, int64_t n, unsigned char* base, GateRowShared sh = {}) {
  using moe::ldf;
  using moe::stf;
  const int lane = threadIdx.x % 32;
  const int E = a.E, G = a.G, K = a.K;
  double* ex = reinterpret_cast<double*>(base);
  float* sc = reinterpret_cast<float*>(ex + E);
  float* sel = sc + E;
  float* gs = sel + E;
  int* keep = reinterpret_cast<int*>(gs + G);
  int* chosen = keep + G;
  const int64_t row = n * E;
  auto logit = [&](int e) { return sh.logits ? sh.logits[row + e] : ldf(a.logits, row + e); };
  // 1. scores (in double, stored in the scores dtype; selection uses the stored value, as the CPU does)
  if (a.sigmoid) {
    for (int e = lane; e < E; e += 32) {
      const double x = double(logit(e));
      const float s = float(1.0 / (1.0 + exp(-x)));
      stf(a.scores, row + e, s);
      sc[e] = moe::roundf_to(a.scores, s);
    }
  } else {
    double m = -INFINITY;
    for (int e = lane; e < E; e += 32) m = fmax(m, double(logit(e)));
    m = warp_max(m);
    double z = 0.0;
    for (int e = lane; e < E; e += 32) {
      ex[e] = exp(double(logit(e)) - m);
      z += ex[e];
    }
    z = warp_sum(z);
    for (int e = lane; e < E; e += 32) {
      const float s = float(ex[e] / z);
      stf(a.scores, row + e, s);
      sc[e] = moe::roundf_to(a.scores, s);
    }
  }
  // 2. selection scores
  for (int e = lane; e < E; e += 32) sel[e] = sc[e] + (sh.bias ? sh.bias[e] : a.bias.p ? ldf(a.bias, e) : 0.0f);
  __syncwarp();
  // 3. group limiting
  if (a.method != 0 && G > 1) {
    for (int g = lane; g < G; g += 32) {
      const float* s = sel + size_t(g) * a.gsz;
      float m1 = s[0], m2 = -INFINITY;
      for (int j = 1; j < a.gsz; ++j) {
        const float v = s[j];
        if (v > m1) {
          m2 = m1;
          m1 = v;
        } else if (v > m2) {
          m2 = v;
        }
      }
      gs[g] = a.method == 2 ? (a.gsz > 1 ? m1 + m2 : m1) : m1;
      keep[g] = 0;
    }
    __syncwarp();
    for (int r = 0; r < a.topk_group; ++r) {
      float bv = 0.0f;
      int bi = -1;
      for (int g = lane; g < G; g += 32)
        if (!keep[g] && before(gs[g], g, bv, bi)) {
          bv = gs[g];
          bi = g;
        }
      warp_argmax(bv, bi);
      if (lane == 0 && bi >= 0) keep[bi] = 1;
      __syncwarp();
    }
    for (int e = lane; e < E; e += 32)
      if (!keep[e / a.gsz]) sel[e] = -INFINITY;
    __syncwarp();
  }
  // 4. top_k over the masked selection scores, descending; taken experts tracked per lane (E <= 1024).
  uint32_t taken = 0;
  for (int k = 0; k < K; ++k) {
    float bv = 0.0f;
    int bi = -1;
    for (int j = 0, e = lane; e < E; ++j, e += 32)
      if (!(taken >> j & 1u) && before(sel[e], e, bv, bi)) {
        bv = sel[e];
        bi = e;
      }
    warp_argmax(bv, bi);
    if (bi >= 0 && bi % 32 == lane) taken |= 1u << (bi / 32);
    if (lane == 0) chosen[k] = bi;
  }
  __syncwarp();
  // 5. weights from the unbiased scores, in double and in k order (as the CPU): every lane sums them, lane k
  // divides its own (K double divisions in parallel, not in series on lane 0)
  double sum = 0.0;
  for (int k = 0; k < K; ++k) sum += double(sc[chosen[k]]);
  const double denom = a.norm ? sum + 1e-20 : 1.0;
  for (int k = lane; k < K; k += 32) {
    a.topk_idx[n * K + k] = chosen[k];
    if (sh.idx) sh.idx[n * K + k] = chosen[k];
    stf(a.topk_w, n * K + k, float(double(sc[chosen[k]]) / denom * a.scaling));
  }
  __syncwarp();
}

// gate_row's values for rows of at most 32 experts, one expert a lane, with everything in registers: no shared
// scratch and no __syncwarp between the steps, the group scores by a butterfly inside each group of lanes (gsz a
// power of two), the choices broadcast by the argmax's butterfly. gate_row keeps the general case (E > 32, groups
// of other sizes). gate_row spent ~54 us on the bench's 16,384 rows x 32 experts on the H200 (17th session's trace:
// its warps wait on shared-memory round trips and serial loops over a group by one lane).
__host__ __device__ inline bool gate_regs_ok(const GateArgs& a) {
  const bool grouped = a.method != 0 && a.G > 1;
  return a.E >= 1 && a.E <= 32 && a.K >= 1 && a.K <= a.E &&
         (!grouped || (a.E % a.G == 0 && (a.gsz & (a.gsz - 1)) == 0 && a.topk_group <= a.G));
}

// The top two values of a multiset merged from two (m1 >= m2 each): what gate_row's scan over a group finds.
__device__ __forceinline__ void top2_merge(float& m1, float& m2, float o1, float o2) {
  const float lo = fminf(m1, o1);
  m1 = fmaxf(m1, o1);
  m2 = fmaxf(lo, fmaxf(m2, o2));
}

__device__ __forceinline__ void gate_row_regs(const GateArgs& a, int64_t n) {
  using moe::ldf;
  using moe::stf;
  const int lane = threadIdx.x % 32;
  const int E = a.E, K = a.K;
  const bool live = lane < E;
  const int64_t row = n * E;
  const double x = live ? double(ldf(a.logits, row + lane)) : 0.0;
  // 1. scores: gate_row's arithmetic (E <= 32: a lane's partial sum is its one exponential)
  float s;
  if (a.sigmoid) {
    s = float(1.0 / (1.0 + exp(-x)));
  } else {
    const double m = warp_max(live ? x : -INFINITY);
    const double ex = live ? exp(x - m) : 0.0;
    const double z = warp_sum(ex);
    s = float(ex / z);
  }
  float sc = 0.0f, sel = -INFINITY;
  if (live) {
    stf(a.scores, row + lane, s);
    sc = moe::roundf_to(a.scores, s);
    sel = sc + (a.bias.p ? ldf(a.bias, lane) : 0.0f);
  }
  // 2. group limiting: every lane of group g holds its score after the butterfly
  if (a.method != 0 && a.G > 1) {
    const int gsz = a.gsz, g = lane / gsz;
    float m1 = sel, m2 = -INFINITY;
    for (int o = 1; o < gsz; o <<= 1) {
      const float o1 = __shfl_xor_sync(kFull, m1, o), o2 = __shfl_xor_sync(kFull, m2, o);
      top2_merge(m1, m2, o1, o2);
    }
    const float gs = a.method == 2 ? (gsz > 1 ? m1 + m2 : m1) : m1;
    uint32_t keep = 0;
    for (int r = 0; r < a.topk_group; ++r) {
      float bv = 0.0f;
      int bi = -1;
      if (live && !(keep >> g & 1u)) {
        bv = gs;
        bi = g;
      }
      warp_argmax(bv, bi);
      if (bi >= 0) keep |= 1u << bi;
    }
    if (!(keep >> g & 1u)) sel = -INFINITY;
  }
  // 3. top_k, descending; lane k keeps the k-th choice
  bool taken = false;
  int mine = -1;
  for (int k = 0; k < K; ++k) {
    float bv = 0.0f;
    int bi = -1;
    if (live && !taken) {
      bv = sel;
      bi = lane;
    }
    warp_argmax(bv, bi);
    taken = taken || bi == lane;
    if (lane == k) mine = bi;
  }
  // 4. weights in double, summed in k order by every lane as gate_row does
  const float my_sc = __shfl_sync(kFull, sc, mine < 0 ? 0 : mine);
  double sum = 0.0;
  for (int k = 0; k < K; ++k) sum += double(__shfl_sync(kFull, my_sc, k));
  const double denom = a.norm ? sum + 1e-20 : 1.0;
  if (lane < K) {
    a.topk_idx[n * K + lane] = mine;
    stf(a.topk_w, n * K + lane, float(double(my_sc) / denom * a.scaling));
  }
}

}  // namespace
}  // namespace ds::cuda
