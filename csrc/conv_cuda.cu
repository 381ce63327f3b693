// Host launcher of the CUDA implicit-GEMM convolution + bias + ReLU (device code: conv_cuda_kernels.cuh;
// problem, checks and tile plan: conv.h).  Torch-free: raw pointers, the CUDA runtime, a stream.
//
// One launch per call on the caller's stream; nothing is allocated and nothing synchronises (safe under
// CUDA-graph capture).  Kernels compiled (dispatch_conv): bf16 / fp16 / fp32-TF32 x the three tiles of
// conv.h (kConvTiles) x the cp.async16 and row-span A loaders, plus the scalar A loader and the exact-fp32
// FMA path on the 64x64 tile.
#include <cuda_runtime.h>

#include <cstdio>
#include <type_traits>

#include "conv.h"
#include "conv_cuda_kernels.cuh"

namespace ak {
namespace {

using namespace conv_detail;

int fail(char* err, size_t errlen, const char* op, const char* what, cudaError_t e) {
  snprintf(err, errlen, "%s: %s: %s", op, what, cudaGetErrorString(e));
  return 1;
}

// Launches the kernel the dispatcher picks (dispatch_conv) for one of the three problems, Args being its
// kernel arguments (ConvArgs, DgradArgs or WgradArgs): opts in to the tile's dynamic shared memory, then
// one launch on `stream` over conv_grid.
template <typename Args>
struct Launcher {
  const Args& a;
  ConvDtype dtype;
  cudaStream_t stream;
  const char* op;
  char* err;
  size_t errlen;

  template <typename TileT>
  int launch(void (*kernel)(Args)) {
    const ConvTileShape shape{TileT::BM, TileT::BN, TileT::BK, TileT::WARPS_M, TileT::WARPS_N, TileT::STAGES};
    const size_t smem = conv_smem_bytes(shape, dtype);
    // Above 48 KiB a kernel must opt in; set on every call (it is per device, and cheap).
    cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return fail(err, errlen, op, "cudaFuncSetAttribute", e);
    const ConvGrid g = conv_grid<TileT>(a);
    if (g.x > 0x7fffffff || g.y > kConvMaxGridY || g.z > kConvMaxGridY) {
      snprintf(err, errlen, "%s: a grid of (%lld, %lld, %lld) blocks exceeds CUDA's (2^31 - 1, 65535, 65535)", op,
               (long long)g.x, (long long)g.y, (long long)g.z);
      return 1;
    }
    const dim3 grid(static_cast<unsigned>(g.x), static_cast<unsigned>(g.y), static_cast<unsigned>(g.z));
    kernel<<<grid, TileT::kThreads, smem, stream>>>(a);
    e = cudaGetLastError();
    return e == cudaSuccess ? 0 : fail(err, errlen, op, "kernel launch", e);
  }

  // What dispatch_conv calls, one per kernel.
  template <typename T, MathKind MK, typename TileT, ConvLoader L>
  int run() { return launch<TileT>(conv2d_relu_fwd_kernel<T, MK, TileT, L>); }
  template <typename T, MathKind MK, typename TileT, bool VEC>
  int run_dgrad() { return launch<TileT>(conv2d_relu_dgrad_kernel<T, MK, TileT, VEC>); }
  template <typename T, MathKind MK, typename TileT, bool VEC>
  int run_wgrad() { return launch<TileT>(conv2d_relu_wgrad_kernel<T, MK, TileT, VEC>); }
};

unsigned align16(const void* p) { return static_cast<unsigned>(reinterpret_cast<uintptr_t>(p) & 15); }

// Makes `device` current for the call (and restores the caller's).
struct DeviceScope {
  int previous = -1, device;
  cudaError_t error = cudaSuccess;
  explicit DeviceScope(int d) : device(d) {
    error = cudaGetDevice(&previous);
    if (error == cudaSuccess && previous != device) error = cudaSetDevice(device);
  }
  ~DeviceScope() {
    if (previous >= 0 && previous != device) cudaSetDevice(previous);
  }
};

// What the three entry points share: the problem's check (problem_error: nullptr or what is wrong), nothing
// more when the problem is empty, else the device made current, its multiprocessor count, the plan
// (make_plan(sm_count)), the kernel arguments (make_args(plan)) and one launch.
template <typename Plan, typename MakePlan, typename MakeArgs>
int plan_and_launch(const char* op, const char* problem_error, bool empty, int device, ConvDtype dtype,
                    cudaStream_t stream, char* err, size_t errlen, MakePlan make_plan, MakeArgs make_args) {
  if (problem_error != nullptr) {
    snprintf(err, errlen, "%s: %s", op, problem_error);
    return 1;
  }
  if (empty) return 0;
  const DeviceScope scope(device);
  if (scope.error != cudaSuccess) return fail(err, errlen, op, "cudaSetDevice", scope.error);
  int sms = 0;
  const cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return fail(err, errlen, op, "cudaDeviceGetAttribute", e);
  const Plan plan = make_plan(sms);
  const auto a = make_args(plan);
  Launcher<std::decay_t<decltype(a)>> launcher{a, dtype, stream, op, err, errlen};
  return dispatch_conv<conv_f16, conv_bf16>(plan, dtype, launcher);
}

}  // namespace

int conv2d_relu_forward_cuda(const void* x, const void* w, const void* bias, void* y, const ConvProblem& p,
                             ConvDtype dtype, bool allow_tf32, cudaStream_t stream, int device, char* err,
                             size_t errlen) {
  return plan_and_launch<ConvPlan>(
      "conv2d_relu_forward_cuda", conv_problem_error(p), p.N == 0, device, dtype, stream, err, errlen,
      [&](int sms) { return plan_conv(p, dtype, allow_tf32, sms, align16(x), align16(w), align16(y)); },
      [&](const ConvPlan& plan) { return make_conv_args(p, plan, x, w, bias, y); });
}

int conv2d_relu_dgrad_cuda(const void* dy, const void* y, const void* wt, void* dx, const ConvDgradProblem& d,
                           ConvDtype dtype, bool allow_tf32, cudaStream_t stream, int device, char* err,
                           size_t errlen) {
  return plan_and_launch<ConvDgradPlan>(
      "conv2d_relu_dgrad_cuda", conv_dgrad_problem_error(d), d.p.N == 0, device, dtype, stream, err, errlen,
      [&](int sms) {
        return plan_conv_dgrad(d, dtype, allow_tf32, sms, align16(dy), align16(y), align16(wt), align16(dx));
      },
      [&](const ConvDgradPlan& plan) { return make_dgrad_args(d, plan, dy, y, wt, dx); });
}

int conv2d_relu_wgrad_cuda(const void* dy, const void* y, const void* x, float* dw_part, float* db_part,
                           const ConvWgradProblem& w, ConvDtype dtype, bool allow_tf32, cudaStream_t stream,
                           int device, char* err, size_t errlen) {
  // N == 0 still launches: the kernel writes the zero sums.
  return plan_and_launch<ConvWgradPlan>(
      "conv2d_relu_wgrad_cuda", conv_wgrad_problem_error(w), false, device, dtype, stream, err, errlen,
      [&](int /*sms*/) { return plan_conv_wgrad(w, dtype, allow_tf32, align16(dy), align16(y), align16(x)); },
      [&](const ConvWgradPlan& plan) { return make_wgrad_args(w, plan, dy, y, x, dw_part, db_part); });
}

}  // namespace ak
