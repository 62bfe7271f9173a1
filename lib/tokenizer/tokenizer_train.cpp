#include "tokenizer/tokenizer_train.h"

#include <sentencepiece_trainer.h>
#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <thread>
#include <unordered_map>

#include "core/error.h"
#include "core/io.h"
#include "core/jsonl.h"
#include "core/log.h"
#include "tokenizer/tokenizer_files.h"

namespace fs = std::filesystem;

namespace ds {

namespace {

// A private scratch directory under $TMPDIR, removed on every exit path.
struct ScratchDir {
  std::string path;
  ScratchDir() {
    std::string tmpl = (fs::temp_directory_path() / "ds-tokenize.XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw_runtime("cannot create a temporary directory in " + fs::temp_directory_path().string());
    path = tmpl;
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

struct CorpusStats {
  int64_t records = 0;
  int64_t sentences = 0;
  int64_t bytes = 0;
  size_t longest = 0;
};

// Copies the "text" of every record to `out`, one sentence per line: cut at newlines and at special tokens.
CorpusStats write_corpus(const std::string& input, const std::string& out_path) {
  std::ofstream out(out_path, std::ios::binary);
  if (!out) throw_runtime("cannot create '" + out_path + "'");
  CorpusStats st;
  std::vector<std::string_view> specials;
  for (auto t : special_tokens())
    if (t != kUnkToken) specials.push_back(t);
  auto emit = [&](std::string_view part) {
    while (!part.empty()) {
      size_t nl = part.find('\n');
      std::string_view line = part.substr(0, nl);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      if (!line.empty()) {
        out.write(line.data(), std::streamsize(line.size()));
        out.put('\n');
        ++st.sentences;
        st.bytes += int64_t(line.size());
        st.longest = std::max(st.longest, line.size());
      }
      if (nl == std::string_view::npos) break;
      part.remove_prefix(nl + 1);
    }
  };
  JsonlReader reader(input);
  while (const JsonlRecord* rec = reader.next()) {
    std::string text = rec->get_string("text");  // bad-input error with file:line when absent or not a string
    ++st.records;
    split_on_special(text, specials, emit, [](size_t) {});
  }
  out.close();
  if (!out) throw_runtime("cannot write '" + out_path + "' (disk full?)");
  if (st.sentences == 0)
    throw_bad_input(st.records ? "empty corpus: no record has any \"text\"" : "empty corpus: no records",
                    input == "-" ? "<stdin>" : input);
  return st;
}

// Feeds the corpus file to the trainer line by line. Passing sentences this way (instead of --input) keeps the
// temporary path out of the model's trainer_spec, so the same corpus gives the same model bytes.
class FileSentences : public sentencepiece::SentenceIterator {
 public:
  explicit FileSentences(const std::string& path) : in_(path, std::ios::binary) { Next(); }
  bool done() const override { return done_; }
  void Next() override { done_ = !std::getline(in_, line_); }
  const std::string& value() const override { return line_; }
  sentencepiece::util::Status status() const override {
    if (in_.bad()) return sentencepiece::util::Status(sentencepiece::util::StatusCode::kInternal, "corpus read error");
    return sentencepiece::util::Status();
  }

 private:
  std::ifstream in_;
  std::string line_;
  bool done_ = false;
};

void write_output(const std::string& output, const Tokenizer& tok, int64_t model_max_length) {
  std::error_code ec;
  const bool single = output.size() > 6 && output.compare(output.size() - 6, 6, ".model") == 0;
  if (single) {
    fs::path parent = fs::path(output).parent_path();
    if (!parent.empty()) fs::create_directories(parent, ec);
    write_file_atomic(output, tok.serialized_model());
    return;
  }
  if (fs::exists(output, ec) && !fs::is_directory(output, ec))
    throw_usage("output '" + output + "' exists and is not a directory (use a name ending in .model for a file)");
  fs::create_directories(output, ec);
  if (ec) throw_runtime("cannot create directory '" + output + "': " + ec.message());
  write_tokenizer_files(output, tok, model_max_length);
}

}  // namespace

Tokenizer train_tokenizer(const TrainOptions& opts) {
  if (opts.vocab_size < kMinVocabSize)
    throw_usage("--vocab-size must be at least " + std::to_string(kMinVocabSize) +
                " (10 special tokens + 256 byte pieces + 1), got " + std::to_string(opts.vocab_size));
  if (opts.input.empty()) throw_usage("no input corpus given");
  int threads = opts.threads > 0 ? opts.threads : int(std::max(1u, std::thread::hardware_concurrency()));

  ScratchDir scratch;
  const std::string corpus = scratch.path + "/corpus.txt";
  CorpusStats st = write_corpus(opts.input, corpus);
  log_info("training a " + std::to_string(opts.vocab_size) + "-piece BPE tokenizer on " +
           std::to_string(st.sentences) + " lines (" + std::to_string(st.bytes) + " bytes) from " +
           std::to_string(st.records) + " records");

  std::string user_symbols;
  for (auto t : chat_tokens()) user_symbols += (user_symbols.empty() ? "" : ",") + std::string(t);
  // The map overload: the string overload splits on spaces. No model_prefix: the model comes back in memory
  // (SentencePiece requires exactly one of the two).
  const std::unordered_map<std::string, std::string> args = {
      {"model_type", "bpe"},
      {"vocab_size", std::to_string(opts.vocab_size)},
      {"hard_vocab_limit", "false"},
      {"byte_fallback", "true"},
      {"character_coverage", "1.0"},
      {"split_digits", "true"},
      {"allow_whitespace_only_pieces", "true"},
      {"remove_extra_whitespaces", "false"},
      {"normalization_rule_name", "identity"},
      {"add_dummy_prefix", "false"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      {"max_sentence_length", std::to_string(std::max<size_t>(4192, st.longest))},
      {"num_threads", std::to_string(threads)},
      {"bos_id", "0"}, {"eos_id", "1"}, {"pad_id", "2"}, {"unk_id", "3"},
      {"bos_piece", std::string(kBosToken)},
      {"eos_piece", std::string(kEosToken)},
      {"pad_piece", std::string(kPadToken)},
      {"unk_piece", std::string(kUnkToken)},
      {"user_defined_symbols", user_symbols},
      // SentencePiece's INFO log only at debug; its warnings (e.g. merges exhausted early) up to warn.
      {"minloglevel", log_level() <= LogLevel::debug ? "0" : log_level() <= LogLevel::warn ? "1" : "2"},
  };
  std::string model;
  FileSentences sentences(corpus);
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &sentences, &model);
  if (!status.ok()) throw_runtime("sentencepiece training failed: " + status.ToString());

  Tokenizer tok = Tokenizer::from_serialized(std::move(model), "trained model");
  log_info("tokenizer trained: " + std::to_string(tok.vocab_size()) + " pieces");
  if (!opts.output.empty()) write_output(opts.output, tok, opts.model_max_length);
  return tok;
}

}  // namespace ds
