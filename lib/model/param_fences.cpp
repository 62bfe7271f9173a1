#include "model/param_fences.h"

#include "tensor/arena.h"

namespace ds {

ParamFences::~ParamFences() {
  for (auto* v : {&stage_, &final_})
    for (void* e : *v)
      if (e) gpu::event_destroy(e);
  if (grads_free_) gpu::event_destroy(grads_free_);
}

void* ParamFences::event_at(std::vector<void*>& v, int s) {
  if (size_t(s) >= v.size()) v.resize(size_t(s) + 1, nullptr);
  if (!v[size_t(s)]) v[size_t(s)] = gpu::event_create();
  return v[size_t(s)];
}

void* ParamFences::stage(int s) { return event_at(stage_, s); }
void* ParamFences::grads_final(int s) { return event_at(final_, s); }

void* ParamFences::grads_free() {
  if (!grads_free_) grads_free_ = gpu::event_create();
  return grads_free_;
}

void ParamFences::wait_stage(void* stream, int s) {
  if (on_) gpu::stream_wait(stream, stage(s));
}

void ParamFences::wait_grads_free(void* stream) {
  if (on_) gpu::stream_wait(stream, grads_free());
}

void ParamFences::mark_grads_final(void* stream, int s) {
  if (on_) gpu::event_record(grads_final(s), stream);
}

void ParamFences::sync() {
  if (grads_free_) gpu::event_sync(grads_free_);  // recorded last, on the optimizer's one stream
}

}  // namespace ds
