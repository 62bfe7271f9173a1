#include "tasks/verify.h"

#include <algorithm>
#include <numeric>

namespace ds::tasks {

namespace {

using i128 = __int128;

bool fits(i128 v) { return v >= i128(INT64_MIN) + 1 && v <= i128(INT64_MAX); }

std::optional<Fraction> make(i128 num, i128 den) {
  if (den == 0) return std::nullopt;
  if (den < 0) num = -num, den = -den;
  i128 a = num < 0 ? -num : num, b = den;
  while (b != 0) {  // gcd
    i128 t = a % b;
    a = b;
    b = t;
  }
  if (a > 1) num /= a, den /= a;
  if (!fits(num) || !fits(den)) return std::nullopt;
  return Fraction{int64_t(num), int64_t(den)};
}

// Recursive descent: expr := term (('+'|'-') term)*; term := unary (('*'|'/') unary)*;
// unary := '-' unary | primary; primary := number | '(' expr ')'.
class Parser {
 public:
  Parser(std::string_view s, std::vector<int64_t>* lits) : s_(s), lits_(lits) {}

  std::optional<Fraction> parse() {
    auto v = expr(0);
    skip();
    if (!v || pos_ != s_.size()) return std::nullopt;
    return v;
  }

 private:
  static constexpr int kMaxDepth = 200;

  void skip() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool eat(char c) {
    skip();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }

  std::optional<Fraction> expr(int depth) {
    if (depth > kMaxDepth) return std::nullopt;
    auto v = term(depth);
    while (v) {
      char op;
      if (eat('+')) op = '+';
      else if (eat('-')) op = '-';
      else break;
      auto r = term(depth);
      if (!r) return std::nullopt;
      i128 n = i128(v->num) * r->den + (op == '+' ? 1 : -1) * i128(r->num) * v->den;
      v = make(n, i128(v->den) * r->den);
    }
    return v;
  }

  std::optional<Fraction> term(int depth) {
    auto v = unary(depth);
    while (v) {
      char op;
      if (eat('*')) op = '*';
      else if (eat('/')) op = '/';
      else break;
      auto r = unary(depth);
      if (!r) return std::nullopt;
      if (op == '*') v = make(i128(v->num) * r->num, i128(v->den) * r->den);
      else v = make(i128(v->num) * r->den, i128(v->den) * r->num);
    }
    return v;
  }

  std::optional<Fraction> unary(int depth) {
    if (depth > kMaxDepth) return std::nullopt;
    if (eat('-')) {
      auto v = unary(depth + 1);
      if (!v) return std::nullopt;
      return Fraction{-v->num, v->den};
    }
    return primary(depth);
  }

  std::optional<Fraction> primary(int depth) {
    if (eat('(')) {
      auto v = expr(depth + 1);
      if (!v || !eat(')')) return std::nullopt;
      return v;
    }
    skip();
    size_t start = pos_;
    i128 n = 0;
    while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') {
      n = n * 10 + (s_[pos_] - '0');
      if (n > INT64_MAX) return std::nullopt;
      ++pos_;
    }
    if (pos_ == start) return std::nullopt;
    if (pos_ < s_.size() && s_[pos_] == '.') return std::nullopt;  // integers only
    if (lits_) lits_->push_back(int64_t(n));
    return Fraction{int64_t(n), 1};
  }

  std::string_view s_;
  std::vector<int64_t>* lits_;
  size_t pos_ = 0;
};

}  // namespace

std::optional<Fraction> eval_expression(std::string_view text, std::vector<int64_t>* literals) {
  std::vector<int64_t> lits;
  auto v = Parser(text, &lits).parse();
  if (literals) *literals = v ? lits : std::vector<int64_t>{};
  return v;
}

bool countdown_check(std::string_view equation, const std::vector<int64_t>& numbers, int64_t target,
                     std::string* why) {
  auto fail = [&](const char* reason) {
    if (why) *why = reason;
    return false;
  };
  for (char c : equation)
    if (!((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '*' || c == '/' || c == '(' || c == ')' ||
          c == ' '))
      return fail("the equation has characters other than digits, + - * / ( ) and spaces");
  std::vector<int64_t> lits;
  auto v = eval_expression(equation, &lits);
  if (!v) return fail("the equation does not evaluate (syntax, division by zero or overflow)");
  std::vector<int64_t> want = numbers;
  std::sort(lits.begin(), lits.end());
  std::sort(want.begin(), want.end());
  if (lits != want) return fail("the equation does not use each given number exactly once");
  if (!v->is_integer() || v->num != target) return fail("the equation does not equal the target");
  if (why) why->clear();
  return true;
}

}  // namespace ds::tasks
