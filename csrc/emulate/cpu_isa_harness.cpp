// Test harness for the CPU kernels' per-ISA copies (cpu_isa.h): built with csrc/lrn_cpu.cpp, csrc/pool_cpu.cpp
// and csrc/dropout_cpu.cpp as a throwaway torch extension by tests/test_cpu_isa.py, it runs the LRN, max-pool,
// fused ReLU -> LRN -> max-pool and dropout kernels compiled for a named ISA -- each one this CPU supports -- so
// that every copy, not only the one the CPU would pick, is checked.
// The library's own entry points never take an ISA: they pass best_cpu_isa().
#include <torch/extension.h>

#include "dropout.h"
#include "lrn.h"
#include "pool.h"

namespace {

ak::DType dtype_of(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return ak::DType::kFloat;
    case at::kDouble: return ak::DType::kDouble;
    case at::kHalf: return ak::DType::kHalf;
    case at::kBFloat16: return ak::DType::kBFloat16;
    case at::kByte: return ak::DType::kByte;
    default: return ak::DType::kOther;
  }
}

// LRN: (N, C, S) tensors, NCS- or NSC-contiguous (as alexnet_kernels.ops.lrn passes them to the library);
// max-pool and fused: (N, C, H, W), NCHW- or channels_last-contiguous; dropout: 1-D (apply) or 2-D and 1-D
// (bias + ReLU + dropout), contiguous.
ak::TensorView view(const at::Tensor& t, int dims) {
  TORCH_CHECK(t.dim() == dims && t.device().is_cpu(), "harness: expected a ", dims, "-D CPU tensor");
  ak::TensorView v;
  v.dim = dims;
  for (int d = 0; d < dims; ++d) {
    v.sizes[d] = t.size(d);
    v.strides[d] = t.stride(d);
  }
  v.numel = t.numel();
  v.data = v.numel == 0 ? nullptr : t.data_ptr();
  v.dtype = dtype_of(t);
  return v;
}

ak::TensorView view1(const at::Tensor& t) { return view(t, 1); }
ak::TensorView view2(const at::Tensor& t) { return view(t, 2); }
ak::TensorView view3(const at::Tensor& t) { return view(t, 3); }
ak::TensorView view4(const at::Tensor& t) { return view(t, 4); }

ak::CpuIsa isa_of(int64_t isa) {
  TORCH_CHECK(isa >= 0 && isa <= 2, "harness: isa must be 0 (baseline), 1 (AVX2) or 2 (AVX-512)");
  return static_cast<ak::CpuIsa>(isa);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("supports", [](int64_t isa) { return ak::cpu_supports(isa_of(isa)); });
  m.def("best", [] { return static_cast<int64_t>(ak::best_cpu_isa()); });
  m.def("lrn_forward", [](const at::Tensor& x, const at::Tensor& y, int64_t size, double alpha, double beta,
                          double k, bool channels_last, int64_t isa) {
    ak::lrn_forward_cpu_isa(view3(x), view3(y), size, alpha, beta, k, channels_last, isa_of(isa));
  });
  m.def("lrn_backward", [](const at::Tensor& x, const at::Tensor& dy, const at::Tensor& dx, int64_t size,
                           double alpha, double beta, double k, bool channels_last, int64_t isa) {
    ak::lrn_backward_cpu_isa(view3(x), view3(dy), view3(dx), size, alpha, beta, k, channels_last, isa_of(isa));
  });
  // kernel 3x3, stride 2, no padding (AlexNet's), or as given
  m.def("max_pool2d_forward", [](const at::Tensor& x, const at::Tensor& y, const at::Tensor& offsets, int64_t kH,
                                 int64_t sH, int64_t pH, bool channels_last, int64_t isa) {
    const ak::PoolParams p{int(kH), int(kH), int(sH), int(sH), int(pH), int(pH)};
    ak::max_pool2d_forward_cpu_isa(view4(x), view4(y), view4(offsets), p, channels_last, isa_of(isa));
  });
  m.def("max_pool2d_backward", [](const at::Tensor& dy, const at::Tensor& offsets, const at::Tensor& dx, int64_t kH,
                                  int64_t sH, int64_t pH, bool channels_last, int64_t isa) {
    const ak::PoolParams p{int(kH), int(kH), int(sH), int(sH), int(pH), int(pH)};
    ak::max_pool2d_backward_cpu_isa(view4(dy), view4(offsets), view4(dx), p, channels_last, isa_of(isa));
  });
  m.def("relu_lrn_max_pool2d_forward", [](const at::Tensor& x, const at::Tensor& z, const at::Tensor& offsets,
                                          int64_t size, double alpha, double beta, double k, int64_t kH, int64_t sH,
                                          int64_t pH, bool channels_last, int64_t isa) {
    const ak::PoolParams p{int(kH), int(kH), int(sH), int(sH), int(pH), int(pH)};
    ak::relu_lrn_max_pool2d_forward_cpu_isa(view4(x), view4(z), view4(offsets), size, alpha, beta, k, p,
                                            channels_last, isa_of(isa));
  });
  m.def("relu_lrn_max_pool2d_backward", [](const at::Tensor& x, const at::Tensor& dz, const at::Tensor& offsets,
                                           const at::Tensor& dx, int64_t size, double alpha, double beta, double k,
                                           int64_t kH, int64_t sH, int64_t pH, bool channels_last, int64_t isa) {
    const ak::PoolParams p{int(kH), int(kH), int(sH), int(sH), int(pH), int(pH)};
    ak::relu_lrn_max_pool2d_backward_cpu_isa(view4(x), view4(dz), view4(offsets), view4(dx), size, alpha, beta, k,
                                             p, channels_last, isa_of(isa));
  });
  // threshold and scale as alexnet_kernels.ops.dropout passes them (threshold_and_scale).
  m.def("apply_dropout", [](const at::Tensor& src, const at::Tensor& dst, int64_t seed, int64_t threshold,
                            double scale, int64_t isa) {
    ak::apply_dropout_cpu_isa(view1(src), view1(dst), seed, threshold, scale, isa_of(isa));
  });
  m.def("bias_relu_dropout_forward", [](const at::Tensor& x, const at::Tensor& bias, const at::Tensor& y,
                                        int64_t seed, int64_t threshold, double scale, int64_t isa) {
    ak::bias_relu_dropout_forward_cpu_isa(view2(x), view1(bias), view2(y), seed, threshold, scale, isa_of(isa));
  });
  m.def("bias_relu_dropout_backward", [](const at::Tensor& dy, const at::Tensor& y, const at::Tensor& dx,
                                         const at::Tensor& dbias, int64_t seed, int64_t threshold, double scale,
                                         int64_t isa) {
    ak::bias_relu_dropout_backward_cpu_isa(view2(dy), view2(y), view2(dx), view1(dbias), seed, threshold, scale,
                                           isa_of(isa));
  });
}
