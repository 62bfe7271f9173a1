#pragma once
// Supervised fine-tuning data: chat JSONL rendered with DeepSeek-R1's template (tokenizer/chat_template.h) into
// windows of T+1 tokens whose loss mask selects the assistant tokens.
//
// Records (one JSON object per line; other fields are ignored):
//   {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
//   {"prompt": str | [messages], "completion": str | [assistant messages]}   (a string prompt is one user turn)
// "messages" wins when a record has both forms. A record without either form, a role outside
// system/user/assistant, a missing or non-string role or content, or a conversation without an assistant
// message is a bad-input error naming file:line.
//
// Held-out split: a conversation is held out when a fixed hash of its messages (roles and contents, not its
// position) falls below eval_fraction, so duplicates land on the same side and the split does not depend on the
// seed or on the order of the file.
//
// Packing (default): the rendered conversations (each starts with bos and ends with the eos of its last
// assistant turn) are concatenated into one stream per split and cut into windows of T+1 tokens with stride T
// (train/data.h cut_windows, as pre-training does; a conversation may span windows and attention is not reset at
// conversation starts). A last partial window is padded with the pad token (mask 0) instead of being dropped.
// Without packing: one conversation per window, padded with pad tokens (mask 0); a longer one keeps its first
// T+1 tokens and is counted as truncated (a bad-input error with strict).
// Either way a window without a single target (mask 1 at positions 1..T) is dropped and counted.
#include <cstdint>
#include <string>
#include <vector>

#include "core/jsonl.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"
#include "train/data.h"

namespace ds {

struct SftDataOptions {
  int64_t seq_len = 1024;
  double eval_fraction = 0.05;  // share of conversations held out
  bool packing = true;
  bool strict = false;          // without packing: a conversation longer than a window is an error
  ChatRenderOptions render;     // prefill_think, keep_final_reasoning (add_generation_prompt must be off)
};

struct SftData {
  WindowSet train, eval;        // loss_mask always present
  int64_t n_conversations = 0, n_eval_conversations = 0;
  int64_t n_tokens = 0;         // rendered tokens, both splits
  int64_t n_trainable = 0;      // assistant tokens (mask 1) in the training windows
  int64_t n_truncated = 0;      // without packing: conversations cut to the window
  int64_t n_dropped_windows = 0;  // windows without a target
};

// The conversation of one record (bad-input errors name r's file:line and the field).
std::vector<ChatMessage> chat_record_messages(const JsonlRecord& r);

// Reads, checks, renders and windows a chat JSONL(.zst) file or '-'. Bad-input errors: bad records (file:line),
// an empty file, no training window with a target, a truncation with strict (file:line).
SftData load_sft_data(const std::string& path, const Tokenizer& tok, const SftDataOptions& opt);

// Optimizer steps for `epochs` passes over n_windows at windows_per_step (batch * grad_accum): at least 1.
int64_t sft_steps_for_epochs(double epochs, int64_t n_windows, int64_t windows_per_step);

}  // namespace ds
