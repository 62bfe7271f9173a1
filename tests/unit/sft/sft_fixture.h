#pragma once
// Shared by the SFT tests: a temporary directory, a tokenizer trained once per process on a small chat-like
// corpus, chat JSONL writers, and a tiny base checkpoint (random weights + tokenizer files).
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "core/json.h"
#include "model/model_io.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer_files.h"
#include "tokenizer/tokenizer_train.h"

namespace ds::test {

struct SftTmp {
  std::string path;
  SftTmp() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ds_test_sft.XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~SftTmp() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

inline void write_text(const std::string& path, const std::string& s) {
  std::ofstream f(path, std::ios::binary);
  f << s;
}

// "What is a + b?" -> "<think>\na plus b is c</think>\n\nc" style conversations.
inline std::vector<ChatMessage> arith_chat(int i) {
  const int a = (i * 37) % 50, b = (i * 11 + 3) % 50;
  std::string q = "What is " + std::to_string(a) + " + " + std::to_string(b) + "?";
  std::string r = "<think>\n" + std::to_string(a) + " plus " + std::to_string(b) + " is " + std::to_string(a + b) +
                  "</think>\n\nThe answer is " + std::to_string(a + b) + ".";
  return {{"user", q}, {"assistant", r}};
}

inline std::string messages_json(const std::vector<ChatMessage>& msgs) {
  JsonWriter w;
  w.begin_object().key("messages").begin_array();
  for (const ChatMessage& m : msgs) w.begin_object().kv("role", m.role).kv("content", m.content).end_object();
  w.end_array().end_object();
  return w.str();
}

inline void write_chats(const std::string& path, const std::vector<std::vector<ChatMessage>>& chats) {
  std::ofstream f(path);
  for (const auto& c : chats) f << messages_json(c) << "\n";
}

// Trained once (a fraction of a second) and shared by the test cases of one process.
inline const Tokenizer& chat_tokenizer() {
  static SftTmp dir;
  static Tokenizer tok = [] {
    std::ofstream f(dir / "corpus.jsonl");
    for (int i = 0; i < 200; ++i) {
      std::string s;
      for (const ChatMessage& m : arith_chat(i)) s += m.content + "\n";
      s += "You are a helpful assistant. Hello there, how are you today? Fine thanks.";
      JsonWriter w;
      w.begin_object().kv("text", s).end_object();
      f << w.str() << "\n";
    }
    f.close();
    TrainOptions o;
    o.input = dir / "corpus.jsonl";
    o.vocab_size = 320;
    o.threads = 1;
    return train_tokenizer(o);
  }();
  return tok;
}

inline ModelConfig tiny_config(const Tokenizer& tok) {
  ModelConfig c = config_preset("tiny");
  c.vocab_size = tok.vocab_size();
  c.bos_token_id = tok.bos_id();
  c.eos_token_id = tok.eos_id();
  return c;
}

// A base checkpoint directory: random tiny model + the tokenizer files.
inline void write_base_checkpoint(const std::string& dir, const Tokenizer& tok, const Context& ctx,
                                  uint64_t seed = 7) {
  std::filesystem::create_directories(dir);
  Model m(tiny_config(tok), ctx);
  m.init_random(seed);
  save_model_files(dir, m);
  write_tokenizer_files(dir, tok);
}

}  // namespace ds::test
