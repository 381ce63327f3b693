// Entry points of the LRN kernels, called by bindings.cpp after it has checked the arguments.
//
// x, y, dy, dx are 3-D (N, C, S) tensors of float, half or bfloat16 with the layout strides
//   channels_last == false: (C*S, S, 1)   (NCHW-contiguous)
//   channels_last == true:  (C*S, 1, C)   (NHWC / channels_last-contiguous)
// The kernels address memory from (N, C, S) and the layout alone.
#pragma once

#include <ATen/ATen.h>

namespace ak {

void lrn_forward_cpu(const at::Tensor& x, const at::Tensor& y, int64_t size, double alpha, double beta,
                     double k, bool channels_last);
void lrn_backward_cpu(const at::Tensor& x, const at::Tensor& dy, const at::Tensor& dx, int64_t size,
                      double alpha, double beta, double k, bool channels_last);

#ifdef AK_WITH_CUDA
void lrn_forward_cuda(const at::Tensor& x, const at::Tensor& y, int64_t size, double alpha, double beta,
                      double k, bool channels_last);
void lrn_backward_cuda(const at::Tensor& x, const at::Tensor& dy, const at::Tensor& dx, int64_t size,
                       double alpha, double beta, double k, bool channels_last);
#endif

#ifdef AK_WITH_CUDNN
// cuDNN's cross-channel LRN on a 4-D NCHW-contiguous or channels_last tensor (the baseline).
at::Tensor cudnn_lrn_forward(const at::Tensor& x, int64_t size, double alpha, double beta, double k);
at::Tensor cudnn_lrn_backward(const at::Tensor& x, const at::Tensor& y, const at::Tensor& dy, int64_t size,
                              double alpha, double beta, double k);
#endif

}  // namespace ak
