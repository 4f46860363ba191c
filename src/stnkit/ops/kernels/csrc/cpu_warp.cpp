// Fused CPU warp (grid generator + sampler, the grid never materialised): 2-D affine,
// projective and thin-plate-spline transforms, 3-D affine; bilinear (trilinear) and nearest
// sampling; zeros, border and reflection padding. Loaded with ctypes by stnkit/ops/kernels/cpp_cpu.py, which
// describes the semantics, the precision policy and the work plans; the pieces:
//
//   geometry.h  transform families: output tile -> normalised source points, and back
//   sampling.h  padding per axis, bilinear / trilinear / nearest taps, gather / scatter /
//               derivative
//   storage.h   16-bit loads and round-to-nearest-even stores
//   this file   the call record, the tiling, the loops over tiles and images, the work plans
//
// Threads: OpenMP regions with call.threads threads. Built with -fopenmp and loaded after
// torch, the library uses torch's own libgomp (same soname), hence torch's thread team.
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <vector>

#include "geometry.h"
#include "sampling.h"
#include "storage.h"

namespace stnkit {

enum class Transform : int32_t { affine = 0, projective = 1, tps = 2, affine3d = 3 };
enum class Mode : int32_t { bilinear = 0, nearest = 1 };
enum class DType : int32_t { float32 = 0, float64 = 1, float16 = 2, bfloat16 = 3 };

// One call, field by field (mirrored by cpp_cpu._Call). Tensors are C-contiguous; an image
// has depth 1.
struct WarpCall {
  int64_t batch, channels;
  int64_t in_depth, in_height, in_width, out_depth, out_height, out_width;
  int64_t control_points;  // K (thin-plate spline), else 0
  int32_t transform, mode, padding, align_corners;
  int32_t storage;  // dtype of input, output, grad_output (DType)
  int32_t compute;  // float32 or float64
  int32_t threads, deterministic, need_input, need_theta;
  // geometry, float64 from the host: normalised output coordinate = a * index + b per axis;
  // input pixel = (X + 1) * scale + shift per axis (z: volumes only)
  double out_x_a, out_x_b, out_y_a, out_y_b, out_z_a, out_z_b;
  double in_x_scale, in_x_shift, in_y_scale, in_y_shift, in_z_scale, in_z_shift;
  const double* theta;    // (B, parameters): affine (2, 3) or (3, 4), projective (3, 3),
                          // tps (K + 3, 2)
  const double* lattice;  // (K, 2) control points (x, y), tps only
  const void* input;      // (B, C, [D,] H, W), storage dtype
  void* output;           // (B, C, [D_out,] H_out, W_out), storage dtype (forward)
  const void* grad_output;  // as output (backward)
  void* grad_input;         // as input, compute dtype, zeroed (backward, need_input)
  double* grad_theta;       // (B, parameters) (backward, need_theta)
};

constexpr int64_t kTilePixels = 1024;  // output pixels of a tile
constexpr int64_t kMaxGroups = 64;     // per image: row groups with their own theta sums

// Tiles: whole rows when a row has at most kTilePixels pixels, else segments of one row (the
// rows of a volume: every row of every slice, slice after slice).
// Tile rows ("bands") are gathered into at most kMaxGroups groups per image; sums for theta
// are kept per (image, group), which depends on the sizes only, so their bits do not depend
// on the thread count or the work plan.
struct Tiling {
  int64_t height, width, rows, cols;  // output size; rows / columns per tile

  Tiling(int64_t h, int64_t w) : height(h), width(w) {
    rows = w <= kTilePixels ? std::max<int64_t>(1, kTilePixels / w) : 1;
    cols = w <= kTilePixels ? w : kTilePixels;
  }
  int64_t bands() const { return (height + rows - 1) / rows; }
  int64_t groups() const { return std::min(bands(), kMaxGroups); }
  int64_t group_begin(int64_t g) const { return g * bands() / groups(); }  // in bands
};

// A work item: images [b0, b1) x row groups [g0, g1). grad_input goes to the image itself
// (buffer < 0) or to private buffer `buffer` (summed into it in a fixed order afterwards).
struct Item {
  int64_t b0, b1, g0, g1, buffer;
};

// Per-thread scratch: the tile, its points' source points (per axis) and taps, their
// gradients (per axis), and the sampler's tap sums for them
template <class T, template <class> class Sampler> struct Scratch {
  static constexpr int dims = Sampler<T>::dims, corners = Sampler<T>::corners;
  Tile<T> tile;
  std::vector<T> points[dims], grads[dims];
  Sampler<T> taps;
  std::vector<T> sums[corners > 0 ? corners : 1];  // per tap: U[tap] dL/dV over the channels
  T *source[dims], *grad[dims], *tap_sums[corners > 0 ? corners : 1];

  explicit Scratch(int64_t K) : tile(kTilePixels, dims, K), taps(kTilePixels) {
    for (int d = 0; d < dims; ++d) {
      points[d].resize(kTilePixels), grads[d].resize(kTilePixels);
      source[d] = points[d].data(), grad[d] = grads[d].data();
    }
    for (int c = 0; c < corners; ++c) sums[c].resize(kTilePixels), tap_sums[c] = sums[c].data();
  }
  Scratch(const Scratch& o) : Scratch(o.tile.basis.size() / kTilePixels) {}  // fresh pointers
};

template <class S, class T, template <class> class Family, template <class> class Sampler>
struct Warp {
  static_assert(Family<T>::dims == Sampler<T>::dims, "a family and a sampler of one dimension");
  using Scratch = stnkit::Scratch<T, Sampler>;
  const WarpCall& call;
  Tiling tiling;
  InputAxis<T> axes[3];  // x, y, z
  OutputGrid grid;
  std::vector<T> theta;  // in the compute type
  int64_t P;             // parameters per image
  int64_t in_plane, out_plane;

  explicit Warp(const WarpCall& c)
      : call(c), tiling(c.out_depth * c.out_height, c.out_width),
        axes{{int32_t(c.in_width), T(c.in_x_scale), T(c.in_x_shift), c.align_corners != 0},
             {int32_t(c.in_height), T(c.in_y_scale), T(c.in_y_shift), c.align_corners != 0},
             {int32_t(c.in_depth), T(c.in_z_scale), T(c.in_z_shift), c.align_corners != 0}},
        grid{{c.out_x_a, c.out_x_b}, {c.out_y_a, c.out_y_b}, {c.out_z_a, c.out_z_b},
             c.out_height},
        P(Family<T>::parameters(c.control_points)),
        in_plane(c.in_depth * c.in_height * c.in_width),
        out_plane(c.out_depth * c.out_height * c.out_width) {
    theta.assign(c.theta, c.theta + c.batch * P);  // geometry: float64 -> compute type
  }

  Family<T> family(int64_t b) const {
    if constexpr (Family<T>::uses_basis) return {theta.data() + b * P, call.control_points};
    else return {theta.data() + b * P};
  }

  // Place the tile (band, segment) and what its images share
  void place(Tile<T>& t, int64_t band, int64_t segment) const {
    const int64_t r0 = band * tiling.rows, c0 = segment * tiling.cols;
    t.place(r0, std::min(r0 + tiling.rows, tiling.height), c0,
            std::min(c0 + tiling.cols, tiling.width), grid);
    if constexpr (Family<T>::uses_basis)
      Family<T>::basis(t, call.lattice, call.control_points, grid);
  }

  // Visit every tile of the item's groups, and every image of the item there: visit(b, g)
  template <class Visit> void walk(const Item& it, Scratch& s, Visit&& visit) const {
    const int64_t segments = (tiling.width + tiling.cols - 1) / tiling.cols;
    for (int64_t g = it.g0; g < it.g1; ++g)
      for (int64_t band = tiling.group_begin(g); band < tiling.group_begin(g + 1); ++band)
        for (int64_t segment = 0; segment < segments; ++segment) {
          place(s.tile, band, segment);
          for (int64_t b = it.b0; b < it.b1; ++b) visit(b, g);
        }
  }

  // Source points of image b over the tile, and their taps
  void locate(int64_t b, Scratch& s) const {
    const int64_t n = s.tile.pixels();
    family(b).sources(s.tile, s.source);
    switch (Padding(call.padding)) {
      case Padding::zeros: s.taps.template taps<Padding::zeros>(axes, s.source, n); break;
      case Padding::border: s.taps.template taps<Padding::border>(axes, s.source, n); break;
      case Padding::reflection: s.taps.template taps<Padding::reflection>(axes, s.source, n);
    }
  }

  // A tile's pixels are contiguous in the output (whole rows, or a segment of one row)
  int64_t tile_offset(const Tile<T>& t) const { return t.row0 * call.out_width + t.col0; }

  // output[b, :, tile] = sample(input[b], source points of the tile)
  void forward_tile(int64_t b, Scratch& s) const {
    locate(b, s);
    const S* in = static_cast<const S*>(call.input) + b * call.channels * in_plane;
    S* out = static_cast<S*>(call.output) + b * call.channels * out_plane + tile_offset(s.tile);
    s.taps.gather(ImagePlanes<S, T>{in, out, nullptr, nullptr, call.channels, in_plane, out_plane},
                  s.tile.pixels());
  }

  // grad_input[b] (into `gin`, if any) and the theta sums of the tile (into `sums`, if any)
  void backward_tile(int64_t b, Scratch& s, T* gin, double* sums) const {
    locate(b, s);
    const int64_t n = s.tile.pixels();
    const S* in = static_cast<const S*>(call.input) + b * call.channels * in_plane;
    const S* gout = static_cast<const S*>(call.grad_output) + b * call.channels * out_plane +
                    tile_offset(s.tile);
    const bool to_point = sums && Sampler<T>::differentiable;
    if (to_point)
      for (int c = 0; c < Scratch::corners; ++c) std::fill(s.tap_sums[c], s.tap_sums[c] + n, T(0));
    const ImagePlanes<S, T> planes{in, nullptr, gout, gin, call.channels, in_plane, out_plane};
    s.taps.backward(planes, n, to_point ? s.tap_sums : nullptr);
    if (!sums) return;
    if constexpr (Sampler<T>::differentiable) {
      s.taps.gradient(s.tap_sums, n, s.grad);
    } else {  // nearest: dL/d(source point) = 0, through the transform (see backward())
      for (int d = 0; d < Scratch::dims; ++d) std::fill(s.grad[d], s.grad[d] + n, T(0));
    }
    family(b).accumulate(s.tile, s.grad, sums);
  }

  std::vector<Item> forward_items() const;
  std::vector<Item> backward_items(int64_t& private_buffers) const;
  void forward() const;
  void backward() const;
};

// Items for the forward, and for a backward without grad_input (any cut is race-free):
// (image, group) pairs; a thin-plate spline takes several images per item, which share the
// tile's basis.
template <class S, class T, template <class> class F, template <class> class M>
std::vector<Item> Warp<S, T, F, M>::forward_items() const {
  const int64_t B = call.batch, G = tiling.groups();
  std::vector<Item> items;
  if (F<T>::uses_basis) {
    const int64_t want = 4 * int64_t(call.threads);
    const int64_t per = std::max<int64_t>(1, B * G / want);
    for (int64_t g = 0; g < G; ++g)
      for (int64_t b = 0; b < B; b += per) items.push_back({b, std::min(B, b + per), g, g + 1, -1});
  } else {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t g = 0; g < G; ++g) items.push_back({b, b + 1, g, g + 1, -1});
  }
  return items;
}

// Items for a backward with grad_input: whole images (each item writes its own images
// only), or, with fewer images than threads and no determinism asked for, row-group chunks
// of an image whose first chunk writes the image and the others private buffers.
template <class S, class T, template <class> class F, template <class> class M>
std::vector<Item> Warp<S, T, F, M>::backward_items(int64_t& private_buffers) const {
  const int64_t B = call.batch, G = tiling.groups(), threads = call.threads;
  std::vector<Item> items;
  private_buffers = 0;
  if (call.deterministic || B >= threads || G == 1) {
    const int64_t per = F<T>::uses_basis ? std::max<int64_t>(1, B / (4 * threads)) : 1;
    for (int64_t b = 0; b < B; b += per) items.push_back({b, std::min(B, b + per), 0, G, -1});
    return items;
  }
  const int64_t chunks = std::min(G, (threads + B - 1) / B);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = 0; k < chunks; ++k)
      items.push_back({b, b + 1, k * G / chunks, (k + 1) * G / chunks,
                       k == 0 ? -1 : private_buffers++});
  return items;
}

template <class S, class T, template <class> class F, template <class> class M>
void Warp<S, T, F, M>::forward() const {
  const std::vector<Item> items = forward_items();
  const int threads = int(std::max<int64_t>(1, std::min<int64_t>(call.threads, items.size())));
  std::vector<Scratch> scratch(threads, Scratch(call.control_points));
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t n = 0; n < int64_t(items.size()); ++n) {
    Scratch& s = scratch[omp_get_thread_num()];
    walk(items[n], s, [&](int64_t b, int64_t) { forward_tile(b, s); });
  }
}

template <class S, class T, template <class> class F, template <class> class M>
void Warp<S, T, F, M>::backward() const {
  const int64_t B = call.batch, G = tiling.groups(), C = call.channels;
  int64_t n_private = 0;
  const bool need_input = call.need_input != 0;
  const std::vector<Item> items = need_input ? backward_items(n_private) : forward_items();
  const int threads = int(std::max<int64_t>(1, std::min<int64_t>(call.threads, items.size())));
  std::vector<Scratch> scratch(threads, Scratch(call.control_points));
  // nearest too: its zero dL/d(X, Y) times the transform's derivative, which is NaN where
  // the torch path's is (a homography's 0 * Inf)
  const bool need_theta = call.need_theta != 0;
  std::vector<double> sums(need_theta ? size_t(B * G * P) : 0, 0.0);  // (B, G, P)
  const int64_t image = C * in_plane;
  std::unique_ptr<T[]> priv(n_private ? new T[size_t(n_private * image)] : nullptr);
  T* gin = static_cast<T*>(call.grad_input);
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t n = 0; n < int64_t(items.size()); ++n) {
    const Item& it = items[n];
    Scratch& s = scratch[omp_get_thread_num()];
    T* target = nullptr;
    if (need_input && it.buffer >= 0) {
      target = priv.get() + it.buffer * image;
      std::fill(target, target + image, T(0));
    }
    walk(it, s, [&](int64_t b, int64_t g) {
      T* g_image = !need_input ? nullptr : (target ? target : gin + b * image);
      backward_tile(b, s, g_image, need_theta ? sums.data() + (b * G + g) * P : nullptr);
    });
  }
  if (n_private) {  // grad_input[b] += private buffers of b, in item order
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (const Item& it : items)
        if (it.b0 == b && it.buffer >= 0) {
          const T* p = priv.get() + it.buffer * image;
          T* d = gin + b * image;
          for (int64_t e = 0; e < image; ++e) d[e] += p[e];
        }
  }
  if (need_theta)  // grad_theta[b] = sum over the groups, in order
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = 0; p < P; ++p) {
        double acc = 0.0;
        for (int64_t g = 0; g < G; ++g) acc += sums[size_t((b * G + g) * P + p)];
        call.grad_theta[b * P + p] = acc;
      }
}

// ---------------------------------------------------------------------------------------
// Dispatch: storage x compute type x transform family x sampler
// ---------------------------------------------------------------------------------------

template <class S, class T, template <class> class F, template <class> class Linear,
          template <class> class Nearest>
int run_sampler(const WarpCall& c, bool backward) {
  if (Mode(c.mode) == Mode::bilinear) {
    Warp<S, T, F, Linear> w(c);
    backward ? w.backward() : w.forward();
  } else if (Mode(c.mode) == Mode::nearest) {
    Warp<S, T, F, Nearest> w(c);
    backward ? w.backward() : w.forward();
  } else {
    return 2;
  }
  return 0;
}

template <class S, class T> int run_family(const WarpCall& c, bool backward) {
  switch (Transform(c.transform)) {
    case Transform::affine: return run_sampler<S, T, Affine, Bilinear, Nearest>(c, backward);
    case Transform::projective:
      return run_sampler<S, T, Projective, Bilinear, Nearest>(c, backward);
    case Transform::tps: return run_sampler<S, T, ThinPlateSpline, Bilinear, Nearest>(c, backward);
    case Transform::affine3d:
      return run_sampler<S, T, Affine3D, Trilinear, Nearest3D>(c, backward);
  }
  return 2;
}

template <class S> int run_compute(const WarpCall& c, bool backward) {
  if (DType(c.compute) == DType::float64) return run_family<S, double>(c, backward);
  if (DType(c.compute) == DType::float32 && DType(c.storage) != DType::float64)
    return run_family<S, float>(c, backward);
  return 1;  // float64 images are computed in float64
}

int run(const WarpCall& c, bool backward) {
  if (c.padding < 0 || c.padding > 2) return 2;
  try {
    switch (DType(c.storage)) {
      case DType::float32: return run_compute<float>(c, backward);
      case DType::float64: return run_compute<double>(c, backward);
      case DType::float16: return run_compute<Half>(c, backward);
      case DType::bfloat16: return run_compute<BFloat16>(c, backward);
    }
  } catch (const std::bad_alloc&) {
    return 3;
  }
  return 1;
}

}  // namespace stnkit

// The library's interface (built with -fvisibility=hidden: nothing else is exported).
// Return codes: 0 done, 1 unsupported dtypes, 2 bad option, 3 out of memory.
#define STNKIT_EXPORT extern "C" __attribute__((visibility("default")))
STNKIT_EXPORT int64_t stnkit_warp_call_size() { return int64_t(sizeof(stnkit::WarpCall)); }
STNKIT_EXPORT int stnkit_warp_forward(const stnkit::WarpCall* call) {
  return stnkit::run(*call, false);
}
STNKIT_EXPORT int stnkit_warp_backward(const stnkit::WarpCall* call) {
  return stnkit::run(*call, true);
}
