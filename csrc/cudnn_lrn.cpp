// Baseline: cuDNN's cross-channel LRN (cudnnLRNCrossChannelForward / Backward, mode
// CUDNN_LRN_CROSS_CHANNEL_DIM1) on 4-D NCHW-contiguous or channels_last tensors of float, half or
// bfloat16. For benchmarks and tests only; compiled when cuDNN's headers were found (AK_WITH_CUDNN).
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
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cudnn.h>

#include <limits>
#include <unordered_map>

#include "lrn.h"

namespace ak {
namespace {

#define AK_CUDNN_CHECK(expr)                                                                          \
  do {                                                                                                \
    const cudnnStatus_t ak_status_ = (expr);                                                          \
    TORCH_CHECK(ak_status_ == CUDNN_STATUS_SUCCESS, "cuDNN error in ", #expr, ": ",                   \
                cudnnGetErrorString(ak_status_), " (status ", static_cast<int>(ak_status_), ")");    \
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
  explicit TensorDescriptor(const at::Tensor& t) {
    AK_CUDNN_CHECK(cudnnCreateTensorDescriptor(&desc_));
    int dims[4], strides[4];
    for (int d = 0; d < 4; ++d) {
      dims[d] = static_cast<int>(t.size(d));
      strides[d] = static_cast<int>(t.stride(d));
    }
    AK_CUDNN_CHECK(cudnnSetTensor4dDescriptorEx(desc_, data_type(t.scalar_type()), dims[0], dims[1], dims[2],
                                                dims[3], strides[0], strides[1], strides[2], strides[3]));
  }
  ~TensorDescriptor() { cudnnDestroyTensorDescriptor(desc_); }
  TensorDescriptor(const TensorDescriptor&) = delete;
  TensorDescriptor& operator=(const TensorDescriptor&) = delete;
  cudnnTensorDescriptor_t get() const { return desc_; }

  static cudnnDataType_t data_type(at::ScalarType t) {
    switch (t) {
      case at::kFloat: return CUDNN_DATA_FLOAT;
      case at::kHalf: return CUDNN_DATA_HALF;
      case at::kBFloat16: return CUDNN_DATA_BFLOAT16;
      default: break;
    }
    TORCH_CHECK(false, "cudnn_lrn: unsupported dtype ", t);
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

void check_params(const char* op, int64_t size, double beta, double k) {
  TORCH_CHECK(size >= CUDNN_LRN_MIN_N && size <= CUDNN_LRN_MAX_N, op, ": cuDNN accepts ", CUDNN_LRN_MIN_N,
              " <= size <= ", CUDNN_LRN_MAX_N, ", got size = ", size);
  TORCH_CHECK(k >= CUDNN_LRN_MIN_K, op, ": cuDNN requires k >= ", CUDNN_LRN_MIN_K, ", got k = ", k);
  TORCH_CHECK(beta >= CUDNN_LRN_MIN_BETA, op, ": cuDNN requires beta >= ", CUDNN_LRN_MIN_BETA, ", got beta = ",
              beta);
}

// The memory format the cuDNN call uses for x (and then for y, dy, dx).
at::MemoryFormat check_input(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), op, ": x must be a cuda tensor, got ", x.device());
  TORCH_CHECK(x.dim() == 4, op, ": x must be 4-D (N, C, H, W), got shape ", x.sizes());
  const auto dtype = x.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kHalf || dtype == at::kBFloat16, op,
              ": x must be float32, float16 or bfloat16, got ", dtype);
  TORCH_CHECK(x.numel() <= std::numeric_limits<int>::max(), op, ": cuDNN descriptors take int sizes, got ",
              x.numel(), " elements");
  const bool channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  TORCH_CHECK(x.is_contiguous() || channels_last, op, ": x must be contiguous or channels_last, got strides ",
              x.strides());
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

void check_like(const char* op, const char* name, const at::Tensor& t, const at::Tensor& x) {
  TORCH_CHECK(t.sizes() == x.sizes(), op, ": ", name, " must have x's shape ", x.sizes(), ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), op, ": ", name, " must have x's dtype");
  TORCH_CHECK(t.device() == x.device(), op, ": ", name, " must be on x's device");
}

}  // namespace

at::Tensor cudnn_lrn_forward(const at::Tensor& x_in, int64_t size, double alpha, double beta, double k) {
  const char* op = "cudnn_lrn_forward";
  check_params(op, size, beta, k);
  const at::MemoryFormat format = check_input(op, x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous(format);
  at::Tensor y = at::empty_like(x, x.options(), format);
  if (x.numel() == 0) return y;

  cudnnHandle_t handle = cudnn_handle_for(x.get_device());
  AK_CUDNN_CHECK(cudnnSetStream(handle, c10::cuda::getCurrentCUDAStream(x.get_device()).stream()));
  const LRNDescriptor lrn(size, alpha, beta, k);
  const TensorDescriptor x_desc(x), y_desc(y);
  const float one = 1.0f, zero = 0.0f;
  AK_CUDNN_CHECK(cudnnLRNCrossChannelForward(handle, lrn.get(), CUDNN_LRN_CROSS_CHANNEL_DIM1, &one, x_desc.get(),
                                             x.const_data_ptr(), &zero, y_desc.get(), y.mutable_data_ptr()));
  return y;
}

at::Tensor cudnn_lrn_backward(const at::Tensor& x_in, const at::Tensor& y_in, const at::Tensor& dy_in, int64_t size,
                              double alpha, double beta, double k) {
  const char* op = "cudnn_lrn_backward";
  check_params(op, size, beta, k);
  const at::MemoryFormat format = check_input(op, x_in);
  check_like(op, "y", y_in, x_in);
  check_like(op, "dy", dy_in, x_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  // One layout for all four tensors (a no-op when they already share x's).
  const at::Tensor x = x_in.contiguous(format);
  const at::Tensor y = y_in.contiguous(format);
  const at::Tensor dy = dy_in.contiguous(format);
  at::Tensor dx = at::empty_like(x, x.options(), format);
  if (x.numel() == 0) return dx;

  cudnnHandle_t handle = cudnn_handle_for(x.get_device());
  AK_CUDNN_CHECK(cudnnSetStream(handle, c10::cuda::getCurrentCUDAStream(x.get_device()).stream()));
  const LRNDescriptor lrn(size, alpha, beta, k);
  const TensorDescriptor x_desc(x), y_desc(y), dy_desc(dy), dx_desc(dx);
  const float one = 1.0f, zero = 0.0f;
  AK_CUDNN_CHECK(cudnnLRNCrossChannelBackward(handle, lrn.get(), CUDNN_LRN_CROSS_CHANNEL_DIM1, &one, y_desc.get(),
                                              y.const_data_ptr(), dy_desc.get(), dy.const_data_ptr(), x_desc.get(),
                                              x.const_data_ptr(), &zero, dx_desc.get(), dx.mutable_data_ptr()));
  return dx;
}

}  // namespace ak
