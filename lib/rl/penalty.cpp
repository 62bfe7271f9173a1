#include "rl/penalty.h"

#include <algorithm>

#include "rl/utf8.h"

namespace ds::rl {

double overlong_penalty(int64_t len, int64_t max_len, int64_t buffer) {
  const int64_t expected = max_len - buffer;
  if (len <= expected) return 0.0;
  if (len > max_len || buffer <= 0) return -1.0;
  return double(expected - len) / double(buffer);
}

std::vector<double> kimi_length_rewards(const std::vector<int64_t>& lens, const std::vector<bool>& correct) {
  std::vector<double> out(lens.size(), 0.0);
  if (lens.empty()) return out;
  auto [mn, mx] = std::minmax_element(lens.begin(), lens.end());
  if (*mn == *mx) return out;
  for (size_t i = 0; i < lens.size(); ++i) {
    double lambda = 0.5 - double(lens[i] - *mn) / double(*mx - *mn);
    out[i] = correct[i] ? lambda : std::min(0.0, lambda);
  }
  return out;
}

namespace {

constexpr uint64_t kFnvOffset = 1469598103934665603ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

// Token hashes in reading order.
std::vector<uint64_t> token_hashes(std::string_view s) {
  std::vector<uint64_t> out;
  uint64_t h = kFnvOffset;
  bool in_word = false;
  auto finish = [&] {
    if (in_word) out.push_back(h);
    h = kFnvOffset;
    in_word = false;
  };
  size_t i = 0;
  while (i < s.size()) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      if (b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' || b == '\v') {
        finish();
        continue;
      }
      if (b >= 'A' && b <= 'Z') b = static_cast<unsigned char>(b - 'A' + 'a');
      h = (h ^ b) * kFnvPrime;
      in_word = true;
      continue;
    }
    size_t start = i;
    char32_t c = utf8_next(s, i);
    if (script_is_ideographic(script_of(c))) {
      finish();
      for (size_t k = start; k < i; ++k) h = (h ^ static_cast<unsigned char>(s[k])) * kFnvPrime;
      in_word = true;
      finish();
      continue;
    }
    for (size_t k = start; k < i; ++k) h = (h ^ static_cast<unsigned char>(s[k])) * kFnvPrime;
    in_word = true;
  }
  finish();
  return out;
}

}  // namespace

double repetition_ratio(std::string_view text, int n) {
  if (n < 1) return 0.0;
  std::vector<uint64_t> tok = token_hashes(text);
  if (tok.size() < size_t(n)) return 0.0;
  const size_t total = tok.size() - size_t(n) + 1;
  std::vector<uint64_t> grams(total);
  for (size_t i = 0; i < total; ++i) {
    uint64_t h = kFnvOffset;
    for (int k = 0; k < n; ++k) h = (h ^ tok[i + size_t(k)]) * kFnvPrime + 0x9E3779B97F4A7C15ull;
    grams[i] = h;
  }
  std::sort(grams.begin(), grams.end());
  const size_t unique = size_t(std::unique(grams.begin(), grams.end()) - grams.begin());
  return 1.0 - double(unique) / double(total);
}

double repetition_penalty(std::string_view text, int n, double max_penalty) {
  if (max_penalty == 0.0) return 0.0;
  return repetition_ratio(text, n) * max_penalty;
}

}  // namespace ds::rl
