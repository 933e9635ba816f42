// On the CPU, the weight gradients of a 3x3, stride-1, SAME conv (NHWC input, HWIO kernel: nine
// row-offset products with no im2col copy; hanet_jax/models/blas_conv.py explains the indexing)
// and of a 1x1 conv (one product), as XLA FFI handlers: they run inside XLA on its buffers. Each
// product runs in our register-tiled loop where it tiles, else as a GEMM: the cblas_sgemm of an
// OpenBLAS already loaded in the process (scipy's), handed over by SetSgemm, so nothing is
// linked at build time.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// cblas_sgemm(order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc)
using Sgemm = void (*)(int, int, int, int, int, int, float, const float*, int, const float*, int,
                       float, float*, int);
static Sgemm sgemm = nullptr;
constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112;

extern "C" void SetSgemm(void* fn) { sgemm = reinterpret_cast<Sgemm>(fn); }

// x (b, h, w, c) padded by one pixel, as rows of c, with `extra` zero rows at the end.
static std::vector<float> PaddedRows(const float* x, int64_t b, int64_t h, int64_t w, int64_t c,
                                     int64_t extra) {
  const int64_t gw = w + 2, n = b * (h + 2) * gw;
  std::vector<float> xr((n + extra) * c, 0.0f);
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi)
      std::memcpy(&xr[((bi * (h + 2) + hi + 1) * gw + 1) * c], x + ((bi * h + hi) * w) * c,
                  w * c * sizeof(float));
  return xr;
}

// OpenBLAS runs these long, thin GEMMs (K = the pixels) at ~20-100 GFLOP/s; this loop, built
// with -march=native, at ~130-210 on AVX-512 at most shapes (docs/performance.md, rounds 11-13).
// out (c x f) += the sum over `rows` grid rows of xr[r]^T dg[r], one tile of CB channels x V
// vectors of outputs at a time, summed in registers. Explicit vectors of the target's width:
// GCC's own vectorizing of the scalar loop permutes lanes at 16 outputs and runs 8x slower there.
#if defined(__AVX512F__)
constexpr int kW = 16;
#elif defined(__AVX__)
constexpr int kW = 8;
#else
constexpr int kW = 4;
#endif
typedef float Vec __attribute__((vector_size(kW * 4)));
typedef float VecU __attribute__((vector_size(kW * 4), aligned(4), may_alias));  // any float*

template <int CB, int V>
static void LoopTap(const float* xr, const float* dg, int64_t rows, int64_t c, int64_t f,
                    float* out) {
  for (int64_t f0 = 0; f0 < f; f0 += V * kW)
    for (int64_t c0 = 0; c0 < c; c0 += CB) {
      Vec acc[CB][V] = {};
      for (int64_t r = 0; r < rows; ++r) {
        const float* xv = xr + r * c + c0;
        const VecU* g = reinterpret_cast<const VecU*>(dg + r * f + f0);
        Vec gv[V];
        for (int v = 0; v < V; ++v) gv[v] = g[v];
        for (int cb = 0; cb < CB; ++cb)
          for (int v = 0; v < V; ++v) acc[cb][v] += xv[cb] * gv[v];
      }
      for (int cb = 0; cb < CB; ++cb)
        for (int v = 0; v < V; ++v)
          reinterpret_cast<VecU*>(out + (c0 + cb) * f + f0)[v] += acc[cb][v];
    }
}

using Tap = void (*)(const float*, const float*, int64_t, int64_t, int64_t, float*);

// The loop's tile for this shape, or nullptr for the GEMMs. loop: 0 never, 1 only at 32 outputs
// (round 11), 2 at every width it tiles (round 12). Tiles keep 16 accumulators in AVX-512's 32
// registers, 8 in AVX2's 16 (more spill: measured, round 12).
static Tap LoopFor(int64_t c, int64_t f, int64_t loop) {
  if (loop == 0 || (loop == 1 && f != 32)) return nullptr;
#if defined(__AVX512F__)
  if (f % 32 == 0 && c % 8 == 0) return LoopTap<8, 2>;
  if (f % 16 == 0 && c % 16 == 0) return LoopTap<16, 1>;
#else
  if (f % (2 * kW) == 0 && c % 4 == 0) return LoopTap<4, 2>;
#endif
  return nullptr;
}

// out[t] (c x f) = the sum over n rows of xr[r + offsets[t]]^T dg[r], for every tap t: in the loop
// where it tiles, in row blocks of ~256 KB that stay in cache across the taps; else one GEMM a
// tap.
static void TapProducts(const float* xr, const float* dg, int64_t n, int64_t c, int64_t f,
                        const std::vector<int64_t>& offsets, int64_t loop, float* out) {
  if (Tap tap = LoopFor(c, f, loop)) {
    std::memset(out, 0, offsets.size() * c * f * sizeof(float));
    const int64_t block = std::max<int64_t>(64, (256 * 1024) / ((c + f) * 4));
    for (int64_t r0 = 0; r0 < n; r0 += block)
      for (size_t t = 0; t < offsets.size(); ++t)
        tap(xr + (r0 + offsets[t]) * c, dg + r0 * f, std::min(block, n - r0), c, f, out + t * c * f);
    return;
  }
  for (size_t t = 0; t < offsets.size(); ++t)  // X[off : off + n]^T (c x n) @ dg (n x f)
    sgemm(kRowMajor, kTrans, kNoTrans, c, f, n, 1.0f, xr + offsets[t] * c, c, dg, f, 0.0f,
          out + t * c * f, f);
}

// The checks both handlers make first ('' when they pass).
static const char* BadOperands(ffi::Buffer<ffi::F32>& x, ffi::Buffer<ffi::F32>& dy) {
  if (sgemm == nullptr) return "SetSgemm was not called";
  if (x.dimensions().size() != 4 || dy.dimensions().size() != 4) return "need NHWC operands";
  return "";
}

static ffi::Error WeightGradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                 ffi::ResultBuffer<ffi::F32> dk, int64_t loop) {
  if (const char* bad = BadOperands(x, dy); *bad) return ffi::Error::InvalidArgument(bad);
  auto xd = x.dimensions(), yd = dy.dimensions();
  const int64_t b = xd[0], h = xd[1], w = xd[2], c = xd[3], f = yd[3];
  const int64_t gw = w + 2, n = b * (h + 2) * gw, extra = 2 * gw + 2;
  // Input padded by one pixel, as rows of c; dy on the same grid, zero outside the image.
  std::vector<float> xr = PaddedRows(x.typed_data(), b, h, w, c, extra), dg(n * f, 0.0f);
  const float* ys = dy.typed_data();
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi)
      std::memcpy(&dg[((bi * (h + 2) + hi) * gw) * f], ys + ((bi * h + hi) * w) * f,
                  w * f * sizeof(float));
  std::vector<int64_t> offsets;  // tap (i, j) reads grid row r + i * gw + j
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) offsets.push_back(i * gw + j);
  TapProducts(xr.data(), dg.data(), n, c, f, offsets, loop, dk->typed_data());
  return ffi::Error::Success();
}

// The 1x1 conv's weight gradient: x (n x c)^T @ dy (n x f) over all n = b*h*w pixels, read in
// place (no padding, one tap), in the loop where it tiles, else one GEMM.
static ffi::Error WeightGrad1x1Impl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                    ffi::ResultBuffer<ffi::F32> dk, int64_t loop) {
  if (const char* bad = BadOperands(x, dy); *bad) return ffi::Error::InvalidArgument(bad);
  auto xd = x.dimensions(), yd = dy.dimensions();
  TapProducts(x.typed_data(), dy.typed_data(), xd[0] * xd[1] * xd[2], xd[3], yd[3], {0}, loop,
              dk->typed_data());
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(WeightGrad1x1, WeightGrad1x1Impl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("loop"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(WeightGrad, WeightGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("loop"));
