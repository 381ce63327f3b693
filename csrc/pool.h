// Entry points of the max-pool and fused ReLU -> LRN -> max-pool kernels (math: pool_math.h), called
// by bindings.cpp after it has checked the arguments.
//
// All tensors are 4-D with one layout for the call:
//   channels_last == false: NCHW-contiguous;  channels_last == true: NHWC (torch.channels_last) contiguous.
// x, dx: (N, C, H, W); y / z, offsets, dy / dz: (N, C, OH, OW), offsets uint8 (in-window offsets).
// Values are float, half or bfloat16 (and double on the CPU). The kernels write every element of
// their outputs (dx included, zeros too) and allocate nothing on the device.
#pragma once

#include <ATen/ATen.h>

#include "pool_math.h"

namespace ak {

// The call's shapes from its input-shaped tensor (x or dx) and its output-shaped tensor (y, z, dy or dz).
inline PoolProblem make_pool_problem(const at::Tensor& input, const at::Tensor& output, const PoolParams& p,
                                     bool channels_last) {
  return make_pool_problem(input.size(0), input.size(1), input.size(2), input.size(3), output.size(2),
                           output.size(3), p, channels_last);
}

void max_pool2d_forward_cpu(const at::Tensor& x, const at::Tensor& y, const at::Tensor& offsets,
                            const PoolParams& p, bool channels_last);
void max_pool2d_backward_cpu(const at::Tensor& dy, const at::Tensor& offsets, const at::Tensor& dx,
                             const PoolParams& p, bool channels_last);
void relu_lrn_max_pool2d_forward_cpu(const at::Tensor& x, const at::Tensor& z, const at::Tensor& offsets,
                                     int64_t size, double alpha, double beta, double k, const PoolParams& p,
                                     bool channels_last);
void relu_lrn_max_pool2d_backward_cpu(const at::Tensor& x, const at::Tensor& dz, const at::Tensor& offsets,
                                      const at::Tensor& dx, int64_t size, double alpha, double beta, double k,
                                      const PoolParams& p, bool channels_last);

#ifdef AK_WITH_CUDA
void max_pool2d_forward_cuda(const at::Tensor& x, const at::Tensor& y, const at::Tensor& offsets,
                             const PoolParams& p, bool channels_last);
void max_pool2d_backward_cuda(const at::Tensor& dy, const at::Tensor& offsets, const at::Tensor& dx,
                              const PoolParams& p, bool channels_last);
void relu_lrn_max_pool2d_forward_cuda(const at::Tensor& x, const at::Tensor& z, const at::Tensor& offsets,
                                      int64_t size, double alpha, double beta, double k, const PoolParams& p,
                                      bool channels_last);
void relu_lrn_max_pool2d_backward_cuda(const at::Tensor& x, const at::Tensor& dz, const at::Tensor& offsets,
                                       const at::Tensor& dx, int64_t size, double alpha, double beta, double k,
                                       const PoolParams& p, bool channels_last);
#endif

}  // namespace ak
