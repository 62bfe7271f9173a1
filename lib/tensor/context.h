#pragma once
// Context: what an op needs besides its tensors — the device, threads and (on CUDA) the stream.
// Passed down explicitly; there is no global mutable state.
#include <cstdint>
#include <string>

#include "tensor/tensor.h"

namespace ds {

struct Context {
  Device device{};
  int threads = 1;              // CPU threads for OpenMP loops and BLAS (set once by init_threads)
  void* cuda_stream = nullptr;  // cudaStream_t when device is CUDA (nullptr = default stream)
};

// Applies ctx.threads to OpenMP and OpenBLAS. BLAS is called outside OpenMP regions, so the two pools
// never run at once (no oversubscription). threads <= 0 means "all cores".
void init_threads(Context& ctx, int threads);

// A one-line hint when OpenBLAS runs its generic kernels on a CPU it did not recognise but that has AVX2/AVX-512
// (OpenBLAS 0.3.21 on newer Xeons: matrix products ~4x slower, bench/README.md); empty otherwise.
std::string blas_kernel_hint();

}  // namespace ds
