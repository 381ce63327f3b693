// Test harness for the CPU kernels' per-ISA copies (cpu_isa.h): built with csrc/lrn_cpu.cpp and
// csrc/pool_cpu.cpp as a throwaway torch extension by tests/test_cpu_isa.py, it runs the LRN and max-pool kernels
// compiled for a named ISA -- each one this CPU supports -- so that every copy, not only the one the CPU would
// pick, is checked.
// The library's own entry points never take an ISA: they pass best_cpu_isa().
#include <torch/extension.h>

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
// max-pool: (N, C, H, W), NCHW- or channels_last-contiguous.
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
}
