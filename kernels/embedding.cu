// CUDA twins of the embedding lookup and its backward (lib/ops/cpu/matmul.cpp is the reference).
// The backward is deterministic: token positions are sorted by id (stable radix sort), then one block per distinct
// id sums its rows in token order (f32) and adds the sum to d_table. No atomics, so results repeat bit for bit.
// Ids outside [0, V) (the CPU reference reports them as bad input) cannot be reported without a synchronisation:
// the forward writes NaN into that row, so the loss turns NaN; the backward skips them.
#include <cub/cub.cuh>

#include "kernels/common.cuh"
#include "kernels/cuda_ops.h"

namespace ds::cuda {

namespace {

template <class T>
__global__ void embedding_fwd_kernel(T* __restrict__ out, const int32_t* __restrict__ ids, const T* __restrict__ table,
                                     int64_t N, int64_t D, int64_t V) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t n = blockIdx.x; n < N; n += gridDim.x) {
    const int32_t id = ids[n];
    T* o = out + n * D;
    if (id < 0 || id >= V) {
      for (int64_t c = threadIdx.x; c < D; c += blockDim.x) o[c] = cvt<T>(__int_as_float(0x7fc00000));
      continue;
    }
    const T* row = table + int64_t(id) * D;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) o[c] = row[c];
  }
}

// keys[n] = ids[n] when valid, else V (sorted last, skipped); vals[n] = n.
__global__ void embedding_keys_kernel(int32_t* __restrict__ keys, int32_t* __restrict__ vals,
                                      const int32_t* __restrict__ ids, int64_t N, int64_t V) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    const int32_t id = ids[n];
    keys[n] = (id < 0 || id >= V) ? int32_t(V) : id;
    vals[n] = int32_t(n);
  }
}

// Block b handles sorted position b if it starts a run of equal keys: sums the run's d_out rows in token order.
template <class G, class T>
__global__ void embedding_bwd_kernel(G* __restrict__ d_table, const T* __restrict__ d_out,
                                     const int32_t* __restrict__ keys, const int32_t* __restrict__ pos, int64_t N,
                                     int64_t D, int64_t V) {
  pdl_enter();  // programmatic dependent launch: wait for the previous kernel (common.cuh)
  for (int64_t i = blockIdx.x; i < N; i += gridDim.x) {
    const int32_t key = keys[i];
    if (key >= V || (i > 0 && keys[i - 1] == key)) continue;
    int64_t end = i + 1;
    while (end < N && keys[end] == key) ++end;
    G* row = d_table + int64_t(key) * D;
    for (int64_t c = threadIdx.x; c < D; c += blockDim.x) {
      float s = 0.0f;
      for (int64_t j = i; j < end; ++j) s += ldf(d_out[int64_t(pos[j]) * D + c]);
      row[c] = cvt<G>(ldf(row[c]) + s);
    }
  }
}

int bits_for(int64_t v) {  // bits needed to hold 0..v
  int b = 1;
  while (b < 31 && (int64_t(1) << b) <= v) ++b;
  return b;
}

}  // namespace

void embedding_forward(const Context& ctx, Tensor out, Tensor ids, Tensor table) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = ids.numel(), D = table.cols(), V = table.rows();
  if (N == 0 || D == 0) return;
  const int threads = D >= 1024 ? 256 : 128;
  dispatch_fb(out.dtype, "embedding_forward", [&](auto zero) {
    using T = decltype(zero);
    launch(embedding_fwd_kernel<T>, unsigned(std::min<int64_t>(N, 1 << 20)), threads, 0, st,
        dptr<T>(out), dptr<const int32_t>(ids), dptr<const T>(table), N, D, V);
  });
  DS_CUDA_LAUNCH_CHECK("embedding_fwd_kernel");
}

void embedding_backward(const Context& ctx, Tensor d_table, Tensor d_out, Tensor ids) {
  cudaStream_t st = prepare(ctx);
  const int64_t N = ids.numel(), D = d_table.cols(), V = d_table.rows();
  if (N == 0 || D == 0) return;
  DS_CHECK(N < (int64_t(1) << 31) && V < (int64_t(1) << 31) - 1, "embedding_backward: too many tokens or rows");
  // keys_in, vals_in, keys_out, vals_out, then cub's temporary storage.
  size_t cub_bytes = 0;
  DS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, cub_bytes, static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), static_cast<const int32_t*>(nullptr),
                                                static_cast<int32_t*>(nullptr), int(N), 0, bits_for(V), st));
  const size_t arr = (size_t(N) * sizeof(int32_t) + 255) / 256 * 256;
  TempBuffer buf(4 * arr + cub_bytes, st);
  char* base = buf.as<char>();
  int32_t* keys_in = reinterpret_cast<int32_t*>(base);
  int32_t* vals_in = reinterpret_cast<int32_t*>(base + arr);
  int32_t* keys_out = reinterpret_cast<int32_t*>(base + 2 * arr);
  int32_t* vals_out = reinterpret_cast<int32_t*>(base + 3 * arr);
  launch(embedding_keys_kernel, grid_for(N, 256), 256, 0, st, keys_in, vals_in, dptr<const int32_t>(ids), N, V);
  DS_CUDA_LAUNCH_CHECK("embedding_keys_kernel");
  DS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(base + 4 * arr, cub_bytes, keys_in, keys_out, vals_in, vals_out,
                                                int(N), 0, bits_for(V), st));
  const int threads = D >= 1024 ? 256 : 128;
  dispatch_fb(d_out.dtype, "embedding_backward", [&](auto tz) {
    using T = decltype(tz);
    dispatch_fb(d_table.dtype, "embedding_backward", [&](auto gz) {
      using G = decltype(gz);
      launch(embedding_bwd_kernel<G, T>, unsigned(std::min<int64_t>(N, 1 << 20)), threads, 0, st,
          dptr<G>(d_table), dptr<const T>(d_out), keys_out, vals_out, N, D, V);
    });
  });
  DS_CUDA_LAUNCH_CHECK("embedding_bwd_kernel");
}

}  // namespace ds::cuda
