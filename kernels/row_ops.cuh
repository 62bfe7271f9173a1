#pragma once
// Row bodies shared by a kernel of their own (kernels/norm_rope.cu) and by the fused decode epilogues that run them
// in a GEMV's last block (kernels/decode_fused.cu): one code path, so fused and unfused give the same bits when the
// block sizes match. All threads of the block call them (block reductions inside). Inputs that a kernel of the same
// pass may have just written are read through L2 (__ldcg): in an epilogue other blocks of the grid wrote them.
#include "kernels/common.cuh"

namespace ds::cuda {

template <class T> __device__ __forceinline__ float ldf_l2(const T* p) { return ldf(__ldcg(p)); }

// sum = cvt(a + b), out = w * sum * rstd(sum) over one row of D.
template <class T>
__device__ void add_rmsnorm_row(T* sum, T* out, const T* a, const T* b, const T* w, int64_t D, float eps) {
  float ss = 0.0f;
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
    const T v = cvt<T>(ldf_l2(a + c) + ldf_l2(b + c));
    sum[c] = v;
    ss += ldf(v) * ldf(v);
  }
  ss = block_sum(ss);
  const float rs = 1.0f / sqrtf(ss / float(D) + eps);
  for (int64_t c = threadIdx.x; c < D; c += blockDim.x) out[c] = cvt<T>(ldf(w[c]) * (ldf(sum[c]) * rs));
}

// Threads of the latent step's block: the GEMV's (gemv.cuh), so mla_latent_kernel and the fused epilogue agree.
constexpr int kLatentThreads = 256;

// MLA's latent step for token i of a [n, Q + R + dr] (ops.h mla_latent_forward): q_latent[i] = rmsnorm(a[i, :Q]);
// pool[slot_rows[i]] = [rmsnorm(a[i, Q:Q+R]) ; RoPE(a[i, Q+R:])]. Slot rows outside the pool are skipped.
template <class T>
__device__ void mla_latent_row(int64_t i, T* q_latent, T* pool, int64_t slots, const int32_t* slot_rows, const T* a,
                               const T* q_norm, const T* kv_norm, const int32_t* pos, const float* inv_freq,
                               int64_t Q, int64_t R, int64_t dr, float eps, double f) {
  const int64_t W = Q + R + dr;
  const T* x = a + i * W;
  auto norm = [&](const T* src, int64_t D, const T* w, T* dst) {
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
      const float v = ldf_l2(src + c);
      ss += v * v;
    }
    ss = block_sum(ss);  // every thread calls it (the branch below is uniform over the block)
    const float rs = 1.0f / sqrtf(ss / float(D) + eps);
    if (dst)
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) dst[c] = cvt<T>(ldf(w[c]) * (ldf_l2(src + c) * rs));
  };
  if (Q > 0) norm(x, Q, q_norm, q_latent + i * Q);
  const int64_t row = slot_rows[i];
  T* dst = row >= 0 && row < slots ? pool + row * (R + dr) : nullptr;
  norm(x + Q, R, kv_norm, dst);
  if (!dst) return;
  for (int64_t p = threadIdx.x; p < dr / 2; p += blockDim.x) {
    double sd, cd;
    sincos(double(pos[i]) * double(inv_freq[p]), &sd, &cd);
    const float c = float(f * cd), s = float(f * sd);
    const float x0 = ldf_l2(x + Q + R + 2 * p), x1 = ldf_l2(x + Q + R + 2 * p + 1);
    dst[R + 2 * p] = cvt<T>(x0 * c - x1 * s);
    dst[R + 2 * p + 1] = cvt<T>(x0 * s + x1 * c);
  }
}

}  // namespace ds::cuda
