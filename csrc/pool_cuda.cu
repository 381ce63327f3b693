// CUDA kernels of 2-D max pooling and of the fused ReLU -> LRN -> max-pool block. The math is
// pool_math.h's, shared with the CPU kernels: every kernel is a grid-stride loop (int64 indices)
// over memory offsets calling one *_element function. Forward maps a thread to an output element,
// backward to an input element; consecutive threads take consecutive offsets, i.e. the contiguous
// dimension (W for NCHW, C for channels_last), so loads and stores coalesce.
//
// Index math: when every offset of the call is below 2^31 (PoolProblem::index32) the loops count in
// unsigned 32 bits and the element functions divide in int32 (the unravelling of an offset into
// (n, c, h, w) and the backward's covering-window bounds: a 64-bit division is a long software
// sequence on the GPU, several per element); otherwise in int64.
//
// One launch per call on the stream bindings.cpp passes (the current stream of the tensors' device);
// nothing is allocated and nothing synchronises (safe under CUDA-graph capture).
#include <algorithm>

#include "pool.h"
#include "pool_cuda_kernels.cuh"

namespace ak {
namespace {

// kernel(args..., count) with one thread per element of `count` (the grid capped at kMaxBlocks: the kernels
// stride over the rest) on `stream`; no launch when count is 0.
template <typename... Params, typename... Args>
void launch_per_element(void (*kernel)(Params...), int64_t count, void* stream, const Args&... args) {
  if (count == 0) return;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((count + kThreads - 1) / kThreads, kMaxBlocks));
  kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(args..., count);
  AK_CUDA_LAUNCH_CHECK();
}

#define AK_CUDA_DISPATCH(TYPE, NAME, ...) AK_DISPATCH_FLOATING(TYPE, NAME, __VA_ARGS__)

}  // namespace

void max_pool2d_forward_cuda(const TensorView& x, const TensorView& y, const TensorView& offsets,
                             const PoolParams& p, bool channels_last, void* stream) {
  const PoolProblem P = make_pool_problem(x, y, p, channels_last);
  AK_CUDA_DISPATCH(x.dtype, "max_pool2d_forward_cuda", [&] {
    launch_per_element(max_pool_forward_kernel<scalar_t>, y.numel, stream, x.const_data_ptr<scalar_t>(),
                       y.mutable_data_ptr<scalar_t>(), offsets.mutable_data_ptr<uint8_t>(), P);
  });
}

void max_pool2d_backward_cuda(const TensorView& dy, const TensorView& offsets, const TensorView& dx,
                              const PoolParams& p, bool channels_last, void* stream) {
  const PoolProblem P = make_pool_problem(dx, dy, p, channels_last);
  AK_CUDA_DISPATCH(dx.dtype, "max_pool2d_backward_cuda", [&] {
    launch_per_element(max_pool_backward_kernel<scalar_t>, dx.numel, stream, dy.const_data_ptr<scalar_t>(),
                       offsets.const_data_ptr<uint8_t>(), dx.mutable_data_ptr<scalar_t>(), P);
  });
}

void relu_lrn_max_pool2d_forward_cuda(const TensorView& x, const TensorView& z, const TensorView& offsets,
                                      int64_t size, double alpha, double beta, double k, const PoolParams& p,
                                      bool channels_last, void* stream) {
  const PoolProblem P = make_pool_problem(x, z, p, channels_last);
  const LrnCoeffs<float> lrn = make_lrn_coeffs<float>(size, alpha, beta, k, x.size(1));
  AK_CUDA_DISPATCH(x.dtype, "relu_lrn_max_pool2d_forward_cuda", [&] {
    launch_per_element(fused_forward_kernel<scalar_t>, z.numel, stream, x.const_data_ptr<scalar_t>(),
                       z.mutable_data_ptr<scalar_t>(), offsets.mutable_data_ptr<uint8_t>(), P, lrn);
  });
}

void relu_lrn_max_pool2d_backward_cuda(const TensorView& x, const TensorView& dz, const TensorView& offsets,
                                       const TensorView& dx, int64_t size, double alpha, double beta, double k,
                                       const PoolParams& p, bool channels_last, void* stream) {
  const PoolProblem P = make_pool_problem(x, dz, p, channels_last);
  const LrnCoeffs<float> lrn = make_lrn_coeffs<float>(size, alpha, beta, k, x.size(1));
  AK_CUDA_DISPATCH(x.dtype, "relu_lrn_max_pool2d_backward_cuda", [&] {
    launch_per_element(fused_backward_kernel<scalar_t>, dx.numel, stream, x.const_data_ptr<scalar_t>(),
                       dz.const_data_ptr<scalar_t>(), offsets.const_data_ptr<uint8_t>(),
                       dx.mutable_data_ptr<scalar_t>(), P, lrn);
  });
}

}  // namespace ak
