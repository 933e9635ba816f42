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

// Grid lines [g0, g0 + lines) of an image batch (b, h, w, ch) laid on the padded grid of
// b * (h + 2) lines of (w + 2) rows of ch: image row `hi` goes to line hi + top of its image,
// starting at column `left`; everything else, and lines past the grid, is zero.
static void FillLines(const float* src, int64_t b, int64_t h, int64_t w, int64_t ch, int64_t top,
                      int64_t left, int64_t g0, int64_t lines, float* dst) {
  const int64_t gw = w + 2, line = gw * ch;
  std::memset(dst, 0, lines * line * sizeof(float));
  for (int64_t g = g0; g < std::min(g0 + lines, b * (h + 2)); ++g) {
    const int64_t bi = g / (h + 2), hi = g % (h + 2) - top;
    if (hi < 0 || hi >= h) continue;
    std::memcpy(dst + (g - g0) * line + left * ch, src + ((bi * h + hi) * w) * ch,
                w * ch * sizeof(float));
  }
}

// dK[i, j] (c x f) = sum over grid rows r of X[r + i * gw + j]^T dY[r], where X is the input
// padded by one pixel (data from line 1, column 1) and dY the output gradient on the same grid
// (data from line 0, column 0). The rows are taken in blocks of whole grid lines, each about
// `block_bytes` of X and dY together, so the nine GEMMs of a block read it from cache rather
// than memory (block_bytes <= 0: one block).
static ffi::Error WeightGradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                 ffi::ResultBuffer<ffi::F32> dk, int64_t block_bytes) {
  if (sgemm == nullptr) return ffi::Error::InvalidArgument("SetSgemm was not called");
  auto xd = x.dimensions(), yd = dy.dimensions();
  if (xd.size() != 4 || yd.size() != 4) return ffi::Error::InvalidArgument("need NHWC operands");
  const int64_t b = xd[0], h = xd[1], w = xd[2], c = xd[3], f = yd[3];
  const int64_t gw = w + 2, total = b * (h + 2);
  const int64_t per_line = gw * (c + f) * static_cast<int64_t>(sizeof(float));
  const int64_t lines = block_bytes <= 0 ? total
                                         : std::clamp<int64_t>(block_bytes / per_line, 1, total);
  // X needs three more lines than dY: the taps reach two lines and two rows further.
  std::vector<float> xs((lines + 3) * gw * c), gs(lines * gw * f);
  float* out = dk->typed_data();
  for (int64_t g0 = 0; g0 < total; g0 += lines) {
    const int64_t n = std::min(lines, total - g0) * gw;
    FillLines(x.typed_data(), b, h, w, c, 1, 1, g0, lines + 3, xs.data());
    FillLines(dy.typed_data(), b, h, w, f, 0, 0, g0, lines, gs.data());
    const float beta = g0 == 0 ? 0.0f : 1.0f;
    for (int i = 0; i < 3; ++i)
      for (int j = 0; j < 3; ++j)
        sgemm(kRowMajor, kTrans, kNoTrans, c, f, n, 1.0f, &xs[(i * gw + j) * c], c, gs.data(), f,
              beta, out + (i * 3 + j) * c * f, f);
  }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(WeightGrad, WeightGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("block_bytes"));
