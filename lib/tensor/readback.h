#pragma once
// A device-to-host copy that the host collects later: begin() enqueues it on a stream (into page-locked memory, with
// an event behind it) and returns at once; wait() returns the bytes once they have landed. The trainer reads each
// step's loss, gradient norm and expert counts this way a step late, so that the host never waits between steps
// (lib/train/trainer.cpp). From CPU memory the copy is made at once.
#include <cstddef>
#include <vector>

#include "tensor/arena.h"

namespace ds {

class Readback {
 public:
  Readback() = default;
  ~Readback();
  Readback(const Readback&) = delete;
  Readback& operator=(const Readback&) = delete;

  // Copies bytes from src on device d (after the work already enqueued on stream, when d is a GPU), over the bytes
  // of the previous begin().
  void begin(Device d, const void* src, size_t bytes, void* stream);
  bool pending() const { return pending_; }
  // The bytes of the last begin(), once (the host waits for its copy; they stay valid until the next begin()); an
  // internal error when nothing is pending.
  const unsigned char* take();
  template <class T> const T* take_as() { return reinterpret_cast<const T*>(take()); }

 private:
  PinnedBuffer pinned_;
  std::vector<unsigned char> host_;  // the copy from CPU memory
  void* event_ = nullptr;
  bool on_gpu_ = false, pending_ = false;
};

}  // namespace ds
