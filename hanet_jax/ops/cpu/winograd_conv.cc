// On the CPU, the 3x3, stride-1, SAME conv (NHWC input) as Winograd F(m x m, 3 x 3), m = 2 or 4,
// in an XLA FFI handler: it runs inside XLA on its buffers (hanet_jax/models/winograd.py). The
// HWIO kernel is transformed first, U (A*A, C, F) with A = m + 2. Then per band of tiles, across
// the images:
//   1. V[p][t][c]: the input transform of each tile's (A x A) patch, zero outside the image;
//   2. M[p] = V[p] @ U[p], one GEMM per point p, in a register-tiled loop;
//   3. the output transform of each tile's M into its m x m outputs.
// F(4x4, 3x3) does 36 multiplications per 16 outputs where the direct conv does 144: on this
// machine the direct conv already runs near the matmul peak, so fewer FLOPs is what is left
// (docs/performance.md, round 15). All in explicit vectors of the target's width, over channels.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

#if defined(__AVX512F__)
constexpr int kW = 16, kRegs = 32;
#elif defined(__AVX__)
constexpr int kW = 8, kRegs = 16;
#else
constexpr int kW = 4, kRegs = 16;
#endif
typedef float Vec __attribute__((vector_size(kW * 4)));
typedef float VecU __attribute__((vector_size(kW * 4), aligned(4), may_alias));  // any float*

static inline Vec Load(const float* p) { return *reinterpret_cast<const VecU*>(p); }
static inline void Store(float* p, Vec v) { *reinterpret_cast<VecU*>(p) = v; }

// Per-thread buffers kept across calls (each XLA device runs on its own thread): fresh ones cost
// page faults on every call.
enum Slot { kU, kV, kM, kFlip, kSlots };
static float* Scratch(Slot slot, size_t n) {
  thread_local std::vector<float> buffers[kSlots];
  if (buffers[slot].size() < n) buffers[slot].resize(n);
  return buffers[slot].data();
}

// The 1-D transforms of F(m, 3): In (B^T d, A values), Out (A^T m, A -> m values) and Kernel
// (G g, 3 -> A values). Lavin & Gray (2016), points 0, +-1 (and +-2 for m = 4).
template <int M>
struct Wino;

template <>
struct Wino<2> {
  static constexpr int A = 4;
  static inline void In(const Vec* d, Vec* o) {
    o[0] = d[0] - d[2];
    o[1] = d[1] + d[2];
    o[2] = d[2] - d[1];
    o[3] = d[1] - d[3];
  }
  static inline void Out(const Vec* m, Vec* y) {
    y[0] = m[0] + m[1] + m[2];
    y[1] = m[1] - m[2] - m[3];
  }
  static inline void Kernel(const Vec* g, Vec* o) {
    o[0] = g[0];
    o[1] = 0.5f * (g[0] + g[1] + g[2]);
    o[2] = 0.5f * (g[0] - g[1] + g[2]);
    o[3] = g[2];
  }
};

template <>
struct Wino<4> {
  static constexpr int A = 6;
  static inline void In(const Vec* d, Vec* o) {
    const Vec a = d[4] - 4.0f * d[2], b = d[3] - 4.0f * d[1];
    const Vec e = d[4] - d[2], g = 2.0f * (d[3] - d[1]);
    o[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    o[1] = a + b;
    o[2] = a - b;
    o[3] = e + g;
    o[4] = e - g;
    o[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
  }
  static inline void Out(const Vec* m, Vec* y) {
    const Vec s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    y[0] = m[0] + s12 + s34;
    y[1] = d12 + 2.0f * d34;
    y[2] = s12 + 4.0f * s34;
    y[3] = d12 + 8.0f * d34 + m[5];
  }
  static inline void Kernel(const Vec* g, Vec* o) {
    const Vec s02 = g[0] + g[2], s04 = g[0] + 4.0f * g[2];
    o[0] = 0.25f * g[0];
    o[1] = (-1.0f / 6.0f) * (s02 + g[1]);
    o[2] = (-1.0f / 6.0f) * (s02 - g[1]);
    o[3] = (1.0f / 24.0f) * (s04 + 2.0f * g[1]);
    o[4] = (1.0f / 24.0f) * (s04 - 2.0f * g[1]);
    o[5] = g[2];
  }
};

// out (rows x n) = a (rows x k) @ b (k x n), rows a multiple of MR, n of NV vectors. The B panel
// (k x NV vectors) stays in L1 across the row groups; MR x NV accumulators stay in registers.
template <int MR, int NV>
static void Gemm(const float* a, const float* b, float* out, int64_t rows, int64_t k, int64_t n) {
  for (int64_t n0 = 0; n0 < n; n0 += NV * kW)
    for (int64_t r0 = 0; r0 < rows; r0 += MR) {
      Vec acc[MR][NV] = {};
      const float* ar = a + r0 * k;
      for (int64_t kk = 0; kk < k; ++kk) {
        Vec bv[NV];
        for (int v = 0; v < NV; ++v) bv[v] = Load(b + kk * n + n0 + v * kW);
        for (int r = 0; r < MR; ++r) {
          const float av = ar[r * k + kk];
          for (int v = 0; v < NV; ++v) acc[r][v] += av * bv[v];
        }
      }
      for (int r = 0; r < MR; ++r)
        for (int v = 0; v < NV; ++v) Store(out + (r0 + r) * n + n0 + v * kW, acc[r][v]);
    }
}

// The row tile at n outputs: MR x NV accumulators plus NV operands and a broadcast in registers.
constexpr int kMR2 = (kRegs - 3) / 2, kMR1 = kRegs - 4;

// With `scale` and `shift` (per input channel; else null), the conv of relu(x * scale + shift):
// a BatchNorm + ReLU applied as the input is read, so its output is never written (round 16).
template <int M>
static void Conv(const float* x, const float* u, float* y, int64_t b, int64_t h, int64_t w,
                 int64_t c, int64_t f, int64_t band_bytes, int64_t l3_bytes,
                 const float* scale = nullptr, const float* shift = nullptr) {
  using W = Wino<M>;
  constexpr int A = W::A, P = A * A;
  const bool wide = f % (2 * kW) == 0;
  const int64_t mr = wide ? kMR2 : kMR1;
  const int64_t tw = w / M, per_image = (h / M) * tw, tiles = b * per_image;
  // Tiles per band, across images: V and M of a band in ~band_bytes (L2). U (P*c*f) is read once
  // per band: from L3 where it fits in l3_bytes, else from memory, so then one band of all tiles.
  int64_t band = std::max<int64_t>(1, band_bytes / (P * (c + f) * 4));
  band = std::max(mr, band / mr * mr);  // whole row groups: a band of 45 tiles ran 56 GEMM rows
  if (P * c * f * 4 > l3_bytes) band = tiles;
  band = std::min(band, tiles);
  const int64_t rows = (band + mr - 1) / mr * mr;
  float* V = Scratch(kV, P * rows * c);
  float* Mt = Scratch(kM, P * rows * f);
  // Tile t: image t / per_image, its top-left output pixel (y0, x0) (and flat offset of pixel 0).
  auto where = [&](int64_t t, int64_t& y0, int64_t& x0) {
    const int64_t i = t % per_image;
    y0 = i / tw * M;
    x0 = i % tw * M;
    return (t / per_image) * h * w;
  };
  for (int64_t t0 = 0; t0 < tiles; t0 += band) {
    const int64_t nt = std::min(band, tiles - t0);
    for (int p = 0; p < P && nt < rows; ++p)  // rows past the band's tiles: zeros
      std::memset(V + (p * rows + nt) * c, 0, (rows - nt) * c * sizeof(float));
    for (int64_t t = 0; t < nt; ++t) {  // 1. input transform
      int64_t y0, x0;
      const float* xi = x + where(t0 + t, y0, x0) * c;
      y0 -= 1;
      x0 -= 1;
      // Which patch rows and columns lie in the image (all of them but at the borders).
      bool in_y[A], in_x[A];
      for (int i = 0; i < A; ++i) in_y[i] = y0 + i >= 0 && y0 + i < h;
      for (int j = 0; j < A; ++j) in_x[j] = x0 + j >= 0 && x0 + j < w;
      const bool inside = in_y[0] && in_y[A - 1] && in_x[0] && in_x[A - 1];
      const int64_t patch = (y0 * w + x0) * c;  // may be negative at the borders: offsets only
      for (int64_t c0 = 0; c0 < c; c0 += kW) {
        Vec d[A][A], r[A][A], col[A], o[A];
        if (inside) {
          for (int i = 0; i < A; ++i)
            for (int j = 0; j < A; ++j) d[i][j] = Load(xi + (patch + (i * w + j) * c + c0));
        } else {
          for (int i = 0; i < A; ++i)
            for (int j = 0; j < A; ++j)
              d[i][j] = in_y[i] && in_x[j] ? Load(xi + (patch + (i * w + j) * c + c0)) : Vec{};
        }
        if (scale) {  // the padding stays 0: it pads the activated map
          const Vec s = Load(scale + c0), sh = Load(shift + c0), zero = {};
          for (int i = 0; i < A; ++i)
            for (int j = 0; j < A; ++j)
              if (inside || (in_y[i] && in_x[j])) {
                const Vec v = d[i][j] * s + sh;
                d[i][j] = v < zero ? zero : v;  // NaN stays NaN, as jnp.maximum(v, 0)
              }
        }
        for (int j = 0; j < A; ++j) {  // B^T d, column by column
          for (int i = 0; i < A; ++i) col[i] = d[i][j];
          W::In(col, o);
          for (int i = 0; i < A; ++i) r[i][j] = o[i];
        }
        for (int i = 0; i < A; ++i) {  // (B^T d) B, row by row
          W::In(r[i], o);
          for (int j = 0; j < A; ++j) Store(&V[((i * A + j) * rows + t) * c + c0], o[j]);
        }
      }
    }
    for (int p = 0; p < P; ++p) {  // 2. one GEMM per point
      if (wide)
        Gemm<kMR2, 2>(V + p * rows * c, u + p * c * f, Mt + p * rows * f, rows, c, f);
      else
        Gemm<kMR1, 1>(V + p * rows * c, u + p * c * f, Mt + p * rows * f, rows, c, f);
    }
    for (int64_t t = 0; t < nt; ++t) {  // 3. output transform
      int64_t y0, x0;
      float* yi = y + where(t0 + t, y0, x0) * f;
      for (int64_t f0 = 0; f0 < f; f0 += kW) {
        Vec r[M][A], col[A], o[A];
        for (int j = 0; j < A; ++j) {  // A^T m, column by column
          for (int i = 0; i < A; ++i) col[i] = Load(&Mt[((i * A + j) * rows + t) * f + f0]);
          W::Out(col, o);
          for (int i = 0; i < M; ++i) r[i][j] = o[i];
        }
        for (int i = 0; i < M; ++i) {  // (A^T m) A, row by row
          W::Out(r[i], o);
          for (int j = 0; j < M; ++j) Store(yi + ((y0 + i) * w + x0 + j) * f + f0, o[j]);
        }
      }
    }
  }
}

// U[p][c][f] = (G g G^T)[p] for the kernel g = k[:, :, c, f] (HWIO), vectors over f. With `flip`,
// the kernel of the input gradient instead: k'[i][j][f][c] = k[2-i][2-j][c][f], so U is (P, F, C).
template <int M>
static void Weights(const float* k, float* u, int64_t c, int64_t f, bool flip) {
  using W = Wino<M>;
  constexpr int A = W::A;
  if (flip) {  // k' as HWIO (3, 3, f, c)
    float* t = Scratch(kFlip, 9 * c * f);
    for (int tap = 0; tap < 9; ++tap)
      for (int64_t ci = 0; ci < c; ++ci)
        for (int64_t fi = 0; fi < f; ++fi) t[(tap * f + fi) * c + ci] = k[((8 - tap) * c + ci) * f + fi];
    k = t;
    std::swap(c, f);
  }
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t f0 = 0; f0 < f; f0 += kW) {
      Vec g[3][3], r[A][3], col[3], o[A];
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j) g[i][j] = Load(k + ((i * 3 + j) * c + ci) * f + f0);
      for (int j = 0; j < 3; ++j) {  // G g, column by column
        for (int i = 0; i < 3; ++i) col[i] = g[i][j];
        W::Kernel(col, o);
        for (int i = 0; i < A; ++i) r[i][j] = o[i];
      }
      for (int i = 0; i < A; ++i) {  // (G g) G^T, row by row
        W::Kernel(r[i], o);
        for (int j = 0; j < A; ++j) Store(u + ((i * A + j) * c + ci) * f + f0, o[j]);
      }
    }
}

// y = the conv of x with the 3x3 HWIO kernel k, or with `flip` with k' (the input gradient's
// conv; k is then (3, 3, F, C)); with `scale` and `shift`, of relu(x * scale + shift). The
// kernel is transformed here, into a per-thread buffer.
static ffi::Error Run(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k, ffi::ResultBuffer<ffi::F32> y,
                      int64_t m, bool flip, int64_t band_bytes, int64_t l3_bytes,
                      const float* scale = nullptr, const float* shift = nullptr) {
  auto xd = x.dimensions(), kd = k.dimensions();
  if (xd.size() != 4 || kd.size() != 4 || kd[0] != 3 || kd[1] != 3)
    return ffi::Error::InvalidArgument("need NHWC x and a 3x3 HWIO kernel");
  const int64_t b = xd[0], h = xd[1], w = xd[2], c = xd[3], f = flip ? kd[2] : kd[3];
  if ((m != 2 && m != 4) || (flip ? kd[3] : kd[2]) != c)
    return ffi::Error::InvalidArgument("m must be 2 or 4, and the kernel must fit x");
  if (h % m || w % m || c % kW || f % kW)
    return ffi::Error::InvalidArgument("H, W need multiples of m; C, F of the vector width");
  const int64_t p = (m + 2) * (m + 2);
  float* u = Scratch(kU, p * c * f);
  if (m == 2) {
    Weights<2>(k.typed_data(), u, kd[2], kd[3], flip);
    Conv<2>(x.typed_data(), u, y->typed_data(), b, h, w, c, f, band_bytes, l3_bytes, scale, shift);
  } else {
    Weights<4>(k.typed_data(), u, kd[2], kd[3], flip);
    Conv<4>(x.typed_data(), u, y->typed_data(), b, h, w, c, f, band_bytes, l3_bytes, scale, shift);
  }
  return ffi::Error::Success();
}

static ffi::Error ConvImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                           ffi::ResultBuffer<ffi::F32> y, int64_t m, bool flip, int64_t band_bytes,
                           int64_t l3_bytes) {
  return Run(x, k, y, m, flip, band_bytes, l3_bytes);
}

// The conv of relu(x * scale + shift) with the 3x3 HWIO kernel k (forward only: inference).
static ffi::Error ConvAffineReluImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale,
                                     ffi::Buffer<ffi::F32> shift, ffi::Buffer<ffi::F32> k,
                                     ffi::ResultBuffer<ffi::F32> y, int64_t m, int64_t band_bytes,
                                     int64_t l3_bytes) {
  const int64_t c = x.dimensions().size() == 4 ? x.dimensions()[3] : -1;
  if (scale.element_count() != c || shift.element_count() != c)
    return ffi::Error::InvalidArgument("scale and shift need one value per input channel of NHWC x");
  return Run(x, k, y, m, false, band_bytes, l3_bytes, scale.typed_data(), shift.typed_data());
}

// The vector width the handler was built for: C and F must be multiples of it.
extern "C" int64_t VectorWidth() { return kW; }

XLA_FFI_DEFINE_HANDLER_SYMBOL(WinogradConv, ConvImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("m")
                                  .Attr<bool>("flip")
                                  .Attr<int64_t>("band_bytes")
                                  .Attr<int64_t>("l3_bytes"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(WinogradConvAffineRelu, ConvAffineReluImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("m")
                                  .Attr<int64_t>("band_bytes")
                                  .Attr<int64_t>("l3_bytes"));
