#pragma once
// What the GPU micro-benchmarks in bench/gpu share (ds-bench-grouped-gemm, ds-bench-moe-route): a checked CUDA call,
// an owned device buffer, a ds::Tensor view of one, seeded uniform fills and the median of timed launches. Not a
// library: included by one .cu file each.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "tensor/tensor.h"

namespace bench_gpu {

#define CK(call)                                                                                  \
  do {                                                                                            \
    const cudaError_t e_ = (call);                                                                \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s failed: %s (line %d)\n", #call, cudaGetErrorString(e_), __LINE__); \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

// Uniform values in [-scale, scale) from a hash of (index, seed): the same buffer contents on every run.
template <class T> __global__ void fill_uniform(T* p, size_t n, uint32_t seed, float scale) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t x = uint32_t(i) * 2654435761u ^ seed * 0x9e3779b9u ^ uint32_t(i >> 32);
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    p[i] = T((float(x & 0xffffff) * (2.0f / 16777216.0f) - 1.0f) * scale);
  }
}

struct DevBuf {
  void* p = nullptr;
  size_t bytes = 0;
  explicit DevBuf(size_t b) : bytes(b) { CK(cudaMalloc(&p, b)); }
  ~DevBuf() { cudaFree(p); }
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
};

// Fills the buffer as T elements (bf16 by default).
template <class T = __nv_bfloat16> void fill(DevBuf& b, uint32_t seed, float scale) {
  fill_uniform<T><<<1024, 256>>>(static_cast<T*>(b.p), b.bytes / sizeof(T), seed, scale);
  CK(cudaGetLastError());
}

// Device 0's properties into prop; false (after saying so on stdout) where there is no CUDA device: the caller
// returns 77, ctest's "skipped".
inline bool first_device(const char* prog, cudaDeviceProp& prop) {
  int ndev = 0;
  if (cudaGetDeviceCount(&ndev) != cudaSuccess || ndev == 0) {
    std::printf("%s: no CUDA device\n", prog);
    return false;
  }
  CK(cudaGetDeviceProperties(&prop, 0));
  return true;
}

inline ds::Tensor tensor(const DevBuf& b, ds::DType dt, std::vector<int64_t> shape) {
  return ds::Tensor(b.p, dt, shape, ds::Device{ds::DeviceKind::cuda, 0});
}

// Median of reps single-launch times (ms), after 3 warm-up launches.
template <class F> float time_ms(cudaStream_t s, int reps, F&& f) {
  for (int i = 0; i < 3; ++i) f();
  CK(cudaStreamSynchronize(s));
  cudaEvent_t a, b;
  CK(cudaEventCreate(&a));
  CK(cudaEventCreate(&b));
  std::vector<float> t;
  for (int r = 0; r < reps; ++r) {
    CK(cudaEventRecord(a, s));
    f();
    CK(cudaEventRecord(b, s));
    CK(cudaEventSynchronize(b));
    float ms = 0;
    CK(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CK(cudaEventDestroy(a));
  CK(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

}  // namespace bench_gpu
