// CPU-vs-CUDA parity of kernels/attention.cu (causal attention forward / backward) and kernels/mla_decode.cu
// (kv_cache_write, absorbed-MLA decode over the paged latent cache), through the ops of lib/ops/ops.h.
// Every case prints one "parity ..." line with the measured error, its tolerance and the reason.
// Tags: [big] = DeepSeek-V3-sized cases (skip under compute-sanitizer: `~[big]`); [graph] = CUDA-graph capture;
// [.bench] = timings (hidden; run with "[bench]"); [variants] = the 96/64 forward's and backward's alternative
// kernels.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ops/attention_plan.h"
#include "tests/ops/parity.h"

using namespace ds;
using namespace ds::parity;

namespace ds::cuda {
int attention_bench_dkdv_variant(int variant);  // kernels/attention.cu: the 96/64 backward's alternatives
int attention_bench_dq_variant(int variant);    // (DS_ATTN_DKDV_VARIANTS, DS_ATTN_DQ_VARIANTS; 0 = the default)
int attention_bench_fwd_variant(int variant);   // the 96/64 forward's (0 = attn_fwd_mma_wide; 1..6 = wgmma)
}  // namespace ds::cuda

namespace {

// kernels/attention.cu's kDkdvVariants, kDqVariants in sm_90a builds; the variants from kDkdvWgmma / kDqWgmma on are
// the wgmma kernels (refused by the hooks in other builds).
constexpr int kDkdvVariants = 10, kDqVariants = 9, kDkdvWgmma = 6, kDqWgmma = 5;
// dK/dV variants 8 and 9 are 6 and 7 (query steps of 32, 64) with TMA loads, dQ variant 8 is 7 (dQ from the stored
// dS) with TMA loads: the same arithmetic, so the same bits as their twins.
constexpr int kDkdvTma = 8, kDqDs = 7, kDqDsTma = 8;
int kv_twin(int kv) { return kv >= kDkdvTma ? kDkdvWgmma + (kv - kDkdvTma) % 2 : kv; }
int q_twin(int q) { return q == kDqDsTma ? kDqDs : q; }

// Forces the 96/64 backward's dK/dV and dQ kernel variants for its lifetime.
struct BwdVariant {
  int kv, q, prev_kv, prev_q;
  BwdVariant(int kv_, int q_)
      : kv(kv_), q(q_), prev_kv(ds::cuda::attention_bench_dkdv_variant(kv_)),
        prev_q(ds::cuda::attention_bench_dq_variant(q_)) {}
  ~BwdVariant() {
    ds::cuda::attention_bench_dkdv_variant(prev_kv);
    ds::cuda::attention_bench_dq_variant(prev_q);
  }
  bool on() const {
    return ds::cuda::attention_bench_dkdv_variant(-1) == kv && ds::cuda::attention_bench_dq_variant(-1) == q;
  }
};

// kernels/attention.cu's kFwdVariants in sm_90a builds (1..6: attn_fwd_wgmma and attn_fwd_wgmma_ovl with key tiles
// of 64 and 128, then the overlapped one with Q in registers, then with TMA loads; refused by the hook elsewhere).
constexpr int kFwdVariants = 7;
// Forward variant 6 is 3 (the overlapped kernel, key tiles of 64) with TMA loads: the same bits.
constexpr int kFwdTma = 6, kFwdTmaTwin = 3;

// Forces the 96/64 forward's kernel variant for its lifetime.
struct FwdVariant {
  int var, prev;
  explicit FwdVariant(int v) : var(v), prev(ds::cuda::attention_bench_fwd_variant(v)) {}
  ~FwdVariant() { ds::cuda::attention_bench_fwd_variant(prev); }
  bool on() const { return ds::cuda::attention_bench_fwd_variant(-1) == var; }
};

// The reference on all cores (the CPU kernels parallelise over (batch, head) pairs and query rows).
Context cpu_ctx_mt() {
  Context c;
  c.threads = int(std::max(1u, std::thread::hardware_concurrency()));
  return c;
}
template <class F> void run_both_mt(F&& f) {
  f(cpu_ctx_mt(), Pick{false});
  f(cuda_ctx(), Pick{true});
  device_sync();
}

std::string dims(std::initializer_list<int64_t> d) {
  std::string s;
  for (int64_t x : d) s += (s.empty() ? "" : "x") + std::to_string(x);
  return s;
}

// ---- attention ----------------------------------------------------------------------------------------

struct AttnCase {
  int64_t B, T, H, Dqk, Dv;
  double scale;  // 0: 1/sqrt(Dqk)
};

// Tolerances on norm_err (error over the tensor's max |value|).
//  f32: one f32 rounding per product, expf, f32 sums over up to T keys; the reference is f64.
//  bf16: the output rounding alone is up to 2^-8 = 3.9e-3 relative (unit roundoff); P (forward) and P, dS (backward)
//  are rounded to bf16 before their tensor-core products, as FlashAttention-2 does (relative errors that average out
//  over the keys). Measured on the H200: at most 4.3e-3 (bf16), 1.7e-6 (f32).
constexpr double kAttnF32Fwd = 1e-5, kAttnF32Bwd = 2e-5, kAttnF32Lse = 2e-6;
constexpr double kAttnBf16Fwd = 1e-2, kAttnBf16Bwd = 1.5e-2, kAttnBf16Lse = 2e-5;
const char* kWhyF32 = "f32 accumulation and expf vs f64 reference";
const char* kWhyBf16Fwd = "bf16 output rounding 2^-8 + P rounded to bf16 before P.V";
const char* kWhyBf16Bwd = "bf16 output rounding + P, dS rounded to bf16 before the tensor-core products";
const char* kWhyLse = "f32 statistics from exact products of the (rounded) inputs";

// A gradient that is exactly zero in the reference (T = 1: P = 1 and O = v, so dS = P (dO.v - dO.O) = 0 and
// dq = dk = 0) has no scale to normalise by: check the device values' magnitude instead.
void expect_grad(const std::string& what, const Twin& t, double tol, const char* why) {
  const std::vector<double> ref = t.ref.values();
  double scale = 0;
  for (double r : ref) scale = std::max(scale, std::abs(r));
  if (scale > 0) {
    expect_close(what, t, tol, why);
    return;
  }
  expect_guards(what, t.dev);
  double got = 0;
  bool finite = true;
  for (double g : t.dev.values()) {
    finite = finite && std::isfinite(g);
    got = std::max(got, std::abs(g));
  }
  std::printf("parity %-48s reference exactly 0: max |got| %.3e (tol 1e-6, inputs of scale 1)\n", what.c_str(), got);
  CHECK(finite);
  CHECK(got <= 1e-6);
}

// A case's inputs: the scale (the case's, else 1 / sqrt(Dqk)), the shapes of q / k, v / out and lse, the tag its
// checks are named by, random q, k, v (seeds seed .. seed + 2) and empty out and lse.
struct AttnInputs {
  double scale;
  std::vector<int64_t> qs, vs, ls;
  std::string tag;
  Twin q, k, v, out, lse;
  AttnInputs(const AttnCase& s, DType dt, uint64_t seed)
      : scale(s.scale > 0 ? s.scale : 1.0 / std::sqrt(double(s.Dqk))),
        qs{s.B, s.T, s.H, s.Dqk},
        vs{s.B, s.T, s.H, s.Dv},
        ls{s.B, s.H, s.T},
        tag(std::string("attention ") + name(dt) + " " + dims({s.B, s.T, s.H, s.Dqk, s.Dv})),
        q(twin(dt, randu(qs, seed))),
        k(twin(dt, randu(qs, seed + 1))),
        v(twin(dt, randu(vs, seed + 2))),
        out(twin_out(dt, vs)),
        lse(twin_out(DType::f32, ls)) {}
};

void attention_case(const AttnCase& s, DType dt, uint64_t seed, bool grads_split = false) {
  AttnInputs in(s, dt, seed);
  const double scale = in.scale;
  const auto &qs = in.qs, &vs = in.vs, &ls = in.ls;
  const std::string& tag = in.tag;
  const bool bf = dt == DType::bf16;
  Twin &q = in.q, &k = in.k, &v = in.v, &out = in.out, &lse = in.lse;
  run_both_mt([&](const Context& c, Pick p) { attention_forward(c, p(out), p(lse), p(q), p(k), p(v), scale); });
  expect_close(tag + " fwd out", out, bf ? kAttnBf16Fwd : kAttnF32Fwd, bf ? kWhyBf16Fwd : kWhyF32);
  expect_close(tag + " fwd lse", lse, bf ? kAttnBf16Lse : kAttnF32Lse, kWhyLse);

  // Backward from the reference forward, so both sides see identical out and lse.
  Twin o_in = twin(dt, Values{vs, out.ref.values()}), l_in = twin(DType::f32, Values{ls, lse.ref.values()});
  Twin dout = twin(dt, randu(vs, seed + 3));
  const double tol = bf ? kAttnBf16Bwd : kAttnF32Bwd;
  const char* why = bf ? kWhyBf16Bwd : kWhyF32;
  if (!grads_split) {
    Twin dq = twin_out(dt, qs), dk = twin_out(dt, qs), dv = twin_out(dt, vs);
    run_both_mt([&](const Context& c, Pick p) {
      attention_backward(c, p(dq), p(dk), p(dv), p(dout), p(o_in), p(l_in), p(q), p(k), p(v), scale);
    });
    expect_grad(tag + " bwd dq", dq, tol, why);
    expect_grad(tag + " bwd dk", dk, tol, why);
    expect_grad(tag + " bwd dv", dv, tol, why);
  } else {  // optional outputs: dq alone, then dk and dv without dq
    Twin dq = twin_out(dt, qs);
    run_both_mt([&](const Context& c, Pick p) {
      attention_backward(c, p(dq), Tensor{}, Tensor{}, p(dout), p(o_in), p(l_in), p(q), p(k), p(v), scale);
    });
    expect_grad(tag + " bwd dq only", dq, tol, why);
    Twin dk = twin_out(dt, qs), dv = twin_out(dt, vs);
    run_both_mt([&](const Context& c, Pick p) {
      attention_backward(c, Tensor{}, p(dk), p(dv), p(dout), p(o_in), p(l_in), p(q), p(k), p(v), scale);
    });
    expect_grad(tag + " bwd dk (no dq)", dk, tol, why);
    expect_grad(tag + " bwd dv (no dq)", dv, tol, why);
  }
}

// The 96/64 backward's alternative kernels (query / key step, register cap, fragments in registers) against the
// CPU reference and against the default kernels. Every mma.sync variant runs the same products in the same order on
// the same values (a wider step only adds exact zeros for masked pairs), so each gradient must equal the default's
// bit for bit; the wgmma kernels' f32 sums may differ in the last bits (other hardware products), so their
// gradients must match the default's to within a bf16 rounding or so. Variant v forces dK/dV variant v and dQ
// variant v (0, the default, once that list is exhausted); then dQ from the stored dS (dQ variant 7) once more with
// the other wgmma dK/dV kernel (query steps of 32: each 64-query dS tile written in two halves).
void attention_variants_case(const AttnCase& s, uint64_t seed) {
  const DType dt = DType::bf16;
  AttnInputs in(s, dt, seed);
  const double scale = in.scale;
  const auto &qs = in.qs, &vs = in.vs, &ls = in.ls;
  const std::string& tag = in.tag;
  Twin &q = in.q, &k = in.k, &v = in.v, &out = in.out, &lse = in.lse;
  attention_forward(cpu_ctx_mt(), out.ref.t, lse.ref.t, q.ref.t, k.ref.t, v.ref.t, scale);
  Twin o_in = twin(dt, Values{vs, out.ref.values()}), l_in = twin(DType::f32, Values{ls, lse.ref.values()});
  Twin dout = twin(dt, randu(vs, seed + 3));
  Twin dq = twin_out(dt, qs), dk = twin_out(dt, qs), dv = twin_out(dt, vs);
  {
    const BwdVariant def(0, 0);
    REQUIRE(def.on());
    run_both_mt([&](const Context& c, Pick p) {
      attention_backward(c, p(dq), p(dk), p(dv), p(dout), p(o_in), p(l_in), p(q), p(k), p(v), scale);
    });
  }
  std::vector<std::pair<int, int>> pairs;
  for (int var = 1; var < std::max(kDkdvVariants, kDqVariants); ++var)
    pairs.emplace_back(var < kDkdvVariants ? var : 0, var < kDqVariants ? var : 0);
  for (int kv_var : {kDkdvWgmma, kDkdvTma, kDkdvTma + 1})
    for (int q_var : {kDqDs, kDqDsTma}) pairs.emplace_back(kv_var, q_var);
  for (auto [kv_var, q_var] : pairs) {
    const BwdVariant force(kv_var, q_var);
    if (!force.on() && (force.kv >= kDkdvWgmma || force.q >= kDqWgmma)) {
      WARN("variant kv" << kv_var << " q" << q_var << " (a wgmma kernel) needs an sm_90a build: skipped");
      continue;
    }
    REQUIRE(force.on());
    DevTensor dq2 = dev_poisoned(dt, qs), dk2 = dev_poisoned(dt, qs), dv2 = dev_poisoned(dt, vs);
    attention_backward(cuda_ctx(), dq2, dk2, dv2, dout.dev, o_in.dev, l_in.dev, q.dev, k.dev, v.dev, scale);
    device_sync();
    const std::string vt = tag + " kv" + std::to_string(force.kv) + " q" + std::to_string(force.q);
    for (auto [what, ref, got] : {std::tuple<const char*, const Twin*, const DevTensor*>{" dq", &dq, &dq2},
                                  {" dk", &dk, &dk2},
                                  {" dv", &dv, &dv2}}) {
      expect_guards(vt + what, *got);
      expect_close_values(vt + what, got->values(), ref->ref.values(), kAttnBf16Bwd, kWhyBf16Bwd);
      if (std::string(what) == " dq" ? force.q < kDqWgmma : force.kv < kDkdvWgmma)
        expect_same_bits(vt + what + " = default", ref->dev, *got);
      else
        expect_close_values(vt + what + " ~ default", got->values(), ref->dev.values(), 1e-2,
                            "wgmma vs mma.sync f32 sums: a bf16 rounding of the output, P and dS");
    }
    if (kv_twin(force.kv) != force.kv || q_twin(force.q) != force.q) {  // TMA kernels against their twins, bit for bit
      const BwdVariant twin_var(kv_twin(force.kv), q_twin(force.q));
      REQUIRE(twin_var.on());
      DevTensor dq3 = dev_poisoned(dt, qs), dk3 = dev_poisoned(dt, qs), dv3 = dev_poisoned(dt, vs);
      attention_backward(cuda_ctx(), dq3, dk3, dv3, dout.dev, o_in.dev, l_in.dev, q.dev, k.dev, v.dev, scale);
      device_sync();
      const std::string tv = " = kv" + std::to_string(twin_var.kv) + " q" + std::to_string(twin_var.q);
      expect_same_bits(vt + " dq" + tv, dq3, dq2);
      expect_same_bits(vt + " dk" + tv, dk3, dk2);
      expect_same_bits(vt + " dv" + tv, dv3, dv2);
    }
  }
}

// The 96/64 forward's wgmma kernels (attn_fwd_wgmma, attn_fwd_wgmma_ovl; key tiles of 64 and 128) against the CPU
// reference (out and lse, the bf16 forward's tolerances) and against variant 0, attn_fwd_mma_wide (other hardware f32
// sums: within a bf16 rounding of the output; lse to f32 precision). Then the backward (default kernels) from the
// variant's out and lse, against the CPU backward from the same out and lse: the backward reads the wgmma lse.
void attention_fwd_variants_case(const AttnCase& s, uint64_t seed) {
  const DType dt = DType::bf16;
  AttnInputs in(s, dt, seed);
  const double scale = in.scale;
  const auto &qs = in.qs, &vs = in.vs, &ls = in.ls;
  const std::string& tag = in.tag;
  Twin &q = in.q, &k = in.k, &v = in.v, &out = in.out, &lse = in.lse;
  {
    const FwdVariant def(0);
    REQUIRE(def.on());
    run_both_mt([&](const Context& c, Pick p) { attention_forward(c, p(out), p(lse), p(q), p(k), p(v), scale); });
  }
  for (int var = 1; var < kFwdVariants; ++var) {
    const FwdVariant force(var);
    if (!force.on()) {
      WARN("forward variant " << var << " (a wgmma kernel) needs an sm_90a build: skipped");
      continue;
    }
    const std::string vt = tag + " fwd" + std::to_string(var);
    DevTensor out2 = dev_poisoned(dt, vs), lse2 = dev_poisoned(DType::f32, ls);
    attention_forward(cuda_ctx(), out2, lse2, q.dev, k.dev, v.dev, scale);
    device_sync();
    expect_guards(vt + " out", out2);
    expect_guards(vt + " lse", lse2);
    const std::vector<double> o2 = out2.values(), l2 = lse2.values();
    expect_close_values(vt + " out", o2, out.ref.values(), kAttnBf16Fwd, kWhyBf16Fwd);
    expect_close_values(vt + " lse", l2, lse.ref.values(), kAttnBf16Lse, kWhyLse);
    expect_close_values(vt + " out ~ default", o2, out.dev.values(), 1e-2,
                        "wgmma vs mma.sync f32 sums: a bf16 rounding of the output and of P");
    expect_close_values(vt + " lse ~ default", l2, lse.dev.values(), 2 * kAttnBf16Lse,
                        "wgmma vs mma.sync f32 sums of the same products (each within 2e-5 of the reference)");
    if (var == kFwdTma) {  // against its twin without TMA, bit for bit
      const FwdVariant twin_var(kFwdTmaTwin);
      REQUIRE(twin_var.on());
      DevTensor out3 = dev_poisoned(dt, vs), lse3 = dev_poisoned(DType::f32, ls);
      attention_forward(cuda_ctx(), out3, lse3, q.dev, k.dev, v.dev, scale);
      device_sync();
      expect_same_bits(vt + " out = fwd" + std::to_string(kFwdTmaTwin), out3, out2);
      expect_same_bits(vt + " lse = fwd" + std::to_string(kFwdTmaTwin), lse3, lse2);
    }

    // The backward from this forward's out and lse, on both sides.
    Twin o_in = twin(dt, Values{vs, o2}), l_in = twin(DType::f32, Values{ls, l2});
    Twin dout = twin(dt, randu(vs, seed + 3 + uint64_t(var)));
    Twin dq = twin_out(dt, qs), dk = twin_out(dt, qs), dv = twin_out(dt, vs);
    run_both_mt([&](const Context& c, Pick p) {
      attention_backward(c, p(dq), p(dk), p(dv), p(dout), p(o_in), p(l_in), p(q), p(k), p(v), scale);
    });
    expect_grad(vt + " bwd dq", dq, kAttnBf16Bwd, kWhyBf16Bwd);
    expect_grad(vt + " bwd dk", dk, kAttnBf16Bwd, kWhyBf16Bwd);
    expect_grad(vt + " bwd dv", dv, kAttnBf16Bwd, kWhyBf16Bwd);
  }
}

// ---- MLA decode ---------------------------------------------------------------------------------------

struct DecodeCase {
  int64_t n, H, Rkv, dr, S, max_blocks;
  std::vector<int32_t> lens;
  double scale;
  bool with_lse = true;
};

constexpr double kDecF32 = 1e-5, kDecBf16 = 1e-2, kDecLseF32 = 2e-6, kDecLseBf16 = 2e-5;

// Block table: each row gets its own random pages; odd rows share row 0's first page (a shared prompt page);
// entries past a row's length are -1 (never read).
std::vector<int32_t> make_table(const DecodeCase& s, int64_t P, uint64_t seed) {
  std::vector<int32_t> perm(static_cast<size_t>(P));
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<int32_t> t(size_t(s.n * s.max_blocks), -1);
  for (int64_t i = 0; i < s.n; ++i) {
    const int64_t used = (s.lens[size_t(i)] + s.S - 1) / s.S;
    for (int64_t b = 0; b < used; ++b) t[size_t(i * s.max_blocks + b)] = perm[size_t((i * s.max_blocks + b) % P)];
    if (i % 2 == 1 && used > 0) t[size_t(i * s.max_blocks)] = t[0];
  }
  return t;
}

void decode_case(const DecodeCase& s, DType dt, uint64_t seed) {
  const int64_t C = s.Rkv + s.dr, P = s.n * s.max_blocks + 3;
  const std::string tag = std::string("mla_decode ") + name(dt) + " n" + std::to_string(s.n) + " H" +
                          std::to_string(s.H) + " C" + std::to_string(C) + " R" + std::to_string(s.Rkv) + " S" +
                          std::to_string(s.S) + " maxlen" + std::to_string(*std::max_element(s.lens.begin(), s.lens.end()));
  const bool bf = dt == DType::bf16;
  Twin q = twin(dt, randu({s.n, s.H, C}, seed)), pool = twin(dt, randu({P, s.S, C}, seed + 1));
  Twin table = twin_ints({s.n, s.max_blocks}, make_table(s, P, seed + 2)), lens = twin_ints({s.n}, s.lens);
  Twin out = twin_out(dt, {s.n, s.H, s.Rkv});
  Twin lse = s.with_lse ? twin_out(DType::f32, {s.n, s.H}) : none();
  run_both_mt([&](const Context& c, Pick p) {
    mla_decode_attention(c, p(out), p(lse), p(q), p(pool), p(table), p(lens), s.scale);
  });
  expect_close(tag + " out", out, bf ? kDecBf16 : kDecF32,
               bf ? "bf16 output rounding 2^-8 + P rounded to bf16 before P.V" : kWhyF32);
  if (s.with_lse) expect_close(tag + " lse", lse, bf ? kDecLseBf16 : kDecLseF32, kWhyLse);
  // a settled cache (written by copies long before): the first K tile is gathered before the wait, same bits
  Twin out2 = twin_out(dt, {s.n, s.H, s.Rkv});
  Twin lse2 = s.with_lse ? twin_out(DType::f32, {s.n, s.H}) : none();
  mla_decode_attention(cuda_ctx(), out2.dev.t, lse2.dev.t, q.dev.t, pool.dev.t, table.dev.t, lens.dev.t, s.scale,
                       Inputs::settled);
  expect_same_bits(tag + " settled out", out.dev, out2.dev);
  if (s.with_lse) expect_same_bits(tag + " settled lse", lse.dev, lse2.dev);
}

const double kV3Scale = 0.1352338;  // MODEL.md §2.4: 192^-0.5 * mscale^2

// ---- timing -------------------------------------------------------------------------------------------

template <class F> double time_ms(F&& f, int iters) {
  for (int i = 0; i < 3; ++i) f();
  device_sync();
  const double ms = events_ms([&] {
    for (int i = 0; i < iters; ++i) f();
  });
  device_sync();
  return ms / iters;
}

}  // namespace

// =======================================================================================================

TEST_CASE("attention parity: small and odd shapes, f32 and bf16", "[attention]") {
  const std::vector<AttnCase> cases = {
      {1, 1, 1, 192, 128, kV3Scale},  // one token
      {2, 7, 3, 192, 128, kV3Scale},  // inside one tile
      {1, 129, 2, 96, 64, 0},         // tile boundaries + 1
      {3, 65, 2, 48, 32, 0},          // the project's small preset dims
      {2, 100, 2, 96, 64, 1.0},       // peaky softmax (large scale): online max rescaling
      {2, 33, 3, 16, 8, 0},           // tiny preset dims: SIMT path for bf16 too
      {1, 70, 2, 20, 12, 0},          // dims that are not multiples of 8
      {2, 130, 2, 128, 128, 0},       // square head dims
  };
  uint64_t seed = 100;
  for (const AttnCase& s : cases)
    for (DType dt : {DType::f32, DType::bf16}) attention_case(s, dt, seed += 10);
}

TEST_CASE("attention parity: optional gradient outputs and batch sizes", "[attention]") {
  for (DType dt : {DType::f32, DType::bf16}) {
    attention_case({4, 97, 2, 96, 64, 0}, dt, 501, /*grads_split=*/true);
    attention_case({5, 31, 1, 192, 128, kV3Scale}, dt, 511);
  }
}

// Edges of the wide-tile forward (128 query rows per block, 4 warps of 32 rows; 96/64 and 48/32) and of the per-warp
// tile skipping in all three tensor-core kernels: T not a multiple of 128 / 64 / 32, T below one warp's rows (warps
// whose rows all lie past T), an exact multiple, and many (batch, head) blocks.
TEST_CASE("attention parity: wide-tile forward edges", "[attention]") {
  const std::vector<AttnCase> cases = {
      {1, 200, 3, 96, 64, 0},   // 2 query tiles, the second partial
      {3, 17, 2, 96, 64, 0},    // T < 32: warps 1..3 of the only block have no valid row
      {2, 45, 1, 96, 64, 0},    // T between one and two warps' rows
      {1, 256, 2, 96, 64, 0},   // exact multiple of the tile
      {1, 383, 1, 96, 64, 2.0}, // peaky softmax across three query tiles, odd tail
      {64, 40, 8, 48, 32, 0},   // B * H = 512 blocks, small dims
      {2, 131, 3, 48, 32, 0},
  };
  uint64_t seed = 1200;
  for (const AttnCase& s : cases) attention_case(s, DType::bf16, seed += 10);
}

TEST_CASE("attention parity: the 96/64 backward's kernel variants", "[attention][variants]") {
  const std::vector<AttnCase> cases = {
      {1, 129, 2, 96, 64, 0},    // tile boundaries + 1
      {3, 17, 2, 96, 64, 0},     // T < 32: warps without a valid row, one query / key step
      {2, 100, 2, 96, 64, 1.0},  // peaky softmax
      {1, 200, 3, 96, 64, 0},    // partial last tiles of every step size
      {1, 383, 1, 96, 64, 2.0},  // odd tail, many steps
      {2, 256, 2, 96, 64, 0},    // exact multiple of every tile
      {3, 96, 5, 96, 64, 1.0},   // T a multiple of 32, not of 64: TMA at query steps of 32, a partial key block
      {2, 64, 3, 96, 64, 0},     // one key block, one or two query steps (TMA at both)
      {4, 512, 2, 96, 64, 0.5},  // many steps: both TMA buffers refilled many times
  };
  uint64_t seed = 1400;
  for (const AttnCase& s : cases) attention_variants_case(s, seed += 10);
}

// T not a multiple of either key tile, T below one tile (and below one warp's 16 rows), peaky softmax, an exact
// multiple, several query tiles, many (batch, head) blocks.
TEST_CASE("attention parity: the 96/64 forward's kernel variants", "[attention][variants]") {
  const std::vector<AttnCase> cases = {
      {1, 129, 2, 96, 64, 0},    // tile boundaries + 1
      {3, 17, 2, 96, 64, 0},     // T < 64 and < 32: warps without a valid row, one key tile
      {2, 9, 1, 96, 64, 0},      // T < 16: only warp 0 has valid rows
      {2, 100, 2, 96, 64, 2.0},  // peaky softmax
      {1, 200, 3, 96, 64, 0},    // partial last tiles of both key-tile sizes
      {1, 383, 1, 96, 64, 2.0},  // odd tail, many key tiles, peaky
      {2, 256, 2, 96, 64, 0},    // exact multiple of every tile
      {8, 70, 6, 96, 64, 0},     // B * H = 48 blocks a query tile
      {3, 64, 5, 96, 64, 1.0},   // T a multiple of 64: TMA with one key tile
      {2, 192, 3, 96, 64, 0},    // three key tiles: both TMA rings refilled
      {2, 512, 2, 96, 64, 0.5},  // many key tiles
  };
  uint64_t seed = 1600;
  for (const AttnCase& s : cases) attention_fwd_variants_case(s, seed += 10);
}

// MLA's attention in place (mla_attention_forward / backward): against attention_forward / backward on the keys and
// values materialised here by plain loops — the same bits on the device (the in-place loads of the sm_90a 96/64
// kernels feed the same products; other shapes materialise them the same way) — and against the CPU reference.
void mla_attention_case(int64_t B, int64_t T, int64_t H, int64_t dn, int64_t dr, int64_t Dv, DType dt, uint64_t seed) {
  const int64_t Dqk = dn + dr, W = dn + Dv, N = B * T;
  const std::vector<int64_t> qs{B, T, H, Dqk}, vs{B, T, H, Dv}, kvs{B, T, H, W}, ps{B, T, dr}, ls{B, H, T},
      dps{B, T, H, dr};
  const std::string tag = std::string("mla_attention ") + name(dt) + " " + dims({B, T, H, dn, dr, Dv});
  const double scale = 1.0 / std::sqrt(double(Dqk));
  const Values kvv = randu(kvs, seed), pev = randu(ps, seed + 1);
  Values kf{qs, std::vector<double>(size_t(N * H * Dqk))}, vf{vs, std::vector<double>(size_t(N * H * Dv))};
  for (int64_t n = 0; n < N; ++n)
    for (int64_t h = 0; h < H; ++h) {
      const double* src = kvv.v.data() + (n * H + h) * W;
      double* k = kf.v.data() + (n * H + h) * Dqk;
      for (int64_t c = 0; c < dn; ++c) k[c] = src[c];
      for (int64_t c = 0; c < dr; ++c) k[dn + c] = pev.v[size_t(n * dr + c)];
      for (int64_t c = 0; c < Dv; ++c) vf.v[size_t((n * H + h) * Dv + c)] = src[dn + c];
    }
  Twin q = twin(dt, randu(qs, seed + 2)), kv = twin(dt, kvv), pe = twin(dt, pev), k = twin(dt, kf), v = twin(dt, vf);
  Twin out = twin_out(dt, vs), lse = twin_out(DType::f32, ls);
  run_both_mt([&](const Context& c, Pick p) { mla_attention_forward(c, p(out), p(lse), p(q), p(kv), p(pe), scale); });
  const bool bf = dt == DType::bf16;
  expect_close(tag + " fwd out", out, bf ? kAttnBf16Fwd : kAttnF32Fwd, bf ? kWhyBf16Fwd : kWhyF32);
  expect_close(tag + " fwd lse", lse, bf ? kAttnBf16Lse : kAttnF32Lse, kWhyLse);
  DevTensor out2(dt, vs), lse2(DType::f32, ls);
  attention_forward(cuda_ctx(), out2, lse2, q.dev, k.dev, v.dev, scale);
  device_sync();
  expect_same_bits(tag + " fwd out = attention_forward's", out.dev, out2);
  expect_same_bits(tag + " fwd lse = attention_forward's", lse.dev, lse2);

  Twin o_in = twin(dt, Values{vs, out.ref.values()}), l_in = twin(DType::f32, Values{ls, lse.ref.values()});
  Twin dout = twin(dt, randu(vs, seed + 3));
  Twin dq = twin_out(dt, qs), dkv = twin_out(dt, kvs), dpe = twin_out(dt, dps);
  run_both_mt([&](const Context& c, Pick p) {
    mla_attention_backward(c, p(dq), p(dkv), p(dpe), p(dout), p(o_in), p(l_in), p(q), p(kv), p(pe), scale);
  });
  const double tol = bf ? kAttnBf16Bwd : kAttnF32Bwd;
  const char* why = bf ? kWhyBf16Bwd : kWhyF32;
  expect_grad(tag + " bwd dq", dq, tol, why);
  expect_grad(tag + " bwd d_kv", dkv, tol, why);
  expect_grad(tag + " bwd d_k_pe", dpe, tol, why);
  DevTensor dq2(dt, qs), dk2(dt, qs), dv2(dt, vs);
  attention_backward(cuda_ctx(), dq2, dk2, dv2, dout.dev, o_in.dev, l_in.dev, q.dev, k.dev, v.dev, scale);
  device_sync();
  expect_same_bits(tag + " bwd dq = attention_backward's", dq.dev, dq2);
  // d_kv and d_k_pe against attention_backward's d_k, d_v split by hand
  const std::vector<double> dk = dk2.values(), dv = dv2.values(), gkv = dkv.dev.values(), gpe = dpe.dev.values();
  int64_t differ = 0;
  for (int64_t r = 0; r < N * H; ++r) {
    for (int64_t c = 0; c < dn; ++c) differ += gkv[size_t(r * W + c)] != dk[size_t(r * Dqk + c)];
    for (int64_t c = 0; c < Dv; ++c) differ += gkv[size_t(r * W + dn + c)] != dv[size_t(r * Dv + c)];
    for (int64_t c = 0; c < dr; ++c) differ += gpe[size_t(r * dr + c)] != dk[size_t(r * Dqk + dn + c)];
  }
  std::printf("bits   %-48s %lld values differ\n", (tag + " bwd d_kv, d_k_pe = attention_backward's").c_str(),
              (long long)differ);
  CHECK(differ == 0);
  // d_q alone, then d_kv with d_k_pe alone (the training backward's two streams where it splits the call): the
  // joint call's bits. Where the joint call's dQ reads the dS its dK/dV kernel stored (attention_plan.h), d_q alone
  // recomputes dS from S = Q K^T: other f32 sums, within a bf16 rounding or so.
  DevTensor dq3(dt, qs), dkv3(dt, kvs), dpe3(dt, dps);
  mla_attention_backward(cuda_ctx(), dq3, Tensor{}, Tensor{}, dout.dev, o_in.dev, l_in.dev, q.dev, kv.dev, pe.dev,
                         scale);
  mla_attention_backward(cuda_ctx(), Tensor{}, dkv3, dpe3, dout.dev, o_in.dev, l_in.dev, q.dev, kv.dev, pe.dev,
                         scale);
  device_sync();
  if (bf && mla_attention_backward_one_call(cuda_ctx()))
    expect_close_values(tag + " bwd dq alone", dq3.values(), dq.dev.values(), 1e-2,
                        "dS recomputed (d_q alone) vs stored by the dK/dV kernel: a bf16 rounding of dS");
  else
    expect_same_bits(tag + " bwd dq alone", dq.dev, dq3);
  expect_same_bits(tag + " bwd d_kv alone", dkv.dev, dkv3);
  expect_same_bits(tag + " bwd d_k_pe alone", dpe.dev, dpe3);
}

// The bench model's MLA shape (dn 64, dr 32, Dv 64: the in-place kernels with sm_90a) at tile edges, and shapes
// that materialise the keys (DeepSeek-V3's 128 / 64 / 128; f32).
TEST_CASE("mla_attention parity: keys and values read in place", "[attention][mla]") {
  uint64_t seed = 1900;
  mla_attention_case(2, 129, 3, 64, 32, 64, DType::bf16, seed += 10);
  mla_attention_case(1, 17, 2, 64, 32, 64, DType::bf16, seed += 10);
  mla_attention_case(2, 256, 2, 64, 32, 64, DType::bf16, seed += 10);
  mla_attention_case(1, 70, 2, 128, 64, 128, DType::bf16, seed += 10);
  mla_attention_case(1, 33, 2, 64, 32, 64, DType::f32, seed += 10);
}

TEST_CASE("attention parity: unaligned views take the generic path", "[attention]") {
  // A q view that starts 2 bytes off a 16-byte boundary (a column slice would do that): the tensor-core path needs
  // 16-byte rows, the dispatcher falls back to the SIMT kernel.
  const DType dt = DType::bf16;
  const AttnCase s{2, 40, 2, 96, 64, 0};
  const std::vector<int64_t> qs{s.B, s.T, s.H, s.Dqk}, vs{s.B, s.T, s.H, s.Dv}, ls{s.B, s.H, s.T};
  const double scale = 1.0 / std::sqrt(96.0);
  Twin q = twin(dt, randu(qs, 7), DType::f64, 2), k = twin(dt, randu(qs, 8)), v = twin(dt, randu(vs, 9));
  Twin out = twin_out(dt, vs), lse = twin_out(DType::f32, ls);
  run_both_mt([&](const Context& c, Pick p) { attention_forward(c, p(out), p(lse), p(q), p(k), p(v), scale); });
  expect_close("attention bf16 unaligned q fwd out", out, kAttnBf16Fwd, "bf16 output rounding (SIMT path)");
  expect_close("attention bf16 unaligned q fwd lse", lse, kAttnBf16Lse, kWhyLse);
}

TEST_CASE("attention parity: DeepSeek-V3 shapes", "[attention][big]") {
  for (DType dt : {DType::f32, DType::bf16}) {
    attention_case({1, 256, 128, 192, 128, kV3Scale}, dt, 900);  // H = 128, Dqk 192, Dv 128
    attention_case({2, 513, 16, 192, 128, kV3Scale}, dt, 910);
    attention_case({1, 1024, 4, 96, 64, 0}, dt, 920);
  }
}

TEST_CASE("kv_cache_write parity", "[mla_decode]") {
  for (DType dt : {DType::f32, DType::bf16}) {
    for (auto [Rkv, dr, S] : {std::tuple<int64_t, int64_t, int64_t>{512, 64, 64}, {16, 8, 4}, {64, 16, 16}}) {
      const int64_t P = 5, C = Rkv + dr, n = 9;
      std::vector<int32_t> rows(size_t(P * S));
      std::iota(rows.begin(), rows.end(), 0);
      std::mt19937_64 rng(uint64_t(Rkv + S));
      std::shuffle(rows.begin(), rows.end(), rng);
      rows.resize(size_t(n));
      Twin pool = twin(dt, randu({P, S, C}, 31)), slots = twin_ints({n}, rows);
      Twin c = twin(dt, randu({n, Rkv}, 32)), kpe = twin(dt, randu({n, dr}, 33));
      run_both([&](const Context& ctx, Pick p) { kv_cache_write(ctx, p(pool), p(slots), p(c), p(kpe)); });
      expect_close(std::string("kv_cache_write ") + name(dt) + " C" + std::to_string(C), pool, 0.0, "a copy");
    }
  }
}

TEST_CASE("mla_latent_forward parity (q latent norm, kv latent norm + RoPE into the cache)", "[mla_decode]") {
  for (DType dt : {DType::f32, DType::bf16}) {
    // (Q, Rkv, dr): the bench model, DeepSeek-V3, and no q compression (Q = 0)
    for (auto [Q, Rkv, dr] : {std::tuple<int64_t, int64_t, int64_t>{384, 256, 32}, {1536, 512, 64}, {0, 16, 8}}) {
      const int64_t P = 4, S = 16, C = Rkv + dr, n = 7;
      std::vector<int32_t> rows(size_t(P * S));
      std::iota(rows.begin(), rows.end(), 0);
      std::mt19937_64 rng(uint64_t(Q + Rkv));
      std::shuffle(rows.begin(), rows.end(), rng);
      rows.resize(size_t(n));
      Values inv{{dr / 2}, {}};
      for (int64_t i = 0; i < dr / 2; ++i) inv.v.push_back(std::pow(10000.0, -2.0 * double(i) / double(dr)));
      Twin pool = twin(dt, randu({P, S, C}, 41)), slots = twin_ints({n}, rows), freq = twin(DType::f32, inv);
      Twin a = twin(dt, randn({n, Q + C}, 42, 2.0)), pos = twin_ints({n}, rand_ints(n, 43, 0, 4000));
      Twin kvn = twin(dt, randu({Rkv}, 44, 0.5, 1.5));
      Twin qn = Q ? twin(dt, randu({Q}, 45, 0.5, 1.5)) : Twin{};
      Twin ql = Q ? twin_out(dt, {n, Q}) : Twin{};
      run_both([&](const Context& ctx, Pick p) {
        mla_latent_forward(ctx, Q ? p(ql) : Tensor{}, p(pool), p(slots), p(a), Q ? p(qn) : Tensor{}, p(kvn), 1e-6,
                           p(pos), p(freq), 1.0);
      });
      const std::string tag = std::string(name(dt)) + " Q" + std::to_string(Q) + " C" + std::to_string(C);
      const double tol = dt == DType::bf16 ? 5e-3 : 2e-6;
      const char* why = dt == DType::bf16 ? "one bf16 rounding of f32 norm / rotation" : "f32 sum of squares, rotation in f32";
      expect_close("mla_latent_forward pool " + tag, pool, tol, why);
      if (Q) expect_close("mla_latent_forward q_latent " + tag, ql, tol, why);
    }
  }
}

// Declared before the other mla_decode cases (Catch runs them in order): the first f32 launch needs more than 48 KB
// of shared memory but less than the DeepSeek-V3 shape after it. The opt-in used to be set to the first size only,
// so the second launch failed with "invalid argument".
TEST_CASE("mla_decode: the shared-memory opt-in covers a larger shape after a smaller one", "[mla_decode]") {
  decode_case({1, 16, 256, 32, 64, 6, {300}, 0.125}, DType::f32, 950);  // the bench model's shape
  decode_case({2, 16, 512, 64, 64, 4, {200, 17}, kV3Scale}, DType::f32, 960);
}

TEST_CASE("mla_decode parity: paged latent cache, varying kv_len", "[mla_decode]") {
  const std::vector<DecodeCase> cases = {
      // DeepSeek-V3: C = 512 + 64, R = 512, pages of 64; lengths on and around page edges.
      {4, 128, 512, 64, 64, 16, {1, 63, 64, 1000}, kV3Scale},
      {3, 16, 512, 64, 64, 40, {2500, 7, 129}, kV3Scale},          // 16 heads (TP 8), long rows: many splits
      {2, 128, 512, 64, 64, 2, {65, 128}, kV3Scale, false},         // no lse
      {3, 16, 64, 16, 16, 8, {1, 17, 100}, 0.2},                    // the small preset (C 80, R 64)
      {2, 40, 128, 32, 32, 4, {97, 128}, 0.1},                      // 40 heads: partial head tiles
      {2, 5, 16, 8, 4, 3, {3, 9}, 0.3},                             // tiny preset: SIMT path for bf16 too
      {3, 20, 48, 16, 8, 6, {48, 1, 33}, 0.25},                     // R = 48: SIMT path for bf16 too
  };
  uint64_t seed = 300;
  for (const DecodeCase& s : cases)
    for (DType dt : {DType::f32, DType::bf16}) decode_case(s, dt, seed += 10);
}

TEST_CASE("mla_decode parity: DeepSeek-V3 batch 64, 1k-token rows", "[mla_decode][big]") {
  DecodeCase s{64, 128, 512, 64, 64, 16, {}, kV3Scale};
  std::mt19937_64 rng(77);
  for (int i = 0; i < 64; ++i) s.lens.push_back(int32_t(1 + rng() % 1024));
  for (DType dt : {DType::f32, DType::bf16}) decode_case(s, dt, 700);
}

// One small case per kernel (SIMT and tensor-core, both files) for compute-sanitizer --tool racecheck, which is
// too slow for the whole suite.
TEST_CASE("attention and mla_decode: one case per kernel", "[.race][race]") {
  for (DType dt : {DType::f32, DType::bf16}) {
    attention_case({2, 70, 1, 96, 64, 0}, dt, 1000);
    attention_case({1, 40, 2, 20, 12, 0}, dt, 1010);
    decode_case({2, 20, 64, 16, 16, 8, {100, 7}, 0.2}, dt, 1020);
    decode_case({2, 128, 512, 64, 64, 12, {700, 64}, kV3Scale}, dt, 1030);
  }
}

TEST_CASE("attention and mla_decode replay from a captured CUDA graph", "[graph]") {
  cudaStream_t st = nullptr;
  cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
  Context c = cuda_ctx();
  c.cuda_stream = st;
  const DType dt = DType::bf16;
  // attention forward + backward
  const int64_t B = 2, T = 77, H = 4, Dqk = 192, Dv = 128;
  DevTensor q = dev(dt, randu({B, T, H, Dqk}, 1)), k = dev(dt, randu({B, T, H, Dqk}, 2)),
            v = dev(dt, randu({B, T, H, Dv}, 3)), dout = dev(dt, randu({B, T, H, Dv}, 4));
  DevTensor o1(dt, {B, T, H, Dv}), o2(dt, {B, T, H, Dv}), l1(DType::f32, {B, H, T}), l2(DType::f32, {B, H, T});
  DevTensor dq1(dt, {B, T, H, Dqk}), dq2(dt, {B, T, H, Dqk}), dk1(dt, {B, T, H, Dqk}), dk2(dt, {B, T, H, Dqk}),
      dv1(dt, {B, T, H, Dv}), dv2(dt, {B, T, H, Dv});
  // decode (splits need the scratch: the eager call sizes it)
  const int64_t n = 2, Hd = 128, C = 576, R = 512, S = 64, mb = 20, P = n * mb;
  std::vector<int32_t> tab(size_t(n * mb));
  std::iota(tab.begin(), tab.end(), 0);
  DevTensor ql = dev(dt, randu({n, Hd, C}, 5)), pool = dev(dt, randu({P, S, C}, 6));
  DevTensor table = dev_ints({n, mb}, tab), lens = dev_ints({n}, {1200, 77});
  DevTensor do1(dt, {n, Hd, R}), do2(dt, {n, Hd, R}), dl1(DType::f32, {n, Hd}), dl2(DType::f32, {n, Hd});

  auto step = [&](DevTensor& o, DevTensor& l, DevTensor& dq, DevTensor& dk, DevTensor& dv, DevTensor& dco,
                  DevTensor& dcl) {
    attention_forward(c, o, l, q, k, v, kV3Scale);
    attention_backward(c, dq, dk, dv, dout, o, l, q, k, v, kV3Scale);
    mla_decode_attention(c, dco, dcl, ql, pool, table, lens, kV3Scale);
  };
  step(o1, l1, dq1, dk1, dv1, do1, dl1);
  cuda_ok(cudaStreamSynchronize(st), "eager step");
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  cuda_ok(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
  step(o2, l2, dq2, dk2, dv2, do2, dl2);
  cuda_ok(cudaStreamEndCapture(st, &graph), "cudaStreamEndCapture (an op broke the capture)");
  cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");
  cuda_ok(cudaGraphLaunch(exec, st), "cudaGraphLaunch");
  cuda_ok(cudaStreamSynchronize(st), "graph replay");
  for (auto [what, a, b] : {std::tuple<const char*, DevTensor*, DevTensor*>{"graph attention out", &o1, &o2},
                            {"graph attention lse", &l1, &l2},
                            {"graph attention dq", &dq1, &dq2},
                            {"graph attention dk", &dk1, &dk2},
                            {"graph attention dv", &dv1, &dv2},
                            {"graph mla_decode out", &do1, &do2},
                            {"graph mla_decode lse", &dl1, &dl2}})
    expect_close_values(what, b->values(), a->values(), 0.0, "replay = eager (deterministic kernels)");
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(st);
}

// The bench model's training shape (B=16, T=1024, H=16, Dqk=96, Dv=64, bf16): median of 9 event-timed calls after
// warm-up. FLOPs as the training-step accounting counts them: forward 2 B H (T^2 / 2) (Dqk + Dv), backward 2.5x.
TEST_CASE("attention timings: bench model training shape", "[.bench][bench]") {
  const Context c = cuda_ctx();
  const DType dt = DType::bf16;
  const int64_t B = 16, T = 1024, H = 16, Dqk = 96, Dv = 64;
  DevTensor q = dev(dt, randu({B, T, H, Dqk}, 1)), k = dev(dt, randu({B, T, H, Dqk}, 2)),
            v = dev(dt, randu({B, T, H, Dv}, 3)), dout = dev(dt, randu({B, T, H, Dv}, 4));
  DevTensor o(dt, {B, T, H, Dv}), l(DType::f32, {B, H, T}), dq(dt, {B, T, H, Dqk}), dk(dt, {B, T, H, Dqk}),
      dv(dt, {B, T, H, Dv});
  const double sc = 1.0 / std::sqrt(double(Dqk));
  const double fwd = median_ms([&] { attention_forward(c, o, l, q, k, v, sc); });
  const double bwd = median_ms([&] { attention_backward(c, dq, dk, dv, dout, o, l, q, k, v, sc); });
  const double f_fl = 2.0 * double(B) * H * (double(T) * T / 2) * double(Dqk + Dv), b_fl = 2.5 * f_fl;
  std::printf("bench attention train-shape bf16 B=%lld T=%lld H=%lld Dqk=%lld Dv=%lld  fwd %8.3f ms %7.1f TFLOP/s  "
              "bwd %8.3f ms %7.1f TFLOP/s (median of 9)\n",
              (long long)B, (long long)T, (long long)H, (long long)Dqk, (long long)Dv, fwd, f_fl / fwd * 1e-9, bwd,
              b_fl / bwd * 1e-9);
  // Each forward variant (0 = attn_fwd_mma_wide; 1..6 = the wgmma kernels, sm_90a builds only; 6 the default there).
  for (int var = 0; var < kFwdVariants; ++var) {
    const FwdVariant force(var);
    if (!force.on()) continue;
    const double f = median_ms([&] { attention_forward(c, o, l, q, k, v, sc); });
    std::printf("bench attention train-shape fwd variant %d: %8.3f ms %7.1f TFLOP/s (median of 9)\n", var, f,
                f_fl / f * 1e-9);
  }
  // Each backward variant: dK, dV without dQ (the D preprocess + the dK/dV kernel), dQ alone (D + the dQ kernel),
  // and all three. Variant v forces dK/dV kernel v and dQ kernel v (0, the default, past the dQ list).
  for (int var = 0; var < std::max(kDkdvVariants, kDqVariants); ++var) {
    const BwdVariant force(var < kDkdvVariants ? var : 0, var < kDqVariants ? var : 0);
    if (!force.on()) continue;  // the wgmma variants outside sm_90a builds
    const double kv = median_ms([&] { attention_backward(c, Tensor{}, dk, dv, dout, o, l, q, k, v, sc); });
    const double dqt = median_ms([&] { attention_backward(c, dq, Tensor{}, Tensor{}, dout, o, l, q, k, v, sc); });
    const double all = median_ms([&] { attention_backward(c, dq, dk, dv, dout, o, l, q, k, v, sc); });
    std::printf("bench attention train-shape bwd variant %d (dK/dV kernel %d, dQ kernel %d): dK+dV %8.3f ms  "
                "dQ %8.3f ms  all %8.3f ms\n",
                var, force.kv, force.q, kv, dqt, all);
  }
  // dQ from the stored dS (variant 7; 8 with TMA) after the wgmma dK/dV kernels (6: query steps of 32; 8, 9: TMA)
  for (int kv_var : {kDkdvWgmma, kDkdvTma, kDkdvTma + 1})
    for (int q_var : {kDqDs, kDqDsTma}) {
      const BwdVariant force(kv_var, q_var);
      if (!force.on()) continue;
      const double all = median_ms([&] { attention_backward(c, dq, dk, dv, dout, o, l, q, k, v, sc); });
      std::printf("bench attention train-shape bwd dK/dV kernel %d + dQ from dS (%d): all %8.3f ms\n", force.kv,
                  force.q, all);
    }
  std::fflush(stdout);
}

TEST_CASE("attention and mla_decode timings", "[.bench][bench]") {
  const Context c = cuda_ctx();
  for (DType dt : {DType::bf16, DType::f32}) {
    for (auto [B, T, H, Dqk, Dv] : {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t>{4, 1024, 16, 96, 64},
                                    {1, 4096, 128, 192, 128}}) {
      if (dt == DType::f32 && H == 128) continue;  // the SIMT path on the big shape: minutes, not informative
      DevTensor q = dev(dt, randu({B, T, H, Dqk}, 1)), k = dev(dt, randu({B, T, H, Dqk}, 2)),
                v = dev(dt, randu({B, T, H, Dv}, 3)), dout = dev(dt, randu({B, T, H, Dv}, 4));
      DevTensor o(dt, {B, T, H, Dv}), l(DType::f32, {B, H, T}), dq(dt, {B, T, H, Dqk}), dk(dt, {B, T, H, Dqk}),
          dv(dt, {B, T, H, Dv});
      const double sc = 1.0 / std::sqrt(double(Dqk));
      const int iters = dt == DType::f32 ? 3 : 10;
      const double fwd = time_ms([&] { attention_forward(c, o, l, q, k, v, sc); }, iters);
      const double bwd =
          time_ms([&] { attention_backward(c, dq, dk, dv, dout, o, l, q, k, v, sc); }, iters);
      // Naive causal FLOPs: T(T+1)/2 (query, key) pairs per (batch, head); forward 2(Dqk + Dv) per pair,
      // backward 2(2 Dqk + 2 Dv + Dqk) (S recompute, dP, dV, dK, dQ).
      const double pairs = double(B) * H * T * (T + 1) / 2;
      const double f_fl = pairs * 2 * (Dqk + Dv), b_fl = pairs * 2 * (3 * Dqk + 2 * Dv);
      std::printf("bench attention %-4s B=%lld T=%lld H=%lld Dqk=%lld Dv=%lld  fwd %8.3f ms %7.1f TFLOP/s  "
                  "bwd %8.3f ms %7.1f TFLOP/s\n",
                  name(dt), (long long)B, (long long)T, (long long)H, (long long)Dqk, (long long)Dv, fwd,
                  f_fl / fwd * 1e-9, bwd, b_fl / bwd * 1e-9);
      std::fflush(stdout);
    }
  }
  for (DType dt : {DType::bf16, DType::f32}) {
    for (int64_t n : {1, 64}) {
      const int64_t H = 128, C = 576, R = 512, S = 64, len = 1024, mb = len / S, P = n * mb;
      std::vector<int32_t> tab(size_t(n * mb));
      std::iota(tab.begin(), tab.end(), 0);
      std::mt19937_64 rng(3);
      std::shuffle(tab.begin(), tab.end(), rng);
      DevTensor ql = dev(dt, randu({n, H, C}, 5)), pool = dev(dt, randu({P, S, C}, 6));
      DevTensor table = dev_ints({n, mb}, tab), lens = dev_ints({n}, std::vector<int32_t>(size_t(n), int32_t(len)));
      DevTensor out(dt, {n, H, R}), lse(DType::f32, {n, H});
      const double ms =
          time_ms([&] { mla_decode_attention(c, out, lse, ql, pool, table, lens, kV3Scale); }, 50);
      // The same call captured once and replayed (no host overhead: how the engine runs decode).
      cudaStream_t st = nullptr;
      cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
      Context cs = c;
      cs.cuda_stream = st;
      mla_decode_attention(cs, out, lse, ql, pool, table, lens, kV3Scale);  // sizes the split scratch
      cuda_ok(cudaStreamSynchronize(st), "eager decode");
      cudaGraph_t graph = nullptr;
      cudaGraphExec_t exec = nullptr;
      cuda_ok(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal), "capture");
      mla_decode_attention(cs, out, lse, ql, pool, table, lens, kV3Scale);
      cuda_ok(cudaStreamEndCapture(st, &graph), "end capture");
      cuda_ok(cudaGraphInstantiate(&exec, graph, 0), "instantiate");
      const int reps = 200;
      for (int r = 0; r < 5; ++r) cudaGraphLaunch(exec, st);
      const double g = events_ms(
                           [&] {
                             for (int r = 0; r < reps; ++r) cuda_ok(cudaGraphLaunch(exec, st), "graph replay");
                           },
                           st) /
                       reps;
      cudaGraphExecDestroy(exec);
      cudaGraphDestroy(graph);
      cudaStreamDestroy(st);
      const double flops = double(n) * H * len * 2 * (C + R);
      const double bytes = double(dtype_size(dt)) * (double(n) * len * C + double(n) * H * (C + R));
      std::printf("bench mla_decode %-4s n=%lld H=%lld C=%lld R=%lld len=%lld  eager %8.1f us  graph %8.1f us  "
                  "%7.1f TFLOP/s  %7.1f GB/s (graph)\n",
                  name(dt), (long long)n, (long long)H, (long long)C, (long long)R, (long long)len, ms * 1e3,
                  g * 1e3, flops / g * 1e-9, bytes / g * 1e-6);
      std::fflush(stdout);
    }
  }
}
