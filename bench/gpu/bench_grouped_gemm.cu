// ds-bench-grouped-gemm: the bf16 grouped expert GEMM (kernels/grouped_matmul.cu) at the bench model's training
// shapes, next to a dense bf16 GEMM of the same FLOPs through our own cuBLASLt path (matmul_forward /
// matmul_backward), the ceiling to compare with.
//
//   ds-bench-grouped-gemm [--reps N] [--rows M] [--variants all|default] [--section all|train|decode|loads]
//                         [--decode-samples N] [--loads EXPERT_STATS.jsonl]
//
// Shapes: E = 32 experts, M = 65,536 permuted rows (16 x 1024 tokens x top-4), gate/up K 1024 -> N 512 and down
// K 512 -> N 1024; loads uniform (M / E rows each) and skewed (one expert 25 % of the rows, two experts none, the
// rest uneven). Products: forward out = in · W_e^T (bf16 out), d_in = d_out · W_e (bf16 out; d_in+= adds onto
// it, as the up projection's onto the gate's did in training; d_in pair = grouped_matmul_d_in_pair, both
// projections' d_in in one launch, twice the FLOPs), d_weight dW_e +=
// d_out_e^T · in_e (f32 master gradient). Each time is the median of --reps launches (CUDA events, after 3 warm-up
// launches); TFLOP/s counts 2 M K N per launch. "variants all" also times the previous kernels (variant 0) and the
// other tile configurations of the large-tile kernel, and checks each against variant 0 (max |diff| / max |ref|).
// The decode section (first; see decode_section) times the forward at decode shapes, M = 4 .. 1024, for the
// previous skinny kernel and the grouped GEMV. --loads (ds-pretrain --expert-stats output) adds the loads section:
// each layer's last-step load, d_weight at each split setting, and a job-by-job trace of the slowest layer's
// d_weight (loads_section). Needs a CUDA GPU; not run by `make test`.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "bench_util.cuh"
#include "core/error.h"
#include "core/jsonl.h"
#include "kernels/cuda_ops.h"

namespace ds::cuda {
int grouped_matmul_bench_variant(int variant);  // kernels/grouped_matmul.cu (benchmark hook, returns the previous)
int grouped_matmul_bench_decode_variant(int variant);  // the same for the decode path (0 default, 1 old, 2, 3)
int grouped_matmul_test_split_kt(int kt);  // d_weight's split: -1 automatic, 0 off, > 0 chunk length (k-tiles)
void grouped_matmul_bench_trace(unsigned long long* buf);  // reduce mode's job trace (null: off)
}

namespace {

using namespace bench_gpu;  // CK, DevBuf, fill, tensor, time_ms (bench_util.cuh)

std::vector<int64_t> make_offsets(int64_t E, int64_t M, bool skewed) {
  std::vector<int64_t> cnt(size_t(E), M / E);
  if (skewed) {
    std::mt19937_64 rng(7);
    std::uniform_real_distribution<double> u(0.25, 1.75);
    std::fill(cnt.begin(), cnt.end(), 0);
    const int64_t hot = M / 4;
    std::vector<double> w(static_cast<size_t>(E), 0.0);
    double sw = 0;
    for (int64_t e = 0; e < E; ++e) sw += (w[size_t(e)] = (e == 0 || e == E - 1 || e == E / 2) ? 0.0 : u(rng));
    for (int64_t e = 0; e < E; ++e) cnt[size_t(e)] = int64_t(double(M - hot) * w[size_t(e)] / sw);
    cnt[size_t(E / 2)] = hot;
  }
  int64_t sum = 0;
  for (int64_t c : cnt) sum += c;
  cnt[1] += M - sum;  // the remainder (expert 1 is never empty)
  std::vector<int64_t> off(size_t(E + 1), 0);
  for (int64_t e = 0; e < E; ++e) off[size_t(e + 1)] = off[size_t(e)] + cnt[size_t(e)];
  return off;
}

std::vector<float> to_host_f32(const DevBuf& b, bool bf16) {
  if (!bf16) {
    std::vector<float> h(b.bytes / 4);
    CK(cudaMemcpy(h.data(), b.p, b.bytes, cudaMemcpyDeviceToHost));
    return h;
  }
  std::vector<uint16_t> raw(b.bytes / 2);
  CK(cudaMemcpy(raw.data(), b.p, b.bytes, cudaMemcpyDeviceToHost));
  std::vector<float> h(raw.size());
  for (size_t i = 0; i < raw.size(); ++i) {
    const uint32_t u = uint32_t(raw[i]) << 16;
    std::memcpy(&h[i], &u, 4);
  }
  return h;
}

double norm_diff(const std::vector<float>& got, const std::vector<float>& ref) {
  double md = 0, mr = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    md = std::max(md, double(std::fabs(got[i] - ref[i])));
    mr = std::max(mr, double(std::fabs(ref[i])));
  }
  return md / std::max(mr, 1e-30);
}

__global__ void empty_kernel() {}

// The decode section: the bf16 forward (bf16 out) at batch-1 and batch-64 decode shapes (M = 4 x tokens permuted
// rows, each token on 4 distinct random experts of 32) for the previous path (variant 1: the skinny WMMA kernel
// up to 16 rows per expert on average) and the grouped GEMV (variants 2, 3: 16 / 32 columns per block, forced;
// variant 0, the default, is 2 up to 1 row per expert on average and the previous path above). Each sample times 32 back-to-back launches
// (CUDA events), each on a different copy of the weights (32 copies of 32 MB: they come from HBM, as in a decode
// step); "us" is the median over the samples of the time per launch, GB/s counts the weights read (active experts
// x N x K x 2 bytes). "warm" repeats one copy (L2-resident where it fits). "check": max |diff| / max |out| against
// variant 1; "det": the default run twice, bitwise equal.
void decode_section(int samples) {
  ds::Context ctx;
  ctx.device = ds::Device{ds::DeviceKind::cuda, 0};
  cudaStream_t st = nullptr;
  const int64_t E = 32, copies = 32, elems = E * 512 * 1024;  // both shapes hold E x 512 x 1024 weights
  DevBuf pool(size_t(copies * elems) * 2);
  fill(pool, 11, 1.0f / 32.0f);
  // The launch floor: an empty kernel, timed the same way.
  float floor_us = 0;
  {
    std::vector<float> t;
    cudaEvent_t a, b;
    CK(cudaEventCreate(&a));
    CK(cudaEventCreate(&b));
    for (int s = 0; s < samples; ++s) {
      CK(cudaEventRecord(a, st));
      for (int i = 0; i < copies; ++i) empty_kernel<<<1, 32, 0, st>>>();
      CK(cudaEventRecord(b, st));
      CK(cudaEventSynchronize(b));
      float ms = 0;
      CK(cudaEventElapsedTime(&ms, a, b));
      t.push_back(ms * 1e3f / float(copies));
    }
    std::sort(t.begin(), t.end());
    floor_us = t[t.size() / 2];
    CK(cudaEventDestroy(a));
    CK(cudaEventDestroy(b));
  }
  std::printf("\n== decode: bf16 forward, E %lld, bf16 out; median of %d samples of %lld launches (each on its own "
              "weight copy); empty-kernel floor %.2f us per launch\n",
              (long long)E, samples, (long long)copies, floor_us);
  std::printf("   %-20s %5s %6s %-26s %9s %9s %9s %9s %9s %5s\n", "shape", "M", "active", "variant", "us", "GB/s",
              "warm us", "warm GB/s", "check", "det");
  struct Shape {
    const char* name;
    int64_t K, N;
  };
  const char* vname[4] = {"default", "old (skinny / tiled)", "gemv 16 cols/block", "gemv 32 cols/block"};
  const int prev = ds::cuda::grouped_matmul_bench_decode_variant(-1);
  for (const Shape sh : {Shape{"gate/up K1024->N512", 1024, 512}, Shape{"down K512->N1024", 512, 1024}}) {
    const int64_t K = sh.K, N = sh.N;
    for (const int64_t M : {int64_t(4), int64_t(32), int64_t(128), int64_t(256), int64_t(512), int64_t(1024)}) {
      // Routing: M / 4 tokens, each on 4 distinct experts.
      std::mt19937_64 rng(uint64_t(M) * 131 + 7);
      std::vector<int64_t> cnt(size_t(E), 0);
      std::vector<int> perm(static_cast<size_t>(E));
      for (int64_t tkn = 0; tkn < M / 4; ++tkn) {
        for (int e = 0; e < E; ++e) perm[size_t(e)] = e;
        std::shuffle(perm.begin(), perm.end(), rng);
        for (int k = 0; k < 4; ++k) ++cnt[size_t(perm[size_t(k)])];
      }
      std::vector<int64_t> h_off(size_t(E + 1), 0);
      int64_t active = 0, mx = 0;
      for (int64_t e = 0; e < E; ++e) {
        h_off[size_t(e + 1)] = h_off[size_t(e)] + cnt[size_t(e)];
        active += cnt[size_t(e)] > 0;
        mx = std::max(mx, cnt[size_t(e)]);
      }
      DevBuf in(size_t(M * K) * 2), out(size_t(M * N) * 2), off(size_t(E + 1) * 8);
      fill(in, 12, 1.0f);
      CK(cudaMemcpy(off.p, h_off.data(), h_off.size() * 8, cudaMemcpyHostToDevice));
      const ds::Tensor t_in = tensor(in, ds::DType::bf16, {M, K}), t_out = tensor(out, ds::DType::bf16, {M, N}),
                       t_off = tensor(off, ds::DType::i64, {E + 1});
      auto weights = [&](int64_t c) {
        return ds::Tensor(static_cast<char*>(pool.p) + size_t(c * elems) * 2, ds::DType::bf16, {E, N, K},
                          ds::Device{ds::DeviceKind::cuda, 0});
      };
      const double bytes = double(active) * double(N) * double(K) * 2.0;
      std::vector<float> ref;
      for (const int v : {1, 2, 3, 0}) {
        ds::cuda::grouped_matmul_bench_decode_variant(v);
        auto launch = [&](int64_t c) {
          ds::cuda::grouped_matmul_forward(ctx, t_out, t_in, weights(c), t_off, ds::Accum::overwrite,
                                           ds::Inputs::fresh);
        };
        CK(cudaMemset(out.p, 0, out.bytes));
        launch(0);
        CK(cudaDeviceSynchronize());
        std::vector<float> got = to_host_f32(out, true);
        std::string check = "-", det = "-";
        if (v == 1) ref = got;
        else {
          char b[32];
          std::snprintf(b, sizeof b, "%.1e", norm_diff(got, ref));
          check = b;
        }
        if (v == 0) {  // bitwise determinism of the default
          std::vector<uint16_t> r1(static_cast<size_t>(M * N)), r2(static_cast<size_t>(M * N));
          CK(cudaMemcpy(r1.data(), out.p, out.bytes, cudaMemcpyDeviceToHost));
          launch(0);
          CK(cudaDeviceSynchronize());
          CK(cudaMemcpy(r2.data(), out.p, out.bytes, cudaMemcpyDeviceToHost));
          det = r1 == r2 ? "yes" : "NO";
        }
        cudaEvent_t ea, eb;
        CK(cudaEventCreate(&ea));
        CK(cudaEventCreate(&eb));
        auto median_us = [&](bool rotate) {
          for (int64_t c = 0; c < copies; ++c) launch(rotate ? c : 0);  // warm-up
          std::vector<float> t;
          for (int s = 0; s < samples; ++s) {
            CK(cudaEventRecord(ea, st));
            for (int64_t c = 0; c < copies; ++c) launch(rotate ? c : 0);
            CK(cudaEventRecord(eb, st));
            CK(cudaEventSynchronize(eb));
            float ms = 0;
            CK(cudaEventElapsedTime(&ms, ea, eb));
            t.push_back(ms * 1e3f / float(copies));
          }
          std::sort(t.begin(), t.end());
          return t[t.size() / 2];
        };
        const float cold = median_us(true), warm = median_us(false);
        CK(cudaEventDestroy(ea));
        CK(cudaEventDestroy(eb));
        std::printf("   %-20s %5lld %3lld/%-2lld %-26s %9.2f %9.0f %9.2f %9.0f %9s %5s\n", sh.name, (long long)M,
                    (long long)active, (long long)mx, vname[v], cold, bytes / (cold * 1e3), warm,
                    bytes / (warm * 1e3), check.c_str(), det.c_str());
      }
    }
  }
  ds::cuda::grouped_matmul_bench_decode_variant(prev);
  std::printf("   (active/max: experts with rows / most rows on one expert; the default takes the grouped GEMV up to "
              "M = E = 32)\n");
}

// Expert loads from ds-pretrain --expert-stats (JSONL: {"step":S,"layer":L,"counts":[...]}): the last step's
// counts, one vector per layer in file order. Bad input (no counts, experts' counts that differ between layers or are
// negative) is an error naming the file and line (ds::Error, exit 3 in main).
std::vector<std::pair<int, std::vector<int64_t>>> read_loads(const std::string& path) {
  ds::JsonlReader reader(path);
  std::vector<std::pair<int, std::vector<int64_t>>> out;
  int64_t last_step = -1;
  while (const ds::JsonlRecord* rec = reader.next()) {
    const int64_t step = rec->get_int("step");
    std::vector<int64_t> c = rec->get_int_array("counts");
    const bool ok = !c.empty() && (out.empty() || step != last_step || c.size() == out[0].second.size()) &&
                    std::all_of(c.begin(), c.end(), [](int64_t x) { return x >= 0; });
    if (!ok)
      ds::throw_bad_input("counts must be a non-empty list of rows per expert, as many for every layer", path,
                          reader.line_number());
    if (step != last_step) out.clear(), last_step = step;
    out.emplace_back(int(rec->get_int("layer")), std::move(c));
  }
  if (out.empty()) ds::throw_bad_input("no expert counts", path);
  std::printf("== loads from %s, step %lld: %zu layers\n", path.c_str(), (long long)last_step, out.size());
  return out;
}

// The job trace of one d_weight launch (grouped_matmul_bench_trace): per kind of job (a tile, an empty expert's
// zeros, a split chunk, a split tile's last chunk) the count and medians of its start (the block's start or its
// previous job's end, to the k-loop's start), k-loop (us a k-tile) and write-back; the SMs' busy share of the span
// and when they fall idle.
void print_job_trace(const std::vector<unsigned long long>& tr, int sms) {
  constexpr int W = 5;
  struct J {
    double t0, t1, t2, t3;
    int sm, nk, kind;
  };
  std::vector<J> js;
  unsigned long long base = ~0ull;
  for (size_t i = 0; i + W <= tr.size(); i += W)
    if (tr[i + 3] != 0) base = std::min(base, tr[i]);
  for (size_t i = 0; i + W <= tr.size(); i += W) {
    if (tr[i + 3] == 0) continue;
    auto us = [&](unsigned long long t) { return double(t - base) * 1e-3; };
    js.push_back(J{us(tr[i]), us(tr[i + 1]), us(tr[i + 2]), us(tr[i + 3]), int(tr[i + 4] & 0xffff),
                   int((tr[i + 4] >> 16) & 0xffffffffu), int(tr[i + 4] >> 48)});
  }
  if (js.empty()) return;
  auto med = [](std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  double span = 0, busy = 0;
  std::vector<double> sm_end(size_t(sms), 0.0), sm_busy(size_t(sms), 0.0);
  for (const J& j : js) {
    span = std::max(span, j.t3);
    busy += j.t3 - j.t0;
    if (j.sm < sms) sm_end[size_t(j.sm)] = std::max(sm_end[size_t(j.sm)], j.t3), sm_busy[size_t(j.sm)] += j.t3 - j.t0;
  }
  std::printf("   job trace: %zu jobs, span %.1f us, SMs busy %.0f%% of it\n", js.size(), span,
              100.0 * busy / (span * sms));
  const char* kname[4] = {"tile", "zeros", "split chunk", "last chunk"};
  std::printf("   %-12s %5s %9s %9s %11s %9s %9s %9s\n", "kind", "jobs", "k-tiles", "start us", "k-loop us",
              "us/k-tile", "wb us", "total us");
  for (int k = 0; k < 4; ++k) {
    std::vector<double> st, kl, pk, wb, tot, nk;
    for (const J& j : js)
      if (j.kind == k) {
        st.push_back(j.t1 - j.t0), kl.push_back(j.t2 - j.t1), wb.push_back(j.t3 - j.t2), tot.push_back(j.t3 - j.t0);
        nk.push_back(j.nk);
        if (j.nk > 0) pk.push_back((j.t2 - j.t1) / j.nk);
      }
    if (!st.empty())
      std::printf("   %-12s %5zu %9.0f %9.2f %11.2f %9.3f %9.2f %9.2f\n", kname[k], st.size(), med(nk), med(st),
                  med(kl), med(pk), med(wb), med(tot));
  }
  std::vector<double> ends = sm_end, bz = sm_busy;
  std::sort(ends.begin(), ends.end());
  std::sort(bz.begin(), bz.end());
  std::printf("   SMs' last job ends (us): min %.1f, 10%% %.1f, median %.1f, 90%% %.1f, max %.1f; busy per SM: "
              "min %.1f, median %.1f, max %.1f\n",
              ends[0], ends[ends.size() / 10], ends[ends.size() / 2], ends[ends.size() * 9 / 10], ends.back(), bz[0],
              bz[bz.size() / 2], bz.back());
  // Busy SMs over time, in tenths of the span.
  std::printf("   busy SMs by tenth of the span:");
  for (int d = 0; d < 10; ++d) {
    const double a = span * d / 10, b = span * (d + 1) / 10;
    double cover = 0;
    for (const J& j : js) cover += std::max(0.0, std::min(b, j.t3) - std::max(a, j.t0));
    std::printf(" %.0f", cover / (b - a));
  }
  std::printf("\n");
}

// The training's expert loads (--loads): per layer, d_weight written over (a training step's) at each split setting
// (automatic, off, chunks of at most 32 .. 128 k-tiles), added onto (automatic) and, for reference, the forward and
// d_in (rows mode); then the job trace of the slowest layer's d_weight written over at the default setting, and of
// the uniform load's.
void loads_section(const std::vector<std::pair<int, std::vector<int64_t>>>& loads, int reps, int sms) {
  ds::Context ctx;
  ctx.device = ds::Device{ds::DeviceKind::cuda, 0};
  cudaStream_t st = nullptr;
  int64_t Mmax = 0;
  const int64_t E = int64_t(loads[0].second.size());
  for (const auto& l : loads) {
    int64_t m = 0;
    for (int64_t c : l.second) m += c;
    Mmax = std::max(Mmax, m);
  }
  constexpr int kSettings = 6;
  const int kts[kSettings] = {-1, 0, 32, 64, 96, 128};
  for (const auto& sh : {std::pair<const char*, std::pair<int64_t, int64_t>>{"gate/up K1024->N512", {1024, 512}},
                         {"down K512->N1024", {512, 1024}}}) {
    const int64_t K = sh.second.first, N = sh.second.second;
    DevBuf in(size_t(Mmax * K) * 2), w(size_t(E * N * K) * 2), out(size_t(Mmax * N) * 2),
        d_out(size_t(Mmax * N) * 2), d_in(size_t(Mmax * K) * 2), d_w(size_t(E * N * K) * 4), off(size_t(E + 1) * 8);
    fill(in, 1, 1.0f);
    fill(w, 2, 1.0f / std::sqrt(float(K)));
    fill(d_out, 3, 1.0f);
    std::printf("\n-- %s, E %lld: ms (d_weight written over, as a training step's, by split setting: automatic, "
                "off, chunks of at most 32 .. 128 k-tiles; added onto, automatic; forward, d_in for reference)\n",
                sh.first, (long long)E);
    std::printf("   %5s %6s %6s %6s | %8s %8s %8s %8s %8s %8s | %8s | %8s %8s\n", "layer", "rows", "max", "empty",
                "auto", "off", "kt32", "kt64", "kt96", "kt128", "add auto", "fwd", "d_in");
    float worst = 0;
    size_t worst_i = 0;
    for (size_t li = 0; li < loads.size(); ++li) {
      const auto& cnt = loads[li].second;
      std::vector<int64_t> h_off(size_t(E + 1), 0);
      int64_t mx = 0, empty = 0;
      for (int64_t e = 0; e < E; ++e) {
        h_off[size_t(e + 1)] = h_off[size_t(e)] + cnt[size_t(e)];
        mx = std::max(mx, cnt[size_t(e)]);
        empty += cnt[size_t(e)] == 0;
      }
      const int64_t M = h_off[size_t(E)];
      CK(cudaMemcpy(off.p, h_off.data(), h_off.size() * 8, cudaMemcpyHostToDevice));
      const ds::Tensor t_in = tensor(in, ds::DType::bf16, {M, K}), t_w = tensor(w, ds::DType::bf16, {E, N, K}),
                       t_out = tensor(out, ds::DType::bf16, {M, N}), t_dout = tensor(d_out, ds::DType::bf16, {M, N}),
                       t_din = tensor(d_in, ds::DType::bf16, {M, K}), t_dw = tensor(d_w, ds::DType::f32, {E, N, K}),
                       t_off = tensor(off, ds::DType::i64, {E + 1});
      auto dw = [&](ds::Accum acc) {
        ds::cuda::grouped_matmul_backward(ctx, ds::Tensor{}, t_dw, t_dout, t_in, t_w, t_off, ds::Accum::overwrite,
                                          acc);
      };
      float ms[kSettings];
      for (int i = 0; i < kSettings; ++i) {
        const int prev = ds::cuda::grouped_matmul_test_split_kt(kts[i]);
        ms[i] = time_ms(st, reps, [&] { dw(ds::Accum::overwrite); });
        ds::cuda::grouped_matmul_test_split_kt(prev);
      }
      const float add = time_ms(st, reps, [&] { dw(ds::Accum::add); });
      const float fwd = time_ms(st, reps, [&] {
        ds::cuda::grouped_matmul_forward(ctx, t_out, t_in, t_w, t_off, ds::Accum::overwrite, ds::Inputs::fresh);
      });
      const float din = time_ms(st, reps, [&] {
        ds::cuda::grouped_matmul_backward(ctx, t_din, ds::Tensor{}, t_dout, t_in, t_w, t_off, ds::Accum::overwrite);
      });
      std::printf("   %5d %6lld %6lld %6lld | %8.3f %8.3f %8.3f %8.3f %8.3f %8.3f | %8.3f | %8.3f %8.3f\n",
                  loads[li].first, (long long)M, (long long)mx, (long long)empty, ms[0], ms[1], ms[2], ms[3], ms[4],
                  ms[5], add, fwd, din);
      if (ms[0] > worst) worst = ms[0], worst_i = li;
    }
    // The slowest layer's d_weight, traced (the default split setting), then the uniform load's for comparison.
    for (int pass = 0; pass < 2; ++pass) {
      std::vector<int64_t> h_off(size_t(E + 1), 0);
      const auto& cnt = loads[worst_i].second;
      int64_t M = 0;
      for (int64_t c : cnt) M += c;
      for (int64_t e = 0; e < E; ++e)
        h_off[size_t(e + 1)] = h_off[size_t(e)] + (pass == 0 ? cnt[size_t(e)] : M / E + (e < M % E ? 1 : 0));
      CK(cudaMemcpy(off.p, h_off.data(), h_off.size() * 8, cudaMemcpyHostToDevice));
      const ds::Tensor t_in = tensor(in, ds::DType::bf16, {M, K}), t_w = tensor(w, ds::DType::bf16, {E, N, K}),
                       t_dout = tensor(d_out, ds::DType::bf16, {M, N}), t_dw = tensor(d_w, ds::DType::f32, {E, N, K}),
                       t_off = tensor(off, ds::DType::i64, {E + 1});
      const size_t words = size_t(1) << 20;
      DevBuf trace(words * 8);
      CK(cudaMemset(trace.p, 0, trace.bytes));
      auto over = [&] {
        ds::cuda::grouped_matmul_backward(ctx, ds::Tensor{}, t_dw, t_dout, t_in, t_w, t_off, ds::Accum::overwrite,
                                          ds::Accum::overwrite);
      };
      over();
      ds::cuda::grouped_matmul_bench_trace(static_cast<unsigned long long*>(trace.p));
      over();
      ds::cuda::grouped_matmul_bench_trace(nullptr);
      CK(cudaDeviceSynchronize());
      std::vector<unsigned long long> h(words);
      CK(cudaMemcpy(h.data(), trace.p, trace.bytes, cudaMemcpyDeviceToHost));
      std::printf("   d_weight of layer %d's %s load:\n", loads[worst_i].first, pass == 0 ? "training" : "uniform");
      print_job_trace(h, sms);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 15;
  int64_t M = 65536;
  bool all = true;
  std::string section = "all";
  int dec_samples = 60;
  std::string loads;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--reps" && i + 1 < argc) reps = std::max(1, std::atoi(argv[++i]));
    else if (a == "--rows" && i + 1 < argc) M = std::max<int64_t>(1, std::atoll(argv[++i]));
    else if (a == "--variants" && i + 1 < argc) all = std::string(argv[++i]) == "all";
    else if (a == "--section" && i + 1 < argc) section = argv[++i];
    else if (a == "--decode-samples" && i + 1 < argc) dec_samples = std::max(1, std::atoi(argv[++i]));
    else if (a == "--loads" && i + 1 < argc) loads = argv[++i];
    else {
      std::fprintf(stderr, "usage: ds-bench-grouped-gemm [--reps N] [--rows M] [--variants all|default] "
                           "[--section all|train|decode|loads] [--decode-samples N] [--loads EXPERT_STATS.jsonl]\n");
      return 2;
    }
  }
  std::vector<std::pair<int, std::vector<int64_t>>> load_counts;  // read first: bad input is an error without a GPU
  if (!loads.empty()) {
    try {
      load_counts = read_loads(loads);
    } catch (const ds::Error& e) {
      std::fprintf(stderr, "ds-bench-grouped-gemm: error: %s\n", e.what());
      return e.exit_code();
    }
  }
  cudaDeviceProp prop{};
  if (!first_device("ds-bench-grouped-gemm", prop)) return 77;
  const int def_variant = ds::cuda::grouped_matmul_bench_variant(-1);
  ds::cuda::grouped_matmul_bench_variant(def_variant);
  std::printf("== ds-bench-grouped-gemm on %s (%d SMs), E 32, M %lld, median of %d, default variant %d\n", prop.name,
              prop.multiProcessorCount, (long long)M, reps, def_variant);
  if (section == "all" || section == "decode") decode_section(dec_samples);
  if (!loads.empty() && (section == "all" || section == "loads"))
    loads_section(load_counts, reps, prop.multiProcessorCount);
  if (section == "decode" || section == "loads") return 0;
  const char* vname[] = {"old (WMMA 64x64 / sync d_weight)", "mma.sync 128x128x32 s4", "mma.sync 128x256x32 s4",
                         "wgmma 128x256x64 s4", "wgmma 128x128x64 s4", "wgmma+TMA 128x256 ws",
                         "wgmma+TMA ws, staged store", "wgmma+TMA ws, staged store+acc",
                         "wgmma+TMA staged, dyn d_weight", "wgmma+TMA staged, TMA-add d_weight",
                         "wgmma+TMA staged, dyn+TMA-add d_wt"};
  std::vector<int> variants = {def_variant};
  if (all) {  // the wgmma variants exist in sm_90a builds only (the hook refuses them otherwise)
    variants = {0, 1, 2};
    for (int v : {3, 4, 5, 6, 7, 8, 9, 10}) {
      const int prev = ds::cuda::grouped_matmul_bench_variant(v);
      if (ds::cuda::grouped_matmul_bench_variant(prev) == v) variants.push_back(v);
    }
  }

  ds::Context ctx;
  ctx.device = ds::Device{ds::DeviceKind::cuda, 0};
  cudaStream_t st = nullptr;  // the default stream (ctx.cuda_stream = nullptr)
  const int64_t E = 32;
  struct Shape {
    const char* name;
    int64_t K, N;
  };
  struct Row {
    std::string what;
    double tf_def, tf_old, tf_dense;
  };
  std::vector<Row> summary;
  for (const Shape sh : {Shape{"gate/up K1024->N512", 1024, 512}, Shape{"down K512->N1024", 512, 1024}}) {
    const int64_t K = sh.K, N = sh.N;
    const double flop = 2.0 * double(M) * double(K) * double(N);
    DevBuf in(size_t(M * K) * 2), w(size_t(E * N * K) * 2), out(size_t(M * N) * 2), d_out(size_t(M * N) * 2),
        d_in(size_t(M * K) * 2), d_w(size_t(E * N * K) * 4), off(size_t(E + 1) * 8), wd(size_t(N * K) * 2),
        d_wd(size_t(N * K) * 4);
    fill(in, 1, 1.0f);
    fill(w, 2, 1.0f / std::sqrt(float(K)));
    fill(d_out, 3, 1.0f);
    fill(wd, 4, 1.0f / std::sqrt(float(K)));
    CK(cudaMemset(d_w.p, 0, d_w.bytes));
    CK(cudaMemset(d_wd.p, 0, d_wd.bytes));
    const ds::Tensor t_in = tensor(in, ds::DType::bf16, {M, K}), t_w = tensor(w, ds::DType::bf16, {E, N, K}),
                     t_out = tensor(out, ds::DType::bf16, {M, N}), t_dout = tensor(d_out, ds::DType::bf16, {M, N}),
                     t_din = tensor(d_in, ds::DType::bf16, {M, K}), t_dw = tensor(d_w, ds::DType::f32, {E, N, K}),
                     t_off = tensor(off, ds::DType::i64, {E + 1}), t_wd = tensor(wd, ds::DType::bf16, {N, K}),
                     t_dwd = tensor(d_wd, ds::DType::f32, {N, K});

    // The dense ceiling: the same FLOPs as one [M, K] x [K, N] product through cuBLASLt.
    const float dense_fwd =
        time_ms(st, reps,
                [&] { ds::cuda::matmul_forward(ctx, t_out, t_in, t_wd, ds::Accum::overwrite, ds::Inputs::fresh); });
    const float dense_din = time_ms(st, reps, [&] {
      ds::cuda::matmul_backward(ctx, t_din, ds::Tensor{}, t_dout, t_in, t_wd, ds::Accum::overwrite);
    });
    const float dense_dw = time_ms(st, reps, [&] {
      ds::cuda::matmul_backward(ctx, ds::Tensor{}, t_dwd, t_dout, t_in, t_wd, ds::Accum::overwrite);
    });
    std::printf("\n-- %s: %.1f GFLOP per launch; dense cuBLASLt M %lld: forward %.3f ms (%.0f TFLOP/s), d_in %.3f ms "
                "(%.0f), d_weight f32 %.3f ms (%.0f)\n",
                sh.name, flop * 1e-9, (long long)M, dense_fwd, flop / dense_fwd * 1e-9, dense_din,
                flop / dense_din * 1e-9, dense_dw, flop / dense_dw * 1e-9);
    const float dense[5] = {dense_fwd, dense_din, dense_din, 2 * dense_din, dense_dw};

    for (const bool skew : {false, true}) {
      const std::vector<int64_t> h_off = make_offsets(E, M, skew);
      CK(cudaMemcpy(off.p, h_off.data(), h_off.size() * 8, cudaMemcpyHostToDevice));
      int64_t mx = 0, mn = M;
      for (int64_t e = 0; e < E; ++e) {
        mx = std::max(mx, h_off[size_t(e + 1)] - h_off[size_t(e)]);
        mn = std::min(mn, h_off[size_t(e + 1)] - h_off[size_t(e)]);
      }
      std::printf("   load %s: rows per expert min %lld max %lld\n", skew ? "skewed" : "uniform", (long long)mn,
                  (long long)mx);
      std::printf("   %-9s %-34s %9s %9s %9s %9s\n", "product", "variant", "ms", "TFLOP/s", "vs dense", "check");
      const char* pname[5] = {"forward", "d_in", "d_in+=", "d_in pair", "d_weight"};
      for (int p = 0; p < 5; ++p) {
        const double pflop = p == 3 ? 2 * flop : flop;  // the pair: two products
        auto run = [&] {
          if (p == 0)
            ds::cuda::grouped_matmul_forward(ctx, t_out, t_in, t_w, t_off, ds::Accum::overwrite, ds::Inputs::fresh);
          else if (p <= 2)
            ds::cuda::grouped_matmul_backward(ctx, t_din, ds::Tensor{}, t_dout, t_in, t_w, t_off,
                                              p == 1 ? ds::Accum::overwrite : ds::Accum::add);
          else if (p == 3)  // the gate and up projections' d_in (here the same operands twice)
            ds::cuda::grouped_matmul_d_in_pair(ctx, t_din, t_dout, t_w, t_dout, t_w, t_off);
          else
            ds::cuda::grouped_matmul_backward(ctx, ds::Tensor{}, t_dw, t_dout, t_in, t_w, t_off, ds::Accum::overwrite);
        };
        const DevBuf& res = p == 0 ? out : p <= 3 ? d_in : d_w;
        std::vector<float> ref;
        double tf_old = 0, tf_def = 0;
        for (int v : variants) {
          ds::cuda::grouped_matmul_bench_variant(v);
          std::string check = "-";
          if (all) {  // one launch from zero (d_weight accumulates), compared with variant 0
            CK(cudaMemset(res.p, 0, res.bytes));
            run();
            CK(cudaDeviceSynchronize());
            std::vector<float> got = to_host_f32(res, p != 4);
            if (v == 0) ref = std::move(got);
            else {
              char b[32];
              std::snprintf(b, sizeof b, "%.1e", norm_diff(got, ref));
              check = b;
            }
          }
          const float ms = time_ms(st, reps, run);
          const double tf = pflop / ms * 1e-9;
          if (v == 0) tf_old = tf;
          if (v == def_variant) tf_def = tf;
          std::printf("   %-9s %-34s %9.3f %9.1f %8.0f%% %9s\n", pname[p], vname[v], ms, tf, 100.0 * dense[p] / ms,
                      check.c_str());
        }
        ds::cuda::grouped_matmul_bench_variant(def_variant);
        summary.push_back(Row{std::string(sh.name) + " " + (skew ? "skewed " : "uniform ") + pname[p], tf_def, tf_old,
                              pflop / dense[p] * 1e-9});
      }
    }
    CK(cudaDeviceSynchronize());
  }
  std::printf("\n== summary (TFLOP/s; default variant %d = %s)\n", def_variant, vname[def_variant]);
  std::printf("%-42s %9s %9s %9s %9s\n", "product", "old", "new", "dense", "new/dense");
  for (const Row& r : summary)
    std::printf("%-42s %9.1f %9.1f %9.1f %8.0f%%\n", r.what.c_str(), r.tf_old, r.tf_def, r.tf_dense,
                100.0 * r.tf_def / r.tf_dense);
  return 0;
}
