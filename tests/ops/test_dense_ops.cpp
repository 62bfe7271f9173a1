// CPU-vs-CUDA parity of the dense ops (kernels/elementwise.cu, embedding.cu, matmul.cu, norm_rope.cu, loss.cu,
// adamw.cu). Every comparison prints one "parity ..." line with the measured error, its tolerance and the reason.
// The reference is the CPU op in f64 on the same (device-rounded) inputs. The DeepSeek-V3-sized shapes (hidden 7168,
// vocab 129280, 128 heads, expert width 2048) run unless DS_PARITY_SMALL=1 (set under compute-sanitizer).
#include <cmath>
#include <limits>

#include "tests/ops/parity.h"

using namespace ds;
using namespace ds::parity;

namespace {

const DType kF32 = DType::f32, kBF16 = DType::bf16;

std::string tag(const char* op, DType dt, const std::string& extra = "") {
  return std::string(op) + " " + dtype_name(dt) + (extra.empty() ? "" : " " + extra);
}
std::string shape_tag(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  for (int64_t d : dims) {
    if (s.size() > 1) s += ',';
    s += std::to_string(d);
  }
  s += ']';
  return s;
}

std::string dims_tag(const char* fmt, int64_t a, int64_t b, int64_t c) {
  char buf[96];
  std::snprintf(buf, sizeof buf, fmt, (long long)a, (long long)b, (long long)c);
  return buf;
}

// Reasons for the tolerances, stated once.
const char* kExactReason = "elementwise in f32, same rounding as the CPU";
const char* kBf16Reason = "bf16 output rounding: half an ulp <= 2^-8 of the value";
const char* kDotReason = "fp32 accumulation (CPU reference f64); bf16: + output rounding";

// One rounding of an f32 result: bf16 keeps 8 significant bits, so |error| <= 2^-8 |value| (3.9e-3).
double tol_elem(DType dt) { return dt == kBF16 ? 5e-3 : 1e-6; }

}  // namespace

TEST_CASE("parity harness: guards catch out-of-bounds writes, uploads round like the reference", "[harness]") {
  for (DType dt : {kF32, kBF16}) {
    const Values x = randu({3, 5}, 7);
    Twin t = twin(dt, x);
    expect_close(tag("harness round trip", dt), t, 0.0, "upload rounds exactly like round_to");
    CHECK(t.dev.guard_damage() == 0);
    unsigned char b = 0;  // one byte past the end, then one before the start: the guards must notice
    device_copy(t.dev.t.device, static_cast<char*>(t.dev.t.data) + t.dev.t.nbytes(), Device{}, &b, 1);
    CHECK(t.dev.guard_damage() == 1);
    device_copy(t.dev.t.device, static_cast<char*>(t.dev.t.data) - 1, Device{}, &b, 1);
    CHECK(t.dev.guard_damage() == 2);
  }
  DevTensor p = dev_poisoned(kF32, {4});
  for (double v : p.values()) CHECK(std::isnan(v));
}

// ---- elementwise ------------------------------------------------------------------------------------------

TEST_CASE("parity: fill, scale, axpy, add", "[elementwise]") {
  for (const auto& shape : std::vector<std::vector<int64_t>>{{7}, {33, 31}, {1000, 1001}}) {
    const std::string st = std::to_string(numel_of(shape));
    for (DType dt : {kF32, kBF16}) {
      DevTensor t = dev_poisoned(dt, shape);
      fill(cuda_ctx(), t, -0.3);
      expect_guards(tag("fill", dt, st), t);
      expect_close_values(tag("fill", dt, st), t.values(), std::vector<double>(size_t(numel_of(shape)), round_to(dt, -0.3)),
                          0.0, "the value rounded once to the dtype, like the CPU");

      Twin s = twin(dt, randu(shape, 11));
      run_both([&](const Context& c, Pick p) { scale(c, p(s), 0.37); });
      expect_close(tag("scale", dt, st), s, tol_elem(dt), dt == kBF16 ? kBf16Reason : kExactReason);

      Twin y = twin(dt, randu(shape, 12)), x = twin(dt, randu(shape, 13));
      run_both([&](const Context& c, Pick p) { axpy(c, p(y), -1.7, p(x)); });
      expect_close(tag("axpy", dt, st), y, tol_elem(dt), dt == kBF16 ? kBf16Reason : kExactReason);

      Twin a = twin(dt, randu(shape, 14)), b = twin(dt, randu(shape, 15)), o = twin_out(dt, shape);
      run_both([&](const Context& c, Pick p) { add(c, p(o), p(a), p(b)); });
      expect_close(tag("add", dt, st), o, tol_elem(dt), dt == kBF16 ? kBf16Reason : kExactReason);
      run_both([&](const Context& c, Pick p) { add(c, p(a), p(a), p(b)); });  // out aliases a
      expect_close(tag("add aliased", dt, st), a, tol_elem(dt), dt == kBF16 ? kBf16Reason : kExactReason);
      // a pointer off the 16-byte word: the element-by-element kernels (aligned ones take words and a tail)
      const size_t off = dt == kBF16 ? 2 : 4;
      Twin ym = twin(dt, randu(shape, 18), DType::f64, off), xm = twin(dt, randu(shape, 19));
      run_both([&](const Context& c, Pick p) { axpy(c, p(ym), 0.25, p(xm)); });
      expect_close(tag("axpy misaligned", dt, st), ym, tol_elem(dt), dt == kBF16 ? kBf16Reason : kExactReason);
      Twin am = twin(dt, randu(shape, 20), DType::f64, off), om = twin_out(dt, shape);
      run_both([&](const Context& c, Pick p) { add(c, p(om), p(am), p(b)); });
      expect_close(tag("add misaligned", dt, st), om, tol_elem(dt), dt == kBF16 ? kBf16Reason : kExactReason);
    }
    // Mixed precision: an f32 accumulator += a bf16 tensor (CUDA-only rule; the reference sees the rounded x).
    Twin y = twin(kF32, randu(shape, 16)), x = twin(kBF16, randu(shape, 17));
    run_both([&](const Context& c, Pick p) { axpy(c, p(y), 0.5, p(x)); });
    expect_close("axpy f32 += bf16 " + st, y, 1e-6, kExactReason);
  }
  for (DType dt : {DType::i32, DType::i64, DType::f64}) {  // fill serves every dtype on the device
    DevTensor d = dev_poisoned(dt, {77});
    fill(cuda_ctx(), d, 5.0);
    device_sync();
    const std::vector<double> v = dt == DType::f64 ? d.values() : [&] {
      std::vector<double> r;
      for (int64_t i : d.ints()) r.push_back(double(i));
      return r;
    }();
    expect_close_values(std::string("fill ") + dtype_name(dt), v, std::vector<double>(77, 5.0), 0.0, "exact");
    expect_guards(std::string("fill ") + dtype_name(dt), d);
  }
}

TEST_CASE("parity: copy between dtypes and devices", "[elementwise][copy]") {
  const Values x = randn({37, 29}, 21, 3.0);
  const Context g = cuda_ctx(), h = cpu_ctx();
  for (DType sdt : {DType::f32, DType::bf16, DType::f64}) {
    for (DType ddt : {DType::f32, DType::bf16, DType::f64}) {
      const std::vector<double> want = rounded(ddt, rounded(sdt, x)).v;
      const std::string what = std::string(dtype_name(sdt)) + "->" + dtype_name(ddt);
      // host -> device
      HostTensor hs = host(sdt, x);
      DevTensor d1 = dev_poisoned(ddt, x.shape);
      copy(h, d1, hs);
      expect_guards("copy h2d " + what, d1);
      expect_close_values("copy h2d " + what, d1.values(), want, 0.0, "conversion rounds like the CPU");
      // device -> device
      DevTensor ds_ = dev(sdt, x), d2 = dev_poisoned(ddt, x.shape);
      copy(g, d2, ds_);
      device_sync();
      expect_guards("copy d2d " + what, d2);
      expect_close_values("copy d2d " + what, d2.values(), want, 0.0, "conversion rounds like the CPU");
      // device -> host
      HostTensor hd = host_zeros(ddt, x.shape);
      copy(g, hd, ds_);
      expect_close_values("copy d2h " + what, hd.values(), want, 0.0, "conversion rounds like the CPU");
    }
  }
}

// The gradient norm's one pass (kernels/elementwise.cu, ssq_*): tensors of every float dtype, sizes around the
// chunk (32 KiB: 8192 f32, 16384 bf16, 4096 f64 elements), empty ones (also first and last), misaligned ones (the
// element-by-element path), many small ones (the chunk -> tensor search), a large one.
TEST_CASE("parity: sum_squares_each over many tensors", "[elementwise][reduce]") {
  const DType types[] = {DType::f32, DType::bf16, DType::f64};
  std::vector<int64_t> sizes = {0, 1, 7, 8191, 8192, 8193, 16384, 16385, 4095, 4096, 0, 0, 100003, 3 * 16384,
                                (int64_t(1) << 20) + 5};
  if (run_big()) sizes.push_back(int64_t(6) << 20);
  for (int i = 0; i < 300; ++i) sizes.push_back(1 + (i * 37) % 301);
  sizes.push_back(0);
  std::vector<DevTensor> devs;
  std::vector<HostTensor> hosts;
  std::vector<Tensor> dt_in, ht_in;
  devs.reserve(sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    const DType dt = types[i % 3];
    const int64_t n = sizes[i];
    const size_t mis = i % 4 == 1 ? dtype_size(dt) : 0;
    const Values x = randu({std::max<int64_t>(n, 1)}, 300 + i, -1, 2);
    devs.push_back(dev(dt, x, mis));
    hosts.push_back(host(DType::f64, rounded(dt, x)));
    dt_in.push_back(n ? devs.back().t : Tensor(devs.back().t.data, dt, {0}, devs.back().t.device));
    ht_in.push_back(n ? hosts.back().t : Tensor(hosts.back().t.data, DType::f64, {0}));
  }
  const std::vector<double> got = sum_squares_each(cuda_ctx(), dt_in), ref = sum_squares_each(cpu_ctx(), ht_in);
  REQUIRE(got.size() == sizes.size());
  expect_close_values("sum_squares_each " + std::to_string(sizes.size()) + " tensors", got, ref, 1e-12,
                      "double accumulation on both sides, different order");
  for (size_t i = 0; i < sizes.size(); ++i) {
    INFO("tensor " << i << " of " << sizes[i] << " elements: " << got[i] << " vs " << ref[i]);
    CHECK(std::abs(got[i] - ref[i]) <= 1e-12 * std::max(1.0, std::abs(ref[i])));
  }
  CHECK(got == sum_squares_each(cuda_ctx(), dt_in));  // deterministic: a second run gives the same bits
  const std::vector<double> one = sum_squares_each(cuda_ctx(), {dt_in[5]});  // a single tensor
  REQUIRE(one.size() == 1);
  CHECK(one[0] == got[5]);  // its sums do not depend on the other tensors
  CHECK(sum_squares_each(cuda_ctx(), {}).empty());
  // sum_squares_into (the optimizer's stage-by-stage sums, no host wait) at an offset of a device tensor: the bits
  DevTensor into = dev(DType::f64, Values{{int64_t(sizes.size()) + 3}, std::vector<double>(sizes.size() + 3, -7.0)});
  sum_squares_into(cuda_ctx(), into.t.slice0(2, 2 + int64_t(sizes.size())), dt_in);
  const std::vector<double> all = to_host_f64(into.t);
  CHECK(all[0] == -7.0);
  CHECK(all[1] == -7.0);
  CHECK(all.back() == -7.0);
  CHECK(std::vector<double>(all.begin() + 2, all.end() - 1) == got);
}

TEST_CASE("parity: copy_cols", "[elementwise]") {
  for (DType dt : {kF32, kBF16}) {
    Twin src = twin(dt, randu({33, 20}, 31));
    Twin dst = twin(dt, randu({33, 50}, 32));
    run_both([&](const Context& c, Pick p) { copy_cols(c, p(dst), 7, p(src), 3, 13); });
    expect_close(tag("copy_cols overwrite", dt), dst, 0.0, "a byte copy");
    run_both([&](const Context& c, Pick p) { copy_cols(c, p(dst), 30, p(src), 0, 20, Accum::add); });
    expect_close(tag("copy_cols add", dt), dst, tol_elem(dt), dt == kBF16 ? kBf16Reason : kExactReason);
  }
  // the CUDA copy picks its unit (16 down to 1 bytes) from the row starts, pitches and width: one case per unit,
  // the whole destination compared (neighbouring columns must stay as they were)
  struct Cols { int64_t rows, dcols, dcol, scols, scol, n; };
  for (const Cols& k : {Cols{129, 96, 64, 192, 64, 32}, Cols{40, 48, 4, 36, 8, 12}, Cols{17, 30, 2, 14, 6, 6},
                        Cols{9, 21, 5, 11, 3, 7}}) {
    Twin src = twin(kBF16, randu({k.rows, k.scols}, 35)), dst = twin(kBF16, randu({k.rows, k.dcols}, 36));
    run_both([&](const Context& c, Pick p) { copy_cols(c, p(dst), k.dcol, p(src), k.scol, k.n); });
    expect_close("copy_cols bf16 rows " + std::to_string(k.rows) + " cols " + std::to_string(k.n), dst, 0.0,
                 "a byte copy");
  }
  // copy_cols_repeat: the rope key into 16 heads of k_full (96-wide heads, 64-byte keys), and an odd layout
  struct Rep { int64_t rows, dcols, dcol, stride, copies, scols, scol, n; };
  for (const Rep& k : {Rep{130, 16 * 96, 64, 96, 16, 32, 0, 32}, Rep{7, 40, 3, 9, 4, 11, 2, 5}}) {
    Twin src = twin(kBF16, randu({k.rows, k.scols}, 37)), dst = twin(kBF16, randu({k.rows, k.dcols}, 38));
    run_both([&](const Context& c, Pick p) { copy_cols_repeat(c, p(dst), k.dcol, k.stride, k.copies, p(src), k.scol, k.n); });
    expect_close("copy_cols_repeat bf16 rows " + std::to_string(k.rows) + " x" + std::to_string(k.copies), dst, 0.0,
                 "a byte copy");
  }
  // sum_cols_repeat, its adjoint: the rope key's gradient summed over the heads at the MLA bench shape (4096 rows,
  // H 16, dqk 96 = dn 64 + dr 32: the 16-byte word kernel), and an odd layout (the element kernel). The reference
  // sums in f64. f32: copies f32 additions in order, each rounding by <= 2^-24 of a partial sum (tol_for's growth
  // with the number of terms); on the device it must also give the bits of the copy_cols loop it replaces. bf16:
  // the f32 sum rounded once to bf16, <= 2^-9 of the value (tol_elem); the loop's 16 roundings are printed beside.
  struct Sum { int64_t rows, scols, scol, stride, copies, dcols, dcol, n; };
  for (const Sum& k : {Sum{4096, 16 * 96, 64, 96, 16, 32, 0, 32}, Sum{7, 40, 3, 9, 4, 11, 2, 5}}) {
    for (DType dt : {kF32, kBF16}) {
      for (Accum acc : {Accum::overwrite, Accum::add}) {
        const std::string what = tag("sum_cols_repeat", dt, std::string(acc == Accum::add ? "add" : "overwrite") +
                                                                " rows " + std::to_string(k.rows) + " x" +
                                                                std::to_string(k.copies));
        const Values sv = randu({k.rows, k.scols}, 39), dv = randu({k.rows, k.dcols}, 40);
        Twin src = twin(dt, sv), dst = twin(dt, dv);
        run_both([&](const Context& c, Pick p) {
          sum_cols_repeat(c, p(dst), k.dcol, p(src), k.scol, k.stride, k.copies, k.n, acc);
        });
        const Err e = expect_close(what, dst, dt == kBF16 ? tol_elem(dt) : tol_for(dt, k.copies),
                                   dt == kBF16 ? "f32 sum rounded once to bf16: <= 2^-9 of the value"
                                               : "f32 additions in order, <= 2^-24 of a partial sum each");
        DevTensor loop = dev(dt, dv);  // the launches it replaces: copy_cols of block 0, then add each block
        for (int64_t j = 0; j < k.copies; ++j)
          copy_cols(cuda_ctx(), loop, k.dcol, src.dev, k.scol + j * k.stride, k.n, j == 0 ? acc : Accum::add);
        device_sync();
        if (dt == kF32) {
          expect_same_bits(what + " vs the copy_cols loop", loop, dst.dev);
        } else {
          const Err el = compare(loop.values(), dst.ref.values());
          std::printf("info   %-48s the copy_cols loop's norm_err %.3e (one rounding: %.3e)\n",
                      (what + " loop").c_str(), el.norm, e.norm);
        }
      }
    }
  }
  Twin isrc = twin_ints({5, 9}, rand_ints(45, 33, -1000, 1000)), idst = twin_ints({5, 4}, rand_ints(20, 34, 0, 9));
  run_both([&](const Context& c, Pick p) { copy_cols(c, p(idst), 1, p(isrc), 5, 3); });
  expect_equal_ints("copy_cols i32", idst);
}

TEST_CASE("parity: sum, sum_squares, all_finite", "[elementwise][reduce]") {
  for (int64_t n : {int64_t(1), int64_t(1000), int64_t(33 * 31), (int64_t(1) << 20) + 7}) {
    for (DType dt : {DType::f32, DType::bf16, DType::f64}) {
      const Values x = randu({n}, 41, -1, 2);
      HostTensor h = host(DType::f64, rounded(dt, x));
      DevTensor d = dev(dt, x);
      const double s_ref = sum(cpu_ctx(), h), q_ref = sum_squares(cpu_ctx(), h);
      const double s = sum(cuda_ctx(), d), q = sum_squares(cuda_ctx(), d);
      const char* why = "double accumulation on both sides, different order";
      expect_close_scalar(tag("sum", dt, std::to_string(n)), s, s_ref, 1e-12, why);
      expect_close_scalar(tag("sum_squares", dt, std::to_string(n)), q, q_ref, 1e-12, why);
      CHECK(all_finite(cuda_ctx(), d));
    }
  }
  for (DType dt : {kF32, kBF16}) {
    for (double bad : {std::numeric_limits<double>::infinity(), -std::numeric_limits<double>::infinity(),
                       std::numeric_limits<double>::quiet_NaN()}) {
      Values x = randu({4099}, 42);
      x.v[4097] = bad;
      DevTensor d = dev(dt, x);
      CHECK_FALSE(all_finite(cuda_ctx(), d));
      CHECK_FALSE(all_finite(cpu_ctx(), host(DType::f64, x)));
    }
  }
}

TEST_CASE("parity: swiglu forward and backward", "[elementwise][swiglu]") {
  struct Shape {
    int64_t n, f;
    bool big;
  };
  for (const Shape& sh : {Shape{7, 33, false}, Shape{33, 1000, false}, Shape{256, 2048, true}}) {
    if (sh.big && !run_big()) continue;
    for (DType dt : {kF32, kBF16}) {
      const std::string st = shape_tag({sh.n, sh.f});
      // n = 7 x 33: a word-aligned start and a tail; 33 x 1000 with `up` off the word: the element-by-element kernels
      Twin gate = twin(dt, randn({sh.n, sh.f}, 51, 2.0)),
           up = twin(dt, randn({sh.n, sh.f}, 52), DType::f64, sh.n == 33 ? (dt == kBF16 ? 2 : 4) : 0);
      Twin out = twin_out(dt, {sh.n, sh.f});
      run_both([&](const Context& c, Pick p) { swiglu_forward(c, p(out), p(gate), p(up)); });
      expect_close(tag("swiglu_forward", dt, st), out, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "f32 expf vs f64 exp");
      Twin dout = twin(dt, randn({sh.n, sh.f}, 53)), dg = twin_out(dt, {sh.n, sh.f}), du = twin_out(dt, {sh.n, sh.f});
      run_both([&](const Context& c, Pick p) { swiglu_backward(c, p(dg), p(du), p(dout), p(gate), p(up)); });
      expect_close(tag("swiglu_backward d_gate", dt, st), dg, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "f32 expf vs f64 exp");
      expect_close(tag("swiglu_backward d_up", dt, st), du, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "f32 expf vs f64 exp");
      Twin du2 = twin_out(dt, {sh.n, sh.f});  // d_gate not needed
      run_both([&](const Context& c, Pick p) { swiglu_backward(c, Tensor{}, p(du2), p(dout), p(gate), p(up)); });
      expect_close(tag("swiglu_backward d_up only", dt, st), du2, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "f32 expf vs f64 exp");
    }
  }
}

// ---- embedding --------------------------------------------------------------------------------------------

TEST_CASE("parity: embedding forward and backward", "[embedding]") {
  struct Shape {
    int64_t V, D, N;
    int32_t id_range;  // ids drawn from [0, id_range): small ranges repeat ids many times
    bool big;
  };
  for (const Shape& sh : {Shape{1000, 33, 77, 1000, false}, Shape{1000, 7, 500, 3, false},
                          Shape{50, 1000, 257, 50, false}, Shape{129280, 64, 4096, 129280, false},
                          Shape{2000, 7168, 1024, 300, true}}) {
    if (sh.big && !run_big()) continue;
    const std::string st = dims_tag("V%lld D%lld N%lld", sh.V, sh.D, sh.N);
    for (DType dt : {kF32, kBF16}) {
      Twin table = twin(dt, randn({sh.V, sh.D}, 61)), ids = twin_ints({sh.N}, rand_ints(sh.N, 62, 0, sh.id_range));
      Twin out = twin_out(dt, {sh.N, sh.D});
      run_both([&](const Context& c, Pick p) { embedding_forward(c, p(out), p(ids), p(table)); });
      expect_close(tag("embedding_forward", dt, st), out, 0.0, "a row copy");

      Twin dout = twin(dt, randn({sh.N, sh.D}, 63));
      Twin dtable = twin(dt, randn({sh.V, sh.D}, 64));  // accumulates
      run_both([&](const Context& c, Pick p) { embedding_backward(c, p(dtable), p(dout), p(ids)); });
      expect_close(tag("embedding_backward", dt, st), dtable, dt == kBF16 ? 8e-3 : 1e-5,
                   "rows summed in f32 in token order, then added (CPU adds one by one)");
      if (dt == kBF16) {  // f32 gradient table for bf16 activations
        Twin dtable32 = twin(kF32, randn({sh.V, sh.D}, 65));
        run_both([&](const Context& c, Pick p) { embedding_backward(c, p(dtable32), p(dout), p(ids)); });
        expect_close("embedding_backward f32 += bf16 " + st, dtable32, 1e-5, "f32 sums of exact bf16 values");
      }
    }
  }
}

// ---- matmul -----------------------------------------------------------------------------------------------

namespace {

struct MM {
  int64_t M, K, N;
  bool big;
};
const MM kMatmulShapes[] = {{7, 33, 5, false},     {33, 1000, 7, false},   {1, 7, 1, false},
                            {128, 512, 576, false}, {64, 7168, 1536, true}, {16, 2048, 7168, true},
                            {8, 7168, 4096, true},
                            // decode: M <= 4 bf16 rows take the GEMV kernel (matmul.cu)
                            {1, 1024, 672, false},  {4, 1024, 32000, false}, {3, 384, 3072, false},
                            {2, 4096, 24, false},   {4, 6144, 40, false},
                            // long rows: 2, 4 and 8 warps per GEMV column (ksplit), partial last blocks
                            {1, 2816, 1024, false}, {1, 4096, 1024, false}, {2, 8192, 17, false},
                            {4, 6016, 40, false}};

double tol_mm(DType out_dt, int64_t K) {
  return out_dt == kBF16 ? 8e-3 : 1e-6 * std::sqrt(double(K)) + 2e-6;
}

}  // namespace

TEST_CASE("parity: matmul forward", "[matmul]") {
  for (const MM& s : kMatmulShapes) {
    if (s.big && !run_big()) continue;
    const std::string st = dims_tag("M%lld K%lld N%lld", s.M, s.K, s.N);
    for (DType dt : {kF32, kBF16}) {
      Twin in = twin(dt, randu({s.M, s.K}, 71)), w = twin(dt, randu({s.N, s.K}, 72, -0.1, 0.1));
      Twin out = twin_out(dt, {s.M, s.N});
      run_both([&](const Context& c, Pick p) { matmul_forward(c, p(out), p(in), p(w)); });
      expect_close(tag("matmul_forward", dt, st), out, tol_mm(dt, s.K), kDotReason);
      Twin acc = twin(dt, randu({s.M, s.N}, 73));
      run_both([&](const Context& c, Pick p) { matmul_forward(c, p(acc), p(in), p(w), Accum::add); });
      expect_close(tag("matmul_forward add", dt, st), acc, tol_mm(dt, s.K), kDotReason);
      if (dt == kBF16) {  // bf16 inputs, f32 output (logits, router)
        Twin out32 = twin_out(kF32, {s.M, s.N});
        run_both([&](const Context& c, Pick p) { matmul_forward(c, p(out32), p(in), p(w)); });
        expect_close("matmul_forward bf16->f32 " + st, out32, tol_mm(kF32, s.K), "fp32 accumulation of exact bf16 products");
        // settled weights (a few rows: the GEMV loads them before its wait): the same bits
        Twin out_s = twin_out(dt, {s.M, s.N});
        matmul_forward(cuda_ctx(), out_s.dev.t, in.dev.t, w.dev.t, Accum::overwrite, Inputs::settled);
        expect_same_bits(tag("matmul_forward settled", dt, st), out.dev, out_s.dev);
      }
    }
  }
  // Views that are not 16-byte aligned (slices at odd offsets): cuBLASLt must pick an algorithm that copes.
  for (DType dt : {kF32, kBF16}) {
    const size_t es = dtype_size(dt);
    Twin in = twin(dt, randu({9, 31}, 74), DType::f64, es), w = twin(dt, randu({13, 31}, 75), DType::f64, 3 * es);
    Twin out = twin_out(dt, {9, 13});
    run_both([&](const Context& c, Pick p) { matmul_forward(c, p(out), p(in), p(w)); });
    expect_close(tag("matmul_forward misaligned", dt), out, tol_mm(dt, 31), kDotReason);
  }
}

TEST_CASE("parity: matmul backward", "[matmul]") {
  for (const MM& s : kMatmulShapes) {
    if (s.big && !run_big()) continue;
    const std::string st = dims_tag("M%lld K%lld N%lld", s.M, s.K, s.N);
    for (DType dt : {kF32, kBF16}) {
      Twin in = twin(dt, randu({s.M, s.K}, 81)), w = twin(dt, randu({s.N, s.K}, 82, -0.1, 0.1));
      Twin dout = twin(dt, randu({s.M, s.N}, 83));
      Twin din = twin_out(dt, {s.M, s.K}), dw = twin(dt, randu({s.N, s.K}, 84, -0.01, 0.01));
      run_both([&](const Context& c, Pick p) { matmul_backward(c, p(din), p(dw), p(dout), p(in), p(w)); });
      expect_close(tag("matmul_backward d_in", dt, st), din, tol_mm(dt, s.N), kDotReason);
      expect_close(tag("matmul_backward d_weight +=", dt, st), dw, tol_mm(dt, s.M), kDotReason);
      Twin din_acc = twin(dt, randu({s.M, s.K}, 85));
      run_both([&](const Context& c, Pick p) {
        matmul_backward(c, p(din_acc), Tensor{}, p(dout), Tensor{}, p(w), Accum::add);
      });
      expect_close(tag("matmul_backward d_in add", dt, st), din_acc, tol_mm(dt, s.N), kDotReason);
      if (dt == kBF16) {  // f32 gradients of bf16 activations/weights
        Twin dw32 = twin(kF32, randu({s.N, s.K}, 86, -0.01, 0.01)), din32 = twin_out(kF32, {s.M, s.K});
        run_both([&](const Context& c, Pick p) { matmul_backward(c, p(din32), p(dw32), p(dout), p(in), p(w)); });
        expect_close("matmul_backward bf16 d_in->f32 " + st, din32, tol_mm(kF32, s.N), kDotReason);
        expect_close("matmul_backward bf16 d_weight->f32 " + st, dw32, tol_mm(kF32, s.M), kDotReason);
      }
    }
  }
}

// ---- RMSNorm and RoPE -------------------------------------------------------------------------------------

TEST_CASE("parity: rmsnorm forward and backward", "[norm]") {
  struct Shape {
    int64_t rows, D;
    bool big;
  };
  // 16-byte words (vectorized kernels) for D a multiple of 8: one row, q/kv latent widths, words past the last lane's
  // (1032), lanes exchanging through shared memory (2048; f32 from 1024), a training batch; the strided kernels
  // for the rest (33, 1000, 7).
  for (const Shape& s : {Shape{7, 33, false}, Shape{33, 1000, false}, Shape{5, 512, false}, Shape{64, 1536, false},
                         Shape{1000, 7, false}, Shape{1, 1024, false}, Shape{1, 7, false}, Shape{37, 384, false},
                         Shape{19, 256, false}, Shape{9, 1032, false}, Shape{5, 2048, false}, Shape{3, 64, false},
                         Shape{2100, 1024, false}, Shape{256, 7168, true}, Shape{16384, 1024, true}}) {
    if (s.big && !run_big()) continue;
    const std::string st = shape_tag({s.rows, s.D});
    for (DType dt : {kF32, kBF16}) {
      Twin in = twin(dt, randn({s.rows, s.D}, 91, 2.0)), w = twin(dt, randu({s.D}, 92, 0.5, 1.5));
      Twin out = twin_out(dt, {s.rows, s.D}), rstd = twin_out(kF32, {s.rows});
      run_both([&](const Context& c, Pick p) { rmsnorm_forward(c, p(out), p(rstd), p(in), p(w), 1e-6); });
      expect_close(tag("rmsnorm_forward out", dt, st), out, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "f32 sum of squares");
      expect_close(tag("rmsnorm_forward rstd", dt, st), rstd, 2e-6, "f32 sum of squares, rstd kept in f32");
      Twin out2 = twin_out(dt, {s.rows, s.D});  // rstd not needed (inference)
      run_both([&](const Context& c, Pick p) { rmsnorm_forward(c, p(out2), Tensor{}, p(in), p(w), 1e-6); });
      expect_close(tag("rmsnorm_forward no rstd", dt, st), out2, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "f32 sum of squares");

      Twin dout = twin(dt, randn({s.rows, s.D}, 93));
      Twin din = twin_out(dt, {s.rows, s.D}), dw = twin(dt, randu({s.D}, 94));
      run_both([&](const Context& c, Pick p) {
        rmsnorm_backward(c, p(din), p(dw), p(dout), p(in), p(w), p(rstd));
      });
      expect_close(tag("rmsnorm_backward d_in", dt, st), din, dt == kBF16 ? 8e-3 : 1e-5,
                   dt == kBF16 ? kBf16Reason : "f32 row dot product (D terms)");
      expect_close(tag("rmsnorm_backward d_weight +=", dt, st), dw, dt == kBF16 ? 8e-3 : 1e-5,
                   dt == kBF16 ? kBf16Reason : "f32 column sums over rows (chunked, fixed order)");
      Twin din_acc = twin(dt, randn({s.rows, s.D}, 95));
      run_both([&](const Context& c, Pick p) {
        rmsnorm_backward(c, p(din_acc), Tensor{}, p(dout), p(in), p(w), p(rstd), Accum::add);
      });
      expect_close(tag("rmsnorm_backward d_in add", dt, st), din_acc, dt == kBF16 ? 8e-3 : 1e-5,
                   dt == kBF16 ? kBf16Reason : "f32 row dot product (D terms)");
      if (dt == kBF16) {
        Twin dw32 = twin(kF32, randu({s.D}, 96));
        run_both([&](const Context& c, Pick p) {
          rmsnorm_backward(c, Tensor{}, p(dw32), p(dout), p(in), p(w), p(rstd));
        });
        expect_close("rmsnorm_backward d_weight f32 += bf16 " + st, dw32, 1e-5, "f32 column sums of bf16 inputs");
      }
    }
  }
}

// The vectorized kernels (aligned rows, D a multiple of 8 bf16 / 4 f32) sum in the strided kernels' order
// (norm_rope.cu, strided_row_sum): the same bits as the strided path, which a misaligned input forces. So the decode
// fusions that share the strided order (add_rmsnorm, moe_combine's norm) still match rmsnorm_forward.
TEST_CASE("rmsnorm: vectorized kernels give the strided kernels' bits", "[norm]") {
  struct Shape {
    int64_t rows, D;
  };
  for (const Shape& s : {Shape{7, 1024}, Shape{1, 1024}, Shape{37, 384}, Shape{19, 256}, Shape{9, 1032},
                         Shape{5, 2048}, Shape{3, 64}, Shape{4, 96}, Shape{2, 7168}, Shape{300, 1024}}) {
    const std::string st = shape_tag({s.rows, s.D});
    for (DType dt : {kF32, kBF16}) {
      const size_t mis = dt == kBF16 ? 2 : 4;  // one element off 16-byte alignment: the strided kernels
      const Values x = randn({s.rows, s.D}, 191, 2.0), g = randn({s.rows, s.D}, 193), d0 = randn({s.rows, s.D}, 195);
      DevTensor in = dev(dt, x), in_m = dev(dt, x, mis), w = dev(dt, randu({s.D}, 192, 0.5, 1.5));
      DevTensor out = dev_poisoned(dt, {s.rows, s.D}), out_m = dev_poisoned(dt, {s.rows, s.D});
      DevTensor rs = dev_poisoned(kF32, {s.rows}), rs_m = dev_poisoned(kF32, {s.rows});
      rmsnorm_forward(cuda_ctx(), out, rs, in, w, 1e-6);
      rmsnorm_forward(cuda_ctx(), out_m, rs_m, in_m, w, 1e-6);
      device_sync();
      expect_same_bits(tag("rmsnorm_forward out vec/strided", dt, st), out_m, out);
      expect_same_bits(tag("rmsnorm_forward rstd vec/strided", dt, st), rs_m, rs);
      DevTensor dy = dev(dt, g);
      for (bool add : {false, true}) {
        const Accum acc = add ? Accum::add : Accum::overwrite;
        DevTensor din = add ? dev(dt, d0) : dev_poisoned(dt, {s.rows, s.D});
        DevTensor din_m = add ? dev(dt, d0) : dev_poisoned(dt, {s.rows, s.D});
        DevTensor din_w = add ? dev(dt, d0) : dev_poisoned(dt, {s.rows, s.D});
        DevTensor dw = dev(kF32, randu({s.D}, 196)), dw_m = dev(kF32, randu({s.D}, 196));
        rmsnorm_backward(cuda_ctx(), din, Tensor{}, dy, in, w, rs, acc);
        rmsnorm_backward(cuda_ctx(), din_m, Tensor{}, dy, in_m, w, rs, acc);
        rmsnorm_backward(cuda_ctx(), din_w, dw, dy, in, w, rs, acc);  // d_in fused with d_weight's partials
        rmsnorm_backward(cuda_ctx(), Tensor{}, dw_m, dy, in_m, w, rs, acc);
        device_sync();
        const std::string a = add ? " add" : "";
        expect_same_bits(tag("rmsnorm_backward d_in vec/strided", dt, st + a), din_m, din);
        expect_same_bits(tag("rmsnorm_backward d_in with d_weight", dt, st + a), din, din_w);
        expect_close_values(tag("rmsnorm_backward d_weight vec/strided", dt, st + a), dw.values(), dw_m.values(), 1e-5,
                            "f32 column sums in another fixed grouping");
      }
    }
  }
}

// The training block's x_mid = x + attention with its FFN norm (add_rmsnorm_forward with rstd, the vectorised
// kernel's add mode) against add then rmsnorm_forward on the GPU: the same bits, aligned or not.
TEST_CASE("add_rmsnorm_forward with rstd gives add then rmsnorm_forward's bits", "[norm]") {
  struct Shape {
    int64_t rows, D;
  };
  for (const Shape& s : {Shape{16384, 1024}, Shape{7, 1024}, Shape{37, 384}, Shape{5, 2048}, Shape{3, 64},
                         Shape{4, 96}, Shape{2, 7168}, Shape{6, 33}}) {
    const std::string st = shape_tag({s.rows, s.D});
    for (DType dt : {kF32, kBF16}) {
      for (size_t mis : {size_t(0), dt == kBF16 ? size_t(2) : size_t(4)}) {  // aligned, or the row kernel
        const Values x = randn({s.rows, s.D}, 211, 2.0), y = randn({s.rows, s.D}, 212);
        DevTensor a = dev(dt, x, mis), b = dev(dt, y), w = dev(dt, randu({s.D}, 213, 0.5, 1.5));
        DevTensor sum = dev_poisoned(dt, {s.rows, s.D}), out = dev_poisoned(dt, {s.rows, s.D});
        DevTensor rs = dev_poisoned(kF32, {s.rows});
        DevTensor sum_r = dev_poisoned(dt, {s.rows, s.D}), out_r = dev_poisoned(dt, {s.rows, s.D});
        DevTensor rs_r = dev_poisoned(kF32, {s.rows});
        add_rmsnorm_forward(cuda_ctx(), sum, out, a, b, w, 1e-6, rs);
        add(cuda_ctx(), sum_r, a, b);
        rmsnorm_forward(cuda_ctx(), out_r, rs_r, sum_r, w, 1e-6);
        device_sync();
        const std::string t = st + (mis ? " misaligned" : "");
        expect_same_bits(tag("add_rmsnorm_forward sum vs add", dt, t), sum, sum_r);
        expect_same_bits(tag("add_rmsnorm_forward out vs rmsnorm_forward", dt, t), out, out_r);
        expect_same_bits(tag("add_rmsnorm_forward rstd vs rmsnorm_forward", dt, t), rs, rs_r);
      }
    }
  }
}

TEST_CASE("parity: rope forward and backward", "[rope]") {
  struct Shape {
    int64_t N, H, R;
    int32_t max_pos;
    double attn_factor;
    bool big;
  };
  for (const Shape& s : {Shape{7, 1, 8, 100, 1.0, false}, Shape{33, 3, 64, 4096, 1.0, false},
                         Shape{17, 2, 64, 163840, 1.2, false}, Shape{256, 128, 64, 163840, 1.0, true}}) {
    if (s.big && !run_big()) continue;
    const std::string st = shape_tag({s.N, s.H, s.R}) + " pos<" + std::to_string(s.max_pos);
    Values inv{{s.R / 2}, {}};
    for (int64_t i = 0; i < s.R / 2; ++i) inv.v.push_back(std::pow(10000.0, -2.0 * double(i) / double(s.R)));
    for (DType dt : {kF32, kBF16}) {
      Twin in = twin(dt, randn({s.N, s.H, s.R}, 101)), pos = twin_ints({s.N}, rand_ints(s.N, 102, 0, s.max_pos));
      Twin freq = twin(kF32, inv);  // inv_freq stays f32 on CUDA
      Twin out = twin_out(dt, {s.N, s.H, s.R});
      run_both([&](const Context& c, Pick p) { rope_forward(c, p(out), p(in), p(pos), p(freq), s.attn_factor); });
      expect_close(tag("rope_forward", dt, st), out, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "angle in double on both sides, rotation in f32");
      Twin dout = twin(dt, randn({s.N, s.H, s.R}, 103)), din = twin(dt, randn({s.N, s.H, s.R}, 104));
      run_both([&](const Context& c, Pick p) {
        rope_backward(c, p(din), p(dout), p(pos), p(freq), s.attn_factor, Accum::add);
      });
      expect_close(tag("rope_backward add", dt, st), din, dt == kBF16 ? 8e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "angle in double on both sides, rotation in f32");
      Twin inplace = twin(dt, randn({s.N, s.H, s.R}, 105));  // out aliases in
      run_both([&](const Context& c, Pick p) {
        rope_forward(c, p(inplace), p(inplace), p(pos), p(freq), s.attn_factor);
      });
      expect_close(tag("rope_forward in place", dt, st), inplace, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "angle in double on both sides, rotation in f32");
    }
  }
}

// ---- the training MLA's column blocks: RoPE in place / out of kv_a, the latent's RMSNorm read from kv_a -------

namespace {
// The [rows, D] block of x [rows, W] from column col.
Values cols_of(const Values& x, int64_t col, int64_t D) {
  const int64_t W = x.shape.back(), rows = x.numel() / W;
  Values b{{rows, D}, {}};
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < D; ++c) b.v.push_back(x.v[size_t(r * W + col + c)]);
  return b;
}
}  // namespace

TEST_CASE("parity: rope_cols forward and backward", "[rope]") {
  struct Shape {
    int64_t N, H, W, col, R;
  };
  // q's rope columns in place ([N, 16, 96], columns 64..95: 8 heads per thread from 2^20 pairs; 20 heads: a partial
  // group of 8), the rope key at column 256 of kv_a [N, 1, 288], and a small odd layout (one head per thread).
  for (const Shape& s : {Shape{4096, 16, 96, 64, 32}, Shape{3300, 20, 96, 64, 32}, Shape{4096, 1, 288, 256, 32},
                         Shape{7, 3, 10, 2, 8}}) {
    const std::string st = shape_tag({s.N, s.H, s.W}) + " col " + std::to_string(s.col);
    Values inv{{s.R / 2}, {}};
    for (int64_t i = 0; i < s.R / 2; ++i) inv.v.push_back(std::pow(10000.0, -2.0 * double(i) / double(s.R)));
    const std::vector<int32_t> pv = rand_ints(s.N, 141, 0, 5000);
    for (DType dt : {kF32, kBF16}) {
      const double tol = dt == kBF16 ? 5e-3 : 2e-6, tol_add = dt == kBF16 ? 8e-3 : 2e-6;
      const char* why = dt == kBF16 ? kBf16Reason : "angle in double on both sides, rotation in f32";
      Twin pos = twin_ints({s.N}, pv), freq = twin(kF32, inv);
      const Values x = randn({s.N, s.H, s.W}, 142);
      Twin q = twin(dt, x);  // in place: the other columns must stay as they are
      run_both([&](const Context& c, Pick p) { rope_cols_forward(c, p(q), s.col, p(q), s.col, p(pos), p(freq), 1.2); });
      expect_close(tag("rope_cols_forward in place", dt, st), q, tol, why);
      Twin xin = twin(dt, x), out = twin(dt, randn({s.N, s.H, s.R + 3}, 143));  // into columns 1..R of wider rows
      run_both([&](const Context& c, Pick p) { rope_cols_forward(c, p(out), 1, p(xin), s.col, p(pos), p(freq), 1.2); });
      expect_close(tag("rope_cols_forward", dt, st), out, tol, why);
      const Values d0 = randn({s.N, s.H, s.W}, 145);
      Twin dout = twin(dt, randn({s.N, s.H, s.R}, 144));
      for (Accum acc : {Accum::overwrite, Accum::add}) {
        Twin din = twin(dt, d0);
        run_both([&](const Context& c, Pick p) {
          rope_cols_backward(c, p(din), s.col, p(dout), 0, p(pos), p(freq), 1.2, acc);
        });
        expect_close(tag(acc == Accum::add ? "rope_cols_backward add" : "rope_cols_backward", dt, st), din,
                     acc == Accum::add ? tol_add : tol, why);
      }
      Twin dq = twin(dt, d0);
      run_both([&](const Context& c, Pick p) {
        rope_cols_backward(c, p(dq), s.col, p(dq), s.col, p(pos), p(freq), 1.2);
      });
      expect_close(tag("rope_cols_backward in place", dt, st), dq, tol, why);
      // The same bits with one head per thread: each head as its own token (positions repeated per head).
      std::vector<int32_t> pv_heads;
      for (int32_t v : pv) pv_heads.insert(pv_heads.end(), size_t(s.H), v);
      DevTensor a = dev(dt, x), b = dev(dt, x), ph = dev_ints({s.N * s.H}, pv_heads);
      rope_cols_forward(cuda_ctx(), a, s.col, a, s.col, pos.dev, freq.dev, 1.2);
      rope_cols_forward(cuda_ctx(), Tensor(b).view({s.N * s.H, 1, s.W}), s.col, Tensor(b).view({s.N * s.H, 1, s.W}),
                        s.col, ph, freq.dev, 1.2);
      device_sync();
      expect_same_bits(tag("rope_cols_forward heads per thread", dt, st), a, b);
    }
  }
}

TEST_CASE("parity: rmsnorm_cols forward and backward", "[norm]") {
  struct Shape {
    int64_t rows, D, W, col;
  };
  // kv_a's latent (256 of 288 columns: 16-byte words), one element off alignment and rows of 290 (not whole words:
  // the strided kernels), a small odd block.
  for (const Shape& s : {Shape{4096, 256, 288, 0}, Shape{33, 256, 288, 1}, Shape{19, 256, 290, 0},
                         Shape{7, 33, 40, 5}}) {
    const std::string st = shape_tag({s.rows, s.W}) + " cols " + std::to_string(s.col) + "+" + std::to_string(s.D);
    for (DType dt : {kF32, kBF16}) {
      const Values x = randn({s.rows, s.W}, 151, 2.0), wv = randu({s.D}, 152, 0.5, 1.5), g = randn({s.rows, s.D}, 153);
      Twin in = twin(dt, x), w = twin(dt, wv), out = twin_out(dt, {s.rows, s.D}), rstd = twin_out(kF32, {s.rows});
      run_both([&](const Context& c, Pick p) { rmsnorm_cols_forward(c, p(out), p(rstd), p(in), s.col, p(w), 1e-6); });
      expect_close(tag("rmsnorm_cols_forward out", dt, st), out, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "f32 sum of squares");
      expect_close(tag("rmsnorm_cols_forward rstd", dt, st), rstd, 2e-6, "f32 sum of squares, rstd kept in f32");
      Twin dout = twin(dt, g), din = twin(dt, randn({s.rows, s.W}, 154)), dw = twin(dt, randu({s.D}, 155));
      run_both([&](const Context& c, Pick p) {
        rmsnorm_cols_backward(c, p(din), s.col, p(dw), p(dout), p(in), s.col, p(w), p(rstd));
      });
      expect_close(tag("rmsnorm_cols_backward d_in", dt, st), din, dt == kBF16 ? 8e-3 : 1e-5,
                   dt == kBF16 ? kBf16Reason : "f32 row dot product (D terms)");
      expect_close(tag("rmsnorm_cols_backward d_weight +=", dt, st), dw, dt == kBF16 ? 8e-3 : 1e-5,
                   dt == kBF16 ? kBf16Reason : "f32 column sums over rows (chunked, fixed order)");
      Twin din_acc = twin(dt, randn({s.rows, s.W}, 158));
      run_both([&](const Context& c, Pick p) {
        rmsnorm_cols_backward(c, p(din_acc), s.col, Tensor{}, p(dout), p(in), s.col, p(w), p(rstd), Accum::add);
      });
      expect_close(tag("rmsnorm_cols_backward d_in add", dt, st), din_acc, dt == kBF16 ? 8e-3 : 1e-5,
                   dt == kBF16 ? kBf16Reason : "f32 row dot product (D terms)");
      // The bits of copy_cols then rmsnorm_forward / rmsnorm_backward then copy_cols on the device.
      DevTensor xd = dev(dt, x), xc = dev(dt, cols_of(x, s.col, s.D)), wd = dev(dt, wv), dy = dev(dt, g);
      DevTensor o1 = dev_poisoned(dt, {s.rows, s.D}), o2 = dev_poisoned(dt, {s.rows, s.D});
      DevTensor r1 = dev_poisoned(kF32, {s.rows}), r2 = dev_poisoned(kF32, {s.rows});
      const Values d0 = randn({s.rows, s.W}, 156);
      DevTensor d1 = dev(dt, d0), d2 = dev(dt, d0), draw = dev_poisoned(dt, {s.rows, s.D});
      DevTensor dw1 = dev(kF32, randu({s.D}, 157)), dw2 = dev(kF32, randu({s.D}, 157));
      rmsnorm_cols_forward(cuda_ctx(), o1, r1, xd, s.col, wd, 1e-6);
      rmsnorm_forward(cuda_ctx(), o2, r2, xc, wd, 1e-6);
      rmsnorm_cols_backward(cuda_ctx(), d1, s.col, dw1, dy, xd, s.col, wd, r2);
      rmsnorm_backward(cuda_ctx(), draw, dw2, dy, xc, wd, r2);
      copy_cols(cuda_ctx(), d2, s.col, draw, 0, s.D);
      device_sync();
      expect_same_bits(tag("rmsnorm_cols_forward out vs copy + rmsnorm", dt, st), o1, o2);
      expect_same_bits(tag("rmsnorm_cols_forward rstd vs copy + rmsnorm", dt, st), r1, r2);
      expect_same_bits(tag("rmsnorm_cols_backward d_in vs rmsnorm + copy", dt, st), d1, d2);
      expect_close_values(tag("rmsnorm_cols_backward d_weight vs rmsnorm", dt, st), dw1.values(), dw2.values(), 1e-5,
                          "f32 column sums in another fixed grouping where the paths differ");
    }
  }
}

// The training MLP's fused gate/up product: swiglu_pair_forward / _backward against the CPU, and on the device bit for
// bit against swiglu_forward / swiglu_backward of the two halves (the per-element arithmetic is theirs).
TEST_CASE("parity: swiglu_pair backward, and both pair kernels = the unfused kernels", "[elementwise][swiglu]") {
  struct Shape {
    int64_t n, f;
    size_t misalign;  // bytes: gate_up off the 16-byte word (the element-by-element kernels)
    bool big;
  };
  // 64 x 512 and 256 x 2048 take 16-byte words; 9 x 7 (F not a multiple of the word) and the misaligned case do not
  for (const Shape& sh : {Shape{64, 512, 0, false}, Shape{9, 7, 0, false}, Shape{33, 1000, 4, false},
                          Shape{256, 2048, 0, true}}) {
    if (sh.big && !run_big()) continue;
    for (DType dt : {kF32, kBF16}) {
      const int64_t N = sh.n, F = sh.f;
      const std::string st = shape_tag({N, 2 * F}) + (sh.misalign ? " misaligned" : "");
      const char* reason = dt == kBF16 ? kBf16Reason : "f32 expf vs f64 exp";
      Twin gu = twin(dt, randn({N, 2 * F}, 141, 2.0), DType::f64, sh.misalign), dout = twin(dt, randn({N, F}, 142));
      Twin d_gu = twin_out(dt, {N, 2 * F}), out = twin_out(dt, {N, F});
      run_both([&](const Context& c, Pick p) { swiglu_pair_backward(c, p(d_gu), p(dout), p(gu)); });
      expect_close(tag("swiglu_pair_backward", dt, st), d_gu, dt == kBF16 ? 5e-3 : 2e-6, reason);
      run_both([&](const Context& c, Pick p) { swiglu_pair_forward(c, p(out), p(gu)); });
      expect_close(tag("swiglu_pair_forward", dt, st), out, dt == kBF16 ? 5e-3 : 2e-6, reason);

      // on the device: the halves through the unfused kernels give the same bits
      const Context g = cuda_ctx();
      DevTensor gate = dev_poisoned(dt, {N, F}), up = dev_poisoned(dt, {N, F});
      copy_cols(g, gate, 0, gu.dev, 0, F);
      copy_cols(g, up, 0, gu.dev, F, F);
      DevTensor dg = dev_poisoned(dt, {N, F}), du = dev_poisoned(dt, {N, F}), ref_out = dev_poisoned(dt, {N, F});
      swiglu_backward(g, dg, du, dout.dev, gate, up);
      swiglu_forward(g, ref_out, gate, up);
      DevTensor got_g = dev_poisoned(dt, {N, F}), got_u = dev_poisoned(dt, {N, F});
      copy_cols(g, got_g, 0, d_gu.dev, 0, F);
      copy_cols(g, got_u, 0, d_gu.dev, F, F);
      device_sync();
      expect_close_values(tag("swiglu_pair_backward d_gate = swiglu_backward's", dt, st), got_g.values(), dg.values(),
                          0.0, "the same per-element arithmetic (swiglu_bwd1)");
      expect_close_values(tag("swiglu_pair_backward d_up = swiglu_backward's", dt, st), got_u.values(), du.values(),
                          0.0, "the same per-element arithmetic (swiglu_bwd1)");
      expect_close_values(tag("swiglu_pair_forward = swiglu_forward's", dt, st), out.dev.values(), ref_out.values(),
                          0.0, "the same per-element arithmetic (swiglu_fwd1)");
    }
  }
}

// ---- decode fusions: add + RMSNorm, RoPE of a column block, SwiGLU of stacked halves ----------------------

TEST_CASE("parity: decode fusions (add_rmsnorm, rope_cols, swiglu_pair)", "[norm][rope][swiglu]") {
  for (DType dt : {kF32, kBF16}) {
    for (auto [rows, D] : {std::pair<int64_t, int64_t>{1, 1024}, {64, 1024}, {7, 33}, {3, 7168}, {2, 3000}}) {
      const std::string st = shape_tag({rows, D});
      Twin a = twin(dt, randn({rows, D}, 111)), b = twin(dt, randn({rows, D}, 112)), w = twin(dt, randu({D}, 113, 0.5, 1.5));
      Twin sum = twin_out(dt, {rows, D}), out = twin_out(dt, {rows, D});
      run_both([&](const Context& c, Pick p) { add_rmsnorm_forward(c, p(sum), p(out), p(a), p(b), p(w), 1e-6); });
      expect_close(tag("add_rmsnorm_forward sum", dt, st), sum, tol_elem(dt), dt == kBF16 ? kBf16Reason : kExactReason);
      expect_close(tag("add_rmsnorm_forward out", dt, st), out, dt == kBF16 ? 1e-2 : 2e-6,
                   dt == kBF16 ? "two bf16 roundings (the sum, then the output)" : "f32 sum of squares");
      run_both([&](const Context& c, Pick p) { add_rmsnorm_forward(c, p(a), p(out), p(a), p(b), p(w), 1e-6); });
      expect_close(tag("add_rmsnorm_forward sum aliasing a", dt, st), a, tol_elem(dt),
                   dt == kBF16 ? kBf16Reason : kExactReason);
    }
    // q_pe (columns 128..191 of each head of q [N, 16, 192]) rotated into q_lat [N, 16, 576] at column 512
    for (auto [N, H, Win, in_col, Wout, out_col, R] :
         {std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>{64, 16, 96, 64, 288, 256, 32},
          {1, 128, 192, 128, 576, 512, 64}, {5, 3, 10, 2, 12, 0, 8}}) {
      const std::string st = shape_tag({N, H, Win}) + " -> " + shape_tag({N, H, Wout});
      Values inv{{R / 2}, {}};
      for (int64_t i = 0; i < R / 2; ++i) inv.v.push_back(std::pow(10000.0, -2.0 * double(i) / double(R)));
      Twin in = twin(dt, randn({N, H, Win}, 121)), pos = twin_ints({N}, rand_ints(N, 122, 0, 5000));
      Twin freq = twin(kF32, inv);
      Twin out = twin(dt, randn({N, H, Wout}, 123));  // columns outside the block must stay as they are
      run_both([&](const Context& c, Pick p) { rope_cols_forward(c, p(out), out_col, p(in), in_col, p(pos), p(freq), 1.0); });
      expect_close(tag("rope_cols_forward", dt, st), out, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "angle in double on both sides, rotation in f32");
    }
    for (auto [N, F] : {std::pair<int64_t, int64_t>{64, 512}, {1, 2816}, {9, 7}}) {
      const std::string st = shape_tag({N, 2 * F});
      Twin gu = twin(dt, randn({N, 2 * F}, 131, 2.0)), out = twin_out(dt, {N, F});
      run_both([&](const Context& c, Pick p) { swiglu_pair_forward(c, p(out), p(gu)); });
      expect_close(tag("swiglu_pair_forward", dt, st), out, dt == kBF16 ? 5e-3 : 2e-6,
                   dt == kBF16 ? kBf16Reason : "elementwise in f32");
    }
  }
}

// ---- cross-entropy ----------------------------------------------------------------------------------------

TEST_CASE("parity: cross-entropy forward and backward", "[loss]") {
  struct Shape {
    int64_t N, V;
    bool big;
  };
  const int kIgnore = -100;
  // V 7 and 50,001: the scalar kernels; 70,000 rows: more rows than either grid holds blocks (grid-stride).
  for (const Shape& s : {Shape{7, 1000, false}, Shape{33, 7, false}, Shape{5, 50000, false}, Shape{3, 50001, false},
                         Shape{70000, 12, false}, Shape{4, 129280, false}, Shape{64, 129280, true}}) {
    if (s.big && !run_big()) continue;
    const std::string st = shape_tag({s.N, s.V});
    std::vector<int32_t> tg = rand_ints(s.N, 111, 0, int32_t(s.V));
    tg[1 % s.N] = kIgnore;  // one ignored row
    for (DType dt : {kF32, kBF16}) {
      Twin logits = twin(dt, randn({s.N, s.V}, 112, 3.0)), targets = twin_ints({s.N}, tg);
      Twin loss = twin_out(kF32, {s.N}), lse = twin_out(kF32, {s.N});
      run_both([&](const Context& c, Pick p) {
        cross_entropy_forward(c, p(loss), p(lse), p(logits), p(targets), kIgnore);
      });
      expect_close(tag("cross_entropy_forward loss", dt, st), loss, 2e-6, "online logsumexp in f32 (CPU f64)");
      expect_close(tag("cross_entropy_forward lse", dt, st), lse, 2e-6, "online logsumexp in f32 (CPU f64)");

      Twin dl = twin_out(dt, {s.N, s.V});
      const double d_scale = 1.0 / double(s.N);
      run_both([&](const Context& c, Pick p) {
        cross_entropy_backward(c, p(dl), p(logits), p(lse), p(targets), d_scale, kIgnore);
      });
      expect_close(tag("cross_entropy_backward", dt, st), dl, dt == kBF16 ? 5e-3 : 1e-5,
                   dt == kBF16 ? kBf16Reason : "f32 expf(x - lse)");
      Twin dl_acc = twin(dt, randu({s.N, s.V}, 113, -0.01, 0.01)), rs = twin(kF32, randn({s.N}, 114));
      run_both([&](const Context& c, Pick p) {
        cross_entropy_backward(c, p(dl_acc), p(logits), p(lse), p(targets), 0.5, kIgnore, Accum::add, p(rs));
      });
      expect_close(tag("cross_entropy_backward add row_scale", dt, st), dl_acc, dt == kBF16 ? 8e-3 : 1e-5,
                   dt == kBF16 ? kBf16Reason : "f32 expf(x - lse)");
    }
  }
}

// Mixed precision: f32 logits, bf16 d_logits written directly (what the bf16 head's backward reads). Against the f64
// reference (bf16 output rounding), against the CPU's own mixed f32 -> bf16 reference, and bit for bit against the
// device's f32 d_logits rounded to bf16 (the same f32 gradient, rounded once). Shapes cover the float4 / 8-byte path
// (V % 4 == 0, aligned), the scalar path (odd V, or a misaligned logits or d_logits pointer), ignored rows, row_scale,
// Accum::add, and more rows than the grid holds blocks.
TEST_CASE("parity: cross-entropy backward, f32 logits into bf16 d_logits", "[loss]") {
  struct Shape {
    int64_t N, V;
    size_t logits_misalign, d_misalign;  // bytes off the allocation's 256-byte alignment
  };
  const int kIgnore = -100;
  for (const Shape& s : {Shape{7, 1000, 0, 0}, Shape{33, 7, 0, 0}, Shape{5, 50001, 0, 0}, Shape{6, 32000, 4, 0},
                         Shape{6, 32000, 0, 2}, Shape{16, 32000, 0, 0}, Shape{70000, 12, 0, 0},
                         Shape{3, 129280, 0, 0}}) {
    const std::string st = shape_tag({s.N, s.V}) + (s.logits_misalign ? " logits+4B" : "") +
                           (s.d_misalign ? " d+2B" : "");
    std::vector<int32_t> tg = rand_ints(s.N, 211, 0, int32_t(s.V));
    tg[1 % s.N] = kIgnore;
    if (s.N > 4) tg[s.N - 2] = kIgnore;
    tg[0] = int32_t(s.V - 1);  // the last column (a vector group's last element, or the scalar tail)
    const Values x = randn({s.N, s.V}, 212, 3.0);
    // f64 reference side (logits rounded through f32) and the CPU mixed reference (f32 logits, bf16 d_logits)
    Twin logits = twin(kF32, x, DType::f64, s.logits_misalign), targets = twin_ints({s.N}, tg);
    Twin logits32 = twin(kF32, x, kF32, s.logits_misalign);
    Twin lse = twin_out(kF32, {s.N}), loss = twin_out(kF32, {s.N});
    Twin lse32 = twin_out(kF32, {s.N}, kF32), loss32 = twin_out(kF32, {s.N}, kF32);
    run_both([&](const Context& c, Pick p) {
      cross_entropy_forward(c, p(loss), p(lse), p(logits), p(targets), kIgnore);
      cross_entropy_forward(c, p(loss32), p(lse32), p(logits32), p(targets), kIgnore);
    });
    expect_close(tag("cross_entropy_forward lse", kF32, st), lse, 2e-6, "online logsumexp in f32 (CPU f64)");

    const double d_scale = 1.0 / double(s.N);
    Twin dl = twin_out(kBF16, {s.N, s.V}, DType::f64);  // device: poisoned bf16 with the requested misalignment
    dl.dev = DevTensor(kBF16, {s.N, s.V}, Device{DeviceKind::cuda, 0}, s.d_misalign);
    {
      std::vector<unsigned char> junk(dl.dev.t.nbytes(), 0xFF);  // NaN: an element left unwritten shows up
      device_copy(dl.dev.t.device, dl.dev.t.data, Device{}, junk.data(), junk.size());
    }
    Twin dl_mixed = twin_out(kBF16, {s.N, s.V}, kBF16);
    run_both([&](const Context& c, Pick p) {
      cross_entropy_backward(c, p(dl), p(logits), p(lse), p(targets), d_scale, kIgnore);
      cross_entropy_backward(c, p(dl_mixed), p(logits32), p(lse32), p(targets), d_scale, kIgnore);
    });
    expect_close(tag("cross_entropy_backward f32->bf16", kBF16, st), dl, 5e-3, kBf16Reason);
    expect_close(tag("cross_entropy_backward f32->bf16 vs CPU mixed", kBF16, st), dl_mixed, 5e-3,
                 "both round once to bf16; f32 expf vs double exp can straddle a rounding boundary");

    // The same f32 gradient, rounded once: device bf16 == device f32 rounded to bf16, bit for bit.
    DevTensor d32 = dev_poisoned(kF32, {s.N, s.V});
    cross_entropy_backward(cuda_ctx(), d32, logits.dev, lse.dev, targets.dev, d_scale, kIgnore);
    device_sync();
    {
      const std::vector<double> a = d32.values(), b = dl.dev.values();
      int64_t diff = 0;
      for (size_t i = 0; i < a.size(); ++i) diff += round_to(kBF16, a[i]) != b[i];
      std::printf("bits   %-48s %lld of %zu values differ\n", tag("ce_bwd bf16 vs f32 rounded", kBF16, st).c_str(),
                  (long long)diff, a.size());
      CHECK(diff == 0);
    }

    // Accum::add with row_scale into bf16: read, add in f32, round once.
    const Values start = rounded(kBF16, randu({s.N, s.V}, 213, -0.01, 0.01));
    Twin dl_acc = twin(kBF16, start, DType::f64, s.d_misalign), rs = twin(kF32, randn({s.N}, 214));
    run_both([&](const Context& c, Pick p) {
      cross_entropy_backward(c, p(dl_acc), p(logits), p(lse), p(targets), 0.5, kIgnore, Accum::add, p(rs));
    });
    expect_close(tag("cross_entropy_backward f32->bf16 add row_scale", kBF16, st), dl_acc, 8e-3, kBf16Reason);
    {  // ignored rows keep their values exactly under Accum::add
      const std::vector<double> got = dl_acc.dev.values();
      int64_t changed = 0;
      for (int64_t n = 0; n < s.N; ++n)
        if (tg[size_t(n)] == kIgnore)
          for (int64_t v = 0; v < s.V; ++v) changed += got[size_t(n * s.V + v)] != start.v[size_t(n * s.V + v)];
      CHECK(changed == 0);
    }

    // Deterministic: a second run of each kernel gives the same bits.
    DevTensor lse_again = dev_poisoned(kF32, {s.N}), loss_again = dev_poisoned(kF32, {s.N});
    DevTensor dl_again(kBF16, {s.N, s.V}, Device{DeviceKind::cuda, 0}, s.d_misalign);
    cross_entropy_forward(cuda_ctx(), loss_again, lse_again, logits.dev, targets.dev, kIgnore);
    cross_entropy_backward(cuda_ctx(), dl_again, logits.dev, lse.dev, targets.dev, d_scale, kIgnore);
    device_sync();
    expect_same_bits(tag("cross_entropy_forward lse rerun", kF32, st), lse.dev, lse_again);
    expect_same_bits(tag("cross_entropy_backward rerun", kBF16, st), dl.dev, dl_again);
  }
  // Any other pair of dtypes is refused before a launch.
  DevTensor x16 = dev(kBF16, randu({2, 8}, 215)), l32 = dev(kF32, randu({2}, 216)), t = dev_ints({2}, {1, 2});
  DevTensor d32 = dev_poisoned(kF32, {2, 8});
  expect_error([&] { cross_entropy_backward(cuda_ctx(), d32, x16, l32, t, 1.0, -100); },
               {"cross_entropy_backward", "d_logits", "call's float dtype bf16"});
  expect_guards("cross_entropy_backward d_logits (refused call)", d32);
}

// Masked vocabulary: -inf logits (a row's first columns included, where a thread's running max is still -inf) add
// nothing to the logsumexp and get a zero gradient, as on the CPU; both the float4 and the scalar kernels.
TEST_CASE("parity: cross-entropy with -inf logits", "[loss]") {
  for (int64_t V : {int64_t(4096), int64_t(4099)}) {
    const int64_t N = 6;
    Values x = randn({N, V}, 231, 2.0);
    for (int64_t n = 0; n < N; ++n)
      for (int64_t v = 0; v < V; ++v)
        if (v < 1500 || v % 3 == 0) x.v[size_t(n * V + v)] = -std::numeric_limits<double>::infinity();
    std::vector<int32_t> tg(size_t(N), 1501);
    tg[2] = -100;
    Twin logits = twin(kF32, x), targets = twin_ints({N}, tg), loss = twin_out(kF32, {N}), lse = twin_out(kF32, {N});
    Twin dl = twin_out(kBF16, {N, V});
    run_both([&](const Context& c, Pick p) {
      cross_entropy_forward(c, p(loss), p(lse), p(logits), p(targets), -100);
      cross_entropy_backward(c, p(dl), p(logits), p(lse), p(targets), 0.25, -100);
    });
    const std::string st = shape_tag({N, V});
    expect_close(tag("cross_entropy_forward -inf loss", kF32, st), loss, 2e-6, "online logsumexp in f32 (CPU f64)");
    expect_close(tag("cross_entropy_backward -inf f32->bf16", kBF16, st), dl, 5e-3, kBf16Reason);
  }
}

// cross_entropy_fused (the loss and the gradient in one pass over the logits) against cross_entropy_forward then
// cross_entropy_backward on the device, bit for bit: loss, lse and d_logits, for every pair of dtypes (f32 logits
// into bf16 or f32 d_logits, bf16 into bf16). Shapes: V 32,000 (16-byte groups, 16 f32 or 8 bf16 a thread: the
// training shape's row in registers), 2,048 (1 group a thread; more rows than the grid holds blocks), odd V (scalar
// groups, 2 and 10 a thread), V past the registers and a misaligned d_logits (the two-pass fallback). Rows: ignored
// ones, a target outside [0, V) (NaN in both), the last column as target, -inf logits, a NaN logit.
TEST_CASE("cross_entropy_fused: the two passes' bits in one", "[loss][fused]") {
  struct Shape {
    int64_t N, V;
    bool misalign;  // d_logits one element off its vector alignment
  };
  const int kIgnore = -100;
  const Device cuda0{DeviceKind::cuda, 0};
  for (const Shape& s : {Shape{64, 32000, false}, Shape{700, 2048, false}, Shape{37, 1001, false},
                         Shape{9, 5001, false}, Shape{5, 7, false}, Shape{5, 40000, false}, Shape{6, 32000, true}}) {
    std::vector<int32_t> tg = rand_ints(s.N, 241, 0, int32_t(s.V));
    tg[0] = int32_t(s.V - 1);
    tg[1] = kIgnore;
    tg[2] = int32_t(s.V);  // bad: NaN loss, lse and gradient row, as the two ops give
    tg[3] = int32_t(s.V - 2);  // row 3 masked (-inf) but at its target
    tg[s.N - 1] = kIgnore;
    Values x = randn({s.N, s.V}, 242, 3.0);
    for (int64_t v = 0; v < s.V; ++v)
      if ((v < s.V / 3 || v % 3 == 0) && v != tg[3])
        x.v[size_t(3 * s.V + v)] = -std::numeric_limits<double>::infinity();
    const bool nan_row = s.N > 5;  // row 4: one NaN logit, a NaN loss in both
    if (nan_row) x.v[size_t(4 * s.V + s.V / 2)] = std::numeric_limits<double>::quiet_NaN();
    for (auto [dt, ddt] : {std::pair{kF32, kBF16}, std::pair{kF32, kF32}, std::pair{kBF16, kBF16}}) {
      const std::string st = shape_tag({s.N, s.V}) + (s.misalign ? " d misaligned" : "");
      const std::string what = std::string(dtype_name(dt)) + "->" + dtype_name(ddt);
      auto name = [&](const char* part) {
        return tag((std::string("cross_entropy_fused ") + part + " " + what).c_str(), dt, st);
      };
      const size_t mis = s.misalign ? dtype_size(ddt) : 0;
      auto poisoned = [&](DType t, const std::vector<int64_t>& shape, size_t misalign) {
        DevTensor d(t, shape, cuda0, misalign);
        std::vector<unsigned char> junk(d.t.nbytes(), 0xFF);  // NaN: an element left unwritten shows up
        device_copy(d.t.device, d.t.data, Device{}, junk.data(), junk.size());
        return d;
      };
      DevTensor logits = dev(dt, x), targets = dev_ints({s.N}, tg);
      DevTensor loss = poisoned(kF32, {s.N}, 0), lse = poisoned(kF32, {s.N}, 0);
      DevTensor d = poisoned(ddt, {s.N, s.V}, mis);
      DevTensor loss_f = poisoned(kF32, {s.N}, 0), lse_f = poisoned(kF32, {s.N}, 0);
      DevTensor d_f = poisoned(ddt, {s.N, s.V}, mis);
      const double d_scale = 1.0 / 3.0;
      cross_entropy_forward(cuda_ctx(), loss, lse, logits, targets, kIgnore);
      cross_entropy_backward(cuda_ctx(), d, logits, lse, targets, d_scale, kIgnore);
      cross_entropy_fused(cuda_ctx(), loss_f, lse_f, d_f, logits, targets, d_scale, kIgnore);
      device_sync();
      expect_same_bits(name("loss"), loss, loss_f);
      expect_same_bits(name("lse"), lse, lse_f);
      expect_same_bits(name("d_logits"), d, d_f);
      {  // the rows that must be zero (ignored) or NaN (bad target) are, not only equal to the two ops'
        const std::vector<double> g = d_f.values(), l = loss_f.values();
        int64_t wrong = 0;
        for (int64_t v = 0; v < s.V; ++v) {
          wrong += g[size_t(1 * s.V + v)] != 0.0;
          wrong += !std::isnan(g[size_t(2 * s.V + v)]);
        }
        wrong += l[1] != 0.0 || !std::isnan(l[2]) || !std::isfinite(l[3]) || !std::isfinite(l[0]);
        wrong += nan_row && !std::isnan(l[4]);
        std::printf("check  %-48s %lld wrong\n", name("special rows").c_str(),
                    (long long)wrong);
        CHECK(wrong == 0);
      }
    }
  }
}

// The training step's loss at the bench shape (B16 x T1024, V 32,000): forward, the backward into bf16 d_logits,
// and the former path (f32 d_logits, then a copy to bf16) for comparison. ~4 TB/s: forward ~0.5 ms, bf16 ~0.8 ms.
// The fused loss and gradient (what a plain training step runs) reads the logits once.
TEST_CASE("cross-entropy timings: training shape", "[.bench][bench]") {
  const Context c = cuda_ctx();
  const int64_t N = 16384, V = 32000, R = 256;  // R random rows, tiled over N on the device
  DevTensor logits(kF32, {N, V}), lse(kF32, {N}), loss(kF32, {N}), d32(kF32, {N, V}), d16(kBF16, {N, V});
  {
    const DevTensor rows = dev(kF32, randn({R, V}, 221, 3.0));
    for (int64_t r = 0; r < N; r += R)
      device_copy(logits.t.device, static_cast<char*>(logits.t.data) + r * V * 4, rows.t.device, rows.t.data,
                  size_t(R * V * 4));
  }
  std::vector<int32_t> tg = rand_ints(N, 222, 0, int32_t(V));
  for (int64_t n = 0; n < N; n += 97) tg[size_t(n)] = -100;
  DevTensor targets = dev_ints({N}, tg);
  const double fwd = median_ms([&] { cross_entropy_forward(c, loss, lse, logits, targets, -100); });
  const double bwd16 = median_ms([&] { cross_entropy_backward(c, d16, logits, lse, targets, 1e-4, -100); });
  const double bwd32 = median_ms([&] { cross_entropy_backward(c, d32, logits, lse, targets, 1e-4, -100); });
  const double cvt = median_ms([&] { copy(c, d16, d32); });
  const double fused = median_ms([&] { cross_entropy_fused(c, loss, lse, d16, logits, targets, 1e-4, -100); });
  const double gb = double(N) * double(V) * 1e-9;
  std::printf("bench cross-entropy N=%lld V=%lld  fwd %.3f ms (%.0f GB/s)  bwd f32->bf16 %.3f ms (%.0f GB/s)  "
              "bwd f32 %.3f ms + copy to bf16 %.3f ms  fused f32->bf16 %.3f ms (%.0f GB/s) (median of 9)\n",
              (long long)N, (long long)V, fwd, 4 * gb / fwd * 1e3, bwd16, 6 * gb / bwd16 * 1e3, bwd32, cvt, fused,
              6 * gb / fused * 1e3);
  // bf16 logits (the trainer's default in mixed precision): the same rows rounded
  DevTensor l16(kBF16, {N, V});
  copy(c, l16, logits);
  const double fwd_b = median_ms([&] { cross_entropy_forward(c, loss, lse, l16, targets, -100); });
  const double bwd_b = median_ms([&] { cross_entropy_backward(c, d16, l16, lse, targets, 1e-4, -100); });
  const double fused_b = median_ms([&] { cross_entropy_fused(c, loss, lse, d16, l16, targets, 1e-4, -100); });
  std::printf("bench cross-entropy N=%lld V=%lld bf16 logits  fwd %.3f ms (%.0f GB/s)  bwd %.3f ms (%.0f GB/s)  "
              "fused %.3f ms (%.0f GB/s) (median of 9)\n",
              (long long)N, (long long)V, fwd_b, 2 * gb / fwd_b * 1e3, bwd_b, 4 * gb / bwd_b * 1e3, fused_b,
              4 * gb / fused_b * 1e3);
  std::fflush(stdout);
}

// ---- AdamW ------------------------------------------------------------------------------------------------

TEST_CASE("parity: adamw_update", "[adamw]") {
  for (int64_t n : {int64_t(7), int64_t(1000), (int64_t(1) << 20) + 3}) {
    for (DType gdt : {kF32, kBF16}) {
      for (int64_t step : {int64_t(1), int64_t(100)}) {
        AdamWOptions o;
        o.lr = 3e-4;
        o.weight_decay = 0.1;
        o.step = step;
        o.grad_scale = 0.5;
        // Aligned: the 16-byte-word kernel (n % 4 == 3: its element-wise tail); at step 100 the grad one element
        // off 16 bytes: the element-wise kernel.
        const size_t mis = step == 100 ? (gdt == kBF16 ? 2 : 4) : 0;
        Twin p = twin(kF32, randn({n}, 121)), g = twin(gdt, randn({n}, 122, 0.1), DType::f64, mis);
        Twin m = twin(kF32, randn({n}, 123, 0.01)), v = twin(kF32, randu({n}, 124, 0.0, 1e-4));
        Twin pc = twin_out(kBF16, {n});  // the bf16 compute copy, refreshed by the last step
        for (int it = 0; it < 3; ++it) {
          run_both([&](const Context& c, Pick pk) {
            adamw_update(c, pk(p), pk(g), pk(m), pk(v), o, it == 2 ? pk(pc) : Tensor{});
          });
          ++o.step;
        }
        const std::string st = std::to_string(n) + " step " + std::to_string(step);
        const char* why = "f32 update (CPU f64), 3 steps";
        expect_close(tag("adamw bf16 compute copy, grad", gdt, st), pc, 5e-3, kBf16Reason);
        expect_close(tag("adamw param, grad", gdt, st), p, 1e-6, why);
        expect_close(tag("adamw m, grad", gdt, st), m, 1e-6, why);
        expect_close(tag("adamw v, grad", gdt, st), v, 1e-6, why);
      }
    }
  }
}

TEST_CASE("parity: adamw_update with bf16 moments", "[adamw]") {
  // DeepSeek-V3's optimizer state. The reference runs the CPU op on an f32 parameter and bf16 moments (its update in
  // double, the moments rounded through float); the GPU updates in f32. Aligned (16-byte words, n % 4 tail) and a
  // gradient one element off 16 bytes (the element-wise kernel).
  for (int64_t n : {int64_t(7), int64_t(1000), (int64_t(1) << 20) + 3}) {
    for (DType gdt : {kF32, kBF16}) {
      for (size_t mis : {size_t(0), size_t(gdt == kBF16 ? 2 : 4)}) {
        AdamWOptions o;
        o.lr = 3e-4;
        o.weight_decay = 0.1;
        o.step = 10;
        o.grad_scale = 0.5;
        Twin p = twin(kF32, randn({n}, 131), kF32), g = twin(gdt, randn({n}, 132, 0.1), kF32, mis);
        Twin m = twin(kBF16, randn({n}, 133, 0.01), kBF16), v = twin(kBF16, randu({n}, 134, 1e-6, 1e-4), kBF16);
        Twin pc = twin_out(kBF16, {n}, kF32);
        for (int it = 0; it < 3; ++it) {
          run_both([&](const Context& c, Pick pk) {
            adamw_update(c, pk(p), pk(g), pk(m), pk(v), o, it == 2 ? pk(pc) : Tensor{});
          });
          ++o.step;
        }
        const std::string st = std::to_string(n) + (mis ? " misaligned grad" : "");
        // f32 vs double arithmetic can put a new moment on the other side of a bf16 rounding boundary: one bf16 ulp
        // (2^-8 relative) at most per step, and the next step scales it by beta.
        const char* why = "bf16 moments: f32 (GPU) vs double (CPU) arithmetic may round one ulp apart";
        expect_close(tag("adamw bf16 moments: m, grad", gdt, st), m, 1e-2, why);
        expect_close(tag("adamw bf16 moments: v, grad", gdt, st), v, 1e-2, why);
        expect_close(tag("adamw bf16 moments: param, grad", gdt, st), p, 1e-5, "the moments' ulp times lr");
        expect_close(tag("adamw bf16 moments: compute copy, grad", gdt, st), pc, 5e-3, kBf16Reason);
      }
    }
  }
}

TEST_CASE("parity: adamw_update_many gives each slot adamw_update's bits", "[adamw]") {
  // An optimizer step's mix: sizes around the 8192-element chunks and the n % 4 tail, per-slot weight decay, with and
  // without the bf16 compute copy, bf16 moments (another launch group), and a gradient 4 bytes off 16 (adamw_update
  // alone). Each slot against adamw_update on copies of the same state.
  struct S {
    int64_t n;
    double wd;
    bool bf16_moments, compute;
    size_t mis;
  };
  const std::vector<S> ss = {{7, 0.1, false, true, 0},     {8192, 0.0, false, true, 0}, {8193, 0.1, false, false, 0},
                             {30000, 0.1, false, true, 0}, {1000, 0.1, true, true, 0},  {4, 0.0, false, true, 0},
                             {513, 0.1, false, true, 4}};
  AdamWOptions o;
  o.lr = 3e-4;
  o.step = 5;
  o.grad_scale = 0.5;
  std::vector<DevTensor> a, b;  // per slot: p, g, m, v, c (many), then the same for the single calls
  std::vector<AdamWSlot> slots;
  uint64_t seed = 700;
  for (const S& x : ss) {
    const DType md = x.bf16_moments ? kBF16 : kF32;
    for (std::vector<DevTensor>* d : {&a, &b}) {
      d->push_back(dev(kF32, randn({x.n}, seed)));
      d->push_back(dev(kF32, randn({x.n}, seed + 1, 0.1), x.mis));
      d->push_back(dev(md, randn({x.n}, seed + 2, 0.01)));
      d->push_back(dev(md, randu({x.n}, seed + 3, 1e-6, 1e-4)));
      d->push_back(dev_poisoned(kBF16, {x.n}));
    }
    seed += 10;
  }
  for (size_t i = 0; i < ss.size(); ++i) {
    DevTensor* t = &a[5 * i];
    slots.push_back({t[0], t[1], t[2], t[3], ss[i].compute ? t[4].t : Tensor{}, ss[i].wd});
  }
  adamw_update_many(cuda_ctx(), slots, o);
  for (size_t i = 0; i < ss.size(); ++i) {
    DevTensor* t = &b[5 * i];
    AdamWOptions oi = o;
    oi.weight_decay = ss[i].wd;
    adamw_update(cuda_ctx(), t[0], t[1], t[2], t[3], oi, ss[i].compute ? t[4].t : Tensor{});
  }
  device_sync();
  for (size_t i = 0; i < ss.size(); ++i) {
    const std::string st = "adamw_update_many slot " + std::to_string(i) + " n " + std::to_string(ss[i].n);
    expect_same_bits(st + " param", a[5 * i], b[5 * i]);
    expect_same_bits(st + " m", a[5 * i + 2], b[5 * i + 2]);
    expect_same_bits(st + " v", a[5 * i + 3], b[5 * i + 3]);
    if (ss[i].compute) expect_same_bits(st + " compute", a[5 * i + 4], b[5 * i + 4]);
  }
}

TEST_CASE("parity: sum_into is sum; grad_clip_verdict and an update that reads it are the host path's bits",
          "[adamw][reduce]") {
  // sum_into: sum()'s value (the same two kernels) left on the device, at an offset
  DevTensor loss = dev(kF32, randu({16385}, 800, 0, 10));
  DevTensor sums = dev(DType::f64, Values{{3}, {-7.0, -7.0, -7.0}});
  sum_into(cuda_ctx(), sums.t.slice0(1, 2), loss);
  std::vector<double> got = to_host_f64(sums.t);
  CHECK(got[0] == -7.0);
  CHECK(got[1] == sum(cuda_ctx(), loss));
  CHECK(got[2] == -7.0);
  // the verdict: the CPU op's bits (the same double arithmetic, the sums in order)
  const Values sq = randu({300}, 801, 0, 1e-2);
  Twin ssq = twin(DType::f64, sq), fin = twin(DType::f64, Values{{2}, {3.5, 1.25}});
  Twin verdict = twin(DType::f64, Values{{3}, {-1, -1, -1}});
  for (double max_norm : {0.0, 0.1, 100.0}) {
    for (bool force : {false, true}) {
      run_both([&](const Context& c, Pick p) {
        grad_clip_verdict(c, p(verdict), p(ssq), p(fin), 0.25, max_norm, force);
      });
      expect_close("grad_clip_verdict max_norm " + std::to_string(max_norm) + (force ? " forced" : ""), verdict, 0.0,
                   "exact: the same double operations in the same order");
    }
  }
  // an update with the device's verdict: adamw_update_many with that scale as grad_scale, the same bits
  const int64_t n = 10000;
  std::vector<DevTensor> a, b;
  for (std::vector<DevTensor>* d : {&a, &b}) {
    d->push_back(dev(kF32, randn({n}, 810)));
    d->push_back(dev(kF32, randn({n}, 811, 0.1)));
    d->push_back(dev(kF32, randn({n}, 812, 0.01)));
    d->push_back(dev(kF32, randu({n}, 813, 1e-6, 1e-4)));
    d->push_back(dev_poisoned(kBF16, {n}));
  }
  DevTensor v = dev(DType::f64, Values{{3}, {-1, -1, -1}});
  grad_clip_verdict(cuda_ctx(), v, ssq.dev, fin.dev, 0.25, 0.1, false);
  const std::vector<double> vh = to_host_f64(v.t);
  REQUIRE(vh[1] == 0.0);
  REQUIRE(vh[0] < 0.25);  // clipped
  AdamWOptions o;
  o.lr = 3e-4;
  o.step = 5;
  o.grad_scale = 123.0;  // the verdict's replaces it
  o.verdict = v.t;
  adamw_update_many(cuda_ctx(), {{a[0], a[1], a[2], a[3], a[4].t, 0.1}}, o);
  o.verdict = Tensor{};
  o.grad_scale = vh[0];
  adamw_update_many(cuda_ctx(), {{b[0], b[1], b[2], b[3], b[4].t, 0.1}}, o);
  device_sync();
  for (size_t k : {0, 2, 3, 4}) expect_same_bits("adamw with a verdict, tensor " + std::to_string(k), a[k], b[k]);
  // a skipped verdict: nothing written (the single-tensor kernels too)
  grad_clip_verdict(cuda_ctx(), v, ssq.dev, fin.dev, 0.25, 0.1, true);
  const std::vector<double> before = to_host_f64(a[0].t), cbefore = to_host_f64(a[4].t);
  o.verdict = v.t;
  adamw_update_many(cuda_ctx(), {{a[0], a[1], a[2], a[3], a[4].t, 0.1}}, o);
  adamw_update(cuda_ctx(), a[0], a[1], a[2], a[3], o, a[4]);
  CHECK(to_host_f64(a[0].t) == before);
  CHECK(to_host_f64(a[4].t) == cbefore);
}

// ---- errors -----------------------------------------------------------------------------------------------

TEST_CASE("CUDA dispatch: dtype rules are checked before any launch", "[checks]") {
  DevTensor x = dev(kBF16, randu({4, 8}, 131)), w = dev(kBF16, randu({8}, 132)), r16 = dev(kBF16, randu({4}, 133));
  DevTensor out = dev_poisoned(kBF16, {4, 8});
  expect_error([&] { rmsnorm_forward(cuda_ctx(), out, r16, x, w, 1e-6); }, {"rstd", "must be f32 on CUDA"});
  DevTensor x64 = dev(DType::f64, randu({4}, 134));
  expect_error([&] { scale(cuda_ctx(), x64, 2.0); }, {"f32 or bf16 on CUDA"});
  HostTensor h = host(kF32, randu({4, 8}, 135));
  DevTensor x32 = dev(kF32, randu({4, 8}, 136));
  expect_error([&] { add(cuda_ctx(), x32, x32, h); }, {"not on the context's device"});
  expect_guards("rmsnorm out (refused call)", out);
}

TEST_CASE("parity: edge cases (bad ids and targets surface as NaN)", "[edge]") {
  // Out-of-range ids / targets are bad input on the CPU; on the GPU the row becomes NaN (no sync to report it).
  DevTensor table = dev(kF32, randu({10, 4}, 142)), ids = dev_ints({3}, {1, 10, -1}), out = dev_poisoned(kF32, {3, 4});
  embedding_forward(cuda_ctx(), out, ids, table);
  const std::vector<double> e = out.values();
  for (int c = 0; c < 4; ++c) {
    CHECK(std::isfinite(e[size_t(c)]));
    CHECK(std::isnan(e[size_t(4 + c)]));
    CHECK(std::isnan(e[size_t(8 + c)]));
  }
  DevTensor logits = dev(kF32, randu({2, 5}, 143)), tg = dev_ints({2}, {5, 2}), loss = dev_poisoned(kF32, {2});
  cross_entropy_forward(cuda_ctx(), loss, Tensor{}, logits, tg, -100);
  const std::vector<double> l = loss.values();
  CHECK(std::isnan(l[0]));
  CHECK(std::isfinite(l[1]));
}

TEST_CASE("parity: ops run on the context's stream", "[stream]") {
  cudaStream_t st = nullptr;
  cuda_ok(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
  Context g = cuda_ctx();
  g.cuda_stream = st;
  const int64_t M = 64, K = 1000, N = 96;
  for (DType dt : {kF32, kBF16}) {
    Twin in = twin(dt, randn({M, K}, 151)), w = twin(dt, randu({N, K}, 152, -0.05, 0.05)), wn = twin(dt, randu({K}, 153));
    Twin x = twin_out(dt, {M, K}), rstd = twin_out(kF32, {M}), out = twin_out(dt, {M, N});
    Twin tg = twin_ints({M}, rand_ints(M, 154, 0, int32_t(N))), loss = twin_out(kF32, {M}), lse = twin_out(kF32, {M});
    auto chain = [&](const Context& c, Pick p) {  // a dependent chain: any missing stream ordering shows up
      rmsnorm_forward(c, p(x), p(rstd), p(in), p(wn), 1e-6);
      matmul_forward(c, p(out), p(x), p(w));
      cross_entropy_forward(c, p(loss), p(lse), p(out), p(tg), -100);
    };
    chain(cpu_ctx(), Pick{false});
    chain(g, Pick{true});
    cuda_ok(cudaStreamSynchronize(st), "cudaStreamSynchronize");
    expect_close(tag("stream chain rmsnorm->matmul->CE loss", dt), loss, dt == kBF16 ? 2e-2 : 1e-5,
                 dt == kBF16 ? "bf16 intermediates (normed x, logits) rounded before the loss" : "fp32 chain");
  }
  cuda_ok(cudaStreamDestroy(st), "cudaStreamDestroy");
}
