// Storage types of images: loads widen to the compute type, stores round to nearest even
// exactly as Tensor.to does (a double goes through float first, as c10::Half / BFloat16
// convert it; NaN stays NaN).
#pragma once

#include <cstdint>
#include <cstring>
#if defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace stnkit {

// 16-bit storage types: their bit patterns, as distinct scalar types (enums, not structs:
// the compiler vectorises loads and stores of scalars only)
enum class Half : uint16_t {};
enum class BFloat16 : uint16_t {};

// bit casts (a builtin, not memcpy through memory: loops that call them vectorise)
inline uint32_t bits_of(float f) { return __builtin_bit_cast(uint32_t, f); }
inline float float_of(uint32_t u) { return __builtin_bit_cast(float, u); }

inline float to_float(BFloat16 v) { return float_of(uint32_t(v) << 16); }

inline float to_float(Half v) {
#if defined(__F16C__)  // one instruction (vcvtph2ps), exact like the code below
  return _cvtsh_ss(uint16_t(v));
#endif
  const uint32_t bits = uint16_t(v);
  const uint32_t sign = (bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1fu, mantissa = bits & 0x3ffu;
  if (exponent == 0) {  // zero or subnormal: mantissa * 2^-24, exact in float
    return float_of(bits_of(float(mantissa) * 0x1p-24f) | sign);
  }
  if (exponent == 0x1f) return float_of(sign | 0x7f800000u | (mantissa << 13));  // Inf, NaN
  return float_of(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// Branch-free (a select for NaN), so that the loops that store through it vectorise
inline BFloat16 to_bfloat16(float f) {
  const uint32_t u = bits_of(f);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return BFloat16(f != f ? 0x7fc0u : rounded);
}

inline Half to_half(float f) {
#if defined(__F16C__)  // vcvtps2ph, IEEE round to nearest even, as the code below
  return Half(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
#endif
  uint32_t u = bits_of(f);
  const uint32_t sign = (u >> 16) & 0x8000u;
  u &= 0x7fffffffu;
  if (u >= 0x47800000u) {  // |f| >= 2^16: Inf (NaN stays NaN)
    return Half(sign | (u > 0x7f800000u ? 0x7e00u : 0x7c00u));
  }
  if (u < 0x38800000u) {  // |f| < 2^-14: a subnormal half; 0.5 + |f| rounds at its ulp 2^-24
    return Half(sign | (bits_of(float_of(u) + 0.5f) - 0x3f000000u));
  }
  const uint32_t odd = (u >> 13) & 1u;
  u += 0xc8000fffu + odd;  // exponent bias 127 -> 15, and round half to even
  return Half(sign | (u >> 13));
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

#if defined(__AVX2__) && defined(__F16C__)
// 8 values at a time, for the AVX2 samplers: widen8 turns 8 stored values (or the 16-bit
// patterns of 8) into float32, exactly; narrow8 stores 8 float32 values rounded as Store
// rounds them (bfloat16: to nearest even, NaN -> 0x7fc0; float16: vcvtps2ph, as to_half)
inline __m256 widen8(__m128i bits, Half) { return _mm256_cvtph_ps(bits); }
inline __m256 widen8(__m128i bits, BFloat16) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
inline __m256 widen8(const float* p) { return _mm256_loadu_ps(p); }
template <class S> inline __m256 widen8(const S* p) {
  return widen8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)), S{});
}

inline void narrow8(float* p, __m256 v) { _mm256_storeu_ps(p, v); }
inline void narrow8(Half* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
inline void narrow8(BFloat16* p, __m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i bias = _mm256_add_epi32(_mm256_set1_epi32(0x7fff), odd);
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(u, bias), 16);
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7fc0), nan);
  const __m128i packed =  // 32 -> 16 bits (every value fits: no saturation)
      _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
#endif

}  // namespace stnkit
