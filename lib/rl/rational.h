#pragma once
// Exact rational numbers on 128-bit integers with overflow checks. Every operation reports failure
// (overflow, division by zero, a non-integer or too large exponent) instead of wrapping, so the answer
// checker and the countdown verifier never compare garbage: a value that does not fit is "not a number"
// for them, and they fall back to a stricter comparison or reject the answer.
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace ds::rl {

using i128 = __int128;

// Exponents of `^` are limited to this magnitude (2^200 overflows anyway; this bounds the work).
constexpr int64_t kMaxExponent = 512;

struct Rational {
  i128 num = 0;
  i128 den = 1;  // always > 0, gcd(num, den) == 1

  static Rational of(int64_t n) { return Rational{n, 1}; }
  bool is_integer() const { return den == 1; }
  bool is_zero() const { return num == 0; }
  double to_double() const { return double(num) / double(den); }
  friend bool operator==(const Rational& a, const Rational& b) { return a.num == b.num && a.den == b.den; }
};

// Reduced num/den; nullopt when den == 0 or the reduction overflows.
std::optional<Rational> make_rational(i128 num, i128 den);

std::optional<Rational> add(const Rational& a, const Rational& b);
std::optional<Rational> sub(const Rational& a, const Rational& b);
std::optional<Rational> mul(const Rational& a, const Rational& b);
std::optional<Rational> div(const Rational& a, const Rational& b);  // nullopt when b == 0
std::optional<Rational> neg(const Rational& a);
// a^e for a rational integer exponent |e| <= kMaxExponent; 0^negative and non-integer e fail.
std::optional<Rational> pow(const Rational& a, const Rational& e);

// -1, 0, 1. Exact (cross-multiplication in 256-bit arithmetic is avoided by comparing via subtraction,
// which fails only on overflow; then the doubles decide, which is exact enough for ordering values that
// far apart).
int compare(const Rational& a, const Rational& b);

// |a - b| < eps_num / eps_den, decided exactly where the arithmetic fits (and in doubles otherwise).
bool within(const Rational& a, const Rational& b, int64_t eps_num, int64_t eps_den);

// Parses an unsigned decimal literal "123", "3.50", ".5", "7." (digits only, no sign, no separators).
// nullopt when it is not one or does not fit.
std::optional<Rational> parse_decimal(std::string_view s);

// "7/2", "-3", "0" (canonical: the key used to group equal answers).
std::string to_string(const Rational& r);
std::string i128_to_string(i128 v);

}  // namespace ds::rl
