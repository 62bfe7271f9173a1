#pragma once
// The optimizer's overlap with the training step (CUDA; lib/train/optimizer.h): the optimizer updates the
// parameters on a stream of its own, stage by stage in the order forward reads them, while the next forward runs,
// and sums the squares of a stage's gradients (the gradient norm) as soon as backward has finished them. These are
// the events between the two: a stage's update done, a stage's gradients final, and the gradients released (read and
// zeroed by the optimizer). Off (the CPU, no overlap), nothing is recorded or waited for.
#include <vector>

namespace ds {

class ParamFences {
 public:
  ParamFences() = default;
  ~ParamFences();
  ParamFences(const ParamFences&) = delete;
  ParamFences& operator=(const ParamFences&) = delete;

  void* stage(int s);        // the event of stage s's update (created on first use)
  void* grads_final(int s);  // the event of stage s's gradients final in the step's backward
  void* grads_free();
  void set_on(bool on) { on_ = on; }
  bool on() const { return on_; }
  // Later work on `stream` (nullptr: the legacy stream) waits for stage s's update / for the gradients' release.
  // (A wait for an event not yet recorded waits for nothing: the first step.)
  void wait_stage(void* stream, int s);
  void wait_grads_free(void* stream);
  void mark_grads_final(void* stream, int s);  // records grads_final(s) on stream
  // Whether the gradients as they are now were marked final stage by stage (a backward ran with the fences on and
  // nothing has touched them since); otherwise a reader on another stream must wait for the whole step.
  void set_marked(bool m) { marked_ = m; }
  bool marked() const { return on_ && marked_; }
  // The host waits for everything the optimizer enqueued (before reading parameters or its state on the host).
  void sync();

 private:
  static void* event_at(std::vector<void*>& v, int s);
  std::vector<void*> stage_, final_;
  void* grads_free_ = nullptr;
  bool on_ = false, marked_ = false;
};

}  // namespace ds
