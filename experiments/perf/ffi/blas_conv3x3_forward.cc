// Round 7's experiment (experiments/perf/_blas_ffi.py): the 3x3 SAME conv's forward as nine
// row-offset GEMMs accumulated in place. Appended to hanet_jax/ops/cpu/conv_weight_grad.cc (its
// sgemm pointer and PaddedRows) before building. Slower than XLA's forward: not in the model.

static ffi::Error ForwardImpl(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> k,
                              ffi::ResultBuffer<ffi::F32> y) {
  if (sgemm == nullptr) return ffi::Error::InvalidArgument("SetSgemm was not called");
  auto xd = x.dimensions(), kd = k.dimensions();
  if (xd.size() != 4 || kd.size() != 4) return ffi::Error::InvalidArgument("need NHWC, HWIO");
  const int64_t b = xd[0], h = xd[1], w = xd[2], c = xd[3], f = kd[3];
  const int64_t gw = w + 2, n = b * (h + 2) * gw;
  std::vector<float> xr = PaddedRows(x.typed_data(), b, h, w, c, 2 * gw + 2);
  std::vector<float> yg(n * f, 0.0f);
  const float* kern = k.typed_data();
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j)  // y_grid += X[off : off + n] (n x c) @ k[i, j] (c x f)
      sgemm(kRowMajor, kNoTrans, kNoTrans, n, f, c, 1.0f, &xr[(i * gw + j) * c], c,
            kern + (i * 3 + j) * c * f, f, 1.0f, yg.data(), f);
  float* out = y->typed_data();
  for (int64_t bi = 0; bi < b; ++bi)
    for (int64_t hi = 0; hi < h; ++hi)
      std::memcpy(out + ((bi * h + hi) * w) * f, &yg[((bi * (h + 2) + hi) * gw) * f],
                  w * f * sizeof(float));
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(Forward, ForwardImpl,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
