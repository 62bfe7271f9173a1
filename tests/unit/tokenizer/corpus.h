#pragma once
// A small generated corpus (digits, Chinese, the special tokens) and a tokenizer trained on it once per process.
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.h"
#include "core/json.h"
#include "tokenizer/tokenizer_train.h"

namespace ds::test {

struct TmpDir {
  std::string path;
  TmpDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "ds_test_tok.XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~TmpDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return path + "/" + name; }
};

inline std::string corpus_line(int i) {
  static const char* words[] = {"the", "model", "expert", "router", "latent", "attention", "answer", "token",
                                "你好", "世界", "数学", "问题", "gradient", "train", "step", "loss"};
  std::string s;
  uint32_t x = uint32_t(i) * 2654435761u + 12345u;
  int n = 4 + int(x % 9);
  for (int k = 0; k < n; ++k) {
    x = x * 1664525u + 1013904223u;
    s += (k ? " " : "") + std::string(words[(x >> 16) % 16]);
  }
  s += " " + std::to_string(i * 37 % 1000) + " + " + std::to_string(i % 97) + " = " + std::to_string(i * 37 % 1000 + i % 97);
  if (i % 5 == 0) s = std::string(kUserToken) + "What is " + std::to_string(i) + "?" + std::string(kAssistantToken) +
                      std::string(kThinkToken) + s + std::string(kThinkEndToken) + std::string(kAnswerToken) +
                      std::to_string(i) + std::string(kAnswerEndToken) + std::string(kEosToken);
  if (i % 7 == 0) s += "\nsecond line\twith a tab";
  return s;
}

inline void write_corpus(const std::string& path, int lines) {
  std::ofstream f(path);
  for (int i = 0; i < lines; ++i) {
    JsonWriter w;
    w.begin_object().kv("text", corpus_line(i)).kv("id", i).end_object();
    f << w.str() << "\n";
  }
}

// Trained once (about a tenth of a second) and shared by the test cases of one process.
inline const Tokenizer& trained() {
  static TmpDir dir;
  static Tokenizer tok = [] {
    write_corpus(dir / "corpus.jsonl", 300);
    TrainOptions o;
    o.input = dir / "corpus.jsonl";
    o.vocab_size = 400;
    o.threads = 1;
    return train_tokenizer(o);
  }();
  return tok;
}

}  // namespace ds::test
