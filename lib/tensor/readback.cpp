#include "tensor/readback.h"

#include <cstring>

#include "core/error.h"

namespace ds {

Readback::~Readback() {
  if (event_) gpu::event_destroy(event_);
}

void Readback::begin(Device d, const void* src, size_t bytes, void* stream) {
  on_gpu_ = d.is_cuda();
  if (on_gpu_) {
    if (pinned_.size() < bytes) pinned_ = PinnedBuffer(bytes);
    if (!event_) event_ = gpu::event_create();
    if (bytes > 0) gpu::copy_to_host_async(pinned_.bytes(), src, bytes, stream);
    gpu::event_record(event_, stream);
  } else {
    host_.resize(bytes);
    if (bytes > 0) std::memcpy(host_.data(), src, bytes);
  }
  pending_ = true;
}

const unsigned char* Readback::take() {
  DS_CHECK(pending_, "Readback::take without begin");
  pending_ = false;
  if (!on_gpu_) return host_.data();
  gpu::event_sync(event_);
  return pinned_.bytes();
}

}  // namespace ds
