// Host emulation of the CUDA kernels in pool_cuda.cu: each of them is a grid-stride loop in which a thread
// calls one *_element function of pool_math.h on one element, with no shared memory and no communication
// between threads -- so calling the same element function on every element in turn, on the CPU, runs
// exactly the device code's index arithmetic and math (only the hardware pow differs: lrn_math.h).
// Built by tests/test_cuda_emulation.py with torch.utils.cpp_extension.load and checked against torch.
#include <torch/extension.h>

#include <type_traits>
#include <vector>

#include "pool_math.h"

namespace {

using namespace ak;

// Which index path the "threads" take: 0 = the kernels' own choice (32-bit when PoolProblem::index32),
// 64 = the 64-bit path always (what a tensor of 2^31 elements or more runs), 32 = 32-bit (index32 must hold).
int g_index_path = 0;

void set_index_path(int64_t path) {
  TORCH_CHECK(path == 0 || path == 32 || path == 64, "index path is 0, 32 or 64");
  g_index_path = static_cast<int>(path);
}

bool use_index32(const PoolProblem& P) {
  if (g_index_path == 32) TORCH_CHECK(P.index32, "the 32-bit index path needs offsets below 2^31");
  return g_index_path == 0 ? P.index32 : g_index_path == 32;
}

PoolProblem problem(const at::Tensor& in, const at::Tensor& out, const std::vector<int64_t>& geometry,
                    bool channels_last) {
  TORCH_CHECK(geometry.size() == 6, "geometry is (kH, kW, sH, sW, pH, pW)");
  const PoolParams p{int(geometry[0]), int(geometry[1]), int(geometry[2]), int(geometry[3]), int(geometry[4]),
                     int(geometry[5])};
  return make_pool_problem(in.size(0), in.size(1), in.size(2), in.size(3), out.size(2), out.size(3), p,
                           channels_last);
}

#define EMULATOR_DISPATCH(TYPE, NAME, ...)                               \
  AT_DISPATCH_SWITCH(TYPE, NAME,                                         \
                     AT_DISPATCH_CASE(at::ScalarType::Float, __VA_ARGS__) \
                     AT_DISPATCH_CASE(at::ScalarType::Half, __VA_ARGS__)  \
                     AT_DISPATCH_CASE(at::ScalarType::BFloat16, __VA_ARGS__))

// A type as a value (std::type_identity is C++20; torch 2.11's extension builds are C++17).
template <typename T>
struct TypeTag {
  using type = T;
};

// Every "thread" of the launch, in turn: thread(type, o, index) for each offset o of the tensor (of `count`
// elements) the kernel maps its threads to, type a TypeTag of `data`'s C++ type and index a value of the index
// type the kernels' grid_stride dispatches to.
template <typename Thread>
void each_thread(const at::Tensor& data, const PoolProblem& P, int64_t count, const Thread& thread) {
  EMULATOR_DISPATCH(data.scalar_type(), "pool_cuda_emulator", [&] {
    const TypeTag<scalar_t> type;
    if (use_index32(P)) {
      for (int64_t o = 0; o < count; ++o) thread(type, o, int32_t(0));
    } else {
      for (int64_t o = 0; o < count; ++o) thread(type, o, int64_t(0));
    }
  });
}

void max_pool2d_forward(at::Tensor x, at::Tensor y, at::Tensor offsets, std::vector<int64_t> geometry,
                        bool channels_last) {
  const PoolProblem P = problem(x, y, geometry, channels_last);
  each_thread(x, P, y.numel(), [&](auto type, int64_t o, auto index) {
    using T = typename decltype(type)::type;
    max_pool_forward_element<T, float, decltype(index)>(x.data_ptr<T>(), y.data_ptr<T>(), offsets.data_ptr<uint8_t>(),
                                                        P, o);
  });
}

void max_pool2d_backward(at::Tensor dy, at::Tensor offsets, at::Tensor dx, std::vector<int64_t> geometry,
                         bool channels_last) {
  const PoolProblem P = problem(dx, dy, geometry, channels_last);
  each_thread(dx, P, dx.numel(), [&](auto type, int64_t o, auto index) {
    using T = typename decltype(type)::type;
    max_pool_backward_element<T, float, decltype(index)>(dy.data_ptr<T>(), offsets.data_ptr<uint8_t>(),
                                                         dx.data_ptr<T>(), P, o);
  });
}

void relu_lrn_max_pool2d_forward(at::Tensor x, at::Tensor z, at::Tensor offsets, int64_t size, double alpha,
                                 double beta, double k, std::vector<int64_t> geometry, bool channels_last) {
  const PoolProblem P = problem(x, z, geometry, channels_last);
  const LrnCoeffs<float> lrn = make_lrn_coeffs<float>(size, alpha, beta, k, x.size(1));
  each_thread(x, P, z.numel(), [&](auto type, int64_t o, auto index) {
    using T = typename decltype(type)::type;
    fused_forward_element<T, float, decltype(index)>(x.data_ptr<T>(), z.data_ptr<T>(), offsets.data_ptr<uint8_t>(),
                                                     P, lrn, o);
  });
}

void relu_lrn_max_pool2d_backward(at::Tensor x, at::Tensor dz, at::Tensor offsets, at::Tensor dx, int64_t size,
                                  double alpha, double beta, double k, std::vector<int64_t> geometry,
                                  bool channels_last) {
  const PoolProblem P = problem(x, dz, geometry, channels_last);
  const LrnCoeffs<float> lrn = make_lrn_coeffs<float>(size, alpha, beta, k, x.size(1));
  each_thread(x, P, dx.numel(), [&](auto type, int64_t o, auto index) {
    using T = typename decltype(type)::type;
    fused_backward_element<T, float, decltype(index)>(x.data_ptr<T>(), dz.data_ptr<T>(), offsets.data_ptr<uint8_t>(),
                                                      dx.data_ptr<T>(), P, lrn, o);
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("set_index_path", &set_index_path);
  m.def("index32", [](std::vector<int64_t> in_shape, std::vector<int64_t> out_hw) {
    return make_pool_problem(in_shape[0], in_shape[1], in_shape[2], in_shape[3], out_hw[0], out_hw[1],
                             PoolParams{3, 3, 2, 2, 0, 0}, false).index32;
  });
  m.def("max_pool2d_forward", &max_pool2d_forward);
  m.def("max_pool2d_backward", &max_pool2d_backward);
  m.def("relu_lrn_max_pool2d_forward", &relu_lrn_max_pool2d_forward);
  m.def("relu_lrn_max_pool2d_backward", &relu_lrn_max_pool2d_backward);
}
