#pragma once
// Training a tokenizer from a {"text"} JSONL corpus with SentencePiece BPE (vocabulary layout: tokenizer.h).
//
// The corpus is copied to a temporary text file, one sentence per line: every "text" is cut at newlines and at
// special-token strings (so special tokens never leak into merges), empty pieces are dropped. SentencePiece then
// trains with
//   --model_type=bpe --byte_fallback=true --character_coverage=1.0 --split_digits=true
//   --allow_whitespace_only_pieces=true --remove_extra_whitespaces=false --normalization_rule_name=identity
//   --add_dummy_prefix=false --hard_vocab_limit=false --input_sentence_size=0 --shuffle_input_sentence=false
// i.e. no normalisation, digits as single tokens (arithmetic tasks), every byte representable, all sentences
// used in file order. --hard_vocab_limit=false lets a small corpus end with a smaller vocabulary.
// Deterministic: the same corpus and options give the same model bytes (sentences are fed through an iterator,
// so no temporary path is recorded); the thread count is recorded in the model but did not change the pieces.
#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace ds {

struct TrainOptions {
  std::string input;           // {"text"} JSONL (or .jsonl.zst), '-' = stdin
  // Where the result goes. Ending in ".model": that single file. Otherwise a directory (created when missing)
  // receiving tokenizer.model, tokenizer_config.json and special_tokens_map.json (write_tokenizer_files).
  // Nothing is written when training fails. Empty: nothing is written (the caller keeps the returned model).
  std::string output;
  int vocab_size = 8000;       // upper bound (the trainer may stop earlier on a small corpus)
  int threads = 0;             // 0 = all cores
  int64_t model_max_length = 16384;  // recorded in tokenizer_config.json
};

// The smallest vocabulary train_tokenizer accepts: the 10 special tokens, the 256 byte pieces and one more.
inline constexpr int kMinVocabSize = 10 + 256 + 1;

// Trains, writes opts.output and returns the trained tokenizer. Usage error for a vocabulary below
// kMinVocabSize; bad-input errors (file:line) for malformed JSONL, a record without a string "text", or a corpus
// with no text at all; runtime error when SentencePiece fails.
Tokenizer train_tokenizer(const TrainOptions& opts);

}  // namespace ds
