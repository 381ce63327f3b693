// Host launcher of the CUDA implicit-GEMM convolution + bias + ReLU (device code: conv_cuda_kernels.cuh;
// problem, checks and tile plan: conv.h).  Torch-free: raw pointers, the CUDA runtime, a stream.
//
// One launch per call on the caller's stream; nothing is allocated and nothing synchronises (safe under
// CUDA-graph capture).  Kernels compiled (dispatch_conv): bf16 / fp16 / fp32-TF32 x the three tiles of
// conv.h (kConvTiles) x the cp.async16 and row-span A loaders, plus the scalar A loader and the exact-fp32
// FMA path on the 64x64 tile.
#include <cuda_runtime.h>

#include <cstdio>

#include "conv.h"
#include "conv_cuda_kernels.cuh"

namespace ak {
namespace {

using namespace conv_detail;

int fail(char* err, size_t errlen, const char* what, cudaError_t e) {
  snprintf(err, errlen, "conv2d_relu_forward_cuda: %s: %s", what, cudaGetErrorString(e));
  return 1;
}

struct Launcher {
  const ConvArgs& a;
  ConvDtype dtype;
  cudaStream_t stream;
  char* err;
  size_t errlen;

  template <typename T, MathKind MK, typename TileT, ConvLoader L>
  int run() {
    auto kernel = conv2d_relu_fwd_kernel<T, MK, TileT, L>;
    const ConvTileShape shape{TileT::BM, TileT::BN, TileT::BK, TileT::WARPS_M, TileT::WARPS_N, TileT::STAGES};
    const size_t smem = conv_smem_bytes(shape, dtype);
    // Above 48 KiB a kernel must opt in; set on every call (it is per device, and cheap).
    cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return fail(err, errlen, "cudaFuncSetAttribute", e);
    const int64_t m_tiles = (a.M + TileT::BM - 1) / TileT::BM;
    if (m_tiles > 0x7fffffff) {
      snprintf(err, errlen, "conv2d_relu_forward_cuda: %lld pixel tiles exceed the grid", (long long)m_tiles);
      return 1;
    }
    const dim3 grid(static_cast<unsigned>(m_tiles), static_cast<unsigned>(a.n_tiles * (a.Cout / a.Og)));
    kernel<<<grid, TileT::kThreads, smem, stream>>>(a);
    e = cudaGetLastError();
    return e == cudaSuccess ? 0 : fail(err, errlen, "kernel launch", e);
  }
};

struct DgradLauncher {
  const DgradArgs& a;
  ConvDtype dtype;
  cudaStream_t stream;
  char* err;
  size_t errlen;

  template <typename T, MathKind MK, typename TileT, bool VEC>
  int run_dgrad() {
    auto kernel = conv2d_relu_dgrad_kernel<T, MK, TileT, VEC>;
    const ConvTileShape shape{TileT::BM, TileT::BN, TileT::BK, TileT::WARPS_M, TileT::WARPS_N, TileT::STAGES};
    const size_t smem = conv_smem_bytes(shape, dtype);
    cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return fail(err, errlen, "cudaFuncSetAttribute", e);
    const int64_t m_tiles = (a.M + TileT::BM - 1) / TileT::BM;
    if (m_tiles > 0x7fffffff) {
      snprintf(err, errlen, "conv2d_relu_dgrad_cuda: %lld pixel tiles exceed the grid", (long long)m_tiles);
      return 1;
    }
    const dim3 grid(static_cast<unsigned>(m_tiles), static_cast<unsigned>(a.n_tiles * (a.Cout / a.Og)));
    kernel<<<grid, TileT::kThreads, smem, stream>>>(a);
    e = cudaGetLastError();
    return e == cudaSuccess ? 0 : fail(err, errlen, "kernel launch", e);
  }
};

struct WgradLauncher {
  const WgradArgs& a;
  int64_t groups, splits;
  ConvDtype dtype;
  cudaStream_t stream;
  char* err;
  size_t errlen;

  template <typename T, MathKind MK, typename TileT, bool VEC>
  int run_wgrad() {
    auto kernel = conv2d_relu_wgrad_kernel<T, MK, TileT, VEC>;
    const ConvTileShape shape{TileT::BM, TileT::BN, TileT::BK, TileT::WARPS_M, TileT::WARPS_N, TileT::STAGES};
    const size_t smem = conv_smem_bytes(shape, dtype);
    cudaError_t e =
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
    if (e != cudaSuccess) return fail(err, errlen, "cudaFuncSetAttribute", e);
    const int64_t blocks_x = int64_t(a.m_tiles) * ((a.K + TileT::BN - 1) / TileT::BN);
    if (blocks_x > 0x7fffffff) {
      snprintf(err, errlen, "conv2d_relu_wgrad_cuda: %lld tiles exceed the grid", (long long)blocks_x);
      return 1;
    }
    const dim3 grid(static_cast<unsigned>(blocks_x), static_cast<unsigned>(groups), static_cast<unsigned>(splits));
    kernel<<<grid, TileT::kThreads, smem, stream>>>(a);
    e = cudaGetLastError();
    return e == cudaSuccess ? 0 : fail(err, errlen, "kernel launch", e);
  }
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

}  // namespace

int conv2d_relu_forward_cuda(const void* x, const void* w, const void* bias, void* y, const ConvProblem& p,
                             ConvDtype dtype, bool allow_tf32, cudaStream_t stream, int device, char* err,
                             size_t errlen) {
  if (const char* why = conv_problem_error(p)) {
    snprintf(err, errlen, "conv2d_relu_forward_cuda: %s", why);
    return 1;
  }
  if (p.N == 0) return 0;
  int previous = 0;
  cudaError_t e = cudaGetDevice(&previous);
  if (e != cudaSuccess) return fail(err, errlen, "cudaGetDevice", e);
  if (previous != device && (e = cudaSetDevice(device)) != cudaSuccess) return fail(err, errlen, "cudaSetDevice", e);
  int sms = 0, rc = 0;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) {
    rc = fail(err, errlen, "cudaDeviceGetAttribute", e);
  } else {
    const ConvPlan plan = plan_conv(p, dtype, allow_tf32, sms, align16(x), align16(w), align16(y));
    const ConvArgs a = make_conv_args(p, plan, x, w, bias, y);
    if (int64_t(a.n_tiles) * p.groups > kConvMaxGridY) {
      snprintf(err, errlen, "conv2d_relu_forward_cuda: %lld output-channel tiles x %lld groups exceed the grid",
               (long long)a.n_tiles, (long long)p.groups);
      rc = 1;
    } else {
      Launcher launcher{a, dtype, stream, err, errlen};
      rc = dispatch_conv<conv_f16, conv_bf16>(plan, dtype, launcher);
    }
  }
  if (previous != device) cudaSetDevice(previous);
  return rc;
}

int conv2d_relu_dgrad_cuda(const void* dy, const void* y, const void* wt, void* dx, const ConvDgradProblem& d,
                           ConvDtype dtype, bool allow_tf32, cudaStream_t stream, int device, char* err,
                           size_t errlen) {
  if (const char* why = conv_dgrad_problem_error(d)) {
    snprintf(err, errlen, "conv2d_relu_dgrad_cuda: %s", why);
    return 1;
  }
  if (d.p.N == 0) return 0;
  const DeviceScope scope(device);
  if (scope.error != cudaSuccess) return fail(err, errlen, "cudaSetDevice", scope.error);
  int sms = 0;
  const cudaError_t e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (e != cudaSuccess) return fail(err, errlen, "cudaDeviceGetAttribute", e);
  const ConvDgradPlan plan = plan_conv_dgrad(d, dtype, allow_tf32, sms, align16(dy), align16(y), align16(wt),
                                             align16(dx));
  const DgradArgs a = make_dgrad_args(d, plan, dy, y, wt, dx);
  if (int64_t(a.n_tiles) * d.p.groups > kConvMaxGridY) {
    snprintf(err, errlen, "conv2d_relu_dgrad_cuda: %lld channel tiles x %lld groups exceed the grid",
             (long long)a.n_tiles, (long long)d.p.groups);
    return 1;
  }
  DgradLauncher launcher{a, dtype, stream, err, errlen};
  return dispatch_dgrad<conv_f16, conv_bf16>(plan, dtype, launcher);
}

int conv2d_relu_wgrad_cuda(const void* dy, const void* y, const void* x, float* dw_part, float* db_part,
                           const ConvWgradProblem& w, ConvDtype dtype, bool allow_tf32, cudaStream_t stream,
                           int device, char* err, size_t errlen) {
  if (const char* why = conv_wgrad_problem_error(w)) {
    snprintf(err, errlen, "conv2d_relu_wgrad_cuda: %s", why);
    return 1;
  }
  const DeviceScope scope(device);
  if (scope.error != cudaSuccess) return fail(err, errlen, "cudaSetDevice", scope.error);
  const ConvWgradPlan plan = plan_conv_wgrad(w, dtype, allow_tf32, align16(dy), align16(y), align16(x));
  const WgradArgs a = make_wgrad_args(w, plan, dy, y, x, dw_part, db_part);
  WgradLauncher launcher{a, w.p.groups, w.splits, dtype, stream, err, errlen};
  return dispatch_wgrad<conv_f16, conv_bf16>(plan, dtype, launcher);
}

}  // namespace ak
