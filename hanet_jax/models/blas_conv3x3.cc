// On the CPU, the weight gradient of a 3x3, stride-1, SAME conv (NHWC input, HWIO kernel) as
// nine GEMMs with no im2col copy (hanet_jax/models/blas_conv.py explains the indexing), as an
// XLA FFI handler: it runs inside XLA on its buffers. The GEMM is the cblas_sgemm of an
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

// For 32 outputs OpenBLAS runs these long, thin GEMMs at ~50-65 GFLOP/s; this loop, built with
// -march=native, runs at ~110-160 (docs/performance.md, round 11). out (c x 32) += the sum over
// `rows` grid rows of xr[r]^T dg[r], a block of 8 input channels at a time kept in registers.
constexpr int kNarrowF = 32, kNarrowCB = 8;

static void NarrowTap(const float* xr, const float* dg, int64_t rows, int64_t c, float* out) {
  for (int64_t c0 = 0; c0 < c; c0 += kNarrowCB) {
    float acc[kNarrowCB][kNarrowF] = {};
    for (int64_t r = 0; r < rows; ++r) {
      const float* xv = xr + r * c + c0;
      const float* g = dg + r * kNarrowF;
      for (int cb = 0; cb < kNarrowCB; ++cb)
        for (int j = 0; j < kNarrowF; ++j) acc[cb][j] += xv[cb] * g[j];
    }
    for (int cb = 0; cb < kNarrowCB; ++cb)
      for (int j = 0; j < kNarrowF; ++j) out[(c0 + cb) * kNarrowF + j] += acc[cb][j];
  }
}

static ffi::Error WeightGradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                 ffi::ResultBuffer<ffi::F32> dk, int64_t narrow) {
  if (sgemm == nullptr) return ffi::Error::InvalidArgument("SetSgemm was not called");
  auto xd = x.dimensions(), yd = dy.dimensions();
  if (xd.size() != 4 || yd.size() != 4) return ffi::Error::InvalidArgument("need NHWC operands");
  const int64_t b = xd[0], h = xd[1], w = xd[2], c = xd[3], f = yd[3];
  const int64_t gw = w + 2, n = b * (h + 2) * gw, extra = 2 * gw + 2;
  // Input padded by one pixel, as rows of c; dy on the same grid, zero outside the image.
  std::vector<float> xr = PaddedRows(x.typed_data(), b, h, w, c, extra), dg(n * f, 0.0f);
  const float* ys = dy.typed_data();
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi)
      std::memcpy(&dg[((bi * (h + 2) + hi) * gw) * f], ys + ((bi * h + hi) * w) * f,
                  w * f * sizeof(float));
  float* out = dk->typed_data();
  if (narrow && f == kNarrowF && c % kNarrowCB == 0) {
    // Row blocks of ~256 KB stay in cache across the nine taps.
    std::memset(out, 0, 9 * c * f * sizeof(float));
    const int64_t block = std::max<int64_t>(64, (256 * 1024) / ((c + f) * 4));
    for (int64_t r0 = 0; r0 < n; r0 += block)
      for (int i = 0; i < 3; ++i)
        for (int j = 0; j < 3; ++j)
          NarrowTap(&xr[(r0 + i * gw + j) * c], &dg[r0 * f], std::min(block, n - r0), c,
                    out + (i * 3 + j) * c * f);
    return ffi::Error::Success();
  }
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) {
      const int64_t off = i * gw + j;
      // dk[i, j] (c x f) = X[off : off + n]^T (c x n) @ dg (n x f)
      sgemm(kRowMajor, kTrans, kNoTrans, c, f, n, 1.0f, &xr[off * c], c, dg.data(), f, 0.0f,
            out + (i * 3 + j) * c * f, f);
    }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(WeightGrad, WeightGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("narrow"));
