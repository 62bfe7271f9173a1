#pragma once
// The tokenizer files of a checkpoint directory, in the Hugging Face layout:
//   tokenizer.model          the SentencePiece model (byte copy)
//   tokenizer_config.json    special tokens (with their ids in "added_tokens_decoder"), model_max_length,
//                            "chat_template" (Jinja) and "chat_template_name": "deepseek-r1"
//   special_tokens_map.json  bos/eos/pad/unk and the additional (chat) special tokens
// Each file is written atomically (temporary file + fsync + rename).
#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace ds {

inline constexpr const char* kChatTemplateName = "deepseek-r1";

// DeepSeek-R1's conversation format as a Jinja chat template (system prompts joined by a blank line after bos,
// "<｜User｜>" + content, "<｜Assistant｜>" + content with any reasoning up to "</think>" dropped +
// "<｜end▁of▁sentence｜>", and the generation prompt "<｜Assistant｜><think>\n"). Tool calls are not covered.
const std::string& deepseek_r1_chat_template();

void write_tokenizer_files(const std::string& dir, const Tokenizer& tok, int64_t model_max_length = 16384);

}  // namespace ds
