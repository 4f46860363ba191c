// Storage types of images: loads widen to the compute type, stores round to nearest even
// exactly as Tensor.to does (a double goes through float first, as c10::Half / BFloat16
// convert it; NaN stays NaN).
#pragma once

#include <cstdint>
#include <cstring>

namespace stnkit {

struct Half {
  uint16_t bits;
};
struct BFloat16 {
  uint16_t bits;
};

inline uint32_t bits_of(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float float_of(uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline float to_float(BFloat16 v) { return float_of(uint32_t(v.bits) << 16); }

inline float to_float(Half v) {
  const uint32_t sign = uint32_t(v.bits & 0x8000u) << 16;
  const uint32_t exponent = (v.bits >> 10) & 0x1fu, mantissa = v.bits & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    return float_of(bits_of(float(mantissa) * 0x1p-24f) | sign);
  }
  if (exponent == 0x1f) return float_of(sign | 0x7f800000u | (mantissa << 13));  // Inf, NaN
  return float_of(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

inline BFloat16 to_bfloat16(float f) {
  if (f != f) return {0x7fc0};
  const uint32_t u = bits_of(f);
  return {uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

inline Half to_half(float f) {
  uint32_t u = bits_of(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  if (u >= 0x47800000u) {  // |f| >= 2^16: Inf (NaN stays NaN)
    return {uint16_t(sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u))};
  }
  if (u < 0x38800000u) {  // |f| < 2^-14: a subnormal half; 0.5 + |f| rounds at its ulp 2^-24
    return {uint16_t(sign | (bits_of(float_of(u) + 0.5f) - 0x3f000000u))};
  }
  const uint32_t odd = (u >> 13) & 1u;
  u += 0xc8000fffu + odd;  // exponent bias 127 -> 15, and round half to even
  return {uint16_t(sign | (u >> 13))};
}

// load<T>(s): the stored value in the compute type T; store<S>(v): v rounded to S
template <class T> inline T load(float s) { return T(s); }
template <class T> inline T load(double s) { return T(s); }
template <class T> inline T load(Half s) { return T(to_float(s)); }
template <class T> inline T load(BFloat16 s) { return T(to_float(s)); }

template <class S> struct Store;
template <> struct Store<float> {
  template <class T> static float from(T v) { return float(v); }
};
template <> struct Store<double> {
  template <class T> static double from(T v) { return double(v); }
};
template <> struct Store<Half> {
  template <class T> static Half from(T v) { return to_half(float(v)); }
};
template <> struct Store<BFloat16> {
  template <class T> static BFloat16 from(T v) { return to_bfloat16(float(v)); }
};

}  // namespace stnkit
