// Baseline: cuDNN's cross-channel LRN (cudnnLRNCrossChannelForward / Backward, mode
// CUDNN_LRN_CROSS_CHANNEL_DIM1) on 4-D NCHW-contiguous or channels_last tensors of float, half or
// bfloat16. For benchmarks and tests only; compiled when cuDNN's headers were found (AK_WITH_CUDNN).
// bindings.cpp checks the arguments, brings the tensors to one layout and allocates the output.
//
// cuDNN's conventions against PyTorch's:
//   * lrnAlpha is divided by n inside the library (cuDNN API reference, cudnnSetLRNDescriptor:
//     "this value is divided by the window width"), like PyTorch: alpha is passed unchanged.
//   * window [c - lookBehind, c + lookAhead] with lookBehind = (n - 1) / 2 and
//     lookAhead = n - lookBehind - 1 (cudnn_ops.h). PyTorch looks n / 2 behind and (n - 1) / 2
//     ahead: the same for odd n, mirrored for even n.
//   * 1 <= n <= 16 (CUDNN_LRN_MIN_N / MAX_N), k >= 1e-5 (CUDNN_LRN_MIN_K), beta >= 0.01
//     (CUDNN_LRN_MIN_BETA).
// The blend scalars (output = 1 * result + 0 * output) are float for float, half and bfloat16 data.
#include <cuda_runtime_api.h>
#include <cudnn.h>

#include <limits>
#include <unordered_map>

#include "lrn.h"

namespace ak {
namespace {

#define AK_CUDNN_CHECK(expr)                                                                          \
  do {                                                                                                \
    const cudnnStatus_t ak_status_ = (expr);                                                          \
    AK_CHECK(ak_status_ == CUDNN_STATUS_SUCCESS, "cuDNN error in ", #expr, ": ",                      \
             cudnnGetErrorString(ak_status_), " (status ", static_cast<int>(ak_status_), ")");       \
  } while (0)

// One handle per (thread, device), created on first use. Never destroyed: destroying handles at
// thread or process exit can run after the CUDA context is gone (PyTorch keeps its own the same way).
cudnnHandle_t cudnn_handle_for(int device) {
  thread_local std::unordered_map<int, cudnnHandle_t> handles;
  auto it = handles.find(device);
  if (it == handles.end()) {
    cudnnHandle_t handle = nullptr;
    AK_CUDNN_CHECK(cudnnCreate(&handle));
    it = handles.emplace(device, handle).first;
  }
  return it->second;
}

class TensorDescriptor {
 public:
  explicit TensorDescriptor(const TensorView& t) {
    AK_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc_));
    int dims[4], strides[4];
    for (int d = 0; d < 4; ++d) {
      dims[d] = static_cast<int>(t.size(d));
      strides[d] = static_cast<int>(t.stride(d));
    }
    AK_CUDNN_CHECK(cudnnSetTensor4dDescriptorEx(desc_, data_type(t.dtype), dims[0], dims[1], dims[2],
                                                dims[3], strides[0], strides[1], strides[2], strides[3]));
  }
  ~TensorDescriptor() { cudnnDestroyTensorDescriptor(desc_); }
  TensorDescriptor(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(const TensorDescriptor&) = delete;
  cudnnTensorDescriptor_t get() const { return desc_; }

  static cudnnDataType_t data_type(DType t) {
    switch (t) {
      case DType::kFloat: return CUDNN_DATA_FLOAT;
      case DType::kHalf: return CUDNN_DATA_HALF;
      case DType::kBFloat16: return CUDNN_DATA_BFLOAT16;
      default: break;
    }
    AK_CHECK(false, "cudnn_lrn: unsupported dtype ", dtype_name(t));
    return CUDNN_DATA_FLOAT;
  }

 private:
  cudnnTensorDescriptor_t desc_ = nullptr;
};

class LRNDescriptor {
 public:
  LRNDescriptor(int64_t size, double alpha, double beta, double k) {
    AK_CUDNN_CHECK(cudnnCreateLRNDescriptor(&desc_));
    AK_CUDNN_CHECK(cudnnSetLRNDescriptor(desc_, static_cast<unsigned>(size), alpha, beta, k));
  }
  ~LRNDescriptor() { cudnnDestroyLRNDescriptor(desc_); }
  LRNDescriptor(const LRNDescriptor&) = delete;
  LRNDescriptor& operator=(const LRNDescriptor&) = delete;
  cudnnLRNDescriptor_t get() const { return desc_; }

 private:
  cudnnLRNDescriptor_t desc_ = nullptr;
};

}  // namespace

CudnnLrnLimits cudnn_lrn_limits() {
  return CudnnLrnLimits{CUDNN_LRN_MIN_N, CUDNN_LRN_MAX_N, CUDNN_LRN_MIN_K, CUDNN_LRN_MIN_BETA,
                        static_cast<int64_t>(CUDNN_VERSION)};
}

void cudnn_lrn_forward(const TensorView& x, const TensorView& y, int64_t size, double alpha, double beta, double k,
                       void* stream) {
  if (x.numel == 0) return;
  cudnnHandle_t handle = cudnn_handle_for(x.device);
  AK_CUDNN_CHECK(cudnnSetStream(handle, static_cast<cudaStream_t>(stream)));
  const LRNDescriptor lrn(size, alpha, beta, k);
  const TensorDescriptor x_desc(x), y_desc(y);
  const float one = 1.0f, zero = 0.0f;
  AK_CUDNN_CHECK(cudnnLRNCrossChannelForward(handle, lrn.get(), CUDNN_LRN_CROSS_CHANNEL_DIM1, &one, x_desc.get(),
                                             x.data, &zero, y_desc.get(), y.data));
}

void cudnn_lrn_backward(const TensorView& x, const TensorView& y, const TensorView& dy, const TensorView& dx,
                        int64_t size, double alpha, double beta, double k, void* stream) {
  if (x.numel == 0) return;
  cudnnHandle_t handle = cudnn_handle_for(x.device);
  AK_CUDNN_CHECK(cudnnSetStream(handle, static_cast<cudaStream_t>(stream)));
  const LRNDescriptor lrn(size, alpha, beta, k);
  const TensorDescriptor x_desc(x), y_desc(y), dy_desc(dy), dx_desc(dx);
  const float one = 1.0f, zero = 0.0f;
  AK_CUDNN_CHECK(cudnnLRNCrossChannelBackward(handle, lrn.get(), CUDNN_LRN_CROSS_CHANNEL_DIM1, &one, y_desc.get(),
                                              y.data, dy_desc.get(), dy.data, x_desc.get(), x.data, &zero,
                                              dx_desc.get(), dx.data));
}

}  // namespace ak
