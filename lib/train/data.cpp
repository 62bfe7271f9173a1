#include "train/data.h"

#include <algorithm>

#include "core/jsonl.h"
#include "core/log.h"
#include "core/rng.h"

namespace ds {

namespace {

// Held-out assignment by a fixed hash of the document index (not of --seed: the eval set stays put).
bool is_eval_doc(int64_t doc, double fraction) {
  if (fraction <= 0) return false;
  return rng_uniform_at(0x5eed5eed, 7, uint64_t(doc)) < fraction;
}

}  // namespace

void cut_windows(const std::vector<int32_t>& stream, const std::vector<uint8_t>& mask, int64_t T, WindowSet& out) {
  DS_CHECK(T >= 1 && (mask.empty() || mask.size() == stream.size()), "cut_windows: mask must match the stream");
  DS_CHECK(out.size() == 0 || (out.T == T && out.loss_mask.empty() == mask.empty()),
           "cut_windows: appending windows of another shape");
  out.T = T;
  if (int64_t(stream.size()) < T + 1) return;
  const int64_t n = (int64_t(stream.size()) - 1) / T;
  out.tokens.reserve(out.tokens.size() + size_t(n * (T + 1)));
  for (int64_t w = 0; w < n; ++w) {
    out.tokens.insert(out.tokens.end(), stream.begin() + w * T, stream.begin() + w * T + T + 1);
    if (!mask.empty()) out.loss_mask.insert(out.loss_mask.end(), mask.begin() + w * T, mask.begin() + w * T + T + 1);
  }
}

Corpus load_pretrain_corpus(const std::string& path, const Tokenizer& tok, const PretrainCorpusOptions& opt) {
  if (opt.seq_len < 1) throw_usage("--seq-len must be >= 1");
  JsonlReader reader(path);
  std::vector<int32_t> train_stream, eval_stream;
  Corpus c;
  while (const JsonlRecord* r = reader.next()) {
    std::string text = r->get_string(opt.text_field);
    std::vector<int32_t>& s = is_eval_doc(c.n_docs, opt.eval_fraction) ? eval_stream : train_stream;
    c.n_eval_docs += &s == &eval_stream;
    s.push_back(tok.bos_id());
    std::vector<int32_t> ids = tok.encode(text);
    s.insert(s.end(), ids.begin(), ids.end());
    s.push_back(tok.eos_id());
    c.n_tokens += int64_t(ids.size()) + 2;
    ++c.n_docs;
  }
  if (c.n_docs == 0) throw_bad_input("empty corpus: no {\"" + opt.text_field + "\"} records", path);
  cut_windows(train_stream, {}, opt.seq_len, c.train);
  cut_windows(eval_stream, {}, opt.seq_len, c.eval);
  if (c.train.size() == 0)
    throw_bad_input("corpus too small: " + std::to_string(train_stream.size()) +
                        " training tokens do not fill one window of --seq-len " + std::to_string(opt.seq_len) +
                        " + 1",
                    path);
  return c;
}

BatchStream::BatchStream(const WindowSet* windows, int64_t batch_size, uint64_t seed)
    : w_(windows), B_(batch_size), seed_(seed) {
  DS_CHECK(w_ && w_->size() > 0 && B_ > 0, "BatchStream needs windows and a batch size");
}

int64_t BatchStream::epoch() const { return position_ / w_->size(); }

const std::vector<int64_t>& BatchStream::order_for(int64_t epoch) {
  if (epoch == order_epoch_) return order_;
  order_.resize(size_t(w_->size()));
  for (size_t i = 0; i < order_.size(); ++i) order_[i] = int64_t(i);
  Rng rng{seed_, 0x5bu + uint64_t(epoch), 0};
  for (size_t i = order_.size(); i > 1; --i) std::swap(order_[i - 1], order_[rng.next_below(i)]);
  order_epoch_ = epoch;
  return order_;
}

Batch BatchStream::next() {
  const int64_t T = w_->T, W = T + 1, n = w_->size();
  Batch b;
  b.B = B_;
  b.T = T;
  b.tokens.reserve(size_t(B_ * W));
  if (!w_->loss_mask.empty()) b.loss_mask.reserve(size_t(B_ * W));
  for (int64_t i = 0; i < B_; ++i, ++position_) {
    const int64_t w = order_for(position_ / n)[size_t(position_ % n)];
    b.tokens.insert(b.tokens.end(), w_->tokens.begin() + w * W, w_->tokens.begin() + (w + 1) * W);
    if (!w_->loss_mask.empty())
      b.loss_mask.insert(b.loss_mask.end(), w_->loss_mask.begin() + w * W, w_->loss_mask.begin() + (w + 1) * W);
  }
  return b;
}

std::vector<Batch> fixed_batches(const WindowSet& w, int64_t batch_size, int64_t max_batches) {
  std::vector<Batch> out;
  const int64_t W = w.T + 1, n = w.size();
  for (int64_t s = 0; s < n && int64_t(out.size()) < max_batches; s += batch_size) {
    Batch b;
    b.T = w.T;
    b.B = std::min(batch_size, n - s);
    b.tokens.assign(w.tokens.begin() + s * W, w.tokens.begin() + (s + b.B) * W);
    if (!w.loss_mask.empty()) b.loss_mask.assign(w.loss_mask.begin() + s * W, w.loss_mask.begin() + (s + b.B) * W);
    out.push_back(std::move(b));
  }
  return out;
}

}  // namespace ds
