// Python bindings of alexnet_kernels._C: argument checks, then dispatch to the CPU or CUDA kernels.
//
//   lrn_forward(x, y, size, alpha, beta, k, channels_last) -> None          writes y
//   lrn_backward(x, dy, dx, size, alpha, beta, k, channels_last) -> None    writes dx
//   cudnn_lrn_forward(x, size, alpha, beta, k) -> y                         (cuDNN baseline, 4-D)
//   cudnn_lrn_backward(x, y, dy, size, alpha, beta, k) -> dx
//   build_info() -> dict
#include <torch/extension.h>

#include <ATen/MemoryOverlap.h>

#include <limits>

#include "lrn.h"

#ifdef AK_WITH_CUDNN
#include <cudnn.h>
#endif

namespace {

const char* layout_name(bool channels_last) {
  return channels_last ? "channels_last (strides (C*S, 1, C))" : "NCHW-contiguous (strides (C*S, S, 1))";
}

// A 3-D (N, C, S) float/half/bfloat16 tensor (or float64 on the CPU) laid out as the layout says.
// The stride of a dimension of size 1 is not checked (it never enters an address), nor are those of
// an empty tensor.
void check_lrn_tensor(const char* op, const char* name, const at::Tensor& t, bool channels_last) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.dim() == 3, op, ": ", name, " must be 3-D (N, C, S), got shape ", t.sizes());
  TORCH_CHECK(t.is_cpu() || t.is_cuda(), op, ": ", name, " must be a cpu or cuda tensor, got ", t.device());
  const auto dtype = t.scalar_type();
  const bool cpu_double = dtype == at::kDouble && t.is_cpu();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || cpu_double, op, ": ", name,
              " must be float32, float16 or bfloat16 (or float64 on the CPU), got ", dtype, " on ", t.device());
  const int64_t C = t.size(1), S = t.size(2);
  const int64_t expected[3] = {C * S, channels_last ? 1 : S, channels_last ? C : 1};
  for (int d = 0; d < 3; ++d) {
    TORCH_CHECK(t.size(d) <= 1 || t.numel() == 0 || t.stride(d) == expected[d], op, ": ", name, " must be ",
                layout_name(channels_last), ", got shape ", t.sizes(), " and strides ", t.strides());
  }
  TORCH_CHECK(C <= std::numeric_limits<int>::max(), op, ": at most 2^31 - 1 channels, got ", C);
}

void check_same(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.sizes() == x.sizes(), op, ": ", name, " must have x's shape ", x.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " must have x's dtype ", x.scalar_type(),
              ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " must be on x's device ", x.device(), ", got ",
              t.device());
}

void check_size(const char* op, int64_t size) {
  TORCH_CHECK(size >= 1 && size <= std::numeric_limits<int>::max(), op, ": size must be >= 1, got ", size);
}

#ifndef AK_WITH_CUDA
[[noreturn]] void no_cuda(const char* op) {
  TORCH_CHECK(false, op, ": alexnet_kernels._C was built without CUDA sources");
}
#endif

void lrn_forward(const at::Tensor& x, const at::Tensor& y, int64_t size, double alpha, double beta, double k,
                 bool channels_last) {
  const char* op = "lrn_forward";
  check_size(op, size);
  check_lrn_tensor(op, "x", x, channels_last);
  check_lrn_tensor(op, "y", y, channels_last);
  check_same(op, "y", y, x);
  at::assert_no_overlap(y, x);
  if (x.is_cuda()) {
#ifdef AK_WITH_CUDA
    ak::lrn_forward_cuda(x, y, size, alpha, beta, k, channels_last);
#else
    no_cuda(op);
#endif
  } else {
    ak::lrn_forward_cpu(x, y, size, alpha, beta, k, channels_last);
  }
}

void lrn_backward(const at::Tensor& x, const at::Tensor& dy, const at::Tensor& dx, int64_t size, double alpha,
                  double beta, double k, bool channels_last) {
  const char* op = "lrn_backward";
  check_size(op, size);
  check_lrn_tensor(op, "x", x, channels_last);
  check_lrn_tensor(op, "dy", dy, channels_last);
  check_lrn_tensor(op, "dx", dx, channels_last);
  check_same(op, "dy", dy, x);
  check_same(op, "dx", dx, x);
  at::assert_no_overlap(dx, x);
  at::assert_no_overlap(dx, dy);
  if (x.is_cuda()) {
#ifdef AK_WITH_CUDA
    ak::lrn_backward_cuda(x, dy, dx, size, alpha, beta, k, channels_last);
#else
    no_cuda(op);
#endif
  } else {
    ak::lrn_backward_cpu(x, dy, dx, size, alpha, beta, k, channels_last);
  }
}

at::Tensor cudnn_lrn_forward(const at::Tensor& x, int64_t size, double alpha, double beta, double k) {
#ifdef AK_WITH_CUDNN
  return ak::cudnn_lrn_forward(x, size, alpha, beta, k);
#else
  (void)x, (void)size, (void)alpha, (void)beta, (void)k;
  TORCH_CHECK(false, "cudnn_lrn_forward: alexnet_kernels._C was built without cuDNN");
#endif
}

at::Tensor cudnn_lrn_backward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& dy, int64_t size,
                              double alpha, double beta, double k) {
#ifdef AK_WITH_CUDNN
  return ak::cudnn_lrn_backward(x, y, dy, size, alpha, beta, k);
#else
  (void)x, (void)y, (void)dy, (void)size, (void)alpha, (void)beta, (void)k;
  TORCH_CHECK(false, "cudnn_lrn_backward: alexnet_kernels._C was built without cuDNN");
#endif
}

py::dict build_info() {
  py::dict info;
  info["torch_version"] = AK_BUILD_TORCH_VERSION;
  info["cuda_version"] = AK_BUILD_CUDA_VERSION;
  info["cuda_archs"] = AK_BUILD_CUDA_ARCHS;
  info["cuda_home"] = AK_BUILD_CUDA_HOME;
#ifdef AK_WITH_CUDA
  info["with_cuda"] = true;
#else
  info["with_cuda"] = false;
#endif
#ifdef AK_WITH_CUDNN
  info["with_cudnn"] = true;
  info["cudnn_version"] = static_cast<int>(CUDNN_VERSION);
#else
  info["with_cudnn"] = false;
  info["cudnn_version"] = py::none();
#endif
#if defined(__clang__)
  info["compiler"] = "clang " __clang_version__;
#elif defined(__GNUC__)
  info["compiler"] = "gcc " __VERSION__;
#elif defined(_MSC_VER)
  info["compiler"] = "msvc " + std::to_string(_MSC_VER);
#else
  info["compiler"] = "unknown";
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "alexnet_kernels compiled kernels: cross-channel LRN (CPU and CUDA) and the cuDNN LRN baseline";
  m.def("lrn_forward", &lrn_forward, "LRN forward: writes y = x * (k + alpha/n * window sum of x^2)^-beta",
        py::arg("x"), py::arg("y"), py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"),
        py::arg("channels_last"), py::call_guard<py::gil_scoped_release>());
  m.def("lrn_backward", &lrn_backward, "LRN backward: writes dx from x and dy", py::arg("x"), py::arg("dy"),
        py::arg("dx"), py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"), py::arg("channels_last"),
        py::call_guard<py::gil_scoped_release>());
  m.def("cudnn_lrn_forward", &cudnn_lrn_forward, "cuDNN cross-channel LRN forward (baseline) of a 4-D tensor",
        py::arg("x"), py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"));
  m.def("cudnn_lrn_backward", &cudnn_lrn_backward, "cuDNN cross-channel LRN backward (baseline)", py::arg("x"),
        py::arg("y"), py::arg("dy"), py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"));
  m.def("build_info", &build_info, "What this extension was built with");
}
