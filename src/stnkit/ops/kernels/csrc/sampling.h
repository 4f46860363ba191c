// The sampler of the spatial transformer (Jaderberg et al. 2015, eq. 3-7), with the
// conventions of stnkit.ops.sample (grid_sample's):
//
//   V_c = sum_n sum_m U_c[n, m] k(x - m) k(y - n),  k(d) = max(0, 1 - |d|) (bilinear)
//                                                   or delta(round(d))     (nearest),
//
// x, y the input pixel coordinates of the output point. Per axis: InputAxis::locate turns a
// normalised source coordinate into a padded pixel coordinate and d pixel / d normalised
// (padding, sub-gradients and non-finite rules below); Bilinear / Trilinear / Nearest hold
// the taps of a tile of points, gather over an image's channel planes (forward), and scatter
// into grad_input and sum for the grad of the source point in one backward pass over them.
// A tap outside the image contributes nothing (its read, if any, is dropped).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "storage.h"

// the per-point helpers must inline into the tile loops, or those loops cannot vectorise;
// a loop that writes through pointers takes them as __restrict parameters of a function
// kept out of line (GCC does not vectorise it with __restrict local pointers, or inlined)
#define STNKIT_INLINE inline __attribute__((always_inline))
#define STNKIT_NOINLINE __attribute__((noinline))

namespace stnkit {

enum class Padding : int32_t { zeros = 0, border = 1, reflection = 2 };

// The AVX2 samplers prefetch the taps of the point kPrefetchAhead points ahead (about the time
// a load from memory takes, at the forward's pace) in planes of kPrefetchPixels pixels or more
// (64 KiB in float32: planes that outgrow L1, and with their other channels and gradient, L2);
// smaller planes stay in cache, and there the prefetch instructions only cost time
constexpr int64_t kPrefetchAhead = 128, kPrefetchPixels = 16384;

// Round half to even (torch.round, grid_sample's nearest); NaN and Inf kept. nearbyint rounds
// in the current rounding mode, which is to nearest, ties to even, unless a program changes
// it (neither Python nor torch does); it compiles to one vector instruction (roundps) where
// the CPU has one, so the loops that call it vectorise.
template <class T> STNKIT_INLINE T round_half_even(T x) { return std::nearbyint(x); }

// floor(x) as an integer, for the clamped coordinates of the samplers (in [-2, 2^31))
template <class T> STNKIT_INLINE int32_t floor_index(T x) {
  const int32_t i = int32_t(x);
  return i - int32_t(x < T(i));
}

// A padded input pixel coordinate and d pixel / d (normalised source coordinate)
template <class T> struct Coordinate {
  T pixel;
  T slope;
};

// One input axis: size, unnormalisation and padding (stnkit.ops.sample._axis_taps).
template <class T> struct InputAxis {
  int32_t size;  // 32-bit, like the offsets: 32-bit integer vectors
  T scale, shift;  // pixel = (X + 1) * scale + shift: shift -1/2 without align_corners
  bool align_corners;

  // Mirror into [low, low + span] (exact for any finite pixel); sign = d out / d in.
  T reflect(T pixel, T& sign) const {
    const T low = align_corners ? T(0) : T(-0.5);
    const T span = align_corners ? T(size - 1) : T(size);
    if (span == T(0)) {  // one pixel with align_corners: everything maps onto it
      sign = T(0);
      return pixel * T(0);  // NaN stays NaN
    }
    const T period = span + span;
    const T t = std::fmod(pixel, period) - low;
    T extra = std::fmod(std::fabs(t), period);
    const bool flip = extra > span;
    if (flip) extra = period - extra;
    sign = (flip != (t < T(0))) ? T(-1) : T(1);
    return extra + low;
  }

  // Compile-time options, so that a tile's loop over locate has no branch: padding, and
  // snap (bilinear): a pixel within 2 eps size of an integer snaps onto it
  template <Padding padding, bool snap> STNKIT_INLINE Coordinate<T> locate(T X) const {
    T pixel = (X + T(1)) * scale + shift;
    if constexpr (padding != Padding::zeros) pixel = pixel + X * T(0);  // +-Inf -> NaN: outside
    if constexpr (padding == Padding::reflection) {  // a huge finite X may have overflowed
      const T big = std::numeric_limits<T>::max();
      pixel = pixel < -big ? -big : (pixel > big ? big : pixel);
    }
    if constexpr (snap) {
      const T r = round_half_even(pixel);
      const T tol = T(2) * std::numeric_limits<T>::epsilon() * T(size > 1 ? size : 1);
      pixel = std::fabs(pixel - r) <= tol ? r : pixel;
    }
    const T low = T(-1.5);  // below it every tap is outside; NaN points go there
    if constexpr (padding == Padding::zeros) {  // beyond [low, size + 1/2] every tap is outside
      const T high = T(size) + T(0.5);
      pixel = pixel > high ? high : pixel;
      pixel = pixel >= low ? pixel : low;  // NaN too
      return {pixel, scale};
    }
    T sign = T(1);
    if constexpr (padding == Padding::reflection) pixel = reflect(pixel, sign);
    // d clip / d pixel: 1 strictly inside (0, size - 1), 0 at and beyond the clip points
    const T last = T(size - 1);
    const T slope = (pixel > T(0)) & (pixel < last) ? scale * sign : T(0);
    pixel = pixel != pixel ? low : (pixel < T(0) ? T(0) : (pixel > last ? last : pixel));
    return {pixel, slope};
  }
};

// Offset of tap (i, j[, l]) in a plane, in 32-bit unsigned arithmetic: a tap outside the
// image may lie beyond 2^31 (its offset wraps, and is masked to 0 where it is used)
STNKIT_INLINE int32_t plane_offset(int32_t i, int32_t j, int32_t width) {
  return int32_t(uint32_t(j) * uint32_t(width) + uint32_t(i));
}

// One image's channel planes: input is read; the forward writes output; the backward reads
// dL/dV (grad) and adds to dL/dU (gin, the compute type; null: not wanted). Channel c's
// planes start c * in_plane (input, gin) and c * out_plane (output, grad) after the first.
template <class S, class T> struct ImagePlanes {
  const S* input;
  S* output;
  const S* grad;
  T* gin;
  int64_t channels, in_plane, out_plane;
};

// A sampler's backward over an image: its backward_as with the run-time choices made
// compile-time (to_input: gin is given; to_point: sums is given)
template <class Sampler, class S, class T>
void backward_image(const Sampler& s, const ImagePlanes<S, T>& p, int64_t n, T* const* sums) {
  if (p.gin && sums) s.template backward_as<true, true>(p, n, sums);
  else if (p.gin) s.template backward_as<true, false>(p, n, sums);
  else if (sums) s.template backward_as<false, true>(p, n, sums);
}

// A sampler's scalar backward over points [begin, end) of an image, channel after channel:
// the even points, then the odd ones (neighbouring points share taps, and their
// read-modify-writes of one pixel back to back would wait on each other); a point whose taps
// are all inside (Sampler::all_inside(k)) takes the unmasked case
template <bool to_input, bool to_point, class Sampler, class S, class T>
void backward_points(const Sampler& s, const ImagePlanes<S, T>& p, int64_t begin, int64_t end,
                     T* const* sums) {
  for (int64_t c = 0; c < p.channels; ++c) {
    const S* plane = p.input + c * p.in_plane;
    const S* grad = p.grad + c * p.out_plane;
    T* gin = to_input ? p.gin + c * p.in_plane : nullptr;
    for (int64_t parity = 0; parity < 2; ++parity)
      for (int64_t k = begin + parity; k < end; k += 2) {
        if (s.interior || s.all_inside(k))
          s.template backward_point<true, to_input, to_point>(plane, grad, gin, k, sums);
        else
          s.template backward_point<false, to_input, to_point>(plane, grad, gin, k, sums);
      }
  }
}

// The samplers work on a tile of n output points at a time, kept as arrays (one entry per
// point) so that the loops over the points have no branches and vectorise: taps() computes
// every point's taps from its source point, then the image's channel planes are gathered,
// scattered or differentiated over them. Plane offsets are 32-bit (cpp_cpu.supports: < 2^31
// pixels).

// V = sum over the 2 x 2 taps (i + a, j + b), a, b in {0, 1}, of U[j + b, i + a] w_a(x) w_b(y),
// with (i, j) = floor(x, y), w_0 = 1 - t, w_1 = t and t the fraction.
//
// A tile keeps per point only (i, j), the fractions and the padding slopes; offsets, masks
// and weights are recomputed where they are used, which costs less than reading them back.
// The interior case (every tap of every point of the tile inside the image, as for most
// tiles of a warp that stays on the image) is the same code with the masks compiled out.
template <class T> struct Bilinear {
  static constexpr int dims = 2;
  static constexpr int corners = 4;             // taps per point, and sums for the gradient
  static constexpr bool differentiable = true;  // a gradient reaches the source point
  std::vector<int32_t> col, row;  // i, j: the first tap of each axis
  std::vector<T> fx, fy;          // the fractions t of each axis
  std::vector<T> slope_x, slope_y;  // d pixel / d normalised source coordinate (padding)
  int32_t width = 0, height = 0;
  bool interior = false;  // every tap of the tile inside the image
  bool far = false;       // a plane of kPrefetchPixels or more: taps are prefetched

  explicit Bilinear(int64_t n) : col(n), row(n), fx(n), fy(n), slope_x(n), slope_y(n) {}

  // axes: x, y; source: X, Y (normalised)
  template <Padding padding>
  void taps(const InputAxis<T>* axes, T* const* source, int64_t n) {
    const InputAxis<T> ax = axes[0], ay = axes[1];  // copies: locals vectorise
    const T *__restrict X = source[0], *__restrict Y = source[1];
    const int32_t width = this->width = ax.size, height = this->height = ay.size;
    far = int64_t(width) * height >= kPrefetchPixels;
    int32_t *__restrict i = col.data(), *__restrict j = row.data();
    T *__restrict tx = fx.data(), *__restrict ty = fy.data(), *__restrict sx = slope_x.data(),
      *__restrict sy = slope_y.data();
    for (int64_t k = 0; k < n; ++k) {  // pixel coordinates, in place of the fractions
      const Coordinate<T> c = ax.template locate<padding, true>(X[k]);
      tx[k] = c.pixel, sx[k] = c.slope;
    }
    for (int64_t k = 0; k < n; ++k) {
      const Coordinate<T> c = ay.template locate<padding, true>(Y[k]);
      ty[k] = c.pixel, sy[k] = c.slope;
    }
    int32_t all_in = 1;  // every point's four taps inside the image
    for (int64_t k = 0; k < n; ++k) {
      i[k] = floor_index(tx[k]), j[k] = floor_index(ty[k]);
      tx[k] = tx[k] - T(i[k]), ty[k] = ty[k] - T(j[k]);
      all_in &= int32_t(all_inside(i[k], j[k], width, height));
    }
    interior = all_in != 0;
  }

  // All bits set if tap (i, j) is inside the image, else 0 (an integer mask, not a bool:
  // GCC vectorises the selects below only so)
  template <bool interior> STNKIT_INLINE int32_t inside(int32_t i, int32_t j) const {
    if constexpr (interior) return -1;
    return -int32_t((uint32_t(i) < uint32_t(width)) & (uint32_t(j) < uint32_t(height)));
  }

  // Whether all four taps of first tap (i, j) are inside a width x height image (the first
  // tap in [0, size - 1) on both axes); the sizes as arguments keep taps()' loop on locals
  static STNKIT_INLINE bool all_inside(int32_t i, int32_t j, int32_t width, int32_t height) {
    return (uint32_t(i) < uint32_t(width - 1)) & (uint32_t(j) < uint32_t(height - 1));
  }
  STNKIT_INLINE bool all_inside(int64_t k) const {
    return all_inside(col[k], row[k], width, height);
  }

  // U[j, i], 0 outside (read at offset 0 there, then dropped: a NaN there does not leak)
  template <bool interior, class S>
  STNKIT_INLINE T value(const S* plane, int32_t i, int32_t j) const {
    const int32_t in = inside<interior>(i, j);
    const T v = load<T>(plane[plane_offset(i, j, width) & in]);
    return in ? v : T(0);
  }

  // p[0] += a, p[1] += b as one 2-wide vector operation (same sums, half the memory ops)
  static STNKIT_INLINE void add_pair(T* p, T a, T b) {
    typedef T Pair __attribute__((vector_size(2 * sizeof(T))));
    Pair v;
    std::memcpy(&v, p, sizeof v);
    v += Pair{a, b};
    std::memcpy(p, &v, sizeof v);
  }

  // U[j, i] += v inside the image (outside: 0 is added to pixel 0)
  template <bool interior> STNKIT_INLINE void add(T* plane, int32_t i, int32_t j, T v) const {
    const int32_t in = inside<interior>(i, j);
    plane[plane_offset(i, j, width) & in] += in ? v : T(0);
  }

  // Points [begin, end) of one channel plane
  template <bool interior, class S>
  void gather_plane(const S* __restrict plane, S* __restrict out, int64_t begin,
                    int64_t end) const {
    const int32_t *__restrict ci = col.data(), *__restrict cj = row.data();
    const T *__restrict tx = fx.data(), *__restrict ty = fy.data();
    for (int64_t k = begin; k < end; ++k) {
      const int32_t i = ci[k], j = cj[k];
      const T x1 = tx[k], y1 = ty[k], x0 = T(1) - x1, y0 = T(1) - y1;
      T v = value<interior>(plane, i, j) * (x0 * y0);
      v = v + value<interior>(plane, i, j + 1) * (x0 * y1);
      v = v + value<interior>(plane, i + 1, j) * (x1 * y0);
      out[k] = Store<S>::from(v + value<interior>(plane, i + 1, j + 1) * (x1 * y1));
    }
  }

  // The forward over the channels of one image
  template <class S> void gather(const ImagePlanes<S, T>& p, int64_t n) const {
#if defined(__AVX2__)
    if constexpr (std::is_same_v<T, float> && !std::is_same_v<S, double>)
      return gather_pairs(p, n);  // float32, float16 and bfloat16 images
#endif
    gather_block(p, 0, n);
  }

  // Points [begin, end) of every channel
  template <class S>
  void gather_block(const ImagePlanes<S, T>& p, int64_t begin, int64_t end) const {
    for (int64_t c = 0; c < p.channels; ++c) {
      const S* plane = p.input + c * p.in_plane;
      S* out = p.output + c * p.out_plane;
      interior ? gather_plane<true>(plane, out, begin, end)
               : gather_plane<false>(plane, out, begin, end);
    }
  }

  // The backward over the channels of one image, in one pass over the points, 8 at a time
  // (each block of 8 over every channel):
  //   to_input: dL/dU[tap] += w_tap dL/dV into gin (also where w_tap is 0: a NaN/Inf dL/dV
  //             reaches every tap inside the image);
  //   to_point: sums[2 a + b][k] += U[j + b, i + a] dL/dV over the channels, in channel order
  //             (gradient() applies the weights' derivatives).
  template <class S> void backward(const ImagePlanes<S, T>& p, int64_t n, T* const* sums) const {
    backward_image(*this, p, n, sums);
  }

  template <bool to_input, bool to_point, class S>
  void backward_as(const ImagePlanes<S, T>& p, int64_t n, T* const* sums) const {
    for (int64_t k = 0; k < n; k += 8) {
#if defined(__AVX2__)
      if constexpr (std::is_same_v<T, float> && !std::is_same_v<S, double>)
        if (k + 8 <= n) {
          const Block where = block_at(k);
          if (where == Block::inside) {
            backward_block8<to_input, to_point>(p, k, n, sums);
            continue;
          }
          if (where == Block::outside) {  // nothing to scatter
            if constexpr (to_point) outside_sums(p, k, sums);
            continue;
          }
        }
#endif
      backward_points<to_input, to_point>(*this, p, k, std::min(n, k + 8), sums);
    }
  }

  template <bool interior, bool to_input, bool to_point, class S>
  STNKIT_INLINE void backward_point(const S* plane, const S* grad, T* gin, int64_t k,
                                    T* const* sums) const {
    const int32_t i = col[k], j = row[k];
    const T e = load<T>(grad[k]);
    if constexpr (to_point) {
      sums[0][k] += value<interior>(plane, i, j) * e;
      sums[1][k] += value<interior>(plane, i, j + 1) * e;
      sums[2][k] += value<interior>(plane, i + 1, j) * e;
      sums[3][k] += value<interior>(plane, i + 1, j + 1) * e;
    }
    if constexpr (to_input) {
      const T x1 = fx[k], y1 = fy[k], x0 = T(1) - x1, y0 = T(1) - y1;
      if constexpr (interior) {  // taps (i, j), (i + 1, j) are neighbours: one 2-wide add
        add_pair(gin + j * width + i, e * (x0 * y0), e * (x1 * y0));
        add_pair(gin + (j + 1) * width + i, e * (x0 * y1), e * (x1 * y1));
      } else {
        add<interior>(gin, i, j, e * (x0 * y0));
        add<interior>(gin, i, j + 1, e * (x0 * y1));
        add<interior>(gin, i + 1, j, e * (x1 * y0));
        add<interior>(gin, i + 1, j + 1, e * (x1 * y1));
      }
    }
  }

#if defined(__AVX2__)
  // Computed in float32, with AVX2: 8 points at a time where all their taps are inside the
  // image (the other points go to the scalar code). The two taps of a row, (i, j) and
  // (i + 1, j), are adjacent in memory: one load reads both (64 bits in float32 images, 32 in
  // float16 / bfloat16 ones, widened exactly), two per point where the compiler's gather
  // takes four scalar loads and as many inserts; the backward writes a row's two taps of
  // grad_input (float32) with one 64-bit read-modify-write likewise. Same operations in the
  // same order as the scalar code: the same bits.

  // 8 points with all their taps inside: their first taps' offsets and their tap weights
  struct Block8 {
    alignas(32) int32_t offset[8];
    __m256 w00, w01, w10, w11;  // w_a(x) w_b(y) of tap (i + a, j + b)
  };
  struct Taps8 {
    __m256 u00, u10, u01, u11;  // U[j, i], U[j, i + 1], U[j + 1, i], U[j + 1, i + 1]
  };

  // Where the 8 points k..k + 7 lie: every tap inside the image, no tap inside (zeros
  // padding beyond the border), or across the border (the scalar code's masked case)
  enum class Block { inside, outside, across };
  STNKIT_INLINE Block block_at(int64_t k) const {
    if (interior) return Block::inside;
    const __m256i i = load8(col.data() + k), j = load8(row.data() + k);
    // all taps inside: 0 <= i <= width - 2 and 0 <= j <= height - 2 (unsigned: also i, j >= 0;
    // an image one pixel wide or high has no such point)
    if (width >= 2 && height >= 2 &&
        _mm256_movemask_epi8(_mm256_and_si256(at_most(i, width - 2), at_most(j, height - 2))) == -1)
      return Block::inside;
    // a tap inside: -1 <= i <= width - 1 and -1 <= j <= height - 1
    const __m256i one = _mm256_set1_epi32(1);
    const __m256i some = _mm256_and_si256(at_most(_mm256_add_epi32(i, one), width),
                                          at_most(_mm256_add_epi32(j, one), height));
    return _mm256_movemask_epi8(some) == 0 ? Block::outside : Block::across;
  }

  // All bits set in the lanes where v <= limit, unsigned
  static STNKIT_INLINE __m256i at_most(__m256i v, int32_t limit) {
    return _mm256_cmpeq_epi32(_mm256_min_epu32(v, _mm256_set1_epi32(limit)), v);
  }

  // backward_points' point sums for 8 points without a tap inside: every tap's value is 0,
  // so each sum is 0 + 0 dL/dV_0 + 0 dL/dV_1 + ... (0, or NaN where a dL/dV is not finite);
  // their scatter adds +0 to pixel 0 of grad_input, which changes no bits (it is never -0:
  // it starts at +0, and a sum is -0 only if both terms are), so it is skipped
  template <class S>
  void outside_sums(const ImagePlanes<S, float>& p, int64_t k, float* const* sums) const {
    const __m256 zero = _mm256_setzero_ps();
    __m256 s = zero;
    for (int64_t c = 0; c < p.channels; ++c)
      s = _mm256_add_ps(s, _mm256_mul_ps(zero, widen8(p.grad + c * p.out_plane + k)));
    for (int t = 0; t < corners; ++t) _mm256_storeu_ps(sums[t] + k, s);
  }

  // Points k..k + 7, all of whose taps are inside (offsets below 2^31)
  STNKIT_INLINE Block8 block8(int64_t k) const {
    Block8 b;
    const __m256i i = load8(col.data() + k), j = load8(row.data() + k);
    _mm256_store_si256(reinterpret_cast<__m256i*>(b.offset),
                       _mm256_add_epi32(_mm256_mullo_epi32(j, _mm256_set1_epi32(width)), i));
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 x1 = _mm256_loadu_ps(fx.data() + k), y1 = _mm256_loadu_ps(fy.data() + k);
    const __m256 x0 = _mm256_sub_ps(one, x1), y0 = _mm256_sub_ps(one, y1);
    b.w00 = _mm256_mul_ps(x0, y0), b.w01 = _mm256_mul_ps(x0, y1);
    b.w10 = _mm256_mul_ps(x1, y0), b.w11 = _mm256_mul_ps(x1, y1);
    return b;
  }

  // The taps of a block's points. Loads of points (0, 1, 4, 5) and (2, 3, 6, 7) fill two
  // vectors whose even and odd lanes are the left and right taps of points 0..7
  template <class S> STNKIT_INLINE Taps8 load_taps(const S* plane, const int32_t* o) const {
    const S* below = plane + width;
    const __m256 top_a = pairs(plane, o[0], o[1], o[4], o[5]);
    const __m256 top_b = pairs(plane, o[2], o[3], o[6], o[7]);
    const __m256 bottom_a = pairs(below, o[0], o[1], o[4], o[5]);
    const __m256 bottom_b = pairs(below, o[2], o[3], o[6], o[7]);
    return {_mm256_shuffle_ps(top_a, top_b, 0x88), _mm256_shuffle_ps(top_a, top_b, 0xDD),
            _mm256_shuffle_ps(bottom_a, bottom_b, 0x88),
            _mm256_shuffle_ps(bottom_a, bottom_b, 0xDD)};
  }

  // (p[a], p[a + 1], p[b], p[b + 1] | p[c], p[c + 1], p[d], p[d + 1]) in float32
  static STNKIT_INLINE __m256 pairs(const float* p, int32_t a, int32_t b, int32_t c,
                                    int32_t d) {
    const auto at = [p](int32_t o) { return reinterpret_cast<const __m64*>(p + o); };
    const __m128 low = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), at(a)), at(b));
    const __m128 high = _mm_loadh_pi(_mm_loadl_pi(_mm_setzero_ps(), at(c)), at(d));
    return _mm256_insertf128_ps(_mm256_castps128_ps256(low), high, 1);
  }
  template <class S>  // float16, bfloat16: a pair is 32 bits
  static STNKIT_INLINE __m256 pairs(const S* p, int32_t a, int32_t b, int32_t c, int32_t d) {
    const auto at = [p](int32_t o) {
      int32_t bits;
      std::memcpy(&bits, p + o, sizeof bits);
      return bits;
    };
    return widen8(_mm_setr_epi32(at(a), at(b), at(c), at(d)), S{});
  }

  static STNKIT_INLINE __m256i load8(const int32_t* p) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  }

  // Ask for the cache lines of the taps of points k and k + 4 of a plane (skipped past the
  // tile's n points), kPrefetchAhead points before they are read: a rotated warp reads
  // its taps in an order that the hardware prefetchers do not follow
  template <class P> STNKIT_INLINE void prefetch(const P* plane, int64_t k, int64_t n) const {
    for (int64_t q = k; q < std::min(k + 5, n); q += 4) {
      if (uint32_t(col[q]) >= uint32_t(width) || uint32_t(row[q]) + 1 >= uint32_t(height))
        continue;
      const P* first = plane + int64_t(row[q]) * width + col[q];
      _mm_prefetch(reinterpret_cast<const char*>(first), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(first + width), _MM_HINT_T0);
    }
  }

  // gather() computed in float32: 8 points at a time over every channel
  template <class S> void gather_pairs(const ImagePlanes<S, float>& p, int64_t n) const {
    if (far) gather_pairs<true>(p.input, p.output, p.channels, p.in_plane, p.out_plane, n);
    else gather_pairs<false>(p.input, p.output, p.channels, p.in_plane, p.out_plane, n);
    gather_block(p, n - n % 8, n);
  }
  // (the planes as __restrict pointers: a store to the output cannot change the input)
  template <bool far, class S>
  STNKIT_NOINLINE void gather_pairs(const S* __restrict input, S* __restrict output,
                                    int64_t channels, int64_t in_plane, int64_t out_plane,
                                    int64_t n) const {
    for (int64_t k = 0; k + 8 <= n; k += 8) {
      const Block where = block_at(k);
      if (where != Block::inside) {
        const bool outside = where == Block::outside;  // V = 0 U + ... = +0 (weights >= 0)
        for (int64_t c = 0; c < channels; ++c)
          if (outside) narrow8(output + c * out_plane + k, _mm256_setzero_ps());
          else gather_plane<false>(input + c * in_plane, output + c * out_plane, k, k + 8);
        continue;
      }
      const Block8 b = block8(k);
      for (int64_t c = 0; c < channels; ++c) {
        const S* plane = input + c * in_plane;
        if constexpr (far) prefetch(plane, k + kPrefetchAhead, n);
        const Taps8 u = load_taps(plane, b.offset);
        __m256 v = _mm256_mul_ps(u.u00, b.w00);
        v = _mm256_add_ps(v, _mm256_mul_ps(u.u01, b.w01));
        v = _mm256_add_ps(v, _mm256_mul_ps(u.u10, b.w10));
        v = _mm256_add_ps(v, _mm256_mul_ps(u.u11, b.w11));
        narrow8(output + c * out_plane + k, v);
      }
    }
  }

  // backward_points for points k..k + 7 (of n) inside the image: the point sums in registers
  // over the channels, each channel's scatter as the scalar code's (even points, then odd)
  template <bool to_input, bool to_point, class S>
  STNKIT_NOINLINE void backward_block8(const ImagePlanes<S, float>& p, int64_t k, int64_t n,
                                       float* const* sums) const {
    const Block8 b = block8(k);
    __m256 s00 = _mm256_setzero_ps(), s01 = s00, s10 = s00, s11 = s00;
    for (int64_t c = 0; c < p.channels; ++c) {
      if (far) {
        prefetch(p.input + c * p.in_plane, k + kPrefetchAhead, n);
        if constexpr (to_input) prefetch(p.gin + c * p.in_plane, k + kPrefetchAhead, n);
      }
      const __m256 e = widen8(p.grad + c * p.out_plane + k);
      if constexpr (to_point) {
        const Taps8 u = load_taps(p.input + c * p.in_plane, b.offset);
        s00 = _mm256_add_ps(s00, _mm256_mul_ps(u.u00, e));
        s01 = _mm256_add_ps(s01, _mm256_mul_ps(u.u01, e));
        s10 = _mm256_add_ps(s10, _mm256_mul_ps(u.u10, e));
        s11 = _mm256_add_ps(s11, _mm256_mul_ps(u.u11, e));
      }
      if constexpr (to_input)
        scatter(p.gin + c * p.in_plane, b, _mm256_mul_ps(e, b.w00), _mm256_mul_ps(e, b.w10),
                _mm256_mul_ps(e, b.w01), _mm256_mul_ps(e, b.w11));
    }
    if constexpr (to_point) {  // the sums start at 0, as the scalar code's
      _mm256_storeu_ps(sums[0] + k, s00), _mm256_storeu_ps(sums[1] + k, s01);
      _mm256_storeu_ps(sums[2] + k, s10), _mm256_storeu_ps(sums[3] + k, s11);
    }
  }

  // gin[tap] += value of the tap for a block's points: the top taps' pairs (v00, v10) and the
  // bottom ones' (v01, v11), one 64-bit read-modify-write each, points 0, 2, 4, 6, 1, 3, 5, 7.
  // The pairs are moved into place in registers (a round trip through memory stalls).
  STNKIT_INLINE void scatter(float* gin, const Block8& b, __m256 v00, __m256 v10, __m256 v01,
                             __m256 v11) const {
    // (v00, v10) of points 0, 1 | 4, 5 and 2, 3 | 6, 7 (unpacklo, unpackhi), then per 128-bit
    // part: points (0, 1), (2, 3), (4, 5), (6, 7); likewise the bottom taps
    const __m256 top_a = _mm256_unpacklo_ps(v00, v10), top_b = _mm256_unpackhi_ps(v00, v10);
    const __m256 bottom_a = _mm256_unpacklo_ps(v01, v11),
                 bottom_b = _mm256_unpackhi_ps(v01, v11);
    const __m128 top[4] = {_mm256_castps256_ps128(top_a), _mm256_castps256_ps128(top_b),
                           _mm256_extractf128_ps(top_a, 1), _mm256_extractf128_ps(top_b, 1)};
    const __m128 bottom[4] = {_mm256_castps256_ps128(bottom_a), _mm256_castps256_ps128(bottom_b),
                              _mm256_extractf128_ps(bottom_a, 1),
                              _mm256_extractf128_ps(bottom_b, 1)};
    const auto add = [](float* q, __m128 v) {  // q[0, 1] += v[0, 1]
      __m64* at = reinterpret_cast<__m64*>(q);
      _mm_storel_pi(at, _mm_add_ps(_mm_loadl_pi(_mm_setzero_ps(), at), v));
    };
    for (int h = 0; h < 4; ++h) {  // even points (0, 2, 4, 6): the low pair of each part
      float* first = gin + b.offset[2 * h];
      add(first, top[h]), add(first + width, bottom[h]);
    }
    for (int h = 0; h < 4; ++h) {  // odd points (1, 3, 5, 7): the high pair
      float* first = gin + b.offset[2 * h + 1];
      add(first, _mm_movehl_ps(top[h], top[h]));
      add(first + width, _mm_movehl_ps(bottom[h], bottom[h]));
    }
  }
#endif

  // dL/d(X, Y) (normalised) into grad[0], grad[1]: d w_a(x) / dx = -1, +1, then through the
  // padding (slope)
  void gradient(T* const* sums, int64_t n, T* const* grad) const {
    gradient(sums, n, grad[0], grad[1]);
  }
  STNKIT_NOINLINE void gradient(T* const* sums, int64_t n, T* __restrict eX,
                                T* __restrict eY) const {
    const T *__restrict s0 = sums[0], *__restrict s1 = sums[1], *__restrict s2 = sums[2],
            *__restrict s3 = sums[3];
    const T *__restrict tx = fx.data(), *__restrict ty = fy.data(),
            *__restrict sx = slope_x.data(), *__restrict sy = slope_y.data();
    for (int64_t k = 0; k < n; ++k) {
      const T x1 = tx[k], y1 = ty[k], x0 = T(1) - x1, y0 = T(1) - y1;
      T gx = -(s0[k] * y0);
      gx = gx - s1[k] * y1;
      gx = gx + s2[k] * y0;
      gx = gx + s3[k] * y1;
      T gy = -(s0[k] * x0);
      gy = gy + s1[k] * x0;
      gy = gy - s2[k] * x1;
      gy = gy + s3[k] * x1;
      eX[k] = gx * sx[k];
      eY[k] = gy * sy[k];
    }
  }
};

// The same sampler on a volume (trilinear): V = sum over the 2 x 2 x 2 taps
// (i + a, j + b, l + d) of U[l + d, j + b, i + a] w_a(x) w_b(y) w_d(z), tap c = 4a + 2b + d.
// Kept as Bilinear keeps a tile: the first tap, the fractions and the slopes per point.
template <class T> struct Trilinear {
  static constexpr int dims = 3;
  static constexpr int corners = 8;
  static constexpr bool differentiable = true;
  std::vector<int32_t> col, row, slice;     // i, j, l
  std::vector<T> fx, fy, fz;                // fractions
  std::vector<T> slope_x, slope_y, slope_z;
  int32_t width = 0, height = 0, depth = 0;
  bool interior = false;

  explicit Trilinear(int64_t n)
      : col(n), row(n), slice(n), fx(n), fy(n), fz(n), slope_x(n), slope_y(n), slope_z(n) {}

  // axes: x, y, z; source: X, Y, Z (normalised)
  template <Padding padding>
  void taps(const InputAxis<T>* axes, T* const* source, int64_t n) {
    const int32_t width = this->width = axes[0].size, height = this->height = axes[1].size,
                  depth = this->depth = axes[2].size;
    std::vector<int32_t>* first[3] = {&col, &row, &slice};
    std::vector<T>* fraction[3] = {&fx, &fy, &fz};
    std::vector<T>* slope[3] = {&slope_x, &slope_y, &slope_z};
    for (int d = 0; d < 3; ++d) {  // per axis: pixel coordinate, first tap, fraction
      const InputAxis<T> a = axes[d];
      const T* __restrict s = source[d];
      int32_t* __restrict i = first[d]->data();
      T *__restrict t = fraction[d]->data(), *__restrict m = slope[d]->data();
      for (int64_t k = 0; k < n; ++k) {
        const Coordinate<T> c = a.template locate<padding, true>(s[k]);
        t[k] = c.pixel, m[k] = c.slope;
      }
      for (int64_t k = 0; k < n; ++k) i[k] = floor_index(t[k]), t[k] = t[k] - T(i[k]);
    }
    int32_t all_in = 1;
    for (int64_t k = 0; k < n; ++k)
      all_in &= int32_t(all_inside(col[k], row[k], slice[k], width, height, depth));
    interior = all_in != 0;
  }

  template <bool interior> STNKIT_INLINE int32_t inside(int32_t i, int32_t j, int32_t l) const {
    if constexpr (interior) return -1;
    return -int32_t((uint32_t(i) < uint32_t(width)) & (uint32_t(j) < uint32_t(height)) &
                    (uint32_t(l) < uint32_t(depth)));
  }

  static STNKIT_INLINE bool all_inside(int32_t i, int32_t j, int32_t l, int32_t width,
                                       int32_t height, int32_t depth) {
    return (uint32_t(i) < uint32_t(width - 1)) & (uint32_t(j) < uint32_t(height - 1)) &
           (uint32_t(l) < uint32_t(depth - 1));
  }
  STNKIT_INLINE bool all_inside(int64_t k) const {
    return all_inside(col[k], row[k], slice[k], width, height, depth);
  }

  STNKIT_INLINE int32_t offset(int32_t i, int32_t j, int32_t l) const {
    return plane_offset(i, plane_offset(j, l, height), width);
  }

  // U[l, j, i], 0 outside (read at offset 0 there, then dropped)
  template <bool interior, class S>
  STNKIT_INLINE T value(const S* plane, int32_t i, int32_t j, int32_t l) const {
    const int32_t in = inside<interior>(i, j, l);
    const T v = load<T>(plane[offset(i, j, l) & in]);
    return in ? v : T(0);
  }

  template <bool interior> STNKIT_INLINE void add(T* plane, int32_t i, int32_t j, int32_t l,
                                                  T v) const {
    const int32_t in = inside<interior>(i, j, l);
    plane[offset(i, j, l) & in] += in ? v : T(0);
  }

  template <bool interior, class S>
  void gather_plane(const S* __restrict plane, S* __restrict out, int64_t n) const {
    const int32_t *__restrict ci = col.data(), *__restrict cj = row.data(),
                  *__restrict cl = slice.data();
    const T *__restrict tx = fx.data(), *__restrict ty = fy.data(), *__restrict tz = fz.data();
    for (int64_t k = 0; k < n; ++k) {
      const int32_t i = ci[k], j = cj[k], l = cl[k];
      const T x1 = tx[k], y1 = ty[k], z1 = tz[k], x0 = T(1) - x1, y0 = T(1) - y1,
              z0 = T(1) - z1;
      T v = value<interior>(plane, i, j, l) * (x0 * y0 * z0);
      v = v + value<interior>(plane, i, j, l + 1) * (x0 * y0 * z1);
      v = v + value<interior>(plane, i, j + 1, l) * (x0 * y1 * z0);
      v = v + value<interior>(plane, i, j + 1, l + 1) * (x0 * y1 * z1);
      v = v + value<interior>(plane, i + 1, j, l) * (x1 * y0 * z0);
      v = v + value<interior>(plane, i + 1, j, l + 1) * (x1 * y0 * z1);
      v = v + value<interior>(plane, i + 1, j + 1, l) * (x1 * y1 * z0);
      out[k] = Store<S>::from(v + value<interior>(plane, i + 1, j + 1, l + 1) * (x1 * y1 * z1));
    }
  }

  template <class S> void gather(const ImagePlanes<S, T>& p, int64_t n) const {
    for (int64_t c = 0; c < p.channels; ++c) {
      const S* plane = p.input + c * p.in_plane;
      S* out = p.output + c * p.out_plane;
      interior ? gather_plane<true>(plane, out, n) : gather_plane<false>(plane, out, n);
    }
  }

  // As Bilinear::backward over the 8 taps (sums[4a + 2b + d]), channel after channel over
  // all the points
  template <class S> void backward(const ImagePlanes<S, T>& p, int64_t n, T* const* sums) const {
    backward_image(*this, p, n, sums);
  }

  template <bool to_input, bool to_point, class S>
  void backward_as(const ImagePlanes<S, T>& p, int64_t n, T* const* sums) const {
    backward_points<to_input, to_point>(*this, p, 0, n, sums);
  }

  template <bool interior, bool to_input, bool to_point, class S>
  STNKIT_INLINE void backward_point(const S* plane, const S* grad, T* gin, int64_t k,
                                    T* const* sums) const {
    const int32_t i = col[k], j = row[k], l = slice[k];
    const T e = load<T>(grad[k]);
    const T wx[2] = {T(1) - fx[k], fx[k]}, wy[2] = {T(1) - fy[k], fy[k]},
            wz[2] = {T(1) - fz[k], fz[k]};
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b)
        for (int d = 0; d < 2; ++d) {
          if constexpr (to_point)
            sums[4 * a + 2 * b + d][k] += value<interior>(plane, i + a, j + b, l + d) * e;
          if constexpr (to_input)
            add<interior>(gin, i + a, j + b, l + d, e * (wx[a] * wy[b] * wz[d]));
        }
  }

  // dL/d(X, Y, Z) (normalised) into grad[0..2]: per axis, the weight of that axis
  // differentiated (-1, +1) times the other two, then through the padding (slope)
  void gradient(T* const* sums, int64_t n, T* const* grad) const {
    gradient(sums, n, grad[0], grad[1], grad[2]);
  }
  STNKIT_NOINLINE void gradient(T* const* sums, int64_t n, T* __restrict eX, T* __restrict eY,
                                T* __restrict eZ) const {
    for (int64_t k = 0; k < n; ++k) {
      const T wx[2] = {T(1) - fx[k], fx[k]}, wy[2] = {T(1) - fy[k], fy[k]},
              wz[2] = {T(1) - fz[k], fz[k]}, sign[2] = {T(-1), T(1)};
      T gx = T(0), gy = T(0), gz = T(0);
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b)
          for (int d = 0; d < 2; ++d) {
            const T s = sums[4 * a + 2 * b + d][k];
            gx = gx + s * (sign[a] * wy[b] * wz[d]);
            gy = gy + s * (wx[a] * sign[b] * wz[d]);
            gz = gz + s * (wx[a] * wy[b] * sign[d]);
          }
      eX[k] = gx * slope_x[k], eY[k] = gy * slope_y[k], eZ[k] = gz * slope_z[k];
    }
  }
};

// V = U[round(x), round(y)[, round(z)]] (round half to even), 0 outside; D axes
template <class T, int D> struct NearestOf {
  static constexpr int dims = D;
  static constexpr int corners = 0;
  static constexpr bool differentiable = false;  // piecewise constant: 0 to the source point
  std::vector<int32_t> offset, inside;

  explicit NearestOf(int64_t n) : offset(n), inside(n) {}

  template <Padding padding> void taps(const InputAxis<T>* axes, T* const* source, int64_t n) {
    std::fill(offset.begin(), offset.begin() + n, 0);
    std::fill(inside.begin(), inside.begin() + n, 1);
    int32_t stride = 1;  // of the axis in the plane
    for (int d = 0; d < D; ++d) {
      const InputAxis<T> a = axes[d];
      const T* s = source[d];
      for (int64_t k = 0; k < n; ++k) {
        const int32_t i = int32_t(round_half_even(a.template locate<padding, false>(s[k]).pixel));
        inside[k] &= int32_t((i >= 0) & (i < a.size));
        offset[k] = int32_t(uint32_t(offset[k]) + uint32_t(i) * uint32_t(stride));
      }
      stride *= a.size;
    }
    for (int64_t k = 0; k < n; ++k) offset[k] = inside[k] ? offset[k] : 0;
  }

  template <class S> void gather(const ImagePlanes<S, T>& p, int64_t n) const {
    for (int64_t c = 0; c < p.channels; ++c)
      gather_plane(p.input + c * p.in_plane, p.output + c * p.out_plane, n);
  }

  template <class S>
  void gather_plane(const S* __restrict plane, S* __restrict out, int64_t n) const {
    for (int64_t k = 0; k < n; ++k) {
      const T v = load<T>(plane[offset[k]]);
      out[k] = Store<S>::from(inside[k] ? v : T(0));
    }
  }

  // dL/dU[tap] += dL/dV into gin (sums: unused, nothing reaches the source point)
  template <class S> void backward(const ImagePlanes<S, T>& p, int64_t n, T* const*) const {
    if (p.gin)
      for (int64_t c = 0; c < p.channels; ++c) {
        const S* grad = p.grad + c * p.out_plane;
        T* gin = p.gin + c * p.in_plane;
        for (int64_t k = 0; k < n; ++k) gin[offset[k]] += inside[k] ? load<T>(grad[k]) : T(0);
      }
  }

  void gradient(T* const*, int64_t, T* const*) const {}
};
template <class T> using Nearest = NearestOf<T, 2>;
template <class T> using Nearest3D = NearestOf<T, 3>;

}  // namespace stnkit
