// Device code of the CUDA max-pool and fused ReLU -> LRN -> max-pool kernels (included by pool_cuda.cu),
// free of ATen and CUDA-runtime calls so that csrc/emulate/pool_sass_probe.cu can compile it alone
// (benchmarks/tools/sass_counts.py checks its 32-bit index path). Every kernel is a grid-stride loop over
// memory offsets calling one *_element function of pool_math.h.
#pragma once

#include <cstdint>

#include "pool_math.h"

namespace ak {
namespace {

constexpr int kThreads = 256;
// Grid cap: far more blocks than any GPU runs at once; the grid-stride loops take the rest.
constexpr int64_t kMaxBlocks = int64_t(1) << 20;
static_assert(kMaxBlocks * kThreads <= (int64_t(1) << 28), "a 32-bit loop step stays below 2^28 (kIndex32Limit)");

// The grid-stride loop over [0, count): element(o, index type) for every o, in 32-bit arithmetic when
// index32 (count < 2^31, step < 2^28: o + step < 2^32 never wraps), else 64-bit.
// AK_POOL_INDEX_PATH (compiled-code counts only, csrc/emulate/pool_sass_probe.cu): 32 or 64 keeps that
// path alone.
template <typename Element>
__device__ __forceinline__ void grid_stride(int64_t count, bool index32, const Element& element) {
#if defined(AK_POOL_INDEX_PATH)
  index32 = AK_POOL_INDEX_PATH == 32;
#endif
  if (index32) {
    const uint32_t n = static_cast<uint32_t>(count);
    const uint32_t step = gridDim.x * blockDim.x;
    for (uint32_t o = blockIdx.x * blockDim.x + threadIdx.x; o < n; o += step) element(o, int32_t(0));
  } else {
    for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < count; o += int64_t(gridDim.x) * blockDim.x) {
      element(o, int64_t(0));
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    max_pool_forward_kernel(const T* __restrict__ x, T* __restrict__ y, uint8_t* __restrict__ offsets,
                            PoolProblem P, int64_t count) {
  grid_stride(count, P.index32, [&](auto o, auto index) {
    max_pool_forward_element<T, float, decltype(index)>(x, y, offsets, P, o);
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    max_pool_backward_kernel(const T* __restrict__ dy, const uint8_t* __restrict__ offsets, T* __restrict__ dx,
                             PoolProblem P, int64_t count) {
  grid_stride(count, P.index32, [&](auto o, auto index) {
    max_pool_backward_element<T, float, decltype(index)>(dy, offsets, dx, P, o);
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fused_forward_kernel(const T* __restrict__ x, T* __restrict__ z, uint8_t* __restrict__ offsets, PoolProblem P,
                         LrnCoeffs<float> lrn, int64_t count) {
  grid_stride(count, P.index32, [&](auto o, auto index) {
    fused_forward_element<T, float, decltype(index)>(x, z, offsets, P, lrn, o);
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    fused_backward_kernel(const T* __restrict__ x, const T* __restrict__ dz, const uint8_t* __restrict__ offsets,
                          T* __restrict__ dx, PoolProblem P, LrnCoeffs<float> lrn, int64_t count) {
  grid_stride(count, P.index32, [&](auto o, auto index) {
    fused_backward_element<T, float, decltype(index)>(x, dz, offsets, dx, P, lrn, o);
  });
}

}  // namespace
}  // namespace ak
