// RMSNorm over the last dim and rotary embedding (interleaved pairs).
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

namespace {

// The row loops of RMSNorm over the D columns from x_col of in's rows (row length ldx) and of d_in's (ldd); out and
// d_out are [rows, D]. The whole-tensor ops pass ld = D, col = 0; the *_cols ops read / write a column block.

// out = w * (x * rstd); rstd = 1/sqrt(mean(x^2) + eps), the mean taken in double. rstd may be empty.
void rmsnorm_fwd(const Context& ctx, Tensor out, Tensor rstd, const Tensor& in, int64_t ldx, int64_t x_col,
                 Tensor weight, double eps) {
  dispatch_float(out.dtype, "rmsnorm_forward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t rows = in.rows(), D = weight.numel();
    const T* px = in.ptr<T>() + x_col;
    const T* pw = weight.ptr<T>();
    T* po = out.ptr<T>();
    T* pr = rstd.empty() ? nullptr : rstd.ptr<T>();  // inference may skip the saved statistic
#pragma omp parallel for num_threads(threads_for(ctx, rows * D)) schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const T* x = px + r * ldx;
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
void rmsnorm_bwd(const Context& ctx, Tensor d_in, int64_t ldd, int64_t d_col, Tensor d_weight, Tensor d_out,
                 const Tensor& in, int64_t ldx, int64_t x_col, Tensor weight, Tensor rstd, Accum acc_in) {
  dispatch_float(d_out.dtype, "rmsnorm_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t rows = d_out.rows(), D = weight.numel();
    const T* px = in.ptr<T>() + x_col;
    const T* pw = weight.ptr<T>();
    const T* pdy = d_out.ptr<T>();
    const T* pr = rstd.ptr<T>();
    const int nt = threads_for(ctx, rows * D);
    if (!d_in.empty()) {
      T* pdx = d_in.ptr<T>() + d_col;
      const bool add = acc_in == Accum::add;
#pragma omp parallel for num_threads(nt) schedule(static)
      for (int64_t r = 0; r < rows; ++r) {
        const T* x = px + r * ldx;
        const T* dy = pdy + r * D;
        double gx = 0.0;
        for (int64_t c = 0; c < D; ++c) gx += double(dy[c]) * double(pw[c]) * double(x[c]);
        const double rs = double(pr[r]);
        const double k = rs * rs * rs * gx / double(D);
        T* dx = pdx + r * ldd;
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
          for (int64_t c = c0; c < c1; ++c) acc[c - c0] += double(pdy[r * D + c]) * double(px[r * ldx + c]) * rs;
        }
        for (int64_t c = c0; c < c1; ++c) pdw[c] += T(acc[c - c0]);
      }
    }
  });
}

}  // namespace

void rmsnorm_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, Tensor weight, double eps) {
  rmsnorm_fwd(ctx, out, rstd, in, in.cols(), 0, weight, eps);
}

void rmsnorm_backward(const Context& ctx, Tensor d_in, Tensor d_weight, Tensor d_out, Tensor in, Tensor weight,
                      Tensor rstd, Accum acc_in) {
  rmsnorm_bwd(ctx, d_in, in.cols(), 0, d_weight, d_out, in, in.cols(), 0, weight, rstd, acc_in);
}

void rmsnorm_cols_forward(const Context& ctx, Tensor out, Tensor rstd, Tensor in, int64_t in_col, Tensor weight,
                          double eps) {
  rmsnorm_fwd(ctx, out, rstd, in, in.cols(), in_col, weight, eps);
}

void rmsnorm_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_weight, Tensor d_out, Tensor in,
                           int64_t in_col, Tensor weight, Tensor rstd, Accum acc_in) {
  rmsnorm_bwd(ctx, d_in, d_in.empty() ? 0 : d_in.cols(), d_in_col, d_weight, d_out, in, in.cols(), in_col, weight,
              rstd, acc_in);
}

namespace {

// Rotates every interleaved pair of the R columns of x [N, H, *] by +angle (sign = 1) or -angle (sign = -1), scaled
// by f. Head h of token n reads x[(n * H + h) * xs + xo ...] and writes y[(n * H + h) * ys + yo ...] (xs = ys = R,
// xo = yo = 0 for whole [N, H, R] tensors; the *_cols ops pass column blocks of wider rows). y may alias x when
// both address the same elements. Angles are computed in double, once per (token, pair).
template <class T>
void rotate(const Context& ctx, T* y, const T* x, const int32_t* pos, const T* inv_freq, int64_t N, int64_t H,
            int64_t R, double f, double sign, bool add, int64_t xs, int64_t xo, int64_t ys, int64_t yo) {
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
      const T* xr = x + (n * H + h) * xs + xo;
      T* yr = y + (n * H + h) * ys + yo;
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
              false, R, 0, R, 0);
  });
}

// The transpose of a rotation by +angle is the rotation by -angle (same scale f).
void rope_backward(const Context& ctx, Tensor d_in, Tensor d_out, Tensor pos, Tensor inv_freq, double attn_factor,
                   Accum acc) {
  dispatch_float(d_in.dtype, "rope_backward", [&](auto zero) {
    using T = decltype(zero);
    const int64_t N = pos.numel(), R = d_out.cols(), H = N ? d_out.rows() / N : 0;
    rotate<T>(ctx, d_in.ptr<T>(), d_out.ptr<T>(), pos.ptr<int32_t>(), inv_freq.ptr<T>(), N, H, R, attn_factor, -1.0,
              acc == Accum::add, R, 0, R, 0);
  });
}

// Column blocks of [N, H, W] views: the strided rotation reads and writes exactly the elements that copy_cols,
// rope_*, copy_cols would, with the same arithmetic, so the values are those of that sequence bit for bit.
void rope_cols_forward(const Context& ctx, Tensor out, int64_t out_col, Tensor in, int64_t in_col, Tensor pos,
                       Tensor inv_freq, double attn_factor) {
  dispatch_float(out.dtype, "rope_cols_forward", [&](auto zero) {
    using T = decltype(zero);
    rotate<T>(ctx, out.ptr<T>(), in.ptr<T>(), pos.ptr<int32_t>(), inv_freq.ptr<T>(), in.dim(0), in.dim(1),
              2 * inv_freq.numel(), attn_factor, 1.0, false, in.dim(2), in_col, out.dim(2), out_col);
  });
}

void rope_cols_backward(const Context& ctx, Tensor d_in, int64_t d_in_col, Tensor d_out, int64_t d_out_col, Tensor pos,
                        Tensor inv_freq, double attn_factor, Accum acc) {
  dispatch_float(d_in.dtype, "rope_cols_backward", [&](auto zero) {
    using T = decltype(zero);
    rotate<T>(ctx, d_in.ptr<T>(), d_out.ptr<T>(), pos.ptr<int32_t>(), inv_freq.ptr<T>(), d_out.dim(0), d_out.dim(1),
              2 * inv_freq.numel(), attn_factor, -1.0, acc == Accum::add, d_out.dim(2), d_out_col, d_in.dim(2),
              d_in_col);
  });
}

}  // namespace ds::cpu
