#include "tokenizer/tokenizer.h"

#include <sentencepiece_processor.h>

#include <array>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace ds {

const std::vector<std::string_view>& special_tokens() {
  static const std::vector<std::string_view> t = {kBosToken,   kEosToken,      kPadToken,   kUnkToken,
                                                  kUserToken,  kAssistantToken, kThinkToken, kThinkEndToken,
                                                  kAnswerToken, kAnswerEndToken};
  return t;
}

const std::vector<std::string_view>& chat_tokens() {
  static const std::vector<std::string_view> t = {kUserToken,  kAssistantToken, kThinkToken,
                                                  kThinkEndToken, kAnswerToken,  kAnswerEndToken};
  return t;
}

void split_on_special(std::string_view text, const std::vector<std::string_view>& tokens,
                      const std::function<void(std::string_view)>& on_text,
                      const std::function<void(size_t)>& on_special) {
  std::string firsts;  // the bytes a token can start with: only there can a match begin
  for (auto t : tokens)
    if (!t.empty() && firsts.find(t[0]) == std::string::npos) firsts.push_back(t[0]);
  size_t start = 0;
  size_t i = firsts.empty() ? std::string_view::npos : text.find_first_of(firsts);
  while (i != std::string_view::npos) {
    size_t best = tokens.size(), best_len = 0;
    for (size_t k = 0; k < tokens.size(); ++k)
      if (tokens[k].size() > best_len && text.substr(i).starts_with(tokens[k])) {
        best = k;
        best_len = tokens[k].size();
      }
    if (best == tokens.size()) {
      i = text.find_first_of(firsts, i + 1);
      continue;
    }
    if (i > start) on_text(text.substr(start, i - start));
    on_special(best);
    start = i + best_len;
    i = text.find_first_of(firsts, start);
  }
  if (start < text.size()) on_text(text.substr(start));
}

struct Tokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  std::string model;
  std::string source;
  std::array<int32_t, 10> ids{};                // per special_tokens() entry, -1 when absent
  std::vector<std::string_view> split_tokens;   // the specials encode() cuts at (present ones, not <unk>)
  std::vector<int32_t> split_ids;
  std::vector<char> special;                    // per vocabulary id: written verbatim by decode()
};

Tokenizer::Tokenizer() = default;
Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

Tokenizer Tokenizer::load(const std::string& path) {
  std::error_code ec;
  std::string file = path;
  if (fs::is_directory(path, ec)) {
    file = (fs::path(path) / "tokenizer.model").string();
    if (!fs::exists(file, ec)) throw_bad_input("no tokenizer.model in the directory", path);
  } else if (!fs::exists(path, ec)) {
    throw_bad_input("no such tokenizer file", path);
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw_bad_input("cannot read the tokenizer model", file);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return from_serialized(bytes.str(), file);
}

Tokenizer Tokenizer::from_serialized(std::string model_proto, const std::string& origin) {
  Tokenizer t;
  t.impl_ = std::make_unique<Impl>();
  Impl& m = *t.impl_;
  m.model = std::move(model_proto);
  m.source = origin;
  auto st = m.sp.LoadFromSerializedProto(m.model);
  if (!st.ok()) throw_bad_input("not a SentencePiece model: " + st.ToString(), origin);
  const int n = m.sp.GetPieceSize();
  m.special.assign(size_t(n), 0);
  const auto& specials = special_tokens();
  for (size_t i = 0; i < specials.size(); ++i) {
    int id = m.sp.PieceToId(specials[i]);  // unknown pieces map to unk: confirm the piece text
    m.ids[i] = (id >= 0 && id < n && m.sp.IdToPiece(id) == specials[i]) ? id : -1;
    if (m.ids[i] < 0 || specials[i] == kUnkToken) continue;
    m.split_tokens.push_back(specials[i]);
    m.split_ids.push_back(m.ids[i]);
    m.special[size_t(m.ids[i])] = 1;
  }
  return t;
}

bool Tokenizer::loaded() const { return impl_ != nullptr; }

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  DS_CHECK(loaded(), "tokenizer not loaded");
  std::vector<int32_t> out;
  std::vector<int> ids;
  split_on_special(
      text, impl_->split_tokens,
      [&](std::string_view part) {
        auto st = impl_->sp.Encode(part, &ids);
        if (!st.ok()) throw_runtime("sentencepiece encode failed: " + st.ToString());
        out.insert(out.end(), ids.begin(), ids.end());
      },
      [&](size_t k) { out.push_back(impl_->split_ids[k]); });
  return out;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  DS_CHECK(loaded(), "tokenizer not loaded");
  const int32_t n = vocab_size();
  std::string out, part;
  std::vector<int> run;
  auto flush = [&] {
    if (run.empty()) return;
    auto st = impl_->sp.Decode(run, &part);
    if (!st.ok()) throw_runtime("sentencepiece decode failed: " + st.ToString());
    out += part;
    run.clear();
  };
  for (int32_t id : ids) {
    if (id < 0 || id >= n)
      throw_bad_input("token id " + std::to_string(id) + " is outside the vocabulary [0, " + std::to_string(n) + ")");
    if (impl_->special[size_t(id)]) {
      flush();
      if (!skip_special) out += impl_->sp.IdToPiece(id);
    } else {
      run.push_back(id);
    }
  }
  flush();
  return out;
}

int32_t Tokenizer::vocab_size() const { return impl_ ? impl_->sp.GetPieceSize() : 0; }

std::string Tokenizer::piece(int32_t id) const {
  DS_CHECK(id >= 0 && id < vocab_size(), "token id " + std::to_string(id) + " out of range");
  return impl_->sp.IdToPiece(id);
}

int32_t Tokenizer::piece_to_id(std::string_view p) const {
  if (!impl_) return -1;
  int id = impl_->sp.PieceToId(p);
  return (id >= 0 && impl_->sp.IdToPiece(id) == p) ? id : -1;
}

bool Tokenizer::is_byte(int32_t id) const { return id >= 0 && id < vocab_size() && impl_->sp.IsByte(id); }

int32_t Tokenizer::special_id(std::string_view token) const {
  if (!impl_) return -1;
  const auto& s = special_tokens();
  for (size_t i = 0; i < s.size(); ++i)
    if (s[i] == token) return impl_->ids[i];
  return -1;
}

bool Tokenizer::is_special(int32_t id) const {
  return impl_ && id >= 0 && id < vocab_size() && impl_->special[size_t(id)];
}

int32_t Tokenizer::bos_id() const { return special_id(kBosToken); }
int32_t Tokenizer::eos_id() const { return special_id(kEosToken); }
int32_t Tokenizer::pad_id() const { return special_id(kPadToken); }
int32_t Tokenizer::unk_id() const {
  int32_t id = special_id(kUnkToken);
  return (id >= 0 || !impl_) ? id : impl_->sp.unk_id();  // a foreign model may spell <unk> differently
}

const std::string& Tokenizer::serialized_model() const {
  DS_CHECK(loaded(), "tokenizer not loaded");
  return impl_->model;
}

const std::string& Tokenizer::source() const {
  DS_CHECK(loaded(), "tokenizer not loaded");
  return impl_->source;
}

}  // namespace ds
