// The stem's 3x3, stride-2, VALID max-pool (NHWC) and its gradient as XLA FFI handlers. The
// forward is the window's maximum, NaN if any input is (as XLA's max); XLA:CPU ran it as a
// scalar reduce-window, ~6x slower (docs/performance.md, round 15). In the gradient each
// output's gradient goes to the first maximal input of its window in row-major order, as XLA's
// select-and-scatter with `ge` (JAX's max-pool gradient) routes it. XLA:CPU runs that as a
// reduce-window over four index arrays and a scatter (round 14).
#include <cmath>
#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// The output shape's check all make, for x padded by `pad` ('' when it passes).
static const char* BadShapes(ffi::Span<const int64_t> xd, ffi::Span<const int64_t> yd, int64_t pad = 0) {
  if (xd.size() != 4 || yd.size() != 4) return "need NHWC operands";
  if (yd[0] != xd[0] || yd[3] != xd[3] || yd[1] != (xd[1] + 2 * pad - 3) / 2 + 1 ||
      yd[2] != (xd[2] + 2 * pad - 3) / 2 + 1)
    return "the output is not the 3x3/2 pool's shape of x (padded as the target pads it)";
  return "";
}

// out = the 3x3, stride-2 pool of x padded by `pad`, each window's max starting from `floor` over
// the taps inside x: -inf for the plain pool; 0 for the pool of relu(x) zero-padded, which is
// max(0, the in-image window) since ReLU is monotone. NaN propagates, as through XLA's max.
static void Pool(const float* xs, float* out, int64_t b, int64_t hi, int64_t wi, int64_t c, int64_t h,
                 int64_t w, int64_t pad, float floor) {
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        float* o = out + ((bi * h + i) * w + j) * c;
        for (int64_t ch = 0; ch < c; ++ch) o[ch] = floor;
        for (int64_t r = 2 * i - pad; r <= 2 * i - pad + 2; ++r)
          for (int64_t q = 2 * j - pad; q <= 2 * j - pad + 2; ++q) {
            if (r < 0 || r >= hi || q < 0 || q >= wi) continue;
            const float* v = xs + ((bi * hi + r) * wi + q) * c;
            for (int64_t ch = 0; ch < c; ++ch) o[ch] = (v[ch] > o[ch] || v[ch] != v[ch]) ? v[ch] : o[ch];
          }
      }
}

static ffi::Error MaxPoolImpl(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions(), yd = y->dimensions();
  if (const char* bad = BadShapes(xd, yd); *bad) return ffi::Error::InvalidArgument(bad);
  Pool(x.typed_data(), y->typed_data(), xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], 0, -INFINITY);
  return ffi::Error::Success();
}

// The pool of relu(x) zero-padded by 1 (the stem's ReLU, ZeroPadding2D(1) and pool), so the
// padded ReLU map is never written (round 16).
static ffi::Error MaxPoolOfReluImpl(ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions(), yd = y->dimensions();
  if (const char* bad = BadShapes(xd, yd, 1); *bad) return ffi::Error::InvalidArgument(bad);
  Pool(x.typed_data(), y->typed_data(), xd[0], xd[1], xd[2], xd[3], yd[1], yd[2], 1, 0.0f);
  return ffi::Error::Success();
}

static ffi::Error MaxPoolGradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                  ffi::ResultBuffer<ffi::F32> dx) {
  auto xd = x.dimensions(), yd = dy.dimensions();
  if (const char* bad = BadShapes(xd, yd); *bad) return ffi::Error::InvalidArgument(bad);
  const int64_t b = xd[0], hi = xd[1], wi = xd[2], c = xd[3], h = yd[1], w = yd[2];
  const float* xs = x.typed_data();
  const float* g = dy.typed_data();
  float* out = dx->typed_data();
  std::memset(out, 0, b * hi * wi * c * sizeof(float));
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const int64_t base = ((bi * hi + 2 * i) * wi + 2 * j) * c;
        const float* gv = g + ((bi * h + i) * w + j) * c;
        for (int64_t ch = 0; ch < c; ++ch) {
          int64_t best = base + ch;  // strictly greater replaces it: the first maximum wins
          for (int di = 0; di < 3; ++di)
            for (int dj = 0; dj < 3; ++dj) {
              const int64_t k = base + (di * wi + dj) * c + ch;
              if (xs[k] > xs[best]) best = k;
            }
          out[best] += gv[ch];
        }
      }
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(MaxPoolGrad, MaxPoolGradImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MaxPool, MaxPoolImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(MaxPoolOfRelu, MaxPoolOfReluImpl,
                              ffi::Ffi::Bind().Arg<ffi::Buffer<ffi::F32>>().Ret<ffi::Buffer<ffi::F32>>());
