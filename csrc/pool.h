// Entry points of the max-pool and fused ReLU -> LRN -> max-pool kernels (math: pool_math.h), called
// by bindings.cpp after it has checked the arguments.
//
// All tensors are 4-D with one layout for the call:
//   channels_last == false: NCHW-contiguous;  channels_last == true: NHWC (torch.channels_last) contiguous.
// x, dx: (N, C, H, W); y / z, offsets, dy / dz: (N, C, OH, OW), offsets uint8 (in-window offsets).
// Values are float, half or bfloat16 (and double on the CPU). The kernels write every element of
// their outputs (dx included, zeros too) and allocate nothing on the device.
#pragma once

#include "cpu_isa.h"
#include "tensor_view.h"

#include "pool_math.h"

namespace ak {

// The call's shapes from its input-shaped tensor (x or dx) and its output-shaped tensor (y, z, dy or dz).
inline PoolProblem make_pool_problem(const TensorView& input, const TensorView& output, const PoolParams& p,
                                     bool channels_last) {
  return make_pool_problem(input.size(0), input.size(1), input.size(2), input.size(3), output.size(2),
                           output.size(3), p, channels_last);
}

void max_pool2d_forward_cpu(const TensorView& x, const TensorView& y, const TensorView& offsets,
                            const PoolParams& p, bool channels_last);
void max_pool2d_backward_cpu(const TensorView& dy, const TensorView& offsets, const TensorView& dx,
                             const PoolParams& p, bool channels_last);
void relu_lrn_max_pool2d_forward_cpu(const TensorView& x, const TensorView& z, const TensorView& offsets,
                                     int64_t size, double alpha, double beta, double k, const PoolParams& p,
                                     bool channels_last);
void relu_lrn_max_pool2d_backward_cpu(const TensorView& x, const TensorView& dz, const TensorView& offsets,
                                      const TensorView& dx, int64_t size, double alpha, double beta, double k,
                                      const PoolParams& p, bool channels_last);
// The max-pool and fused entry points compiled for `isa` (which the CPU must support): the entry points
// without it pass best_cpu_isa(); tests run each ISA this CPU has (csrc/emulate/cpu_isa_harness.cpp).
void max_pool2d_forward_cpu_isa(const TensorView& x, const TensorView& y, const TensorView& offsets,
                                const PoolParams& p, bool channels_last, CpuIsa isa);
void max_pool2d_backward_cpu_isa(const TensorView& dy, const TensorView& offsets, const TensorView& dx,
                                 const PoolParams& p, bool channels_last, CpuIsa isa);
void relu_lrn_max_pool2d_forward_cpu_isa(const TensorView& x, const TensorView& z, const TensorView& offsets,
                                         int64_t size, double alpha, double beta, double k, const PoolParams& p,
                                         bool channels_last, CpuIsa isa);
void relu_lrn_max_pool2d_backward_cpu_isa(const TensorView& x, const TensorView& dz, const TensorView& offsets,
                                          const TensorView& dx, int64_t size, double alpha, double beta, double k,
                                          const PoolParams& p, bool channels_last, CpuIsa isa);

#ifdef AK_WITH_CUDA
// stream: the cudaStream_t to launch on (the current stream of the tensors' device, which is current).
void max_pool2d_forward_cuda(const TensorView& x, const TensorView& y, const TensorView& offsets,
                             const PoolParams& p, bool channels_last, void* stream);
void max_pool2d_backward_cuda(const TensorView& dy, const TensorView& offsets, const TensorView& dx,
                              const PoolParams& p, bool channels_last, void* stream);
void relu_lrn_max_pool2d_forward_cuda(const TensorView& x, const TensorView& z, const TensorView& offsets,
                                      int64_t size, double alpha, double beta, double k, const PoolParams& p,
                                      bool channels_last, void* stream);
void relu_lrn_max_pool2d_backward_cuda(const TensorView& x, const TensorView& dz, const TensorView& offsets,
                                       const TensorView& dx, int64_t size, double alpha, double beta, double k,
                                       const PoolParams& p, bool channels_last, void* stream);
#endif

}  // namespace ak
