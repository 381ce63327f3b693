// Instantiates the CUDA max-pool and fused kernels of pool_cuda_kernels.cuh for fp32, so that
// `nvcc -cubin -arch=sm_90` compiles them without ATen (benchmarks/tools/sass_counts.py --pool counts the
// 64-bit integer divisions left in each index path). Not part of the extension.
#include "pool_cuda_kernels.cuh"

namespace ak {
namespace {
template __global__ void max_pool_forward_kernel<float>(const float*, float*, uint8_t*, PoolProblem, int64_t);
template __global__ void max_pool_backward_kernel<float>(const float*, const uint8_t*, float*, PoolProblem, int64_t);
template __global__ void fused_forward_kernel<float>(const float*, float*, uint8_t*, PoolProblem, LrnCoeffs<float>,
                                                     int64_t);
template __global__ void fused_backward_kernel<float>(const float*, const float*, const uint8_t*, float*, PoolProblem,
                                                      LrnCoeffs<float>, int64_t);
}  // namespace
}  // namespace ak
