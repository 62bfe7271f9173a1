#include "ckpt/convert.h"

#include <cmath>
#include <cstring>

namespace ds {

float f16_bits_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    float v = std::ldexp(float(mant), -24);  // zero or subnormal
    return sign ? -v : v;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// After F. Giesen's float_to_half_fast3_rtne: exact round-to-nearest-even, overflow to Inf, NaN kept quiet.
uint16_t f32_to_f16_bits(float fin) {
  uint32_t f;
  std::memcpy(&f, &fin, 4);
  const uint32_t sign = f & 0x80000000u;
  f ^= sign;
  uint16_t o;
  if (f >= (143u << 23)) {  // |x| >= 2^16: Inf, or NaN
    o = f > 0x7f800000u ? 0x7e00 : 0x7c00;
  } else if (f < (113u << 23)) {  // |x| < 2^-14: subnormal or zero; let the FPU round at the right place
    const uint32_t magic_bits = 126u << 23;  // 0.5
    float magic, x, sum;
    std::memcpy(&magic, &magic_bits, 4);
    std::memcpy(&x, &f, 4);
    sum = x + magic;
    uint32_t s;
    std::memcpy(&s, &sum, 4);
    o = uint16_t(s - magic_bits);
  } else {
    uint32_t mant_odd = (f >> 13) & 1u;
    f -= 112u << 23;  // rebias the exponent (127 -> 15)
    f += 0xfffu + mant_odd;
    o = uint16_t(f >> 13);
  }
  return uint16_t(o | (sign >> 16));
}

namespace {

constexpr bool dtype_is_float_c(DType t) {
  return t == DType::f32 || t == DType::f64 || t == DType::bf16 || t == DType::f16;
}

// Loads and stores through memcpy: checkpoint data may be unaligned.
template <class T> T ld(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}
template <class T> void st(unsigned char* p, T v) { std::memcpy(p, &v, sizeof(T)); }

double load_float(DType t, const unsigned char* p, size_t i) {
  switch (t) {
    case DType::f32: return ld<float>(p + 4 * i);
    case DType::f64: return ld<double>(p + 8 * i);
    case DType::bf16: return bf16_to_f32(bf16{ld<uint16_t>(p + 2 * i)});
    case DType::f16: return f16_bits_to_f32(ld<uint16_t>(p + 2 * i));
    default: return 0;
  }
}

int64_t load_int(DType t, const unsigned char* p, size_t i) {
  switch (t) {
    case DType::i32: return ld<int32_t>(p + 4 * i);
    case DType::i64: return ld<int64_t>(p + 8 * i);
    case DType::u8: return p[i];
    default: return 0;
  }
}

// One typed loop per (src, dst) pair so the switch stays out of the inner loop.
template <DType S, DType D> void convert_loop(unsigned char* dst, const unsigned char* src, size_t n) {
  const bool big = n > (size_t(1) << 16);
#pragma omp parallel for schedule(static) if (big)
  for (size_t i = 0; i < n; ++i) {
    if constexpr (dtype_is_float_c(S)) {
      double v = load_float(S, src, i);
      if constexpr (D == DType::f32) st<float>(dst + 4 * i, float(v));
      else if constexpr (D == DType::f64) st<double>(dst + 8 * i, v);
      else if constexpr (D == DType::bf16) st<uint16_t>(dst + 2 * i, f32_to_bf16(float(v)).bits);
      else if constexpr (D == DType::f16) st<uint16_t>(dst + 2 * i, f32_to_f16_bits(float(v)));
    } else {
      int64_t v = load_int(S, src, i);
      if constexpr (D == DType::i32) st<int32_t>(dst + 4 * i, int32_t(v));
      else if constexpr (D == DType::i64) st<int64_t>(dst + 8 * i, v);
      else if constexpr (D == DType::u8) dst[i] = uint8_t(v);
    }
  }
}

template <DType S> void dispatch_dst(DType d, unsigned char* dst, const unsigned char* src, size_t n) {
  if constexpr (dtype_is_float_c(S)) {
    switch (d) {
      case DType::f32: return convert_loop<S, DType::f32>(dst, src, n);
      case DType::f64: return convert_loop<S, DType::f64>(dst, src, n);
      case DType::bf16: return convert_loop<S, DType::bf16>(dst, src, n);
      case DType::f16: return convert_loop<S, DType::f16>(dst, src, n);
      default: break;
    }
  } else {
    switch (d) {
      case DType::i32: return convert_loop<S, DType::i32>(dst, src, n);
      case DType::i64: return convert_loop<S, DType::i64>(dst, src, n);
      case DType::u8: return convert_loop<S, DType::u8>(dst, src, n);
      default: break;
    }
  }
}

}  // namespace

bool dtype_convertible(DType src, DType dst) { return dtype_is_float(src) == dtype_is_float(dst); }

void convert_elements(void* dst, DType dst_dtype, const void* src, DType src_dtype, size_t n) {
  if (!dtype_convertible(src_dtype, dst_dtype))
    throw_runtime(std::string("cannot convert ") + dtype_name(src_dtype) + " to " + dtype_name(dst_dtype));
  auto* d = static_cast<unsigned char*>(dst);
  const auto* s = static_cast<const unsigned char*>(src);
  if (src_dtype == dst_dtype) {
    std::memcpy(d, s, n * dtype_size(src_dtype));
    return;
  }
  switch (src_dtype) {
    case DType::f32: return dispatch_dst<DType::f32>(dst_dtype, d, s, n);
    case DType::f64: return dispatch_dst<DType::f64>(dst_dtype, d, s, n);
    case DType::bf16: return dispatch_dst<DType::bf16>(dst_dtype, d, s, n);
    case DType::f16: return dispatch_dst<DType::f16>(dst_dtype, d, s, n);
    case DType::i32: return dispatch_dst<DType::i32>(dst_dtype, d, s, n);
    case DType::i64: return dispatch_dst<DType::i64>(dst_dtype, d, s, n);
    case DType::u8: return dispatch_dst<DType::u8>(dst_dtype, d, s, n);
  }
}

}  // namespace ds
