#include "infer/engine.h"

#include <algorithm>
#include <cmath>

#include "core/log.h"
#include "core/progress.h"
#include "core/rng.h"
#include "ops/ops.h"
#include "tensor/arena.h"

namespace ds {

// The packed inputs of a decode step of n rows and a block table `width` pages wide, in 4-byte words: the
// sampling parameters f64 [n, 4] first (keeps them 8-byte aligned), the positions, slot rows and kv lengths [n] each,
// the block table [n, width]; then the token ids [n], which go to the engine's token feed rather than to the graph's
// block (device_words() ends before them).
struct StepLayout {
  int64_t n = 0, width = 0;
  int64_t pos() const { return 8 * n; }
  int64_t slots() const { return 9 * n; }
  int64_t lens() const { return 10 * n; }
  int64_t table() const { return 11 * n; }
  int64_t ids() const { return 11 * n + n * width; }
  int64_t device_words() const { return ids(); }
  int64_t host_words() const { return ids() + n; }
};

// A captured decode step of one shape: its inputs in a fixed device block and its own workspace, whose addresses the
// graph holds. Its token ids are read from, and its sampled tokens and log-probs written to, the engine's feed and
// output block, shared by all shapes: a step launched before the host has read the previous one's tokens takes them
// straight from the feed. Inputs move by a single copy from page-locked host memory (a batch-1 step is under 1 ms;
// pageable copies cost tens of microseconds of it), from one of two host slots so that a step can be prepared while
// the copy of the one before it is still queued.
struct Engine::Graph {
  Graph(Device d, int64_t n, int64_t width);
  ~Graph() {
    gpu::graph_destroy(exec);
    for (void* h : host) gpu::host_free_pinned(h);
  }
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;
  StepLayout layout;
  Workspace in;  // the packed inputs, allocated once
  Workspace ws;  // the pass's activations and logits
  DecodeRows rows;
  Tensor params;
  void* in_dev = nullptr;
  void* host[2] = {nullptr, nullptr};  // pinned, layout.host_words() each
  void* exec = nullptr;
  bool failed = false;
};

Engine::Graph::Graph(Device d, int64_t n, int64_t width) : in(d), ws(d) {
  layout = StepLayout{n, width};
  Tensor blob = in.alloc("graph.inputs", DType::i32, {layout.device_words()});
  in_dev = blob.data;
  auto* w = static_cast<int32_t*>(blob.data);
  params = Tensor(w, DType::f64, {n, 4}, d);
  rows.pos = Tensor(w + layout.pos(), DType::i32, {n}, d);
  rows.slot_rows = Tensor(w + layout.slots(), DType::i32, {n}, d);
  rows.kv_len = Tensor(w + layout.lens(), DType::i32, {n}, d);
  rows.block_table = Tensor(w + layout.table(), DType::i32, {n, width}, d);
  for (void*& h : host) h = gpu::host_alloc_pinned(size_t(layout.host_words()) * 4);
}

struct Engine::Seq {
  uint64_t req = 0;
  int64_t sample = 0;
  SamplingParams sp;
  std::vector<std::string> stop;
  bool include_stop = false;
  bool stop_at_eos = true;
  int64_t prompt_len = 0;
  SeqCache cache;            // tokens [0, cache.len) are in the cache
  int32_t pending = -1;      // the last sampled token, not yet in the cache (position cache.len)
  int32_t draft = -1;        // MTP's guess for the token after `pending`
  std::vector<double> draft_probs;
  uint64_t draws = 0;        // RNG counter
  bool done = false;
  GenSample out;
};

Engine::Engine(Model& model, const Tokenizer* tok, const EngineOptions& opt)
    : model_(model), tok_(tok), opt_(opt), decoder_(model), ws_(model.context().device),
      io_(model.context().device) {
  const ModelConfig& c = model_.config();
  if (opt_.max_context <= 0) opt_.max_context = c.max_position_embeddings;
  if (opt_.max_batch <= 0) throw_usage("engine: max batch must be >= 1");
  spec_ = opt_.mtp_speculative;
  if (opt_.prefill_tokens < 0) opt_.prefill_tokens = model_.context().device.is_cuda() ? 8192 : 0;
  if (spec_ && c.num_nextn_predict_layers < 1)
    throw_usage("MTP speculative decoding needs a model with MTP modules (num_nextn_predict_layers >= 1)");
  const int64_t layers = c.num_hidden_layers + (spec_ ? 1 : 0);
  int64_t tokens = opt_.cache_tokens > 0 ? opt_.cache_tokens : opt_.max_batch * opt_.max_context;
  const int64_t pages = (tokens + opt_.page_size - 1) / opt_.page_size + opt_.max_batch;  // + copy-on-write slack
  cache_ = std::make_unique<PagedKvCache>(c, layers, pages, opt_.page_size, model_.context().device, model_.dtype());
  stats_.cache_bytes_per_token = cache_->bytes_per_token();
  const Context& ctx = model_.context();
  if (ctx.device.is_cuda() && opt_.cuda_graph && !spec_) {
    // the legacy default stream cannot be captured: the model runs on a dedicated (blocking) stream meanwhile
    saved_stream_ = ctx.cuda_stream;
    stream_ = ctx.cuda_stream ? ctx.cuda_stream : gpu::process_stream(ctx.device, gpu::kDecodeStream);
    model_.set_cuda_stream(stream_);
    const Device dev = ctx.device;
    Tensor out = io_.alloc("decode.outputs", DType::i32, {3 * opt_.max_batch});
    out_lp_ = Tensor(out.data, DType::f64, {opt_.max_batch}, dev);
    feed_ = Tensor(static_cast<int32_t*>(out.data) + 2 * opt_.max_batch, DType::i32, {opt_.max_batch}, dev);
    out_bytes_ = out.nbytes();
    for (int i = 0; i < 2; ++i) {
      out_host_[i] = gpu::host_alloc_pinned(out_bytes_);
      out_ready_[i] = gpu::event_create();
    }
  }
}

Engine::~Engine() {
  if (!stream_) return;
  try {
    gpu::stream_sync(stream_);
  } catch (...) {
  }
  graphs_.clear();
  for (int i = 0; i < 2; ++i) {
    gpu::host_free_pinned(out_host_[i]);
    gpu::event_destroy(out_ready_[i]);
  }
  model_.set_cuda_stream(saved_stream_);
}

void Engine::submit(GenRequest req) {
  if (req.prompt.empty()) throw_usage("empty prompt");
  if (int64_t(req.prompt.size()) >= opt_.max_context)
    throw_bad_input("prompt of " + std::to_string(req.prompt.size()) + " tokens leaves no room in the context of " +
                    std::to_string(opt_.max_context));
  for (int32_t t : req.prompt)
    if (t < 0 || t >= model_.config().vocab_size) throw_bad_input("prompt token id " + std::to_string(t) + " outside the vocabulary");
  if (req.n < 1) throw_usage("samples per prompt must be >= 1");
  if (req.n > opt_.max_batch) throw_usage("samples per prompt exceed the engine's max batch");
  if (!req.stop.empty() && !tok_) throw_usage("stop strings need a tokenizer");
  waiting_.push_back(std::move(req));
}

bool Engine::idle() const { return waiting_.empty() && running_.empty(); }

double Engine::uniform(Seq& s) { return rng_uniform_at(s.sp.seed, uint64_t(s.sample), s.draws++); }

void Engine::sampling_params(Seq& s, double* out) {
  out[0] = s.sp.temperature;
  out[1] = s.sp.top_p;
  out[2] = double(s.sp.top_k);
  out[3] = uniform(s);
}

void Engine::sample_on_device(Tensor logits, const std::vector<double>& params, std::vector<int64_t>& tokens,
                              std::vector<double>& logprobs) {
  const int64_t n = int64_t(params.size() / 4);
  Tensor p = ws_.alloc("sample.params", DType::f64, {n, 4});
  Tensor tok = ws_.alloc("sample.tokens", DType::i32, {n}), lp = ws_.alloc("sample.logprobs", DType::f64, {n});
  from_host(p, params);
  sample_tokens(model_.context(), tok, lp, logits, p);
  tokens = to_host_i64(tok);
  logprobs = to_host_f64(lp);
}

bool Engine::emit(Seq& s, int32_t token, double logprob) {
  s.out.tokens.push_back(token);
  s.out.logprobs.push_back(logprob);
  ++stats_.generated_tokens;
  const int64_t n = int64_t(s.out.tokens.size());
  if (s.stop_at_eos && token == int32_t(model_.config().eos_token_id)) {
    s.out.finish_reason = "stop";
    s.done = true;
  } else if (!s.stop.empty()) {
    const std::string text = tok_->decode(s.out.tokens);
    for (const std::string& st : s.stop)
      if (!st.empty() && text.find(st) != std::string::npos) {
        s.out.finish_reason = "stop";
        s.done = true;
      }
  }
  if (!s.done && (n >= s.sp.max_new_tokens || s.prompt_len + n >= opt_.max_context)) {
    s.out.finish_reason = "length";
    s.done = true;
  }
  return !s.done;
}

void Engine::finish(Seq& s, std::vector<GenSample>& done) {
  if (tok_) {
    std::vector<int32_t> ids = s.out.tokens;
    if (!ids.empty() && s.out.finish_reason == "stop" && ids.back() == int32_t(model_.config().eos_token_id))
      ids.pop_back();
    s.out.text = tok_->decode(ids);
    size_t cut = std::string::npos, len = 0;  // the earliest matched stop string
    for (const std::string& st : s.stop) {
      const size_t at = st.empty() ? std::string::npos : s.out.text.find(st);
      if (at < cut) cut = at, len = st.size();
    }
    if (cut != std::string::npos) s.out.text.resize(s.include_stop ? cut + len : cut);
  }
  cache_->release(s.cache);
  done.push_back(std::move(s.out));
}

DecodeRows Engine::upload_rows(const std::vector<const SeqCache*>& caches, const std::vector<int32_t>& ids,
                               const std::vector<int32_t>& pos) {
  const int64_t n = int64_t(ids.size());
  size_t max_blocks = 1;
  for (const SeqCache* c : caches) max_blocks = std::max(max_blocks, c->pages.size());
  std::vector<int32_t> slots(static_cast<size_t>(n)), lens(static_cast<size_t>(n)), table(static_cast<size_t>(n) * max_blocks, 0);
  for (int64_t i = 0; i < n; ++i) {
    slots[size_t(i)] = cache_->slot_row(*caches[size_t(i)], pos[size_t(i)]);
    lens[size_t(i)] = pos[size_t(i)] + 1;
    std::copy(caches[size_t(i)]->pages.begin(), caches[size_t(i)]->pages.end(), table.begin() + i * int64_t(max_blocks));
  }
  DecodeRows r;
  r.ids = ws_.alloc("rows.ids", DType::i32, {n});
  r.pos = ws_.alloc("rows.pos", DType::i32, {n});
  r.slot_rows = ws_.alloc("rows.slots", DType::i32, {n});
  r.kv_len = ws_.alloc("rows.kv_len", DType::i32, {n});
  r.block_table = ws_.alloc("rows.block_table", DType::i32, {n, int64_t(max_blocks)});
  from_host(r.ids, ids);
  from_host(r.pos, pos);
  from_host(r.slot_rows, slots);
  from_host(r.kv_len, lens);
  from_host(r.block_table, table);
  return r;
}

void Engine::run_mtp(const std::vector<MtpRow>& rows, Tensor hidden) {
  if (rows.empty()) return;
  const Context& ctx = model_.context();
  const int64_t n = int64_t(rows.size()), D = model_.config().hidden_size, V = model_.config().vocab_size;
  std::vector<const SeqCache*> caches;
  std::vector<int32_t> ids, pos;
  Tensor prev = ws_.alloc("mtp.prev_hidden", model_.dtype(), {n, D});
  for (int64_t i = 0; i < n; ++i) {
    const MtpRow& r = rows[size_t(i)];
    caches.push_back(&r.seq->cache);
    ids.push_back(r.next_token);
    pos.push_back(int32_t(r.pos));
    copy(ctx, prev.slice0(i, i + 1), hidden.slice0(r.hidden_row, r.hidden_row + 1));
  }
  DecodeRows dr = upload_rows(caches, ids, pos);
  Tensor logits, out_hidden;
  decoder_.mtp_forward(ws_, *cache_, 1, dr, prev, &logits, &out_hidden);
  std::vector<double> host = to_host_f64(logits);
  for (int64_t i = 0; i < n; ++i) {
    const bool last = i + 1 == n || rows[size_t(i + 1)].seq != rows[size_t(i)].seq;
    if (!last) continue;
    Seq& s = *rows[size_t(i)].seq;
    s.draft_probs = sampling_distribution(host.data() + i * V, V, s.sp);
    s.draft = draw_token(s.draft_probs, uniform(s));
  }
}

size_t Engine::prefill_group() const {
  // Consecutive waiting requests that fit the batch and the cache together; more than one only within the padded
  // token budget and while padding at most doubles the work (prompts are right-padded to the longest). Under a
  // placement report the padding would count as served tokens: then only prompts of one length go together.
  int64_t rows = int64_t(running_.size()), pages = 0, real = 0, longest = 0;
  size_t k = 0;
  for (const GenRequest& r : waiting_) {
    const int64_t P = int64_t(r.prompt.size());
    const int64_t T = std::max(longest, P);
    rows += r.n;
    pages += cache_->pages_needed(P) + 2 * r.n;
    if (rows > opt_.max_batch || pages > cache_->free_pages()) break;
    if (k > 0 && (spec_ || int64_t(k + 1) * T > opt_.prefill_tokens || int64_t(k + 1) * T > 2 * (real + P) ||
                  (model_.has_placement() && P != longest)))
      break;
    ++k;
    real += P;
    longest = T;
  }
  return k;
}

void Engine::admit(size_t k, std::vector<GenSample>& done) {
  const double t0 = now_seconds();
  const Context& ctx = model_.context();
  const ModelConfig& c = model_.config();
  ws_.reset();
  std::vector<GenRequest> reqs(std::make_move_iterator(waiting_.begin()),
                               std::make_move_iterator(waiting_.begin() + int64_t(k)));
  waiting_.erase(waiting_.begin(), waiting_.begin() + int64_t(k));

  // prefill: the expanded forward over the prompts, right-padded to the longest (the same code that trains;
  // causal attention keeps the padding out of every real position)
  Batch b;
  b.B = int64_t(k);
  for (const GenRequest& r : reqs) b.T = std::max(b.T, int64_t(r.prompt.size()));
  const int64_t T = b.T;
  b.tokens.assign(size_t(b.B * (T + 1)), 0);  // pads and the placeholder targets are token 0
  for (size_t i = 0; i < k; ++i) std::copy(reqs[i].prompt.begin(), reqs[i].prompt.end(), b.tokens.begin() + int64_t(i) * (T + 1));
  // row of prompt i's last token in the [B*T] forward
  auto last_row = [&](size_t i) { return int64_t(i) * T + int64_t(reqs[i].prompt.size()) - 1; };
  ForwardOptions fo;
  fo.mtp = spec_;
  // On CUDA the first tokens are drawn on the device: the head runs only at each sample's last prompt row (the
  // full [B*T, V] f32 logits of an 8k-token prefill are 1 GB and ~1.4 ms of GEMM and softmax).
  const bool device_first = ctx.device.is_cuda() && !spec_;
  if (device_first)
    for (size_t i = 0; i < k; ++i)
      for (int64_t g = 0; g < reqs[i].n; ++g) fo.head_rows.push_back(int32_t(last_row(i)));
  model_.forward(b, fo);

  // the prompts' latents into their pages, one write per layer (padding rows have no slot: -1, not written)
  std::vector<SeqCache> prompts(k);
  std::vector<int32_t> slots(size_t(b.B * T), -1);
  for (size_t i = 0; i < k; ++i) {
    const int64_t P = int64_t(reqs[i].prompt.size());
    DS_CHECK(cache_->reserve(prompts[i], 0, P), "kv cache out of pages during prefill");
    for (int64_t t = 0; t < P; ++t) slots[size_t(int64_t(i) * T + t)] = cache_->slot_row(prompts[i], t);
    prompts[i].len = P;
  }
  Tensor slot_t = ws_.alloc("prefill.slots", DType::i32, {int64_t(slots.size())});
  from_host(slot_t, slots);
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const MlaActs& a = model_.layer_acts(l).mla;
    kv_cache_write(ctx, cache_->pool(l), slot_t, a.c, a.k_pe);
  }
  const int64_t P0 = prompts[0].len;
  if (spec_ && P0 > 1) {  // (k == 1) MTP positions 0..P-2 have their inputs (h_i, t_{i+1}) already
    const MlaActs& a = model_.mtp_block_acts(1)->mla;
    kv_cache_write(ctx, cache_->pool(c.num_hidden_layers), slot_t.slice0(0, P0 - 1), a.c.slice0(0, P0 - 1),
                   a.k_pe.slice0(0, P0 - 1));
  }
  // every sample's first token, from its prompt's last logits
  const int64_t V = c.vocab_size;
  std::vector<std::unique_ptr<Seq>> seqs;
  std::vector<size_t> of;  // the request of each new sequence
  for (size_t i = 0; i < k; ++i) {
    const GenRequest& req = reqs[i];
    for (int64_t g = 0; g < req.n; ++g) {
      auto s = std::make_unique<Seq>();
      s->req = req.id;
      s->sample = g;
      s->sp = req.sp;
      s->stop = req.stop;
      s->include_stop = req.include_stop;
      s->stop_at_eos = req.stop_at_eos;
      s->prompt_len = prompts[i].len;
      s->out.request_id = req.id;
      s->out.sample = g;
      s->out.prompt_tokens = prompts[i].len;
      cache_->fork(prompts[i], s->cache);
      seqs.push_back(std::move(s));
      of.push_back(i);
    }
  }
  std::vector<int32_t> first(seqs.size());
  std::vector<double> first_lp(seqs.size());
  if (device_first) {
    // Like a decode step: each sample's row of logits (the head ran at exactly these rows, in this order) drawn
    // with its own uniform; only the ids and log-probs come back.
    const int64_t n = int64_t(seqs.size());
    std::vector<double> prm(size_t(4 * n));
    for (size_t j = 0; j < seqs.size(); ++j) sampling_params(*seqs[j], prm.data() + 4 * j);
    DS_CHECK(model_.logits().rows() == n, "prefill: one row of logits per sample");
    std::vector<int64_t> toks;
    std::vector<double> lps;
    sample_on_device(model_.logits(), prm, toks, lps);
    for (size_t j = 0; j < seqs.size(); ++j) {
      first[j] = int32_t(toks[j]);
      first_lp[j] = lps[j];
    }
  } else {
    std::vector<double> last;  // the current request's last logits
    for (size_t j = 0; j < seqs.size(); ++j) {
      if (j == 0 || of[j] != of[j - 1]) last = to_host_f64(model_.logits().slice0(last_row(of[j]), last_row(of[j]) + 1));
      Seq& s = *seqs[j];
      first[j] = draw_token(sampling_distribution(last.data(), V, s.sp), uniform(s));
      first_lp[j] = token_logprob(last.data(), V, first[j], s.sp.temperature);
    }
  }
  std::vector<MtpRow> mtp_rows;  // (spec_: one request)
  for (size_t j = 0; j < seqs.size(); ++j) {
    std::unique_ptr<Seq>& s = seqs[j];
    s->pending = first[j];
    if (!emit(*s, first[j], first_lp[j])) {
      finish(*s, done);
      continue;
    }
    if (spec_) {
      const int64_t P = s->prompt_len;
      DS_CHECK(cache_->reserve(s->cache, P - 1, P), "kv cache out of pages");
      mtp_rows.push_back(MtpRow{s.get(), P - 1, first[j], 0});
    }
    running_.push_back(std::move(s));
  }
  if (spec_) run_mtp(mtp_rows, model_.final_hidden().slice0(last_row(0), last_row(0) + 1));
  for (size_t i = 0; i < k; ++i) {
    cache_->release(prompts[i]);
    ++stats_.prompts;
    stats_.prefill_tokens += prompts[i].len;
  }
  ++stats_.prefill_batches;
  stats_.prefill_seconds += now_seconds() - t0;
}

void Engine::decode_plain(std::vector<GenSample>& done) {
  if (inflight_ && !can_run_ahead()) settle(done);
  if (running_.empty()) return;
  std::vector<const SeqCache*> caches;
  std::vector<int32_t> ids, pos;
  for (auto& s : running_) {
    const int64_t p = s->cache.len;
    if (!cache_->reserve(s->cache, p, p + 1)) throw_runtime("kv cache full: raise the cache capacity");
    caches.push_back(&s->cache);
    ids.push_back(s->pending);  // (rows of a step in flight: stale, their tokens are in the feed)
    pos.push_back(int32_t(p));
  }
  if (stream_) {
    size_t width = 1;
    for (const SeqCache* c : caches) width = std::max(width, c->pages.size());
    Graph* g = graph_for(int64_t(ids.size()), int64_t(width));
    if (g && g->exec) {
      launch(*g, caches, ids, pos);
      return;
    }
    if (inflight_) {  // a shape without a graph yet: its step runs eagerly first, from the tokens on the host
      settle(done);
      decode_plain(done);
      return;
    }
    if (g) {
      capture(*g, caches, ids, pos);
      return;
    }
  }
  DecodeRows rows = upload_rows(caches, ids, pos);
  Tensor logits, hidden;
  decoder_.forward(ws_, *cache_, rows, &logits, &hidden);
  const int64_t V = model_.config().vocab_size;
  const Context& ctx = model_.context();
  if (ctx.device.is_cuda()) {
    // Sampling on the device: the same Philox uniform per sequence as below, drawn on the host and sent with the
    // row's parameters; only the n token ids and log-probs come back (not the n x V logits).
    const int64_t n = int64_t(running_.size());
    std::vector<double> prm(size_t(4 * n));
    for (int64_t i = 0; i < n; ++i) sampling_params(*running_[size_t(i)], prm.data() + 4 * i);
    std::vector<int64_t> toks;
    std::vector<double> lps;
    sample_on_device(logits, prm, toks, lps);
    for (int64_t i = 0; i < n; ++i) {
      Seq& s = *running_[size_t(i)];
      s.cache.len += 1;
      s.pending = int32_t(toks[size_t(i)]);
      emit(s, s.pending, lps[size_t(i)]);
    }
    return;
  }
  std::vector<double> host = to_host_f64(logits);
  for (size_t i = 0; i < running_.size(); ++i) {
    Seq& s = *running_[i];
    s.cache.len += 1;
    const double* l = host.data() + int64_t(i) * V;
    const int32_t t = draw_token(sampling_distribution(l, V, s.sp), uniform(s));
    s.pending = t;
    emit(s, t, token_logprob(l, V, t, s.sp.temperature));
  }
}

bool Engine::can_run_ahead() const {
  if (!inflight_ || inflight_->rows.size() != running_.size()) return false;
  for (size_t i = 0; i < running_.size(); ++i) {
    const Seq& s = *running_[i];
    if (inflight_->rows[i] != &s) return false;
    // the token in flight ends the sample by length: the next step has one row fewer
    const int64_t produced = int64_t(s.out.tokens.size()) + 1;
    if (produced >= s.sp.max_new_tokens || s.prompt_len + produced >= opt_.max_context) return false;
  }
  return true;
}

Engine::Graph* Engine::graph_for(int64_t n, int64_t width) {
  const auto key = std::make_pair(n, width);
  auto it = graphs_.find(key);
  if (it == graphs_.end()) {
    if (int64_t(graphs_.size()) >= opt_.cuda_graph_max) return nullptr;
    it = graphs_.emplace(key, std::make_unique<Graph>(model_.context().device, n, width)).first;
    it->second->rows.ids = feed_.slice0(0, n);
  }
  return it->second->failed ? nullptr : it->second.get();
}

void Engine::fill_inputs(Graph& g, int slot, const std::vector<const SeqCache*>& caches, const std::vector<int32_t>& ids,
                         const std::vector<int32_t>& pos, bool ids_in_feed) {
  // the same rows as upload_rows and the same per-sequence uniforms as the eager CUDA step
  const StepLayout& L = g.layout;
  auto* w = static_cast<int32_t*>(g.host[slot]);
  std::fill(w + L.table(), w + L.ids(), 0);
  for (int64_t i = 0; i < L.n; ++i) {
    const SeqCache& c = *caches[size_t(i)];
    w[L.pos() + i] = pos[size_t(i)];
    w[L.slots() + i] = cache_->slot_row(c, pos[size_t(i)]);
    w[L.lens() + i] = pos[size_t(i)] + 1;
    std::copy(c.pages.begin(), c.pages.end(), w + L.table() + i * L.width);
    w[L.ids() + i] = ids[size_t(i)];
    sampling_params(*running_[size_t(i)], reinterpret_cast<double*>(w) + 4 * i);
  }
  gpu::copy_to_device_async(g.in_dev, w, size_t(L.device_words()) * 4, stream_);
  if (!ids_in_feed) gpu::copy_to_device_async(feed_.data, w + L.ids(), size_t(L.n) * 4, stream_);
}

Engine::Launched Engine::queue_results(int slot) {
  gpu::copy_to_host_async(out_host_[slot], out_lp_.data, out_bytes_, stream_);
  gpu::event_record(out_ready_[slot], stream_);
  Launched l;
  l.slot = slot;
  for (auto& s : running_) {
    s->cache.len += 1;  // its latent is being written
    l.rows.push_back(s.get());
  }
  return l;
}

void Engine::launch(Graph& g, const std::vector<const SeqCache*>& caches, const std::vector<int32_t>& ids,
                    const std::vector<int32_t>& pos) {
  const int slot = int(launches_++ & 1);
  // Running ahead, the rows are the step in flight's, in its order: their ids are its tokens, already in the feed.
  fill_inputs(g, slot, caches, ids, pos, inflight_.has_value());
  gpu::graph_launch(g.exec, stream_);
  ++stats_.graph_replays;
  Launched next = queue_results(slot);
  if (inflight_) harvest(*inflight_);  // the previous step's tokens, read while this one runs
  inflight_ = std::move(next);
}

void Engine::harvest(const Launched& l) {
  gpu::event_sync(out_ready_[l.slot]);
  const auto* lps = static_cast<const double*>(out_host_[l.slot]);
  const auto* toks = reinterpret_cast<const int32_t*>(lps + opt_.max_batch);
  for (size_t i = 0; i < l.rows.size(); ++i) {
    Seq* s = l.rows[i];
    if (!s || s->done) continue;  // finished at the step before (a stop seen only then): its token is dropped
    s->pending = toks[i];
    emit(*s, s->pending, lps[i]);
  }
}

void Engine::settle(std::vector<GenSample>& done) {
  const Launched l = std::move(*inflight_);
  inflight_.reset();
  harvest(l);
  retire(done);
}

void Engine::retire(std::vector<GenSample>& done) {
  for (auto& s : running_) {
    if (!s->done) continue;
    finish(*s, done);
    if (inflight_) std::replace(inflight_->rows.begin(), inflight_->rows.end(), s.get(), static_cast<Seq*>(nullptr));
  }
  running_.erase(std::remove_if(running_.begin(), running_.end(), [](const auto& s) { return s->done; }),
                 running_.end());
}

void Engine::graph_pass(Graph& g) {
  Tensor logits, hidden;
  decoder_.forward(g.ws, *cache_, g.rows, &logits, &hidden);
  const int64_t n = g.layout.n;
  sample_tokens(model_.context(), feed_.slice0(0, n), out_lp_.slice0(0, n), logits, g.params);
}

void Engine::capture(Graph& g, const std::vector<const SeqCache*>& caches, const std::vector<int32_t>& ids,
                     const std::vector<int32_t>& pos) {
  // First step of this shape: eagerly on the graph's workspace (this allocates what the pass needs — workspace
  // chunks, the cuBLASLt workspace and plans, the MLA split scratch — outside the capture), then capture the same
  // pass: its allocations repeat at the same addresses, with the workspace zeroed by the graph's first node.
  const int slot = int(launches_++ & 1);
  fill_inputs(g, slot, caches, ids, pos, false);
  g.ws.reset();
  graph_pass(g);
  const Launched l = queue_results(slot);
  gpu::stream_sync(stream_);  // this step's results; the capture below only records work
  g.ws.reset();
  g.ws.zero_all();
  bool ok = true;
  std::string why = "instantiation failed";
  gpu::capture_begin(stream_);
  try {
    for (const auto& [base, bytes] : g.ws.blocks()) gpu::memset0_async(base, bytes, stream_);
    graph_pass(g);
  } catch (const std::exception& ex) {
    ok = false;  // e.g. a host sync or an allocation inside the pass: this shape stays eager
    why = ex.what();
  }
  g.exec = gpu::capture_end(stream_, ok);
  if (g.exec) ++stats_.graph_captures;
  else {
    if (stats_.graph_failures++ == 0)
      log_warn("CUDA graph capture of the decode step (batch " + std::to_string(g.layout.n) + ", " +
               std::to_string(g.layout.width) + " pages) failed, decoding such steps eagerly: " + why);
    g.failed = true;
  }
  harvest(l);
}

void Engine::decode_speculative() {
  std::vector<const SeqCache*> caches;
  std::vector<int32_t> ids, pos;
  std::vector<int64_t> first_row, nrows;
  for (auto& s : running_) {
    const int64_t p = s->cache.len;
    const int64_t k = p + 2 <= opt_.max_context ? 2 : 1;  // verify the draft too, when the context allows
    if (!cache_->reserve(s->cache, p, p + k)) throw_runtime("kv cache full: raise the cache capacity");
    first_row.push_back(int64_t(ids.size()));
    nrows.push_back(k);
    caches.push_back(&s->cache);
    ids.push_back(s->pending);
    pos.push_back(int32_t(p));
    if (k == 2) {
      caches.push_back(&s->cache);
      ids.push_back(s->draft);
      pos.push_back(int32_t(p + 1));
    }
  }
  DecodeRows rows = upload_rows(caches, ids, pos);
  Tensor logits, hidden;
  decoder_.forward(ws_, *cache_, rows, &logits, &hidden);
  const int64_t V = model_.config().vocab_size;
  std::vector<double> host = to_host_f64(logits);
  std::vector<MtpRow> mtp_rows;
  for (size_t i = 0; i < running_.size(); ++i) {
    Seq& s = *running_[i];
    const int64_t p = s.cache.len, r0 = first_row[i];
    const double* l0 = host.data() + r0 * V;
    std::vector<double> p0 = sampling_distribution(l0, V, s.sp);
    if (nrows[i] == 1) {  // no room to verify: a plain step
      s.cache.len = p + 1;
      const int32_t t = draw_token(p0, uniform(s));
      s.pending = t;
      if (emit(s, t, token_logprob(l0, V, t, s.sp.temperature))) mtp_rows.push_back(MtpRow{&s, p, t, r0});
      continue;
    }
    ++stats_.drafted;
    const int32_t d = s.draft;
    // Speculative sampling: accept the draft with probability min(1, p(d) / q(d)); otherwise draw from the
    // normalised residual max(0, p - q). The emitted tokens are then distributed exactly as plain sampling.
    const double ratio = s.draft_probs[size_t(d)] > 0 ? p0[size_t(d)] / s.draft_probs[size_t(d)] : 0.0;
    if (uniform(s) < std::min(1.0, ratio)) {
      ++stats_.accepted;
      s.cache.len = p + 2;
      if (!emit(s, d, token_logprob(l0, V, d, s.sp.temperature))) continue;
      const double* l1 = l0 + V;
      const int32_t t = draw_token(sampling_distribution(l1, V, s.sp), uniform(s));
      s.pending = t;
      if (!emit(s, t, token_logprob(l1, V, t, s.sp.temperature))) continue;
      mtp_rows.push_back(MtpRow{&s, p, d, r0});
      mtp_rows.push_back(MtpRow{&s, p + 1, t, r0 + 1});
    } else {
      std::vector<double> res(static_cast<size_t>(V));
      double z = 0;
      for (int64_t v = 0; v < V; ++v) z += (res[size_t(v)] = std::max(0.0, p0[size_t(v)] - s.draft_probs[size_t(v)]));
      if (z > 0) for (double& x : res) x /= z;
      else res = p0;
      s.cache.len = p + 1;  // the draft's cache entry is dropped (overwritten next step)
      const int32_t t = draw_token(res, uniform(s));
      s.pending = t;
      if (emit(s, t, token_logprob(l0, V, t, s.sp.temperature))) mtp_rows.push_back(MtpRow{&s, p, t, r0});
    }
  }
  run_mtp(mtp_rows, hidden);
}

std::vector<GenSample> Engine::step() {
  std::vector<GenSample> done;
  // A step in flight is read first when nothing it covers still runs, or before an admission: the pages of the
  // samples it finishes then count as free, and the new rows start a step of their own.
  if (inflight_ && (running_.empty() || (!waiting_.empty() && prefill_group() > 0))) settle(done);
  for (size_t k; !waiting_.empty() && (k = prefill_group()) > 0;) admit(k, done);
  if (running_.empty()) {
    if (!waiting_.empty()) throw_runtime("engine: a request does not fit the kv cache");
    return done;
  }
  const double t0 = now_seconds();
  ws_.reset();
  if (spec_) decode_speculative();
  else decode_plain(done);
  ++stats_.decode_steps;
  stats_.decode_seconds += now_seconds() - t0;
  retire(done);
  return done;
}

std::vector<GenSample> Engine::run_to_completion() {
  std::vector<GenSample> all;
  while (!idle()) {
    std::vector<GenSample> d = step();
    for (auto& g : d) all.push_back(std::move(g));
  }
  return all;
}

}  // namespace ds
