#pragma once
// ds-pretrain's work, callable from tests: build or load a model, read the corpus, train, checkpoint;
// and the logits dump used by the interoperability test.
#include <cstdint>
#include <string>

#include "tensor/context.h"
#include "train/trainer.h"

namespace ds {

struct PretrainOptions {
  std::string input;            // {"text"} JSONL(.zst) or '-'
  std::string output_dir;       // checkpoint directory (replaced atomically at every save)
  std::string preset;           // model from a preset ...
  std::string config_path;      // ... or from a config.json ...
  std::string init_from;        // ... or from a checkpoint's weights (fresh optimizer)
  std::string tokenizer;        // tokenizer.model or a directory holding one
  bool resume = false;          // continue the run saved in output_dir
  bool overwrite = false;       // replace a checkpoint in output_dir instead of refusing
  PretrainCorpusOptions corpus;
  TrainerOptions train;
};

// Returns the final held-out loss (NaN without an eval split).
double run_pretrain(const Context& ctx, PretrainOptions opt);
// The config of a fresh model for `tok`: config.json at `config_path`, else the preset `preset`; vocab_size
// becomes the tokenizer's (an error when the file's is smaller), bos/eos its ids.
ModelConfig config_for_tokenizer(const std::string& config_path, const std::string& preset, const Tokenizer& tok);

// Prints, for every {"ids": [...]} record of `input`, {"ids": [...], "logits": [[V floats] per position]}
// computed by the checkpoint `ckpt_dir` (main head, f32 unless dtype says f64).
void dump_logits(const Context& ctx, const std::string& ckpt_dir, const std::string& input, const std::string& output);

}  // namespace ds
