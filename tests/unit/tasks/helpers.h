#pragma once
// Test helpers for lib/tasks: evaluators written independently of the library (so a bug in lib/tasks/verify
// cannot hide one in the generators), answer extraction, temp dirs.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/temp_dir.h"

#include <unistd.h>

namespace ds::test {

// Exact integer evaluation of "+ - * / ( )" expressions: nothing when a division leaves a remainder.
class IntEval {
 public:
  explicit IntEval(const std::string& s) : s_(s) {}
  std::optional<__int128> run() {
    ok_ = true;
    __int128 v = sum();
    ws();
    if (!ok_ || i_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  void ws() {
    while (i_ < s_.size() && s_[i_] == ' ') ++i_;
  }
  __int128 sum() {
    __int128 v = prod();
    for (;;) {
      ws();
      if (i_ < s_.size() && (s_[i_] == '+' || s_[i_] == '-')) {
        char op = s_[i_++];
        __int128 r = prod();
        v = op == '+' ? v + r : v - r;
      } else {
        return v;
      }
    }
  }
  __int128 prod() {
    __int128 v = atom();
    for (;;) {
      ws();
      if (i_ < s_.size() && (s_[i_] == '*' || s_[i_] == '/')) {
        char op = s_[i_++];
        __int128 r = atom();
        if (op == '*') {
          v *= r;
        } else {
          if (r == 0 || v % r != 0) ok_ = false;
          else v /= r;
        }
      } else {
        return v;
      }
    }
  }
  __int128 atom() {
    ws();
    if (i_ < s_.size() && s_[i_] == '(') {
      ++i_;
      __int128 v = sum();
      ws();
      if (i_ >= s_.size() || s_[i_] != ')') ok_ = false;
      else ++i_;
      return v;
    }
    size_t start = i_;
    __int128 v = 0;
    while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') v = v * 10 + (s_[i_++] - '0');
    if (i_ == start) ok_ = false;
    numbers.push_back(int64_t(v));
    return v;
  }
  std::string s_;
  size_t i_ = 0;
  bool ok_ = true;

 public:
  std::vector<int64_t> numbers;  // the literals, in order
};

// TinyZero's check, re-implemented: literals = numbers (multiset), value within 1e-5 of target (floating).
inline bool tinyzero_countdown_ok(const std::string& eq, std::vector<int64_t> numbers, int64_t target) {
  // floating evaluation
  struct F {
    const std::string& s;
    size_t i = 0;
    bool ok = true;
    std::vector<int64_t> lits;
    void ws() { while (i < s.size() && s[i] == ' ') ++i; }
    double sum() {
      double v = prod();
      for (ws(); i < s.size() && (s[i] == '+' || s[i] == '-'); ws()) {
        char op = s[i++];
        double r = prod();
        v = op == '+' ? v + r : v - r;
      }
      return v;
    }
    double prod() {
      double v = atom();
      for (ws(); i < s.size() && (s[i] == '*' || s[i] == '/'); ws()) {
        char op = s[i++];
        double r = atom();
        v = op == '*' ? v * r : v / r;
      }
      return v;
    }
    double atom() {
      ws();
      if (i < s.size() && s[i] == '(') {
        ++i;
        double v = sum();
        ws();
        if (i < s.size() && s[i] == ')') ++i;
        else ok = false;
        return v;
      }
      size_t st = i;
      int64_t v = 0;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') v = v * 10 + (s[i++] - '0');
      if (st == i) ok = false;
      lits.push_back(v);
      return double(v);
    }
  } f{eq, 0, true, {}};
  double v = f.sum();
  f.ws();
  if (!f.ok || f.i != eq.size()) return false;
  std::sort(f.lits.begin(), f.lits.end());
  std::sort(numbers.begin(), numbers.end());
  return f.lits == numbers && std::fabs(v - double(target)) < 1e-5;
}

// The text between the last "<answer>" and the following "</answer>", or after the last "Answer: " line.
inline std::string extract_answer(const std::string& text) {
  size_t a = text.rfind("<answer>");
  if (a != std::string::npos) {
    size_t b = text.find("</answer>", a);
    std::string s = text.substr(a + 8, b - a - 8);
    while (!s.empty() && s.front() == ' ') s.erase(s.begin());
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s;
  }
  size_t nl = text.rfind('\n');
  std::string last = text.substr(nl + 1);
  size_t colon = last.find(": ");
  return colon == std::string::npos ? last : last.substr(colon + 2);
}

// Any byte of a multi-byte UTF-8 sequence starting in E3..E9 (CJK) or the full-width forms EF BC/BD.
inline bool has_cjk_bytes(const std::string& s) {
  for (size_t i = 0; i + 1 < s.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]), d = static_cast<unsigned char>(s[i + 1]);
    if ((c >= 0xE3 && c <= 0xE9) || (c == 0xEF && (d == 0xBC || d == 0xBD))) return true;
  }
  return false;
}

inline std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace ds::test
