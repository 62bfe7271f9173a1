// ds-bench-moe-route: the MoE layer's routing chain at the bench model's training shape, op by op, on the GPU:
// the gate (scores, group-limited top-k, weights), moe_route (the stable counting sort) and the permute, each for
// the old and the new kernel in the same run, and the residual add + RMSNorm before it, unfused and fused.
//
//   ds-bench-moe-route [--reps N] [--rows N]
//
// Shape: N = 16,384 tokens (16 x 1024), hidden 1024, E = 32 experts, top-4, 4 groups / top-2 groups, sigmoid,
// noaux_tc with a bias, weights normalised and scaled by 2.5 (bench/gpu/v3_bench_config.json). Times are medians
// of --reps launches (CUDA events, after 3 warm-up launches). The gate's variants are also compared bit for bit
// (scores, ids, weights). Needs a CUDA GPU; not run by `make test`.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "kernels/cuda_ops.h"

namespace ds::cuda {
int moe_gate_bench_variant(int variant);  // kernels/moe_gate.cu: 1 forces the shared-memory row kernel
int moe_route_bench_chunk(int chunk);     // kernels/moe_dispatch.cu: entries a warp's chunk
}  // namespace ds::cuda

namespace {

using namespace bench_gpu;  // CK, DevBuf, fill, tensor, time_ms (bench_util.cuh)

std::vector<unsigned char> host_bytes(const DevBuf& b) {
  std::vector<unsigned char> h(b.bytes);
  CK(cudaMemcpy(h.data(), b.p, b.bytes, cudaMemcpyDeviceToHost));
  return h;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 50;
  int64_t N = 16384;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::atoi(argv[++i]);
    else if (a == "--rows" && i + 1 < argc) N = std::atoll(argv[++i]);
    else {
      std::fprintf(stderr, "usage: ds-bench-moe-route [--reps N] [--rows N]\n");
      return 2;
    }
  }
  using ds::DType;
  const int64_t D = 1024, E = 32, K = 4;
  ds::Context ctx;
  ctx.device = ds::Device{ds::DeviceKind::cuda, 0};
  cudaStream_t st = nullptr;
  ctx.cuda_stream = st;

  DevBuf x(size_t(N * D) * 2), resid(size_t(N * D) * 2), sum(size_t(N * D) * 2), normed(size_t(N * D) * 2);
  DevBuf w_norm(size_t(D) * 2), rstd(size_t(N) * 4);
  DevBuf logits(size_t(N * E) * 2), bias(size_t(E) * 4), scores(size_t(N * E) * 4);
  DevBuf topk_idx(size_t(N * K) * 4), topk_w(size_t(N * K) * 4), row_of(size_t(N * K) * 4);
  DevBuf offsets(size_t(E + 1) * 8), counts(size_t(E) * 8), xp(size_t(N * K * D) * 2);
  fill(x, 1, 1.0f);
  fill(resid, 2, 1.0f);
  fill(w_norm, 3, 1.0f);
  fill(logits, 4, 3.0f);
  fill<float>(bias, 5, 0.05f);
  CK(cudaMemset(counts.p, 0, counts.bytes));
  CK(cudaDeviceSynchronize());

  ds::GateOptions opt;
  opt.score_func = ds::ScoreFunc::sigmoid;
  opt.topk_method = ds::TopkMethod::noaux_tc;
  opt.n_group = 4;
  opt.topk_group = 2;
  opt.top_k = int(K);
  opt.norm_topk_prob = true;
  opt.routed_scaling_factor = 2.5;
  const ds::Tensor t_logits = tensor(logits, DType::bf16, {N, E}), t_bias = tensor(bias, DType::f32, {E});
  const ds::Tensor t_scores = tensor(scores, DType::f32, {N, E}), t_w = tensor(topk_w, DType::f32, {N, K});
  const ds::Tensor t_idx = tensor(topk_idx, DType::i32, {N, K}), t_row = tensor(row_of, DType::i32, {N, K});
  const ds::Tensor t_off = tensor(offsets, DType::i64, {E + 1}), t_cnt = tensor(counts, DType::i64, {E});
  const ds::Tensor t_x = tensor(x, DType::bf16, {N, D}), t_xp = tensor(xp, DType::bf16, {N * K, D});
  auto gate = [&] { ds::cuda::moe_gate_forward(ctx, t_idx, t_w, t_scores, t_logits, t_bias, opt); };
  auto route = [&] { ds::cuda::moe_route(ctx, t_row, t_off, t_cnt, t_idx, E); };
  auto permute = [&] { ds::cuda::moe_permute_forward(ctx, t_xp, t_x, t_row); };

  std::printf("ds-bench-moe-route: N %lld tokens, D %lld, E %lld, top-%lld, 4 groups / top-2, sigmoid noaux_tc; "
              "median of %d (us)\n", (long long)N, (long long)D, (long long)E, (long long)K, reps);
  // the gate: the shared-memory row kernel (variant 1) vs the default, and their bits
  std::vector<std::vector<unsigned char>> outs[2];
  float t_gate[2];
  for (int v : {1, 0}) {
    ds::cuda::moe_gate_bench_variant(v);
    t_gate[v] = time_ms(st, reps, gate) * 1e3f;
    CK(cudaDeviceSynchronize());
    outs[v] = {host_bytes(scores), host_bytes(topk_idx), host_bytes(topk_w)};
  }
  const bool same = outs[0] == outs[1];
  std::printf("gate      row kernel (shared scratch) %8.1f   register kernel %8.1f   ratio %.2fx   bits %s\n",
              t_gate[1], t_gate[0], t_gate[1] / t_gate[0], same ? "equal" : "DIFFER");
  // the route at several chunk sizes, the rows compared with the default's
  std::vector<unsigned char> rows_ref;
  for (int chunk : {128, 1024, 64, 256, 512}) {
    ds::cuda::moe_route_bench_chunk(chunk);
    const float t = time_ms(st, reps, route) * 1e3f;
    CK(cudaDeviceSynchronize());
    std::vector<unsigned char> rows = host_bytes(row_of);
    if (rows_ref.empty()) rows_ref = rows;
    std::printf("route     chunk %5d: %8.1f   rows %s\n", chunk, t, rows == rows_ref ? "equal" : "DIFFER");
  }
  ds::cuda::moe_route_bench_chunk(128);
  const float t_perm = time_ms(st, reps, permute) * 1e3f;
  const double perm_gb = double(N * D * 2 + N * K * D * 2) / 1e9;
  std::printf("permute   %8.1f   (%.1f GB/s)\n", t_perm, perm_gb / (t_perm * 1e-6));
  const float t_chain = time_ms(st, reps, [&] {
    gate();
    route();
    permute();
  }) * 1e3f;
  std::printf("chain     gate + route + permute %8.1f\n", t_chain);

  // residual add + RMSNorm (the block's x_mid = x + attn; ffn_norm(x_mid)), unfused and fused
  const ds::Tensor t_res = tensor(resid, DType::bf16, {N, D}), t_sum = tensor(sum, DType::bf16, {N, D});
  const ds::Tensor t_n = tensor(normed, DType::bf16, {N, D}), t_wn = tensor(w_norm, DType::bf16, {D});
  const ds::Tensor t_rstd = tensor(rstd, DType::f32, {N});
  const float t_unf = time_ms(st, reps, [&] {
    ds::cuda::add(ctx, t_sum, t_x, t_res);
    ds::cuda::rmsnorm_forward(ctx, t_n, t_rstd, t_sum, t_wn, 1e-6);
  }) * 1e3f;
  CK(cudaDeviceSynchronize());
  const std::vector<std::vector<unsigned char>> ref = {host_bytes(sum), host_bytes(normed), host_bytes(rstd)};
  const float t_fus = time_ms(st, reps, [&] {
    ds::cuda::add_rmsnorm_forward(ctx, t_sum, t_n, t_x, t_res, t_wn, 1e-6, t_rstd);
  }) * 1e3f;
  CK(cudaDeviceSynchronize());
  const std::vector<std::vector<unsigned char>> got = {host_bytes(sum), host_bytes(normed), host_bytes(rstd)};
  const double gb = double(N * D * 2) * 4 / 1e9;
  std::printf("add+norm  add, rmsnorm %8.1f   add_rmsnorm %8.1f (%.0f GB/s)   ratio %.2fx   bits %s\n", t_unf, t_fus,
              gb / (t_fus * 1e-6), t_unf / t_fus, got == ref ? "equal" : "DIFFER");
  return same && got == ref ? 0 : 1;
}
