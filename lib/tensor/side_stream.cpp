#include "tensor/side_stream.h"

namespace ds {

SideStream::SideStream(const Context& main, gpu::ProcessStream slot, bool open) {
  if (!open || !main.device.is_cuda()) return;
  ctx_ = main;
  ctx_.cuda_stream = gpu::process_stream(main.device, slot);
  fork_event_ = gpu::event_create();
  join_event_ = gpu::event_create();
}

SideStream::~SideStream() {
  if (fork_event_) gpu::event_destroy(fork_event_);
  if (join_event_) gpu::event_destroy(join_event_);
}

const Context& SideStream::fork(const Context& main) const {
  if (!active()) return main;
  gpu::event_record(fork_event_, main.cuda_stream);
  gpu::stream_wait(ctx_.cuda_stream, fork_event_);
  return ctx_;
}

void SideStream::join(const Context& main) const {
  if (!active()) return;
  gpu::event_record(join_event_, ctx_.cuda_stream);
  gpu::stream_wait(main.cuda_stream, join_event_);
}

}  // namespace ds
