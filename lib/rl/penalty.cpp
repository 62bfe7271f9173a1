#include "rl/penalty.h"

#include <algorithm>
#include <cstdint>

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

bool is_ws(unsigned char b) { return b == ' ' || b == '\t' || b == '\n' || b == '\r' || b == '\f' || b == '\v'; }

// Token hashes in reading order. (The hash lives in a local so that it stays in a register.)
std::vector<uint64_t> token_hashes(std::string_view s) {
  std::vector<uint64_t> out;
  out.reserve(s.size() / 4 + 1);
  const size_t n = s.size();
  size_t i = 0;
  uint64_t h = kFnvOffset;
  bool any = false;  // the token being read has a byte
  while (i < n) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
      ++i;
      if (is_ws(b)) {
        if (any) out.push_back(h);
        h = kFnvOffset;
        any = false;
        continue;
      }
      if (b >= 'A' && b <= 'Z') b = static_cast<unsigned char>(b - 'A' + 'a');
      h = (h ^ b) * kFnvPrime;
      any = true;
      continue;
    }
    const size_t start = i;
    const char32_t c = utf8_next(s, i);
    if (script_is_ideographic(script_of(c))) {  // a token of its own
      if (any) out.push_back(h);
      uint64_t g = kFnvOffset;
      for (size_t k = start; k < i; ++k) g = (g ^ static_cast<unsigned char>(s[k])) * kFnvPrime;
      out.push_back(g);
      h = kFnvOffset;
      any = false;
      continue;
    }
    for (size_t k = start; k < i; ++k) h = (h ^ static_cast<unsigned char>(s[k])) * kFnvPrime;
    any = true;
  }
  if (any) out.push_back(h);
  return out;
}

}  // namespace

double repetition_ratio(std::string_view text, int n) {
  if (n < 1) return 0.0;
  std::vector<uint64_t> tok = token_hashes(text);
  if (tok.size() < size_t(n)) return 0.0;
  const size_t total = tok.size() - size_t(n) + 1;
  // Count distinct n-gram hashes with a small open-addressing set (0 marks an empty slot).
  size_t cap = 16;
  while (cap < 2 * total) cap <<= 1;
  std::vector<uint64_t> table(cap, 0);
  size_t unique = 0;
  for (size_t i = 0; i < total; ++i) {
    uint64_t h = kFnvOffset;
    for (int k = 0; k < n; ++k) h = (h ^ tok[i + size_t(k)]) * kFnvPrime + 0x9E3779B97F4A7C15ull;
    h |= 1;  // never 0 (halves the hash space: irrelevant at these sizes)
    size_t slot = size_t(h ^ (h >> 29)) & (cap - 1);
    while (table[slot] != 0 && table[slot] != h) slot = (slot + 1) & (cap - 1);
    if (table[slot] == 0) {
      table[slot] = h;
      ++unique;
    }
  }
  return 1.0 - double(unique) / double(total);
}

double repetition_penalty(std::string_view text, int n, double max_penalty) {
  if (max_penalty == 0.0) return 0.0;
  return repetition_ratio(text, n) * max_penalty;
}

}  // namespace ds::rl
