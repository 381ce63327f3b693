// Entry points of the counter-based dropout kernels (math and mask: dropout_math.h), called by
// bindings.cpp after it has checked the arguments.
//
//   apply_dropout_*: src, dst 1-D contiguous, same numel and dtype: dst = src * (keep ? scale : 0).
//     Dropout forward (src = x, dst = y) and backward (src = dy, dst = dx) are the same map.
//   bias_relu_dropout_forward_*: x, y (M, N) and bias (N,) contiguous: y = relu(x + bias) * (keep ? scale : 0).
//   bias_relu_dropout_backward_*: dy, y, dx (M, N), dbias (N,): dx = dpre, dbias = column sums of dpre in
//     dropout_math.h's fixed order.
// Values are float, half or bfloat16 (and double on the CPU); outputs are written whole, nothing
// mask-sized is allocated, and the device kernels allocate nothing (bindings.cpp gives the backward of a
// matrix taller than 512 rows its per-chunk dbias scratch, M * N / 512 floats). Empty tensors return at once
// (bias_relu_dropout_backward with M == 0 writes dbias = 0).
#pragma once

#include "cpu_isa.h"
#include "tensor_view.h"

namespace ak {

void apply_dropout_cpu(const TensorView& src, const TensorView& dst, int64_t seed, int64_t threshold, double scale);
void bias_relu_dropout_forward_cpu(const TensorView& x, const TensorView& bias, const TensorView& y, int64_t seed,
                                   int64_t threshold, double scale);
void bias_relu_dropout_backward_cpu(const TensorView& dy, const TensorView& y, const TensorView& dx,
                                    const TensorView& dbias, int64_t seed, int64_t threshold, double scale);
// The same, compiled for `isa` (which the CPU must support): the entry points above pass best_cpu_isa();
// tests run each ISA this CPU has (csrc/emulate/cpu_isa_harness.cpp) and compare their bits.
void apply_dropout_cpu_isa(const TensorView& src, const TensorView& dst, int64_t seed, int64_t threshold,
                           double scale, CpuIsa isa);
void bias_relu_dropout_forward_cpu_isa(const TensorView& x, const TensorView& bias, const TensorView& y,
                                       int64_t seed, int64_t threshold, double scale, CpuIsa isa);
void bias_relu_dropout_backward_cpu_isa(const TensorView& dy, const TensorView& y, const TensorView& dx,
                                        const TensorView& dbias, int64_t seed, int64_t threshold, double scale,
                                        CpuIsa isa);

#ifdef AK_WITH_CUDA
// stream: the cudaStream_t to launch on (the current stream of the tensors' device, which is current).
// seed: a device pointer to the int64 seed (read by the kernels, so CUDA-graph replays use each draw).
void apply_dropout_cuda(const TensorView& src, const TensorView& dst, const int64_t* seed, int64_t threshold,
                        double scale, void* stream);
void bias_relu_dropout_forward_cuda(const TensorView& x, const TensorView& bias, const TensorView& y,
                                    const int64_t* seed, int64_t threshold, double scale, void* stream);
// partial: float32 (dbias_chunks(M), N) device scratch for the per-chunk sums, used when M > kDbiasChunkRows.
void bias_relu_dropout_backward_cuda(const TensorView& dy, const TensorView& y, const TensorView& dx,
                                     const TensorView& dbias, const TensorView& partial, const int64_t* seed,
                                     int64_t threshold, double scale, void* stream);
#endif

}  // namespace ak
