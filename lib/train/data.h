#pragma once
// Training data as fixed windows of T+1 tokens, served in a deterministic shuffled order.
//
// Pre-training: every {"text"} document becomes [bos] + ids + [eos]; documents are concatenated into one
// stream and cut into windows of T+1 tokens with stride T (each window predicts T next tokens). Documents are
// assigned to the held-out split by a hash of their index (stable across seeds and runs). Epoch e visits the
// training windows in a permutation drawn from (seed, e); the position is a single counter of windows served,
// saved in trainer_state.json, so a resumed run sees exactly the batches it would have seen.
#include <cstdint>
#include <string>
#include <vector>

#include "model/model.h"
#include "tokenizer/tokenizer.h"

namespace ds {

struct WindowSet {
  int64_t T = 0;
  std::vector<int32_t> tokens;     // [n, T+1]
  std::vector<uint8_t> loss_mask;  // [n, T+1] or empty (all tokens are targets)
  int64_t size() const { return T ? int64_t(tokens.size()) / (T + 1) : 0; }
};

struct PretrainCorpusOptions {
  int64_t seq_len = 256;
  double eval_fraction = 0.05;  // share of documents held out
  std::string text_field = "text";
};

struct Corpus {
  WindowSet train, eval;
  int64_t n_docs = 0, n_eval_docs = 0;
  int64_t n_tokens = 0;
};

// Cuts a token stream into windows of T+1 tokens with stride T (consecutive windows share one token), appended
// to `out` (out.T = T); a tail too short for a window is dropped. `mask` (one flag per token, or empty = every
// token a target) is cut alongside into out.loss_mask; empty masks add nothing to out.loss_mask.
void cut_windows(const std::vector<int32_t>& stream, const std::vector<uint8_t>& mask, int64_t T, WindowSet& out);

// Reads and tokenizes a {"text"} JSONL(.zst) file or '-'. Bad lines are bad-input errors with file:line; an
// empty corpus or one too short for a single window is a bad-input error.
Corpus load_pretrain_corpus(const std::string& path, const Tokenizer& tok, const PretrainCorpusOptions& opt);

// Serves batches of B windows: shuffled per epoch, position = windows served so far.
class BatchStream {
 public:
  BatchStream(const WindowSet* windows, int64_t batch_size, uint64_t seed);
  Batch next();
  int64_t position() const { return position_; }
  void seek(int64_t position) { position_ = position; }
  int64_t epoch() const;

 private:
  const std::vector<int64_t>& order_for(int64_t epoch);
  const WindowSet* w_;
  int64_t B_;
  uint64_t seed_;
  int64_t position_ = 0;
  int64_t order_epoch_ = -1;
  std::vector<int64_t> order_;
};

// The first `max_batches` batches of B windows of a set, in order (for evaluation); the last may be short.
std::vector<Batch> fixed_batches(const WindowSet& w, int64_t batch_size, int64_t max_batches);

}  // namespace ds
