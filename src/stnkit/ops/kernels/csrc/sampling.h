// The sampler of the spatial transformer (Jaderberg et al. 2015, eq. 3-7), one input axis and
// one output point at a time, with the conventions of stnkit.ops.sample (grid_sample's):
//
//   V_c = sum_n sum_m U_c[n, m] k(x - m) k(y - n),  k(d) = max(0, 1 - |d|) (bilinear)
//                                                   or delta(round(d))     (nearest),
//
// x, y the input pixel coordinates of the output point. Per axis: InputAxis::locate turns a
// normalised source coordinate into a padded pixel coordinate and d pixel / d normalised
// (padding, sub-gradients and non-finite rules below); Bilinear / Nearest turn two of them
// into taps, and gather (forward) or scatter (grad_input) and differentiate (grad of the
// source point) over one channel plane. A tap outside the image is never read or written.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "storage.h"

namespace stnkit {

enum class Padding : int32_t { zeros = 0, border = 1, reflection = 2 };

// Round half to even (torch.round, grid_sample's nearest); any finite x, NaN and Inf kept.
template <class T> inline T round_half_even(T x) {
  const T big = T(1) / std::numeric_limits<T>::epsilon();  // from here on every T is an integer
  const T a = std::fabs(x);
  if (!(a < big)) return x;
  return std::copysign((a + big) - big, x);  // the addition rounds to an integer, half to even
}

// floor(x) as an integer, for the clamped coordinates of the samplers (|x| < 2^62)
template <class T> inline int64_t floor_index(T x) {
  const int64_t i = int64_t(x);
  return i - int64_t(x < T(i));
}

// A padded input pixel coordinate and d pixel / d (normalised source coordinate)
template <class T> struct Coordinate {
  T pixel;
  T slope;
};

// One input axis: size, unnormalisation and padding (stnkit.ops.sample._axis_taps).
template <class T> struct InputAxis {
  int64_t size;
  T scale, shift;  // pixel = (X + 1) * scale + shift: shift -1/2 without align_corners
  Padding padding;
  bool align_corners;
  bool snap;  // bilinear: pixels within 2 eps size of an integer snap onto it

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

  Coordinate<T> locate(T X) const {
    T pixel = (X + T(1)) * scale + shift;
    if (padding != Padding::zeros) pixel = pixel + X * T(0);  // +-Inf -> NaN: outside
    if (padding == Padding::reflection) {  // a huge finite X may have overflowed
      const T big = std::numeric_limits<T>::max();
      pixel = pixel < -big ? -big : (pixel > big ? big : pixel);
    }
    if (snap) {
      const T r = round_half_even(pixel);
      const T tol = T(2) * std::numeric_limits<T>::epsilon() * T(size > 1 ? size : 1);
      if (std::fabs(pixel - r) <= tol) pixel = r;
    }
    const T low = T(-1.5);  // below it every tap is outside; NaN points go there
    if (padding == Padding::zeros) {  // beyond [low, size + 1/2] every tap is outside
      const T high = T(size) + T(0.5);
      pixel = pixel != pixel ? low : (pixel < low ? low : (pixel > high ? high : pixel));
      return {pixel, scale};
    }
    T sign = T(1);
    if (padding == Padding::reflection) pixel = reflect(pixel, sign);
    // d clip / d pixel: 1 strictly inside (0, size - 1), 0 at and beyond the clip points
    const T last = T(size - 1);
    const T slope = (pixel > T(0) && pixel < last) ? scale * sign : T(0);
    pixel = pixel != pixel ? low : (pixel < T(0) ? T(0) : (pixel > last ? last : pixel));
    return {pixel, slope};
  }
};

// Bilinear taps of one axis: floor(x) and floor(x) + 1 with weights 1 - t and t,
// t = x - floor(x), and d weight / dx = -1, +1 on this interval (the right derivative at an
// integer knot).
template <class T> struct LinearTaps {
  int64_t first;
  T weight[2];
  bool inside[2];
  T slope;  // d pixel / d normalised

  LinearTaps(Coordinate<T> c, int64_t size) : slope(c.slope) {
    first = floor_index(c.pixel);
    const T t = c.pixel - T(first);
    weight[0] = T(1) - t;
    weight[1] = t;
    inside[0] = first >= 0 && first < size;
    inside[1] = first + 1 >= 0 && first + 1 < size;
  }
};

struct Bilinear {
  static constexpr bool differentiable = true;  // a gradient reaches the source point

  template <class T> struct Point {
    LinearTaps<T> x, y;
    int64_t width;
    Point(Coordinate<T> cx, Coordinate<T> cy, int64_t height, int64_t width)
        : x(cx, width), y(cy, height), width(width) {}
    bool inside(int a, int b) const { return x.inside[a] && y.inside[b]; }
    int64_t offset(int a, int b) const { return (y.first + b) * width + x.first + a; }
    T weight(int a, int b) const { return x.weight[a] * y.weight[b]; }
    template <class S> T value(const S* plane, int a, int b) const {
      return inside(a, b) ? load<T>(plane[offset(a, b)]) : T(0);
    }
  };

  // V = sum over the 2 x 2 taps (x-tap a, y-tap b) of U[tap] w_a(x) w_b(y)
  template <class T, class S> static T gather(const S* plane, const Point<T>& p) {
    T v = p.value(plane, 0, 0) * p.weight(0, 0);
    v = v + p.value(plane, 0, 1) * p.weight(0, 1);
    v = v + p.value(plane, 1, 0) * p.weight(1, 0);
    return v + p.value(plane, 1, 1) * p.weight(1, 1);
  }

  // dL/dU[tap] += w_a(x) w_b(y) dL/dV (also where the weight is 0: a NaN/Inf dL/dV reaches
  // every tap inside the image)
  template <class T> static void scatter(T* plane, const Point<T>& p, T e) {
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b)
        if (p.inside(a, b)) plane[p.offset(a, b)] += e * p.weight(a, b);
  }

  // sums[2a + b] += U[tap] dL/dV: summed over the channels, then gradient() applies the
  // weights' derivatives
  template <class T, class S> static void tap_sums(const S* plane, const Point<T>& p, T e,
                                                   T sums[4]) {
    for (int a = 0; a < 2; ++a)
      for (int b = 0; b < 2; ++b) sums[2 * a + b] += p.value(plane, a, b) * e;
  }

  // dL/d(X, Y) (normalised) from the tap sums: d/dx of w_a(x) is -1, +1; chain through the
  // padding (slope)
  template <class T> static void gradient(const Point<T>& p, const T sums[4], T& eX, T& eY) {
    const T* wx = p.x.weight;
    const T* wy = p.y.weight;
    T gx = -(sums[0] * wy[0]);
    gx = gx - sums[1] * wy[1];
    gx = gx + sums[2] * wy[0];
    gx = gx + sums[3] * wy[1];
    T gy = -(sums[0] * wx[0]);
    gy = gy + sums[1] * wx[0];
    gy = gy - sums[2] * wx[1];
    gy = gy + sums[3] * wx[1];
    eX = gx * p.x.slope;
    eY = gy * p.y.slope;
  }
};

struct Nearest {
  static constexpr bool differentiable = false;  // piecewise constant: 0 to the source point

  template <class T> struct Point {
    int64_t offset;
    bool inside;
    Point(Coordinate<T> cx, Coordinate<T> cy, int64_t height, int64_t width) {
      const int64_t i = int64_t(round_half_even(cx.pixel));  // clamped: finite, small
      const int64_t j = int64_t(round_half_even(cy.pixel));
      inside = i >= 0 && i < width && j >= 0 && j < height;
      offset = j * width + i;
    }
  };

  template <class T, class S> static T gather(const S* plane, const Point<T>& p) {
    return p.inside ? load<T>(plane[p.offset]) : T(0);
  }

  template <class T> static void scatter(T* plane, const Point<T>& p, T e) {
    if (p.inside) plane[p.offset] += e;
  }
};

}  // namespace stnkit
