#pragma once
// A second CUDA stream for a pass's independent branches (a training block's, lib/model/layers.h; a decode step's,
// lib/infer/decoder.h): fork() orders it after the work queued so far on the main stream and returns its context,
// join() orders what follows on the main stream after the branch's work. Recorded during a CUDA graph capture the
// two become graph edges. Inactive (the CPU, or not opened): fork() returns the main context, join() does nothing.
#include "tensor/arena.h"
#include "tensor/context.h"

namespace ds {

class SideStream {
 public:
  SideStream() = default;
  // On CUDA with `open`: the process's stream `slot` on main's device, and two events; otherwise inactive.
  SideStream(const Context& main, gpu::ProcessStream slot, bool open = true);
  ~SideStream();
  SideStream(const SideStream&) = delete;
  SideStream& operator=(const SideStream&) = delete;

  bool active() const { return fork_event_ != nullptr; }
  const Context& fork(const Context& main) const;
  void join(const Context& main) const;

 private:
  Context ctx_;  // main's, on the side stream
  void* fork_event_ = nullptr;
  void* join_event_ = nullptr;
};

}  // namespace ds
