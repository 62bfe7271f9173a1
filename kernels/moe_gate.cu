// MoE gate (scores, group-limited top-k, weights) and its backward, the sequence-wise balance loss and the
// auxiliary-loss-free bias update: the CUDA twins of lib/ops/cpu/moe_gate.cpp, with the same semantics
// (MODEL.md §3, ops.h): selection ties go to the lower expert / group index, dropped groups are masked to -inf,
// the weights come from the unbiased scores and are computed in double as the CPU does, so topk_idx agrees
// exactly and topk_w to the last bit of the f32 scores.
//
// One warp per token row (gate forward / backward, balance loss rows); each lane owns experts lane, lane + 32, ...
// Per-warp scratch lives in dynamic shared memory, so E is limited only by it (E <= 1024 here).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <vector>

#include "kernels/cuda_ops.h"
#include "kernels/moe_gate_row.cuh"
#include "kernels/moe_util.cuh"

namespace ds::cuda {

using moe::FPtr;
using moe::ldf;
using moe::stf;

namespace {

constexpr int kWarps = 4;  // rows per block
constexpr int kMaxExperts = 1024;
__global__ void gate_forward_kernel(GateArgs a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32;
  unsigned char* base = smem + size_t(warp) * gate_smem_per_warp(a.E, a.G, a.K);
  for (int64_t n = int64_t(blockIdx.x) * kWarps + warp; n < a.N; n += int64_t(gridDim.x) * kWarps) gate_row(a, n, base);
}

// The same rows by gate_row_regs (gate_regs_ok: at most 32 experts; no shared memory).
__global__ void gate_forward_regs_kernel(GateArgs a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int warp = threadIdx.x / 32;
  for (int64_t n = int64_t(blockIdx.x) * kWarps + warp; n < a.N; n += int64_t(gridDim.x) * kWarps) gate_row_regs(a, n);
}

int g_gate_variant = 0;  // bench hook (moe_gate_bench_variant): 1 forces gate_row

struct GateBwdArgs {
  FPtr d_logits, d_topk_w, extra, scores;
  const int32_t* topk_idx;
  int64_t N;
  int E, K, sigmoid, norm;
  double scaling;
};

// ds (double) per expert in shared memory; the top-k contributions are added by lane 0 in k order.
__global__ void gate_backward_kernel(GateBwdArgs a) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int E = a.E, K = a.K;
  double* ds = reinterpret_cast<double*>(smem) + size_t(warp) * E;
  for (int64_t n = int64_t(blockIdx.x) * kWarps + warp; n < a.N; n += int64_t(gridDim.x) * kWarps) {
    const int64_t row = n * E;
    for (int e = lane; e < E; e += 32) ds[e] = a.extra.p ? double(ldf(a.extra, row + e)) : 0.0;
    __syncwarp();
    if (lane == 0) {
      const int32_t* idx = a.topk_idx + n * K;
      const int64_t rk = n * K;
      if (a.norm) {
        double sum = 0.0, acc = 0.0;
        for (int k = 0; k < K; ++k) {
          if (idx[k] < 0 || idx[k] >= E) continue;
          const double s = double(ldf(a.scores, row + idx[k]));
          sum += s;
          acc += double(ldf(a.d_topk_w, rk + k)) * s;
        }
        const double D = sum + 1e-20;
        for (int k = 0; k < K; ++k)
          if (idx[k] >= 0 && idx[k] < E) ds[idx[k]] += a.scaling * (double(ldf(a.d_topk_w, rk + k)) / D - acc / (D * D));
      } else {
        for (int k = 0; k < K; ++k)
          if (idx[k] >= 0 && idx[k] < E) ds[idx[k]] += a.scaling * double(ldf(a.d_topk_w, rk + k));
      }
    }
    __syncwarp();
    if (a.sigmoid) {
      for (int e = lane; e < E; e += 32) {
        const double s = double(ldf(a.scores, row + e));
        stf(a.d_logits, row + e, float(ds[e] * s * (1.0 - s)));
      }
    } else {
      double dot = 0.0;
      for (int e = lane; e < E; e += 32) dot += ds[e] * double(ldf(a.scores, row + e));
      dot = warp_sum(dot);
      for (int e = lane; e < E; e += 32) {
        const double s = double(ldf(a.scores, row + e));
        stf(a.d_logits, row + e, float(s * (ds[e] - dot)));
      }
    }
    __syncwarp();
  }
}

// ---- balance loss ----------------------------------------------------------------------------------------

// cnt[q, e] += 1 for every (t, k) of sequence q (integer atomics: the counts do not depend on the order).
__global__ void balance_count_kernel(int* cnt, const int32_t* idx, int64_t NK, int64_t seq_len, int K, int E) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < NK; i += int64_t(gridDim.x) * blockDim.x) {
    const int e = idx[i];
    if (e < 0 || e >= E) continue;
    const int64_t q = i / K / seq_len;
    atomicAdd(cnt + q * E + e, 1);
  }
}

// One warp per row t of sequence q: z = sum_e s, fs = sum_e f_e s, f_e = cnt[q, e] * E / (K T).
// Forward writes fs / z per row; backward adds coef * (f_e / z - fs / z^2) to d_scores.
__global__ void balance_rows_kernel(FPtr scores, const int* cnt, int64_t N, int64_t seq_len, int E, int K,
                                    double* row_val, FPtr d_scores, double coef) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const double fscale = double(E) / double(int64_t(K) * seq_len);
  for (int64_t n = int64_t(blockIdx.x) * kWarps + warp; n < N; n += int64_t(gridDim.x) * kWarps) {
    const int* c = cnt + (n / seq_len) * E;
    const int64_t row = n * E;
    double z = 0.0, fs = 0.0;
    for (int e = lane; e < E; e += 32) {
      const double s = double(ldf(scores, row + e));
      z += s;
      fs += double(c[e]) * fscale * s;
    }
    z = warp_sum(z);
    fs = warp_sum(fs);
    if (row_val) {
      if (lane == 0) row_val[n] = fs / z;
    } else {
      for (int e = lane; e < E; e += 32) {
        const double g = coef * (double(c[e]) * fscale / z - fs / (z * z));
        stf(d_scores, row + e, ldf(d_scores, row + e) + float(g));
      }
    }
  }
}

// bias[e] += gamma * sign(mean(load) - load[e]); one block a layer, up to kBiasTable layers a launch (the table in
// the kernel's parameters: the trainer's eleven updates a step were eleven launches, ~0.24 ms of the step's stream
// between steps beside the optimizer). The loads are integers, so their sum in double is exact in any order (below
// 2^53).
constexpr int kBiasTable = 64;
struct BiasTable {
  FPtr bias[kBiasTable];
  const int64_t* load[kBiasTable];
  int E[kBiasTable];
};

__global__ void bias_update_kernel(const __grid_constant__ BiasTable t, double gamma, const double* verdict) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  if (verdict && verdict[1] != 0.0) return;  // grad_clip_verdict's skipped step
  __shared__ double part[32];
  const FPtr bias = t.bias[blockIdx.x];
  const int64_t* load = t.load[blockIdx.x];
  const int E = t.E[blockIdx.x];
  double s = 0.0;
  for (int e = threadIdx.x; e < E; e += blockDim.x) s += double(load[e]);
  s = warp_sum(s);
  if (threadIdx.x % 32 == 0) part[threadIdx.x / 32] = s;
  __syncthreads();
  if (threadIdx.x < 32) {
    double v = threadIdx.x < blockDim.x / 32 ? part[threadIdx.x] : 0.0;
    v = warp_sum(v);
    if (threadIdx.x == 0) part[0] = v;
  }
  __syncthreads();
  const double mean = part[0] / double(E);
  for (int e = threadIdx.x; e < E; e += blockDim.x) {
    const double diff = mean - double(load[e]);
    stf(bias, e, ldf(bias, e) + float(gamma * double((diff > 0) - (diff < 0))));
  }
}

unsigned row_blocks(int64_t N) { return moe::grid_for(N, kWarps, 1 << 16); }

void check_experts(int E, const char* op) {
  if (E > kMaxExperts)
    throw_runtime(std::string(op) + ": the CUDA kernel handles at most " + std::to_string(kMaxExperts) +
                  " experts, got " + std::to_string(E));
}

}  // namespace

void moe_gate_forward(const Context& ctx, Tensor topk_idx, Tensor topk_w, Tensor scores, Tensor logits, Tensor bias,
                      const GateOptions& opt) {
  const char* op = "moe_gate_forward";
  const int64_t N = moe::rows(logits);
  const int E = int(moe::cols(logits)), K = opt.top_k;
  check_experts(E, op);
  if (N == 0) return;
  moe::set_device(ctx, op);
  const GateArgs a = gate_args(topk_idx, topk_w, scores, logits, bias, opt, op);
  if (g_gate_variant == 0 && gate_regs_ok(a)) {
    launch(gate_forward_regs_kernel, row_blocks(N), kWarps * 32, 0, moe::stream_of(ctx), a);
    moe::launched(op);
    return;
  }
  const size_t smem = gate_smem_per_warp(E, a.G, K) * kWarps;
  if (smem > 48 * 1024)
    moe::ok(cudaFuncSetAttribute(gate_forward_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)), op,
            "shared memory");
  launch(gate_forward_kernel, row_blocks(N), kWarps * 32, smem, moe::stream_of(ctx), a);
  moe::launched(op);
}

void moe_gate_backward(const Context& ctx, Tensor d_logits, Tensor d_topk_w, Tensor d_scores_extra, Tensor scores,
                       Tensor topk_idx, const GateOptions& opt) {
  const char* op = "moe_gate_backward";
  const int64_t N = moe::rows(scores);
  const int E = int(moe::cols(scores));
  check_experts(E, op);
  if (N == 0) return;
  moe::set_device(ctx, op);
  GateBwdArgs a;
  a.d_logits = moe::fptr(d_logits, op, "d_logits");
  a.d_topk_w = moe::fptr(d_topk_w, op, "d_topk_w");
  a.extra = moe::fptr(d_scores_extra, op, "d_scores_extra");
  a.scores = moe::fptr(scores, op, "scores");
  a.topk_idx = static_cast<const int32_t*>(topk_idx.data);
  a.N = N;
  a.E = E;
  a.K = int(moe::cols(topk_idx));
  a.sigmoid = opt.score_func == ScoreFunc::sigmoid;
  a.norm = opt.norm_topk_prob;
  a.scaling = opt.routed_scaling_factor;
  const size_t smem = size_t(E) * sizeof(double) * kWarps;
  launch(gate_backward_kernel, row_blocks(N), kWarps * 32, smem, moe::stream_of(ctx), a);
  moe::launched(op);
}

namespace {

// Counts per (sequence, expert) into a stream-ordered scratch buffer; the caller frees it.
int* balance_counts(const Context& ctx, Tensor scores, Tensor topk_idx, int64_t seq_len, const char* op) {
  const int64_t N = moe::rows(scores), S = N / seq_len;
  const int E = int(moe::cols(scores)), K = int(moe::cols(topk_idx));
  cudaStream_t st = moe::stream_of(ctx);
  int* cnt = nullptr;
  moe::ok(cudaMallocAsync(reinterpret_cast<void**>(&cnt), size_t(S * E) * sizeof(int), st), op, "cudaMallocAsync");
  moe::ok(cudaMemsetAsync(cnt, 0, size_t(S * E) * sizeof(int), st), op, "cudaMemsetAsync");
  const int64_t NK = N * K;
  launch(balance_count_kernel, moe::grid_for(NK, 256, 1 << 16), 256, 0, st,
      cnt, static_cast<const int32_t*>(topk_idx.data), NK, seq_len, K, E);
  moe::launched(op);
  return cnt;
}

}  // namespace

double moe_balance_loss_forward(const Context& ctx, Tensor scores, Tensor topk_idx, int64_t seq_len, double alpha) {
  const char* op = "moe_balance_loss_forward";
  const int64_t N = moe::rows(scores), S = N / seq_len;
  const int E = int(moe::cols(scores)), K = int(moe::cols(topk_idx));
  if (S == 0 || E == 0) return 0.0;
  moe::set_device(ctx, op);
  cudaStream_t st = moe::stream_of(ctx);
  int* cnt = balance_counts(ctx, scores, topk_idx, seq_len, op);
  double* row_val = nullptr;
  moe::ok(cudaMallocAsync(reinterpret_cast<void**>(&row_val), size_t(N) * sizeof(double), st), op, "cudaMallocAsync");
  launch(balance_rows_kernel, row_blocks(N), kWarps * 32, 0, st, moe::fptr(scores, op, "scores"), cnt, N, seq_len, E, K,
                                                             row_val, FPtr{}, 0.0);
  moe::launched(op);
  std::vector<double> h(static_cast<size_t>(N));
  moe::ok(cudaMemcpyAsync(h.data(), row_val, size_t(N) * sizeof(double), cudaMemcpyDeviceToHost, st), op,
          "cudaMemcpyAsync");
  moe::ok(cudaFreeAsync(row_val, st), op, "cudaFreeAsync");
  moe::ok(cudaFreeAsync(cnt, st), op, "cudaFreeAsync");
  moe::ok(cudaStreamSynchronize(st), op, "cudaStreamSynchronize");
  // The CPU's order: rows of a sequence in order, / T, then the sequences in order.
  double total = 0.0;
  for (int64_t q = 0; q < S; ++q) {
    double loss = 0.0;
    for (int64_t t = 0; t < seq_len; ++t) loss += h[size_t(q * seq_len + t)];
    total += loss / double(seq_len);
  }
  return alpha * total / double(S);
}

void moe_balance_loss_backward(const Context& ctx, Tensor d_scores, double d_loss, Tensor scores, Tensor topk_idx,
                               int64_t seq_len, double alpha) {
  const char* op = "moe_balance_loss_backward";
  const int64_t N = moe::rows(scores), S = N / seq_len;
  const int E = int(moe::cols(scores)), K = int(moe::cols(topk_idx));
  if (S == 0 || E == 0) return;
  moe::set_device(ctx, op);
  cudaStream_t st = moe::stream_of(ctx);
  int* cnt = balance_counts(ctx, scores, topk_idx, seq_len, op);
  const double coef = d_loss * alpha / (double(S) * double(seq_len));
  launch(balance_rows_kernel, row_blocks(N), kWarps * 32, 0, st, moe::fptr(scores, op, "scores"), cnt, N, seq_len, E, K,
                                                             nullptr, moe::fptr(d_scores, op, "d_scores"), coef);
  moe::launched(op);
  moe::ok(cudaFreeAsync(cnt, st), op, "cudaFreeAsync");
}

void moe_bias_update_many(const Context& ctx, const std::vector<Tensor>& biases, const std::vector<Tensor>& loads,
                          double gamma, Tensor verdict) {
  const char* op = "moe_bias_update";
  moe::set_device(ctx, op);
  for (size_t first = 0; first < biases.size();) {
    BiasTable t{};
    int n = 0;
    for (; first < biases.size() && n < kBiasTable; ++first) {
      const int E = int(moe::numel(biases[first]));
      if (E == 0) continue;
      t.bias[n] = moe::fptr(biases[first], op, "bias");
      t.load[n] = static_cast<const int64_t*>(loads[first].data);
      t.E[n++] = E;
    }
    if (n == 0) continue;
    launch(bias_update_kernel, unsigned(n), 256, 0, moe::stream_of(ctx), t, gamma,
           verdict.empty() ? nullptr : static_cast<const double*>(verdict.data));
    moe::launched(op);
  }
}

void moe_bias_update(const Context& ctx, Tensor bias, Tensor load, double gamma) {
  cuda::moe_bias_update_many(ctx, {bias}, {load}, gamma, Tensor{});
}

// Benchmark hook (bench/gpu/bench_moe_route.cu): 0 the default, 1 gate_row for every shape; returns the previous.
int moe_gate_bench_variant(int variant) {
  const int prev = g_gate_variant;
  g_gate_variant = variant;
  return prev;
}

}  // namespace ds::cuda
