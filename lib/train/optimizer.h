#pragma once
// AdamW over a model's parameter arena: moments (f32, or bf16 with OptimizerOptions::state_dtype) mirror the
// parameter table (same names), so the state saves as optimizer.safetensors ("exp_avg.NAME", "exp_avg_sq.NAME", in
// the state's dtype) and resumes exactly.
// Router biases (buffers) are skipped; 1-D tensors (norm weights) get no weight decay.
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "ops/ops.h"
#include "ops/step_verdict.h"
#include "tensor/arena.h"
#include "tensor/readback.h"

namespace ds {

struct OptimizerOptions {
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
  double grad_clip = 1.0;  // max global L2 norm; 0 = off
  DType state_dtype = DType::f32;  // the moments: f32, or bf16 as DeepSeek-V3 (f32 parameters only; others keep theirs)
};

class AdamW {
 public:
  AdamW(Model& model, const OptimizerOptions& opt);
  ~AdamW();
  AdamW(const AdamW&) = delete;
  AdamW& operator=(const AdamW&) = delete;
  // Global L2 norm of the gradients times grad_scale (the accumulation average): begins it if begin_grad_norm()
  // has not, then waits for it.
  double grad_norm(double grad_scale);
  // Enqueues the norm's sums of squares and returns (CUDA: no host wait; with the overlap each stage's sums run on
  // the optimizer's stream as soon as backward has marked its gradients final, beside the rest of backward). Call
  // it right after the step's last backward is enqueued, before anything the host waits for.
  void begin_grad_norm();
  // apply() with the step's verdict taken on the device instead of the host (grad_clip_verdict over the sums
  // begin_grad_norm() enqueued, with `finite` (f64 values that must be finite: the loss sums; may be empty) and
  // force_skip): the update's kernels read the clip scale from it and write nothing on a skipped step, so the host
  // waits for nothing here. The same values as grad_norm() then apply() or a skip. verdict() is the device tensor,
  // which the model's stream may read once this returns (the router-bias step); read_verdict() its copy on the host
  // (waiting for it): the step's scale, skip and pre-clip norm, for the metrics a step late.
  void apply_on_device(int64_t step, double lr, double grad_scale, Tensor finite, bool force_skip);
  Tensor verdict() const { return verdict_.size() ? verdict_[0] : Tensor{}; }
  StepVerdict read_verdict();
  // One update with learning rate lr; returns the pre-clip gradient norm. `step` is 1-based.
  double step(int64_t step, double lr, double grad_scale);
  // The update of step() given the gradient norm grad_norm(grad_scale) already computed (callers that check it
  // first, e.g. to skip a step whose norm is not finite). Refreshes the model's compute weights (mixed precision).
  void apply(int64_t step, double lr, double grad_scale, double norm);
  // Overlap (CUDA): apply() then enqueues the update on the optimizer's stream (low priority, non-blocking) stage
  // by stage in the order forward reads the parameters, zeroes the gradients there, and returns; the model's
  // next forward waits for each stage only where it needs it (Model::param_fences), and grad_norm() sums each
  // stage's squares there as soon as backward has marked them final. Same arithmetic, same bits. The caller calls
  // finish() before anything reads the parameters or this state on the host, and may run the model on
  // gpu::kTrainStream (blocking, of higher priority: the step's blocks go first). Off by default; CPU: no effect.
  void set_overlap(bool on);
  bool overlap() const { return overlap_; }
  void finish() const;  // the host waits for an overlapped update (no-op otherwise)
  void save(const std::string& path) const;  // optimizer.safetensors
  void load(const std::string& path);  // bad-input errors name the tensor

 private:
  Model& model_;
  OptimizerOptions opt_;
  Arena m_, v_;
  bool overlap_ = false;
  // Enqueues the update with options o (on the optimizer's stream, stage by stage, with the overlap, after
  // join_step_stream()).
  void enqueue_update(AdamWOptions o);
  void join_step_stream();

  void* grads_ready_ = nullptr;  // event: the step's backward (and gradient norm) are done
  void* verdict_ready_ = nullptr;  // event: apply_on_device's verdict is written
  Arena ssq_;  // f64 [gradient arena tensors]: tensor i's sum of squares at i (buffers' stay 0)
  void* norm_stream_ = nullptr;  // where begin_grad_norm() enqueued them
  bool norm_pending_ = false;
  Arena verdict_;  // f64 [3]: apply_on_device's grad_clip_verdict
  Readback verdict_read_;
};

}  // namespace ds
