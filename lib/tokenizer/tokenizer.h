#pragma once
// Tokenizer: a SentencePiece BPE model (byte fallback, digits split) plus the DeepSeek-V3/R1 special tokens.
//
// Vocabulary layout written by train_tokenizer (tokenizer_train.h):
//   0 <｜begin▁of▁sentence｜> (bos)   1 <｜end▁of▁sentence｜> (eos)   2 <｜▁pad▁｜> (pad)     3 <unk>
//   4 <｜User｜>  5 <｜Assistant｜>  6 <think>  7 </think>  8 <answer>  9 </answer>
//   10..265 the byte pieces <0x00>..<0xFF>, then the learned merges and characters.
// bos/eos/pad are SentencePiece control pieces (so sp.bos_id() etc. agree for Python users), the chat tokens
// user-defined pieces. SentencePiece itself never matches control pieces in text and would turn the U+2581 in
// "<｜end▁of▁sentence｜>" into a space on decoding, so this class handles every special token itself: encode()
// cuts the text at special-token strings (each becomes its single id) and encodes the pieces between them;
// decode() writes special tokens back verbatim. Between special tokens the result is exactly SentencePiece's.
// The model is trained without a dummy prefix, so encode(a + b) == encode(a) + encode(b) whenever the cut falls
// on a special token, and decode(encode(s)) == s for any UTF-8 s (unseen characters go through byte pieces),
// except that a literal U+2581 in the text decodes as a space (SentencePiece's whitespace mark).
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ds {

// DeepSeek spelling: U+FF5C FULLWIDTH VERTICAL LINE and U+2581 LOWER ONE EIGHTH BLOCK.
inline constexpr std::string_view kBosToken = "<｜begin▁of▁sentence｜>";
inline constexpr std::string_view kEosToken = "<｜end▁of▁sentence｜>";
inline constexpr std::string_view kPadToken = "<｜▁pad▁｜>";
inline constexpr std::string_view kUnkToken = "<unk>";
inline constexpr std::string_view kUserToken = "<｜User｜>";
inline constexpr std::string_view kAssistantToken = "<｜Assistant｜>";
inline constexpr std::string_view kThinkToken = "<think>";
inline constexpr std::string_view kThinkEndToken = "</think>";
inline constexpr std::string_view kAnswerToken = "<answer>";
inline constexpr std::string_view kAnswerEndToken = "</answer>";

// The special tokens in vocabulary order (ids 0..9 of a trained model), <unk> included.
const std::vector<std::string_view>& special_tokens();
// The chat tokens passed to SentencePiece as user-defined symbols (ids 4..9).
const std::vector<std::string_view>& chat_tokens();

class Tokenizer {
 public:
  Tokenizer();
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  // A tokenizer.model file, or a directory that holds one. Bad-input error when missing or not a model.
  static Tokenizer load(const std::string& path);
  // A serialized SentencePiece ModelProto (the bytes of a tokenizer.model); `origin` names it in errors.
  static Tokenizer from_serialized(std::string model_proto, const std::string& origin);

  bool loaded() const;
  std::vector<int32_t> encode(std::string_view text) const;
  // Runtime error for an id outside [0, vocab_size()); skip_special drops the special tokens.
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  int32_t vocab_size() const;
  std::string piece(int32_t id) const;             // "<0x0A>", "▁the", "<think>"
  int32_t piece_to_id(std::string_view p) const;   // -1 when not in the vocabulary
  bool is_byte(int32_t id) const;                  // a byte-fallback piece <0xNN>

  // Special token ids; -1 when the model lacks the token (a model not trained by ds-tokenize).
  int32_t special_id(std::string_view token) const;
  bool is_special(int32_t id) const;
  int32_t bos_id() const;
  int32_t eos_id() const;
  int32_t pad_id() const;
  int32_t unk_id() const;
  int32_t user_id() const { return special_id(kUserToken); }
  int32_t assistant_id() const { return special_id(kAssistantToken); }
  int32_t think_id() const { return special_id(kThinkToken); }
  int32_t think_end_id() const { return special_id(kThinkEndToken); }
  int32_t answer_id() const { return special_id(kAnswerToken); }
  int32_t answer_end_id() const { return special_id(kAnswerEndToken); }

  const std::string& serialized_model() const;  // the tokenizer.model bytes
  const std::string& source() const;            // where it was loaded from

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Splits text at special-token occurrences (leftmost first, longest on a tie): calls on_text for the text
// between them (never empty) and on_special with the index into `tokens`. Exposed for training-corpus
// preparation and tests.
void split_on_special(std::string_view text, const std::vector<std::string_view>& tokens,
                      const std::function<void(std::string_view)>& on_text,
                      const std::function<void(size_t)>& on_special);

}  // namespace ds
