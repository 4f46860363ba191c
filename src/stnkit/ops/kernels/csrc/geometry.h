// The grid generators of the spatial transformer, one output tile at a time: each transform
// family gives the normalised source point (X, Y[, Z]) of every output pixel of a tile, and,
// for the backward, accumulates dL/d(parameters) from dL/d(X, Y[, Z]). The parameters are
// theta exactly as the operator takes it (row-major), so the sums are grad_theta itself.
// Points are kept per axis: source[0] = X (along the width), source[1] = Y, source[2] = Z.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace stnkit {

// sum_k a[k] b[k] in float64, as four interleaved partial sums added at the end: a fixed
// order (the same bits on every run), and four independent chains of additions instead of one
// long one, which the compiler runs side by side (a 4-wide vector with AVX2)
template <class T> double dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  double s[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t k = 0;
  for (; k + 4 <= n; k += 4)
    for (int q = 0; q < 4; ++q) s[q] += double(a[k + q]) * double(b[k + q]);
  for (int q = 0; k < n; ++k, ++q) s[q] += double(a[k]) * double(b[k]);
  return (s[0] + s[1]) + (s[2] + s[3]);
}

// normalised output coordinate of pixel index n along one axis: a n + b
struct OutputAxis {
  double a, b;
  double at(int64_t n) const { return a * double(n) + b; }
};

// The output grid: its axes, and its height, by which the rows of a volume (depth x height,
// flattened) split into a slice index (r / height) and a row index (r % height)
struct OutputGrid {
  OutputAxis x, y, z;
  int64_t height;
};

// A tile of output pixels: rows [row0, row1) x columns [col0, col1), in raster order (rows
// of a volume run over its slices too), with what every image of the batch shares there:
// the normalised output coordinates (x, y[, z]) of its pixels and, for a thin-plate spline,
// its radial basis.
template <class T> struct Tile {
  int64_t row0 = 0, row1 = 0, col0 = 0, col1 = 0;
  std::vector<T> x, y, z;  // (pixels); z: volumes only
  std::vector<T> basis;    // (K, pixels): U(|p - c_k|^2), thin-plate spline only

  Tile(int64_t pixels, int dims, int64_t K)
      : x(pixels), y(pixels), z(dims == 3 ? pixels : 0), basis(size_t(K * pixels)) {}

  int64_t width() const { return col1 - col0; }
  int64_t pixels() const { return (row1 - row0) * (col1 - col0); }

  void place(int64_t r0, int64_t r1, int64_t c0, int64_t c1, const OutputGrid& o) {
    row0 = r0, row1 = r1, col0 = c0, col1 = c1;
    const int64_t w = c1 - c0;
    int64_t slice = r0 / o.height, row = r0 % o.height;  // of row r (no division per row)
    for (int64_t r = r0, k = 0; r < r1; ++r, k += w) {
      const T y_r = T(o.y.at(row));
      for (int64_t j = 0; j < w; ++j) x[k + j] = T(o.x.at(c0 + j)), y[k + j] = y_r;
      if (!z.empty()) std::fill(z.begin() + k, z.begin() + k + w, T(o.z.at(slice)));
      if (++row == o.height) row = 0, ++slice;
    }
  }
};

// (X, Y) = theta (x, y, 1):  theta (2, 3)
template <class T> struct Affine {
  static constexpr int dims = 2;
  static constexpr bool uses_basis = false;
  static int64_t parameters(int64_t) { return 6; }
  const T* m;

  void sources(const Tile<T>& t, T* const* source) const {
    T *__restrict X = source[0], *__restrict Y = source[1];
    for (int64_t k = 0, n = t.pixels(); k < n; ++k) {
      X[k] = m[0] * t.x[k] + m[1] * t.y[k] + m[2];
      Y[k] = m[3] * t.x[k] + m[4] * t.y[k] + m[5];
    }
  }

  // dL/dtheta += sum_p (eX, eY)_p (x) (x_p, y_p, 1)
  void accumulate(const Tile<T>& t, T* const* grad, double* g) const {
    const T *eX = grad[0], *eY = grad[1];
    for (int64_t k = 0, n = t.pixels(); k < n; ++k) {
      const double ex = eX[k], ey = eY[k], x = t.x[k], y = t.y[k];
      g[0] += ex * x, g[1] += ex * y, g[2] += ex;
      g[3] += ey * x, g[4] += ey * y, g[5] += ey;
    }
  }
};

// (X, Y, Z) = theta (x, y, z, 1):  theta (3, 4), a volume
template <class T> struct Affine3D {
  static constexpr int dims = 3;
  static constexpr bool uses_basis = false;
  static int64_t parameters(int64_t) { return 12; }
  const T* m;

  void sources(const Tile<T>& t, T* const* source) const {
    sources(t, source[0], source[1], source[2]);
  }
  // (out of line, the arrays as __restrict parameters: so the loop vectorises)
  __attribute__((noinline)) void sources(const Tile<T>& t, T* __restrict X, T* __restrict Y,
                                         T* __restrict Z) const {
    for (int64_t k = 0, n = t.pixels(); k < n; ++k) {
      const T x = t.x[k], y = t.y[k], z = t.z[k];
      X[k] = m[0] * x + m[1] * y + m[2] * z + m[3];
      Y[k] = m[4] * x + m[5] * y + m[6] * z + m[7];
      Z[k] = m[8] * x + m[9] * y + m[10] * z + m[11];
    }
  }

  // dL/dtheta += sum_p (eX, eY, eZ)_p (x) (x_p, y_p, z_p, 1)
  void accumulate(const Tile<T>& t, T* const* grad, double* g) const {
    for (int64_t k = 0, n = t.pixels(); k < n; ++k) {
      const double p[4] = {double(t.x[k]), double(t.y[k]), double(t.z[k]), 1.0};
      for (int r = 0; r < 3; ++r) {
        const double e = grad[r][k];
        for (int c = 0; c < 4; ++c) g[4 * r + c] += e * p[c];
      }
    }
  }
};

// (u, v, w) = H (x, y, 1), (X, Y) = (u, v) / w; w <= 0 or non-finite: outside (NaN).
template <class T> struct Projective {
  static constexpr int dims = 2;
  static constexpr bool uses_basis = false;
  static int64_t parameters(int64_t) { return 9; }
  const T* h;

  void homogeneous(T x, T y, T& u, T& v, T& w) const {
    u = h[0] * x + h[1] * y + h[2];
    v = h[3] * x + h[4] * y + h[5];
    w = h[6] * x + h[7] * y + h[8];
  }
  static bool valid(T w) { return w > T(0) && std::isfinite(w); }

  void sources(const Tile<T>& t, T* const* source) const {
    T *__restrict X = source[0], *__restrict Y = source[1];
    for (int64_t k = 0, n = t.pixels(); k < n; ++k) {
      T u, v, w;
      homogeneous(t.x[k], t.y[k], u, v, w);
      const bool ok = valid(w);
      X[k] = ok ? u / w : T(NAN);
      Y[k] = ok ? v / w : T(NAN);
    }
  }

  // quotient rule, q = (eX, eY) / w:  dL/dh0 += qx (x, y, 1), dL/dh1 += qy (x, y, 1),
  // dL/dh2 -= (qx X + qy Y) (x, y, 1); points outside get 0
  void accumulate(const Tile<T>& t, T* const* grad, double* g) const {
    const T *eX = grad[0], *eY = grad[1];
    for (int64_t k = 0, n = t.pixels(); k < n; ++k) {
      T u, v, w;
      homogeneous(t.x[k], t.y[k], u, v, w);
      if (!valid(w)) continue;
      const T qx = eX[k] / w, qy = eY[k] / w;
      const T r = -(qx * (u / w) + qy * (v / w));
      const double x = t.x[k], y = t.y[k];
      g[0] += qx * x, g[1] += qx * y, g[2] += qx;
      g[3] += qy * x, g[4] += qy * y, g[5] += qy;
      g[6] += r * x, g[7] += r * y, g[8] += r;
    }
  }
};

// Thin-plate spline over K control points c_k (the default lattice):
//   (X, Y) = sum_k W_k U(|p - c_k|^2) + W_K + W_{K+1} x + W_{K+2} y,  U(d2) = d2 log d2,
// W (K + 3, 2). The basis U(|p - c_k|^2) depends on the output pixel only, so a tile computes
// it once (in float64, as grids.tps_basis) for every image.
template <class T> struct ThinPlateSpline {
  static constexpr int dims = 2;
  static constexpr bool uses_basis = true;
  static int64_t parameters(int64_t K) { return 2 * (K + 3); }
  const T* W;
  int64_t K;

  static double radial(double d2) { return d2 > 0 ? d2 * std::log(d2) : 0.0; }

  // t.basis[k, p] = U(|p - c_k|^2), lattice (K, 2) of (x, y); coordinates in float64
  static void basis(Tile<T>& t, const double* lattice, int64_t K, const OutputGrid& o) {
    const int64_t n = t.pixels();
    for (int64_t c = 0; c < K; ++c) {
      T* row = t.basis.data() + c * n;
      int64_t k = 0;
      for (int64_t i = t.row0; i < t.row1; ++i) {
        const double dy = o.y.at(i) - lattice[2 * c + 1];
        for (int64_t j = t.col0; j < t.col1; ++j, ++k) {
          const double dx = o.x.at(j) - lattice[2 * c];
          row[k] = T(radial(dx * dx + dy * dy));
        }
      }
    }
  }

  void sources(const Tile<T>& t, T* const* source) const {
    T *__restrict X = source[0], *__restrict Y = source[1];
    const int64_t n = t.pixels();
    for (int64_t k = 0; k < n; ++k) X[k] = T(0), Y[k] = T(0);
    for (int64_t c = 0; c < K; ++c) {
      const T* u = t.basis.data() + c * n;
      for (int64_t k = 0; k < n; ++k) {
        X[k] = X[k] + u[k] * W[2 * c];
        Y[k] = Y[k] + u[k] * W[2 * c + 1];
      }
    }
    const T* a = W + 2 * K;  // rows K, K + 1, K + 2: the affine part
    for (int64_t k = 0; k < n; ++k) {
      X[k] = X[k] + (a[0] + a[2] * t.x[k] + a[4] * t.y[k]);
      Y[k] = Y[k] + (a[1] + a[3] * t.x[k] + a[5] * t.y[k]);
    }
  }

  // dL/dW_k += sum_p (eX, eY)_p U(|p - c_k|^2); the affine rows with 1, x, y
  void accumulate(const Tile<T>& t, T* const* grad, double* g) const {
    const T *eX = grad[0], *eY = grad[1];
    const int64_t n = t.pixels();
    for (int64_t c = 0; c < K; ++c) {
      const T* u = t.basis.data() + c * n;
      g[2 * c] += dot(eX, u, n), g[2 * c + 1] += dot(eY, u, n);
    }
    double* a = g + 2 * K;
    for (int64_t k = 0; k < n; ++k) {
      const double ex = eX[k], ey = eY[k], x = t.x[k], y = t.y[k];
      a[0] += ex, a[1] += ey, a[2] += ex * x, a[3] += ey * x, a[4] += ex * y, a[5] += ey * y;
    }
  }
};

}  // namespace stnkit
