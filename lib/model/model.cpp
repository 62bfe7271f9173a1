#include "model/model.h"

#include <algorithm>
#include <cmath>

#include "core/env.h"
#include "core/rng.h"
#include "model/rope.h"
#include "ops/ops.h"

namespace ds {

namespace {
constexpr int kIgnore = -100;

// param_stage's rule, from the parameter's name (model.h)
int stage_of(const std::string& name, int64_t L) {
  const std::string layers = "model.layers.";
  if (name.rfind(layers, 0) == 0) {
    const int64_t l = std::stoll(name.substr(layers.size()));
    return int(l < L ? 1 + l : L + 2 + (l - L));
  }
  if (name.rfind("model.norm.", 0) == 0 || name.rfind("lm_head.", 0) == 0) return int(L + 1);
  return 0;
}
}

Model::Model(const ModelConfig& cfg, const Context& ctx, DType dtype)
    : cfg_(cfg), ctx_(ctx), side_(ctx, gpu::kStepSideStream, env_switch("DS_STEP_SIDE_STREAM")), dtype_(dtype),
      params_(ctx.device), buffers_(ctx.device), acts_(ctx.device), scratch_(ctx.device), grad_ws_(ctx.device) {
  DS_CHECK(dtype == DType::f32 || dtype == DType::f64 || dtype == DType::bf16, "model dtype must be f32, f64 or bf16");
  if (dtype == DType::f64 && ctx.device.is_cuda()) throw_usage("an f64 model runs on the CPU only");
  if (dtype == DType::bf16 && !ctx.device.is_cuda()) throw_usage("bf16 (mixed precision) needs --device cuda");
  // Every activation and backward temporary is written before it is read (the test suite checks it with
  // DS_WORKSPACE_POISON=1): no zero fill, which was ~16 GB of memset a bf16 bench step (lib/README.md).
  acts_.set_zero_fill(false);
  scratch_.set_zero_fill(false);
  grad_ws_.set_zero_fill(false);
  fuse_proj_ = ctx.device.is_cuda() && fused_proj_default();
  w_ = bind_weights(cfg_, params_, param_dtype());
  for (size_t i = 0; i < params_.size(); ++i) param_stage_.push_back(stage_of(params_.name(i), cfg_.num_hidden_layers));
  if (dtype_ == DType::bf16) {
    compute_ = std::make_unique<Arena>(ctx.device);
    cw_ = bind_weights(cfg_, *compute_, dtype_);
    // The router biases (buffers: selection only, updated in place) stay f32 and are shared with the master.
    for (size_t l = 0; l < w_.layers.size(); ++l) cw_.layers[l].moe_w.bias = w_.layers[l].moe_w.bias;
    for (size_t k = 0; k < w_.mtp.size(); ++k) cw_.mtp[k].block.moe_w.bias = w_.mtp[k].block.moe_w.bias;
  } else {
    cw_ = w_;
  }
  // buffers: RoPE frequencies and one load counter per MoE layer
  size_t i_freq = buffers_.add("rope.inv_freq", stat_dtype(), {cfg_.qk_rope_head_dim / 2});
  std::vector<size_t> i_load;
  for (int64_t l = 0; l < cfg_.num_hidden_layers + cfg_.num_nextn_predict_layers; ++l) {
    if (!cfg_.is_moe_layer(l)) continue;
    moe_layer_ids_.push_back(l);
    i_load.push_back(buffers_.add("l" + std::to_string(l) + ".moe.load", DType::i64, {cfg_.n_routed_experts}));
  }
  const size_t i_loss = buffers_.add("loss_sums", DType::f64, {1 + cfg_.num_nextn_predict_layers});
  buffers_.allocate();
  loss_sums_ = buffers_[i_loss];
  inv_freq_ = buffers_[i_freq];
  from_host(inv_freq_, rope_inv_freq(cfg_));
  for (size_t i : i_load) {
    MoeLoad load;
    load.counts = buffers_[i];
    loads_.push_back(load);
  }
  rope_attn_factor_ = ds::rope_attn_factor(cfg_);
  softmax_scale_ = ds::attention_softmax_scale(cfg_);
}

Model::~Model() = default;

void Model::enable_grads() {
  if (grads_) return;
  grads_ = std::make_unique<Arena>(ctx_.device);
  gw_ = bind_weights(cfg_, *grads_, param_dtype());
  expert_grad_.assign(grads_->size(), false);
  for (size_t i = 0; i < grads_->size(); ++i)
    expert_grad_[i] = grads_->name(i).find(".mlp.experts.*.") != std::string::npos;
}

void Model::sync_compute_weights() {
  if (!compute_) return;
  for (size_t i = 0; i < params_.size(); ++i)
    if (!is_buffer_name(params_.name(i))) copy(ctx_, (*compute_)[i], params_[i]);
}

void Model::zero_grads() {
  if (!grads_) return;
  if (!grads_zeroed_on_stream_) {
    fences_.wait_grads_free(nullptr);  // the memsets below run on the legacy stream
    grads_->zero_except(expert_grad_);
    fences_.set_marked(false);
  }
  grads_zeroed_on_stream_ = false;
  expert_grads_pending_ = true;
}

void Model::zero_grads_on(void* cuda_stream) {
  if (!grads_) return;
  grads_->zero_except(expert_grad_, cuda_stream);
  fences_.set_marked(false);
  grads_zeroed_on_stream_ = true;
  expert_grads_pending_ = true;
}

void Model::settle_expert_grads() {
  if (!expert_grads_pending_) return;
  fences_.wait_grads_free(nullptr);
  fences_.set_marked(false);
  for (size_t i = 0; i < grads_->size(); ++i)
    if (expert_grad_[i]) device_memset0(ctx_.device, (*grads_)[i].data, (*grads_)[i].nbytes());
  expert_grads_pending_ = false;
}

void Model::init_random(uint64_t seed) {
  const std::vector<uint64_t> stream = init_streams(params_);
  for (size_t i = 0; i < params_.size(); ++i) {
    const std::string& name = params_.name(i);
    const Tensor& t = params_[i];
    std::vector<double> v(size_t(t.numel()));
    if (is_buffer_name(name)) {
      std::fill(v.begin(), v.end(), 0.0);
    } else if (t.ndim == 1) {
      std::fill(v.begin(), v.end(), 1.0);  // RMSNorm weights
    } else {
      // The stream is the tensor's index in the fixed table (as it was declared before q_a and kv_a were made
      // adjacent: init_streams), so each tensor's values depend only on the seed.
      for (size_t j = 0; j < v.size(); ++j) v[j] = cfg_.initializer_range * rng_normal_at(seed, 1000 + stream[i], j);
    }
    from_host(t, v);
  }
  sync_compute_weights();
}

LayerEnv Model::env() const {
  LayerEnv e;
  e.ctx = &ctx_;
  e.side = side_.active() ? &side_ : nullptr;
  e.cfg = &cfg_;
  e.dtype = dtype_;
  e.sdtype = stat_dtype();
  e.B = B_;
  e.T = T_;
  e.pos = pos_;
  e.inv_freq = inv_freq_;
  e.rope_attn_factor = rope_attn_factor_;
  e.softmax_scale = softmax_scale_;
  e.balance_alpha = fopt_.balance_alpha;
  e.fuse_proj = fuse_proj_;
  return e;
}

// The batch's tables go up on the step's stream: cudaMemcpy on the legacy stream waited for all of the step's
// earlier work (the router-bias updates) with the host blocked, three times a step (~0.1 ms on the H200).
void Model::upload_batch(const Batch& b) {
  const int64_t N = b.B * b.T, W = b.T + 1;
  DS_CHECK(int64_t(b.tokens.size()) == b.B * W, "batch tokens must be [B, T+1]");
  DS_CHECK(b.loss_mask.empty() || b.loss_mask.size() == b.tokens.size(), "loss_mask must match tokens");
  for (int32_t t : b.tokens)
    if (t < 0 || t >= cfg_.vocab_size)
      throw_bad_input("token id " + std::to_string(t) + " outside the vocabulary (size " +
                      std::to_string(cfg_.vocab_size) + ")");
  auto counted = [&](int64_t j) { return b.loss_mask.empty() || b.loss_mask[size_t(j)] != 0; };
  std::vector<int32_t> ids(N), tgt(N), pos(N);
  n_targets_ = 0;
  for (int64_t s = 0; s < b.B; ++s)
    for (int64_t i = 0; i < b.T; ++i) {
      const int64_t n = s * b.T + i, j = s * W + i;
      ids[n] = b.tokens[j];
      pos[n] = int32_t(i);
      tgt[n] = counted(j + 1) ? b.tokens[j + 1] : kIgnore;
      n_targets_ += tgt[n] != kIgnore;
    }
  ids_ = acts_.alloc("input_ids", DType::i32, {N});
  targets_ = acts_.alloc("targets", DType::i32, {N});
  pos_ = acts_.alloc("positions", DType::i32, {N});
  from_host(ids_, ids, ctx_.cuda_stream);
  from_host(targets_, tgt, ctx_.cuda_stream);
  from_host(pos_, pos, ctx_.cuda_stream);
  const int64_t D = fopt_.mtp ? cfg_.num_nextn_predict_layers : 0;
  mtp_acts_.assign(size_t(D), MtpActs{});
  for (int64_t k = 1; k <= D; ++k) {
    MtpActs& m = mtp_acts_[k - 1];
    std::vector<int32_t> mids(N), mt(N);
    m.n_targets = 0;
    for (int64_t s = 0; s < b.B; ++s)
      for (int64_t i = 0; i < b.T; ++i) {
        const int64_t n = s * b.T + i, j = s * W + i;
        mids[n] = i + k <= b.T ? b.tokens[j + k] : 0;  // past the window: any id, causally invisible
        mt[n] = (i + k + 1 <= b.T && counted(j + k + 1)) ? b.tokens[j + k + 1] : kIgnore;
        m.n_targets += mt[n] != kIgnore;
      }
    m.ids = acts_.alloc("mtp" + std::to_string(k) + ".input_ids", DType::i32, {N});
    m.targets = acts_.alloc("mtp" + std::to_string(k) + ".targets", DType::i32, {N});
    from_host(m.ids, mids, ctx_.cuda_stream);
    from_host(m.targets, mt, ctx_.cuda_stream);
  }
}

LossInfo Model::forward(const Batch& batch, const ForwardOptions& opt) {
  DS_CHECK(batch.B > 0 && batch.T > 0, "empty batch");
  fopt_ = opt;
  B_ = batch.B;
  T_ = batch.T;
  acts_.reset();
  d_logits_fused_ = Tensor{};
  upload_batch(batch);
  const LayerEnv e = env();
  const int64_t N = e.N(), D = cfg_.hidden_size, V = cfg_.vocab_size;
  const DType sdt = stat_dtype();
  LossInfo info;

  emb_ = acts_.alloc("embed", dtype_, {N, D});
  fences_.wait_stage(ctx_.cuda_stream, 0);
  embedding_forward(ctx_, emb_, ids_, cw_.embed_tokens);
  layer_acts_.assign(size_t(cfg_.num_hidden_layers), BlockActs{});
  Tensor x = emb_;
  size_t moe_i = 0;
  for (int64_t l = 0; l < cfg_.num_hidden_layers; ++l) {
    BlockActs& a = layer_acts_[l];
    MoeLoad* load = cw_.layers[l].moe ? &loads_[moe_i++] : nullptr;
    fences_.wait_stage(ctx_.cuda_stream, int(1 + l));
    block_forward(e, acts_, "l" + std::to_string(l), a, load, x, cw_.layers[l]);
    info.balance_loss += cw_.layers[l].moe ? a.moe.balance_loss : 0.0;
    x = a.x_out;
  }
  final_n_ = acts_.alloc("final_norm", dtype_, {N, D});
  final_rstd_ = acts_.alloc("final_norm_rstd", sdt, {N});
  fences_.wait_stage(ctx_.cuda_stream, int(cfg_.num_hidden_layers + 1));
  rmsnorm_forward(ctx_, final_n_, final_rstd_, x, cw_.norm, cfg_.rms_norm_eps);
  if (!fopt_.head_rows.empty()) {  // a prefill: the head at the rows that sample, no loss (and no host sync)
    DS_CHECK(mtp_acts_.empty(), "forward: head_rows needs the MTP modules off");
    const int64_t R = int64_t(fopt_.head_rows.size());
    Tensor rows = acts_.alloc("head_rows", DType::i32, {R}), hn = acts_.alloc("head_rows_norm", dtype_, {R, D});
    from_host(rows, fopt_.head_rows);
    embedding_forward(ctx_, hn, rows, final_n_);  // a row gather
    logits_ = acts_.alloc("logits", sdt, {R, V});
    matmul_forward(ctx_, logits_, hn, cw_.lm_head);
    if (fopt_.logit_temperature != 1.0) scale(ctx_, logits_, 1.0 / fopt_.logit_temperature);
    have_forward_ = false;  // backward, target_logprobs and distill_loss need a full forward
    return info;
  }
  const DType ldt = fopt_.compute_dtype_logits ? dtype_ : sdt;  // f32 in mixed precision unless asked otherwise
  logits_ = acts_.alloc("logits", ldt, {N, V});
  matmul_forward(ctx_, logits_, final_n_, cw_.lm_head);
  if (fopt_.logit_temperature != 1.0) scale(ctx_, logits_, 1.0 / fopt_.logit_temperature);
  loss_ = acts_.alloc("loss", sdt, {N});
  lse_ = acts_.alloc("lse", sdt, {N});
  if (fopt_.loss_grad) {
    // A buffer of its own, not backward's d_logits: the MTP heads' backward reuses that before the main head's
    // product reads this.
    d_logits_fused_ = acts_.alloc("d_logits_main", dtype_, {N, V});
    cross_entropy_fused(ctx_, loss_, lse_, d_logits_fused_, logits_, targets_, main_grad_scale(), kIgnore);
  } else {
    cross_entropy_forward(ctx_, loss_, lse_, logits_, targets_, kIgnore);
  }
  info.n_targets = n_targets_;

  // MTP modules, each one token further ahead
  Tensor prev = final_n_;
  const int64_t depth = int64_t(mtp_acts_.size());
  for (int64_t k = 1; k <= depth; ++k) {
    MtpActs& m = mtp_acts_[k - 1];
    const MtpWeights& mw = cw_.mtp[k - 1];
    const std::string p = "mtp" + std::to_string(k) + ".";
    fences_.wait_stage(ctx_.cuda_stream, int(cfg_.num_hidden_layers + 1 + k));
    m.emb = acts_.alloc(p + "embed", dtype_, {N, D});
    embedding_forward(ctx_, m.emb, m.ids, cw_.embed_tokens);
    m.emb_n = acts_.alloc(p + "enorm", dtype_, {N, D});
    m.emb_rstd = acts_.alloc(p + "enorm_rstd", sdt, {N});
    rmsnorm_forward(ctx_, m.emb_n, m.emb_rstd, m.emb, mw.enorm, cfg_.rms_norm_eps);
    m.prev_n = acts_.alloc(p + "hnorm", dtype_, {N, D});
    m.prev_rstd = acts_.alloc(p + "hnorm_rstd", sdt, {N});
    rmsnorm_forward(ctx_, m.prev_n, m.prev_rstd, prev, mw.hnorm, cfg_.rms_norm_eps);
    m.cat = acts_.alloc(p + "concat", dtype_, {N, 2 * D});
    copy_cols(ctx_, m.cat, 0, m.emb_n, 0, D);
    copy_cols(ctx_, m.cat, D, m.prev_n, 0, D);
    m.hp = acts_.alloc(p + "eh_proj", dtype_, {N, D});
    matmul_forward(ctx_, m.hp, m.cat, mw.eh_proj);
    MoeLoad* load = mw.block.moe ? &loads_[moe_i++] : nullptr;
    block_forward(e, acts_, "l" + std::to_string(cfg_.num_hidden_layers + k - 1), m.block, load, m.hp, mw.block);
    info.balance_loss += mw.block.moe ? m.block.moe.balance_loss : 0.0;
    m.head_n = acts_.alloc(p + "head_norm", dtype_, {N, D});
    m.head_rstd = acts_.alloc(p + "head_norm_rstd", sdt, {N});
    rmsnorm_forward(ctx_, m.head_n, m.head_rstd, m.block.x_out, mw.shared_head_norm, cfg_.rms_norm_eps);
    m.logits = acts_.alloc(p + "logits", ldt, {N, V});
    matmul_forward(ctx_, m.logits, m.head_n, cw_.lm_head);
    m.loss = acts_.alloc(p + "loss", sdt, {N});
    m.lse = acts_.alloc(p + "lse", sdt, {N});
    cross_entropy_forward(ctx_, m.loss, m.lse, m.logits, m.targets, kIgnore);
    prev = m.block.x_out;
  }
  have_forward_ = true;
  if (fopt_.defer_loss) info.loss = info.main_loss = info.mtp_loss = std::nan("");
  else read_loss(info);
  return info;
}

void Model::read_loss(LossInfo& info) {
  begin_loss_read();
  finish_loss_read(info);
}

void Model::begin_loss_read() {
  DS_CHECK(have_forward_, "read_loss without forward");
  sum_into(ctx_, loss_sums_.slice0(0, 1), loss_);  // sum()'s values, left on the device
  loss_counts_.n_targets = n_targets_;
  loss_counts_.mtp_targets.clear();
  loss_counts_.mtp_lambda = fopt_.mtp_lambda;
  for (size_t k = 0; k < mtp_acts_.size(); ++k) {
    sum_into(ctx_, loss_sums_.slice0(int64_t(k) + 1, int64_t(k) + 2), mtp_acts_[k].loss);
    loss_counts_.mtp_targets.push_back(mtp_acts_[k].n_targets);
  }
  loss_read_.begin(ctx_.device, loss_sums_.data, sizeof(double) * (1 + mtp_acts_.size()), ctx_.cuda_stream);
}

void Model::finish_loss_read(LossInfo& info) {
  const double* s = loss_read_.take_as<double>();
  const LossCounts& c = loss_counts_;
  info.main_loss = c.n_targets ? s[0] / double(c.n_targets) : 0.0;
  const int64_t depth = int64_t(c.mtp_targets.size());
  info.mtp_loss = 0.0;
  for (int64_t k = 0; k < depth; ++k)
    info.mtp_loss += (c.mtp_targets[size_t(k)] ? s[k + 1] / double(c.mtp_targets[size_t(k)]) : 0.0) / double(depth);
  info.loss = info.main_loss + (depth ? c.mtp_lambda * info.mtp_loss : 0.0) + info.balance_loss;
}

std::vector<double> Model::target_logprobs() const {
  DS_CHECK(have_forward_, "target_logprobs without forward");
  std::vector<double> lp = to_host_f64(loss_);
  for (double& x : lp) x = -x;  // ignored rows hold 0
  return lp;
}

double Model::main_grad_scale() const {
  return n_targets_ ? 1.0 / double(n_targets_) / fopt_.logit_temperature : 0.0;
}

void Model::backward() { backward_impl(nullptr); }

void Model::backward_policy(const std::vector<double>& d_logp) {
  DS_CHECK(mtp_acts_.empty(), "backward_policy needs a forward without MTP");
  DS_CHECK(int64_t(d_logp.size()) == B_ * T_, "backward_policy: one dL/dlogp per row");
  backward_impl(&d_logp);
}

double Model::distill_loss(Tensor teacher_logits) {
  DS_CHECK(have_forward_, "distill_loss without forward");
  DS_CHECK(logits_.dtype == teacher_logits.dtype, "distill_loss: the student's logits are " +
                                                      std::string(dtype_name(logits_.dtype)) + ", the teacher's " +
                                                      dtype_name(teacher_logits.dtype) + " (compute_dtype_logits?)");
  if (n_targets_ == 0) return 0.0;
  Tensor kl = acts_.alloc("kd_loss", stat_dtype(), {B_ * T_});
  kl_div_forward(ctx_, kl, logits_, teacher_logits, targets_, kIgnore);
  return sum(ctx_, kl) / double(n_targets_);
}

void Model::backward_distill(Tensor teacher_logits, double kd_weight) {
  DS_CHECK(!teacher_logits.empty(), "backward_distill needs the teacher's logits");
  backward_impl(nullptr, teacher_logits, kd_weight);
}

void Model::backward_impl(const std::vector<double>* d_logp, Tensor kd_teacher, double kd_weight) {
  DS_CHECK(have_forward_, "backward without forward");
  enable_grads();
  fences_.wait_grads_free(ctx_.cuda_stream);  // the optimizer's overlapped update has read the gradients
  fences_.wait_grads_free(nullptr);           // (and for the legacy-stream memsets below)
  fences_.set_marked(true);  // each stage's gradients marked final below, as backward finishes them
  grad_ws_.reset();
  LayerEnv e = env();
  const int64_t N = e.N(), D = cfg_.hidden_size, V = cfg_.vocab_size;
  const int64_t depth = int64_t(mtp_acts_.size());
  if (expert_grads_pending_) {
    // Every layer's backward below writes its routed experts' gradients over; the MTP modules past this forward's
    // depth run none, so theirs are zeroed here.
    e.expert_grads = Accum::overwrite;
    for (size_t k = size_t(depth); k < gw_.mtp.size(); ++k) {
      const MoeWeights& m = gw_.mtp[k].block.moe_w;
      if (!gw_.mtp[k].block.moe) continue;
      for (const Tensor* t : {&m.gate_proj, &m.up_proj, &m.down_proj})
        device_memset0(ctx_.device, t->data, t->nbytes());
    }
    expert_grads_pending_ = false;
  }
  // Gradients final (param_fences.h), stage by stage as backward finishes them: first the MTP modules this forward
  // did not run
  const int64_t L = cfg_.num_hidden_layers;
  for (int64_t k = depth; k < cfg_.num_nextn_predict_layers; ++k)
    fences_.mark_grads_final(ctx_.cuda_stream, int(L + 2 + k));
  // d_logits_c is what the head's backward reads (the compute dtype: bf16 in mixed precision), and
  // cross_entropy_backward writes it directly (the f32 gradient rounded once, no f32 copy of [N, V]). Only logit
  // distillation, whose kl_div_backward adds into the logits' dtype, routes the main head through d_logits (f32).
  const bool distill = !kd_teacher.empty() && n_targets_ > 0;
  const bool mixed = stat_dtype() != dtype_;
  // The forward wrote the main head's gradient (ForwardOptions::loss_grad); policy and distillation recompute it.
  const bool fused = !d_logits_fused_.empty() && !d_logp && !distill;
  Tensor d_logits_c =
      fused && !depth ? Tensor{} : grad_ws_.alloc(mixed ? "d_logits_compute" : "d_logits", dtype_, {N, V});
  Tensor d_logits = distill && mixed ? grad_ws_.alloc("d_logits", stat_dtype(), {N, V}) : d_logits_c;
  Tensor d_final_n = grad_ws_.alloc("d_final_norm", dtype_, {N, D});

  // MTP modules in reverse: module k's input gradient flows into module k-1's output (or the final norm)
  Tensor d_h = depth ? grad_ws_.alloc("d_mtp_out", dtype_, {N, D}) : Tensor{};
  Tensor d_head_n = grad_ws_.alloc("d_head_norm", dtype_, {N, D});
  Tensor d_cat = grad_ws_.alloc("d_mtp_concat", dtype_, {N, 2 * D});
  Tensor d_part = grad_ws_.alloc("d_mtp_part", dtype_, {N, D});
  Tensor d_emb = grad_ws_.alloc("d_mtp_embed", dtype_, {N, D});
  for (int64_t k = depth; k >= 1; --k) {
    MtpActs& m = mtp_acts_[k - 1];
    MtpWeights& mw = cw_.mtp[k - 1];
    MtpWeights& mg = gw_.mtp[k - 1];
    if (k == depth) fill(ctx_, d_h, 0.0);  // the deepest module's output feeds nothing else
    const double scale = m.n_targets ? fopt_.mtp_lambda / double(depth) / double(m.n_targets) : 0.0;
    cross_entropy_backward(ctx_, d_logits_c, m.logits, m.lse, m.targets, scale, kIgnore);
    matmul_backward(ctx_, d_head_n, gw_.lm_head, d_logits_c, m.head_n, cw_.lm_head);
    rmsnorm_backward(ctx_, d_h, mg.shared_head_norm, d_head_n, m.block.x_out, mw.shared_head_norm, m.head_rstd,
                     Accum::add);
    block_backward(e, scratch_, d_h, mg.block, m.block, mw.block);  // d_h: d(out) -> d(eh_proj output)
    matmul_backward(ctx_, d_cat, mg.eh_proj, d_h, m.cat, mw.eh_proj);
    copy_cols(ctx_, d_part, 0, d_cat, 0, D);
    rmsnorm_backward(ctx_, d_emb, mg.enorm, d_part, m.emb, mw.enorm, m.emb_rstd);
    embedding_backward(ctx_, gw_.embed_tokens, d_emb, m.ids);
    copy_cols(ctx_, d_part, 0, d_cat, D, D);
    Tensor prev = k == 1 ? final_n_ : mtp_acts_[k - 2].block.x_out;
    // d_h now becomes the gradient of the previous depth's output
    rmsnorm_backward(ctx_, k == 1 ? d_final_n : d_h, mg.hnorm, d_part, prev, mw.hnorm, m.prev_rstd);
    fences_.mark_grads_final(ctx_.cuda_stream, int(L + 1 + k));
  }

  // main head
  Tensor d_main = distill ? d_logits : d_logits_c;  // where the cross-entropy gradient goes
  if (d_logp) {
    // d(logits/T) = -dL/dlogp * (softmax - onehot); the chain through the division by T gives 1/T.
    Tensor row_scale = grad_ws_.alloc("d_logp_neg", stat_dtype(), {N});
    std::vector<double> neg(d_logp->size());
    for (size_t i = 0; i < neg.size(); ++i) neg[i] = -(*d_logp)[i];
    from_host(row_scale, neg);
    cross_entropy_backward(ctx_, d_main, logits_, lse_, targets_, 1.0 / fopt_.logit_temperature, kIgnore,
                           Accum::overwrite, row_scale);
  } else if (!fused) {
    cross_entropy_backward(ctx_, d_main, logits_, lse_, targets_, main_grad_scale(), kIgnore);
  }
  if (distill) {
    kl_div_backward(ctx_, d_logits, logits_, kd_teacher, targets_, kd_weight / double(n_targets_), kIgnore,
                    Accum::add);
    if (d_logits.data != d_logits_c.data) copy(ctx_, d_logits_c, d_logits);
  }
  matmul_backward(ctx_, d_final_n, gw_.lm_head, fused ? d_logits_fused_ : d_logits_c, final_n_, cw_.lm_head,
                  depth ? Accum::add : Accum::overwrite);
  Tensor d_resid = grad_ws_.alloc("d_resid", dtype_, {N, D});
  Tensor x_last = cfg_.num_hidden_layers ? layer_acts_.back().x_out : emb_;
  rmsnorm_backward(ctx_, d_resid, gw_.norm, d_final_n, x_last, cw_.norm, final_rstd_);
  fences_.mark_grads_final(ctx_.cuda_stream, int(L + 1));
  for (int64_t l = L - 1; l >= 0; --l) {
    block_backward(e, scratch_, d_resid, gw_.layers[l], layer_acts_[l], cw_.layers[l]);
    fences_.mark_grads_final(ctx_.cuda_stream, int(1 + l));
  }
  embedding_backward(ctx_, gw_.embed_tokens, d_resid, ids_);
  fences_.mark_grads_final(ctx_.cuda_stream, 0);
}

MoeLoad* Model::moe_load(int64_t layer) {
  for (size_t i = 0; i < moe_layer_ids_.size(); ++i)
    if (moe_layer_ids_[i] == layer) return &loads_[i];
  return nullptr;
}

// The counters are neighbours in the buffer arena, so one copy of the span that holds them all (on CUDA into a
// page-locked buffer: one synchronous copy a layer took ~27 us each, ~0.3 ms a step at the bench's 11 MoE layers on
// the H200; one asynchronous copy a layer still ~12 us each).
std::pair<const char*, size_t> Model::load_counters_span() const {
  const char* lo = static_cast<const char*>(loads_[0].counts.data);
  const char* hi = lo;
  for (const MoeLoad& l : loads_) {
    DS_CHECK(l.counts.dtype == DType::i64, "expert_load: counts must be i64");
    const char* p = static_cast<const char*>(l.counts.data);
    lo = std::min(lo, p);
    hi = std::max(hi, p + l.counts.nbytes());
  }
  const size_t bytes = size_t(hi - lo);
  DS_CHECK(bytes <= buffers_.bytes(), "expert_load: the load counters are not in one buffer arena");
  return {lo, bytes};
}

void Model::begin_expert_load_read() const {
  if (loads_.empty()) return;
  const auto [lo, bytes] = load_counters_span();
  load_read_.begin(ctx_.device, lo, bytes, ctx_.cuda_stream);
}

std::vector<std::vector<int64_t>> Model::expert_load() const {
  std::vector<std::vector<int64_t>> out;
  if (loads_.empty()) return out;
  if (!load_read_.pending()) begin_expert_load_read();
  const unsigned char* got = load_read_.take();
  const char* lo = load_counters_span().first;
  for (const MoeLoad& l : loads_) {
    const size_t at = size_t(static_cast<const char*>(l.counts.data) - lo);
    const auto* p = reinterpret_cast<const int64_t*>(got + at);
    out.emplace_back(p, p + l.counts.numel());
  }
  return out;
}

void Model::reset_expert_load() {
  for (MoeLoad& l : loads_) {
    if (l.counts.device.is_cuda()) gpu::memset0_async(l.counts.data, l.counts.nbytes(), ctx_.cuda_stream);
    else device_memset0(l.counts.device, l.counts.data, l.counts.nbytes());
    std::fill(l.gpu_tokens.begin(), l.gpu_tokens.end(), 0);
  }
}

void Model::set_placement(const std::vector<int64_t>& layer_ids, const std::vector<balance::LayerPlacement>& layers,
                          int64_t gpus) {
  DS_CHECK(layer_ids.size() == layers.size() && gpus > 0, "set_placement: one placement per layer id");
  placements_ = layers;
  for (MoeLoad& l : loads_) l.placement = nullptr;
  for (size_t i = 0; i < layer_ids.size(); ++i) {
    MoeLoad* l = moe_load(layer_ids[i]);
    if (!l) throw_bad_input("placement names layer " + std::to_string(layer_ids[i]) + ", which is not a MoE layer");
    if (int64_t(placements_[i].logcnt.size()) != cfg_.n_routed_experts)
      throw_bad_input("placement of layer " + std::to_string(layer_ids[i]) + " has " +
                      std::to_string(placements_[i].logcnt.size()) + " experts, the model " +
                      std::to_string(cfg_.n_routed_experts));
    l->placement = &placements_[i];
    l->gpus = gpus;
    l->gpu_tokens.assign(size_t(gpus), 0);
  }
}

std::vector<std::pair<int64_t, std::vector<int64_t>>> Model::gpu_load() const {
  std::vector<std::pair<int64_t, std::vector<int64_t>>> out;
  for (size_t i = 0; i < loads_.size(); ++i)
    if (loads_[i].placement) out.emplace_back(moe_layer_ids_[i], loads_[i].gpu_tokens);
  return out;
}

void Model::update_router_bias(double gamma, Tensor verdict) {
  if (!cfg_.has_router_bias() || gamma == 0.0) return;
  std::vector<Tensor> biases, loads;  // one launch for every layer's (CUDA)
  for (auto& bw : w_.layers)
    if (bw.moe) biases.push_back(bw.moe_w.bias);
  for (auto& m : w_.mtp)
    if (m.block.moe) biases.push_back(m.block.moe_w.bias);
  for (const MoeLoad& l : loads_) loads.push_back(l.counts);
  moe_bias_update_many(ctx_, biases, loads, gamma, verdict);
}

}  // namespace ds
