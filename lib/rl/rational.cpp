#include "rl/rational.h"

#include <cmath>

namespace ds::rl {

namespace {

constexpr i128 kI128Max = static_cast<i128>((static_cast<unsigned __int128>(1) << 127) - 1);
constexpr i128 kI128Min = -kI128Max - 1;

i128 abs128(i128 v) { return v < 0 ? -v : v; }  // callers keep v > kI128Min

i128 gcd128(i128 a, i128 b) {
  a = abs128(a);
  b = abs128(b);
  while (b != 0) {
    i128 t = a % b;
    a = b;
    b = t;
  }
  return a;
}

bool mul_ok(i128 a, i128 b, i128* out) { return !__builtin_mul_overflow(a, b, out) && *out != kI128Min; }
bool add_ok(i128 a, i128 b, i128* out) { return !__builtin_add_overflow(a, b, out) && *out != kI128Min; }

}  // namespace

std::optional<Rational> make_rational(i128 num, i128 den) {
  if (den == 0 || num == kI128Min || den == kI128Min) return std::nullopt;
  if (den < 0) {
    num = -num;
    den = -den;
  }
  i128 g = gcd128(num, den);
  if (g > 1) {
    num /= g;
    den /= g;
  }
  return Rational{num, den};
}

std::optional<Rational> add(const Rational& a, const Rational& b) {
  // a/b + c/d with g = gcd(b, d): (a*(d/g) + c*(b/g)) / (b/g*d), reduced.
  i128 g = gcd128(a.den, b.den);
  i128 bd = b.den / g, ad = a.den / g;
  i128 x, y, n, d;
  if (!mul_ok(a.num, bd, &x) || !mul_ok(b.num, ad, &y) || !add_ok(x, y, &n) || !mul_ok(a.den, bd, &d))
    return std::nullopt;
  return make_rational(n, d);
}

std::optional<Rational> neg(const Rational& a) { return Rational{-a.num, a.den}; }

std::optional<Rational> sub(const Rational& a, const Rational& b) { return add(a, Rational{-b.num, b.den}); }

std::optional<Rational> mul(const Rational& a, const Rational& b) {
  // Cross-reduce first so that intermediate products stay small.
  i128 g1 = gcd128(a.num, b.den), g2 = gcd128(b.num, a.den);
  if (g1 == 0) g1 = 1;
  if (g2 == 0) g2 = 1;
  i128 n, d;
  if (!mul_ok(a.num / g1, b.num / g2, &n) || !mul_ok(a.den / g2, b.den / g1, &d)) return std::nullopt;
  return make_rational(n, d);
}

std::optional<Rational> div(const Rational& a, const Rational& b) {
  if (b.num == 0) return std::nullopt;
  return mul(a, Rational{b.num < 0 ? -b.den : b.den, abs128(b.num)});
}

std::optional<Rational> pow(const Rational& a, const Rational& e) {
  if (!e.is_integer() || e.num > kMaxExponent || e.num < -kMaxExponent) return std::nullopt;
  int64_t n = int64_t(e.num);
  Rational base = a;
  if (n < 0) {
    if (a.num == 0) return std::nullopt;
    auto inv = div(Rational::of(1), a);
    if (!inv) return std::nullopt;
    base = *inv;
    n = -n;
  }
  Rational result = Rational::of(1);
  while (n > 0) {
    if (n & 1) {
      auto r = mul(result, base);
      if (!r) return std::nullopt;
      result = *r;
    }
    n >>= 1;
    if (n > 0) {
      auto sq = mul(base, base);
      if (!sq) return std::nullopt;
      base = *sq;
    }
  }
  return result;
}

int compare(const Rational& a, const Rational& b) {
  if (auto d = sub(a, b)) return d->num > 0 ? 1 : (d->num < 0 ? -1 : 0);
  double x = a.to_double(), y = b.to_double();
  return x > y ? 1 : (x < y ? -1 : 0);
}

bool within(const Rational& a, const Rational& b, int64_t eps_num, int64_t eps_den) {
  if (auto d = sub(a, b)) {
    // |n|/den < eps_num/eps_den  <=>  |n| * eps_den < eps_num * den
    i128 lhs, rhs;
    if (mul_ok(abs128(d->num), eps_den, &lhs) && mul_ok(eps_num, d->den, &rhs)) return lhs < rhs;
    return std::fabs(d->to_double()) < double(eps_num) / double(eps_den);
  }
  return std::fabs(a.to_double() - b.to_double()) < double(eps_num) / double(eps_den);
}

std::optional<Rational> parse_decimal(std::string_view s) {
  size_t dot = s.find('.');
  std::string_view ip = s.substr(0, dot);
  std::string_view fp = dot == std::string_view::npos ? std::string_view() : s.substr(dot + 1);
  if (ip.empty() && fp.empty()) return std::nullopt;
  for (char c : ip)
    if (c < '0' || c > '9') return std::nullopt;
  for (char c : fp)
    if (c < '0' || c > '9') return std::nullopt;
  while (!fp.empty() && fp.back() == '0') fp.remove_suffix(1);  // "3.50" == "3.5", "1.000...0" fits
  while (ip.size() > 1 && ip.front() == '0') ip.remove_prefix(1);
  i128 num = 0, den = 1;
  for (char c : ip)
    if (!mul_ok(num, 10, &num) || !add_ok(num, c - '0', &num)) return std::nullopt;
  for (char c : fp)
    if (!mul_ok(num, 10, &num) || !add_ok(num, c - '0', &num) || !mul_ok(den, 10, &den)) return std::nullopt;
  return make_rational(num, den);
}

std::string i128_to_string(i128 v) {
  if (v == 0) return "0";
  bool negative = v < 0;
  unsigned __int128 u = negative ? static_cast<unsigned __int128>(-(v + 1)) + 1 : static_cast<unsigned __int128>(v);
  char buf[48];
  int pos = 47;
  buf[pos] = '\0';
  while (u > 0) {
    buf[--pos] = char('0' + int(u % 10));
    u /= 10;
  }
  if (negative) buf[--pos] = '-';
  return std::string(buf + pos);
}

std::string to_string(const Rational& r) {
  if (r.den == 1) return i128_to_string(r.num);
  return i128_to_string(r.num) + "/" + i128_to_string(r.den);
}

}  // namespace ds::rl
