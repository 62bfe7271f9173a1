// Decode fusions through the GEMV's last block (gemv.cuh, arrive_last in common.cuh): the row-wise op after a
// few-row product runs in the grid's last block instead of a kernel of its own — one launch less each on a decode
// step's critical path. The epilogues are the standalone kernels' row bodies (row_ops.cuh), so the values are those
// of matmul_forward followed by the op (bit for bit where the block sizes agree: D with row_threads(D) = 256).
// Shapes the GEMV does not take (more rows, f32, misaligned) run the two ops one after the other.
// DS_DECODE_FUSED_GEMV=0 turns the fusion off (an A/B switch for benchmarks).
#include "kernels/common.cuh"
#include "kernels/cuda_ops.h"
#include "kernels/gemv.cuh"
#include "kernels/row_ops.cuh"

namespace ds::cuda {

namespace {

using namespace gemv_impl;

// sum = x + y, out = rmsnorm(sum) for the M rows of the product y.
struct AddNormTail {
  static constexpr bool kOn = true;
  unsigned* ticket;
  bf16_t* sum;
  bf16_t* out;
  const bf16_t* x;
  const bf16_t* y;
  const bf16_t* w;
  int M;
  int64_t D;
  float eps;
  __device__ void operator()() const {
    for (int m = 0; m < M; ++m) add_rmsnorm_row(sum + m * D, out + m * D, x + m * D, y + m * D, w, D, eps);
  }
};

// mla_latent_row for the M rows of the product a.
struct LatentTail {
  static constexpr bool kOn = true;
  unsigned* ticket;
  bf16_t* q_latent;
  bf16_t* pool;
  int64_t slots;
  const int32_t* slot_rows;
  const bf16_t* a;
  const bf16_t* q_norm;
  const bf16_t* kv_norm;
  const int32_t* pos;
  const float* inv_freq;
  int M;
  int64_t Q, R, dr;
  float eps;
  double f;
  __device__ void operator()() const {
    for (int m = 0; m < M; ++m)
      mla_latent_row(int64_t(m), q_latent, pool, slots, slot_rows, a, q_norm, kv_norm, pos, inv_freq, Q, R, dr, eps, f);
  }
};

bool bf16s(std::initializer_list<const Tensor*> ts) {
  for (const Tensor* t : ts)
    if (!t->empty() && t->dtype != DType::bf16) return false;
  return true;
}

// The fused path: switched on, a product the GEMV takes, bf16 throughout.
bool fused_gemv(const Tensor& in, const Tensor& weight, std::initializer_list<const Tensor*> others) {
  static const bool on = env_switch("DS_DECODE_FUSED_GEMV");
  const int64_t M = in.rows(), K = in.cols();
  return on && M > 0 && weight.rows() > 0 && weight.dtype == DType::bf16 && bf16s(others) &&
         gemv_fits(in.dtype, in.data, K, weight.data, K, M, K);
}

GemvArgs product(const Tensor& out, const Tensor& in, const Tensor& weight) {
  const int64_t M = in.rows(), K = in.cols(), N = weight.rows();
  return GemvArgs{out.data, N, 0, dptr<const bf16_t>(in), K, 0, dptr<const bf16_t>(weight), K, 0, int(M), N, K, 0, 0};
}

}  // namespace

void matmul_add_rmsnorm_forward(const Context& ctx, Tensor y, Tensor sum, Tensor out, Tensor in, Tensor weight,
                                Tensor x, Tensor norm_weight, double eps) {
  if (!fused_gemv(in, weight, {&y, &sum, &out, &x, &norm_weight})) {
    cuda::matmul_forward(ctx, y, in, weight, Accum::overwrite);
    cuda::add_rmsnorm_forward(ctx, sum, out, x, y, norm_weight, eps);
    return;
  }
  const AddNormTail tail{stream_tickets(prepare(ctx)), dptr<bf16_t>(sum), dptr<bf16_t>(out), dptr<const bf16_t>(x),
                         dptr<const bf16_t>(y), dptr<const bf16_t>(norm_weight), int(in.rows()), y.cols(),
                         float(eps)};
  gemv(ctx, y.dtype, product(y, in, weight), 1, tail);
}

void mla_latent_proj_forward(const Context& ctx, Tensor a, Tensor q_latent, Tensor kv_pool, Tensor slot_rows, Tensor x,
                             Tensor weight, Tensor q_norm, Tensor kv_norm, double eps, Tensor pos, Tensor inv_freq,
                             double attn_factor) {
  if (!fused_gemv(x, weight, {&a, &q_latent, &kv_pool, &q_norm, &kv_norm})) {
    cuda::matmul_forward(ctx, a, x, weight, Accum::overwrite);
    cuda::mla_latent_forward(ctx, q_latent, kv_pool, slot_rows, a, q_norm, kv_norm, eps, pos, inv_freq, attn_factor);
    return;
  }
  const int64_t Q = q_norm.empty() ? 0 : q_norm.numel(), R = kv_norm.numel(), dr = kv_pool.dim(2) - R;
  const LatentTail tail{stream_tickets(prepare(ctx)), Q ? dptr<bf16_t>(q_latent) : nullptr, dptr<bf16_t>(kv_pool),
                        kv_pool.dim(0) * kv_pool.dim(1), dptr<const int32_t>(slot_rows), dptr<const bf16_t>(a),
                        Q ? dptr<const bf16_t>(q_norm) : nullptr, dptr<const bf16_t>(kv_norm),
                        dptr<const int32_t>(pos), dptr<const float>(inv_freq), int(x.rows()), Q, R, dr, float(eps),
                        attn_factor};
  gemv(ctx, a.dtype, product(a, x, weight), 1, tail);
}

}  // namespace ds::cuda
