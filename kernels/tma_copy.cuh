#pragma once
// Hopper's TMA unit and mbarriers (sm_90): the device side shared by the kernels that load tiles with it (the
// grouped GEMM's tma:: kernels, the attention backward's dK/dV kernel). Internal to kernels/; the host side, tensor
// maps, is kernels/tensor_map.h. Like wgmma.cuh, built for a target without these instructions (a device pass other
// than sm_90a) the bodies trap, so callers launch their kernels only where DS_CUDA_WGMMA is defined.
#include <cuda.h>  // CUtensorMap

#include <cstdint>

#include "kernels/wgmma.cuh"  // DS_WGMMA_TRAP

// The statement on sm_90a; a trap in a device pass for another target (which must not emit these instructions).
#ifdef DS_WGMMA_TRAP
#define DS_TMA_ONLY(...) __trap()
#else
#define DS_TMA_ONLY(...) __VA_ARGS__
#endif

namespace ds::cuda::tmacp {

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  DS_TMA_ONLY(asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory"));
}
// After a thread's mbar_init()s, before a barrier: the inits visible to the async proxy (the TMA's complete_tx).
__device__ __forceinline__ void mbar_init_fence() {
  DS_TMA_ONLY(asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"));
}
__device__ __forceinline__ void mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes) {
  DS_TMA_ONLY(asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
                           : "memory"));
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  DS_TMA_ONLY(asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory"));
}
// Until the phase of parity `parity` has completed (a fresh barrier counts its phase "before 0", parity 1, done).
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 1;
  do {
    DS_TMA_ONLY(asm volatile(
        "{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory"));
  } while (!done);
}
// Box (c0 = column, c1 = row) of the 2D tensor map into shared memory at dst; completes its bytes on the mbarrier bar
// (whole boxes: the zero-filled bytes out of bounds count too).
__device__ __forceinline__ void tma_load_2d(uint32_t dst, const CUtensorMap* map, uint32_t bar, int c0, int c1) {
  DS_TMA_ONLY(asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1)
      : "memory"));
}
// bytes (a multiple of 16) from global src (16-byte aligned) into shared memory at dst (16-byte aligned), no tensor
// map; completes on the mbarrier bar.
__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes, uint32_t bar) {
  DS_TMA_ONLY(asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n"
                           ::"r"(dst), "l"(src), "r"(bytes), "r"(bar)
                           : "memory"));
}

// A two-buffer ring's start (the attention backward's TMA kernels), by one thread: the buffers' mbarriers at full0 and
// full0 + 8 (count 1: the issuing thread's arrive.expect_tx), then the loads of the first two steps, issue(step,
// buffer) (the second only when there is one). The other threads wait on the barriers after a block barrier.
template <class Issue>
__device__ __forceinline__ void ring2_start(uint32_t full0, bool second, const Issue& issue) {
  mbar_init(full0, 1);
  mbar_init(full0 + 8, 1);
  mbar_init_fence();
  issue(0, 0);
  if (second) issue(1, 1);
}

}  // namespace ds::cuda::tmacp
