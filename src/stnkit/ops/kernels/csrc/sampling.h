// The sampler of the spatial transformer (Jaderberg et al. 2015, eq. 3-7), with the
// conventions of stnkit.ops.sample (grid_sample's):
//
//   V_c = sum_n sum_m U_c[n, m] k(x - m) k(y - n),  k(d) = max(0, 1 - |d|) (bilinear)
//                                                   or delta(round(d))     (nearest),
//
// x, y the input pixel coordinates of the output point. Per axis: InputAxis::locate turns a
// normalised source coordinate into a padded pixel coordinate and d pixel / d normalised
// (padding, sub-gradients and non-finite rules below); LinearTaps gives an axis' bilinear
// taps; Bilinear / Nearest hold the taps of a tile of points, and gather (forward) or
// scatter (grad_input) and differentiate (grad of the source point) over one channel plane.
// A tap outside the image contributes nothing (its read, if any, is dropped).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "storage.h"

// the per-point helpers must inline into the tile loops, or those loops cannot vectorise
#define STNKIT_INLINE inline __attribute__((always_inline))

namespace stnkit {

enum class Padding : int32_t { zeros = 0, border = 1, reflection = 2 };

// Round half to even (torch.round, grid_sample's nearest); any finite x, NaN and Inf kept.
template <class T> STNKIT_INLINE T round_half_even(T x) {
  const T big = T(1) / std::numeric_limits<T>::epsilon();  // from here on every T is an integer
  const T a = std::fabs(x);
  const T r = std::copysign((a + big) - big, x);  // the addition rounds, half to even
  return a < big ? r : x;
}

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
      pixel = pixel != pixel ? low : (pixel < low ? low : (pixel > high ? high : pixel));
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

// Bilinear taps of one axis: floor(x) and floor(x) + 1 with weights 1 - t and t,
// t = x - floor(x), and d weight / dx = -1, +1 on this interval (the right derivative at an
// integer knot).
template <class T> struct LinearTaps {
  int32_t first;
  T weight[2];
  bool inside[2];

  STNKIT_INLINE LinearTaps(T pixel, int32_t size) {
    first = floor_index(pixel);
    const T t = pixel - T(first);
    weight[0] = T(1) - t;
    weight[1] = t;
    inside[0] = (first >= 0) & (first < size);
    inside[1] = (first >= -1) & (first < size - 1);
  }
};

// The samplers work on a tile of n output points at a time, kept as arrays (one entry per
// point) so that the loops over the points have no branches and vectorise: taps() computes
// every point's taps from its source point, then each channel plane is gathered, scattered
// or differentiated over them. Plane offsets are 32-bit (cpp_cpu.supports: < 2^31 pixels).

// V = sum over the 2 x 2 taps q = (x-tap a, y-tap b) of U[q] w_a(x) w_b(y)
template <class T> struct Bilinear {
  static constexpr bool differentiable = true;  // a gradient reaches the source point
  // per tap q = 2 a + b: plane offset (0 outside: read there, then dropped), inside, weight
  std::vector<int32_t> offset[4], inside[4];
  std::vector<T> weight[4];
  std::vector<T> wx[2], wy[2], slope_x, slope_y;  // per axis, for the derivative

  explicit Bilinear(int64_t n) {
    for (int q = 0; q < 4; ++q) offset[q].resize(n), inside[q].resize(n), weight[q].resize(n);
    for (int a = 0; a < 2; ++a) wx[a].resize(n), wy[a].resize(n);
    slope_x.resize(n), slope_y.resize(n);
  }

  template <Padding padding>
  void taps(const InputAxis<T>& ax, const InputAxis<T>& ay, const T* __restrict X,
            const T* __restrict Y, int64_t n) {
    const int32_t width = int32_t(ax.size);
    // distinct arrays: __restrict pointers let the loop vectorise without alias checks
    int32_t *__restrict o0 = offset[0].data(), *__restrict o1 = offset[1].data(),
            *__restrict o2 = offset[2].data(), *__restrict o3 = offset[3].data();
    int32_t *__restrict i0 = inside[0].data(), *__restrict i1 = inside[1].data(),
            *__restrict i2 = inside[2].data(), *__restrict i3 = inside[3].data();
    T *__restrict w0 = weight[0].data(), *__restrict w1 = weight[1].data(),
      *__restrict w2 = weight[2].data(), *__restrict w3 = weight[3].data();
    T *__restrict x0 = wx[0].data(), *__restrict x1 = wx[1].data(), *__restrict y0 = wy[0].data(),
      *__restrict y1 = wy[1].data(), *__restrict sx = slope_x.data(),
      *__restrict sy = slope_y.data();
    for (int64_t k = 0; k < n; ++k) {
      const Coordinate<T> cx = ax.template locate<padding, true>(X[k]);
      const Coordinate<T> cy = ay.template locate<padding, true>(Y[k]);
      const LinearTaps<T> tx(cx.pixel, ax.size), ty(cy.pixel, ay.size);
      const int32_t base = ty.first * width + tx.first;  // tap (a, b) at base + b width + a
      i0[k] = tx.inside[0] & ty.inside[0], o0[k] = i0[k] ? base : 0;
      i1[k] = tx.inside[0] & ty.inside[1], o1[k] = i1[k] ? base + width : 0;
      i2[k] = tx.inside[1] & ty.inside[0], o2[k] = i2[k] ? base + 1 : 0;
      i3[k] = tx.inside[1] & ty.inside[1], o3[k] = i3[k] ? base + width + 1 : 0;
      w0[k] = tx.weight[0] * ty.weight[0], w1[k] = tx.weight[0] * ty.weight[1];
      w2[k] = tx.weight[1] * ty.weight[0], w3[k] = tx.weight[1] * ty.weight[1];
      x0[k] = tx.weight[0], x1[k] = tx.weight[1], y0[k] = ty.weight[0], y1[k] = ty.weight[1];
      sx[k] = cx.slope, sy[k] = cy.slope;
    }
  }

  template <class S> T value(const S* plane, int q, int64_t k) const {
    const T v = load<T>(plane[offset[q][k]]);
    return inside[q][k] ? v : T(0);
  }

  template <class S> void gather(const S* plane, S* out, int64_t n) const {
    for (int64_t k = 0; k < n; ++k) {
      T v = value(plane, 0, k) * weight[0][k];
      v = v + value(plane, 1, k) * weight[1][k];
      v = v + value(plane, 2, k) * weight[2][k];
      out[k] = Store<S>::from(v + value(plane, 3, k) * weight[3][k]);
    }
  }

  // dL/dU[q] += w_q dL/dV (also where w_q is 0: a NaN/Inf dL/dV reaches every tap inside
  // the image); a tap outside adds 0 to pixel 0
  template <class S> void scatter(T* plane, const S* grad, int64_t n) const {
    for (int64_t k = 0; k < n; ++k) {
      const T e = load<T>(grad[k]);
      for (int q = 0; q < 4; ++q) plane[offset[q][k]] += inside[q][k] ? e * weight[q][k] : T(0);
    }
  }

  // sums[q][k] += U[q] dL/dV, summed over the channels; gradient() applies the weights'
  // derivatives
  template <class S> void tap_sums(const S* plane, const S* grad, int64_t n, T* sums[4]) const {
    for (int q = 0; q < 4; ++q)
      for (int64_t k = 0; k < n; ++k) sums[q][k] += value(plane, q, k) * load<T>(grad[k]);
  }

  // dL/d(X, Y) (normalised): d w_a(x) / dx = -1, +1, then through the padding (slope)
  void gradient(T* const sums[4], int64_t n, T* eX, T* eY) const {
    for (int64_t k = 0; k < n; ++k) {
      T gx = -(sums[0][k] * wy[0][k]);
      gx = gx - sums[1][k] * wy[1][k];
      gx = gx + sums[2][k] * wy[0][k];
      gx = gx + sums[3][k] * wy[1][k];
      T gy = -(sums[0][k] * wx[0][k]);
      gy = gy + sums[1][k] * wx[0][k];
      gy = gy - sums[2][k] * wx[1][k];
      gy = gy + sums[3][k] * wx[1][k];
      eX[k] = gx * slope_x[k];
      eY[k] = gy * slope_y[k];
    }
  }
};

// V = U[round(x), round(y)] (round half to even), 0 outside
template <class T> struct Nearest {
  static constexpr bool differentiable = false;  // piecewise constant: 0 to the source point
  std::vector<int32_t> offset, inside;

  explicit Nearest(int64_t n) : offset(n), inside(n) {}

  template <Padding padding>
  void taps(const InputAxis<T>& ax, const InputAxis<T>& ay, const T* X, const T* Y,
            int64_t n) {
    for (int64_t k = 0; k < n; ++k) {
      const int32_t i = int32_t(round_half_even(ax.template locate<padding, false>(X[k]).pixel));
      const int32_t j = int32_t(round_half_even(ay.template locate<padding, false>(Y[k]).pixel));
      const bool in = (i >= 0) & (i < ax.size) & (j >= 0) & (j < ay.size);
      inside[k] = in;
      offset[k] = in ? j * int32_t(ax.size) + i : 0;
    }
  }

  template <class S> void gather(const S* plane, S* out, int64_t n) const {
    for (int64_t k = 0; k < n; ++k) {
      const T v = load<T>(plane[offset[k]]);
      out[k] = Store<S>::from(inside[k] ? v : T(0));
    }
  }

  template <class S> void scatter(T* plane, const S* grad, int64_t n) const {
    for (int64_t k = 0; k < n; ++k) plane[offset[k]] += inside[k] ? load<T>(grad[k]) : T(0);
  }
};

}  // namespace stnkit
