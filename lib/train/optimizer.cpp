#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ckpt/safetensors.h"
#include "model/weights.h"

namespace ds {

AdamW::AdamW(Model& model, const OptimizerOptions& opt)
    : model_(model),
      opt_(opt),
      m_(model.context().device),
      v_(model.context().device),
      ssq_(model.context().device),
      verdict_(model.context().device) {
  model_.enable_grads();
  const Arena& p = model_.params();
  for (size_t i = 0; i < p.size(); ++i) {
    const DType dt = opt_.state_dtype == DType::bf16 && p[i].dtype == DType::f32 ? DType::bf16 : p[i].dtype;
    m_.add(p.name(i), dt, p[i].dims());
    v_.add(p.name(i), dt, p[i].dims());
  }
  m_.allocate();
  v_.allocate();
}

// Tensor i's sum lands in ssq_ at i (a buffer's slot stays 0), so reading them in order is the tensor order;
// nothing waits on the host until grad_norm() or read_verdict() reads them.
void AdamW::begin_grad_norm() {
  if (norm_pending_) return;
  const Context& ctx = model_.context();
  const Arena& g = model_.grad_arena();
  if (!ssq_.allocated()) {
    ssq_.add("ssq", DType::f64, {std::max<int64_t>(int64_t(g.size()), 1)});
    ssq_.allocate();
    device_memset0(ssq_[0].device, ssq_[0].data, ssq_[0].nbytes());
  }
  norm_stream_ = ctx.cuda_stream;
  // the sums of tensors `which` (ascending), a launch for each run of neighbours
  auto enqueue = [&](const Context& c, const std::vector<size_t>& which) {
    for (size_t a = 0; a < which.size();) {
      size_t b = a + 1;
      while (b < which.size() && which[b] == which[b - 1] + 1) ++b;
      std::vector<Tensor> ts;
      for (size_t k = a; k < b; ++k) ts.push_back(g[which[k]]);
      sum_squares_into(c, ssq_[0].slice0(int64_t(which[a]), int64_t(which[a] + (b - a))), ts);
      a = b;
    }
  };
  std::vector<size_t> idx;
  for (size_t i = 0; i < g.size(); ++i)
    if (!is_buffer_name(g.name(i))) idx.push_back(i);
  if (!overlap_) {
    enqueue(ctx, idx);
  } else {
    // On the optimizer's stream, a stage once backward has marked its gradients final (the reverse stage order),
    // while the rest of backward runs; the same sums as above, tensor by tensor.
    Context octx = ctx;
    octx.cuda_stream = gpu::process_stream(ctx.device, gpu::kOptimizerStream);
    norm_stream_ = octx.cuda_stream;
    ParamFences& f = model_.param_fences();
    if (!f.marked()) join_step_stream();  // not marked stage by stage: wait for the whole step
    std::vector<std::vector<size_t>> by_stage(size_t(model_.num_param_stages()));
    for (size_t i : idx) by_stage[size_t(model_.param_stage(i))].push_back(i);
    for (size_t s = by_stage.size(); s-- > 0;) {
      if (by_stage[s].empty()) continue;
      if (f.marked()) gpu::stream_wait(octx.cuda_stream, f.grads_final(int(s)));
      enqueue(octx, by_stage[s]);
    }
  }
  norm_pending_ = true;
}

double AdamW::grad_norm(double grad_scale) {
  begin_grad_norm();
  norm_pending_ = false;
  const Tensor& t = ssq_[0];
  std::vector<double> each(size_t(t.numel()), 0.0);
  if (t.device.is_cuda()) {
    gpu::copy_to_host_async(each.data(), t.data, t.nbytes(), norm_stream_);
    gpu::stream_sync(norm_stream_);
  } else {
    std::copy(t.ptr<double>(), t.ptr<double>() + t.numel(), each.begin());
  }
  double ss = 0;
  for (double x : each) ss += x;  // in tensor order (buffers add 0)
  return grad_norm_of(ss, grad_scale);
}

double AdamW::step(int64_t step, double lr, double grad_scale) {
  const double norm = grad_norm(grad_scale);
  apply(step, lr, grad_scale, norm);
  return norm;
}

void AdamW::apply(int64_t step, double lr, double grad_scale, double norm) {
  AdamWOptions o;
  o.lr = lr;
  o.step = step;
  o.grad_scale = clip_scale(norm, grad_scale, opt_.grad_clip);  // grad_clip_verdict's rule
  join_step_stream();
  enqueue_update(o);
}

void AdamW::apply_on_device(int64_t step, double lr, double grad_scale, Tensor finite, bool force_skip) {
  begin_grad_norm();
  norm_pending_ = false;
  const Context& ctx = model_.context();
  if (!verdict_.allocated()) {
    verdict_.add("verdict", DType::f64, {3});
    verdict_.allocate();
  }
  Context vctx = ctx;
  vctx.cuda_stream = norm_stream_;  // behind the sums
  join_step_stream();  // and behind what the step's stream wrote of `finite`
  grad_clip_verdict(vctx, verdict_[0], ssq_[0], finite, grad_scale, opt_.grad_clip, force_skip);
  verdict_read_.begin(ctx.device, verdict_[0].data, verdict_[0].nbytes(), vctx.cuda_stream);
  const bool other_stream = vctx.cuda_stream != ctx.cuda_stream;
  if (other_stream) {
    if (!verdict_ready_) verdict_ready_ = gpu::event_create();
    gpu::event_record(verdict_ready_, vctx.cuda_stream);
  }
  AdamWOptions o;
  o.lr = lr;
  o.step = step;
  o.grad_scale = grad_scale;  // replaced by the verdict's scale on the device
  o.verdict = verdict_[0];
  enqueue_update(o);
  // The model's stream may read the verdict from here on; it waits only after the update's stages were enqueued
  // behind its work (join_step_stream's event), or their start would wait for a round trip between the streams.
  if (other_stream) gpu::stream_wait(ctx.cuda_stream, verdict_ready_);
}

StepVerdict AdamW::read_verdict() {
  const double* v = verdict_read_.take_as<double>();
  return StepVerdict{v[0], v[1], v[2]};
}

// With the overlap: the optimizer's stream waits for everything enqueued so far on the model's stream (backward, the
// loss sums) before the verdict and the update. Once per step.
void AdamW::join_step_stream() {
  if (!overlap_) return;
  const Context& ctx = model_.context();
  gpu::event_record(grads_ready_, ctx.cuda_stream);
  gpu::stream_wait(gpu::process_stream(ctx.device, gpu::kOptimizerStream), grads_ready_);
}

void AdamW::enqueue_update(AdamWOptions o) {
  const Context& ctx = model_.context();
  const Arena& p = model_.params();
  const Arena& g = model_.grad_arena();
  o.beta1 = opt_.beta1;
  o.beta2 = opt_.beta2;
  o.eps = opt_.eps;
  // one group, or one a stage in forward order (the overlap)
  std::vector<std::vector<AdamWSlot>> stages(overlap_ ? size_t(model_.num_param_stages()) : 1);
  for (size_t i = 0; i < p.size(); ++i) {
    if (is_buffer_name(p.name(i))) continue;
    // compute_param: the bf16 copy, refreshed in the same pass
    stages[overlap_ ? size_t(model_.param_stage(i)) : 0].push_back(
        {p[i], g[i], m_[i], v_[i], model_.compute_param(i), is_decay_exempt(p[i]) ? 0.0 : opt_.weight_decay});
  }
  if (!overlap_) {
    adamw_update_many(ctx, stages[0], o);
    return;
  }
  Context octx = ctx;
  octx.cuda_stream = gpu::process_stream(ctx.device, gpu::kOptimizerStream);
  ParamFences& f = model_.param_fences();
  for (size_t s = 0; s < stages.size(); ++s) {
    if (!stages[s].empty()) adamw_update_many(octx, stages[s], o);
    gpu::event_record(f.stage(int(s)), octx.cuda_stream);
  }
  model_.zero_grads_on(octx.cuda_stream);
  gpu::event_record(f.grads_free(), octx.cuda_stream);
}

void AdamW::set_overlap(bool on) {
  on = on && model_.context().device.is_cuda();
  if (on && !grads_ready_) grads_ready_ = gpu::event_create();
  if (!on) finish();
  overlap_ = on;
  model_.param_fences().set_on(on);
}

void AdamW::finish() const { model_.param_fences().sync(); }

AdamW::~AdamW() {
  if (!grads_ready_) return;
  finish();
  gpu::event_destroy(grads_ready_);
  if (verdict_ready_) gpu::event_destroy(verdict_ready_);
}

void AdamW::save(const std::string& path) const {
  finish();
  NamedTensors t;
  for (size_t i = 0; i < m_.size(); ++i) {
    if (is_buffer_name(m_.name(i))) continue;
    t.emplace_back("exp_avg." + m_.name(i), m_[i]);
    t.emplace_back("exp_avg_sq." + v_.name(i), v_[i]);
  }
  write_safetensors_file(path, t, opt_.state_dtype == DType::bf16 ? DType::bf16 : DType::f32);
}

void AdamW::load(const std::string& path) {
  finish();
  SafetensorsReader r = SafetensorsReader::open(path);
  for (size_t i = 0; i < m_.size(); ++i) {
    if (is_buffer_name(m_.name(i))) continue;
    r.read_into("exp_avg." + m_.name(i), m_[i]);
    r.read_into("exp_avg_sq." + v_.name(i), v_[i]);
  }
}

}  // namespace ds
