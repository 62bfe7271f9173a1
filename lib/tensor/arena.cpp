#include "tensor/arena.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <utility>

#if DS_HAVE_CUDA
#include "kernels/cuda_device.h"
#endif

namespace ds {

namespace {
constexpr size_t kAlign = 64;
size_t align_up(size_t n) { return (n + kAlign - 1) / kAlign * kAlign; }
[[noreturn, maybe_unused]] void no_cuda() { throw_usage("this build of ds has no CUDA support (rebuild where nvcc is present)"); }
}  // namespace

void* device_alloc(Device d, size_t bytes) {
  if (bytes == 0) bytes = kAlign;
  if (d.is_cpu()) {
    void* p = std::aligned_alloc(kAlign, align_up(bytes));
    if (!p) throw_runtime("out of host memory allocating " + std::to_string(bytes) + " bytes");
    return p;
  }
#if DS_HAVE_CUDA
  return cuda::device_malloc(d.index, bytes);
#else
  no_cuda();
#endif
}

void device_free(Device d, void* p) {
  if (!p) return;
  if (d.is_cpu()) return std::free(p);
#if DS_HAVE_CUDA
  cuda::device_free(d.index, p);
#endif
}

void device_memset0(Device d, void* p, size_t bytes) { device_memset(d, p, 0, bytes); }

void device_memset(Device d, void* p, int byte, size_t bytes) {
  if (d.is_cpu()) {
    std::memset(p, byte, bytes);
    return;
  }
#if DS_HAVE_CUDA
  cuda::device_memset(d.index, p, byte, bytes);
#else
  no_cuda();
#endif
}

void device_copy(Device dst_dev, void* dst, Device src_dev, const void* src, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memmove(dst, src, bytes);
    return;
  }
#if DS_HAVE_CUDA
  cuda::copy_bytes(dst, dst_dev.is_cuda(), src, src_dev.is_cuda(), bytes);
#else
  no_cuda();
#endif
}

namespace gpu {
void* process_stream(Device d, ProcessStream slot) {
  static std::mutex mu;
  static std::map<std::pair<int, int>, void*> streams;
  std::lock_guard<std::mutex> lock(mu);
  void*& s = streams[{d.index, int(slot)}];
  if (s) return s;
#if DS_HAVE_CUDA
  const bool train = slot == kTrainStream || slot == kStepSideStream;
  s = train || slot == kOptimizerStream ? cuda::stream_create_with(d.index, train, train) : stream_create(d);
#else
  no_cuda();
#endif
  return s;
}
#if DS_HAVE_CUDA
void* stream_create(Device d) { return cuda::stream_create(d.index); }
void stream_destroy(Device d, void* stream) { cuda::stream_destroy(d.index, stream); }
void stream_sync(void* stream) { cuda::stream_sync(stream); }
void copy_to_device_async(void* dst, const void* src, size_t bytes, void* stream) {
  cuda::copy_to_device_async(dst, src, bytes, stream);
}
void copy_to_host_async(void* dst, const void* src, size_t bytes, void* stream) {
  cuda::copy_to_host_async(dst, src, bytes, stream);
}
void* host_alloc_pinned(size_t bytes) { return cuda::host_alloc_pinned(bytes); }
void host_free_pinned(void* p) { cuda::host_free_pinned(p); }
void memset0_async(void* p, size_t bytes, void* stream) { cuda::memset0_async(p, bytes, stream); }
void capture_begin(void* stream) { cuda::capture_begin(stream); }
void* capture_end(void* stream, bool ok) { return cuda::capture_end(stream, ok); }
void graph_launch(void* exec, void* stream) { cuda::graph_launch(exec, stream); }
void graph_destroy(void* exec) { cuda::graph_destroy(exec); }
void* event_create() { return cuda::event_create(); }
void event_destroy(void* event) { cuda::event_destroy(event); }
void event_record(void* event, void* stream) { cuda::event_record(event, stream); }
void event_sync(void* event) { cuda::event_sync(event); }
void stream_wait(void* stream, void* event) { cuda::stream_wait(stream, event); }
#else
void* stream_create(Device) { no_cuda(); }
void stream_destroy(Device, void*) {}
void stream_sync(void*) { no_cuda(); }
void copy_to_device_async(void*, const void*, size_t, void*) { no_cuda(); }
void copy_to_host_async(void*, const void*, size_t, void*) { no_cuda(); }
void* host_alloc_pinned(size_t) { no_cuda(); }
void host_free_pinned(void*) {}
void memset0_async(void*, size_t, void*) { no_cuda(); }
void capture_begin(void*) { no_cuda(); }
void* capture_end(void*, bool) { no_cuda(); }
void graph_launch(void*, void*) { no_cuda(); }
void graph_destroy(void*) {}
void* event_create() { no_cuda(); }
void event_destroy(void*) {}
void event_record(void*, void*) { no_cuda(); }
void event_sync(void*) { no_cuda(); }
void stream_wait(void*, void*) { no_cuda(); }
#endif
}  // namespace gpu

Arena::~Arena() { device_free(device_, base_); }

Arena::Arena(Arena&& o) noexcept { *this = std::move(o); }

Arena& Arena::operator=(Arena&& o) noexcept {
  if (this != &o) {
    device_free(device_, base_);
    device_ = o.device_;
    specs_ = std::move(o.specs_);
    tensors_ = std::move(o.tensors_);
    index_ = std::move(o.index_);
    base_ = std::exchange(o.base_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
    allocated_ = std::exchange(o.allocated_, false);
  }
  return *this;
}

size_t Arena::add(const std::string& name, DType dtype, const std::vector<int64_t>& shape) {
  DS_CHECK(!allocated_, "Arena::add after allocate: " + name);
  DS_CHECK(!index_.count(name), "duplicate tensor name " + name);
  Tensor t(nullptr, dtype, shape, device_);
  specs_.push_back(Spec{name, dtype, shape, bytes_});
  bytes_ += align_up(t.nbytes());
  index_[name] = specs_.size() - 1;
  return specs_.size() - 1;
}

void Arena::allocate() {
  DS_CHECK(!allocated_, "Arena::allocate twice");
  base_ = device_alloc(device_, bytes_);
  device_memset0(device_, base_, bytes_);
  tensors_.clear();
  for (const Spec& s : specs_) tensors_.emplace_back(static_cast<char*>(base_) + s.offset, s.dtype, s.shape, device_);
  allocated_ = true;
}

size_t Arena::index(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end()) throw_runtime("no tensor named '" + name + "'");
  return it->second;
}

int64_t Arena::numel() const {
  int64_t n = 0;
  for (const Spec& s : specs_) n += Tensor(nullptr, s.dtype, s.shape).numel();
  return n;
}

void Arena::zero() {
  if (allocated_) device_memset0(device_, base_, bytes_);
}

void Arena::zero_except(const std::vector<bool>& skip, void* cuda_stream) {
  DS_CHECK(skip.size() == specs_.size(), "Arena::zero_except: one flag a tensor");
  if (!allocated_) return;
  char* base = static_cast<char*>(base_);
  auto zero = [&](size_t from, size_t to) {
    if (cuda_stream) gpu::memset0_async(base + from, to - from, cuda_stream);
    else device_memset0(device_, base + from, to - from);
  };
  size_t start = 0;  // of the current run of tensors to zero (offsets grow with the index)
  bool in_run = false;
  for (size_t i = 0; i < specs_.size(); ++i) {
    if (skip[i] && in_run) zero(start, specs_[i].offset);
    if (!skip[i] && !in_run) start = specs_[i].offset;
    in_run = !skip[i];
  }
  if (in_run) zero(start, bytes_);
}

// ---- host helpers ----

template <class T>
static std::vector<T> host_bytes(const Tensor& t) {
  std::vector<T> v(size_t(t.numel()));
  device_copy(Device{}, v.data(), t.device, t.data, t.nbytes());
  return v;
}

std::vector<double> to_host_f64(const Tensor& t) {
  std::vector<double> out(size_t(t.numel()));
  switch (t.dtype) {
    case DType::f64: return host_bytes<double>(t);
    case DType::f32: {
      auto v = host_bytes<float>(t);
      for (size_t i = 0; i < v.size(); ++i) out[i] = v[i];
      return out;
    }
    case DType::bf16: {
      auto v = host_bytes<bf16>(t);
      for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_to_f32(v[i]);
      return out;
    }
    default: DS_CHECK(false, std::string("to_host_f64 on dtype ") + dtype_name(t.dtype));
  }
  return out;
}

std::vector<int64_t> to_host_i64(const Tensor& t) {
  if (t.dtype == DType::i64) return host_bytes<int64_t>(t);
  DS_CHECK(t.dtype == DType::i32, std::string("to_host_i64 on dtype ") + dtype_name(t.dtype));
  auto v = host_bytes<int32_t>(t);
  return std::vector<int64_t>(v.begin(), v.end());
}

void from_host(const Tensor& t, const std::vector<double>& v) {
  DS_CHECK(int64_t(v.size()) == t.numel(), "from_host: size mismatch for " + t.shape_str());
  switch (t.dtype) {
    case DType::f64: device_copy(t.device, t.data, Device{}, v.data(), t.nbytes()); return;
    case DType::f32: {
      std::vector<float> f(v.begin(), v.end());
      device_copy(t.device, t.data, Device{}, f.data(), t.nbytes());
      return;
    }
    case DType::bf16: {
      std::vector<bf16> h(v.size());
      for (size_t i = 0; i < v.size(); ++i) h[i] = f32_to_bf16(float(v[i]));
      device_copy(t.device, t.data, Device{}, h.data(), t.nbytes());
      return;
    }
    default: DS_CHECK(false, std::string("from_host(double) on dtype ") + dtype_name(t.dtype));
  }
}

void from_host(const Tensor& t, const std::vector<int32_t>& v) {
  DS_CHECK(t.dtype == DType::i32 && int64_t(v.size()) == t.numel(), "from_host(i32): dtype or size mismatch");
  device_copy(t.device, t.data, Device{}, v.data(), t.nbytes());
}

void from_host(const Tensor& t, const std::vector<int32_t>& v, void* stream) {
  if (!t.device.is_cuda()) return from_host(t, v);
  DS_CHECK(t.dtype == DType::i32 && int64_t(v.size()) == t.numel(), "from_host(i32): dtype or size mismatch");
  gpu::copy_to_device_async(t.data, v.data(), t.nbytes(), stream);
}

}  // namespace ds
