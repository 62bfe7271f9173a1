// Parity of the decode-path ops added for issue 5's decode targets:
//   * sample_tokens (kernels/sampling.cu) against the CPU sampler's contract (lib/infer/sampler.h:
//     sampling_distribution + draw_token + token_logprob, in double): greedy ids identical (ties -> lowest id);
//     sampled ids equal to the CPU's for the same u (they may differ only when u is within rounding of a
//     cumulative boundary, which these draws never hit); every top-k / top-p draw inside the CPU's support; the
//     empirical distribution over many Philox seeds against the CPU's by chi-square; log-probs to 1e-9;
//   * both kernels: one block per row, and greedy / untruncated rows of few-row calls over large V split over
//     several blocks a row (sample_split_kernel);
//   * matmul_heads_forward (the absorbed-MLA per-head folds in one strided-batched cuBLASLt product) against the
//     CPU op and against the decoder's former per-head loop (copy_cols + matmul_forward + copy_cols).
#include <algorithm>
#include <cmath>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "core/rng.h"
#include "infer/sampler.h"
#include "tests/ops/parity.h"

using namespace ds;
using namespace ds::parity;

namespace {

struct Row {
  double temperature, top_p;
  int64_t top_k;
  double u;
};

struct Result {
  std::vector<int64_t> tokens;
  std::vector<double> logprobs;
};

// Runs sample_tokens on the device for logits [n, V] (given as floats, stored in dt) and the rows' parameters.
Result gpu_sample(const std::vector<float>& logits, int64_t n, int64_t V, const std::vector<Row>& rows, DType dt) {
  Values lv{{n, V}, std::vector<double>(logits.begin(), logits.end())};
  DevTensor l = dev(dt, lv);
  std::vector<double> prm;
  for (const Row& r : rows) prm.insert(prm.end(), {r.temperature, r.top_p, double(r.top_k), r.u});
  DevTensor p(DType::f64, {n, 4}), tok = dev_poisoned(DType::i32, {n}), lp = dev_poisoned(DType::f64, {n});
  from_host(p.t, prm);
  sample_tokens(cuda_ctx(), tok.t, lp.t, l.t, p.t);
  device_sync();
  CHECK(tok.guard_damage() == 0);
  CHECK(lp.guard_damage() == 0);
  return Result{to_host_i64(tok.t), to_host_f64(lp.t)};
}

SamplingParams params_of(const Row& r) {
  SamplingParams sp;
  sp.temperature = r.temperature;
  sp.top_p = r.top_p;
  sp.top_k = r.top_k;
  return sp;
}

// The logits as the device sees them (rounded through dt), as floats.
std::vector<float> logits_values(int64_t n, int64_t V, uint64_t seed, double scale, DType dt) {
  Values x = rounded(dt, randn({n, V}, seed, scale));
  return std::vector<float>(x.v.begin(), x.v.end());
}

// Every row against the CPU sampler: ids equal, log-probs within 1e-9, the id inside the CPU's support.
void expect_rows_match(const std::string& what, const std::vector<float>& logits, int64_t V,
                       const std::vector<Row>& rows, DType dt) {
  const int64_t n = int64_t(rows.size());
  const Result g = gpu_sample(logits, n, V, rows, dt);
  int64_t mismatched = 0, outside = 0;
  double max_lp = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float* l = logits.data() + i * V;
    const SamplingParams sp = params_of(rows[size_t(i)]);
    const std::vector<double> q = sampling_distribution(l, V, sp);
    const int32_t want = draw_token(q, rows[size_t(i)].u);
    const int64_t got = g.tokens[size_t(i)];
    if (got != want) ++mismatched;
    if (got < 0 || got >= V || !(q[size_t(got)] > 0)) {
      ++outside;
      continue;
    }
    max_lp = std::max(max_lp, std::fabs(g.logprobs[size_t(i)] - token_logprob(l, V, int32_t(got), sp.temperature)));
  }
  INFO(what << ": " << n << " rows, V " << V << ", mismatched ids " << mismatched << ", outside the support "
            << outside << ", max |logprob diff| " << max_lp);
  std::printf("%s: %lld rows, V %lld: mismatched ids %lld, outside support %lld, max |dlogprob| %.3g\n", what.c_str(),
              (long long)n, (long long)V, (long long)mismatched, (long long)outside, max_lp);
  CHECK(outside == 0);
  CHECK(mismatched == 0);
  CHECK(max_lp <= 1e-9);
}

}  // namespace

TEST_CASE("sample_tokens: greedy ids identical to the CPU (ties -> lowest id)", "[sampling]") {
  for (int64_t V : {int64_t(7), int64_t(1000), int64_t(32000), int64_t(129280)}) {
    const int64_t n = 9;
    std::vector<float> l = logits_values(n, V, 301, 2.0, DType::f32);
    // row 1: the maximum three times; row 2: all equal; row 3: maximum at the last id
    for (int64_t j : {V / 2, V / 3, V - 1}) l[size_t(V + j)] = 50.0f;
    for (int64_t j = 0; j < V; ++j) l[size_t(2 * V + j)] = 0.25f;
    l[size_t(3 * V + V - 1)] = 60.0f;
    std::vector<Row> rows(size_t(n), Row{0.0, 1.0, 0, 0.5});
    rows[4].top_k = 5;  // ignored when greedy
    rows[5].top_p = 0.1;
    expect_rows_match("greedy f32", l, V, rows, DType::f32);
    std::vector<float> lb = logits_values(n, V, 302, 2.0, DType::bf16);  // bf16: many ties
    expect_rows_match("greedy bf16", lb, V, rows, DType::bf16);
  }
}

TEST_CASE("sample_tokens: sampled ids and log-probs equal the CPU's for the same u", "[sampling]") {
  struct Case {
    const char* name;
    double t, p;
    int64_t k;
  };
  const Case cases[] = {{"T=1", 1.0, 1.0, 0},         {"T=0.7", 0.7, 1.0, 0},         {"T=1.3 top_k=50", 1.3, 1.0, 50},
                        {"top_k=1", 1.0, 1.0, 1},      {"top_p=0.9", 1.0, 0.9, 0},     {"top_p=0.5 T=0.8", 0.8, 0.5, 0},
                        {"top_k=20 top_p=0.8", 1.0, 0.8, 20}, {"top_p=0 (argmax only)", 1.0, 0.0, 0},
                        {"top_k>=V", 1.0, 1.0, 1 << 30},      {"top_k=40 top_p=0.999", 0.9, 0.999, 40}};
  // n 64 at V 32000: greedy and untruncated rows split V over 4 blocks a row; n 3: over 15 (sample_split_kernel)
  for (const auto& [V, n] : {std::pair<int64_t, int64_t>{7, 64}, {1000, 64}, {32000, 64}, {32000, 3}, {129280, 2}}) {
    for (DType dt : {DType::f32, DType::bf16}) {
      const std::vector<float> l = logits_values(n, V, 311 + uint64_t(V), 3.0, dt);
      for (const Case& c : cases) {
        std::vector<Row> rows;
        for (int64_t i = 0; i < n; ++i) rows.push_back(Row{c.t, c.p, c.k, rng_uniform_at(7, uint64_t(i), 3)});
        expect_rows_match(std::string(c.name) + " " + dtype_name(dt), l, V, rows, dt);
      }
    }
  }
}

TEST_CASE("sample_tokens: top-p masses at the nucleus boundary are decided exactly", "[sampling]") {
  // The nucleus search decides on float sums only when they are more than 1e-6 from top_p. Here top_p sits 1e-8
  // either side of the masses of the top 1, 2 and 3 keys: the float sums cannot decide (the exact ones do), while
  // 1e-8 is far above double rounding, so the CPU's left-to-right sums agree. Rows: three distinct leaders (the
  // search's own rounds land on the boundary) and four tied ones (the tie cut after it). (top_p exactly on a
  // boundary is decided by rounding, differently on either side: not compared.)
  const int64_t V = 1000;
  std::vector<float> distinct(size_t(V), -30.0f), tied(size_t(V), -30.0f);
  distinct[7] = 10.0f;
  distinct[500] = 9.0f;
  distinct[998] = 8.0f;
  for (int64_t j : {3, 200, 201, 999}) tied[size_t(j)] = 10.0f;
  std::vector<float> l;
  std::vector<Row> rows;
  for (const std::vector<float>* r : {&distinct, &tied}) {
    SamplingParams sp;  // T 1, no truncation: the exact probabilities, in double
    const std::vector<double> q = sampling_distribution(r->data(), V, sp);
    std::vector<double> top(q);
    std::sort(top.begin(), top.end(), std::greater<double>());
    double mass = 0;
    for (int j = 0; j < 3; ++j) {
      mass += top[size_t(j)];
      for (const double p : {mass - 1e-8, mass + 1e-8})
        for (const double u : {0.05, 0.45, 0.9}) {
          l.insert(l.end(), r->begin(), r->end());
          rows.push_back(Row{1.0, p, 0, u});
        }
    }
  }
  expect_rows_match("top-p boundary", l, V, rows, DType::f32);
}

TEST_CASE("sample_tokens: top-k / top-p draws stay in the CPU's support; chi-square over Philox seeds", "[sampling]") {
  // One row replicated: many draws of the same distribution, u from the engine's Philox stream per seed.
  const int64_t V = 24, n = 20000;
  std::vector<float> one = logits_values(1, V, 321, 1.5, DType::f32);
  one[5] = one[6];  // a tie inside the support
  std::vector<float> l;
  for (int64_t i = 0; i < n; ++i) l.insert(l.end(), one.begin(), one.end());
  struct Case {
    double t, p;
    int64_t k;
  };
  for (const Case& c : {Case{1.0, 1.0, 0}, Case{1.0, 1.0, 6}, Case{0.8, 0.7, 0}, Case{1.2, 0.9, 10}}) {
    std::vector<Row> rows;
    for (int64_t i = 0; i < n; ++i) rows.push_back(Row{c.t, c.p, c.k, rng_uniform_at(uint64_t(i), 0, 0)});
    const Result g = gpu_sample(l, n, V, rows, DType::f32);
    const std::vector<double> q = sampling_distribution(one.data(), V, params_of(rows[0]));
    std::vector<double> count(size_t(V), 0.0);
    int64_t outside = 0, mismatched = 0;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t t = g.tokens[size_t(i)];
      if (t < 0 || t >= V || !(q[size_t(t)] > 0)) {
        ++outside;
        continue;
      }
      count[size_t(t)] += 1;
      mismatched += t != draw_token(q, rows[size_t(i)].u);
    }
    double chi2 = 0;
    int df = -1;
    for (int64_t v = 0; v < V; ++v)
      if (q[size_t(v)] > 0) {
        const double e = q[size_t(v)] * double(n);
        chi2 += (count[size_t(v)] - e) * (count[size_t(v)] - e) / e;
        ++df;
      }
    // Wilson-Hilferty: the 1 - 1e-6 quantile of chi-square(df) ~ df (1 - 2/(9df) + 4.753 sqrt(2/(9df)))^3
    const double a = 2.0 / (9.0 * std::max(df, 1)), crit = std::max(df, 1) * std::pow(1 - a + 4.753 * std::sqrt(a), 3);
    std::printf("chi-square T=%.1f top_p=%.2f top_k=%lld: support %d, chi2 %.2f (1e-6 critical %.1f), outside %lld, "
                "ids differing from the CPU %lld\n",
                c.t, c.p, (long long)c.k, df + 1, chi2, crit, (long long)outside, (long long)mismatched);
    CHECK(outside == 0);
    CHECK(mismatched == 0);
    CHECK(chi2 < crit);
  }
}

TEST_CASE("matmul_heads_forward: one strided-batched product vs the CPU and the per-head loop", "[matmul][heads]") {
  // absorbed-MLA shapes: q fold (in [n, H, dn + dr], weight [H, R, dn], out [n, H, R + dr]) and the W_UV fold
  // (in [n, H, R], weight kv_b [H, dn + dv, R] rows dn.., out [n, H, dv]); n = 1 and 64 decode rows (bf16 with at
  // most 4 rows runs the GEMV kernel, heads in the grid's y)
  struct Shape {
    int64_t M, H, Kin, Nout, Wr, k, n, row0;
  };
  for (const Shape& s : {Shape{1, 16, 96, 288, 256, 64, 256, 0}, Shape{64, 16, 96, 288, 256, 64, 256, 0},
                         Shape{1, 16, 256, 64, 128, 256, 64, 64}, Shape{64, 16, 256, 64, 128, 256, 64, 64},
                         Shape{5, 3, 9, 11, 13, 7, 6, 4},
                         Shape{4, 3, 24, 40, 40, 24, 37, 2}}) {  // the GEMV path with 4 lanes a column, N % 8 != 0
    for (DType dt : {DType::f32, DType::bf16}) {
      Twin in = twin(dt, randn({s.M, s.H, s.Kin}, 331)), w = twin(dt, randn({s.H, s.Wr, s.k}, 332, 0.1));
      Twin out = twin(dt, constant({s.M, s.H, s.Nout}, 0.5));  // columns past n must stay 0.5
      run_both([&](const Context& c, Pick p) { matmul_heads_forward(c, p(out), p(in), p(w), s.k, s.n, s.row0); });
      const std::string tag = std::string("matmul_heads_forward ") + dtype_name(dt) + " M" + std::to_string(s.M) +
                              " H" + std::to_string(s.H) + " k" + std::to_string(s.k) + " n" + std::to_string(s.n);
      expect_close(tag, out, dt == DType::bf16 ? 8e-3 : 1e-5,
                   dt == DType::bf16 ? "bf16 output rounding <= 2^-8" : "f32 accumulation over k <= 256");
      // settled weights (the GEMV loads them before its wait): the same bits
      Twin out_s = twin(dt, constant({s.M, s.H, s.Nout}, 0.5));
      matmul_heads_forward(cuda_ctx(), out_s.dev.t, in.dev.t, w.dev.t, s.k, s.n, s.row0, Inputs::settled);
      expect_same_bits(tag + " settled", out.dev, out_s.dev);
    }
  }
  // The CPU op against the decoder's former per-head loop, f32 (the CPU decoder keeps the loop)
  const int64_t M = 7, H = 4, dn = 16, dr = 8, R = 32, C = R + dr, dqk = dn + dr;
  Values qv = randn({M, H * dqk}, 341), wv = randn({H, R, dn}, 342, 0.2);
  HostTensor q = host(DType::f32, qv), w = host(DType::f32, wv);
  HostTensor a = host_zeros(DType::f32, {M, H, C}), b = host_zeros(DType::f32, {M, H, C});
  const Context cpu = cpu_ctx();
  matmul_heads_forward(cpu, a.t, q.t.view({M, H, dqk}), w.t, dn, R);
  HostTensor qh = host_zeros(DType::f32, {M, dn}), oh = host_zeros(DType::f32, {M, R});
  for (int64_t h = 0; h < H; ++h) {
    copy_cols(cpu, qh.t, 0, q.t, h * dqk, dn);
    matmul_forward(cpu, oh.t, qh.t, w.t.index0(h));
    copy_cols(cpu, b.t.view({M, H * C}), h * C, oh.t, 0, R);
  }
  const std::vector<double> av = to_host_f64(a.t), bv = to_host_f64(b.t);
  double d = 0;
  for (size_t i = 0; i < av.size(); ++i) d = std::max(d, std::fabs(av[i] - bv[i]));
  INFO("CPU matmul_heads_forward vs the per-head loop, max |diff| " << d);
  CHECK(d <= 1e-5);
}

// ---- timings (hidden; run with "[bench]") ------------------------------------------------------------------

TEST_CASE("decode tail timings: lm head GEMV and sampling, batch 1, bench model shape", "[.bench][bench]") {
  // The last two kernels of a batch-1 decode step on the bench config (hidden 1024, vocab 32000): us a launch in a
  // chain of 200, against a one-element fill (the floor of any launch in such a chain) and the lm head's weight
  // bytes at the GPU's HBM bandwidth.
  const Context c = cuda_ctx();
  const int64_t D = 1024, V = 32000;
  DevTensor h = dev(DType::bf16, randn({1, D}, 1)), head = dev(DType::bf16, randn({V, D}, 2, 0.05));
  DevTensor logits(DType::f32, {1, V}), one(DType::f32, {1}), tok(DType::i32, {1}), lp(DType::f64, {1});
  matmul_forward(c, logits, h, head);
  DevTensor plain = dev(DType::f64, Values{{1, 4}, {1.0, 1.0, 0.0, 0.37}});
  DevTensor greedy = dev(DType::f64, Values{{1, 4}, {0.0, 1.0, 0.0, 0.37}});
  DevTensor topp = dev(DType::f64, Values{{1, 4}, {0.7, 0.95, 0.0, 0.37}});
  const double floor_us = chain_us([&] { fill(c, one, 1.0); });
  const double gemv = chain_us([&] { matmul_forward(c, logits, h, head); });
  const double s_plain = chain_us([&] { sample_tokens(c, tok, lp, logits, plain); });
  const double s_greedy = chain_us([&] { sample_tokens(c, tok, lp, logits, greedy); });
  const double s_topp = chain_us([&] { sample_tokens(c, tok, lp, logits, topp); });
  std::printf("bench decode tail V=%lld D=%lld (us a launch, chain of 200): fill floor %.2f | lm head GEMV %.2f "
              "(%.0f GB/s of weights) | sample T=1 %.2f, greedy %.2f, T=0.7 top-p 0.95 %.2f\n",
              (long long)V, (long long)D, floor_us, gemv, double(V * D * 2) / (gemv * 1e3), s_plain, s_greedy,
              s_topp);
  std::fflush(stdout);
}
