// RMSNorm over the last dim and rotary embedding (interleaved pairs).
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

// out = w * (x * rstd); rstd = 1/sqrt(mean(x^2) + eps), the mean taken in double. rstd may be empty.
void rmsnorm_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, Tensor weight, double eps) {
  dispatch_float(out.dtype, "rmsnorm_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t rows = in.rows(), D = in.cols();
    const T* px = in.ptr<T>();
    const T* pw = weight.ptr<T>();
    T* po = out.ptr<T>();
    T* pr = rstd.empty() ? nullptr : rstd.ptr<T>();  // inference may skip the saved statistic
#pragma omp parallel for num_threads(threads_for(ctx, rows * D)) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* x = px + r * D;
      double ss = 0.0;
      for (int64_t c = 0; c < D; ++c) ss += double(x[c]) * double(x[c]);
      const T rs = T(1.0 / std::sqrt(ss / double(D) + eps));
      if (pr) pr[r] = rs;
      T* y = po + r * D;
      for (int64_t c = 0; c < D; ++c) y[c] = pw[c] * (x[c] * rs);
    }
  });
}

// With g = dy * w and r = rstd:  dx = r * g - r^3 * x * (g · x) / D;  dw += sum_rows dy * x * r.
void rmsnorm_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                      Tensor rstd, Accum acc_in) {
  dispatch_float(d_out.dtype, "rmsnorm_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t rows = in.rows(), D = in.cols();
    const T* px = in.ptr<T>();
    const T* pw = weight.ptr<T>();
    const T* pdy = d_out.ptr<T>();
    const T* pr = rstd.ptr<T>();
    const int nt = threads_for(ctx, rows * D);
    if (!d_in.empty()) {
      T* pdx = d_in.ptr<T>();
      const bool add = acc_in == Accum::add;
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const T* x = px + r * D;
        const T* dy = pdy + r * D;
        double gx = 0.0;
        for (int64_t c = 0; c < D; ++c) gx += double(dy[c]) * double(pw[c]) * double(x[c]);
        const double rs = double(pr[r]);
        const double k = rs * rs * rs * gx / double(D);
        T* dx = pdx + r * D;
        for (int64_t c = 0; c < D; ++c) {
          const T v = T(rs * double(dy[c]) * double(pw[c]) - k * double(x[c]));
          dx[c] = add ? dx[c] + v : v;
        }
      }
    }
    if (!d_weight.empty()) {
      // Threads split the columns and walk the rows in order: the sum order per column is fixed.
      T* pdw = d_weight.ptr<T>();
      constexpr int64_t kBlock = 64;
      const int64_t nblocks = (D + kBlock - 1) / kBlock;
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t c0 = b * kBlock, c1 = std::min(D, c0 + kBlock);
        double acc[kBlock] = {};
        for (int64_t r = 0; r < rows; ++r) {
          const double rs = double(pr[r]);
          for (int64_t c = c0; c < c1; ++c) acc[c - c0] += double(pdy[r * D + c]) * double(px[r * D + c]) * rs;
        }
        for (int64_t c = c0; c < c1; ++c) pdw[c] += T(acc[c - c0]);
      }
    }
  });
}

namespace {

// Rotates every interleaved pair of x [N, H, R] by +angle (sign = 1) or -angle (sign = -1), scaled by f.
// y may alias x. Angles are computed in double, once per (token, pair).
template <class T>
void rotate(const Context& ctx, T* y, const T* x, const int32_t* pos, const T* inv_freq, int64_t N, int64_t H,
            int64_t R, double f, double sign, bool add) {
  const int64_t P = R / 2;
#pragma omp parallel for num_threads(threads_for(ctx, N * H * R)) schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    std::vector<T> cs(static_cast<size_t>(P)), sn(static_cast<size_t>(P));
    for (int64_t i = 0; i < P; ++i) {
      const double ang = double(pos[n]) * double(inv_freq[i]);
      cs[size_t(i)] = T(f * std::cos(ang));
      sn[size_t(i)] = T(sign * f * std::sin(ang));
    }
    for (int64_t h = 0; h < H; ++h) {
      const T* xr = x + (n * H + h) * R;
      T* yr = y + (n * H + h) * R;
      for (int64_t i = 0; i < P; ++i) {
        const T x0 = xr[2 * i], x1 = xr[2 * i + 1], c = cs[size_t(i)], s = sn[size_t(i)];
        const T y0 = x0 * c - x1 * s, y1 = x0 * s + x1 * c;
        if (add) {
          yr[2 * i] += y0;
          yr[2 * i + 1] += y1;
        } else {
          yr[2 * i] = y0;
          yr[2 * i + 1] = y1;
        }
      }
    }
  }
}

}  // namespace

void rope_forward(const Context& ctx, Tensor out, Tensor in, Tensor pos, Tensor inv_freq, double attn_factor) {
  dispatch_float(out.dtype, "rope_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = pos.numel(), R = in.cols(), H = N ? in.rows() / N : 0;
    rotate<T>(ctx, out.ptr<T>(), in.ptr<T>(), pos.ptr<int32_t>(), inv_freq.ptr<T>(), N, H, R, attn_factor, 1.0,
              false);
  });
}

// The transpose of a rotation by +angle is the rotation by -angle (same scale f).
void rope_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor pos, Tensor inv_freq, double attn_factor,
                   Accum acc) {
  dispatch_float(d_in.dtype, "rope_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = pos.numel(), R = d_out.cols(), H = N ? d_out.rows() / N : 0;
    rotate<T>(ctx, d_in.ptr<T>(), d_out.ptr<T>(), pos.ptr<int32_t>(), inv_freq.ptr<T>(), N, H, R, attn_factor, -1.0,
              acc == Accum::add);
  });
}

}  // namespace ds::cpu
