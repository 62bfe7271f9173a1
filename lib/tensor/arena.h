#pragma once
// Arena: one allocation holding a fixed table of named tensors (parameters, gradients, optimizer moments or
// activations). Plan with add(), then allocate() once; tensors are views into the block, 64-byte aligned,
// zero-filled. Experts live as contiguous [n_experts, ...] tensors, so sharding is offset arithmetic.
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tensor/tensor.h"

namespace ds {

class Arena {
 public:
  explicit Arena(Device device = {}) : device_(device) {}
  ~Arena();
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;
  Arena(Arena&& o) noexcept;
  Arena& operator=(Arena&& o) noexcept;

  // Registers a tensor; returns its index. Only before allocate(). Names are unique.
  size_t add(const std::string& name, DType dtype, const std::vector<int64_t>& shape);
  void allocate();
  bool allocated() const { return allocated_; }

  size_t size() const { return specs_.size(); }
  const Tensor& operator[](size_t i) const { return tensors_.at(i); }
  const std::string& name(size_t i) const { return specs_.at(i).name; }
  bool has(const std::string& name) const { return index_.count(name) != 0; }
  size_t index(const std::string& name) const;  // runtime error naming the tensor when absent
  const Tensor& get(const std::string& name) const { return tensors_.at(index(name)); }
  size_t bytes() const { return bytes_; }
  int64_t numel() const;  // sum over tensors
  Device device() const { return device_; }
  void zero();  // memset the whole block to 0
  // memset every tensor but those with skip[i] (skip has size() entries), a memset a run of neighbours; with a
  // CUDA stream, asynchronous memsets on it (ordered with that stream's work only)
  void zero_except(const std::vector<bool>& skip, void* cuda_stream = nullptr);

 private:
  struct Spec {
    std::string name;
    DType dtype;
    std::vector<int64_t> shape;
    size_t offset;
  };
  Device device_;
  std::vector<Spec> specs_;
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
  void* base_ = nullptr;
  size_t bytes_ = 0;
  bool allocated_ = false;
};

// Device memory primitives (CPU here; CUDA through kernels/ when built with it).
void* device_alloc(Device d, size_t bytes);
void device_free(Device d, void* p);
void device_memset0(Device d, void* p, size_t bytes);
void device_memset(Device d, void* p, int byte, size_t bytes);  // every byte = byte
// Copies bytes between any two devices (host<->device as needed).
void device_copy(Device dst_dev, void* dst, Device src_dev, const void* src, size_t bytes);

// CUDA streams and graphs (the engine's captured decode step); a CUDA build only (usage error otherwise).
// Handles are opaque cudaStream_t / cudaGraphExec_t.
namespace gpu {
void* stream_create(Device d);
void stream_destroy(Device d, void* stream);
// The process's stream number `slot` on device d, created on first use and never destroyed: cuBLASLt keeps a
// workspace per (device, stream), so a stream per engine or decoder would leave one behind each time one is
// destroyed. Slots: kDecodeStream (the engine's captured steps), kSideStream (the decoder's parallel branches),
// kTrainStream (the trainer's step: blocking, of the highest priority), kOptimizerStream (the optimizer's overlapped
// update, lib/train/optimizer.h: non-blocking, of the lowest priority, so it fills what the step leaves idle),
// kStepSideStream (a model's forward / backward branches beside its main stream, lib/model/layers.h SideStream:
// blocking, of the highest priority, as the step's).
enum ProcessStream { kDecodeStream = 0, kSideStream = 1, kTrainStream = 2, kOptimizerStream = 3, kStepSideStream = 4 };
void* process_stream(Device d, ProcessStream slot);
void stream_sync(void* stream);
void copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream);
void copy_to_host_async(void* dst, const void* src, size_t bytes, void* stream);
// Page-locked host memory: copies from and to it are one DMA each, with no staging through a driver buffer.
void* host_alloc_pinned(size_t bytes);
void host_free_pinned(void* p);
void memset0_async(void* p, size_t bytes, void* stream);
void capture_begin(void* stream);
void* capture_end(void* stream, bool ok);  // the instantiated graph, or nullptr when capture failed
void graph_launch(void* exec, void* stream);
void graph_destroy(void* exec);
// Events for fork/join between streams (recorded during a capture they become graph edges).
void* event_create();
void event_destroy(void* event);
void event_record(void* event, void* stream);
void event_sync(void* event);  // the host waits until the work before the event's record has run
void stream_wait(void* stream, void* event);  // later work on stream waits for the event's work
}  // namespace gpu

// Page-locked host bytes (gpu::host_alloc_pinned), freed with the object; empty until sized.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes) : p_(bytes ? gpu::host_alloc_pinned(bytes) : nullptr), size_(bytes) {}
  ~PinnedBuffer() {
    if (p_) gpu::host_free_pinned(p_);
  }
  PinnedBuffer(PinnedBuffer&& o) noexcept : p_(o.p_), size_(o.size_) { o.p_ = nullptr, o.size_ = 0; }
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(size_, o.size_);
    return *this;
  }
  unsigned char* bytes() const { return static_cast<unsigned char*>(p_); }
  size_t size() const { return size_; }

 private:
  void* p_ = nullptr;
  size_t size_ = 0;
};

// Host-side helpers to move small tensors in and out (e.g. offsets, losses, config tables).
std::vector<double> to_host_f64(const Tensor& t);   // any float dtype
std::vector<int64_t> to_host_i64(const Tensor& t);  // i32 / i64
void from_host(const Tensor& t, const std::vector<double>& v);   // converts to t's float dtype
void from_host(const Tensor& t, const std::vector<int32_t>& v);  // t is i32
// The same, ordered on `stream` when t is on a GPU (no wait for the legacy stream and the work before it, which
// cudaMemcpy does); a pageable source is copied out before the call returns, so v may go.
void from_host(const Tensor& t, const std::vector<int32_t>& v, void* stream);

}  // namespace ds
