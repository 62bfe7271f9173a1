#include "rl/expr.h"

#include <cmath>

namespace ds::rl {

const char* expr_error_name(ExprError e) {
  switch (e) {
    case ExprError::none: return "none";
    case ExprError::empty: return "empty";
    case ExprError::syntax: return "syntax";
    case ExprError::bad_char: return "bad_char";
    case ExprError::unary: return "unary";
    case ExprError::decimal: return "decimal";
    case ExprError::overflow: return "overflow";
    case ExprError::div_zero: return "div_zero";
    case ExprError::not_rational: return "not_rational";
    case ExprError::too_deep: return "too_deep";
  }
  return "unknown";
}

namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// Integer square root of v >= 0 when v is a perfect square.
std::optional<i128> exact_sqrt(i128 v) {
  if (v < 0) return std::nullopt;
  i128 r = static_cast<i128>(std::sqrt(static_cast<long double>(v)));
  for (i128 c = (r > 2 ? r - 2 : 0); c <= r + 2; ++c) {
    i128 sq;
    if (__builtin_mul_overflow(c, c, &sq)) break;
    if (sq == v) return c;
    if (sq > v) break;
  }
  return std::nullopt;
}

class Parser {
 public:
  Parser(std::string_view s, const ExprOptions& o, std::vector<int64_t>* lits) : s_(s), o_(o), lits_(lits) {}

  ExprResult run() {
    ExprResult r;
    skip_ws();
    if (i_ >= s_.size()) {
      r.error = ExprError::empty;
      return r;
    }
    Rational v;
    if (expr(v)) {
      skip_ws();
      if (i_ == s_.size()) r.value = v;
      else fail(ExprError::syntax);
    }
    r.error = r.value ? ExprError::none : err_;
    return r;
  }

 private:
  bool math() const { return o_.dialect == ExprDialect::math; }
  bool fail(ExprError e) {
    if (err_ == ExprError::none) err_ = e;
    return false;
  }
  bool ok(std::optional<Rational> v, Rational& out, ExprError e) {
    if (!v) return fail(e);
    out = *v;
    return true;
  }
  bool at(std::string_view tok) const { return s_.substr(i_, tok.size()) == tok; }
  // A LaTeX command: the backslash word must end at a non-letter.
  bool at_cmd(std::string_view cmd) const {
    return at(cmd) && (i_ + cmd.size() >= s_.size() || !is_alpha(s_[i_ + cmd.size()]));
  }
  bool eat_cmd(std::string_view cmd) {
    if (!at_cmd(cmd)) return false;
    i_ += cmd.size();
    return true;
  }

  void skip_ws() {
    for (;;) {
      if (i_ >= s_.size()) return;
      char c = s_[i_];
      if (c == ' ' || c == '\t' || c == '\n' || c == '\r') { ++i_; continue; }
      if (!math()) return;
      if (c == '~') { ++i_; continue; }
      if (c == '\\' && i_ + 1 < s_.size()) {
        char d = s_[i_ + 1];
        if (d == ',' || d == '!' || d == ';' || d == ':' || d == ' ') { i_ += 2; continue; }
        if (eat_cmd("\\left") || eat_cmd("\\right") || eat_cmd("\\displaystyle")) continue;
      }
      return;
    }
  }

  // The operator at i_: '+', '-', '*', '/' (0 if none); consumes it when eat.
  char op(bool eat) {
    skip_ws();
    if (i_ >= s_.size()) return 0;
    char c = s_[i_];
    size_t len = 0;
    char r = 0;
    if (c == '+' || c == '-' || c == '*' || c == '/') { r = c; len = 1; }
    else if (math()) {
      if (at("\xE2\x88\x92")) { r = '-'; len = 3; }                                   // U+2212 minus
      else if (at("\xC3\x97") || at("\xC2\xB7")) { r = '*'; len = 2; }                // × ·
      else if (at("\xE2\x8B\x85") || at("\xE2\x88\x97")) { r = '*'; len = 3; }        // ⋅ ∗
      else if (at("\xC3\xB7")) { r = '/'; len = 2; }                                  // ÷
      else if (at_cmd("\\cdot")) { r = '*'; len = 5; }
      else if (at_cmd("\\times")) { r = '*'; len = 6; }
      else if (at_cmd("\\div")) { r = '/'; len = 4; }
    }
    if (eat) i_ += len;
    return r;
  }

  bool expr(Rational& out) {
    if (++depth_ > o_.max_depth) return fail(ExprError::too_deep);
    if (!term(out)) return false;
    for (;;) {
      char c = op(false);
      if (c != '+' && c != '-') break;
      op(true);
      Rational rhs;
      if (!term(rhs)) return false;
      if (!ok(c == '+' ? add(out, rhs) : sub(out, rhs), out, ExprError::overflow)) return false;
    }
    --depth_;
    return true;
  }

  bool term(Rational& out) {
    if (!unary(out)) return false;
    for (;;) {
      char c = op(false);
      if (c != '*' && c != '/') break;
      op(true);
      Rational rhs;
      if (!unary(rhs)) return false;
      if (c == '*') {
        if (!ok(mul(out, rhs), out, ExprError::overflow)) return false;
      } else {
        if (rhs.is_zero()) return fail(ExprError::div_zero);
        if (!ok(div(out, rhs), out, ExprError::overflow)) return false;
      }
    }
    return true;
  }

  bool unary(Rational& out) {
    if (++depth_ > o_.max_depth) return fail(ExprError::too_deep);
    char c = op(false);
    if (c == '+' || c == '-') {
      if (!math()) return fail(ExprError::unary);
      op(true);
      if (!unary(out)) return false;
      if (c == '-') out = *neg(out);
    } else if (c != 0) {
      return fail(ExprError::syntax);
    } else if (!power(out)) {
      return false;
    }
    --depth_;
    return true;
  }

  bool power(Rational& out) {
    if (!primary(out)) return false;
    skip_ws();
    if (i_ < s_.size() && s_[i_] == '^') {
      if (!math()) return fail(ExprError::bad_char);
      ++i_;
      Rational e;
      if (!unary(e)) return false;  // right associative; 2^-1 allowed
      if (out.is_zero() && e.num < 0) return fail(ExprError::div_zero);
      if (!ok(pow(out, e), out, ExprError::not_rational)) return false;
    }
    return true;
  }

  bool number(Rational& out, bool* is_int) {
    size_t start = i_;
    std::string digits;  // without separators
    while (i_ < s_.size() && is_digit(s_[i_])) digits += s_[i_++];
    if (math() && o_.thousands && !digits.empty() && digits.size() <= 3) {
      // ,ddd groups: exactly three digits each, not followed by a fourth
      while (i_ + 3 < s_.size() + 0 && s_[i_] == ',' && is_digit(s_[i_ + 1]) && is_digit(s_[i_ + 2]) &&
             is_digit(s_[i_ + 3]) && (i_ + 4 >= s_.size() || !is_digit(s_[i_ + 4]))) {
        digits.append(s_.substr(i_ + 1, 3));
        i_ += 4;
      }
    }
    *is_int = true;
    if (i_ < s_.size() && s_[i_] == '.') {
      if (!math()) return fail(ExprError::decimal);
      *is_int = false;
      digits += '.';
      ++i_;
      while (i_ < s_.size() && is_digit(s_[i_])) digits += s_[i_++];
    }
    if (digits.empty() || digits == ".") {
      i_ = start;
      return fail(ExprError::syntax);
    }
    if (digits.size() > 80) return fail(ExprError::overflow);
    auto v = parse_decimal(digits);
    if (!v) return fail(ExprError::overflow);
    out = *v;
    if (lits_) {
      if (!v->is_integer() || v->num > i128(INT64_MAX)) return fail(ExprError::overflow);
      lits_->push_back(int64_t(v->num));
    }
    return true;
  }

  bool group(Rational& out, char close) {
    ++i_;
    if (!expr(out)) return false;
    skip_ws();
    if (i_ >= s_.size() || s_[i_] != close) return fail(ExprError::syntax);
    ++i_;
    return true;
  }

  // A \frac argument: {expr} or a single digit (\frac12).
  bool frac_arg(Rational& out) {
    skip_ws();
    if (i_ < s_.size() && s_[i_] == '{') return group(out, '}');
    if (i_ < s_.size() && is_digit(s_[i_])) {
      out = Rational::of(s_[i_++] - '0');
      return true;
    }
    return fail(ExprError::syntax);
  }

  bool frac(Rational& out) {
    Rational a, b;
    if (!frac_arg(a) || !frac_arg(b)) return false;
    if (b.is_zero()) return fail(ExprError::div_zero);
    return ok(div(a, b), out, ExprError::overflow);
  }

  bool at_frac() const { return at_cmd("\\frac") || at_cmd("\\dfrac") || at_cmd("\\tfrac"); }
  void eat_frac() { i_ += at_cmd("\\frac") ? 5 : 6; }

  bool primary(Rational& out) {
    skip_ws();
    if (i_ >= s_.size()) return fail(ExprError::syntax);
    char c = s_[i_];
    if (is_digit(c) || (c == '.' && math())) {
      bool is_int = false;
      if (!number(out, &is_int)) return false;
      if (math() && is_int) {  // mixed number 2\frac{1}{2}: a proper fraction right after an integer
        size_t save = i_;
        skip_ws();
        if (at_frac()) {
          eat_frac();
          Rational f;
          if (!frac(f)) return false;
          if (f.num < 0 || f.num >= f.den) return fail(ExprError::syntax);
          return ok(add(out, f), out, ExprError::overflow);
        }
        i_ = save;
      }
      return true;
    }
    if (c == '(') return group(out, ')');
    if (!math()) return fail(c == ')' ? ExprError::syntax : ExprError::bad_char);
    if (c == '{') return group(out, '}');
    if (at_frac()) {
      eat_frac();
      return frac(out);
    }
    if (eat_cmd("\\sqrt")) {
      Rational x;
      if (!frac_arg(x)) return false;
      if (x.num < 0) return fail(ExprError::not_rational);
      auto n = exact_sqrt(x.num), d = exact_sqrt(x.den);
      if (!n || !d) return fail(ExprError::not_rational);
      out = Rational{*n, *d};
      return true;
    }
    return fail(c == ')' || c == '}' || c == '^' ? ExprError::syntax : ExprError::bad_char);
  }

  std::string_view s_;
  const ExprOptions& o_;
  std::vector<int64_t>* lits_;
  size_t i_ = 0;
  int depth_ = 0;
  ExprError err_ = ExprError::none;
};

}  // namespace

ExprResult eval_expr(std::string_view text, const ExprOptions& opts) {
  std::vector<int64_t> lits;
  Parser p(text, opts, opts.dialect == ExprDialect::countdown ? &lits : nullptr);
  ExprResult r = p.run();
  r.literals = std::move(lits);
  return r;
}

}  // namespace ds::rl
