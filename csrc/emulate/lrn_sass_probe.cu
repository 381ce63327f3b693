// Instantiates the CUDA LRN kernels of lrn_cuda_kernels.cuh for fp32 and fp16, so that
// `nvcc -cubin -arch=sm_90` can compile them without ATen (benchmarks/tools/sass_counts.py reads the
// compiled code's instruction counts). Not part of the extension. fp16 is __half here (the extension
// uses c10::Half, which converts through the same instructions).
#include <cuda_fp16.h>

#include "lrn_cuda_kernels.cuh"

namespace ak {

#define AK_PROBE(T)                                                                                              \
  template __global__ void lrn_forward_nchw_kernel<T>(const T*, T*, LrnShape, LrnParams, int64_t);             \
  template __global__ void lrn_backward_nchw_kernel<T>(const T*, const T*, T*, LrnShape, LrnParams, int64_t);  \
  template __global__ void lrn_forward_nhwc_kernel<T>(const T*, T*, LrnShape, LrnParams, int, int64_t);        \
  template __global__ void lrn_backward_nhwc_kernel<T>(const T*, const T*, T*, LrnShape, LrnParams, int,       \
                                                       int64_t);                                \
  template __global__ void lrn_backward_fallback_kernel<T>(const T*, const T*, T*, FallbackGeometry, LrnParams);

namespace {
AK_PROBE(float)
AK_PROBE(__half)
}  // namespace

}  // namespace ak
