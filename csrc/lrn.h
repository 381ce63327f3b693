// Entry points of the LRN kernels, called by bindings.cpp after it has checked the arguments.
//
// x, y, dy, dx are 3-D (N, C, S) tensors of float, half or bfloat16 with the layout strides
//   channels_last == false: (C*S, S, 1)   (NCHW-contiguous)
//   channels_last == true:  (C*S, 1, C)   (NHWC / channels_last-contiguous)
// The kernels address memory from (N, C, S) and the layout alone.
#pragma once

#include "cpu_isa.h"
#include "tensor_view.h"

namespace ak {

void lrn_forward_cpu(const TensorView& x, const TensorView& y, int64_t size, double alpha, double beta,
                     double k, bool channels_last);
void lrn_backward_cpu(const TensorView& x, const TensorView& dy, const TensorView& dx, int64_t size,
                      double alpha, double beta, double k, bool channels_last);
// The same, compiled for `isa` (which the CPU must support): the entry points above pass best_cpu_isa();
// tests run each ISA this CPU has (csrc/emulate/cpu_isa_harness.cpp).
void lrn_forward_cpu_isa(const TensorView& x, const TensorView& y, int64_t size, double alpha, double beta,
                         double k, bool channels_last, CpuIsa isa);
void lrn_backward_cpu_isa(const TensorView& x, const TensorView& dy, const TensorView& dx, int64_t size,
                          double alpha, double beta, double k, bool channels_last, CpuIsa isa);

#ifdef AK_WITH_CUDA
// stream: the cudaStream_t to launch on (the current stream of the tensors' device, which is current).
void lrn_forward_cuda(const TensorView& x, const TensorView& y, int64_t size, double alpha, double beta,
                      double k, bool channels_last, void* stream);
// sums: the NCHW kernel's window sums. kByRule: v2's register windows for windows of up to 16 rows, v1
// beyond (what lrn_backward runs); kV1: v1 on every window (every sum re-reads its n terms from shared
// memory), the previous kernel, for benchmarks comparing the two (the internal operator lrn_backward_v1).
enum class LrnBackwardSums { kByRule, kV1 };
void lrn_backward_cuda(const TensorView& x, const TensorView& dy, const TensorView& dx, int64_t size,
                       double alpha, double beta, double k, bool channels_last, void* stream,
                       LrnBackwardSums sums = LrnBackwardSums::kByRule);
#endif

#ifdef AK_WITH_CUDNN
// cuDNN's cross-channel LRN on 4-D tensors that all share one dense layout, NCHW-contiguous or
// channels_last (the baseline): writes y, or dx. bindings.cpp checks the cuDNN limits and the layouts.
void cudnn_lrn_forward(const TensorView& x, const TensorView& y, int64_t size, double alpha, double beta, double k,
                       void* stream);
void cudnn_lrn_backward(const TensorView& x, const TensorView& y, const TensorView& dy, const TensorView& dx,
                        int64_t size, double alpha, double beta, double k, void* stream);
// cuDNN's limits (cudnn.h), for the binding's checks.
struct CudnnLrnLimits {
  int64_t min_n, max_n;
  double min_k, min_beta;
  int64_t version;
};
CudnnLrnLimits cudnn_lrn_limits();
#endif

}  // namespace ak
