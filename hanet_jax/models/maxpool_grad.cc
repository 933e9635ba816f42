// The gradient of the stem's 3x3, stride-2, VALID max-pool (NHWC) as an XLA FFI handler: each
// output's gradient goes to the first maximal input of its window in row-major order, as XLA's
// select-and-scatter with `ge` (JAX's max-pool gradient) routes it. XLA:CPU runs that as a
// reduce-window over four index arrays and a scatter (docs/performance.md, round 14).
#include <cstdint>
#include <cstring>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

static ffi::Error MaxPoolGradImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy,
                                  ffi::ResultBuffer<ffi::F32> dx) {
  auto xd = x.dimensions(), yd = dy.dimensions();
  if (xd.size() != 4 || yd.size() != 4) return ffi::Error::InvalidArgument("need NHWC operands");
  const int64_t b = xd[0], hi = xd[1], wi = xd[2], c = xd[3], h = yd[1], w = yd[2];
  if (yd[0] != b || yd[3] != c || h != (hi - 3) / 2 + 1 || w != (wi - 3) / 2 + 1)
    return ffi::Error::InvalidArgument("dy is not the 3x3/2 VALID pool's shape of x");
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
