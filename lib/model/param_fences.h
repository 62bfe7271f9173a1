#pragma once
// The optimizer's overlap with the next step (CUDA; lib/train/optimizer.h): the optimizer updates the parameters
// on a stream of its own, stage by stage in the order forward reads them, while the next forward runs. These are
// the events between the two: one a stage, recorded after that stage's update, and one recorded once the
// optimizer has read (and zeroed) the gradients. Until armed the waits do nothing (the CPU, no overlap).
#include <vector>

namespace ds {

class ParamFences {
 public:
  ParamFences() = default;
  ~ParamFences();
  ParamFences(const ParamFences&) = delete;
  ParamFences& operator=(const ParamFences&) = delete;

  void* stage(int s);  // the event of stage s (created on first use)
  void* grads_free();
  void arm() { armed_ = true; }
  bool armed() const { return armed_; }
  // Later work on `stream` (nullptr: the legacy stream) waits for stage s's update / for the gradients' release.
  void wait_stage(void* stream, int s);
  void wait_grads_free(void* stream);
  // The host waits for everything the optimizer enqueued (before reading parameters or its state on the host).
  void sync();

 private:
  std::vector<void*> stage_;
  void* grads_free_ = nullptr;
  bool armed_ = false;
};

}  // namespace ds
