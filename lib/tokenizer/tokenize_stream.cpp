#include "tokenizer/tokenize_stream.h"

#include "core/error.h"
#include "core/io.h"
#include "core/json.h"
#include "core/jsonl.h"

namespace ds {

namespace {

std::string encoded_line(const Tokenizer& tok, const EncodeStreamOptions& o, std::string_view text) {
  std::vector<int32_t> ids;
  if (o.add_bos) ids.push_back(tok.bos_id());
  std::vector<int32_t> body = tok.encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  if (o.add_eos) ids.push_back(tok.eos_id());
  JsonWriter w;
  w.begin_object().key("ids").begin_array();
  for (int32_t id : ids) w.value(int64_t(id));
  w.end_array();
  if (o.pieces) {
    w.key("pieces").begin_array();
    for (int32_t id : ids) w.value(tok.piece(id));
    w.end_array();
  }
  w.end_object();
  return w.take() + "\n";
}

}  // namespace

int64_t encode_stream(const Tokenizer& tok, const EncodeStreamOptions& o) {
  if ((o.add_bos && tok.bos_id() < 0) || (o.add_eos && tok.eos_id() < 0))
    throw_usage("the tokenizer has no bos/eos token (" + tok.source() + ")");
  Writer out(o.output);
  int64_t n = 0;
  if (o.text_lines) {
    LineReader in(o.input);
    std::string line;
    while (in.next(&line)) {
      if (!line.empty() && line.back() == '\r') line.pop_back();
      out.write(encoded_line(tok, o, line));
      ++n;
    }
  } else {
    JsonlReader in(o.input);
    while (const JsonlRecord* rec = in.next()) {
      out.write(encoded_line(tok, o, rec->get_string("text")));
      ++n;
    }
  }
  out.commit();
  return n;
}

int64_t decode_stream(const Tokenizer& tok, const DecodeStreamOptions& o) {
  Writer out(o.output);
  JsonlReader in(o.input);
  int64_t n = 0;
  const int64_t vocab = tok.vocab_size();
  std::vector<int32_t> ids;
  while (const JsonlRecord* rec = in.next()) {
    ids.clear();
    for (int64_t id : rec->get_int_array("ids")) {
      if (id < 0 || id >= vocab)
        throw_bad_input("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(vocab) +
                            ")", in.path(), in.line_number());
      ids.push_back(int32_t(id));
    }
    JsonWriter w;
    w.begin_object().kv("text", tok.decode(ids, o.skip_special)).end_object();
    out.write(w.take() + "\n");
    ++n;
  }
  out.commit();
  return n;
}

}  // namespace ds
