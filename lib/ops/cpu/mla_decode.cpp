// MLA decode over the paged latent cache: MQA with one KV head whose value is a prefix of its key
// (FlashMLA's layout). Plain loops with double accumulators: the reference for the CUDA kernel.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/cpu/cpu_ops.h"

namespace ds::cpu {

void kv_cache_write(const Context&, Tensor kv_pool, Tensor slot_rows, Tensor c, Tensor k_pe) {
  dispatch_float(kv_pool.dtype, "kv_cache_write", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = slot_rows.numel(), C = kv_pool.dim(2), R = c.cols(), dr = k_pe.cols();
    const int64_t slots = kv_pool.dim(0) * kv_pool.dim(1);
    const int32_t* rows = slot_rows.ptr<int32_t>();
    T* pool = kv_pool.ptr<T>();
    for (int64_t i = 0; i < n; ++i) {
      if (rows[i] < 0) continue;  // padding
      DS_CHECK(rows[i] < slots, "kv_cache_write: slot row out of range");
      T* dst = pool + int64_t(rows[i]) * C;
      std::copy_n(c.ptr<T>() + i * R, R, dst);
      std::copy_n(k_pe.ptr<T>() + i * dr, dr, dst + R);
    }
  });
}

void mla_decode_attention(const Context& ctx, Tensor out, Tensor lse, Tensor q_lat, Tensor kv_pool, Tensor block_table,
                          Tensor kv_len, double scale, Inputs /*cache*/) {
  dispatch_float(out.dtype, "mla_decode_attention", [&](auto zero) {
    using T = decltype(zero);
    const int64_t n = q_lat.dim(0), H = q_lat.dim(1), C = q_lat.dim(2), R = out.dim(2);
    const int64_t S = kv_pool.dim(1), max_blocks = block_table.dim(1), pages = kv_pool.dim(0);
    const T* q = q_lat.ptr<T>();
    const T* pool = kv_pool.ptr<T>();
    const int32_t* table = block_table.ptr<int32_t>();
    const int32_t* lens = kv_len.ptr<int32_t>();
    T* o = out.ptr<T>();
    T* pl = lse.empty() ? nullptr : lse.ptr<T>();
    // Validate before the parallel region (an exception must not escape an OpenMP loop).
    int64_t work = 0;
    for (int64_t i = 0; i < n; ++i) {
      DS_CHECK(lens[i] >= 1 && lens[i] <= max_blocks * S, "mla_decode_attention: kv_len out of range");
      for (int64_t b = 0; b < (lens[i] + S - 1) / S; ++b)
        DS_CHECK(table[i * max_blocks + b] >= 0 && table[i * max_blocks + b] < pages,
                 "mla_decode_attention: page out of range");
      work += int64_t(lens[i]) * H * (C + R);
    }
    const int nt = threads_for(ctx, work);
#pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t ih = 0; ih < n * H; ++ih) {
      const int64_t i = ih / H, len = lens[i];
      const T* qi = q + ih * C;
      std::vector<double> s(static_cast<size_t>(len));
      double mx = -std::numeric_limits<double>::infinity();
      for (int64_t t = 0; t < len; ++t) {
        const int32_t page = table[i * max_blocks + t / S];
        const T* k = pool + (int64_t(page) * S + t % S) * C;
        double d = 0;
        for (int64_t j = 0; j < C; ++j) d += double(qi[j]) * double(k[j]);
        s[t] = d * scale;
        mx = std::max(mx, s[t]);
      }
      double z = 0;
      for (int64_t t = 0; t < len; ++t) z += (s[t] = std::exp(s[t] - mx));
      std::vector<double> acc(size_t(R), 0.0);
      for (int64_t t = 0; t < len; ++t) {
        const int32_t page = table[i * max_blocks + t / S];
        const T* v = pool + (int64_t(page) * S + t % S) * C;  // V = the first R values of the key
        const double p = s[t] / z;
        for (int64_t j = 0; j < R; ++j) acc[j] += p * double(v[j]);
      }
      for (int64_t j = 0; j < R; ++j) o[ih * R + j] = T(acc[j]);
      if (pl) pl[ih] = T(mx + std::log(z));
    }
  });
}

}  // namespace ds::cpu
