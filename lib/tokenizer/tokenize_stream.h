#pragma once
// Encoding and decoding whole JSONL streams (ds-tokenize encode / decode).
//   encode: {"text": ...} per line (or plain text lines) -> {"ids": [...]} (+ "pieces" on request)
//   decode: {"ids": [...]} per line -> {"text": ...}
// Input and output are paths or '-'; a file output appears only when the whole stream succeeded (ds::Writer).
// Bad records are bad-input errors naming file:line.
#include <cstdint>
#include <string>

#include "tokenizer/tokenizer.h"

namespace ds {

struct EncodeStreamOptions {
  std::string input = "-";
  std::string output = "-";
  bool text_lines = false;  // plain text, one example per line (a trailing '\r' is dropped), instead of JSONL
  bool pieces = false;      // also write "pieces": the SentencePiece piece of every id
  bool add_bos = false;     // prepend bos_id()
  bool add_eos = false;     // append eos_id()
};

struct DecodeStreamOptions {
  std::string input = "-";
  std::string output = "-";
  bool skip_special = false;  // drop special tokens from the text
};

// Both return the number of records processed.
int64_t encode_stream(const Tokenizer& tok, const EncodeStreamOptions& opts);
int64_t decode_stream(const Tokenizer& tok, const DecodeStreamOptions& opts);

}  // namespace ds
