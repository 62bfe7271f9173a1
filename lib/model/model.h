#pragma once
// DeepSeek-V3 for training, RL and serving: embedding -> L decoder blocks -> final norm -> lm_head, plus D
// Multi-Token Prediction modules (MODEL.md §4). Reads like DeepSeek's model.py, with the backward written out.
//
// Loss of a batch: L = CE_main + (lambda / D) * sum_k CE_k + sum_layers L_bal (sequence-wise, weight alpha).
// MTP module k (1-based) at position i takes [enorm(Emb(t_{i+k})) ; hnorm(h^{k-1}_i)] -> eh_proj -> block ->
// shared_head.norm -> lm_head and predicts t_{i+k+1}. h^0 is the main model's output AFTER its final norm
// (as vLLM feeds DeepSeek's released MTP weights).
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "model/config.h"
#include "model/layers.h"
#include "model/param_fences.h"
#include "model/weights.h"
#include "tensor/arena.h"
#include "tensor/readback.h"
#include "tensor/workspace.h"

namespace ds {

// One micro-batch on the host: B windows of T+1 tokens. Position i of a window is trained to predict token i+1
// (and MTP module k token i+k+1) where loss_mask of that target token is 1 (empty mask = all 1).
struct Batch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> tokens;     // [B, T+1]
  std::vector<uint8_t> loss_mask;  // [B, T+1] or empty
};

struct ForwardOptions {
  double balance_alpha = 0.0;  // sequence-wise balance loss weight (V3: 1e-4); 0 = off
  double mtp_lambda = 0.3;     // MTP loss weight (V3: 0.3, then 0.1)
  bool mtp = true;             // run the MTP modules (when the config has any)
  double logit_temperature = 1.0;  // the main head's logits are divided by this (RL: sampling temperature)
  // Inference (a prefill): when not empty, the main head runs only at these rows of [B*T] — logits() is then
  // [head_rows.size(), V] in this order — and no loss is computed (nothing to differentiate). Needs mtp off.
  std::vector<int32_t> head_rows;
  // The caller runs backward() next: the main head's cross-entropy gradient is computed in the forward's pass over
  // the logits (cross_entropy_fused), and backward() skips its own pass over them; the same values. The gradient
  // lives in the activations' workspace ([B*T, V], the compute dtype: memory backward() no longer takes, unless MTP
  // modules run and need theirs too). backward_policy / backward_distill still work (they recompute it). Ignored
  // with head_rows. Off in the trainer: on the H200 (18th session, bench/README.md) the fused pass took 1.45 ms of a
  // step against 1.43 for the two passes (one 512-thread block an SM holds a 32,000-wide f32 row in registers), and
  // the activations' workspace grew by a chunk (training peak 27.4 -> 37.8 GiB).
  bool loss_grad = false;
  // The caller runs backward() and then read_loss() on what forward returned: the cross-entropy sums (a host read
  // each, the main head's and each MTP module's) wait until then, so the host enqueues backward while the GPU still
  // runs the forward instead of after it (on the H200 the GPU sat ~90 us a step between the loss and backward's first
  // kernel: bench/gpu/SESSIONS.md, 26th). Until read_loss, LossInfo's loss, main_loss and mtp_loss are NaN; the
  // balance loss (when on) is read at once as before. Ignored with head_rows. The same values either way.
  bool defer_loss = false;
  // The heads' logits in the compute dtype (bf16 in mixed precision, as transformers' bf16 model keeps them) instead
  // of f32: the head's product writes, and the loss's two passes read, half the bytes ([B*T, V]: 1 GB at the bench's
  // 16 x 1024 x 32,000). The softmax's sums, the losses and lse stay f32, and the gradient is computed in f32 and
  // rounded once, as with f32 logits. The trainer's default (DS_BF16_LOGITS=0 turns it off); not with head_rows, and
  // not for distillation (kl_div reads the teacher's f32 logits beside these).
  bool compute_dtype_logits = false;
};

struct LossInfo {
  double loss = 0;          // the total that backward differentiates
  double main_loss = 0;     // mean next-token cross-entropy
  double mtp_loss = 0;      // mean over modules of their mean cross-entropy (unweighted)
  double balance_loss = 0;  // sum over MoE layers
  int64_t n_targets = 0;    // counted main targets
};

class Model {
 public:
  // dtype: f32 or f64 (CPU), f32 or bf16 (CUDA). With bf16 (mixed precision) the parameters stay f32 ("master
  // weights", what params()/weights() hold, what the optimizer updates and checkpoints store) and forward/backward
  // run on a bf16 copy (compute_weights()); gradients, saved statistics, logits (but see
  // ForwardOptions::compute_dtype_logits) and losses are f32.
  Model(const ModelConfig& cfg, const Context& ctx, DType dtype = DType::f32);
  ~Model();

  const ModelConfig& config() const { return cfg_; }
  const Context& context() const { return ctx_; }
  // The CUDA stream every op of this model runs on (nullptr = the legacy default stream); the engine sets its own
  // while it decodes (CUDA graphs cannot capture the legacy stream).
  void set_cuda_stream(void* stream) { ctx_.cuda_stream = stream; }
  DType dtype() const { return dtype_; }  // activations and compute weights
  DType param_dtype() const { return stat_dtype(); }  // parameters, gradients, optimizer state
  DType stat_dtype() const { return dtype_ == DType::bf16 ? DType::f32 : dtype_; }  // rstd, lse, losses, logits
  ModelWeights& weights() { return w_; }
  Arena& params() { return params_; }
  // The weights forward/backward read: weights() itself, or its bf16 copy in mixed precision. After changing
  // weights() (an optimizer step, a load), call sync_compute_weights(). The router biases are shared (f32).
  ModelWeights& compute_weights() { return cw_; }
  void sync_compute_weights();
  // Parameter i's compute copy (bf16) in mixed precision; empty otherwise (the parameter itself is computed with).
  Tensor compute_param(size_t i) const { return compute_ ? (*compute_)[i] : Tensor{}; }
  // The gradient arena mirrors the parameter arena (same names and order). Allocated on first use.
  void enable_grads();
  bool has_grads() const { return grads_ != nullptr; }
  ModelWeights& grads() {
    settle_expert_grads();
    return gw_;
  }
  Arena& grad_arena() {
    settle_expert_grads();
    return *grads_;
  }
  // Gradients to zero. The routed experts' are left for the next backward to write over (or for grads() /
  // grad_arena() to zero, if they are read before one).
  void zero_grads();
  // The same on a CUDA stream (the optimizer's, after its update has read them); the next zero_grads() then has
  // nothing left to do.
  void zero_grads_on(void* cuda_stream);

  // The optimizer's overlap with the step (param_fences.h). Parameter i's stage, in the order forward reads them:
  // 0 the embedding (and anything not named below), 1 + l decoder layer l, L + 1 the final norm and lm_head,
  // L + 2 + k MTP module k (0-based). Forward waits for each stage's update before the stage's first kernel,
  // backward (and any memset of the gradients) for the gradients' release; backward marks each stage's gradients
  // final as it finishes them (the reverse order, the embedding's last).
  int param_stage(size_t i) const { return param_stage_[i]; }
  int num_param_stages() const { return int(cfg_.num_hidden_layers + 2 + cfg_.num_nextn_predict_layers); }
  ParamFences& param_fences() { return fences_; }

  // HF-style init: N(0, initializer_range) for matrices and embeddings, 1 for norms, 0 for router biases.
  void init_random(uint64_t seed);

  // Runs the model, keeping what backward needs. Returns the losses (targets from batch.tokens).
  LossInfo forward(const Batch& batch, const ForwardOptions& opt = {});
  // Accumulates d(loss)/d(params) of the last forward into grads().
  void backward();
  // Fills in the losses a forward with ForwardOptions::defer_loss left NaN in info (from its per-row losses, kept
  // until the next forward; backward does not touch them; forward without it calls this itself). A host read: on
  // CUDA it waits for what is enqueued. The same as begin_loss_read() then finish_loss_read(info).
  void read_loss(LossInfo& info);
  // read_loss in two halves, for a host that collects a step's losses while the next step runs (the trainer):
  // begin_loss_read() enqueues the sums of the last forward's per-row losses into loss_sums() (f64 [1 + MTP modules]
  // on the model's device: the main head's, then each module's; a skipped step's verdict reads them) and their copy
  // to the host, with no host wait; finish_loss_read(info) fills in info from that copy as read_loss would, waiting
  // for it. Forwards in between change nothing of it.
  void begin_loss_read();
  void finish_loss_read(LossInfo& info);
  Tensor loss_sums() const { return loss_sums_; }
  // Policy-gradient use: log p(target) under softmax(logits / T) for every row of the last forward ([B*T], row
  // order; 0 where the target is not counted) ...
  std::vector<double> target_logprobs() const;
  // ... and the backward of any loss given as dL/dlogp per row (rows not counted must be 0). The last forward
  // must have run without MTP; the balance loss, when on, is added as usual.
  void backward_policy(const std::vector<double>& d_logp);
  // Main-head logits of the last forward, [B*T, V].
  Tensor logits() const { return logits_; }
  // Logit distillation (beyond the paper): the mean over counted rows of KL(softmax(teacher) || softmax(logits))
  // for a teacher's logits on the same batch ([B*T, V], same vocabulary, device and dtype as logits()) ...
  double distill_loss(Tensor teacher_logits);
  // ... and backward() with kd_weight times that mean's gradient added at the main head.
  void backward_distill(Tensor teacher_logits, double kd_weight);

  // Expert load per MoE layer (main layers first, then MTP modules), accumulated since the last reset.
  const std::vector<int64_t>& moe_layer_ids() const { return moe_layer_ids_; }
  std::vector<std::vector<int64_t>> expert_load() const;
  // The copy behind expert_load() enqueued now, on the model's stream, with no host wait; the next expert_load()
  // returns those counts (waiting for the copy only): a step's counts read while the next step runs.
  void begin_expert_load_read() const;
  void reset_expert_load();
  // A redundant-expert placement (ds-rebalance's JSON, lib/balance): from now on every forward also counts the
  // tokens each GPU would serve, per MoE layer; the outputs do not change. Layers absent from it are not counted.
  void set_placement(const std::vector<int64_t>& layer_ids, const std::vector<balance::LayerPlacement>& layers,
                     int64_t gpus);
  bool has_placement() const { return !placements_.empty(); }
  // Per MoE layer with a placement: (layer id, tokens per GPU) accumulated since the last reset_expert_load().
  std::vector<std::pair<int64_t, std::vector<int64_t>>> gpu_load() const;
  // Auxiliary-loss-free balancing: b += gamma * sign(mean_load - load) from the accumulated load. With a verdict
  // (grad_clip_verdict's, ready on the model's stream) nothing changes on a skipped step.
  void update_router_bias(double gamma, Tensor verdict = {});

  // Activations of the last forward, for the generation engine's prefill (latent cache, MTP input).
  const BlockActs& layer_acts(int64_t layer) const { return layer_acts_.at(size_t(layer)); }
  const BlockActs* mtp_block_acts(int64_t k) const {  // k is 1-based; null when MTP did not run
    return size_t(k) <= mtp_acts_.size() && k >= 1 ? &mtp_acts_[size_t(k - 1)].block : nullptr;
  }
  Tensor final_hidden() const { return final_n_; }  // [B*T, D], after the final norm
  Tensor inv_freq() const { return inv_freq_; }
  double rope_attn_factor() const { return rope_attn_factor_; }
  double softmax_scale() const { return softmax_scale_; }
  // Expert-load counters per MoE layer (main layers, then MTP), for callers that run blocks themselves.
  MoeLoad* moe_load(int64_t layer);

  // Projections of one input whose weights are adjacent (q_a with kv_a, gate with up) run as one product (layers.h);
  // on CUDA unless DS_FUSED_PROJ=0, off on the CPU (a speed-up of the GPU's; the CPU reference keeps its bits, and
  // with them the trajectories of the CPU runs in the docs). Off: two products each (the tests compare the two).
  // Takes effect at the next forward (its backward follows what the forward did).
  void set_fused_projections(bool on) { fuse_proj_ = on; }
  bool fused_projections() const { return fuse_proj_; }

  // With recording on, forward keeps every named intermediate for dump_tensors().
  void set_recording(bool on) { acts_.set_recording(on); }
  const std::vector<std::pair<std::string, Tensor>>& recorded_tensors() const { return acts_.recorded(); }

 private:
  struct MtpActs {
    Tensor ids, targets;     // [N] i32
    Tensor emb, emb_n, emb_rstd, prev_n, prev_rstd, cat, hp;
    BlockActs block;
    Tensor head_n, head_rstd, logits, loss, lse;
    int64_t n_targets = 0;
  };
  void upload_batch(const Batch& batch);
  // The bytes that hold every MoE layer's load counters (neighbours in buffers_), for one copy; loads_ not empty.
  std::pair<const char*, size_t> load_counters_span() const;
  void backward_impl(const std::vector<double>* d_logp, Tensor kd_teacher = {}, double kd_weight = 0);
  double main_grad_scale() const;  // d(main loss)/d(row n's cross-entropy), the temperature's 1/T included
  LayerEnv env() const;

  ModelConfig cfg_;
  Context ctx_;
  SideStream side_;  // the blocks' side branches (LayerEnv::side) on CUDA; DS_STEP_SIDE_STREAM=0: inactive
  DType dtype_;
  Arena params_;
  ModelWeights w_;
  std::unique_ptr<Arena> compute_;  // bf16 copy of params_ (mixed precision only)
  ModelWeights cw_;                 // = w_, or bound to *compute_
  std::unique_ptr<Arena> grads_;
  ModelWeights gw_;
  Arena buffers_;  // rope table, expert load counters
  Tensor inv_freq_;
  std::vector<MoeLoad> loads_;
  mutable Readback load_read_;  // expert_load()'s copy (begin_expert_load_read, or expert_load itself)
  Tensor loss_sums_;             // begin_loss_read's sums (in buffers_)
  Readback loss_read_;           // ... and their copy to the host
  struct LossCounts {            // what finish_loss_read needs of the forward that begin_loss_read read
    int64_t n_targets = 0;
    std::vector<int64_t> mtp_targets;
    double mtp_lambda = 0;
  } loss_counts_;
  std::vector<balance::LayerPlacement> placements_;  // owned copies the MoeLoads point at
  std::vector<int64_t> moe_layer_ids_;
  double rope_attn_factor_ = 1.0, softmax_scale_ = 1.0;
  bool fuse_proj_ = false;  // set by the constructor (set_fused_projections)

  // the last forward
  Workspace acts_, scratch_, grad_ws_;
  ForwardOptions fopt_;
  int64_t B_ = 0, T_ = 0;
  Tensor ids_, targets_, pos_;
  Tensor emb_;
  std::vector<BlockActs> layer_acts_;
  Tensor final_n_, final_rstd_, logits_, loss_, lse_;
  Tensor d_logits_fused_;  // the main head's d_logits from a loss_grad forward; empty otherwise
  int64_t n_targets_ = 0;
  std::vector<MtpActs> mtp_acts_;
  bool have_forward_ = false;
  std::vector<bool> expert_grad_;     // grad arena tensor i is a routed experts' block (set with the arena)
  bool expert_grads_pending_ = false;  // zero_grads left them: the next backward writes them over
  bool grads_zeroed_on_stream_ = false;  // zero_grads_on ran since the last zero_grads()
  ParamFences fences_;
  std::vector<int> param_stage_;  // param_stage(i), from the names once
  void settle_expert_grads();          // zeroes them if still pending
};

}  // namespace ds
