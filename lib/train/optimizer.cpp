#include "train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ckpt/safetensors.h"
#include "model/weights.h"

namespace ds {

AdamW::AdamW(Model& model, const OptimizerOptions& opt)
    : model_(model), opt_(opt), m_(model.context().device), v_(model.context().device), ssq_(model.context().device) {
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

// The sums land in ssq_ in the order they are enqueued (ssq_order_ says whose each is); nothing waits on the host
// until grad_norm() reads them.
void AdamW::begin_grad_norm() {
  if (norm_pending_) return;
  const Context& ctx = model_.context();
  const Arena& g = model_.grad_arena();
  std::vector<size_t> idx;
  for (size_t i = 0; i < g.size(); ++i)
    if (!is_buffer_name(g.name(i))) idx.push_back(i);
  if (!ssq_.allocated()) {
    ssq_.add("ssq", DType::f64, {std::max<int64_t>(int64_t(idx.size()), 1)});
    ssq_.allocate();
  }
  ssq_order_.clear();
  norm_stream_ = ctx.cuda_stream;
  auto enqueue = [&](const Context& c, const std::vector<size_t>& which) {
    std::vector<Tensor> ts;
    for (size_t i : which) ts.push_back(g[i]);
    const int64_t at = int64_t(ssq_order_.size());
    if (!ts.empty()) sum_squares_into(c, ssq_[0].slice0(at, at + int64_t(ts.size())), ts);
    ssq_order_.insert(ssq_order_.end(), which.begin(), which.end());
  };
  if (!overlap_) {
    enqueue(ctx, idx);
  } else {
    // On the optimizer's stream, a stage once backward has marked its gradients final (the reverse stage order),
    // while the rest of backward runs; the same sums as above, tensor by tensor.
    Context octx = ctx;
    octx.cuda_stream = gpu::process_stream(ctx.device, gpu::kOptimizerStream);
    norm_stream_ = octx.cuda_stream;
    ParamFences& f = model_.param_fences();
    if (!f.marked()) {  // not marked stage by stage: wait for the whole step
      gpu::event_record(grads_ready_, ctx.cuda_stream);
      gpu::stream_wait(octx.cuda_stream, grads_ready_);
    }
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
  const size_t n = ssq_order_.size();
  std::vector<double> got(n, 0.0);
  if (n > 0) {
    const Tensor& t = ssq_[0];
    if (t.device.is_cuda()) {
      gpu::copy_to_host_async(got.data(), t.data, n * sizeof(double), norm_stream_);
      gpu::stream_sync(norm_stream_);
    } else {
      std::copy(t.ptr<double>(), t.ptr<double>() + n, got.begin());
    }
  }
  std::vector<double> each(model_.grad_arena().size(), 0.0);
  for (size_t k = 0; k < n; ++k) each[ssq_order_[k]] = got[k];
  double ss = 0;
  for (size_t i = 0; i < each.size(); ++i) ss += each[i];  // in tensor order, as before (buffers add 0)
  return std::sqrt(ss) * grad_scale;
}

double AdamW::step(int64_t step, double lr, double grad_scale) {
  const double norm = grad_norm(grad_scale);
  apply(step, lr, grad_scale, norm);
  return norm;
}

void AdamW::apply(int64_t step, double lr, double grad_scale, double norm) {
  const Context& ctx = model_.context();
  double scale = grad_scale;
  if (opt_.grad_clip > 0 && norm > opt_.grad_clip) scale *= opt_.grad_clip / norm;
  const Arena& p = model_.params();
  const Arena& g = model_.grad_arena();
  AdamWOptions o;
  o.lr = lr;
  o.beta1 = opt_.beta1;
  o.beta2 = opt_.beta2;
  o.eps = opt_.eps;
  o.step = step;
  o.grad_scale = scale;
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
  gpu::event_record(grads_ready_, ctx.cuda_stream);
  gpu::stream_wait(octx.cuda_stream, grads_ready_);
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
