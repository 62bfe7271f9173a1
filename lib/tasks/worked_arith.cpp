// Worked arithmetic: column addition and subtraction, multiplication by partial products, long division,
// and the order of operations for longer expressions; each method can write (and catch) a slip.
#include <algorithm>

#include "tasks/random.h"
#include "tasks/worked.h"

namespace ds::tasks {

namespace {

using Lines = std::vector<std::string>;

int ndigits(int64_t x) {
  int n = 1;
  while (x >= 10) x /= 10, ++n;
  return n;
}
int digit(int64_t x, int i) {
  while (i-- > 0) x /= 10;
  return int(x % 10);
}
int64_t pow10(int k) {
  int64_t p = 1;
  while (k-- > 0) p *= 10;
  return p;
}
std::string O(char op) { return std::string(1, op); }

// v with one digit changed by one (never negative, never v itself).
int64_t slip_value(Rng& rng, int64_t v) {
  if (v < 0) return v + 1;
  int k = int(rng.next_below(uint64_t(ndigits(v))));
  int d = digit(v, k);
  int delta = d == 9 ? -1 : d == 0 ? 1 : (draw_chance(rng, 0.5) ? 1 : -1);
  return v + delta * pow10(k);
}
int slip_digit(Rng& rng, int d) { return d == 0 ? 1 : d == 9 ? 8 : (draw_chance(rng, 0.5) ? d + 1 : d - 1); }

struct Ctx {
  Voice& v;
  Rng& rng;
  Lines& out;
  bool detail;
};

int64_t truncated(char op, int64_t a, int64_t b) {
  int64_t r = 0;
  if (apply_op(op, a, b, &r)) return r;
  return (op == '/' && b != 0) ? a / b : 0;
}

// "a op b = r." without the digit-level work (and the slip, if any, on r).
int64_t short_op(Ctx& c, char op, int64_t a, int64_t b, Slip slip) {
  int64_t r = truncated(op, a, b);
  if (slip == Slip::none) {
    c.out.push_back(S(a) + " " + O(op) + " " + S(b) + " = " + S(r) + ".");
    return r;
  }
  int64_t w = slip_value(c.rng, r);
  c.out.push_back(S(a) + " " + O(op) + " " + S(b) + " = " + S(w) + ".");
  if (slip == Slip::wrong) return w;
  c.out.push_back(c.v.say({{"Wait, that is wrong: {} {} {} = {}, not {}.", "Hmm, let me recheck: {} {} {} is {}, not {}."},
                           {"等一下，算错了：{} {} {} = {}，不是 {}。"}},
                          {S(a), O(op), S(b), S(r), S(w)}));
  return r;
}

std::string add_terms(int64_t a, int64_t b, int i, int carry) {
  std::string t;
  if (i < ndigits(a)) t = S(digit(a, i));
  if (i < ndigits(b)) t += (t.empty() ? "" : " + ") + S(digit(b, i));
  if (carry) t += (t.empty() ? "" : " + ") + S(carry);
  return t;
}

std::string add_column_line(Ctx& c, int i, const std::string& terms, int s) {
  if (s >= 10)
    return c.v.say({{"{col}: {} = {}, write {}, carry {}.", "{col}: {} = {}; write {} and carry {}."},
                    {"{col}：{} = {}，写 {}，进位 {}。"}},
                   {terms, S(s), S(s % 10), S(s / 10)}, i);
  if (terms.find('+') == std::string::npos)  // one digit and no carry: nothing to add
    return c.v.say({{"{col}: just {}, write it down.", "{col}: only {} there, so write {}."}, {"{col}：只有 {}，直接写下。"}},
                   {terms, S(s)}, i);
  return c.v.say({{"{col}: {} = {}, write {}.", "{col}: {} = {}."}, {"{col}：{} = {}，写 {}。"}},
                 {terms, S(s), S(s)}, i);
}

int64_t add_columns(Ctx& c, int64_t a, int64_t b, Slip slip) {
  if (a < 0 || b < 0 || !c.detail) return short_op(c, '+', a, b, slip);
  int n = std::max(ndigits(a), ndigits(b));
  std::vector<int> carry_cols;
  for (int i = 0, carry = 0; i < n; ++i) {
    if (carry) carry_cols.push_back(i);
    carry = (digit(a, i) + digit(b, i) + carry) / 10;  // digit() is 0 past the number's length
  }
  int slip_col = -1;
  bool forgot_carry = false;
  if (slip != Slip::none) {
    forgot_carry = !carry_cols.empty();
    slip_col = forgot_carry ? draw_pick(c.rng, carry_cols) : int(c.rng.next_below(uint64_t(n)));
  }
  c.out.push_back(c.v.say({{"Add {} and {} column by column, starting from the ones.",
                            "Line up {} and {} and add from right to left."},
                           {"把 {} 和 {} 从个位开始逐位相加。"}},
                          {S(a), S(b)}));
  int carry = 0;
  int64_t result = 0, place = 1;
  for (int i = 0; i < n; ++i, place *= 10) {
    int s = digit(a, i) + digit(b, i) + carry;
    std::string terms = add_terms(a, b, i, carry);
    if (i == slip_col) {
      int ws = forgot_carry ? s - carry : (s > 0 && draw_chance(c.rng, 0.5) ? s - 1 : s + 1);
      c.out.push_back(add_column_line(c, i, forgot_carry ? add_terms(a, b, i, 0) : terms, ws));
      if (slip == Slip::wrong) {
        s = ws;
      } else if (forgot_carry) {
        c.out.push_back(c.v.say({{"Wait, I forgot the carried 1. It is {} = {}.", "Oops, the carry is missing: {} = {}."},
                                 {"等一下，我忘了进位 1，应该是 {} = {}。"}},
                                {terms, S(s)}));
      } else {
        c.out.push_back(c.v.say({{"Wait, {} is {}, not {}.", "Hmm, that is off by one: {} = {}, not {}."},
                                 {"等一下，{} 等于 {}，不是 {}。"}},
                                {terms, S(s), S(ws)}));
      }
    } else {
      c.out.push_back(add_column_line(c, i, terms, s));
    }
    result += (s % 10) * place;
    carry = s / 10;
  }
  if (carry) {
    c.out.push_back(c.v.say({{"The last carry {} becomes the leading digit."}, {"最后的进位 {} 写在最前面。"}}, {S(carry)}));
    result += carry * place;
  }
  c.out.push_back(c.v.say({{"So {} + {} = {}.", "That gives {} + {} = {}."}, {"所以 {} + {} = {}。"}},
                          {S(a), S(b), S(result)}));
  return result;
}

std::string sub_column_line(Ctx& c, int i, int t, int borrow_in, int y, bool has_y, int d) {
  int tt = t - borrow_in;
  if (!borrow_in) {
    if (!has_y) return c.v.say({{"{col}: nothing to subtract, write {}."}, {"{col}：没有要减的，写 {}。"}}, {S(d)}, i);
    if (tt >= y) return c.v.say({{"{col}: {} - {} = {}."}, {"{col}：{} - {} = {}。"}}, {S(t), S(y), S(d)}, i);
    return c.v.say({{"{col}: {} is less than {}, so borrow 1 from the next column: {} - {} = {}.",
                     "{col}: {} < {}, borrow 1: {} - {} = {}."},
                    {"{col}：{} 比 {} 小，向前一位借 1：{} - {} = {}。"}},
                   {S(t), S(y), S(t + 10), S(y), S(d)}, i);
  }
  if (tt >= y)
    return c.v.say({{"{col}: {} - 1 = {} after the borrow, and {} - {} = {}."},
                    {"{col}：借位后 {} - 1 = {}，{} - {} = {}。"}},
                   {S(t), S(tt), S(tt), S(y), S(d)}, i);
  return c.v.say({{"{col}: {} - 1 = {} after the borrow, which is less than {}, so borrow again: {} - {} = {}."},
                  {"{col}：借位后 {} - 1 = {}，比 {} 小，再借 1：{} - {} = {}。"}},
                 {S(t), S(tt), S(y), S(tt + 10), S(y), S(d)}, i);
}

int64_t sub_columns(Ctx& c, int64_t a, int64_t b, Slip slip) {
  if (a < b || b < 0 || !c.detail) return short_op(c, '-', a, b, slip);
  int n = ndigits(a), nb = ndigits(b);
  std::vector<int> borrow_cols;
  for (int i = 0, borrow = 0; i < n; ++i) {
    if (borrow) borrow_cols.push_back(i);
    borrow = digit(a, i) - borrow < (i < nb ? digit(b, i) : 0) ? 1 : 0;
  }
  int slip_col = -1;
  bool forgot_borrow = false;
  if (slip != Slip::none) {
    forgot_borrow = !borrow_cols.empty();
    slip_col = forgot_borrow ? draw_pick(c.rng, borrow_cols) : int(c.rng.next_below(uint64_t(n)));
  }
  c.out.push_back(c.v.say({{"Compute {} - {} column by column, starting from the ones.",
                            "Line up the digits of {} and {} and subtract right to left, borrowing when needed."},
                           {"从个位开始计算 {} - {}，不够减就借位。"}},
                          {S(a), S(b)}));
  int borrow = 0;
  int64_t result = 0, place = 1;
  for (int i = 0; i < n; ++i, place *= 10) {
    int t = digit(a, i), y = i < nb ? digit(b, i) : 0;
    auto column = [&](int bin, int* d, int* bout) {
      int tt = t - bin;
      *bout = tt < y ? 1 : 0;
      *d = tt + 10 * *bout - y;
    };
    int d = 0, bout = 0;
    column(borrow, &d, &bout);
    if (i == slip_col) {
      int wd = d, wbout = bout;
      if (forgot_borrow) column(0, &wd, &wbout);
      else wd = slip_digit(c.rng, d);
      c.out.push_back(sub_column_line(c, i, t, forgot_borrow ? 0 : borrow, y, i < nb, wd));
      if (slip == Slip::wrong) {
        d = wd;
        bout = wbout;
      } else {
        c.out.push_back(c.v.say({{"Wait, that is not right. Let me redo this column.", "Hmm, I made a slip there; once more:"},
                                 {"等一下，这一位算错了，重新算。"}}));
        c.out.push_back(sub_column_line(c, i, t, borrow, y, i < nb, d));
      }
    } else {
      c.out.push_back(sub_column_line(c, i, t, borrow, y, i < nb, d));
    }
    result += d * place;
    borrow = bout;
  }
  c.out.push_back(c.v.say({{"So {} - {} = {}.", "That gives {} - {} = {}."}, {"所以 {} - {} = {}。"}},
                          {S(a), S(b), S(result)}));
  return result;
}

// M * d for one digit d, digit by digit from the right.
void times_digit_lines(Ctx& c, int64_t m, int d) {
  c.out.push_back(c.v.say({{"Multiply {} by {}, digit by digit from the right:", "{} * {}, one digit at a time:"},
                           {"{} 乘以 {}，从右往左逐位计算："}},
                          {S(m), S(d)}));
  int n = ndigits(m), carry = 0;
  for (int i = 0; i < n; ++i) {
    int x = digit(m, i), p = x * d + carry;
    std::string lhs = S(x) + " * " + S(d) + (carry ? " + " + S(carry) : "");
    if (i == n - 1)
      c.out.push_back(c.v.say({{"{} = {}, write {}."}, {"{} = {}，写 {}。"}}, {lhs, S(p), S(p)}));
    else if (p >= 10)
      c.out.push_back(c.v.say({{"{} = {}, write {}, carry {}."}, {"{} = {}，写 {}，进位 {}。"}},
                              {lhs, S(p), S(p % 10), S(p / 10)}));
    else
      c.out.push_back(c.v.say({{"{} = {}, write {}."}, {"{} = {}，写 {}。"}}, {lhs, S(p), S(p)}));
    carry = p / 10;
  }
}

int64_t mul_partial(Ctx& c, int64_t a, int64_t b, Slip slip) {
  if (a <= 0 || b <= 0 || !c.detail) return short_op(c, '*', a, b, slip);
  int64_t big = a, small = b;
  if (ndigits(a) < ndigits(b)) std::swap(big, small);
  std::vector<std::pair<int, int>> parts;  // (digit, place) of the small factor's non-zero digits
  for (int k = 0; k < ndigits(small); ++k)
    if (digit(small, k)) parts.push_back({digit(small, k), k});
  int slip_part = -1;
  if (slip != Slip::none) {  // a part whose digit comes up for the first time (its product is worked out)
    std::vector<int> first;
    for (int j = 0; j < int(parts.size()); ++j) {
      bool seen = false;
      for (int i = 0; i < j; ++i) seen |= parts[size_t(i)].first == parts[size_t(j)].first;
      if (!seen) first.push_back(j);
    }
    slip_part = draw_pick(c.rng, first);
  }
  if (parts.size() > 1) {
    std::string split;
    for (size_t i = parts.size(); i-- > 0;)
      split += S(parts[i].first * pow10(parts[i].second)) + (i ? " + " : "");
    c.out.push_back(c.v.say({{"Break {} into {} and multiply {} by each part.", "Write {} as {}, then multiply {} by each piece."},
                             {"把 {} 拆成 {}，再分别乘以 {}。"}},
                            {S(small), split, S(big)}));
  }
  std::vector<int64_t> partials;
  std::vector<int64_t> by_digit(10, -1);  // big * d as written already
  for (int j = 0; j < int(parts.size()); ++j) {
    auto [d, k] = parts[size_t(j)];
    int64_t pd = big * d;
    if (j != slip_part && by_digit[size_t(d)] >= 0) {
      pd = by_digit[size_t(d)];
      c.out.push_back(c.v.say({{"{} * {} = {} again, as above.", "We already have {} * {} = {}."}, {"前面已经算过 {} * {} = {}。"}},
                              {S(big), S(d), S(pd)}));
    } else if (j == slip_part) {
      int64_t w = slip_value(c.rng, pd);
      c.out.push_back(S(big) + " * " + S(d) + " = " + S(w) + ".");
      if (slip == Slip::wrong) {
        pd = w;
      } else {
        c.out.push_back(c.v.say({{"Wait, let me redo {} * {} carefully.", "Hmm, that does not look right; {} * {} again:"},
                                 {"等一下，{} * {} 再仔细算一遍。"}},
                                {S(big), S(d)}));
        times_digit_lines(c, big, d);
        c.out.push_back(c.v.say({{"So {} * {} = {}, not {}."}, {"所以 {} * {} = {}，不是 {}。"}},
                                {S(big), S(d), S(pd), S(w)}));
      }
    } else {
      times_digit_lines(c, big, d);
      c.out.push_back(c.v.say({{"So {} * {} = {}."}, {"所以 {} * {} = {}。"}}, {S(big), S(d), S(pd)}));
    }
    by_digit[size_t(d)] = pd;
    if (k > 0)
      c.out.push_back(c.v.say({{"Then {} * {} = {} (append {} zero(s)).", "{} * {} = {}, appending {} zero(s)."},
                               {"{} * {} = {}（后面补 {} 个 0）。"}},
                              {S(big), S(d * pow10(k)), S(pd * pow10(k)), S(k)}));
    partials.push_back(pd * pow10(k));
  }
  int64_t total = partials[0];
  if (partials.size() > 1) {
    c.out.push_back(c.v.say({{"Add the partial products:", "Now add the pieces:"}, {"把部分积相加："}}));
    for (size_t j = 1; j < partials.size(); ++j) {
      c.out.push_back(S(total) + " + " + S(partials[j]) + " = " + S(total + partials[j]) + ".");
      total += partials[j];
    }
  }
  c.out.push_back(c.v.say({{"So {} * {} = {}.", "Therefore {} * {} = {}."}, {"所以 {} * {} = {}。"}},
                          {S(a), S(b), S(total)}));
  return total;
}

int64_t div_long(Ctx& c, int64_t a, int64_t d, Slip slip) {
  if (a < 0 || d <= 0 || a % d != 0 || !c.detail) return short_op(c, '/', a, d, slip);
  std::string digits = S(a);
  size_t pos = 0;
  int64_t partial = 0;
  while (pos < digits.size() && (partial < d || pos == 0)) partial = partial * 10 + (digits[pos++] - '0');
  int steps = 1 + int(digits.size() - pos);
  int slip_step = slip == Slip::none ? -1 : int(c.rng.next_below(uint64_t(steps)));
  c.out.push_back(c.v.say({{"Long division of {} by {}.", "Divide {} by {} with long division."}, {"用长除法计算 {} / {}。"}},
                          {S(a), S(d)}));
  std::string quotient;
  for (int step = 0; step < steps; ++step) {
    if (step > 0) partial = partial * 10 + (digits[pos++] - '0');
    int q = int(partial / d);
    int64_t r = partial - q * d;
    std::string bring = step > 0 ? c.v.say({{"Bring down {}: "}, {"落下 {}："}}, {std::string(1, digits[pos - 1])}) : "";
    if (step == slip_step) {
      int wq = slip_digit(c.rng, q);
      c.out.push_back(bring + S(partial) + " / " + S(d) + " = " + S(wq) + ", remainder " + S(r) + ".");
      if (slip == Slip::wrong) {
        q = wq;
      } else {
        c.out.push_back(c.v.say({{"Wait, {} * {} = {}, so that digit is wrong: {} / {} = {}, remainder {}."},
                                 {"等一下，{} * {} = {}，这一位不对：{} / {} = {}，余 {}。"}},
                                {S(d), S(wq), S(d * wq), S(partial), S(d), S(q), S(r)}));
      }
    } else {
      c.out.push_back(bring + c.v.say({{"{} / {} = {}, remainder {} (since {} * {} = {})."},
                                       {"{} / {} = {}，余 {}（{} * {} = {}）。"}},
                                      {S(partial), S(d), S(q), S(r), S(d), S(q), S(q * d)}));
    }
    quotient += char('0' + q);
    partial = r;
  }
  int64_t value = std::stoll(quotient);
  c.out.push_back(c.v.say({{"The remainder is 0, so {} / {} = {}."}, {"余数是 0，所以 {} / {} = {}。"}},
                          {S(a), S(d), S(value)}));
  return value;
}

int64_t run_op(Ctx& c, char op, int64_t a, int64_t b, Slip slip) {
  switch (op) {
    case '+': return add_columns(c, a, b, slip);
    case '-': return sub_columns(c, a, b, slip);
    case '*': return mul_partial(c, a, b, slip);
    default: return div_long(c, a, b, slip);
  }
}

struct Evaluated {
  char op;
  int64_t lhs, rhs, result;
};

// Post-order evaluation that writes each operation's work; the claimed values (slips included) flow upward.
int64_t run_tree(Ctx& c, const Expr& e, int node, int slip_step, Slip slip, bool numbered, std::vector<Evaluated>& done) {
  const Expr::Node& n = e.at(node);
  if (n.op == 0) return n.value;
  int64_t a = run_tree(c, e, n.left, slip_step, slip, numbered, done);
  int64_t b = run_tree(c, e, n.right, slip_step, slip, numbered, done);
  int k = int(done.size());
  if (numbered)
    c.out.push_back(c.v.say({{"Step {}: {} {} {}."}, {"第 {} 步：{} {} {}。"}}, {S(k + 1), S(a), O(n.op), S(b)}));
  int64_t r = run_op(c, n.op, a, b, k == slip_step ? slip : Slip::none);
  done.push_back({n.op, a, b, r});
  return r;
}

std::string how_phrase(const Expr& e, bool multi) {
  if (multi) return "Working inside the parentheses first and then following the order of operations";
  switch (e.at(e.root).op) {
    case '+': return "Adding column by column";
    case '-': return "Subtracting column by column with borrows";
    case '*': return "Multiplying by partial products";
    default: return "By long division";
  }
}

}  // namespace

std::string join_lines(const std::vector<std::string>& lines, const char* sep) {
  std::string out;
  for (size_t i = 0; i < lines.size(); ++i) out += (i ? sep : "") + lines[i];
  return out;
}

Worked work_arithmetic(const Problem& p, Voice& v, const WorkOptions& o) {
  Worked w;
  Ctx c{v, v.rng(), w.lines, o.detail};
  std::string text = format_expr(p.expr);
  int nsteps = 0;
  for (const auto& n : p.expr.nodes) nsteps += n.op != 0;
  bool multi = nsteps > 1;
  int slip_step = o.slip == Slip::none ? -1 : int(c.rng.next_below(uint64_t(nsteps)));
  w.lines.push_back(v.say({{"We need to compute {}.", "Let me work out {}.", "The task is to evaluate {}."},
                           {"我们先计算 {}。", "我们需要计算 {}。"}},
                          {text}));
  if (multi)
    w.lines.push_back(v.say({{"Order of operations: parentheses first, then * and /, then + and -.",
                              "Parentheses come first, then multiplication and division, then addition and subtraction."},
                             {"按照运算顺序：先算括号，再算乘除，最后算加减。"}}));
  std::vector<Evaluated> done;
  int64_t value = run_tree(c, p.expr, p.expr.root, slip_step, o.slip, multi, done);
  if (multi)
    w.lines.push_back(v.say({{"Putting it together, {} = {}."}, {"合起来，{} = {}。"}}, {text, S(value)}));
  if (o.verify && o.slip != Slip::wrong) {
    w.lines.push_back(v.say({{"Let me verify with the inverse operations.", "Let me double-check each step."},
                             {"让我检查一下。"}}));
    for (const Evaluated& s : done) {
      char inv = s.op == '+' ? '-' : s.op == '-' ? '+' : s.op == '*' ? '/' : '*';
      w.lines.push_back(v.say({{"Check: {} {} {} = {}, which matches.", "{} {} {} = {}, correct."},
                               {"验证：{} {} {} = {}，没错。"}},
                              {S(s.result), O(inv), S(s.rhs), S(s.lhs)}));
    }
  }
  w.answer = S(value);
  w.lines.push_back(v.say({{"So the answer is {}.", "The answer is {}."}, {"所以答案是 {}。"}}, {w.answer}));
  w.correct = value == p.expr.value();
  w.slipped = o.slip != Slip::none;
  w.summary = how_phrase(p.expr, multi) + ", " + text + " = " + w.answer + ".";
  return w;
}

}  // namespace ds::tasks
