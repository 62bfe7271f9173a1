// Elementwise ops, conversions, column copies, reductions to the host, SwiGLU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/cpu/cpu_ops.h"
#include "tensor/arena.h"

namespace ds::cpu {

namespace {

inline double to_double(float x) { return x; }
inline double to_double(double x) { return x; }
inline double to_double(bf16 x) { return bf16_to_f32(x); }

template <class T> T from_double(double x);
template <> float from_double<float>(double x) { return float(x); }
template <> double from_double<double>(double x) { return x; }
template <> bf16 from_double<bf16>(double x) { return f32_to_bf16(float(x)); }  // via f32, as tensor.h rounds
template <> int32_t from_double<int32_t>(double x) { return int32_t(x); }
template <> int64_t from_double<int64_t>(double x) { return int64_t(x); }

template <class T> void fill_t(const Context& ctx, Tensor t, double value) {
  T* p = t.ptr<T>();
  const T v = from_double<T>(value);
  const int64_t n = t.numel();
#pragma omp parallel for num_threads(threads_for(ctx, n)) schedule(static)
  for (int64_t i = 0; i < n; ++i) p[i] = v;
}

template <class D, class S> void convert(const Context& ctx, D* dst, const S* src, int64_t n) {
#pragma omp parallel for num_threads(threads_for(ctx, n)) schedule(static)
  for (int64_t i = 0; i < n; ++i) dst[i] = from_double<D>(to_double(src[i]));
}

template <class D> void convert_from(const Context& ctx, D* dst, Tensor src) {
  const int64_t n = src.numel();
  switch (src.dtype) {
    case DType::f32: return convert(ctx, dst, src.ptr<float>(), n);
    case DType::f64: return convert(ctx, dst, src.ptr<double>(), n);
    case DType::bf16: return convert(ctx, dst, src.ptr<bf16>(), n);
    default: throw_runtime(std::string("copy: cannot convert from ") + dtype_name(src.dtype));
  }
}

// Sum of f(x) over t: fixed chunks of kReduceChunk, each summed in double, chunk sums added in order.
template <class T, class F> double reduce(const Context& ctx, const T* p, int64_t n, F f) {
  const int64_t nchunks = (n + kReduceChunk - 1) / kReduceChunk;
  std::vector<double> part(size_t(nchunks), 0.0);
#pragma omp parallel for num_threads(threads_for(ctx, n)) schedule(static)
  for (int64_t c = 0; c < nchunks; ++c) {
    const int64_t end = std::min(n, (c + 1) * kReduceChunk);
    double s = 0.0;
    for (int64_t i = c * kReduceChunk; i < end; ++i) s += f(to_double(p[i]));
    part[size_t(c)] = s;
  }
  double total = 0.0;
  for (double s : part) total += s;
  return total;
}

template <class F> double reduce_any(const Context& ctx, Tensor t, const char* op, F f) {
  switch (t.dtype) {
    case DType::f32: return reduce(ctx, t.ptr<float>(), t.numel(), f);
    case DType::f64: return reduce(ctx, t.ptr<double>(), t.numel(), f);
    case DType::bf16: return reduce(ctx, t.ptr<bf16>(), t.numel(), f);
    default: throw_runtime(std::string(op) + ": no CPU kernel for dtype " + dtype_name(t.dtype));
  }
}

template <class T> T sigmoid(T x) { return T(1) / (T(1) + std::exp(-x)); }

}  // namespace

void fill(const Context& ctx, Tensor t, double value) {
  switch (t.dtype) {
    case DType::f32: return fill_t<float>(ctx, t, value);
    case DType::f64: return fill_t<double>(ctx, t, value);
    case DType::bf16: return fill_t<bf16>(ctx, t, value);
    case DType::i32: return fill_t<int32_t>(ctx, t, value);
    case DType::i64: return fill_t<int64_t>(ctx, t, value);
    default: throw_runtime(std::string("fill: no CPU kernel for dtype ") + dtype_name(t.dtype));
  }
}

void scale(const Context& ctx, Tensor t, double alpha) {
  dispatch_float(t.dtype, "scale", [&](auto zero) {
    using T = decltype(zero);
    T* p = t.ptr<T>();
    const T a = T(alpha);
    const int64_t n = t.numel();
#pragma omp parallel for num_threads(threads_for(ctx, n)) schedule(static)
    for (int64_t i = 0; i < n; ++i) p[i] *= a;
  });
}

void axpy(const Context& ctx, Tensor y, double alpha, Tensor x) {
  dispatch_float(y.dtype, "axpy", [&](auto zero) {
    using T = decltype(zero);
    T* py = y.ptr<T>();
    const T* px = x.ptr<T>();
    const T a = T(alpha);
    const int64_t n = y.numel();
#pragma omp parallel for num_threads(threads_for(ctx, n)) schedule(static)
    for (int64_t i = 0; i < n; ++i) py[i] += a * px[i];
  });
}

void add(const Context& ctx, Tensor out, Tensor a, Tensor b) {
  dispatch_float(out.dtype, "add", [&](auto zero) {
    using T = decltype(zero);
    T* po = out.ptr<T>();
    const T* pa = a.ptr<T>();
    const T* pb = b.ptr<T>();
    const int64_t n = out.numel();
#pragma omp parallel for num_threads(threads_for(ctx, n)) schedule(static)
    for (int64_t i = 0; i < n; ++i) po[i] = pa[i] + pb[i];
  });
}

void copy(const Context& ctx, Tensor dst, Tensor src) {
  if (dst.dtype == src.dtype) {
    device_copy(dst.device, dst.data, src.device, src.data, dst.nbytes());
    return;
  }
  switch (dst.dtype) {
    case DType::f32: return convert_from(ctx, dst.ptr<float>(), src);
    case DType::f64: return convert_from(ctx, dst.ptr<double>(), src);
    case DType::bf16: return convert_from(ctx, dst.ptr<bf16>(), src);
    default: throw_runtime(std::string("copy: cannot convert to ") + dtype_name(dst.dtype));
  }
}

void copy_cols(const Context& ctx, Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t ncols,
               Accum acc) {
  const int64_t rows = dst.rows(), dc = dst.cols(), sc = src.cols();
  if (acc == Accum::overwrite) {
    // Any dtype: a byte copy per row.
    const size_t es = dtype_size(dst.dtype);
    char* pd = static_cast<char*>(dst.data);
    const char* ps = static_cast<const char*>(src.data);
#pragma omp parallel for num_threads(threads_for(ctx, rows * ncols)) schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      std::memcpy(pd + size_t(r * dc + dst_col) * es, ps + size_t(r * sc + src_col) * es, size_t(ncols) * es);
    return;
  }
  dispatch_float(dst.dtype, "copy_cols", [&](auto zero) {
    using T = decltype(zero);
    T* pd = dst.ptr<T>();
    const T* ps = src.ptr<T>();
#pragma omp parallel for num_threads(threads_for(ctx, rows * ncols)) schedule(static)
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < ncols; ++c) pd[r * dc + dst_col + c] += ps[r * sc + src_col + c];
  });
}

void copy_cols_repeat(const Context& ctx, Tensor dst, int64_t dst_col, int64_t stride, int64_t copies, Tensor src,
                      int64_t src_col, int64_t ncols) {
  for (int64_t j = 0; j < copies; ++j)
    cpu::copy_cols(ctx, dst, dst_col + j * stride, src, src_col, ncols, Accum::overwrite);
}

void sum_cols_repeat(const Context& ctx, Tensor dst, int64_t dst_col, Tensor src, int64_t src_col, int64_t stride,
                     int64_t copies, int64_t ncols, Accum acc) {
  const int64_t rows = dst.rows(), dc = dst.cols(), sc = src.cols();
  dispatch_float(dst.dtype, "sum_cols_repeat", [&](auto zero) {
    using T = decltype(zero);  // f32 sums in f32, f64 in f64: the bits of the copy_cols loop it replaces
    T* pd = dst.ptr<T>();
    const T* ps = src.ptr<T>();
#pragma omp parallel for num_threads(threads_for(ctx, rows * ncols * copies)) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      T* d = pd + r * dc + dst_col;
      const T* s = ps + r * sc + src_col;
      for (int64_t c = 0; c < ncols; ++c) {
        // Block 0 starts the sum (not 0 + block 0, which would turn a -0 into +0): the loop's bits exactly.
        T v = acc == Accum::add ? d[c] + s[c] : s[c];
        for (int64_t j = 1; j < copies; ++j) v += s[j * stride + c];
        d[c] = v;
      }
    }
  });
}

double sum(const Context& ctx, Tensor t) {
  return reduce_any(ctx, t, "sum", [](double x) { return x; });
}

double sum_squares(const Context& ctx, Tensor t) {
  return reduce_any(ctx, t, "sum_squares", [](double x) { return x * x; });
}

std::vector<double> sum_squares_each(const Context& ctx, const std::vector<Tensor>& ts) {
  std::vector<double> r;
  for (const Tensor& t : ts) r.push_back(cpu::sum_squares(ctx, t));
  return r;
}

void sum_squares_into(const Context& ctx, Tensor out, const std::vector<Tensor>& ts) {
  double* o = out.ptr<double>();
  for (size_t i = 0; i < ts.size(); ++i) o[i] = cpu::sum_squares(ctx, ts[i]);
}

void sum_into(const Context& ctx, Tensor out, Tensor t) { out.ptr<double>()[0] = cpu::sum(ctx, t); }

bool all_finite(const Context& ctx, Tensor t) {
  return std::isfinite(reduce_any(ctx, t, "all_finite", [](double x) { return std::isfinite(x) ? 0.0 : x; }));
}

void swiglu_forward(const Context& ctx, Tensor out, Tensor gate, Tensor up) {
  dispatch_float(out.dtype, "swiglu_forward", [&](auto zero) {
    using T = decltype(zero);
    T* po = out.ptr<T>();
    const T* pg = gate.ptr<T>();
    const T* pu = up.ptr<T>();
    const int64_t n = out.numel();
#pragma omp parallel for num_threads(threads_for(ctx, n)) schedule(static)
    for (int64_t i = 0; i < n; ++i) po[i] = pg[i] * sigmoid(pg[i]) * pu[i];
  });
}

namespace {
// out = g * sig(g) * u:  d_gate = d_out * u * sig(g) * (1 + g * (1 - sig(g))),  d_up = d_out * g * sig(g).
// One element, shared by swiglu_backward and swiglu_pair_backward (the same arithmetic, so the same bits).
template <class T> inline void swiglu_bwd1(T dy, T g, T u, T* dg, T* du) {
  const T s = sigmoid(g);
  if (dg) *dg = dy * u * s * (T(1) + g * (T(1) - s));
  if (du) *du = dy * g * s;
}
}  // namespace

void swiglu_backward(const Context& ctx, Tensor d_gate, Tensor d_up, Tensor d_out, Tensor gate, Tensor up) {
  dispatch_float(d_out.dtype, "swiglu_backward", [&](auto zero) {
    using T = decltype(zero);
    T* pdg = d_gate.empty() ? nullptr : d_gate.ptr<T>();
    T* pdu = d_up.empty() ? nullptr : d_up.ptr<T>();
    const T* pdo = d_out.ptr<T>();
    const T* pg = gate.ptr<T>();
    const T* pu = up.ptr<T>();
    const int64_t n = d_out.numel();
#pragma omp parallel for num_threads(threads_for(ctx, n)) schedule(static)
    for (int64_t i = 0; i < n; ++i) swiglu_bwd1(pdo[i], pg[i], pu[i], pdg ? pdg + i : nullptr, pdu ? pdu + i : nullptr);
  });
}

// Row r of gate_up is [g | u] (F each), of d_gate_up [d_g | d_u].
void swiglu_pair_backward(const Context& ctx, Tensor d_gate_up, Tensor d_out, Tensor gate_up) {
  dispatch_float(d_out.dtype, "swiglu_pair_backward", [&](auto zero) {
    using T = decltype(zero);
    T* pd = d_gate_up.ptr<T>();
    const T* pdo = d_out.ptr<T>();
    const T* pgu = gate_up.ptr<T>();
    const int64_t N = d_out.rows(), F = d_out.cols();
#pragma omp parallel for num_threads(threads_for(ctx, N * F)) schedule(static)
    for (int64_t r = 0; r < N; ++r) {
      const T* gu = pgu + r * 2 * F;
      T* d = pd + r * 2 * F;
      for (int64_t c = 0; c < F; ++c) swiglu_bwd1(pdo[r * F + c], gu[c], gu[F + c], d + c, d + F + c);
    }
  });
}

}  // namespace ds::cpu
