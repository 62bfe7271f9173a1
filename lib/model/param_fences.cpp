#include "model/param_fences.h"

#include "tensor/arena.h"

namespace ds {

ParamFences::~ParamFences() {
  for (void* e : stage_)
    if (e) gpu::event_destroy(e);
  if (grads_free_) gpu::event_destroy(grads_free_);
}

void* ParamFences::stage(int s) {
  if (size_t(s) >= stage_.size()) stage_.resize(size_t(s) + 1, nullptr);
  if (!stage_[size_t(s)]) stage_[size_t(s)] = gpu::event_create();
  return stage_[size_t(s)];
}

void* ParamFences::grads_free() {
  if (!grads_free_) grads_free_ = gpu::event_create();
  return grads_free_;
}

void ParamFences::wait_stage(void* stream, int s) {
  if (armed_ && size_t(s) < stage_.size() && stage_[size_t(s)]) gpu::stream_wait(stream, stage_[size_t(s)]);
}

void ParamFences::wait_grads_free(void* stream) {
  if (armed_ && grads_free_) gpu::stream_wait(stream, grads_free_);
}

void ParamFences::sync() {
  if (armed_ && grads_free_) gpu::event_sync(grads_free_);  // recorded last, on the optimizer's one stream
}

}  // namespace ds
