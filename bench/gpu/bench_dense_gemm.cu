// ds-bench-dense-gemm: the bench model's dense bf16 products (kernels/matmul.cu: cuBLASLt) at its training shape,
// each through the first few algorithms cuBLASLt's heuristic offers and through the grouped expert GEMM as a single
// group (kernels/grouped_matmul.cu), timed back to back as the training step issues them.
//
//   ds-bench-dense-gemm [--reps N] [--rows M] [--algos A] [--burst B]
//
// Why (bench/gpu/SESSIONS.md, 26th session): in the training step most cuBLASLt products follow a 4-byte memset that
// cublasLtMatmul issues itself, and the gap from the kernel before to the product is then ~12 us (median) against ~4
// without it, ~0.6 ms a step; a heuristic without a workspace keeps the memsets, and the grouped GEMM for every
// product was 23% slower in training. This says, product by product, whether another algorithm or our kernel is
// faster once the memset and the launch gaps are counted.
//
// Products (M = --rows, default 16,384 = 16 x 1024 tokens; K -> N, how many a step): the stacked q_a + kv_a
// projection 1024 -> 672 (12), q_b 384 -> 1536 (12), kv_b 256 -> 2048 (12), o_proj 1024 -> 1024 (12), the shared
// expert's stacked gate + up 1024 -> 1024 and down 512 -> 1024 (11 each), the dense layer's 1024 -> 5632 and
// 2816 -> 1024 (1 each), the router 1024 -> 32 (f32 out, 11), lm_head 1024 -> 32000 (f32 out, 1). Passes: forward
// out = in · W^T, d_in = d_out · W (bf16 out), d_weight dW += d_out^T · in (f32). Each time is the median over --reps
// of (a burst of --burst calls, CUDA events around it) / burst: the launch gaps and any memset between calls count.
// "algo i" builds every plan from the heuristic's result i (matmul_bench_algo; "-" where it offered fewer);
// "grouped" runs grouped_matmul_forward / _backward with one group of M rows. The last lines weigh each product by
// its count: the step's time in these products with the default (algo 0), with the best algorithm per product, and
// with the best of all, and the DS_GEMM_ALGO string (kernels/matmul.cu) that picks, for a training A/B, the faster
// algorithm where one beat the first by 3% or more. Needs a CUDA GPU; not run by `make test`.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "kernels/cuda_ops.h"

namespace ds::cuda {
int matmul_bench_algo(int index);  // kernels/matmul.cu (benchmark hooks)
int matmul_bench_algo_found();
}  // namespace ds::cuda

namespace {

using namespace bench_gpu;  // CK, DevBuf, fill, tensor (bench_util.cuh)

struct Product {
  const char* name;
  int64_t K, N;
  bool f32_out;
  int count;  // products of this shape a training step
};

// Median over reps of the time per call of `burst` back-to-back calls (ms), after one warm-up burst.
template <class F> float burst_ms(int reps, int burst, F&& f) {
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int r = -1; r < reps; ++r) {
    CK(cudaEventRecord(a, nullptr));
    for (int i = 0; i < burst; ++i) f();
    CK(cudaEventRecord(b, nullptr));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    if (r >= 0) t.push_back(ms / float(burst));
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 7, algos = 4, burst = 16;
  int64_t M = 16384;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--rows" && i + 1 < argc) M = std::max<int64_t>(1, std::atoll(argv[++i]));
    else if (a == "--algos" && i + 1 < argc) algos = std::clamp(std::atoi(argv[++i]), 1, 16);
    else if (a == "--burst" && i + 1 < argc) burst = std::max(1, std::atoi(argv[++i]));
    else {
      std::fprintf(stderr, "usage: ds-bench-dense-gemm [--reps N] [--rows M] [--algos A] [--burst B]\n");
      return 2;
    }
  }
  cudaDeviceProp prop{};
  if (!first_device("ds-bench-dense-gemm", prop)) return 77;
  std::printf("== ds-bench-dense-gemm on %s (%d SMs), M %lld, median of %d bursts of %d calls, us per call\n",
              prop.name, prop.multiProcessorCount, (long long)M, reps, burst);
  ds::Context ctx;
  ctx.device = ds::Device{ds::DeviceKind::cuda, 0};
  const std::vector<Product> products = {
      {"qkv_a 1024->672", 1024, 672, false, 12},  {"q_b 384->1536", 384, 1536, false, 12},
      {"kv_b 256->2048", 256, 2048, false, 12},   {"o_proj 1024->1024", 1024, 1024, false, 12},
      {"shared gu 1024->1024", 1024, 1024, false, 11}, {"shared down 512->1024", 512, 1024, false, 11},
      {"dense gu 1024->5632", 1024, 5632, false, 1},   {"dense down 2816->1024", 2816, 1024, false, 1},
      {"router 1024->32", 1024, 32, true, 11},    {"lm_head 1024->32000", 1024, 32000, true, 1}};
  const char* passes[3] = {"forward", "d_in", "d_weight"};
  DevBuf off(16);
  const int64_t h_off[2] = {0, M};
  CK(cudaMemcpy(off.p, h_off, sizeof(h_off), cudaMemcpyHostToDevice));
  const ds::Tensor offsets = tensor(off, ds::DType::i64, {2});

  std::printf("   %-22s %-8s", "product", "pass");
  for (int a = 0; a < algos; ++a) std::printf("  algo %-3d", a);
  std::printf("  %9s %7s\n", "grouped", "offered");
  double step_default = 0, step_best_algo = 0, step_best = 0;
  std::string faster;  // DS_GEMM_ALGO entries of the products another algorithm ran 3%+ faster
  for (const Product& p : products) {
    const int64_t K = p.K, N = p.N;
    const size_t es_out = p.f32_out ? 4 : 2;
    DevBuf x(size_t(M * K) * 2), w(size_t(N * K) * 2), y(size_t(M * N) * es_out), dy(size_t(M * N) * 2),
        dx(size_t(M * K) * 2), dw(size_t(N * K) * 4);
    fill(x, 1, 1.0f);
    fill(w, 2, 1.0f / 32.0f);
    fill(dy, 3, 1.0f / 64.0f);
    CK(cudaMemset(dw.p, 0, dw.bytes));
    const ds::DType out_dt = p.f32_out ? ds::DType::f32 : ds::DType::bf16;
    const ds::Tensor tx = tensor(x, ds::DType::bf16, {M, K}), tw = tensor(w, ds::DType::bf16, {N, K}),
                     ty = tensor(y, out_dt, {M, N}), tdy = tensor(dy, ds::DType::bf16, {M, N}),
                     tdx = tensor(dx, ds::DType::bf16, {M, K}), tdw = tensor(dw, ds::DType::f32, {N, K});
    const ds::Tensor gw = tensor(w, ds::DType::bf16, {1, N, K}), gdw = tensor(dw, ds::DType::f32, {1, N, K});
    for (int pass = 0; pass < 3; ++pass) {
      // d_in of a product with an f32 output reads a bf16 gradient, as the trainer's head and router do
      auto dense = [&] {
        if (pass == 0) ds::cuda::matmul_forward(ctx, ty, tx, tw, ds::Accum::overwrite, ds::Inputs::fresh);
        else if (pass == 1) ds::cuda::matmul_backward(ctx, tdx, ds::Tensor{}, tdy, tx, tw, ds::Accum::overwrite);
        else ds::cuda::matmul_backward(ctx, ds::Tensor{}, tdw, tdy, tx, tw, ds::Accum::overwrite);
      };
      auto grouped = [&] {
        if (pass == 0)
          ds::cuda::grouped_matmul_forward(ctx, ty, tx, gw, offsets, ds::Accum::overwrite, ds::Inputs::settled);
        else if (pass == 1)
          ds::cuda::grouped_matmul_backward(ctx, tdx, ds::Tensor{}, tdy, tx, gw, offsets, ds::Accum::overwrite);
        else
          ds::cuda::grouped_matmul_backward(ctx, ds::Tensor{}, gdw, tdy, tx, gw, offsets, ds::Accum::overwrite,
                                            ds::Accum::add);
      };
      std::printf("   %-22s %-8s", p.name, passes[pass]);
      float t0 = 0, best_algo = 1e30f;
      int offered = 0, best_index = 0;
      for (int a = 0; a < algos; ++a) {
        ds::cuda::matmul_bench_algo(a);
        dense();  // builds the plan (and reads how many results the heuristic offered)
        CK(cudaDeviceSynchronize());
        offered = ds::cuda::matmul_bench_algo_found();
        if (a > 0 && offered <= a) {
          std::printf("  %8s", "-");
          continue;
        }
        const float t = burst_ms(reps, burst, dense) * 1e3f;
        if (a == 0) t0 = t;
        if (t < best_algo) {
          best_algo = t;
          best_index = a;
        }
        std::printf("  %8.1f", t);
      }
      ds::cuda::matmul_bench_algo(0);
      const float tg = burst_ms(reps, burst, grouped) * 1e3f;
      std::printf("  %9.1f %7d\n", tg, offered);
      if (best_index > 0 && best_algo < 0.97f * t0) {  // lt_gemm's column-major (ta, tb, m, n, k) of this pass
        const long long cm[3][3] = {{N, M, K}, {K, M, N}, {K, N, M}};
        const int ta = pass == 0, tb = pass == 2;
        char entry[96];
        std::snprintf(entry, sizeof(entry), "%s%d,%d,%lld,%lld,%lld=%d", faster.empty() ? "" : ";", ta, tb,
                      cm[pass][0], cm[pass][1], cm[pass][2], best_index);
        faster += entry;
      }
      step_default += double(p.count) * t0;
      step_best_algo += double(p.count) * best_algo;
      step_best += double(p.count) * std::min(best_algo, tg);
    }
  }
  std::printf("== a step's time in these products (each shape x its count), ms: default %.3f, best algorithm per "
              "product %.3f (%.1f%%), best of algorithms and grouped %.3f (%.1f%%)\n",
              step_default * 1e-3, step_best_algo * 1e-3, 100.0 * (step_best_algo / step_default - 1.0),
              step_best * 1e-3, 100.0 * (step_best / step_default - 1.0));
  std::printf("== for an A/B (kernels/matmul.cu; the step's products of these shapes): DS_GEMM_ALGO='%s'\n",
              faster.c_str());
  return 0;
}
