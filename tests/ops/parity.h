#pragma once
// CPU-vs-CUDA parity tests for the ops of lib/ops/ops.h (issue 5). Header-only; every GPU test binary of
// tests/ops includes it and gets main() from tests/ops/main.cpp (skips with 77 when there is no GPU).
//
// The pattern: build exact host values (Values), make a Twin of each tensor — the CPU side holds the values
// rounded through the device dtype (so bf16 inputs are the same numbers on both sides) in f64 (or f32), the CUDA
// side holds them in f32 or bf16 inside a guarded allocation — run the op on both sides with run_both(), then
// expect_close() each output with a stated tolerance and the reason for it. expect_close() also checks the
// guard bytes around the device tensor (catches out-of-bounds writes) and that the tensor is finite where the
// reference is.
//
//   for (DType dt : {DType::f32, DType::bf16}) {
//     Twin x = twin(dt, randu({M, K}, 1)), w = twin(dt, randu({N, K}, 2)), out = twin_out(dt, {M, N});
//     run_both([&](const Context& c, Pick p) { matmul_forward(c, p(out), p(x), p(w)); });
//     expect_close("matmul_forward", out, tol_for(dt), "fp32 accumulation; bf16: output rounding <= 2^-8");
//   }
//
// Error measure (stated once): norm_err = max_i |got_i - ref_i| / max(max_i |ref_i|, tiny), the error relative
// to the tensor's scale; rel_err = max_i |got_i - ref_i| / max(|ref_i|, floor) (per element, floor = 1e-3 of the
// scale) is printed for information. Tolerances compare against norm_err.
#if __has_include(<catch2/catch.hpp>)
#include <catch2/catch.hpp>  // Catch2 v2 (Debian 12)
#else
#include <catch2/catch_all.hpp>  // Catch2 v3 (the GPU machine's image)
#endif

#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "ops/ops.h"
#include "tensor/arena.h"

namespace ds::parity {

// ---- values -------------------------------------------------------------------------------------------

// Exact host values with a shape (row-major). The numbers a test starts from.
struct Values {
  std::vector<int64_t> shape;
  std::vector<double> v;
  int64_t numel() const { return int64_t(v.size()); }
};

inline int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Uniform in [lo, hi), seeded (mt19937_64), reproducible across machines.
inline Values randu(const std::vector<int64_t>& shape, uint64_t seed, double lo = -1, double hi = 1) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> d(lo, hi);
  Values x{shape, std::vector<double>(size_t(numel_of(shape)))};
  for (double& e : x.v) e = d(rng);
  return x;
}

// Normal(mean, stddev), seeded.
inline Values randn(const std::vector<int64_t>& shape, uint64_t seed, double stddev = 1, double mean = 0) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> d(mean, stddev);
  Values x{shape, std::vector<double>(size_t(numel_of(shape)))};
  for (double& e : x.v) e = d(rng);
  return x;
}

inline Values constant(const std::vector<int64_t>& shape, double value) {
  return Values{shape, std::vector<double>(size_t(numel_of(shape)), value)};
}

// Integers uniform in [lo, hi), seeded (token ids, targets, positions, expert ids).
inline std::vector<int32_t> rand_ints(int64_t n, uint64_t seed, int32_t lo, int32_t hi) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int32_t> d(lo, hi - 1);
  std::vector<int32_t> v(static_cast<size_t>(n));
  for (int32_t& e : v) e = d(rng);
  return v;
}

// What a value becomes when stored in dt (f32: nearest float; bf16: round-to-nearest-even of the f32, as
// tensor.h's f32_to_bf16 and the device's __float2bfloat16_rn do; f64: itself).
inline double round_to(DType dt, double x) {
  switch (dt) {
    case DType::f64: return x;
    case DType::f32: return double(float(x));
    case DType::bf16: return double(bf16_to_f32(f32_to_bf16(float(x))));
    default: return x;
  }
}
inline Values rounded(DType dt, Values x) {
  for (double& e : x.v) e = round_to(dt, e);
  return x;
}

// ---- CPU tensors --------------------------------------------------------------------------------------

// A CPU tensor that owns its storage; converts to Tensor.
struct HostTensor {
  std::shared_ptr<std::vector<uint64_t>> mem;
  Tensor t;
  operator Tensor() const { return t; }
  std::vector<double> values() const { return t.empty() ? std::vector<double>{} : to_host_f64(t); }
};

inline HostTensor host_zeros(DType dt, const std::vector<int64_t>& shape) {
  HostTensor h;
  const Tensor probe(nullptr, dt, shape);
  h.mem = std::make_shared<std::vector<uint64_t>>((probe.nbytes() + 7) / 8 + 1, 0);
  h.t = Tensor(h.mem->data(), dt, shape);
  return h;
}
inline HostTensor host(DType dt, const Values& x) {
  HostTensor h = host_zeros(dt, x.shape);
  from_host(h.t, x.v);
  return h;
}
inline HostTensor host_ints(const std::vector<int64_t>& shape, const std::vector<int32_t>& v) {
  HostTensor h = host_zeros(DType::i32, shape);
  from_host(h.t, v);
  return h;
}

// ---- guarded device tensors ---------------------------------------------------------------------------

inline void cuda_ok(cudaError_t e, const char* what) {
  if (e != cudaSuccess) FAIL(std::string(what) + ": " + cudaGetErrorString(e));
}
// Waits for the device and fails the test on an asynchronous kernel error (illegal address, ...).
inline void device_sync(int device = 0) {
  cuda_ok(cudaSetDevice(device), "cudaSetDevice");
  cuda_ok(cudaDeviceSynchronize(), "cudaDeviceSynchronize (a kernel failed)");
  cuda_ok(cudaGetLastError(), "cudaGetLastError");
}

constexpr size_t kGuardBytes = 256;     // canary bytes on each side of a device tensor (keeps 256-byte alignment)
constexpr unsigned char kCanary = 0xA7;  // no f32/bf16 value an op would write has only this byte

// A device tensor inside one allocation [guard | data (+ misalign) | guard]. The guards hold kCanary; a write
// out of bounds changes them. Move-only; frees on destruction.
class DevTensor {
 public:
  DevTensor() = default;
  DevTensor(DType dt, const std::vector<int64_t>& shape, Device dev = Device{DeviceKind::cuda, 0},
            size_t misalign_bytes = 0)
      : dev_(dev) {
    const Tensor probe(nullptr, dt, shape);
    data_bytes_ = probe.nbytes();
    lead_ = kGuardBytes + misalign_bytes;
    total_ = lead_ + data_bytes_ + kGuardBytes;
    base_ = device_alloc(dev, total_);
    std::vector<unsigned char> canary(total_, kCanary);
    device_copy(dev, base_, Device{}, canary.data(), total_);
    t = Tensor(static_cast<char*>(base_) + lead_, dt, shape, dev);
  }
  DevTensor(DevTensor&& o) noexcept { *this = std::move(o); }
  DevTensor& operator=(DevTensor&& o) noexcept {
    if (this != &o) {
      release();
      t = o.t;
      dev_ = o.dev_;
      base_ = std::exchange(o.base_, nullptr);
      lead_ = o.lead_;
      data_bytes_ = o.data_bytes_;
      total_ = o.total_;
      o.t = Tensor{};
    }
    return *this;
  }
  DevTensor(const DevTensor&) = delete;
  DevTensor& operator=(const DevTensor&) = delete;
  ~DevTensor() { release(); }

  operator Tensor() const { return t; }
  bool empty() const { return base_ == nullptr; }
  std::vector<double> values() const { return t.empty() ? std::vector<double>{} : to_host_f64(t); }
  std::vector<int64_t> ints() const { return to_host_i64(t); }

  // Number of guard bytes that no longer hold the canary (0 = intact). Synchronises the device first.
  size_t guard_damage() const {
    if (empty()) return 0;
    device_sync(dev_.index);
    std::vector<unsigned char> h(total_);
    device_copy(Device{}, h.data(), dev_, base_, total_);
    size_t bad = 0;
    for (size_t i = 0; i < kGuardBytes; ++i) bad += h[i] != kCanary;
    for (size_t i = lead_ + data_bytes_; i < total_; ++i) bad += h[i] != kCanary;
    return bad;
  }

  Tensor t;

 private:
  void release() {
    if (base_) device_free(dev_, base_);
    base_ = nullptr;
  }
  Device dev_{};
  void* base_ = nullptr;
  size_t lead_ = 0, data_bytes_ = 0, total_ = 0;
};

// Device tensor holding x converted to dt (bf16 rounds to nearest even). misalign_bytes shifts the data
// pointer off the 256-byte boundary (tests unaligned views; keep it a multiple of the element size).
inline DevTensor dev(DType dt, const Values& x, size_t misalign_bytes = 0) {
  DevTensor d(dt, x.shape, Device{DeviceKind::cuda, 0}, misalign_bytes);
  from_host(d.t, x.v);
  return d;
}
inline DevTensor dev_ints(const std::vector<int64_t>& shape, const std::vector<int32_t>& v) {
  DevTensor d(DType::i32, shape);
  from_host(d.t, v);
  return d;
}
// Poisoned device output: every element NaN (float) or 0x7fffffff-ish junk (ints), so an element the op
// forgets to write shows up.
inline DevTensor dev_poisoned(DType dt, const std::vector<int64_t>& shape) {
  DevTensor d(dt, shape);
  const size_t n = d.t.nbytes();
  std::vector<unsigned char> junk(n, 0xFF);  // 0xFFFF... is a NaN in f32, f64 and bf16; -1 in ints
  device_copy(d.t.device, d.t.data, Device{}, junk.data(), n);
  return d;
}

// ---- twins: the same tensor on both sides -------------------------------------------------------------

// ref: CPU tensor in ref_dtype (f64 by default) holding the values rounded through dev_dtype;
// dev: guarded CUDA tensor in dev_dtype. An empty Twin stands for an absent optional tensor.
struct Twin {
  HostTensor ref;
  DevTensor dev;
  DType dev_dtype = DType::f32;
  bool present = false;
};

inline Twin twin(DType dev_dtype, const Values& x, DType ref_dtype = DType::f64, size_t misalign_bytes = 0) {
  Twin t;
  t.dev_dtype = dev_dtype;
  t.present = true;
  t.ref = host(ref_dtype, rounded(dev_dtype, x));
  t.dev = dev(dev_dtype, x, misalign_bytes);
  return t;
}
// An output overwritten by the op: the device side is poisoned (NaN), the reference zero.
inline Twin twin_out(DType dev_dtype, const std::vector<int64_t>& shape, DType ref_dtype = DType::f64) {
  Twin t;
  t.dev_dtype = dev_dtype;
  t.present = true;
  t.ref = host_zeros(ref_dtype, shape);
  t.dev = dev_poisoned(dev_dtype, shape);
  return t;
}
inline Twin twin_ints(const std::vector<int64_t>& shape, const std::vector<int32_t>& v) {
  Twin t;
  t.dev_dtype = DType::i32;
  t.present = true;
  t.ref = host_ints(shape, v);
  t.dev = dev_ints(shape, v);
  return t;
}
inline Twin twin_i64_zeros(const std::vector<int64_t>& shape) {
  Twin t;
  t.dev_dtype = DType::i64;
  t.present = true;
  t.ref = host_zeros(DType::i64, shape);
  t.dev = DevTensor(DType::i64, shape);
  std::vector<int64_t> z(size_t(numel_of(shape)), 0);
  device_copy(t.dev.t.device, t.dev.t.data, Device{}, z.data(), t.dev.t.nbytes());
  return t;
}
inline Twin none() { return Twin{}; }

inline Context cpu_ctx() { return Context{}; }
inline Context cuda_ctx(int device = 0) {
  Context c;
  c.device = Device{DeviceKind::cuda, device};
  return c;
}

// Picks a twin's side inside run_both's callable.
struct Pick {
  bool cuda = false;
  Tensor operator()(const Twin& t) const {
    if (!t.present) return Tensor{};
    return cuda ? t.dev.t : t.ref.t;
  }
};

// Runs f(ctx, pick) on the CPU (reference) and then on CUDA device 0, and waits for the device.
template <class F> void run_both(F&& f) {
  f(cpu_ctx(), Pick{false});
  f(cuda_ctx(), Pick{true});
  device_sync();
}

// ---- comparison ---------------------------------------------------------------------------------------

struct Err {
  double max_abs = 0;   // max |got - ref|
  double scale = 0;     // max |ref|
  double norm = 0;      // max_abs / max(scale, tiny)
  double max_rel = 0;   // max |got - ref| / max(|ref|, 1e-3 * scale)
  int64_t worst = -1;   // index of max_abs
  int64_t nonfinite = 0;  // elements non-finite in got but finite in ref (or the reverse)
};

inline Err compare(const std::vector<double>& got, const std::vector<double>& ref, double tiny = 1e-30) {
  Err e;
  REQUIRE(got.size() == ref.size());
  for (double r : ref)
    if (std::isfinite(r)) e.scale = std::max(e.scale, std::abs(r));
  const double floor = std::max(1e-3 * e.scale, tiny);
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isfinite(got[i]) != std::isfinite(ref[i])) {
      ++e.nonfinite;
      continue;
    }
    if (!std::isfinite(ref[i])) continue;  // both non-finite: compared as equal (inf/-inf/NaN classes not kept)
    const double d = std::abs(got[i] - ref[i]);
    if (d > e.max_abs) {
      e.max_abs = d;
      e.worst = int64_t(i);
    }
    e.max_rel = std::max(e.max_rel, d / std::max(std::abs(ref[i]), floor));
  }
  e.norm = e.max_abs / std::max(e.scale, tiny);
  return e;
}

// Prints one line (the numbers quoted in reports) and checks norm_err <= tol, no non-finite mismatch.
inline Err expect_close_values(const std::string& what, const std::vector<double>& got, const std::vector<double>& ref,
                               double tol, const std::string& reason) {
  const Err e = compare(got, ref);
  std::printf("parity %-48s norm_err %.3e (tol %.1e)  max_abs %.3e  scale %.3e  max_rel %.3e  n %zu  [%s]\n",
              what.c_str(), e.norm, tol, e.max_abs, e.scale, e.max_rel, got.size(), reason.c_str());
  std::fflush(stdout);
  INFO(what << ": norm_err " << e.norm << " > tol " << tol << " (" << reason << "); worst index " << e.worst
            << (e.worst >= 0 ? " got " + std::to_string(got[size_t(e.worst)]) + " ref " +
                                   std::to_string(ref[size_t(e.worst)])
                             : std::string()));
  CHECK(e.nonfinite == 0);
  CHECK(e.norm <= tol);
  return e;
}

// Checks the guards of a device tensor (out-of-bounds writes).
inline void expect_guards(const std::string& what, const DevTensor& d) {
  const size_t bad = d.guard_damage();
  INFO(what << ": " << bad << " guard bytes overwritten (out-of-bounds write)");
  CHECK(bad == 0);
}

// Compares a twin's device side against its CPU side, and checks its guards.
inline Err expect_close(const std::string& what, const Twin& t, double tol, const std::string& reason) {
  expect_guards(what, t.dev);
  return expect_close_values(what, t.dev.values(), t.ref.values(), tol, reason);
}

// Index tensors must agree exactly.
inline void expect_equal_ints(const std::string& what, const Twin& t) {
  expect_guards(what, t.dev);
  const std::vector<int64_t> got = to_host_i64(t.dev.t), ref = to_host_i64(t.ref.t);
  int64_t diff = 0;
  for (size_t i = 0; i < got.size(); ++i) diff += got[i] != ref[i];
  std::printf("parity %-48s %lld of %zu indices differ\n", what.c_str(), (long long)diff, got.size());
  CHECK(diff == 0);
}

// Two device results that must hold the same bits (a second run, or the same op with another launch strategy).
inline void expect_same_bits(const std::string& what, const DevTensor& a, const DevTensor& b) {
  expect_guards(what, b);
  const std::vector<double> x = a.values(), y = b.values();
  int64_t diff = x.size() == y.size() ? 0 : -1;
  for (size_t i = 0; diff >= 0 && i < x.size(); ++i) diff += std::memcmp(&x[i], &y[i], sizeof(double)) != 0;
  std::printf("bits   %-48s %lld of %zu values differ\n", what.c_str(), (long long)diff, x.size());
  CHECK(diff == 0);
}

// Scalars (reductions to the host).
inline void expect_close_scalar(const std::string& what, double got, double ref, double tol, const std::string& reason) {
  expect_close_values(what, {got}, {ref}, tol, reason);
}

// Expects f() to throw a std::exception whose message contains every fragment.
template <class F> void expect_error(F&& f, std::initializer_list<const char*> fragments) {
  try {
    f();
    FAIL("no error thrown");
  } catch (const std::exception& e) {
    INFO(e.what());
    for (const char* s : fragments) CHECK(std::string(e.what()).find(s) != std::string::npos);
  }
}

// The DeepSeek-V3-sized cases run unless DS_PARITY_SMALL is set (e.g. under compute-sanitizer, which is slow).
inline bool run_big() { return std::getenv("DS_PARITY_SMALL") == nullptr; }

// ---- tolerances ---------------------------------------------------------------------------------------

// Default tolerance on norm_err for an op whose device output is stored in dt, computed with fp32
// accumulation over `terms` products. f32: a few ulps times sqrt(terms) growth; bf16: the output rounding
// (bf16 keeps 8 significant bits: |error| <= 2^-8 = 3.9e-3 of the value) dominates, with headroom for a bf16
// input of an accumulation.
inline double tol_for(DType out_dtype, int64_t terms = 1) {
  const double k = std::sqrt(double(std::max<int64_t>(terms, 1)));
  if (out_dtype == DType::bf16) return 8e-3 + 1e-6 * k;
  return 2e-6 + 2e-7 * k;
}

inline const char* name(DType dt) { return dtype_name(dt); }

// Milliseconds between two events recorded on `stream` around f() (which queues its work there), waited for.
// For the hidden [.bench] timing cases, not for assertions.
template <class F> double events_ms(F&& f, cudaStream_t stream = nullptr) {
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  cudaEventRecord(e0, stream);
  f();
  cudaEventRecord(e1, stream);
  cudaEventSynchronize(e1);
  float ms = 0;
  cudaEventElapsedTime(&ms, e0, e1);
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  return double(ms);
}

// The median of 9 events_ms timings of f after 3 warm-up calls (the [bench] timing cases).
template <class F> double median_ms(F&& f) {
  for (int i = 0; i < 3; ++i) f();
  device_sync();
  std::vector<double> ms;
  for (int r = 0; r < 9; ++r) ms.push_back(events_ms(f));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Microseconds a call of f in a chain of 200 on the default stream (each launch waits for the one before, as in a
// decode graph; with PDL the next one is resident and waiting): median of 5 chains after 20 warm-up calls.
template <class F> double chain_us(F&& f) {
  constexpr int kChain = 200;
  for (int i = 0; i < 20; ++i) f();
  device_sync();
  std::vector<double> us;
  for (int r = 0; r < 5; ++r)
    us.push_back(events_ms([&] {
                   for (int i = 0; i < kChain; ++i) f();
                 }) *
                 1000.0 / kChain);
  std::sort(us.begin(), us.end());
  return us[us.size() / 2];
}

}  // namespace ds::parity
