// Python bindings of alexnet_kernels._C: argument checks, then dispatch to the CPU or CUDA kernels.
//
//   lrn_forward(x, y, size, alpha, beta, k, channels_last) -> None          writes y
//   lrn_backward(x, dy, dx, size, alpha, beta, k, channels_last) -> None    writes dx
//   cudnn_lrn_forward(x, size, alpha, beta, k) -> y                         (cuDNN baseline, 4-D)
//   cudnn_lrn_backward(x, y, dy, size, alpha, beta, k) -> dx
//   max_pool2d_forward(x, y, offsets, kH, kW, sH, sW, pH, pW, channels_last) -> None           writes y, offsets
//   max_pool2d_backward(dy, offsets, dx, kH, kW, sH, sW, pH, pW, channels_last) -> None        writes dx
//   relu_lrn_max_pool2d_forward(x, z, offsets, size, alpha, beta, k, kH, kW, sH, sW, pH, pW, channels_last)
//       -> None                                                              writes z, offsets
//   relu_lrn_max_pool2d_backward(x, dz, offsets, dx, size, alpha, beta, k, kH, kW, sH, sW, pH, pW,
//       channels_last) -> None                                               writes dx
//   dropout_forward(x, y, seed, threshold, scale) -> None                     writes y
//   dropout_backward(dy, dx, seed, threshold, scale) -> None                   writes dx
//   bias_relu_dropout_forward(x, bias, y, seed, threshold, scale) -> None      writes y
//   bias_relu_dropout_backward(dy, y, dx, dbias, seed, threshold, scale) -> None   writes dx, dbias
//   build_info() -> dict
//
// Pooling tensors are 4-D, all NCHW-contiguous or all channels_last; x / dx are (N, C, H, W), the
// others (N, C, OH, OW) with OH, OW torch's output size (floor or ceil mode); offsets are uint8.
//
// Dropout (mask and math: dropout_math.h): seed is a 1-element int64 tensor on the data's device (its
// bit pattern is the Philox key), threshold = round(p * 2^24) in [0, 2^24], scale = 1 / (1 - p), finite
// and >= 1. dropout_* take 1-D contiguous tensors (dense tensors' storage, flattened in memory order); bias_relu_dropout_* take
// (M, N) row-major x / y / dy / dx and (N,) bias / dbias. Outputs may not overlap inputs.
#include <torch/extension.h>

#include <ATen/MemoryOverlap.h>

#include <cmath>
#include <limits>

#include "dropout.h"
#include "dropout_math.h"
#include "lrn.h"
#include "pool.h"

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

// Any n >= 1: the kernels clip the window's reach to the channels (make_lrn_params), the divisor stays n.
void check_size(const char* op, int64_t size) {
  TORCH_CHECK(size >= 1, op, ": size must be >= 1, got ", size);
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

// ---------------------------------------------------------------------------------------------
// Max pooling and the fused ReLU -> LRN -> max-pool block
// ---------------------------------------------------------------------------------------------

const char* layout4_name(bool channels_last) {
  return channels_last ? "channels_last (strides (H*W*C, 1, W*C, C))" : "NCHW-contiguous (strides (C*H*W, H*W, W, 1))";
}

// A 4-D tensor on the CPU or a GPU laid out as the layout says (strides of size-1 dimensions, and
// of empty tensors, are not checked: they never enter an address).
void check_pool_tensor(const char* op, const char* name, const at::Tensor& t, bool channels_last) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.dim() == 4, op, ": ", name, " must be 4-D (N, C, H, W), got shape ", t.sizes());
  TORCH_CHECK(t.is_cpu() || t.is_cuda(), op, ": ", name, " must be a cpu or cuda tensor, got ", t.device());
  const ak::Strides4 s = ak::layout_strides(t.size(1), t.size(2), t.size(3), channels_last);
  const int64_t expected[4] = {s.n, s.c, s.h, s.w};
  for (int d = 0; d < 4; ++d) {
    TORCH_CHECK(t.size(d) <= 1 || t.numel() == 0 || t.stride(d) == expected[d], op, ": ", name, " must be ",
                layout4_name(channels_last), ", got shape ", t.sizes(), " and strides ", t.strides());
  }
}

// Values: float32, float16 or bfloat16 (or float64 on the CPU); ref's dtype and device when ref is given.
void check_pool_values(const char* op, const char* name, const at::Tensor& t, const at::Tensor* ref,
                       const char* ref_name) {
  const auto dtype = t.scalar_type();
  const bool cpu_double = dtype == at::kDouble && t.is_cpu();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || cpu_double, op, ": ", name,
              " must be float32, float16 or bfloat16 (or float64 on the CPU), got ", dtype, " on ", t.device());
  if (ref != nullptr) {
    TORCH_CHECK(dtype == ref->scalar_type(), op, ": ", name, " must have ", ref_name, "'s dtype ",
                ref->scalar_type(), ", got ", dtype);
    TORCH_CHECK(t.device() == ref->device(), op, ": ", name, " must be on ", ref_name, "'s device ", ref->device(),
                ", got ", t.device());
  }
}

// offsets: uint8, out's shape and device.
void check_offsets(const char* op, const at::Tensor& offsets, const at::Tensor& out, const char* out_name) {
  TORCH_CHECK(offsets.scalar_type() == at::kByte, op, ": offsets must be uint8, got ", offsets.scalar_type());
  TORCH_CHECK(offsets.sizes() == out.sizes(), op, ": offsets must have ", out_name, "'s shape ", out.sizes(),
              ", got ", offsets.sizes());
  TORCH_CHECK(offsets.device() == out.device(), op, ": offsets must be on ", out_name, "'s device ", out.device(),
              ", got ", offsets.device());
}

ak::PoolParams check_pool_params(const char* op, int64_t kH, int64_t kW, int64_t sH, int64_t sW, int64_t pH,
                                 int64_t pW) {
  TORCH_CHECK(kH >= 1 && kW >= 1, op, ": kernel size must be >= 1, got (", kH, ", ", kW, ")");
  TORCH_CHECK(kH <= 256 && kW <= 256 && kH * kW <= 256, op, ": kH * kW must be <= 256 (offsets are uint8), got (",
              kH, ", ", kW, ")");
  TORCH_CHECK(sH >= 1 && sW >= 1, op, ": stride must be >= 1, got (", sH, ", ", sW, ")");
  TORCH_CHECK(sH <= std::numeric_limits<int>::max() && sW <= std::numeric_limits<int>::max(), op,
              ": stride is too large (at most 2^31 - 1, as torch), got (", sH, ", ", sW, ")");
  TORCH_CHECK(pH >= 0 && pW >= 0, op, ": padding must be >= 0, got (", pH, ", ", pW, ")");
  // torch's rule; it also keeps every window's in-bounds part non-empty.
  TORCH_CHECK(pH <= kH / 2 && pW <= kW / 2, op, ": padding must be at most half the kernel size, got padding (",
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
void check_pool_shapes(const char* op, const at::Tensor& in, const char* in_name, const at::Tensor& out,
                       const char* out_name, const ak::PoolParams& p) {
  TORCH_CHECK(out.size(0) == in.size(0) && out.size(1) == in.size(1), op, ": ", out_name, " must have ", in_name,
              "'s batch and channels ", in.sizes().slice(0, 2), ", got shape ", out.sizes());
  TORCH_CHECK(in.size(2) >= 1 && in.size(3) >= 1, op, ": ", in_name, " must have non-empty spatial dims, got shape ",
              in.sizes());
  TORCH_CHECK(in.size(1) <= std::numeric_limits<int>::max(), op, ": at most 2^31 - 1 channels, got ", in.size(1));
  const int64_t sizes[2][4] = {{in.size(2), p.kH, p.sH, p.pH}, {in.size(3), p.kW, p.sW, p.pW}};
  for (int d = 0; d < 2; ++d) {
    const int64_t floor_size = pool_output_size(sizes[d][0], sizes[d][1], sizes[d][2], sizes[d][3], false);
    const int64_t ceil_size = pool_output_size(sizes[d][0], sizes[d][1], sizes[d][2], sizes[d][3], true);
    TORCH_CHECK(ceil_size >= 1, op, ": ", in_name, " of shape ", in.sizes(), " is too small for the kernel (",
                p.kH, ", ", p.kW, ") and padding (", p.pH, ", ", p.pW, ")");
    const int64_t got = out.size(2 + d);
    TORCH_CHECK(got >= 1, op, ": ", out_name, " has ", d == 0 ? "OH" : "OW", " = ", got, ", but ", in_name,
                " of shape ", in.sizes(), " pools to ", floor_size, " (ceil_mode: ", ceil_size, ")");
    TORCH_CHECK(got == floor_size || got == ceil_size, op, ": ", out_name, " has ", d == 0 ? "OH" : "OW", " = ", got,
                ", but ", in_name, " of shape ", in.sizes(), " pools to ", floor_size, " (ceil_mode: ", ceil_size,
                ")");
  }
}

void max_pool2d_forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& offsets, int64_t kH, int64_t kW,
                        int64_t sH, int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
  const char* op = "max_pool2d_forward";
  const ak::PoolParams p = check_pool_params(op, kH, kW, sH, sW, pH, pW);
  check_pool_tensor(op, "x", x, channels_last);
  check_pool_tensor(op, "y", y, channels_last);
  check_pool_tensor(op, "offsets", offsets, channels_last);
  check_pool_values(op, "x", x, nullptr, nullptr);
  check_pool_values(op, "y", y, &x, "x");
  check_offsets(op, offsets, y, "y");
  check_pool_shapes(op, x, "x", y, "y", p);
  at::assert_no_overlap(y, x);
  at::assert_no_overlap(offsets, x);
  at::assert_no_overlap(offsets, y);
  if (x.is_cuda()) {
#ifdef AK_WITH_CUDA
    ak::max_pool2d_forward_cuda(x, y, offsets, p, channels_last);
#else
    no_cuda(op);
#endif
  } else {
    ak::max_pool2d_forward_cpu(x, y, offsets, p, channels_last);
  }
}

void max_pool2d_backward(const at::Tensor& dy, const at::Tensor& offsets, const at::Tensor& dx, int64_t kH,
                         int64_t kW, int64_t sH, int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
  const char* op = "max_pool2d_backward";
  const ak::PoolParams p = check_pool_params(op, kH, kW, sH, sW, pH, pW);
  check_pool_tensor(op, "dy", dy, channels_last);
  check_pool_tensor(op, "offsets", offsets, channels_last);
  check_pool_tensor(op, "dx", dx, channels_last);
  check_pool_values(op, "dy", dy, nullptr, nullptr);
  check_pool_values(op, "dx", dx, &dy, "dy");
  check_offsets(op, offsets, dy, "dy");
  check_pool_shapes(op, dx, "dx", dy, "dy", p);
  at::assert_no_overlap(dx, dy);
  at::assert_no_overlap(dx, offsets);
  if (dy.is_cuda()) {
#ifdef AK_WITH_CUDA
    ak::max_pool2d_backward_cuda(dy, offsets, dx, p, channels_last);
#else
    no_cuda(op);
#endif
  } else {
    ak::max_pool2d_backward_cpu(dy, offsets, dx, p, channels_last);
  }
}

void relu_lrn_max_pool2d_forward(const at::Tensor& x, const at::Tensor& z, const at::Tensor& offsets, int64_t size,
                                 double alpha, double beta, double k, int64_t kH, int64_t kW, int64_t sH, int64_t sW,
                                 int64_t pH, int64_t pW, bool channels_last) {
  const char* op = "relu_lrn_max_pool2d_forward";
  check_size(op, size);
  const ak::PoolParams p = check_pool_params(op, kH, kW, sH, sW, pH, pW);
  check_pool_tensor(op, "x", x, channels_last);
  check_pool_tensor(op, "z", z, channels_last);
  check_pool_tensor(op, "offsets", offsets, channels_last);
  check_pool_values(op, "x", x, nullptr, nullptr);
  check_pool_values(op, "z", z, &x, "x");
  check_offsets(op, offsets, z, "z");
  check_pool_shapes(op, x, "x", z, "z", p);
  at::assert_no_overlap(z, x);
  at::assert_no_overlap(offsets, x);
  at::assert_no_overlap(offsets, z);
  if (x.is_cuda()) {
#ifdef AK_WITH_CUDA
    ak::relu_lrn_max_pool2d_forward_cuda(x, z, offsets, size, alpha, beta, k, p, channels_last);
#else
    no_cuda(op);
#endif
  } else {
    ak::relu_lrn_max_pool2d_forward_cpu(x, z, offsets, size, alpha, beta, k, p, channels_last);
  }
}

void relu_lrn_max_pool2d_backward(const at::Tensor& x, const at::Tensor& dz, const at::Tensor& offsets,
                                  const at::Tensor& dx, int64_t size, double alpha, double beta, double k, int64_t kH,
                                  int64_t kW, int64_t sH, int64_t sW, int64_t pH, int64_t pW, bool channels_last) {
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
  TORCH_CHECK(dx.sizes() == x.sizes(), op, ": dx must have x's shape ", x.sizes(), ", got ", dx.sizes());
  check_offsets(op, offsets, dz, "dz");
  check_pool_shapes(op, x, "x", dz, "dz", p);
  at::assert_no_overlap(dx, x);
  at::assert_no_overlap(dx, dz);
  at::assert_no_overlap(dx, offsets);
  if (x.is_cuda()) {
#ifdef AK_WITH_CUDA
    ak::relu_lrn_max_pool2d_backward_cuda(x, dz, offsets, dx, size, alpha, beta, k, p, channels_last);
#else
    no_cuda(op);
#endif
  } else {
    ak::relu_lrn_max_pool2d_backward_cpu(x, dz, offsets, dx, size, alpha, beta, k, p, channels_last);
  }
}

// ---------------------------------------------------------------------------------------------
// Counter-based dropout and the fused bias + ReLU + dropout block
// ---------------------------------------------------------------------------------------------

// A contiguous dim-D float32 / float16 / bfloat16 tensor (or float64 on the CPU) on the CPU or a GPU.
void check_dropout_tensor(const char* op, const char* name, const at::Tensor& t, int64_t dim, const char* shape) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim, "-D ", shape, ", got shape ", t.sizes());
  TORCH_CHECK(t.is_cpu() || t.is_cuda(), op, ": ", name, " must be a cpu or cuda tensor, got ", t.device());
  const auto dtype = t.scalar_type();
  const bool cpu_double = dtype == at::kDouble && t.is_cpu();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16 || cpu_double, op, ": ", name,
              " must be float32, float16 or bfloat16 (or float64 on the CPU), got ", dtype, " on ", t.device());
  TORCH_CHECK(t.is_contiguous(), op, ": ", name, " must be contiguous, got shape ", t.sizes(), " and strides ",
              t.strides());
}

// t has ref's dtype and device.
void check_dropout_like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                        const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have ", ref_name, "'s dtype ",
              ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on ", ref_name, "'s device ", ref.device(),
              ", got ", t.device());
}

void check_dropout_scalars(const char* op, int64_t threshold, double scale) {
  TORCH_CHECK(threshold >= 0 && threshold <= ak::kDropoutThresholdMax, op,
              ": threshold must be in [0, 2^24] (round(p * 2^24)), got ", threshold);
  TORCH_CHECK(std::isfinite(scale) && scale >= 1.0, op, ": scale must be finite and >= 1 (1 / (1 - p)), got ",
              scale);
}

// The output `out` shares no memory with the input `in` (the kernels read and write in no fixed order).
void check_no_overlap(const char* op, const char* out_name, const at::Tensor& out, const char* in_name,
                      const at::Tensor& in) {
  const at::MemOverlapStatus status = at::get_overlap_status(out, in);
  TORCH_CHECK(status != at::MemOverlapStatus::Full && status != at::MemOverlapStatus::Partial, op, ": ", out_name,
              " must not overlap ", in_name, " (", status == at::MemOverlapStatus::Full ? "same memory" : "partial overlap",
              ")");
}

// seed: a 1-element int64 tensor on ref's device (drawn there by torch's generator). The CPU kernels take
// its value; the CUDA kernels read it from device memory (no host sync, CUDA-graph safe).
void check_seed(const char* op, const at::Tensor& seed, const at::Tensor& ref) {
  TORCH_CHECK(seed.defined() && seed.scalar_type() == at::kLong && seed.numel() == 1, op,
              ": seed must be a 1-element int64 tensor, got ", seed.defined() ? seed.sizes() : at::IntArrayRef{},
              " of ", seed.defined() ? seed.scalar_type() : at::ScalarType::Undefined);
  TORCH_CHECK(seed.device() == ref.device(), op, ": seed must be on ", ref.device(), ", got ", seed.device());
}

#ifdef AK_WITH_CUDA
const int64_t* seed_on_device(const at::Tensor& seed) { return seed.const_data_ptr<int64_t>(); }
#endif
int64_t seed_on_host(const at::Tensor& seed) { return seed.reshape({1}).const_data_ptr<int64_t>()[0]; }

// dropout_forward and dropout_backward: dst = src * (keep ? scale : 0).
void apply_dropout(const char* op, const char* src_name, const at::Tensor& src, const char* dst_name,
                   const at::Tensor& dst, const at::Tensor& seed, int64_t threshold, double scale) {
  check_dropout_scalars(op, threshold, scale);
  check_dropout_tensor(op, src_name, src, 1, "(numel,)");
  check_dropout_tensor(op, dst_name, dst, 1, "(numel,)");
  check_dropout_like(op, dst_name, dst, src_name, src);
  TORCH_CHECK(dst.numel() == src.numel(), op, ": ", dst_name, " must have ", src_name, "'s numel ", src.numel(),
              ", got ", dst.numel());
  check_no_overlap(op, dst_name, dst, src_name, src);
  check_seed(op, seed, src);
  if (src.is_cuda()) {
#ifdef AK_WITH_CUDA
    ak::apply_dropout_cuda(src, dst, seed_on_device(seed), threshold, scale);
#else
    no_cuda(op);
#endif
  } else {
    ak::apply_dropout_cpu(src, dst, seed_on_host(seed), threshold, scale);
  }
}

void dropout_forward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& seed, int64_t threshold,
                     double scale) {
  apply_dropout("dropout_forward", "x", x, "y", y, seed, threshold, scale);
}

void dropout_backward(const at::Tensor& dy, const at::Tensor& dx, const at::Tensor& seed, int64_t threshold,
                      double scale) {
  apply_dropout("dropout_backward", "dy", dy, "dx", dx, seed, threshold, scale);
}

// t is (M, N) = ref's shape.
void check_same_shape(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                      const at::Tensor& ref) {
  TORCH_CHECK(t.sizes() == ref.sizes(), op, ": ", name, " must have ", ref_name, "'s shape ", ref.sizes(), ", got ",
              t.sizes());
}

// bias / dbias is (N,) for the (M, N) tensor ref.
void check_bias_shape(const char* op, const char* name, const at::Tensor& bias, const char* ref_name,
                      const at::Tensor& ref) {
  TORCH_CHECK(bias.size(0) == ref.size(1), op, ": ", name, " must have shape (N,) = (", ref.size(1), ",) for ",
              ref_name, " of shape ", ref.sizes(), ", got ", bias.sizes());
}

void bias_relu_dropout_forward(const at::Tensor& x, const at::Tensor& bias, const at::Tensor& y,
                               const at::Tensor& seed, int64_t threshold, double scale) {
  const char* op = "bias_relu_dropout_forward";
  check_dropout_scalars(op, threshold, scale);
  check_dropout_tensor(op, "x", x, 2, "(M, N)");
  check_dropout_tensor(op, "bias", bias, 1, "(N,)");
  check_dropout_tensor(op, "y", y, 2, "(M, N)");
  check_dropout_like(op, "bias", bias, "x", x);
  check_dropout_like(op, "y", y, "x", x);
  check_bias_shape(op, "bias", bias, "x", x);
  check_same_shape(op, "y", y, "x", x);
  check_no_overlap(op, "y", y, "x", x);
  check_no_overlap(op, "y", y, "bias", bias);
  check_seed(op, seed, x);
  if (x.is_cuda()) {
#ifdef AK_WITH_CUDA
    ak::bias_relu_dropout_forward_cuda(x, bias, y, seed_on_device(seed), threshold, scale);
#else
    no_cuda(op);
#endif
  } else {
    ak::bias_relu_dropout_forward_cpu(x, bias, y, seed_on_host(seed), threshold, scale);
  }
}

void bias_relu_dropout_backward(const at::Tensor& dy, const at::Tensor& y, const at::Tensor& dx,
                                const at::Tensor& dbias, const at::Tensor& seed, int64_t threshold, double scale) {
  const char* op = "bias_relu_dropout_backward";
  check_dropout_scalars(op, threshold, scale);
  check_dropout_tensor(op, "dy", dy, 2, "(M, N)");
  check_dropout_tensor(op, "y", y, 2, "(M, N)");
  check_dropout_tensor(op, "dx", dx, 2, "(M, N)");
  check_dropout_tensor(op, "dbias", dbias, 1, "(N,)");
  check_dropout_like(op, "y", y, "dy", dy);
  check_dropout_like(op, "dx", dx, "dy", dy);
  check_dropout_like(op, "dbias", dbias, "dy", dy);
  check_same_shape(op, "y", y, "dy", dy);
  check_same_shape(op, "dx", dx, "dy", dy);
  check_bias_shape(op, "dbias", dbias, "dy", dy);
  check_no_overlap(op, "dx", dx, "dy", dy);
  check_no_overlap(op, "dx", dx, "y", y);
  check_no_overlap(op, "dbias", dbias, "dy", dy);
  check_no_overlap(op, "dbias", dbias, "y", y);
  check_no_overlap(op, "dbias", dbias, "dx", dx);
  check_seed(op, seed, dy);
  if (dy.is_cuda()) {
#ifdef AK_WITH_CUDA
    ak::bias_relu_dropout_backward_cuda(dy, y, dx, dbias, seed_on_device(seed), threshold, scale);
#else
    no_cuda(op);
#endif
  } else {
    ak::bias_relu_dropout_backward_cpu(dy, y, dx, dbias, seed_on_host(seed), threshold, scale);
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

void register_conv_cuda(py::module_& m);  // the conv section at the end of this file

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  register_conv_cuda(m);
  m.doc() =
      "alexnet_kernels compiled kernels: cross-channel LRN, max-pool, fused ReLU -> LRN -> max-pool, Philox "
      "dropout and fused bias + ReLU + dropout (CPU and CUDA), and the cuDNN LRN baseline";
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
  m.def("max_pool2d_forward", &max_pool2d_forward,
        "Max-pool forward (torch.nn.functional.max_pool2d): writes y and the argmax's in-window offsets",
        py::arg("x"), py::arg("y"), py::arg("offsets"), py::arg("kH"), py::arg("kW"), py::arg("sH"), py::arg("sW"),
        py::arg("pH"), py::arg("pW"), py::arg("channels_last"), py::call_guard<py::gil_scoped_release>());
  m.def("max_pool2d_backward", &max_pool2d_backward, "Max-pool backward: writes dx (a deterministic gather)",
        py::arg("dy"), py::arg("offsets"), py::arg("dx"), py::arg("kH"), py::arg("kW"), py::arg("sH"), py::arg("sW"),
        py::arg("pH"), py::arg("pW"), py::arg("channels_last"), py::call_guard<py::gil_scoped_release>());
  m.def("relu_lrn_max_pool2d_forward", &relu_lrn_max_pool2d_forward,
        "Fused max_pool2d(local_response_norm(relu(x))): writes z and the argmax's in-window offsets", py::arg("x"),
        py::arg("z"), py::arg("offsets"), py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"),
        py::arg("kH"), py::arg("kW"), py::arg("sH"), py::arg("sW"), py::arg("pH"), py::arg("pW"),
        py::arg("channels_last"), py::call_guard<py::gil_scoped_release>());
  m.def("relu_lrn_max_pool2d_backward", &relu_lrn_max_pool2d_backward,
        "Fused ReLU -> LRN -> max-pool backward: writes dx from x, dz and the offsets", py::arg("x"), py::arg("dz"),
        py::arg("offsets"), py::arg("dx"), py::arg("size"), py::arg("alpha"), py::arg("beta"), py::arg("k"),
        py::arg("kH"), py::arg("kW"), py::arg("sH"), py::arg("sW"), py::arg("pH"), py::arg("pW"),
        py::arg("channels_last"), py::call_guard<py::gil_scoped_release>());
  m.def("dropout_forward", &dropout_forward,
        "Counter-based (Philox) dropout of a 1-D contiguous tensor: writes y = x * (keep ? scale : 0)", py::arg("x"),
        py::arg("y"), py::arg("seed"), py::arg("threshold"), py::arg("scale"), py::call_guard<py::gil_scoped_release>());
  m.def("dropout_backward", &dropout_backward,
        "Dropout backward, the mask regenerated from the seed: writes dx = dy * (keep ? scale : 0)", py::arg("dy"),
        py::arg("dx"), py::arg("seed"), py::arg("threshold"), py::arg("scale"),
        py::call_guard<py::gil_scoped_release>());
  m.def("bias_relu_dropout_forward", &bias_relu_dropout_forward,
        "Fused dropout(relu(x + bias)) of an (M, N) tensor: writes y", py::arg("x"), py::arg("bias"), py::arg("y"),
        py::arg("seed"), py::arg("threshold"), py::arg("scale"), py::call_guard<py::gil_scoped_release>());
  m.def("bias_relu_dropout_backward", &bias_relu_dropout_backward,
        "Fused bias + ReLU + dropout backward from dy and the saved output y: writes dx and dbias (deterministic "
        "column sums)",
        py::arg("dy"), py::arg("y"), py::arg("dx"), py::arg("dbias"), py::arg("seed"), py::arg("threshold"),
        py::arg("scale"), py::call_guard<py::gil_scoped_release>());
  m.def("build_info", &build_info, "What this extension was built with");
}


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
// All argument checks are in this one function; the torch-free ones are conv.h's conv_problem_error.
// =============================================================================================

#include "conv.h"

#ifdef AK_WITH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace {

void conv2d_relu_forward_cuda(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias,
                              const at::Tensor& y, int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w,
                              int64_t groups, bool allow_tf32) {
  const char* op = "conv2d_relu_forward_cuda";
  const bool has_bias = bias.has_value() && bias->defined();
  for (const at::Tensor* t : {&x, &weight, &y}) TORCH_CHECK(t->defined(), op, ": undefined tensor argument");
  TORCH_CHECK(x.is_cuda(), op, ": x must be a cuda tensor, got ", x.device());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": x must be float32, float16 or bfloat16, got ", dtype);
  auto same = [&](const at::Tensor& t, const char* name) {
    TORCH_CHECK(t.device() == x.device(), op, ": ", name, " is on ", t.device(), ", x on ", x.device());
    TORCH_CHECK(t.scalar_type() == dtype, op, ": ", name, " has dtype ", t.scalar_type(), ", x ", dtype);
  };
  same(weight, "weight");
  same(y, "y");
  if (has_bias) same(*bias, "bias");
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4 && y.dim() == 4, op, ": x, weight and y must be 4-D, got ",
              x.sizes(), ", ", weight.sizes(), ", ", y.sizes());
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": x must be channels_last-contiguous, got strides ",
              x.strides());
  const int64_t Cout = weight.size(0), Cg = weight.size(1), KH = weight.size(2), KW = weight.size(3);
  const int64_t K = KH * KW * Cg;
  // Strides of size-1 dimensions never enter an address: not checked.
  TORCH_CHECK((Cg == 1 || weight.stride(1) == 1) && (KW == 1 || weight.stride(3) == Cg) &&
                  (KH == 1 || weight.stride(2) == KW * Cg) && (Cout == 1 || weight.stride(0) >= K),
              op, ": weight must have channels_last rows, strides (row >= ", K, ", 1, ", KW * Cg, ", ", Cg,
              "), got ", weight.strides());
  if (has_bias)
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == Cout && (Cout == 1 || bias->stride(0) == 1), op,
                ": bias must be 1-D contiguous with ", Cout, " elements, got shape ", bias->sizes());
  ak::ConvProblem p{};
  p.N = x.size(0); p.C = x.size(1); p.H = x.size(2); p.W = x.size(3);
  p.Cout = Cout; p.KH = KH; p.KW = KW;
  p.SH = stride_h; p.SW = stride_w; p.PH = pad_h; p.PW = pad_w; p.groups = groups;
  TORCH_CHECK(groups >= 1 && Cg * groups == p.C, op, ": weight.shape[1] * groups (", Cg, " * ", groups,
              ") must equal the input channels ", p.C);
  TORCH_CHECK(stride_h >= 1 && stride_w >= 1, op, ": stride must be >= 1");
  p.OH = (p.H + 2 * pad_h - KH) / std::max<int64_t>(stride_h, 1) + 1;
  p.OW = (p.W + 2 * pad_w - KW) / std::max<int64_t>(stride_w, 1) + 1;
  TORCH_CHECK(y.size(0) == p.N && y.size(1) == Cout && y.size(2) == p.OH && y.size(3) == p.OW, op,
              ": y must have shape (", p.N, ", ", Cout, ", ", p.OH, ", ", p.OW, "), got ", y.sizes());
  for (int d = 0; d < 4; ++d) TORCH_CHECK(y.stride(d) >= 0, op, ": y has a negative stride");
  p.w_row_stride = Cout == 1 ? std::max<int64_t>(weight.stride(0), K) : weight.stride(0);
  p.y_sn = y.stride(0); p.y_sc = y.stride(1); p.y_sh = y.stride(2); p.y_sw = y.stride(3);
  if (const char* why = ak::conv_problem_error(p)) TORCH_CHECK(false, op, ": ", why);
  if (y.numel() == 0) return;
  at::assert_no_internal_overlap(y);
  at::assert_no_overlap(y, x);
  at::assert_no_overlap(y, weight);
  if (has_bias) at::assert_no_overlap(y, *bias);
#ifdef AK_WITH_CUDA
  const ak::ConvDtype cdtype = dtype == at::kFloat ? ak::ConvDtype::kFloat32
                               : dtype == at::kHalf ? ak::ConvDtype::kFloat16 : ak::ConvDtype::kBFloat16;
  const int device = x.get_device();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  char err[512] = {0};
  const int rc = ak::conv2d_relu_forward_cuda(x.const_data_ptr(), weight.const_data_ptr(),
                                              has_bias ? bias->const_data_ptr() : nullptr, y.mutable_data_ptr(), p,
                                              cdtype, allow_tf32, stream, device, err, sizeof(err));
  TORCH_CHECK(rc == 0, err);
#else
  (void)allow_tf32;
  no_cuda(op);
#endif
}

void conv2d_relu_dgrad_cuda(const at::Tensor& dy, const at::Tensor& y, const at::Tensor& weight_t,
                            const at::Tensor& dx, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                            int64_t pad_h, int64_t pad_w, int64_t groups, bool allow_tf32) {
  const char* op = "conv2d_relu_dgrad_cuda";
  for (const at::Tensor* t : {&dy, &y, &weight_t, &dx}) TORCH_CHECK(t->defined(), op, ": undefined tensor argument");
  TORCH_CHECK(dy.is_cuda(), op, ": dy must be a cuda tensor, got ", dy.device());
  const auto dtype = dy.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": dy must be float32, float16 or bfloat16, got ", dtype);
  for (const at::Tensor* t : {&y, &weight_t, &dx}) {
    TORCH_CHECK(t->device() == dy.device(), op, ": all tensors must be on ", dy.device(), ", got ", t->device());
    TORCH_CHECK(t->scalar_type() == dtype, op, ": all tensors must have dtype ", dtype, ", got ", t->scalar_type());
  }
  TORCH_CHECK(dy.dim() == 4 && y.dim() == 4 && dx.dim() == 4 && weight_t.dim() == 2, op,
              ": dy, y, dx must be 4-D and weight_t 2-D, got ", dy.sizes(), ", ", y.sizes(), ", ", dx.sizes(), ", ",
              weight_t.sizes());
  TORCH_CHECK(dy.sizes() == y.sizes(), op, ": dy and y must have the same shape, got ", dy.sizes(), " and ", y.sizes());
  TORCH_CHECK(dy.is_contiguous(at::MemoryFormat::ChannelsLast) && y.is_contiguous(at::MemoryFormat::ChannelsLast),
              op, ": dy and y must be channels_last-contiguous");
  ak::ConvDgradProblem d{};
  ak::ConvProblem& p = d.p;
  p.N = dx.size(0); p.C = dx.size(1); p.H = dx.size(2); p.W = dx.size(3);
  p.Cout = dy.size(1); p.KH = KH; p.KW = KW;
  p.SH = stride_h; p.SW = stride_w; p.PH = pad_h; p.PW = pad_w; p.groups = groups;
  p.OH = dy.size(2); p.OW = dy.size(3);
  TORCH_CHECK(dy.size(0) == p.N, op, ": dy and dx must have the same batch size");
  TORCH_CHECK(groups >= 1 && p.C % groups == 0 && p.Cout % groups == 0, op,
              ": groups must divide the channels of dx and dy");
  const int64_t Cg = p.C / groups, Kd = KH * KW * (p.Cout / groups);
  TORCH_CHECK(weight_t.size(0) == groups * Cg && weight_t.size(1) >= Kd && (weight_t.size(0) == 1 ||
              weight_t.stride(0) >= Kd) && (weight_t.size(1) == 1 || weight_t.stride(1) == 1), op,
              ": weight_t must be (groups * C/groups, >= KH*KW*Cout/groups) = (", groups * Cg, ", >= ", Kd,
              ") with contiguous rows, got shape ", weight_t.sizes(), " strides ", weight_t.strides());
  p.w_row_stride = weight_t.size(0) == 1 ? std::max<int64_t>(Kd, weight_t.stride(0)) : weight_t.stride(0);
  p.y_sn = dy.stride(0); p.y_sc = dy.stride(1); p.y_sh = dy.stride(2); p.y_sw = dy.stride(3);
  if (p.OH == 1 && p.OW == 1) { p.y_sh = p.OW * p.Cout; p.y_sw = p.Cout; }  // strides of size-1 dims are free
  else if (p.OW == 1) p.y_sw = p.Cout;
  else if (p.OH == 1) p.y_sh = p.OW * p.Cout;
  if (p.N == 1) p.y_sn = p.OH * p.OW * p.Cout;
  if (p.Cout == 1) p.y_sc = 1;
  d.dx_sn = dx.stride(0); d.dx_sc = dx.stride(1); d.dx_sh = dx.stride(2); d.dx_sw = dx.stride(3);
  if (const char* why = ak::conv_dgrad_problem_error(d)) TORCH_CHECK(false, op, ": ", why);
  if (dx.numel() == 0) return;
  at::assert_no_internal_overlap(dx);
  at::assert_no_overlap(dx, dy);
  at::assert_no_overlap(dx, y);
  at::assert_no_overlap(dx, weight_t);
#ifdef AK_WITH_CUDA
  const ak::ConvDtype cdtype = dtype == at::kFloat ? ak::ConvDtype::kFloat32
                               : dtype == at::kHalf ? ak::ConvDtype::kFloat16 : ak::ConvDtype::kBFloat16;
  const int device = dy.get_device();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  char err[512] = {0};
  const int rc = ak::conv2d_relu_dgrad_cuda(dy.const_data_ptr(), y.const_data_ptr(), weight_t.const_data_ptr(),
                                            dx.mutable_data_ptr(), d, cdtype, allow_tf32, stream, device, err,
                                            sizeof(err));
  TORCH_CHECK(rc == 0, err);
#else
  (void)allow_tf32;
  no_cuda(op);
#endif
}

void conv2d_relu_wgrad_cuda(const at::Tensor& dy, const at::Tensor& y, const at::Tensor& x, const at::Tensor& dw_part,
                            const at::Tensor& db_part, int64_t KH, int64_t KW, int64_t stride_h, int64_t stride_w,
                            int64_t pad_h, int64_t pad_w, int64_t groups, bool allow_tf32) {
  const char* op = "conv2d_relu_wgrad_cuda";
  for (const at::Tensor* t : {&dy, &y, &x, &dw_part, &db_part})
    TORCH_CHECK(t->defined(), op, ": undefined tensor argument");
  TORCH_CHECK(dy.is_cuda(), op, ": dy must be a cuda tensor, got ", dy.device());
  const auto dtype = dy.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": dy must be float32, float16 or bfloat16, got ", dtype);
  for (const at::Tensor* t : {&y, &x, &dw_part, &db_part})
    TORCH_CHECK(t->device() == dy.device(), op, ": all tensors must be on ", dy.device(), ", got ", t->device());
  TORCH_CHECK(y.scalar_type() == dtype && x.scalar_type() == dtype, op, ": dy, y and x must share a dtype");
  TORCH_CHECK(dw_part.scalar_type() == at::kFloat && db_part.scalar_type() == at::kFloat, op,
              ": dw_part and db_part must be float32");
  TORCH_CHECK(dy.dim() == 4 && y.dim() == 4 && x.dim() == 4, op, ": dy, y and x must be 4-D");
  TORCH_CHECK(dy.sizes() == y.sizes(), op, ": dy and y must have the same shape, got ", dy.sizes(), " and ", y.sizes());
  TORCH_CHECK(dy.is_contiguous(at::MemoryFormat::ChannelsLast) && y.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              op, ": dy, y and x must be channels_last-contiguous");
  ak::ConvWgradProblem w{};
  ak::ConvProblem& p = w.p;
  p.N = x.size(0); p.C = x.size(1); p.H = x.size(2); p.W = x.size(3);
  p.Cout = dy.size(1); p.KH = KH; p.KW = KW;
  p.SH = stride_h; p.SW = stride_w; p.PH = pad_h; p.PW = pad_w; p.groups = groups;
  p.OH = dy.size(2); p.OW = dy.size(3);
  TORCH_CHECK(dy.size(0) == p.N, op, ": dy and x must have the same batch size");
  // channels_last-contiguous (checked above): the strides the kernel assumes.
  p.y_sc = 1; p.y_sw = p.Cout; p.y_sh = p.OW * p.Cout; p.y_sn = p.OH * p.OW * p.Cout;
  TORCH_CHECK(groups >= 1 && p.C % groups == 0, op, ": groups must divide the input channels");
  const int64_t K = KH * KW * (p.C / groups);
  TORCH_CHECK(dw_part.dim() == 3 && dw_part.size(1) == p.Cout && dw_part.size(2) == K && dw_part.is_contiguous(), op,
              ": dw_part must be contiguous (splits, ", p.Cout, ", ", K, "), got ", dw_part.sizes());
  TORCH_CHECK(db_part.dim() == 2 && db_part.size(0) == dw_part.size(0) && db_part.size(1) == p.Cout &&
                  db_part.is_contiguous(),
              op, ": db_part must be contiguous (splits, ", p.Cout, "), got ", db_part.sizes());
  w.splits = dw_part.size(0);
  if (const char* why = ak::conv_wgrad_problem_error(w)) TORCH_CHECK(false, op, ": ", why);
  at::assert_no_overlap(dw_part, db_part);
#ifdef AK_WITH_CUDA
  const ak::ConvDtype cdtype = dtype == at::kFloat ? ak::ConvDtype::kFloat32
                               : dtype == at::kHalf ? ak::ConvDtype::kFloat16 : ak::ConvDtype::kBFloat16;
  const int device = dy.get_device();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(device).stream();
  char err[512] = {0};
  const int rc = ak::conv2d_relu_wgrad_cuda(dy.const_data_ptr(), y.const_data_ptr(), x.const_data_ptr(),
                                            dw_part.mutable_data_ptr<float>(), db_part.mutable_data_ptr<float>(), w,
                                            cdtype, allow_tf32, stream, device, err, sizeof(err));
  TORCH_CHECK(rc == 0, err);
#else
  (void)allow_tf32;
  no_cuda(op);
#endif
}

}  // namespace

void register_conv_cuda(py::module_& m) {
  m.def("conv2d_relu_wgrad_cuda", &conv2d_relu_wgrad_cuda,
        "d(weight), d(bias) of relu(conv2d(x, w) + b) as fp32 partial sums over pixel splits (mask y > 0 on load): "
        "writes dw_part, db_part",
        py::arg("dy"), py::arg("y"), py::arg("x"), py::arg("dw_part"), py::arg("db_part"), py::arg("KH"),
        py::arg("KW"), py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"),
        py::arg("groups"), py::arg("allow_tf32"), py::call_guard<py::gil_scoped_release>());
  m.def("conv2d_relu_dgrad_cuda", &conv2d_relu_dgrad_cuda,
        "d(input) of relu(conv2d(x, w) + b) from dy and the saved output y (mask y > 0 applied on load): writes dx",
        py::arg("dy"), py::arg("y"), py::arg("weight_t"), py::arg("dx"), py::arg("KH"), py::arg("KW"),
        py::arg("stride_h"), py::arg("stride_w"), py::arg("pad_h"), py::arg("pad_w"), py::arg("groups"),
        py::arg("allow_tf32"), py::call_guard<py::gil_scoped_release>());
  m.def("conv2d_relu_forward_cuda", &conv2d_relu_forward_cuda,
        "Implicit-GEMM relu(conv2d(x, weight) + bias) on CUDA tensor cores: writes y (see csrc/bindings.cpp)",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("y"), py::arg("stride_h"), py::arg("stride_w"),
        py::arg("pad_h"), py::arg("pad_w"), py::arg("groups"), py::arg("allow_tf32"),
        py::call_guard<py::gil_scoped_release>());
}
