// Token sampling on the GPU (issue 5): one block per row of logits draws one token and its log-prob, so a decode
// step copies n ids and n log-probs to the host instead of the n x V logits. The contract is lib/infer/sampler.cpp's
// (sampling_distribution + draw_token + token_logprob), computed in double as there:
//   * greedy (temperature <= 0): the argmax, lowest id on ties; log-prob under softmax(logits) (T = 1);
//   * else p = softmax(logits / T) (division by T, the max subtracted, as the CPU does); with top-k / top-p the kept
//     set is the prefix of the order (probability descending, lower id first on ties) holding the top-k and then
//     the smallest nucleus with mass >= top_p, renormalised; no sort: the boundary (a logit key and a cut id among
//     the ties at that key) is found by a bitwise search over the order-preserving uint32 keys of the logits;
//   * the draw: the first id (in id order) where the cumulative probability exceeds u (u from the host: the same
//     Philox value the CPU engine draws), the last kept id if rounding leaves u beyond the summed mass;
//   * log-prob: log softmax(logits / T)[token] (before truncation).
// Sums run in a different order than the CPU's left-to-right loop, so a draw can differ from the CPU's only when u
// falls within a few ulps of a cumulative boundary; greedy choices are identical.
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/common.cuh"
#include "kernels/cuda_device.h"
#include "kernels/cuda_ops.h"

namespace ds::cuda {

namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ uint32_t order_key(float x) {  // monotone in x (for non-NaN x)
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// x / t, without the double division when t is 1 (x / 1 is x exactly): the common temperature of RL rollouts.
__device__ __forceinline__ double over_t(double x, double t) { return t == 1.0 ? x : x / t; }

// f over sh[0..nw) left to right (1 <= nw <= 32). Eight loads go out at a time: in a plain loop over nw each
// combine waited for its own shared-memory load, ~30 cycles a warp in series.
template <class V, class F> __device__ __forceinline__ V fold_warps(const V* sh, int nw, F f) {
  V r = sh[0];
#pragma unroll
  for (int w0 = 0; w0 < 32; w0 += 8) {
    if (w0 >= nw) break;
    V x[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) x[j] = w0 + j < nw ? sh[w0 + j] : V{};
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (w0 + j > 0 && w0 + j < nw) r = f(r, x[j]);
  }
  return r;
}

// Reduction over the block with f (associative, applied in a fixed order); every thread gets the result.
template <class V, class F> __device__ V block_reduce(V v, F f, V* sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = f(v, __shfl_xor_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  return fold_warps(sh, nw, f);
}

struct Sum {
  template <class V> __device__ V operator()(V a, V b) const { return a + b; }
};
struct Max {
  template <class V> __device__ V operator()(V a, V b) const { return a > b ? a : b; }
};
struct Min {
  template <class V> __device__ V operator()(V a, V b) const { return a < b ? a : b; }
};

// Exclusive prefix sum of v over the threads (in thread order).
__device__ double block_excl_scan(double v, double* sh) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  double x = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  double ex = __shfl_up_sync(0xffffffffu, x, 1);
  if (lane == 0) ex = 0.0;
  __syncthreads();
  if (lane == 31) sh[warp] = x;
  __syncthreads();
  const double off = warp > 0 ? fold_warps(sh, warp, Sum{}) : 0.0;  // 0.0 + a == a: the same sum as from 0.0
  return off + ex;
}

// The first index i in [lo, hi) (id order) where base + sum_{lo <= j <= i} w(j) > target (>= target when ge), over
// entries with w > 0; hi when none. Each thread walks a contiguous segment from its exclusive prefix.
template <class W>
__device__ int64_t first_crossing(W w, int64_t lo, int64_t hi, double base, double target, bool ge, double* shd,
                                  long long* shi) {
  const int64_t seg = (hi - lo + blockDim.x - 1) / blockDim.x, b = lo + int64_t(threadIdx.x) * seg;
  const int64_t e = b + seg < hi ? b + seg : hi;
  double s = 0.0;
  for (int64_t i = b; i < e; ++i) s += w(i);
  double c = base + block_excl_scan(s, shd);
  long long found = hi;
  for (int64_t i = b; i < e; ++i) {
    const double wi = w(i);
    if (!(wi > 0.0)) continue;
    c += wi;
    if (ge ? c >= target : c > target) {
      found = i;
      break;
    }
  }
  return block_reduce<long long>(found, Min{}, shi);
}

// A top-p search round decides on a float sum when it is this far from top_p: the sum of float(p_i) is within
// 2^-24 of the exact double sum (relative, the masses adding to at most 1) plus the double sums' own rounding
// (~V ulps), both far below it; closer sums are recomputed exactly.
constexpr double kApproxMargin = 1e-6;

// Row `row` by the whole block (any multiple of 32 threads): the full algorithm above. pf: V floats of scratch for
// this row (or nullptr): the top-p search keeps float copies of the probabilities there instead of recomputing
// each one's double exp in each of its 32 rounds.
template <class T>
__device__ void sample_row(int32_t* __restrict__ tokens, double* __restrict__ logprobs, const T* __restrict__ logits,
                           const double* __restrict__ params, int64_t V, int64_t row, float* __restrict__ pf) {
  __shared__ double shd[32];
  __shared__ long long shi[32];
  __shared__ unsigned long long shu[32];
  const T* l = logits + row * V;
  const double temperature = params[row * 4 + 0], top_p = params[row * 4 + 1], u = params[row * 4 + 3];
  const int64_t top_k = int64_t(params[row * 4 + 2]);
  const bool greedy = !(temperature > 0.0);
  const double t = greedy ? 1.0 : temperature;

  // softmax(l / t): max and normaliser (also the log-prob's)
  double mx = -INFINITY;  // max of l / t = (max of l) / t: the division is monotone for t > 0
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) mx = fmax(mx, ldd(l[i]));
  mx = over_t(block_reduce<double>(mx, Max{}, shd), t);
  double z = 0.0;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) z += exp(over_t(ldd(l[i]), t) - mx);
  z = block_reduce<double>(z, Sum{}, shd);

  int64_t token;
  if (greedy) {  // argmax, lowest id on ties
    float best = -INFINITY;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x) best = fmaxf(best, ldf(l[i]));
    best = block_reduce<double>(double(best), Max{}, shd);
    long long first = V;
    for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
      if (ldf(l[i]) == best && i < first) first = i;
    token = block_reduce<long long>(first, Min{}, shi);
    if (token >= V) token = 0;  // all NaN: the CPU's loop keeps id 0
  } else {
    auto key = [&](int64_t i) { return order_key(ldf(l[i])); };
    auto prob = [&](int64_t i) { return exp(over_t(ldd(l[i]), t) - mx) / z; };
    const bool use_k = top_k > 0 && top_k < V;
    // top-k: the largest key tk with count(key >= tk) >= k, then the first ties at tk (id order) up to k in all
    uint32_t tk = 0;
    int64_t cut_k = V;
    if (use_k) {
      for (int bit = 31; bit >= 0; --bit) {
        const uint32_t cand = tk | (1u << bit);
        unsigned long long cnt = 0;
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x) cnt += key(i) >= cand;
        cnt = block_reduce<unsigned long long>(cnt, Sum{}, shu);
        if (cnt >= (unsigned long long)top_k) tk = cand;
      }
      unsigned long long gt = 0;
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x) gt += key(i) > tk;
      gt = block_reduce<unsigned long long>(gt, Sum{}, shu);
      const double need = double(top_k - int64_t(gt));
      const int64_t last = first_crossing([&](int64_t i) { return key(i) == tk ? 1.0 : 0.0; }, 0, V, 0.0, need, true,
                                          shd, shi);
      cut_k = last < V ? last + 1 : V;
    }
    auto in_k = [&](int64_t i) {
      if (!use_k) return true;
      const uint32_t k = key(i);
      return k > tk || (k == tk && i < cut_k);
    };
    // top-p within the top-k prefix: the largest key tp whose prefix mass M(tp) >= top_p (and > 0), then the
    // ties at tp in id order until the mass reaches top_p
    uint32_t tp = 0;
    int64_t cut_p = V;
    bool use_p = top_p < 1.0;
    if (use_p) {
      double total = 0.0;
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
        if (in_k(i)) total += prob(i);
      total = block_reduce<double>(total, Sum{}, shd);
      if (total < top_p) {
        use_p = false;  // the whole top-k set (the CPU loop runs out of elements)
      } else {
        if (pf) {  // one double exp an element here, not one a round
          for (int64_t i = threadIdx.x; i < V; i += blockDim.x) pf[i] = in_k(i) ? float(prob(i)) : 0.0f;
          __syncthreads();  // the block's global writes are visible to the block
        }
        for (int bit = 31; bit >= 0; --bit) {
          const uint32_t cand = tp | (1u << bit);
          double ma = 0.0;
          if (pf) {
            for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
              if (key(i) >= cand) ma += double(pf[i]);
            ma = block_reduce<double>(ma, Sum{}, shd);
          }
          bool take;
          if (pf && fabs(ma - top_p) > kApproxMargin) {  // (false for a NaN sum)
            take = ma > top_p;
          } else {  // the exact sum decides
            double m = 0.0;
            for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
              if (key(i) >= cand && in_k(i)) m += prob(i);
            m = block_reduce<double>(m, Sum{}, shd);
            take = m >= top_p && m > 0.0;
          }
          if (take) tp = cand;
        }
        double gt = 0.0;
        for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
          if (key(i) > tp && in_k(i)) gt += prob(i);
        gt = block_reduce<double>(gt, Sum{}, shd);
        const int64_t last = first_crossing(
            [&](int64_t i) { return key(i) == tp && in_k(i) ? prob(i) : 0.0; }, 0, V, gt, top_p, true, shd, shi);
        cut_p = last < V ? last + 1 : V;
      }
    }
    auto kept = [&](int64_t i) {
      if (!in_k(i)) return false;
      if (!use_p) return true;
      const uint32_t k = key(i);
      return k > tp || (k == tp && i < cut_p);
    };
    if (!use_k && !use_p) {  // the CPU draws from p itself
      token = first_crossing([&](int64_t i) { return prob(i); }, 0, V, 0.0, u, false, shd, shi);
    } else {  // renormalised q = p / kept mass, as the CPU divides
      double km = 0.0;
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
        if (kept(i)) km += prob(i);
      km = block_reduce<double>(km, Sum{}, shd);
      token = first_crossing([&](int64_t i) { return kept(i) ? prob(i) / km : 0.0; }, 0, V, 0.0, u, false, shd,
                             shi);
    }
    if (token >= V) {  // u beyond the summed mass: the last id with a positive probability
      long long last = 0;
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
        if (kept(i) && prob(i) > 0.0 && i > last) last = i;
      token = block_reduce<long long>(last, Max{}, shi);
    }
  }
  if (threadIdx.x == 0) {
    tokens[row] = int32_t(token);
    logprobs[row] = over_t(ldd(l[token]), t) - mx - log(z);
  }
}

template <class T>
__global__ void __launch_bounds__(kThreads) sample_kernel(int32_t* __restrict__ tokens, double* __restrict__ logprobs,
                                                          const T* __restrict__ logits,
                                                          const double* __restrict__ params, int64_t V,
                                                          float* __restrict__ pf) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  sample_row(tokens, logprobs, logits, params, V, blockIdx.x, pf ? pf + blockIdx.x * V : nullptr);
}

// Few rows, large V: one block per row leaves the GPU idle and spends ~60 us on a 32k vocabulary (three passes of
// double exp on one SM). Rows that are greedy or plain (no top-k / top-p) split the vocabulary over gridDim.y
// blocks: each writes its chunk's max m_s and sum z_s = sum exp(l / T - m_s) (and the greedy argmax); the last
// block of the row to finish (an atomic ticket) combines them in chunk order — mx = max m_s, z = sum z_s exp(m_s -
// mx) — finds the chunk where the cumulative mass passes u and walks only that chunk, element by element, as the
// one-block kernel walks all of V (the next chunk if rounding leaves u past it). Rows with top-k or top-p run the
// one-block algorithm in their first block. Tickets reset themselves (the last block zeroes its row's).
constexpr int64_t kSplitRows = 4096, kSplitMax = 32;  // rows a call, chunks a row
constexpr size_t kTopPScratchMax = size_t(256) << 20;  // the top-p scratch's largest size
struct SplitPart {
  double m, z;  // chunk max of l / T, and sum of exp(l / T - m)
  float best;   // greedy: the chunk's largest logit and its lowest id
  long long best_id;
};

template <class T>
__global__ void __launch_bounds__(kThreads)
    sample_split_kernel(int32_t* __restrict__ tokens, double* __restrict__ logprobs, const T* __restrict__ logits,
                        const double* __restrict__ params, int64_t V, SplitPart* part, unsigned* tickets,
                        float* __restrict__ pf) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  __shared__ double shd[32];
  __shared__ long long shi[32];
  __shared__ bool last;
  const int64_t row = blockIdx.x;
  const int s = blockIdx.y, S = gridDim.y;
  const double temperature = params[row * 4 + 0], top_p = params[row * 4 + 1];
  const int64_t top_k = int64_t(params[row * 4 + 2]);
  const bool greedy = !(temperature > 0.0);
  if (!greedy && ((top_k > 0 && top_k < V) || top_p < 1.0)) {  // truncated: the one-block algorithm
    if (s == 0) sample_row(tokens, logprobs, logits, params, V, row, pf ? pf + row * V : nullptr);
    return;
  }
  const double t = greedy ? 1.0 : temperature, u = params[row * 4 + 3];
  const T* l = logits + row * V;
  const int64_t chunk = (V + S - 1) / S, b = s * chunk, e = b + chunk < V ? b + chunk : V;
  double m = -INFINITY;  // max of l / t = (max of l) / t: the division is monotone for t > 0
  for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) m = fmax(m, ldd(l[i]));
  m = over_t(block_reduce<double>(m, Max{}, shd), t);
  double z = 0.0;
  for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) z += exp(over_t(ldd(l[i]), t) - m);
  z = block_reduce<double>(z, Sum{}, shd);
  float best = -INFINITY;
  long long best_id = V;
  if (greedy) {
    for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x) best = fmaxf(best, ldf(l[i]));
    best = float(block_reduce<double>(double(best), Max{}, shd));
    for (int64_t i = b + threadIdx.x; i < e; i += blockDim.x)
      if (ldf(l[i]) == best && i < best_id) best_id = i;
    best_id = block_reduce<long long>(best_id, Min{}, shi);
  }
  if (threadIdx.x == 0) {
    part[row * S + s] = SplitPart{m, z, best, best_id};
    __threadfence();  // the partial is visible before the ticket says so
    last = atomicAdd(tickets + row, 1u) == unsigned(S - 1);
  }
  __syncthreads();
  if (!last) return;
  __threadfence();
  // The last block: the S partials into shared memory, one thread each (a loop of L2 reads in every thread cost an
  // L2 round trip per chunk), then every thread combines them in chunk order (the same numbers in every thread).
  __shared__ SplitPart P[kSplitMax];
  if (threadIdx.x < S) {
    const SplitPart* g = part + row * S + threadIdx.x;
    P[threadIdx.x] = SplitPart{__ldcg(&g->m), __ldcg(&g->z), __ldcg(&g->best), __ldcg(&g->best_id)};
  }
  __syncthreads();
  double mx = -INFINITY;
  for (int c = 0; c < S; ++c) mx = fmax(mx, P[c].m);
  double zt = 0.0;
  for (int c = 0; c < S; ++c) zt += P[c].z * exp(P[c].m - mx);
  int64_t token = V;
  if (greedy) {
    float bb = -INFINITY;
    for (int c = 0; c < S; ++c) {
      const float bc = P[c].best;
      const long long ic = P[c].best_id;
      if (ic < V && (token >= V || bc > bb)) {  // chunks in id order: ties keep the earlier (lower) id
        bb = bc;
        token = ic;
      }
    }
    if (token >= V) token = 0;  // all NaN: the CPU's loop keeps id 0
  } else {
    auto prob = [&](int64_t i) { return exp(over_t(ldd(l[i]), t) - mx) / zt; };
    double base = 0.0;
    for (int c = 0; c < S && token >= V; ++c) {
      const double mass = P[c].z * exp(P[c].m - mx) / zt;
      if (base + mass > u || c == S - 1) {  // u falls in chunk c (by the chunk sums): walk its elements
        const int64_t cb = c * chunk, ce = cb + chunk < V ? cb + chunk : V;
        const int64_t found = first_crossing(prob, cb, ce, base, u, false, shd, shi);
        if (found < ce) token = found;
      }
      base += mass;
    }
    if (token >= V) {  // u beyond the summed mass: the last id with a positive probability
      long long lastp = 0;
      for (int64_t i = threadIdx.x; i < V; i += blockDim.x)
        if (prob(i) > 0.0 && i > lastp) lastp = i;
      token = block_reduce<long long>(lastp, Max{}, shi);
    }
  }
  if (threadIdx.x == 0) {
    tokens[row] = int32_t(token);
    logprobs[row] = over_t(ldd(l[token]), t) - mx - log(zt);
    tickets[row] = 0;  // ready for the next call (later calls on this stream start after this kernel ends)
  }
}

// The split kernel's partials and tickets: one fixed buffer per (device, stream), allocated on first use with the
// tickets zeroed, never reallocated (captured graphs hold its address) and never freed.
struct SplitScratch {
  SplitPart* part = nullptr;
  unsigned* tickets = nullptr;
};

SplitScratch split_scratch(cudaStream_t st) {
  static std::mutex mu;
  static std::map<std::pair<int, cudaStream_t>, SplitScratch> bufs;
  int dev = 0;
  DS_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  SplitScratch& b = bufs[{dev, st}];
  if (!b.part) {
    DS_CUDA_CHECK(cudaMalloc(&b.part, size_t(kSplitRows * kSplitMax) * sizeof(SplitPart)));
    DS_CUDA_CHECK(cudaMalloc(&b.tickets, size_t(kSplitRows) * sizeof(unsigned)));
    DS_CUDA_CHECK(cudaMemset(b.tickets, 0, size_t(kSplitRows) * sizeof(unsigned)));
  }
  return b;
}

}  // namespace

void sample_tokens(const Context& ctx, Tensor tokens, Tensor logprobs, Tensor logits, Tensor params) {
  cudaStream_t st = prepare(ctx);
  const int64_t n = logits.rows(), V = logits.cols();
  if (n == 0) return;
  // chunks per row: about two blocks per SM in all, at least 2,048 entries a chunk
  const int64_t chunks = std::min<int64_t>({kSplitMax, std::max<int64_t>(1, 264 / n), V / 2048});
  static const bool split_on = env_switch("DS_SAMPLE_SPLIT");
  // the top-p search's float scratch, n x V (stream_scratch keeps graphs' addresses); nullptr — the exact
  // recomputation — past kTopPScratchMax or under a capture that needs more than there is
  const size_t pf_bytes = size_t(n) * size_t(V) * sizeof(float);
  size_t have = 0;
  void* pf_buf = pf_bytes <= kTopPScratchMax ? stream_scratch(st, ScratchUse::sample_truncation, pf_bytes, have) : nullptr;
  float* pf = have >= pf_bytes ? static_cast<float*>(pf_buf) : nullptr;
  dispatch_fb(logits.dtype, "sample_tokens", [&](auto zero) {
    using T = decltype(zero);
    if (chunks >= 2 && n <= kSplitRows && split_on) {
      const SplitScratch sc = split_scratch(st);
      launch(sample_split_kernel<T>, dim3(unsigned(n), unsigned(chunks)), kThreads, 0, st, dptr<int32_t>(tokens),
             dptr<double>(logprobs), dptr<T>(logits), dptr<double>(params), V, sc.part, sc.tickets, pf);
      DS_CUDA_LAUNCH_CHECK("sample_split_kernel");
      return;
    }
    launch(sample_kernel<T>, unsigned(n), kThreads, 0, st, dptr<int32_t>(tokens), dptr<double>(logprobs),
           dptr<T>(logits), dptr<double>(params), V, pf);
    DS_CUDA_LAUNCH_CHECK("sample_kernel");
  });
}

}  // namespace ds::cuda
