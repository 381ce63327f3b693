// What the kernels' entry points see of a tensor: its data pointer, shape, strides, dtype and device.
//
// The entry points (lrn.h, pool.h, dropout.h) are independent of torch's C++ API: bindings.cpp, the one
// file that talks to torch (through its stable C ABI), checks the arguments and hands each kernel a
// TensorView of an already-validated tensor. So the kernels compile against no ATen header, and one
// build of the extension serves every torch from the stable ABI's target version on.
#pragma once

#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Half.h>

#include <cstddef>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>

namespace ak {

enum class DType { kFloat, kDouble, kHalf, kBFloat16, kByte, kLong, kChar, kShort, kInt, kOther };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::kFloat: return "Float";
    case DType::kDouble: return "Double";
    case DType::kHalf: return "Half";
    case DType::kBFloat16: return "BFloat16";
    case DType::kByte: return "Byte";
    case DType::kLong: return "Long";
    case DType::kChar: return "Char";
    case DType::kShort: return "Short";
    case DType::kInt: return "Int";
    default: return "an unsupported dtype";
  }
}

inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::kFloat: return 4;
    case DType::kDouble: case DType::kLong: return 8;
    case DType::kInt: return 4;
    case DType::kHalf: case DType::kBFloat16: case DType::kShort: return 2;
    case DType::kByte: case DType::kChar: return 1;
    default: return 0;
  }
}

constexpr int kMaxViewDims = 4;

struct TensorView {
  void* data = nullptr;
  int dim = 0;
  int64_t sizes[kMaxViewDims] = {0, 0, 0, 0};
  int64_t strides[kMaxViewDims] = {0, 0, 0, 0};
  int64_t numel = 0;
  DType dtype = DType::kOther;
  bool is_cuda = false;
  int device = -1;  // the CUDA device index; -1 on the CPU

  int64_t size(int d) const { return sizes[d]; }
  int64_t stride(int d) const { return strides[d]; }
  template <typename T>
  const T* const_data_ptr() const { return static_cast<const T*>(data); }
  template <typename T>
  T* mutable_data_ptr() const { return static_cast<T*>(data); }
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream out;
  ((out << args), ...);
  return out.str();
}
}  // namespace detail

}  // namespace ak

// Throws std::runtime_error (Python: RuntimeError) with the message alone, as TORCH_CHECK did.
#define AK_CHECK(cond, ...)                                           \
  do {                                                                \
    if (!(cond)) throw std::runtime_error(::ak::detail::concat(__VA_ARGS__)); \
  } while (0)

// AK_DISPATCH_FLOATING(DTYPE, NAME, lambda) runs the lambda with scalar_t the C++ type of DTYPE: float, half or
// bfloat16; AK_DISPATCH_FLOATING_AND_DOUBLE also double (the CPU kernels, for gradcheck). Any other dtype was
// rejected by bindings.cpp (NAME is for the error all the same).
#define AK_DISPATCH_CASE_(DTYPE_ENUM, TYPE, ...) \
  case ::ak::DType::DTYPE_ENUM: {                \
    using scalar_t = TYPE;                       \
    (__VA_ARGS__)();                             \
    break;                                       \
  }

// The switch over DTYPE with the cases __VA_ARGS__; any other dtype throws.
#define AK_DISPATCH_SWITCH_(DTYPE, NAME, ...)                                         \
  do {                                                                                 \
    switch (DTYPE) {                                                                   \
      __VA_ARGS__                                                                      \
      default: AK_CHECK(false, NAME, ": unsupported dtype ", ::ak::dtype_name(DTYPE)); \
    }                                                                                  \
  } while (0)

#define AK_DISPATCH_FLOATING_CASES_(...)                  \
  AK_DISPATCH_CASE_(kFloat, float, __VA_ARGS__)           \
  AK_DISPATCH_CASE_(kHalf, c10::Half, __VA_ARGS__)        \
  AK_DISPATCH_CASE_(kBFloat16, c10::BFloat16, __VA_ARGS__)

#define AK_DISPATCH_FLOATING(DTYPE, NAME, ...) \
  AK_DISPATCH_SWITCH_(DTYPE, NAME, AK_DISPATCH_FLOATING_CASES_(__VA_ARGS__))

#define AK_DISPATCH_FLOATING_AND_DOUBLE(DTYPE, NAME, ...)                      \
  AK_DISPATCH_SWITCH_(DTYPE, NAME, AK_DISPATCH_FLOATING_CASES_(__VA_ARGS__) \
                                       AK_DISPATCH_CASE_(kDouble, double, __VA_ARGS__))

#ifdef __CUDACC__
// A failed CUDA runtime call or kernel launch, as an exception naming the call.
#define AK_CUDA_CHECK(expr)                                                                        \
  do {                                                                                             \
    const cudaError_t ak_err_ = (expr);                                                            \
    AK_CHECK(ak_err_ == cudaSuccess, "CUDA error in ", #expr, ": ", cudaGetErrorString(ak_err_)); \
  } while (0)
#define AK_CUDA_LAUNCH_CHECK() AK_CUDA_CHECK(cudaGetLastError())
#endif
