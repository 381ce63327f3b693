// alexnet_kernels._C: each operator's argument check and its CPU and CUDA implementations. Operators
// (torch.ops.alexnet_kernels_C.*):
//
//   lrn_forward(x, y, size, alpha, beta, k, channels_last) -> None          writes y
//   lrn_backward(x, dy, dx, size, alpha, beta, k, channels_last) -> None    writes dx
//   lrn_backward_v1(...)  as lrn_backward, CUDA only, the v1 NCHW window sums (internal: benchmarks)
//   cudnn_lrn_forward(x, size, alpha, beta, k) -> y                         (cuDNN baseline, 4-D)
//   cudnn_lrn_backward(x, y, dy, size, alpha, beta, k) -> dx
//   max_pool2d_forward(x, y, offsets, kH, kW, sH, sW, pH, pW, channels_last) -> None           writes y, offsets
//       (on the CPU an empty offsets tensor, numel 0, asks for the values only: y alone is written)
//   max_pool2d_backward(dy, offsets, dx, kH, kW, sH, sW, pH, pW, channels_last) -> None        writes dx
//   relu_lrn_max_pool2d_forward(x, z, offsets, size, alpha, beta, k, kH, kW, sH, sW, pH, pW, channels_last)
//       -> None                                                              writes z, offsets
//   relu_lrn_max_pool2d_backward(x, dz, offsets, dx, size, alpha, beta, k, kH, kW, sH, sW, pH, pW,
//       channels_last) -> None                                               writes dx
//   dropout_forward(x, y, seed, threshold, scale) -> None                     writes y
//   dropout_backward(dy, dx, seed, threshold, scale) -> None                   writes dx
//   bias_relu_dropout_forward(x, bias, y, seed, threshold, scale) -> None      writes y
//   bias_relu_dropout_backward(dy, y, dx, dbias, seed, threshold, scale) -> None   writes dx, dbias
//   build_info() -> dict                                                     (a function of the Python module)
//
// Pooling tensors are 4-D, all NCHW-contiguous or all channels_last; x / dx are (N, C, H, W), the
// others (N, C, OH, OW) with OH, OW torch's output size (floor or ceil mode); offsets are uint8.
//
// Dropout (mask and math: dropout_math.h): seed is a 1-element int64 tensor on the data's device (its
// bit pattern is the Philox key), threshold = round(p * 2^24) in [0, 2^24], scale = 1 / (1 - p), finite
// and >= 1. dropout_* take 1-D contiguous tensors (dense tensors' storage, flattened in memory order); bias_relu_dropout_* take
// (M, N) row-major x / y / dy / dx and (N,) bias / dbias. Outputs may not overlap inputs.
//
// Registered as torch.library operators alexnet_kernels_C::<name> through torch's stable C ABI
// (torch/csrc/stable: STABLE_TORCH_LIBRARY, torch::stable::Tensor, DeviceGuard), targeting torch 2.11
// (TORCH_TARGET_VERSION, set by setup.py): the library links only torch's C shim -- no ATen, c10 or
// pybind11 symbol -- so one build loads under every torch from 2.11 on. The Python module is a bare
// limited-API (abi3) module: importing it registers the operators; its one function is build_info().
// The kernels see tensors as ak::TensorView (tensor_view.h): this file is the only one that talks to torch.
#ifdef AK_WITH_CUDA
// aoti_torch_get_current_cuda_stream, part of the same C shim, is declared only for CUDA builds.
#ifndef USE_CUDA
#define USE_CUDA
#endif
#endif

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/csrc/inductor/aoti_torch/c/shim.h>  // aoti_torch_get_current_cuda_stream (with USE_CUDA)

#include <Python.h>  // the limited API only (Py_LIMITED_API, set by torch.utils.cpp_extension)

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>  // madvise: huge pages for the CPU kernels' large outputs (written_on_cpu)
#endif

#include "dropout.h"
#include "conv.h"
#include "dropout_math.h"
#include "lrn.h"
#include "pool.h"
#include "tensor_view.h"

#ifdef AK_WITH_CUDNN
#include <cudnn.h>
#endif

namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// --- what error messages print, in torch's spelling -------------------------------------------------

std::string int_list(const int64_t* values, int64_t count) {
  std::ostringstream out;
  out << "[";
  for (int64_t i = 0; i < count; ++i) out << (i ? ", " : "") << values[i];
  out << "]";
  return out.str();
}

// t's shape, or its first `dims` sizes.
std::string shape(const Tensor& t, int64_t dims = -1) {
  const auto sizes = t.sizes();
  const int64_t n = dims < 0 ? static_cast<int64_t>(sizes.size()) : std::min<int64_t>(dims, sizes.size());
  return int_list(sizes.data(), n);
}

std::string strides(const Tensor& t) {
  const auto s = t.strides();
  return int_list(s.data(), static_cast<int64_t>(s.size()));
}

std::string device_name(const Tensor& t) {
  if (t.is_cpu()) return "cpu";
  if (t.is_cuda()) return "cuda:" + std::to_string(static_cast<int>(t.get_device_index()));
  const auto type = t.device().type();
  if (type == torch::headeronly::DeviceType::Meta) return "meta";
  return "device type " + std::to_string(static_cast<int>(type));
}

bool same_shape(const Tensor& a, const Tensor& b) {
  const auto sa = a.sizes(), sb = b.sizes();
  return sa.size() == sb.size() && std::equal(sa.begin(), sa.end(), sb.begin());
}

bool same_device(const Tensor& a, const Tensor& b) {
  return a.device().type() == b.device().type() && a.get_device_index() == b.get_device_index();
}

// --- the kernels' view of a checked tensor ---------------------------------------------------------

ak::DType view_dtype(ScalarType t) {
  switch (t) {
    case ScalarType::Float: return ak::DType::kFloat;
    case ScalarType::Double: return ak::DType::kDouble;
    case ScalarType::Half: return ak::DType::kHalf;
    case ScalarType::BFloat16: return ak::DType::kBFloat16;
    case ScalarType::Byte: return ak::DType::kByte;
    case ScalarType::Long: return ak::DType::kLong;
    case ScalarType::Char: return ak::DType::kChar;
    case ScalarType::Short: return ak::DType::kShort;
    case ScalarType::Int: return ak::DType::kInt;
    default: return ak::DType::kOther;
  }
}

ak::TensorView view(const Tensor& t) {
  ak::TensorView v;
  v.dim = static_cast<int>(t.dim());
  AK_CHECK(v.dim <= ak::kMaxViewDims, "alexnet_kernels: a kernel argument has more than 4 dimensions");
  for (int d = 0; d < v.dim; ++d) {
    v.sizes[d] = t.size(d);
    v.strides[d] = t.stride(d);
  }
  v.numel = t.numel();
  v.data = v.numel == 0 ? nullptr : t.data_ptr();
  v.dtype = view_dtype(t.scalar_type());
  v.is_cuda = t.is_cuda();
  v.device = t.is_cuda() ? static_cast<int>(t.get_device_index()) : -1;
  return v;
}

// view() of a tensor a CPU kernel is about to write in full. A fresh output of torch's CPU allocator is
// untouched memory: the kernel's first stores fault it in a 4 KiB page at a time (~9,000 faults for
// AlexNet's 37 MB conv1 activation, more time than the LRN itself). Asking for transparent huge pages on
// the 2 MiB-aligned interior first lets the kernel fault it in 2 MiB at a time (measured: LRN forward
// 32x96x55x55 fp32 into a fresh output, benchmarks/results/README.md). Advice on memory already touched
// changes nothing the kernel sees; where THP is off or the call fails the kernel runs as before.
ak::TensorView written_on_cpu(const Tensor& t) {
  ak::TensorView v = view(t);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHugePage = uintptr_t{2} << 20;
  const uintptr_t bytes = static_cast<uintptr_t>(v.numel) * static_cast<uintptr_t>(t.element_size());
  if (v.data != nullptr && bytes >= 2 * kHugePage) {
    const uintptr_t begin = reinterpret_cast<uintptr_t>(v.data);
    const uintptr_t first = (begin + kHugePage - 1) / kHugePage * kHugePage;
    const uintptr_t last = (begin + bytes) / kHugePage * kHugePage;
    if (last > first) (void)madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);
  }
#endif
  return v;
}

#ifdef AK_WITH_CUDA
// The tensors' device made current (restored on exit) and its current stream, as torch's own
// kernels use: CUDA-graph capture and torch.cuda.stream(...) contexts are honoured, from any thread.
class CurrentCudaStream {
 public:
  explicit CurrentCudaStream(const Tensor& t) : guard_(t.get_device_index()) {
    TORCH_ERROR_CODE_CHECK(aoti_torch_get_current_cuda_stream(t.get_device_index(), &stream_));
  }
  void* get() const { return stream_; }

 private:
  torch::stable::accelerator::DeviceGuard guard_;
  void* stream_ = nullptr;
};
#endif

// --- overlap: outputs must share no memory with inputs ----------------------------------------------

// The address range [begin, end) of t's elements (exact for the dense layouts every argument is
// checked to have; conservative for other strides).
struct ByteRange {
  uintptr_t begin, end;
};

ByteRange byte_range(const Tensor& t) {
  const uintptr_t base = reinterpret_cast<uintptr_t>(t.data_ptr());
  int64_t lo = 0, hi = 0;
  for (int64_t d = 0; d < t.dim(); ++d) {
    const int64_t reach = (t.size(d) - 1) * t.stride(d);
    (reach < 0 ? lo : hi) += reach;
  }
  const int64_t item = static_cast<int64_t>(t.element_size());
  return ByteRange{base + lo * item, base + (hi + 1) * item};
}

// at::assert_no_internal_overlap's rule (a stride 0 over more than one element) and message.
void assert_no_internal_overlap(const Tensor& t) {
  for (int64_t d = 0; d < t.dim(); ++d) {
    AK_CHECK(!(t.size(d) > 1 && t.stride(d) == 0),
             "unsupported operation: more than one element of the written-to tensor refers to a single memory "
             "location. Please clone() the tensor before performing the operation.");
  }
}

// torch's is_contiguous(memory_format) for a 4-D tensor: strides of size-1 dimensions are free.
bool dense_in(const Tensor& t, bool channels_last) {
  if (t.numel() == 0) return true;
  const ak::Strides4 s = ak::layout_strides(t.size(1), t.size(2), t.size(3), channels_last);
  const int64_t expected[4] = {s.n, s.c, s.h, s.w};
  for (int d = 0; d < 4; ++d) {
    if (t.size(d) != 1 && t.stride(d) != expected[d]) return false;
  }
  return true;
}

bool channels_last_contiguous(const Tensor& t) { return t.dim() == 4 && dense_in(t, true); }

enum class Overlap { kNone, kFull, kPartial };

Overlap overlap_status(const Tensor& a, const Tensor& b) {
  if (a.numel() == 0 || b.numel() == 0) return Overlap::kNone;
  const ByteRange ra = byte_range(a), rb = byte_range(b);
  if (ra.end <= rb.begin || rb.end <= ra.begin) return Overlap::kNone;
  const bool same = ra.begin == rb.begin && ra.end == rb.end && same_shape(a, b) && strides(a) == strides(b);
  return same ? Overlap::kFull : Overlap::kPartial;
}

// at::assert_no_overlap's rule and message.
void assert_no_overlap(const Tensor& out, const Tensor& in) {
  AK_CHECK(overlap_status(out, in) == Overlap::kNone,
           "unsupported operation: some elements of the input tensor and the written-to tensor refer to a single "
           "memory location. Please clone() the tensor before performing the operation.");
}

// The written tensor `out`: no two elements in one memory location, none shared with the inputs (a null
// input is an absent optional one).
void assert_written_apart(const Tensor& out, std::initializer_list<const Tensor*> inputs) {
  assert_no_internal_overlap(out);
  for (const Tensor* in : inputs) {
    if (in != nullptr) assert_no_overlap(out, *in);
  }
}

// float32, float16 or bfloat16, or float64 on the CPU (the CPU kernels take it for gradcheck).
void check_kernel_dtype(const char* op, const char* name, const Tensor& t) {
  const auto dtype = t.scalar_type();
  const bool cpu_double = dtype == ScalarType::Double && t.is_cpu();
  AK_CHECK(dtype == ScalarType::Float || dtype == ScalarType::Half || dtype == ScalarType::BFloat16 || cpu_double,
           op, ": ", name, " must be float32, float16 or bfloat16 (or float64 on the CPU), got ", dtype, " on ",
           device_name(t));
}

// A defined dims-D (dims_name: e.g. "(N, C, S)") cpu or cuda tensor.
void check_tensor(const char* op, const char* name, const Tensor& t, int64_t dims, const char* dims_name) {
  AK_CHECK(t.defined(), op, ": ", name, " is undefined");
  AK_CHECK(t.dim() == dims, op, ": ", name, " must be ", dims, "-D ", dims_name, ", got shape ", shape(t));
  AK_CHECK(t.is_cpu() || t.is_cuda(), op, ": ", name, " must be a cpu or cuda tensor, got ", device_name(t));
}

// t has the strides `expected` (the layout's, named by `layout`). Those of size-1 dimensions, and all of an
// empty tensor, are not checked: they never enter an address.
void check_strides(const char* op, const char* name, const Tensor& t, const int64_t* expected, const char* layout) {
  for (int64_t d = 0; d < t.dim(); ++d) {
    AK_CHECK(t.size(d) <= 1 || t.numel() == 0 || t.stride(d) == expected[d], op, ": ", name, " must be ", layout,
             ", got shape ", shape(t), " and strides ", strides(t));
  }
}

// ---------------------------------------------------------------------------------------------
// Cross-channel LRN
// ---------------------------------------------------------------------------------------------

const char* layout_name(bool channels_last) {
  return channels_last ? "channels_last (strides (C*S, 1, C))" : "NCHW-contiguous (strides (C*S, S, 1))";
}

// A 3-D (N, C, S) float/half/bfloat16 tensor (or float64 on the CPU) laid out as the layout says.
void check_lrn_tensor(const char* op, const char* name, const Tensor& t, bool channels_last) {
  check_tensor(op, name, t, 3, "(N, C, S)");
  check_kernel_dtype(op, name, t);
  const int64_t C = t.size(1), S = t.size(2);
  const int64_t expected[3] = {C * S, channels_last ? 1 : S, channels_last ? C : 1};
  check_strides(op, name, t, expected, layout_name(channels_last));
  AK_CHECK(C <= std::numeric_limits<int>::max(), op, ": at most 2^31 - 1 channels, got ", C);
}

void check_same(const char* op, const char* name, const Tensor& t, const Tensor& x) {
  AK_CHECK(same_shape(t, x), op, ": ", name, " must have x's shape ", shape(x), ", got ", shape(t));
  AK_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " must have x's dtype ", x.scalar_type(),
           ", got ", t.scalar_type());
  AK_CHECK(same_device(t, x), op, ": ", name, " must be on x's device ", device_name(x), ", got ",
           device_name(t));
}

// Any n >= 1: the kernels clip the window's reach to the channels (make_lrn_params), the divisor stays n.
void check_size(const char* op, int64_t size) {
  AK_CHECK(size >= 1, op, ": size must be >= 1, got ", size);
}

void check_lrn_forward(const Tensor& x, const Tensor& y, int64_t size, bool channels_last) {
  const char* op = "lrn_forward";
  check_size(op, size);
  check_lrn_tensor(op, "x", x, channels_last);
  check_lrn_tensor(op, "y", y, channels_last);
  check_same(op, "y", y, x);
  assert_no_overlap(y, x);
}

void check_lrn_backward(const Tensor& x, const Tensor& dy, const Tensor& dx, int64_t size, bool channels_last) {
  const char* op = "lrn_backward";
  check_size(op, size);
  check_lrn_tensor(op, "x", x, channels_last);
  check_lrn_tensor(op, "dy", dy, channels_last);
  check_lrn_tensor(op, "dx", dx, channels_last);
  check_same(op, "dy", dy, x);
  check_same(op, "dx", dx, x);
  assert_no_overlap(dx, x);
  assert_no_overlap(dx, dy);
}

void lrn_forward_cpu(const Tensor& x, const Tensor& y, int64_t size, double alpha, double beta, double k,
                     bool channels_last) {
  check_lrn_forward(x, y, size, channels_last);
  ak::lrn_forward_cpu(view(x), written_on_cpu(y), size, alpha, beta, k, channels_last);
}

void lrn_backward_cpu(const Tensor& x, const Tensor& dy, const Tensor& dx, int64_t size, double alpha,
                      double beta, double k, bool channels_last) {
  check_lrn_backward(x, dy, dx, size, channels_last);
  ak::lrn_backward_cpu(view(x), view(dy), written_on_cpu(dx), size, alpha, beta, k, channels_last);
}

// ---------------------------------------------------------------------------------------------
// Max pooling and the fused ReLU -> LRN -> max-pool block
// ---------------------------------------------------------------------------------------------

const char* layout4_name(bool channels_last) {
  return channels_last ? "channels_last (strides (H*W*C, 1, W*C, C))" : "NCHW-contiguous (strides (C*H*W, H*W, W, 1))";
}

// A 4-D tensor on the CPU or a GPU laid out as the layout says.
void check_pool_tensor(const char* op, const char* name, const Tensor& t, bool channels_last) {
  check_tensor(op, name, t, 4, "(N, C, H, W)");
  const ak::Strides4 s = ak::layout_strides(t.size(1), t.size(2), t.size(3), channels_last);
  const int64_t expected[4] = {s.n, s.c, s.h, s.w};
  check_strides(op, name, t, expected, layout4_name(channels_last));
}

// Values: float32, float16 or bfloat16 (or float64 on the CPU); ref's dtype and device when ref is given.
void check_pool_values(const char* op, const char* name, const Tensor& t, const Tensor* ref,
                       const char* ref_name) {
  check_kernel_dtype(op, name, t);
  if (ref != nullptr) {
    AK_CHECK(t.scalar_type() == ref->scalar_type(), op, ": ", name, " must have ", ref_name, "'s dtype ",
             ref->scalar_type(), ", got ", t.scalar_type());
    AK_CHECK(same_device(t, *ref), op, ": ", name, " must be on ", ref_name, "'s device ", device_name(*ref),
             ", got ", device_name(t));
  }
}

// max_pool2d_forward's x and y: check_pool_values', and on the CPU also the integer dtypes torch pools there
// (uint8, int8, int16, int32, int64).
void check_max_pool_values(const char* op, const char* name, const Tensor& t, const Tensor* ref,
                           const char* ref_name) {
  const auto dtype = t.scalar_type();
  const bool cpu_integer = t.is_cpu() && (dtype == ScalarType::Byte || dtype == ScalarType::Char ||
                                          dtype == ScalarType::Short || dtype == ScalarType::Int ||
                                          dtype == ScalarType::Long);
  if (!cpu_integer) return check_pool_values(op, name, t, ref, ref_name);
  if (ref != nullptr) {
    AK_CHECK(dtype == ref->scalar_type(), op, ": ", name, " must have ", ref_name, "'s dtype ",
                ref->scalar_type(), ", got ", dtype);
    AK_CHECK(same_device(t, *ref), op, ": ", name, " must be on ", ref_name, "'s device ", device_name(*ref),
                ", got ", device_name(t));
  }
}

// offsets: uint8, out's shape and device.
void check_offsets(const char* op, const Tensor& offsets, const Tensor& out, const char* out_name) {
  AK_CHECK(offsets.scalar_type() == ScalarType::Byte, op, ": offsets must be uint8, got ", offsets.scalar_type());
  AK_CHECK(same_shape(offsets, out), op, ": offsets must have ", out_name, "'s shape ", shape(out),
           ", got ", shape(offsets));
  AK_CHECK(same_device(offsets, out), op, ": offsets must be on ", out_name, "'s device ", device_name(out),
           ", got ", device_name(offsets));
}

ak::PoolParams check_pool_params(const char* op, int64_t kH, int64_t kW, int64_t sH, int64_t sW, int64_t pH,
                                 int64_t pW) {
  AK_CHECK(kH >= 1 && kW >= 1, op, ": kernel size must be >= 1, got (", kH, ", ", kW, ")");
  AK_CHECK(kH <= 256 && kW <= 256 && kH * kW <= 256, op, ": kH * kW must be <= 256 (offsets are uint8), got (",
           kH, ", ", kW, ")");
  AK_CHECK(sH >= 1 && sW >= 1, op, ": stride must be >= 1, got (", sH, ", ", sW, ")");
  AK_CHECK(sH <= std::numeric_limits<int>::max() && sW <= std::numeric_limits<int>::max(), op,
           ": stride is too large (at most 2^31 - 1, as torch), got (", sH, ", ", sW, ")");
  AK_CHECK(pH >= 0 && pW >= 0, op, ": padding must be >= 0, got (", pH, ", ", pW, ")");
  // torch's rule; it also keeps every window's in-bounds part non-empty.
  AK_CHECK(pH <= kH / 2 && pW <= kW / 2, op, ": padding must be at most half the kernel size, got padding (",
           pH, ", ", pW, ") for kernel (", kH, ", ", kW, ")");
  return ak::PoolParams{static_cast<int>(kH), static_cast<int>(kW), static_cast<int>(sH),
                        static_cast<int>(sW), static_cast<int>(pH), static_cast<int>(pW)};
}

// torch's pooling output size (dilation 1), floor or ceil mode.
int64_t pool_output_size(int64_t in, int64_t kernel, int64_t stride, int64_t pad, bool ceil_mode) {
  const int64_t numerator = in + 2 * pad - (kernel - 1) - 1 + (ceil_mode ? stride - 1 : 0);
  int64_t out = (numerator >= 0 ? numerator / stride : -((-numerator + stride - 1) / stride)) + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad) --out;  // the last window must start inside the input
  return out;
}

// in is (N, C, H, W), out (N, C, OH, OW) with OH, OW torch's output sizes (floor or ceil mode), each >= 1.
// In ceil mode the floor-mode size may be 0 while the ceil-mode size is 1 (e.g. a 2x2 window over a 1x1
// input): the last window must start inside the input or its left padding, and may hang off the end
// (the kernels clip every window to the input).
void check_pool_shapes(const char* op, const Tensor& in, const char* in_name, const Tensor& out,
                       const char* out_name, const ak::PoolParams& p) {
  AK_CHECK(out.size(0) == in.size(0) && out.size(1) == in.size(1), op, ": ", out_name, " must have ", in_name,
           "'s batch and channels ", shape(in, 2), ", got shape ", shape(out));
  AK_CHECK(in.size(2) >= 1 && in.size(3) >= 1, op, ": ", in_name, " must have non-empty spatial dims, got shape ",
           shape(in));
  AK_CHECK(in.size(1) <= std::numeric_limits<int>::max(), op, ": at most 2^31 - 1 channels, got ", in.size(1));
  const int64_t sizes[2][4] = {{in.size(2), p.kH, p.sH, p.pH}, {in.size(3), p.kW, p.sW, p.pW}};
  for (int d = 0; d < 2; ++d) {
    const int64_t floor_size = pool_output_size(sizes[d][0], sizes[d][1], sizes[d][2], sizes[d][3], false);
    const int64_t ceil_size = pool_output_size(sizes[d][0], sizes[d][1], sizes[d][2], sizes[d][3], true);
    AK_CHECK(ceil_size >= 1, op, ": ", in_name, " of shape ", shape(in), " is too small for the kernel (",
             p.kH, ", ", p.kW, ") and padding (", p.pH, ", ", p.pW, ")");
    const int64_t got = out.size(2 + d);
    AK_CHECK(got >= 1, op, ": ", out_name, " has ", d == 0 ? "OH" : "OW", " = ", got, ", but ", in_name,
             " of shape ", shape(in), " pools to ", floor_size, " (ceil_mode: ", ceil_size, ")");
    AK_CHECK(got == floor_size || got == ceil_size, op, ": ", out_name, " has ", d == 0 ? "OH" : "OW", " = ", got,
             ", but ", in_name, " of shape ", shape(in), " pools to ", floor_size, " (ceil_mode: ", ceil_size,
             ")");
  }
}

// The pooling forward's tensors: input x, output out (y or z) and its offsets. values_only_on_cpu: the op
// also takes empty offsets (numel 0, uint8) on the CPU, asking for out alone (max_pool2d_forward).
void check_pool_forward_tensors(const char* op, const Tensor& x, const char* out_name, const Tensor& out,
                                const Tensor& offsets, const ak::PoolParams& p, bool channels_last,
                                bool integers_on_cpu, bool values_only_on_cpu = false) {
  const bool values_only = offsets.numel() == 0 && out.numel() != 0;
  AK_CHECK(!values_only || (values_only_on_cpu && x.is_cpu()), op, ": offsets must have ", out_name, "'s shape ",
           shape(out), ", got ", shape(offsets), values_only_on_cpu ? " (empty offsets: the CPU only)" : "");
  check_pool_tensor(op, "x", x, channels_last);
  check_pool_tensor(op, out_name, out, channels_last);
  if (!values_only) check_pool_tensor(op, "offsets", offsets, channels_last);
  // max-pool also takes the integer dtypes torch pools on the CPU; the fused block (LRN inside) floats only
  const auto check_values = integers_on_cpu ? check_max_pool_values : check_pool_values;
  check_values(op, "x", x, nullptr, nullptr);
  check_values(op, out_name, out, &x, "x");
  if (values_only) {
    AK_CHECK(offsets.scalar_type() == ScalarType::Byte, op, ": offsets must be uint8, got ", offsets.scalar_type());
    AK_CHECK(same_device(offsets, out), op, ": offsets must be on ", out_name, "'s device ", device_name(out),
             ", got ", device_name(offsets));
  } else {
    check_offsets(op, offsets, out, out_name);
  }
  check_pool_shapes(op, x, "x", out, out_name, p);
  assert_no_overlap(out, x);
  if (!values_only) {
    assert_no_overlap(offsets, x);
    assert_no_overlap(offsets, out);
  }
}

ak::PoolParams check_max_pool2d_forward(const Tensor& x, const Tensor& y, const Tensor& offsets, int64_t kH,
                                        int64_t kW, int64_t sH, int64_t sW, int64_t pH, int64_t pW,
                                        bool channels_last) {
  const char* op = "max_pool2d_forward";
  const ak::PoolParams p = check_pool_params(op, kH, kW, sH, sW, pH, pW);
  check_pool_forward_tensors(op, x, "y", y, offsets, p, channels_last, /*integers_on_cpu=*/true,
                             /*values_only_on_cpu=*/true);
  return p;
}

ak::PoolParams check_max_pool2d_backward(const Tensor& dy, const Tensor& offsets, const Tensor& dx, int64_t kH,
                                         int64_t kW, int64_t sH, int64_t sW, int64_t pH, int64_t pW,
                                         bool channels_last) {
  const char* op = "max_pool2d_backward";
  const ak::PoolParams p = check_pool_params(op, kH, kW, sH, sW, pH, pW);
  check_pool_tensor(op, "dy", dy, channels_last);
  check_pool_tensor(op, "offsets", offsets, channels_last);
  check_pool_tensor(op, "dx", dx, channels_last);
  check_pool_values(op, "dy", dy, nullptr, nullptr);
  check_pool_values(op, "dx", dx, &dy, "dy");
  check_offsets(op, offsets, dy, "dy");
  check_pool_shapes(op, dx, "dx", dy, "dy", p);
  assert_no_overlap(dx, dy);
  assert_no_overlap(dx, offsets);
  return p;
}

ak::PoolParams check_relu_lrn_max_pool2d_forward(const Tensor& x, const Tensor& z, const Tensor& offsets,
                                                 int64_t size, int64_t kH, int64_t kW, int64_t sH, int64_t sW,
                                                 int64_t pH, int64_t pW, bool channels_last) {
  const char* op = "relu_lrn_max_pool2d_forward";
  check_size(op, size);
  const ak::PoolParams p = check_pool_params(op, kH, kW, sH, sW, pH, pW);
  check_pool_forward_tensors(op, x, "z", z, offsets, p, channels_last, /*integers_on_cpu=*/false);
  return p;
}

ak::PoolParams check_relu_lrn_max_pool2d_backward(const Tensor& x, const Tensor& dz, const Tensor& offsets,
                                                  const Tensor& dx, int64_t size, int64_t kH, int64_t kW,
                                                  int64_t sH, int64_t sW, int64_t pH, int64_t pW,
                                                  bool channels_last) {
  const char* op = "relu_lrn_max_pool2d_backward";
  check_size(op, size);
  const ak::PoolParams p = check_pool_params(op, kH, kW, sH, sW, pH, pW);
  check_pool_tensor(op, "x", x, channels_last);
  check_pool_tensor(op, "dz", dz, channels_last);
  check_pool_tensor(op, "offsets", offsets, channels_last);
  check_pool_tensor(op, "dx", dx, channels_last);
  check_pool_values(op, "x", x, nullptr, nullptr);
  check_pool_values(op, "dz", dz, &x, "x");
  check_pool_values(op, "dx", dx, &x, "x");
  AK_CHECK(same_shape(dx, x), op, ": dx must have x's shape ", shape(x), ", got ", shape(dx));
  check_offsets(op, offsets, dz, "dz");
  check_pool_shapes(op, x, "x", dz, "dz", p);
  assert_no_overlap(dx, x);
  assert_no_overlap(dx, dz);
  assert_no_overlap(dx, offsets);
  return p;
}

void max_pool2d_forward_cpu(const Tensor& x, const Tensor& y, const Tensor& offsets, int64_t kH, int64_t kW,
                            int64_t sH, int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
  const ak::PoolParams p = check_max_pool2d_forward(x, y, offsets, kH, kW, sH, sW, pH, pW, channels_last);
  ak::max_pool2d_forward_cpu(view(x), written_on_cpu(y), view(offsets), p, channels_last);
}

void max_pool2d_backward_cpu(const Tensor& dy, const Tensor& offsets, const Tensor& dx, int64_t kH, int64_t kW,
                             int64_t sH, int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
  const ak::PoolParams p = check_max_pool2d_backward(dy, offsets, dx, kH, kW, sH, sW, pH, pW, channels_last);
  ak::max_pool2d_backward_cpu(view(dy), view(offsets), written_on_cpu(dx), p, channels_last);
}

void relu_lrn_max_pool2d_forward_cpu(const Tensor& x, const Tensor& z, const Tensor& offsets, int64_t size,
                                     double alpha, double beta, double k, int64_t kH, int64_t kW, int64_t sH,
                                     int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
  const ak::PoolParams p = check_relu_lrn_max_pool2d_forward(x, z, offsets, size, kH, kW, sH, sW, pH, pW,
                                                             channels_last);
  ak::relu_lrn_max_pool2d_forward_cpu(view(x), written_on_cpu(z), view(offsets), size, alpha, beta, k, p,
                                      channels_last);
}

void relu_lrn_max_pool2d_backward_cpu(const Tensor& x, const Tensor& dz, const Tensor& offsets, const Tensor& dx,
                                      int64_t size, double alpha, double beta, double k, int64_t kH, int64_t kW,
                                      int64_t sH, int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
  const ak::PoolParams p = check_relu_lrn_max_pool2d_backward(x, dz, offsets, dx, size, kH, kW, sH, sW, pH, pW,
                                                              channels_last);
  ak::relu_lrn_max_pool2d_backward_cpu(view(x), view(dz), view(offsets), written_on_cpu(dx), size, alpha, beta, k, p,
                                       channels_last);
}

// ---------------------------------------------------------------------------------------------
// Counter-based dropout and the fused bias + ReLU + dropout block
// ---------------------------------------------------------------------------------------------

// A contiguous dim-D float32 / float16 / bfloat16 tensor (or float64 on the CPU) on the CPU or a GPU.
void check_dropout_tensor(const char* op, const char* name, const Tensor& t, int64_t dim, const char* dims) {
  check_tensor(op, name, t, dim, dims);
  check_kernel_dtype(op, name, t);
  AK_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous, got shape ", shape(t), " and strides ",
           strides(t));
}

// t has ref's dtype and device.
void check_dropout_like(const char* op, const char* name, const Tensor& t, const char* ref_name,
                        const Tensor& ref) {
  AK_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have ", ref_name, "'s dtype ",
           ref.scalar_type(), ", got ", t.scalar_type());
  AK_CHECK(same_device(t, ref), op, ": ", name, " must be on ", ref_name, "'s device ", device_name(ref),
           ", got ", device_name(t));
}

void check_dropout_scalars(const char* op, int64_t threshold, double scale) {
  AK_CHECK(threshold >= 0 && threshold <= ak::kDropoutThresholdMax, op,
           ": threshold must be in [0, 2^24] (round(p * 2^24)), got ", threshold);
  AK_CHECK(std::isfinite(scale) && scale >= 1.0, op, ": scale must be finite and >= 1 (1 / (1 - p)), got ",
           scale);
}

// The output `out` shares no memory with the input `in` (the kernels read and write in no fixed order).
void check_no_overlap(const char* op, const char* out_name, const Tensor& out, const char* in_name,
                      const Tensor& in) {
  const Overlap status = overlap_status(out, in);
  AK_CHECK(status == Overlap::kNone, op, ": ", out_name, " must not overlap ", in_name, " (",
           status == Overlap::kFull ? "same memory" : "partial overlap", ")");
}

// seed: a 1-element int64 tensor on ref's device (drawn there by torch's generator). The CPU kernels take
// its value; the CUDA kernels read it from device memory (no host sync, CUDA-graph safe).
void check_seed(const char* op, const Tensor& seed, const Tensor& ref) {
  AK_CHECK(seed.scalar_type() == ScalarType::Long && seed.numel() == 1, op,
           ": seed must be a 1-element int64 tensor, got ", shape(seed), " of ", seed.scalar_type());
  AK_CHECK(same_device(seed, ref), op, ": seed must be on ", device_name(ref), ", got ", device_name(seed));
}

// One element: its address is the data pointer whatever the strides.
int64_t seed_on_host(const Tensor& seed) { return *static_cast<const int64_t*>(seed.const_data_ptr()); }

// dropout_forward and dropout_backward are one map, dst = src * (keep ? scale : 0).
void check_apply_dropout(const char* op, const char* src_name, const Tensor& src, const char* dst_name,
                         const Tensor& dst, const Tensor& seed, int64_t threshold, double scale) {
  check_dropout_scalars(op, threshold, scale);
  check_dropout_tensor(op, src_name, src, 1, "(numel,)");
  check_dropout_tensor(op, dst_name, dst, 1, "(numel,)");
  check_dropout_like(op, dst_name, dst, src_name, src);
  AK_CHECK(dst.numel() == src.numel(), op, ": ", dst_name, " must have ", src_name, "'s numel ", src.numel(),
           ", got ", dst.numel());
  check_no_overlap(op, dst_name, dst, src_name, src);
  check_seed(op, seed, src);
}

// t is (M, N) = ref's shape.
void check_same_shape(const char* op, const char* name, const Tensor& t, const char* ref_name,
                      const Tensor& ref) {
  AK_CHECK(same_shape(t, ref), op, ": ", name, " must have ", ref_name, "'s shape ", shape(ref), ", got ",
           shape(t));
}

// bias / dbias is (N,) for the (M, N) tensor ref.
void check_bias_shape(const char* op, const char* name, const Tensor& bias, const char* ref_name,
                      const Tensor& ref) {
  AK_CHECK(bias.size(0) == ref.size(1), op, ": ", name, " must have shape (N,) = (", ref.size(1), ",) for ",
           ref_name, " of shape ", shape(ref), ", got ", shape(bias));
}

// One tensor argument of bias_relu_dropout_*.
struct BiasReluDropoutArg {
  enum Shape { kMatrix, kBias };   // (M, N): x, y, dy, dx; or (N,): bias, dbias
  enum Access { kRead, kWritten };
  const char* name;
  const Tensor& tensor;
  Shape shape;
  Access access;
};

// args[0] is the lead (M, N) input the others are checked against; a written argument shares no memory
// with any before it (the inputs, and the outputs written before it).
void check_bias_relu_dropout(const char* op, std::initializer_list<BiasReluDropoutArg> args, const Tensor& seed,
                             int64_t threshold, double scale) {
  const BiasReluDropoutArg* const lead = args.begin();
  check_dropout_scalars(op, threshold, scale);
  for (const BiasReluDropoutArg& a : args) {
    const bool bias = a.shape == BiasReluDropoutArg::kBias;
    check_dropout_tensor(op, a.name, a.tensor, bias ? 1 : 2, bias ? "(N,)" : "(M, N)");
  }
  for (const BiasReluDropoutArg* a = lead + 1; a != args.end(); ++a) {
    check_dropout_like(op, a->name, a->tensor, lead->name, lead->tensor);
  }
  for (const BiasReluDropoutArg* a = lead + 1; a != args.end(); ++a) {
    const auto check_shape = a->shape == BiasReluDropoutArg::kBias ? check_bias_shape : check_same_shape;
    check_shape(op, a->name, a->tensor, lead->name, lead->tensor);
  }
  for (const BiasReluDropoutArg* out = lead; out != args.end(); ++out) {
    if (out->access != BiasReluDropoutArg::kWritten) continue;
    for (const BiasReluDropoutArg* in = lead; in != out; ++in) {
      check_no_overlap(op, out->name, out->tensor, in->name, in->tensor);
    }
  }
  check_seed(op, seed, lead->tensor);
}

void check_bias_relu_dropout_forward(const Tensor& x, const Tensor& bias, const Tensor& y, const Tensor& seed,
                                     int64_t threshold, double scale) {
  using Arg = BiasReluDropoutArg;
  check_bias_relu_dropout("bias_relu_dropout_forward",
                          {{"x", x, Arg::kMatrix, Arg::kRead},
                           {"bias", bias, Arg::kBias, Arg::kRead},
                           {"y", y, Arg::kMatrix, Arg::kWritten}},
                          seed, threshold, scale);
}

void check_bias_relu_dropout_backward(const Tensor& dy, const Tensor& y, const Tensor& dx, const Tensor& dbias,
                                      const Tensor& seed, int64_t threshold, double scale) {
  using Arg = BiasReluDropoutArg;
  check_bias_relu_dropout("bias_relu_dropout_backward",
                          {{"dy", dy, Arg::kMatrix, Arg::kRead},
                           {"y", y, Arg::kMatrix, Arg::kRead},
                           {"dx", dx, Arg::kMatrix, Arg::kWritten},
                           {"dbias", dbias, Arg::kBias, Arg::kWritten}},
                          seed, threshold, scale);
}

void dropout_forward_cpu(const Tensor& x, const Tensor& y, const Tensor& seed, int64_t threshold, double scale) {
  check_apply_dropout("dropout_forward", "x", x, "y", y, seed, threshold, scale);
  ak::apply_dropout_cpu(view(x), written_on_cpu(y), seed_on_host(seed), threshold, scale);
}

void dropout_backward_cpu(const Tensor& dy, const Tensor& dx, const Tensor& seed, int64_t threshold, double scale) {
  check_apply_dropout("dropout_backward", "dy", dy, "dx", dx, seed, threshold, scale);
  ak::apply_dropout_cpu(view(dy), written_on_cpu(dx), seed_on_host(seed), threshold, scale);
}

void bias_relu_dropout_forward_cpu(const Tensor& x, const Tensor& bias, const Tensor& y, const Tensor& seed,
                                   int64_t threshold, double scale) {
  check_bias_relu_dropout_forward(x, bias, y, seed, threshold, scale);
  ak::bias_relu_dropout_forward_cpu(view(x), view(bias), written_on_cpu(y), seed_on_host(seed), threshold, scale);
}

void bias_relu_dropout_backward_cpu(const Tensor& dy, const Tensor& y, const Tensor& dx, const Tensor& dbias,
                                    const Tensor& seed, int64_t threshold, double scale) {
  check_bias_relu_dropout_backward(dy, y, dx, dbias, seed, threshold, scale);
  ak::bias_relu_dropout_backward_cpu(view(dy), view(y), written_on_cpu(dx), view(dbias), seed_on_host(seed), threshold,
                                     scale);
}

// ---------------------------------------------------------------------------------------------
// The cuDNN LRN baseline (CUDA only)
// ---------------------------------------------------------------------------------------------

// The lead tensor of a CUDA-only operator (the others are checked against it): a cuda float32, float16 or
// bfloat16 tensor.
void check_cuda_lead(const char* op, const char* name, const Tensor& t) {
  AK_CHECK(t.is_cuda(), op, ": ", name, " must be a cuda tensor, got ", device_name(t));
  const auto dtype = t.scalar_type();
  AK_CHECK(dtype == ScalarType::Float || dtype == ScalarType::Half || dtype == ScalarType::BFloat16, op, ": ",
           name, " must be float32, float16 or bfloat16, got ", dtype);
}

#ifdef AK_WITH_CUDNN
// The memory format the cuDNN call uses for x (and then for y, dy, dx): channels_last when x is
// channels_last and not also NCHW-contiguous, as at::Tensor::suggest_memory_format.
bool check_cudnn_input(const char* op, const Tensor& x) {
  check_cuda_lead(op, "x", x);
  AK_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C, H, W), got shape ", shape(x));
  AK_CHECK(x.numel() <= std::numeric_limits<int>::max(), op, ": cuDNN descriptors take int sizes, got ", x.numel(),
           " elements");
  const bool nchw = dense_in(x, false), channels_last = !nchw && dense_in(x, true);
  AK_CHECK(nchw || channels_last, op, ": x must be contiguous or channels_last, got strides ", strides(x));
  return channels_last;
}

void check_cudnn_params(const char* op, int64_t size, double beta, double k) {
  const ak::CudnnLrnLimits lim = ak::cudnn_lrn_limits();
  AK_CHECK(size >= lim.min_n && size <= lim.max_n, op, ": cuDNN accepts ", lim.min_n, " <= size <= ", lim.max_n,
           ", got size = ", size);
  AK_CHECK(k >= lim.min_k, op, ": cuDNN requires k >= ", lim.min_k, ", got k = ", k);
  AK_CHECK(beta >= lim.min_beta, op, ": cuDNN requires beta >= ", lim.min_beta, ", got beta = ", beta);
}

void check_cudnn_like(const char* op, const char* name, const Tensor& t, const Tensor& x) {
  AK_CHECK(same_shape(t, x), op, ": ", name, " must have x's shape ", shape(x), ", got ", shape(t));
  AK_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " must have x's dtype");
  AK_CHECK(same_device(t, x), op, ": ", name, " must be on x's device");
}

// Returns whether the call runs channels_last.
bool check_cudnn_lrn_forward(const Tensor& x, int64_t size, double /*alpha*/, double beta, double k) {
  const char* op = "cudnn_lrn_forward";
  check_cudnn_params(op, size, beta, k);
  return check_cudnn_input(op, x);
}

bool check_cudnn_lrn_backward(const Tensor& x, const Tensor& y, const Tensor& dy, int64_t size, double /*alpha*/,
                              double beta, double k) {
  const char* op = "cudnn_lrn_backward";
  check_cudnn_params(op, size, beta, k);
  const bool channels_last = check_cudnn_input(op, x);
  check_cudnn_like(op, "y", y, x);
  check_cudnn_like(op, "dy", dy, x);
  return channels_last;
}
#endif

// =============================================================================================
// Convolution + bias + ReLU on CUDA (csrc/conv.h, conv_cuda.cu, conv_cuda_kernels.cuh)
//
//   conv2d_relu_forward_cuda(x, weight, bias, y, stride_h, stride_w, pad_h, pad_w, groups, allow_tf32) -> None
//     writes y = relu(conv2d(x, weight, bias, stride, padding, dilation 1, groups)), one kernel launch on the
//     current stream of x's device.
//     x       (N, C, H, W) cuda float32 / float16 / bfloat16, channels_last-contiguous
//     weight  (Cout, C / groups, KH, KW), same dtype and device, channels_last rows: strides
//             (row, 1, KW*Cg, Cg) with row >= KH*KW*Cg (a larger row stride pads rows, e.g. to 16 bytes)
//     bias    (Cout,) contiguous, or None
//     y       (N, Cout, OH, OW), any non-negative strides (channels_last is the fast layout), not
//             overlapping the inputs
//     allow_tf32  fp32 on TF32 tensor cores (else exact fp32 FMA); ignored for float16 / bfloat16
//   conv2d_relu_dgrad_cuda(dy, y, weight_t, dx, KH, KW, stride_h, stride_w, pad_h, pad_w, groups, allow_tf32)
//       -> None   writes dx = d(input) of that op, the ReLU mask (y > 0) applied to dy as it is loaded
//     dy, y     (N, Cout, OH, OW) channels_last-contiguous, y the forward's output
//     weight_t  the weight transposed: (groups * C/groups, row >= KH*KW*Cout/groups), contiguous rows,
//               weight_t[g*Cg + c, (kh*KW + kw)*Og + o] = weight[g*Og + o, c, kh, kw]
//     dx        (N, C, H, W), any non-negative strides, every element written
//   conv2d_relu_wgrad_cuda(dy, y, x, dw_part, db_part, KH, KW, stride_h, stride_w, pad_h, pad_w, groups,
//       allow_tf32) -> None   writes fp32 partial sums of d(weight) and d(bias) over `splits` pixel ranges
//     dy, y     as for dgrad;  x (N, C, H, W) channels_last-contiguous
//     dw_part   (splits, Cout, KH*KW*C/groups) contiguous float32, dw_part[s, o, (kh*KW + kw)*Cg + c]
//     db_part   (splits, Cout) contiguous float32;  the caller sums dim 0 (a fixed order: deterministic)
//   conv2d_relu_wgrad_partials_cuda(dy, y, x, KH, KW, stride_h, stride_w, pad_h, pad_w, groups, allow_tf32)
//       -> (dw_part, db_part)   the same with the splits conv.h's conv_wgrad_splits picks for the device (its
//     multiprocessors, the planned kernel's residency), the partial sums allocated here
// Each operator's argument checks are one function below; the torch-free ones are conv.h's *_problem_error.
// =============================================================================================

// The geometry of a backward call: the input (x or dx) and the output gradient dy, channels_last-contiguous.
ak::ConvProblem conv_backward_problem(const char* op, const Tensor& input, const char* input_name, const Tensor& dy,
                                      int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                      int64_t pad_w, int64_t groups) {
  ak::ConvProblem p{};
  p.N = input.size(0); p.C = input.size(1); p.H = input.size(2); p.W = input.size(3);
  p.Cout = dy.size(1); p.KH = KH; p.KW = KW;
  p.SH = stride_h; p.SW = stride_w; p.PH = pad_h; p.PW = pad_w; p.groups = groups;
  p.OH = dy.size(2); p.OW = dy.size(3);
  AK_CHECK(dy.size(0) == p.N, op, ": dy and ", input_name, " must have the same batch size");
  return p;
}

ak::ConvProblem check_conv2d_relu_forward(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                                          const Tensor& y, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                          int64_t pad_w, int64_t groups, bool /*allow_tf32*/) {
  const char* op = "conv2d_relu_forward_cuda";
  const bool has_bias = bias.has_value() && bias->defined();
  for (const Tensor* t : {&x, &weight, &y}) AK_CHECK(t->defined(), op, ": undefined tensor argument");
  check_cuda_lead(op, "x", x);
  const auto dtype = x.scalar_type();
  auto same = [&](const Tensor& t, const char* name) {
    AK_CHECK(same_device(t, x), op, ": ", name, " is on ", device_name(t), ", x on ", device_name(x));
    AK_CHECK(t.scalar_type() == dtype, op, ": ", name, " has dtype ", t.scalar_type(), ", x ", dtype);
  };
  same(weight, "weight");
  same(y, "y");
  if (has_bias) same(*bias, "bias");
  AK_CHECK(x.dim() == 4 && weight.dim() == 4 && y.dim() == 4, op, ": x, weight and y must be 4-D, got ",
           shape(x), ", ", shape(weight), ", ", shape(y));
  AK_CHECK(channels_last_contiguous(x), op, ": x must be channels_last-contiguous, got strides ", strides(x));
  const int64_t Cout = weight.size(0), Cg = weight.size(1), KH = weight.size(2), KW = weight.size(3);
  const int64_t K = KH * KW * Cg;
  // Strides of size-1 dimensions never enter an address: not checked.
  AK_CHECK((Cg == 1 || weight.stride(1) == 1) && (KW == 1 || weight.stride(3) == Cg) &&
               (KH == 1 || weight.stride(2) == KW * Cg) && (Cout == 1 || weight.stride(0) >= K),
           op, ": weight must have channels_last rows, strides (row >= ", K, ", 1, ", KW * Cg, ", ", Cg,
           "), got ", strides(weight));
  if (has_bias)
    AK_CHECK(bias->dim() == 1 && bias->size(0) == Cout && (Cout == 1 || bias->stride(0) == 1), op,
             ": bias must be 1-D contiguous with ", Cout, " elements, got shape ", shape(*bias));
  ak::ConvProblem p{};
  p.N = x.size(0); p.C = x.size(1); p.H = x.size(2); p.W = x.size(3);
  p.Cout = Cout; p.KH = KH; p.KW = KW;
  p.SH = stride_h; p.SW = stride_w; p.PH = pad_h; p.PW = pad_w; p.groups = groups;
  AK_CHECK(groups >= 1 && Cg * groups == p.C, op, ": weight.shape[1] * groups (", Cg, " * ", groups,
           ") must equal the input channels ", p.C);
  AK_CHECK(stride_h >= 1 && stride_w >= 1, op, ": stride must be >= 1");
  p.OH = (p.H + 2 * pad_h - KH) / std::max<int64_t>(stride_h, 1) + 1;
  p.OW = (p.W + 2 * pad_w - KW) / std::max<int64_t>(stride_w, 1) + 1;
  AK_CHECK(y.size(0) == p.N && y.size(1) == Cout && y.size(2) == p.OH && y.size(3) == p.OW, op,
           ": y must have shape (", p.N, ", ", Cout, ", ", p.OH, ", ", p.OW, "), got ", shape(y));
  for (int d = 0; d < 4; ++d) AK_CHECK(y.stride(d) >= 0, op, ": y has a negative stride");
  p.w_row_stride = Cout == 1 ? std::max<int64_t>(weight.stride(0), K) : weight.stride(0);
  p.y_sn = y.stride(0); p.y_sc = y.stride(1); p.y_sh = y.stride(2); p.y_sw = y.stride(3);
  if (const char* why = ak::conv_problem_error(p)) AK_CHECK(false, op, ": ", why);
  if (y.numel() == 0) return p;
  assert_written_apart(y, {&x, &weight, has_bias ? &*bias : nullptr});
  return p;
}

ak::ConvDgradProblem check_conv2d_relu_dgrad(const Tensor& dy, const Tensor& y, const Tensor& weight_t,
                                             const Tensor& dx, int64_t KH, int64_t KW, int64_t stride_h,
                                             int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t groups,
                                             bool /*allow_tf32*/) {
  const char* op = "conv2d_relu_dgrad_cuda";
  for (const Tensor* t : {&dy, &y, &weight_t, &dx}) AK_CHECK(t->defined(), op, ": undefined tensor argument");
  check_cuda_lead(op, "dy", dy);
  const auto dtype = dy.scalar_type();
  for (const Tensor* t : {&y, &weight_t, &dx}) {
    AK_CHECK(same_device(*t, dy), op, ": all tensors must be on ", device_name(dy), ", got ", device_name(*t));
    AK_CHECK(t->scalar_type() == dtype, op, ": all tensors must have dtype ", dtype, ", got ", t->scalar_type());
  }
  AK_CHECK(dy.dim() == 4 && y.dim() == 4 && dx.dim() == 4 && weight_t.dim() == 2, op,
           ": dy, y, dx must be 4-D and weight_t 2-D, got ", shape(dy), ", ", shape(y), ", ", shape(dx), ", ",
           shape(weight_t));
  AK_CHECK(same_shape(dy, y), op, ": dy and y must have the same shape, got ", shape(dy), " and ", shape(y));
  AK_CHECK(channels_last_contiguous(dy) && channels_last_contiguous(y), op,
           ": dy and y must be channels_last-contiguous");
  ak::ConvDgradProblem d{};
  ak::ConvProblem& p = d.p;
  p = conv_backward_problem(op, dx, "dx", dy, KH, KW, stride_h, stride_w, pad_h, pad_w, groups);
  AK_CHECK(groups >= 1 && p.C % groups == 0 && p.Cout % groups == 0, op,
           ": groups must divide the channels of dx and dy");
  const int64_t Cg = p.C / groups, Kd = KH * KW * (p.Cout / groups);
  AK_CHECK(weight_t.size(0) == groups * Cg && weight_t.size(1) >= Kd &&
               (weight_t.size(0) == 1 || weight_t.stride(0) >= Kd) && (weight_t.size(1) == 1 || weight_t.stride(1) == 1),
           op, ": weight_t must be (groups * C/groups, >= KH*KW*Cout/groups) = (", groups * Cg, ", >= ", Kd,
           ") with contiguous rows, got shape ", shape(weight_t), " strides ", strides(weight_t));
  p.w_row_stride = weight_t.size(0) == 1 ? std::max<int64_t>(Kd, weight_t.stride(0)) : weight_t.stride(0);
  p.y_sn = dy.stride(0); p.y_sc = dy.stride(1); p.y_sh = dy.stride(2); p.y_sw = dy.stride(3);
  if (p.OH == 1 && p.OW == 1) { p.y_sh = p.OW * p.Cout; p.y_sw = p.Cout; }  // strides of size-1 dims are free
  else if (p.OW == 1) p.y_sw = p.Cout;
  else if (p.OH == 1) p.y_sh = p.OW * p.Cout;
  if (p.N == 1) p.y_sn = p.OH * p.OW * p.Cout;
  if (p.Cout == 1) p.y_sc = 1;
  d.dx_sn = dx.stride(0); d.dx_sc = dx.stride(1); d.dx_sh = dx.stride(2); d.dx_sw = dx.stride(3);
  if (const char* why = ak::conv_dgrad_problem_error(d)) AK_CHECK(false, op, ": ", why);
  if (dx.numel() == 0) return d;
  assert_written_apart(dx, {&dy, &y, &weight_t});
  return d;
}

// dy, y and x of a wgrad and its geometry (the checks both wgrad operators share); splits 1.
ak::ConvWgradProblem check_wgrad_inputs(const char* op, const Tensor& dy, const Tensor& y, const Tensor& x,
                                        int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                        int64_t pad_w, int64_t groups) {
  for (const Tensor* t : {&dy, &y, &x}) AK_CHECK(t->defined(), op, ": undefined tensor argument");
  check_cuda_lead(op, "dy", dy);
  const auto dtype = dy.scalar_type();
  for (const Tensor* t : {&y, &x})
    AK_CHECK(same_device(*t, dy), op, ": all tensors must be on ", device_name(dy), ", got ", device_name(*t));
  AK_CHECK(y.scalar_type() == dtype && x.scalar_type() == dtype, op, ": dy, y and x must share a dtype");
  AK_CHECK(dy.dim() == 4 && y.dim() == 4 && x.dim() == 4, op, ": dy, y and x must be 4-D");
  AK_CHECK(same_shape(dy, y), op, ": dy and y must have the same shape, got ", shape(dy), " and ", shape(y));
  AK_CHECK(channels_last_contiguous(dy) && channels_last_contiguous(y) && channels_last_contiguous(x), op,
           ": dy, y and x must be channels_last-contiguous");
  ak::ConvWgradProblem w{};
  ak::ConvProblem& p = w.p;
  p = conv_backward_problem(op, x, "x", dy, KH, KW, stride_h, stride_w, pad_h, pad_w, groups);
  // channels_last-contiguous (checked above): the strides the kernel assumes.
  p.y_sc = 1; p.y_sw = p.Cout; p.y_sh = p.OW * p.Cout; p.y_sn = p.OH * p.OW * p.Cout;
  AK_CHECK(groups >= 1 && p.C % groups == 0, op, ": groups must divide the input channels");
  w.splits = 1;
  return w;
}

ak::ConvWgradProblem check_conv2d_relu_wgrad(const Tensor& dy, const Tensor& y, const Tensor& x,
                                             const Tensor& dw_part, const Tensor& db_part, int64_t KH, int64_t KW,
                                             int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                                             int64_t groups, bool /*allow_tf32*/) {
  const char* op = "conv2d_relu_wgrad_cuda";
  for (const Tensor* t : {&dw_part, &db_part}) AK_CHECK(t->defined(), op, ": undefined tensor argument");
  ak::ConvWgradProblem w = check_wgrad_inputs(op, dy, y, x, KH, KW, stride_h, stride_w, pad_h, pad_w, groups);
  const ak::ConvProblem& p = w.p;
  for (const Tensor* t : {&dw_part, &db_part})
    AK_CHECK(same_device(*t, dy), op, ": all tensors must be on ", device_name(dy), ", got ", device_name(*t));
  AK_CHECK(dw_part.scalar_type() == ScalarType::Float && db_part.scalar_type() == ScalarType::Float, op,
           ": dw_part and db_part must be float32");
  const int64_t K = KH * KW * (p.C / groups);
  AK_CHECK(dw_part.dim() == 3 && dw_part.size(1) == p.Cout && dw_part.size(2) == K && dw_part.is_contiguous(), op,
           ": dw_part must be contiguous (splits, ", p.Cout, ", ", K, "), got ", shape(dw_part));
  AK_CHECK(db_part.dim() == 2 && db_part.size(0) == dw_part.size(0) && db_part.size(1) == p.Cout &&
               db_part.is_contiguous(),
           op, ": db_part must be contiguous (splits, ", p.Cout, "), got ", shape(db_part));
  w.splits = dw_part.size(0);
  if (const char* why = ak::conv_wgrad_problem_error(w)) AK_CHECK(false, op, ": ", why);
  assert_no_overlap(dw_part, db_part);
  return w;
}

ak::ConvWgradProblem check_conv2d_relu_wgrad_partials(const Tensor& dy, const Tensor& y, const Tensor& x, int64_t KH,
                                                      int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h,
                                                      int64_t pad_w, int64_t groups, bool /*allow_tf32*/) {
  const char* op = "conv2d_relu_wgrad_partials_cuda";
  const ak::ConvWgradProblem w = check_wgrad_inputs(op, dy, y, x, KH, KW, stride_h, stride_w, pad_h, pad_w, groups);
  if (const char* why = ak::conv_wgrad_problem_error(w)) AK_CHECK(false, op, ": ", why);
  return w;
}

// ---------------------------------------------------------------------------------------------
// CUDA implementations: the same checks, then the kernels on the current stream of the tensors' device
// ---------------------------------------------------------------------------------------------

#ifdef AK_WITH_CUDA
void lrn_forward_cuda(const Tensor& x, const Tensor& y, int64_t size, double alpha, double beta, double k,
                      bool channels_last) {
  check_lrn_forward(x, y, size, channels_last);
  const CurrentCudaStream stream(x);
  ak::lrn_forward_cuda(view(x), view(y), size, alpha, beta, k, channels_last, stream.get());
}

void lrn_backward_cuda(const Tensor& x, const Tensor& dy, const Tensor& dx, int64_t size, double alpha,
                       double beta, double k, bool channels_last) {
  check_lrn_backward(x, dy, dx, size, channels_last);
  const CurrentCudaStream stream(x);
  ak::lrn_backward_cuda(view(x), view(dy), view(dx), size, alpha, beta, k, channels_last, stream.get());
}

// lrn_backward with the NCHW kernel's v1 window sums on every window (benchmarks compare it with the rule).
void lrn_backward_v1_cuda(const Tensor& x, const Tensor& dy, const Tensor& dx, int64_t size, double alpha,
                          double beta, double k, bool channels_last) {
  check_lrn_backward(x, dy, dx, size, channels_last);
  const CurrentCudaStream stream(x);
  ak::lrn_backward_cuda(view(x), view(dy), view(dx), size, alpha, beta, k, channels_last, stream.get(),
                        ak::LrnBackwardSums::kV1);
}

void max_pool2d_forward_cuda(const Tensor& x, const Tensor& y, const Tensor& offsets, int64_t kH, int64_t kW,
                             int64_t sH, int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
  const ak::PoolParams p = check_max_pool2d_forward(x, y, offsets, kH, kW, sH, sW, pH, pW, channels_last);
  const CurrentCudaStream stream(x);
  ak::max_pool2d_forward_cuda(view(x), view(y), view(offsets), p, channels_last, stream.get());
}

void max_pool2d_backward_cuda(const Tensor& dy, const Tensor& offsets, const Tensor& dx, int64_t kH, int64_t kW,
                              int64_t sH, int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
  const ak::PoolParams p = check_max_pool2d_backward(dy, offsets, dx, kH, kW, sH, sW, pH, pW, channels_last);
  const CurrentCudaStream stream(dy);
  ak::max_pool2d_backward_cuda(view(dy), view(offsets), view(dx), p, channels_last, stream.get());
}

void relu_lrn_max_pool2d_forward_cuda(const Tensor& x, const Tensor& z, const Tensor& offsets, int64_t size,
                                      double alpha, double beta, double k, int64_t kH, int64_t kW, int64_t sH,
                                      int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
  const ak::PoolParams p = check_relu_lrn_max_pool2d_forward(x, z, offsets, size, kH, kW, sH, sW, pH, pW,
                                                             channels_last);
  const CurrentCudaStream stream(x);
  ak::relu_lrn_max_pool2d_forward_cuda(view(x), view(z), view(offsets), size, alpha, beta, k, p, channels_last,
                                       stream.get());
}

void relu_lrn_max_pool2d_backward_cuda(const Tensor& x, const Tensor& dz, const Tensor& offsets, const Tensor& dx,
                                       int64_t size, double alpha, double beta, double k, int64_t kH, int64_t kW,
                                       int64_t sH, int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
  const ak::PoolParams p = check_relu_lrn_max_pool2d_backward(x, dz, offsets, dx, size, kH, kW, sH, sW, pH, pW,
                                                              channels_last);
  const CurrentCudaStream stream(x);
  ak::relu_lrn_max_pool2d_backward_cuda(view(x), view(dz), view(offsets), view(dx), size, alpha, beta, k, p,
                                        channels_last, stream.get());
}

const int64_t* seed_on_device(const Tensor& seed) { return static_cast<const int64_t*>(seed.const_data_ptr()); }

void dropout_forward_cuda(const Tensor& x, const Tensor& y, const Tensor& seed, int64_t threshold, double scale) {
  check_apply_dropout("dropout_forward", "x", x, "y", y, seed, threshold, scale);
  const CurrentCudaStream stream(x);
  ak::apply_dropout_cuda(view(x), view(y), seed_on_device(seed), threshold, scale, stream.get());
}

void dropout_backward_cuda(const Tensor& dy, const Tensor& dx, const Tensor& seed, int64_t threshold,
                           double scale) {
  check_apply_dropout("dropout_backward", "dy", dy, "dx", dx, seed, threshold, scale);
  const CurrentCudaStream stream(dy);
  ak::apply_dropout_cuda(view(dy), view(dx), seed_on_device(seed), threshold, scale, stream.get());
}

void bias_relu_dropout_forward_cuda(const Tensor& x, const Tensor& bias, const Tensor& y, const Tensor& seed,
                                    int64_t threshold, double scale) {
  check_bias_relu_dropout_forward(x, bias, y, seed, threshold, scale);
  const CurrentCudaStream stream(x);
  ak::bias_relu_dropout_forward_cuda(view(x), view(bias), view(y), seed_on_device(seed), threshold, scale,
                                     stream.get());
}

void bias_relu_dropout_backward_cuda(const Tensor& dy, const Tensor& y, const Tensor& dx, const Tensor& dbias,
                                     const Tensor& seed, int64_t threshold, double scale) {
  check_bias_relu_dropout_backward(dy, y, dx, dbias, seed, threshold, scale);
  const CurrentCudaStream stream(dy);
  // The per-chunk dbias sums of a matrix taller than one chunk (dropout_math.h): M * N / 512 floats from
  // torch's caching allocator (on the current stream, so CUDA-graph capture is safe).
  const int64_t chunks = ak::dbias_chunks(dy.size(0));
  const std::vector<int64_t> partial_shape = {chunks > 1 ? chunks : 0, dy.size(1)};
  const Tensor partial = torch::stable::new_empty(dy, partial_shape, ScalarType::Float);
  ak::bias_relu_dropout_backward_cuda(view(dy), view(y), view(dx), view(dbias), view(partial), seed_on_device(seed),
                                      threshold, scale, stream.get());
}

ak::ConvDtype conv_dtype(ScalarType t) {
  return t == ScalarType::Float ? ak::ConvDtype::kFloat32
         : t == ScalarType::Half ? ak::ConvDtype::kFloat16 : ak::ConvDtype::kBFloat16;
}

// Runs launch(stream, device, err, errlen), one of conv.h's launchers (0, or nonzero with a message in err),
// on the current stream of lead's device.
template <typename Launch>
void run_conv_launcher(const Tensor& lead, Launch launch) {
  const CurrentCudaStream current(lead);
  char err[512] = {0};
  const int rc = launch(static_cast<cudaStream_t>(current.get()), static_cast<int>(lead.get_device_index()), err,
                        sizeof(err));
  AK_CHECK(rc == 0, static_cast<const char*>(err));
}

void conv2d_relu_forward_cuda(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                              const Tensor& y, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                              int64_t groups, bool allow_tf32) {
  const ak::ConvProblem p =
      check_conv2d_relu_forward(x, weight, bias, y, stride_h, stride_w, pad_h, pad_w, groups, allow_tf32);
  if (y.numel() == 0) return;
  const void* b = bias.has_value() && bias->defined() ? bias->const_data_ptr() : nullptr;
  run_conv_launcher(x, [&](cudaStream_t stream, int device, char* err, size_t errlen) {
    return ak::conv2d_relu_forward_cuda(x.const_data_ptr(), weight.const_data_ptr(), b, y.mutable_data_ptr(), p,
                                        conv_dtype(x.scalar_type()), allow_tf32, stream, device, err, errlen);
  });
}

void conv2d_relu_dgrad_cuda(const Tensor& dy, const Tensor& y, const Tensor& weight_t, const Tensor& dx, int64_t KH,
                            int64_t KW, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                            int64_t groups, bool allow_tf32) {
  const ak::ConvDgradProblem d = check_conv2d_relu_dgrad(dy, y, weight_t, dx, KH, KW, stride_h, stride_w, pad_h,
                                                         pad_w, groups, allow_tf32);
  if (dx.numel() == 0) return;
  run_conv_launcher(dy, [&](cudaStream_t stream, int device, char* err, size_t errlen) {
    return ak::conv2d_relu_dgrad_cuda(dy.const_data_ptr(), y.const_data_ptr(), weight_t.const_data_ptr(),
                                      dx.mutable_data_ptr(), d, conv_dtype(dy.scalar_type()), allow_tf32, stream,
                                      device, err, errlen);
  });
}

void conv2d_relu_wgrad_cuda(const Tensor& dy, const Tensor& y, const Tensor& x, const Tensor& dw_part,
                            const Tensor& db_part, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                            int64_t pad_h, int64_t pad_w, int64_t groups, bool allow_tf32) {
  const ak::ConvWgradProblem w = check_conv2d_relu_wgrad(dy, y, x, dw_part, db_part, KH, KW, stride_h, stride_w,
                                                         pad_h, pad_w, groups, allow_tf32);
  run_conv_launcher(dy, [&](cudaStream_t stream, int device, char* err, size_t errlen) {
    return ak::conv2d_relu_wgrad_cuda(dy.const_data_ptr(), y.const_data_ptr(), x.const_data_ptr(),
                                      static_cast<float*>(dw_part.mutable_data_ptr()),
                                      static_cast<float*>(db_part.mutable_data_ptr()), w,
                                      conv_dtype(dy.scalar_type()), allow_tf32, stream, device, err, errlen);
  });
}

// The wgrad with the pixel splits its plan picks for this device (conv.h conv_wgrad_splits): allocates dw_part
// (splits, Cout, K) and db_part (splits, Cout) fp32 from torch's caching allocator on the current stream (safe
// under CUDA-graph capture) and returns them; the caller sums dim 0.
std::tuple<Tensor, Tensor> conv2d_relu_wgrad_partials_cuda(const Tensor& dy, const Tensor& y, const Tensor& x,
                                                           int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                                                           int64_t pad_h, int64_t pad_w, int64_t groups,
                                                           bool allow_tf32) {
  ak::ConvWgradProblem w = check_conv2d_relu_wgrad_partials(dy, y, x, KH, KW, stride_h, stride_w, pad_h, pad_w,
                                                            groups, allow_tf32);
  const ak::ConvDtype dtype = conv_dtype(dy.scalar_type());
  const int device = static_cast<int>(dy.get_device_index());
  char err[512] = {0};
  int64_t splits = 1;
  const int rc = ak::conv2d_relu_wgrad_splits_cuda(dy.const_data_ptr(), y.const_data_ptr(), x.const_data_ptr(), w,
                                                   dtype, allow_tf32, device, &splits, err, sizeof(err));
  AK_CHECK(rc == 0, static_cast<const char*>(err));
  w.splits = splits;
  const int64_t K = KH * KW * (w.p.C / groups);
  const std::vector<int64_t> dw_shape = {splits, w.p.Cout, K}, db_shape = {splits, w.p.Cout};
  const Tensor dw_part = torch::stable::new_empty(dy, dw_shape, ScalarType::Float);
  const Tensor db_part = torch::stable::new_empty(dy, db_shape, ScalarType::Float);
  run_conv_launcher(dy, [&](cudaStream_t stream, int dev, char* e, size_t elen) {
    return ak::conv2d_relu_wgrad_cuda(dy.const_data_ptr(), y.const_data_ptr(), x.const_data_ptr(),
                                      static_cast<float*>(dw_part.mutable_data_ptr()),
                                      static_cast<float*>(db_part.mutable_data_ptr()), w, dtype, allow_tf32, stream,
                                      dev, e, elen);
  });
  return std::make_tuple(dw_part, db_part);
}
#endif  // AK_WITH_CUDA

#ifdef AK_WITH_CUDNN
Tensor in_layout(const Tensor& t, bool channels_last) {
  if (dense_in(t, channels_last)) return t;
  return torch::stable::contiguous(t, channels_last ? torch::headeronly::MemoryFormat::ChannelsLast
                                                    : torch::headeronly::MemoryFormat::Contiguous);
}

Tensor cudnn_lrn_forward_cuda(const Tensor& x_in, int64_t size, double alpha, double beta, double k) {
  const bool channels_last = check_cudnn_lrn_forward(x_in, size, alpha, beta, k);
  const CurrentCudaStream stream(x_in);
  const Tensor x = in_layout(x_in, channels_last);
  const Tensor y = torch::stable::empty_like(x);  // preserves x's (dense) layout
  ak::cudnn_lrn_forward(view(x), view(y), size, alpha, beta, k, stream.get());
  return y;
}

Tensor cudnn_lrn_backward_cuda(const Tensor& x_in, const Tensor& y_in, const Tensor& dy_in, int64_t size,
                               double alpha, double beta, double k) {
  const bool channels_last = check_cudnn_lrn_backward(x_in, y_in, dy_in, size, alpha, beta, k);
  const CurrentCudaStream stream(x_in);
  // One layout for all four tensors (no copy when they already share x's).
  const Tensor x = in_layout(x_in, channels_last), y = in_layout(y_in, channels_last),
               dy = in_layout(dy_in, channels_last);
  const Tensor dx = torch::stable::empty_like(x);
  ak::cudnn_lrn_backward(view(x), view(y), view(dy), view(dx), size, alpha, beta, k, stream.get());
  return dx;
}
#endif  // AK_WITH_CUDNN

// What the CPU dispatch key runs for a CUDA-only operator: the operator's own check, which rejects the cpu
// tensor by name ("x must be a cuda tensor, got cpu"). Result is the operator's return type.
template <typename Result, auto Check>
struct CudaOnly;

template <typename Result, typename Checked, typename... Args, Checked (*Check)(Args...)>
struct CudaOnly<Result, Check> {
  static Result on_cpu(Args... args) {
    Check(args...);
    throw std::runtime_error("alexnet_kernels._C: this operator takes cuda tensors only");
  }
};

// --- build_info(): what this library was built with ---------------------------------------------------

#define AK_STRINGIFY_(x) #x
#define AK_STRINGIFY(x) AK_STRINGIFY_(x)

bool set_item(PyObject* dict, const char* key, PyObject* value) {
  if (value == nullptr) return false;
  const int rc = PyDict_SetItemString(dict, key, value);
  Py_DECREF(value);
  return rc == 0;
}

PyObject* build_info(PyObject* /*self*/, PyObject* /*args*/) {
  PyObject* info = PyDict_New();
  if (info == nullptr) return nullptr;
#if defined(__clang__)
  const std::string compiler = "clang " __clang_version__;
#elif defined(__GNUC__)
  const std::string compiler = "gcc " __VERSION__;
#else
  const std::string compiler = "unknown";
#endif
  const unsigned long long target = TORCH_TARGET_VERSION;
  const std::string abi_target = std::to_string(target >> 56) + "." + std::to_string((target >> 48) & 0xff);
  bool ok = set_item(info, "torch_version", PyUnicode_FromString(AK_BUILD_TORCH_VERSION)) &&
            set_item(info, "cuda_version", PyUnicode_FromString(AK_BUILD_CUDA_VERSION)) &&
            set_item(info, "cuda_archs", PyUnicode_FromString(AK_BUILD_CUDA_ARCHS)) &&
            set_item(info, "cuda_home", PyUnicode_FromString(AK_BUILD_CUDA_HOME)) &&
            set_item(info, "git_commit", PyUnicode_FromString(AK_BUILD_GIT_COMMIT)) &&
            set_item(info, "sources_digest", PyUnicode_FromString(AK_BUILD_SOURCES_DIGEST)) &&
            set_item(info, "compiler", PyUnicode_FromString(compiler.c_str())) &&
            set_item(info, "abi", PyUnicode_FromString("torch stable C ABI")) &&
            set_item(info, "abi_target", PyUnicode_FromString(abi_target.c_str())) &&
            set_item(info, "python_abi", PyUnicode_FromString("abi3, Python >= " AK_STRINGIFY(AK_PY_LIMITED_API_MIN)));
#ifdef AK_WITH_CUDA
  ok = ok && set_item(info, "with_cuda", PyBool_FromLong(1));
#else
  ok = ok && set_item(info, "with_cuda", PyBool_FromLong(0));
#endif
#ifdef AK_WITH_CUDNN
  ok = ok && set_item(info, "with_cudnn", PyBool_FromLong(1)) &&
       set_item(info, "cudnn_version", PyLong_FromLong(static_cast<long>(CUDNN_VERSION)));
#else
  ok = ok && set_item(info, "with_cudnn", PyBool_FromLong(0));
  if (ok) {
    Py_INCREF(Py_None);
    ok = set_item(info, "cudnn_version", Py_None);
  }
#endif
  if (!ok) {
    Py_DECREF(info);
    return nullptr;
  }
  return info;
}

PyMethodDef module_methods[] = {
    {"build_info", build_info, METH_NOARGS, "What this extension was built with (dict)"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_C",
    "alexnet_kernels compiled kernels: cross-channel LRN, max-pool, fused ReLU -> LRN -> max-pool, Philox dropout "
    "and fused bias + ReLU + dropout (CPU and CUDA), and the cuDNN LRN baseline. Importing this module registers "
    "them as torch.ops.alexnet_kernels_C.<name>.",
    -1,
    module_methods,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

}  // namespace

extern "C" PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&module_def); }

// --- the operators --------------------------------------------------------------------------------------
// (a!) marks what an operator writes. The dispatcher picks the kernel by the tensors' device: CPU
// implementations are registered under the CPU key, CUDA ones under CUDA (in a build with the CUDA
// sources); both run the operator's one check_* function. A build without the CUDA sources registers no
// CUDA kernels, so cuda tensors meet torch's "could not run ... with arguments from the 'CUDA' backend"
// (the Python layer reports it first, as BackendUnavailableError).

STABLE_TORCH_LIBRARY(alexnet_kernels_C, m) {
  m.def("lrn_forward(Tensor x, Tensor(a!) y, int size, float alpha, float beta, float k, bool channels_last) -> ()");
  m.def("lrn_backward(Tensor x, Tensor dy, Tensor(a!) dx, int size, float alpha, float beta, float k, "
        "bool channels_last) -> ()");
  // Internal (CUDA only): lrn_backward with the NCHW kernel's v1 window sums on every window, for benchmarks
  // comparing the two variants; lrn_backward picks between them by rule.
  m.def("lrn_backward_v1(Tensor x, Tensor dy, Tensor(a!) dx, int size, float alpha, float beta, float k, "
        "bool channels_last) -> ()");
  m.def("cudnn_lrn_forward(Tensor x, int size, float alpha, float beta, float k) -> Tensor");
  m.def("cudnn_lrn_backward(Tensor x, Tensor y, Tensor dy, int size, float alpha, float beta, float k) -> Tensor");
  m.def("max_pool2d_forward(Tensor x, Tensor(a!) y, Tensor(b!) offsets, int kH, int kW, int sH, int sW, int pH, "
        "int pW, bool channels_last) -> ()");
  m.def("max_pool2d_backward(Tensor dy, Tensor offsets, Tensor(a!) dx, int kH, int kW, int sH, int sW, int pH, "
        "int pW, bool channels_last) -> ()");
  m.def("relu_lrn_max_pool2d_forward(Tensor x, Tensor(a!) z, Tensor(b!) offsets, int size, float alpha, "
        "float beta, float k, int kH, int kW, int sH, int sW, int pH, int pW, bool channels_last) -> ()");
  m.def("relu_lrn_max_pool2d_backward(Tensor x, Tensor dz, Tensor offsets, Tensor(a!) dx, int size, float alpha, "
        "float beta, float k, int kH, int kW, int sH, int sW, int pH, int pW, bool channels_last) -> ()");
  m.def("dropout_forward(Tensor x, Tensor(a!) y, Tensor seed, int threshold, float scale) -> ()");
  m.def("dropout_backward(Tensor dy, Tensor(a!) dx, Tensor seed, int threshold, float scale) -> ()");
  m.def("bias_relu_dropout_forward(Tensor x, Tensor bias, Tensor(a!) y, Tensor seed, int threshold, "
        "float scale) -> ()");
  m.def("bias_relu_dropout_backward(Tensor dy, Tensor y, Tensor(a!) dx, Tensor(b!) dbias, Tensor seed, "
        "int threshold, float scale) -> ()");
  m.def("conv2d_relu_forward_cuda(Tensor x, Tensor weight, Tensor? bias, Tensor(a!) y, int stride_h, int stride_w, "
        "int pad_h, int pad_w, int groups, bool allow_tf32) -> ()");
  m.def("conv2d_relu_dgrad_cuda(Tensor dy, Tensor y, Tensor weight_t, Tensor(a!) dx, int KH, int KW, int stride_h, "
        "int stride_w, int pad_h, int pad_w, int groups, bool allow_tf32) -> ()");
  m.def("conv2d_relu_wgrad_cuda(Tensor dy, Tensor y, Tensor x, Tensor(a!) dw_part, Tensor(b!) db_part, int KH, "
        "int KW, int stride_h, int stride_w, int pad_h, int pad_w, int groups, bool allow_tf32) -> ()");
  // The wgrad with the pixel splits its plan picks for the device (conv.h conv_wgrad_splits): returns the
  // partial sums (dw_part, db_part) it allocates; what the Python layer calls.
  m.def("conv2d_relu_wgrad_partials_cuda(Tensor dy, Tensor y, Tensor x, int KH, int KW, int stride_h, "
        "int stride_w, int pad_h, int pad_w, int groups, bool allow_tf32) -> (Tensor, Tensor)");
}

// The operators implemented for both devices (<name>_cpu and <name>_cuda above): one list for both
// registrations, so that neither device can miss one.
#define AK_FOR_EACH_CPU_AND_CUDA_OP(X)                                                                     \
  X(lrn_forward) X(lrn_backward) X(max_pool2d_forward) X(max_pool2d_backward) X(relu_lrn_max_pool2d_forward) \
  X(relu_lrn_max_pool2d_backward) X(dropout_forward) X(dropout_backward) X(bias_relu_dropout_forward)         \
  X(bias_relu_dropout_backward)

STABLE_TORCH_LIBRARY_IMPL(alexnet_kernels_C, CPU, m) {
#define AK_IMPL_CPU(name) m.impl(#name, TORCH_BOX(&name##_cpu));
  AK_FOR_EACH_CPU_AND_CUDA_OP(AK_IMPL_CPU)
#undef AK_IMPL_CPU
  // CUDA-only operators: cpu tensors get the operator's own message.
  m.impl("conv2d_relu_forward_cuda", TORCH_BOX((&CudaOnly<void, check_conv2d_relu_forward>::on_cpu)));
  m.impl("conv2d_relu_dgrad_cuda", TORCH_BOX((&CudaOnly<void, check_conv2d_relu_dgrad>::on_cpu)));
  m.impl("conv2d_relu_wgrad_cuda", TORCH_BOX((&CudaOnly<void, check_conv2d_relu_wgrad>::on_cpu)));
  m.impl("conv2d_relu_wgrad_partials_cuda",
         TORCH_BOX((&CudaOnly<std::tuple<Tensor, Tensor>, check_conv2d_relu_wgrad_partials>::on_cpu)));
#ifdef AK_WITH_CUDNN
  m.impl("cudnn_lrn_forward", TORCH_BOX((&CudaOnly<Tensor, check_cudnn_lrn_forward>::on_cpu)));
  m.impl("cudnn_lrn_backward", TORCH_BOX((&CudaOnly<Tensor, check_cudnn_lrn_backward>::on_cpu)));
#endif
}

#ifdef AK_WITH_CUDA
STABLE_TORCH_LIBRARY_IMPL(alexnet_kernels_C, CUDA, m) {
#define AK_IMPL_CUDA(name) m.impl(#name, TORCH_BOX(&name##_cuda));
  AK_FOR_EACH_CPU_AND_CUDA_OP(AK_IMPL_CUDA)
#undef AK_IMPL_CUDA
  m.impl("lrn_backward_v1", TORCH_BOX(&lrn_backward_v1_cuda));
  m.impl("conv2d_relu_forward_cuda", TORCH_BOX(&conv2d_relu_forward_cuda));
  m.impl("conv2d_relu_dgrad_cuda", TORCH_BOX(&conv2d_relu_dgrad_cuda));
  m.impl("conv2d_relu_wgrad_cuda", TORCH_BOX(&conv2d_relu_wgrad_cuda));
  m.impl("conv2d_relu_wgrad_partials_cuda", TORCH_BOX(&conv2d_relu_wgrad_partials_cuda));
#ifdef AK_WITH_CUDNN
  m.impl("cudnn_lrn_forward", TORCH_BOX(&cudnn_lrn_forward_cuda));
  m.impl("cudnn_lrn_backward", TORCH_BOX(&cudnn_lrn_backward_cuda));
#endif
}
#endif
