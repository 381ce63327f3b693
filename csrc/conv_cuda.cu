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
  int launch(void (*kernel)(Args), ConvKernel kind) {
    const ConvTileShape shape = tile_shape<TileT>();
    const size_t smem = conv_smem_bytes(shape, dtype, kind);
    // Above 48 KiB a kernel must opt in; set on every call (it is per device, and cheap).
    cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return fail(err, errlen, op, "cudaFuncSetAttribute", e);
    const ConvGridSize g = conv_grid<TileT>(a);
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
  int run() { return launch<TileT>(conv2d_relu_fwd_kernel<T, MK, TileT, L>, ConvKernel::kForward); }
  template <typename T, MathKind MK, typename TileT, bool VEC>
  int run_dgrad() { return launch<TileT>(conv2d_relu_dgrad_kernel<T, MK, TileT, VEC>, ConvKernel::kDgrad); }
  template <typename T, MathKind MK, typename TileT, bool VEC>
  int run_wgrad() { return launch<TileT>(conv2d_relu_wgrad_kernel<T, MK, TileT, VEC>, ConvKernel::kWgrad); }
};

// Blocks of the kernel dispatch_conv picks that one multiprocessor holds at once (its residency, from its registers,
// threads and the tile's dynamic shared memory), for conv_wgrad_splits.  Same dispatch as Launcher, no launch.
struct Residency {
  ConvDtype dtype;
  cudaError_t error = cudaSuccess;

  template <typename TileT, typename Args>
  int blocks(void (*kernel)(Args)) {
    const ConvTileShape shape = tile_shape<TileT>();
    const size_t smem = conv_smem_bytes(shape, dtype, ConvKernel::kWgrad);
    // The occupancy query counts a kernel whose dynamic shared memory is above its opt-in as not resident.
    error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    int n = 0;
    if (error == cudaSuccess) error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, TileT::kThreads, smem);
    return n;
  }
  template <typename T, MathKind MK, typename TileT, bool VEC>
  int run_wgrad() { return blocks<TileT>(conv2d_relu_wgrad_kernel<T, MK, TileT, VEC>); }
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

// What a plan needs of the device: its multiprocessors and its opt-in dynamic shared memory per block.
struct ConvDeviceLimits {
  int sm_count = 0, smem_optin = 0;
};

cudaError_t conv_device_limits(int device, ConvDeviceLimits* limits) {
  cudaError_t e = cudaDeviceGetAttribute(&limits->sm_count, cudaDevAttrMultiProcessorCount, device);
  if (e == cudaSuccess)
    e = cudaDeviceGetAttribute(&limits->smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  return e;
}

// What the three entry points share: the problem's check (problem_error: nullptr or what is wrong), nothing
// more when the problem is empty, else the device made current, its limits, the plan (make_plan(limits)), the
// kernel arguments (make_args(plan)) and one launch.
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
  ConvDeviceLimits limits{};
  const cudaError_t e = conv_device_limits(device, &limits);
  if (e != cudaSuccess) return fail(err, errlen, op, "cudaDeviceGetAttribute", e);
  const Plan plan = make_plan(limits);
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
      [&](const ConvDeviceLimits& d) {
        return plan_conv(p, dtype, allow_tf32, d.sm_count, align16(x), align16(w), align16(y), d.smem_optin);
      },
      [&](const ConvPlan& plan) { return make_conv_args(p, plan, x, w, bias, y); });
}

int conv2d_relu_dgrad_cuda(const void* dy, const void* y, const void* wt, void* dx, const ConvDgradProblem& d,
                           ConvDtype dtype, bool allow_tf32, cudaStream_t stream, int device, char* err,
                           size_t errlen) {
  return plan_and_launch<ConvDgradPlan>(
      "conv2d_relu_dgrad_cuda", conv_dgrad_problem_error(d), d.p.N == 0, device, dtype, stream, err, errlen,
      [&](const ConvDeviceLimits& limits) {
        return plan_conv_dgrad(d, dtype, allow_tf32, limits.sm_count, align16(dy), align16(y), align16(wt),
                               align16(dx), limits.smem_optin);
      },
      [&](const ConvDgradPlan& plan) { return make_dgrad_args(d, plan, dy, y, wt, dx); });
}

int conv2d_relu_wgrad_cuda(const void* dy, const void* y, const void* x, float* dw_part, float* db_part,
                           const ConvWgradProblem& w, ConvDtype dtype, bool allow_tf32, cudaStream_t stream,
                           int device, char* err, size_t errlen) {
  // N == 0 still launches: the kernel writes the zero sums.
  return plan_and_launch<ConvWgradPlan>(
      "conv2d_relu_wgrad_cuda", conv_wgrad_problem_error(w), false, device, dtype, stream, err, errlen,
      [&](const ConvDeviceLimits& d) {
        return plan_conv_wgrad(w, dtype, allow_tf32, align16(dy), align16(y), align16(x), d.smem_optin);
      },
      [&](const ConvWgradPlan& plan) { return make_wgrad_args(w, plan, dy, y, x, dw_part, db_part); });
}

int conv2d_relu_wgrad_splits_cuda(const void* dy, const void* y, const void* x, const ConvWgradProblem& w,
                                  ConvDtype dtype, bool allow_tf32, int device, int64_t* splits, char* err,
                                  size_t errlen) {
  const char* op = "conv2d_relu_wgrad_splits_cuda";
  ConvWgradProblem one = w;
  one.splits = 1;  // the problem's own splits play no part in choosing them
  if (const char* why = conv_wgrad_problem_error(one)) {
    snprintf(err, errlen, "%s: %s", op, why);
    return 1;
  }
  const DeviceScope scope(device);
  if (scope.error != cudaSuccess) return fail(err, errlen, op, "cudaSetDevice", scope.error);
  ConvDeviceLimits limits{};
  cudaError_t e = conv_device_limits(device, &limits);
  if (e != cudaSuccess) return fail(err, errlen, op, "cudaDeviceGetAttribute", e);
  const ConvWgradPlan plan =
      plan_conv_wgrad(one, dtype, allow_tf32, align16(dy), align16(y), align16(x), limits.smem_optin);
  Residency residency{dtype};
  const int blocks_per_sm = dispatch_conv<conv_f16, conv_bf16>(plan, dtype, residency);
  if (residency.error != cudaSuccess) return fail(err, errlen, op, "cudaOccupancyMaxActiveBlocksPerMultiprocessor",
                                                  residency.error);
  *splits = conv_wgrad_splits(one.p, plan.tile, limits.sm_count, blocks_per_sm);
  return 0;
}

}  // namespace ak
