#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <utility>

#include "core/env.h"
#include "core/error.h"
#include "kernels/cuda_device.h"

namespace ds::cuda {

static void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) throw_runtime(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(e));
}

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver" error
    return 0;
  }
  return n;
}

std::string describe() {
  int rt = 0;
  cudaRuntimeGetVersion(&rt);
  int major = 0, minor = 0, patch = 0;
  cublasGetProperty(MAJOR_VERSION, &major);
  cublasGetProperty(MINOR_VERSION, &minor);
  cublasGetProperty(PATCH_LEVEL, &patch);
  std::string s = "CUDA runtime " + std::to_string(rt / 1000) + "." + std::to_string(rt % 1000 / 10) + ", cuBLAS " +
                  std::to_string(major) + "." + std::to_string(minor) + "." + std::to_string(patch);
  int n = device_count();
  s += ", " + std::to_string(n) + " GPU(s)";
  if (n > 0) {
    cudaDeviceProp p{};
    if (cudaGetDeviceProperties(&p, 0) == cudaSuccess) s += std::string(" [") + p.name + "]";
  }
  return s;
}

// Stream-ordered allocations (cudaMallocAsync: TempBuffer, stream scratch) come from the device's default pool, whose
// release threshold is 0: at every host synchronisation it hands its free memory back to the driver, and the next
// allocations map it again. A training step synchronises a few times (the loss, the gradient norm, the expert
// loads), so its per-op temporaries were re-mapped every step. The pool keeps what it has instead (its peak is the
// same). Done once per device, on its first allocation or stream.
static void keep_async_pool(int device) {
  static std::mutex mu;
  static std::map<int, bool> done;
  std::lock_guard<std::mutex> lock(mu);
  if (done[device]) return;
  done[device] = true;
  cudaMemPool_t pool = nullptr;
  uint64_t keep = UINT64_MAX;
  if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess)
    check(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep), "cudaMemPoolSetAttribute");
  else
    cudaGetLastError();  // no pool support: nothing to keep
}

void* device_malloc(int device, size_t bytes) {
  check(cudaSetDevice(device), "cudaSetDevice");
  keep_async_pool(device);
  void* p = nullptr;
  check(cudaMalloc(&p, bytes), "cudaMalloc");
  return p;
}

void* temp_malloc(int device, void* stream, size_t bytes) {
  check(cudaSetDevice(device), "cudaSetDevice");
  keep_async_pool(device);
  void* p = nullptr;
  check(cudaMallocAsync(&p, bytes, static_cast<cudaStream_t>(stream)), "cudaMallocAsync");
  return p;
}

void temp_free(int device, void* stream, void* p) {
  cudaSetDevice(device);
  cudaFreeAsync(p, static_cast<cudaStream_t>(stream));
}

void device_free(int device, void* p) {
  cudaSetDevice(device);
  cudaFree(p);
}

void device_memset0(int device, void* p, size_t bytes) { device_memset(device, p, 0, bytes); }

void device_memset(int device, void* p, int byte, size_t bytes) {
  check(cudaSetDevice(device), "cudaSetDevice");
  check(cudaMemset(p, byte, bytes), "cudaMemset");
}

void copy_bytes(void* dst, bool dst_on_device, const void* src, bool src_on_device, size_t bytes) {
  cudaMemcpyKind kind = dst_on_device ? (src_on_device ? cudaMemcpyDeviceToDevice : cudaMemcpyHostToDevice)
                                      : (src_on_device ? cudaMemcpyDeviceToHost : cudaMemcpyHostToHost);
  check(cudaMemcpy(dst, src, bytes, kind), "cudaMemcpy");
}

void* stream_create(int device) {
  check(cudaSetDevice(device), "cudaSetDevice");
  keep_async_pool(device);
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithFlags(&s, cudaStreamDefault), "cudaStreamCreate");
  return s;
}

void* stream_create_with(int device, bool blocking, bool high_priority) {
  check(cudaSetDevice(device), "cudaSetDevice");
  keep_async_pool(device);
  int least = 0, greatest = 0;
  check(cudaDeviceGetStreamPriorityRange(&least, &greatest), "cudaDeviceGetStreamPriorityRange");
  cudaStream_t s = nullptr;
  check(cudaStreamCreateWithPriority(&s, blocking ? cudaStreamDefault : cudaStreamNonBlocking,
                                     high_priority ? greatest : least),
        "cudaStreamCreateWithPriority");
  return s;
}

void stream_destroy(int device, void* stream) {
  if (!stream) return;
  cudaSetDevice(device);
  cudaStreamSynchronize(static_cast<cudaStream_t>(stream));
  cudaStreamDestroy(static_cast<cudaStream_t>(stream));
}

void stream_sync(void* stream) { check(cudaStreamSynchronize(static_cast<cudaStream_t>(stream)), "cudaStreamSynchronize"); }

void copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, static_cast<cudaStream_t>(stream)),
        "cudaMemcpyAsync");
}

void copy_to_host_async(void* dst, const void* src, size_t bytes, void* stream) {
  if (bytes == 0) return;
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, static_cast<cudaStream_t>(stream)),
        "cudaMemcpyAsync");
}

void* host_alloc_pinned(size_t bytes) {
  void* p = nullptr;
  check(cudaMallocHost(&p, bytes ? bytes : 1), "cudaMallocHost");
  return p;
}

void host_free_pinned(void* p) {
  if (p) cudaFreeHost(p);
}

void memset0_async(void* p, size_t bytes, void* stream) {
  if (bytes == 0) return;
  check(cudaMemsetAsync(p, 0, bytes, static_cast<cudaStream_t>(stream)), "cudaMemsetAsync");
}

void capture_begin(void* stream) {
  check(cudaStreamBeginCapture(static_cast<cudaStream_t>(stream), cudaStreamCaptureModeThreadLocal),
        "cudaStreamBeginCapture");
}

void* capture_end(void* stream, bool ok) {
  cudaGraph_t g = nullptr;
  cudaError_t e = cudaStreamEndCapture(static_cast<cudaStream_t>(stream), &g);
  cudaGraphExec_t exec = nullptr;
  if (e == cudaSuccess && ok && g) e = cudaGraphInstantiateWithFlags(&exec, g, 0);
  if (g) cudaGraphDestroy(g);
  if (e != cudaSuccess || !ok) {
    cudaGetLastError();  // capture errors are not sticky: clear and let the caller run eagerly
    if (exec) cudaGraphExecDestroy(exec);
    return nullptr;
  }
  return exec;
}

void graph_launch(void* exec, void* stream) {
  check(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec), static_cast<cudaStream_t>(stream)), "cudaGraphLaunch");
}

void graph_destroy(void* exec) {
  if (exec) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec));
}

void* event_create() {
  cudaEvent_t e = nullptr;
  check(cudaEventCreateWithFlags(&e, cudaEventDisableTiming), "cudaEventCreateWithFlags");
  return e;
}

void event_destroy(void* event) {
  if (event) cudaEventDestroy(static_cast<cudaEvent_t>(event));
}

void event_record(void* event, void* stream) {
  check(cudaEventRecord(static_cast<cudaEvent_t>(event), static_cast<cudaStream_t>(stream)), "cudaEventRecord");
}

void event_sync(void* event) { check(cudaEventSynchronize(static_cast<cudaEvent_t>(event)), "cudaEventSynchronize"); }

void stream_wait(void* stream, void* event) {
  check(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), static_cast<cudaEvent_t>(event), 0),
        "cudaStreamWaitEvent");
}

namespace {

bool capturing(cudaStream_t st) {
  cudaStreamCaptureStatus cs = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(st, &cs) != cudaSuccess) {
    cudaGetLastError();  // e.g. the legacy stream while another stream captures: treat as capturing
    return true;
  }
  return cs != cudaStreamCaptureStatusNone;
}

}  // namespace

void* stream_scratch(void* stream, ScratchUse use, size_t want, size_t& have) {
  struct Pool {
    std::mutex mu;
    std::map<std::tuple<int, void*, ScratchUse>, std::pair<void*, size_t>> bufs;
  };
  static Pool* pool = new Pool;  // leaked on purpose: no CUDA calls at static destruction
  int dev = 0;
  check(cudaGetDevice(&dev), "cudaGetDevice");
  std::lock_guard<std::mutex> lock(pool->mu);
  auto& b = pool->bufs[{dev, stream, use}];
  if (b.second < want && !capturing(static_cast<cudaStream_t>(stream))) {
    const size_t bytes = std::max({want, 2 * b.second, size_t(1) << 20});
    b = {nullptr, 0};  // the old buffer stays allocated (see cuda_device.h)
    check(cudaMalloc(&b.first, bytes), "cudaMalloc (stream scratch)");
    b.second = bytes;
  }
  have = b.second;
  return b.first;
}

// Programmatic dependent launch (kernels/common.cuh): Hopper and later, unless DS_PDL=0 (an A/B switch for
// benchmarks and a way out should a driver misbehave). Decided once per process.
bool pdl_enabled() {
  static const bool on = [] {
    if (!env_switch("DS_PDL")) return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
      cudaGetLastError();
      return false;
    }
    return major >= 9;
  }();
  return on;
}

}  // namespace ds::cuda
