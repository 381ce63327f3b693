// CUDA kernels of cross-channel LRN (math: lrn_math.h; kernels and launch planning:
// lrn_cuda_kernels.cuh). One launch for forward, one for backward, on the stream bindings.cpp passes
// (the current stream of the tensors' device, made current there). Nothing is allocated and nothing
// synchronises: safe under CUDA-graph capture. Device limits come from cudaDeviceGetAttribute.
#include <mutex>
#include <unordered_map>

#include "lrn.h"
#include "lrn_cuda_kernels.cuh"

namespace ak {
namespace {

// Read once per device (cudaDeviceGetAttribute neither synchronises nor enqueues work).
DeviceLimits device_limits(int device) {
  static std::mutex mutex;
  static std::unordered_map<int, DeviceLimits> cache;
  const std::lock_guard<std::mutex> lock(mutex);
  auto it = cache.find(device);
  if (it == cache.end()) {
    DeviceLimits limits;
    AK_CUDA_CHECK(cudaDeviceGetAttribute(&limits.max_smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
    AK_CUDA_CHECK(cudaDeviceGetAttribute(&limits.sm_count, cudaDevAttrMultiProcessorCount, device));
    it = cache.emplace(device, limits).first;
  }
  return it->second;
}

struct LaunchContext {
  LrnShape shape;
  LrnParams params;
  bool rows_of_channels;
  DeviceLimits device;
  cudaStream_t stream;
};

LaunchContext make_context(const TensorView& x, int64_t size, double alpha, double beta, double k,
                           bool channels_last, void* stream) {
  LaunchContext ctx;
  ctx.shape = LrnShape{x.size(0), static_cast<int>(x.size(1)), x.size(2)};
  ctx.params = make_lrn_params(size, alpha, beta, k, x.size(1));
  ctx.rows_of_channels = channels_last || ctx.shape.S == 1;
  ctx.device = device_limits(x.device);
  ctx.stream = static_cast<cudaStream_t>(stream);
  return ctx;
}

// One launch of `kernel` as the plan says. Dynamic shared memory above the default 48 KiB needs an opt-in
// per kernel (plan_launch kept it within the device's limit); cudaFuncSetAttribute is not a stream
// operation: allowed while a CUDA graph is being captured.
template <typename... Params, typename... Args>
void launch(void (*kernel)(Params...), const LaunchPlan& plan, const LaunchContext& ctx, Args... args) {
  if (plan.smem_bytes > 48 * 1024) {
    AK_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(plan.smem_bytes)));
  }
  const dim3 grid(static_cast<unsigned>(plan.grid));
  const dim3 block(plan.block_x, plan.block_y);
  kernel<<<grid, block, plan.smem_bytes, ctx.stream>>>(args...);
  AK_CUDA_LAUNCH_CHECK();
}

template <typename T>
void launch_forward(const T* x, T* y, const LaunchContext& ctx) {
  const LaunchPlan plan = plan_launch<T>(false, ctx.shape, ctx.params, ctx.rows_of_channels, ctx.device);
  switch (plan.kind) {
    case KernelKind::kNchwTiles:
      return launch(lrn_forward_nchw_kernel<T>, plan, ctx, x, y, ctx.shape, ctx.params, plan.tiles);
    case KernelKind::kNhwcTiles:
      return launch(lrn_forward_nhwc_kernel<T>, plan, ctx, x, y, ctx.shape, ctx.params, plan.tile_positions,
                    plan.tiles);
    case KernelKind::kFallback:
      return launch(lrn_forward_fallback_kernel<T>, plan, ctx, x, y, plan.fallback, ctx.params);
  }
}

template <typename T>
void launch_backward(const T* x, const T* dy, T* dx, const LaunchContext& ctx) {
  const LaunchPlan plan = plan_launch<T>(true, ctx.shape, ctx.params, ctx.rows_of_channels, ctx.device);
  switch (plan.kind) {
    case KernelKind::kNchwTiles:
      return launch(lrn_backward_nchw_kernel<T>, plan, ctx, x, dy, dx, ctx.shape, ctx.params, plan.tiles);
    case KernelKind::kNhwcTiles:
      return launch(lrn_backward_nhwc_kernel<T>, plan, ctx, x, dy, dx, ctx.shape, ctx.params, plan.tile_positions,
                    plan.tiles);
    case KernelKind::kFallback:
      return launch(lrn_backward_fallback_kernel<T>, plan, ctx, x, dy, dx, plan.fallback, ctx.params);
  }
}

#define AK_CUDA_DISPATCH(TYPE, NAME, ...) AK_DISPATCH_FLOATING(TYPE, NAME, __VA_ARGS__)

}  // namespace

void lrn_forward_cuda(const TensorView& x, const TensorView& y, int64_t size, double alpha, double beta, double k,
                      bool channels_last, void* stream) {
  if (x.numel == 0) return;
  const LaunchContext ctx = make_context(x, size, alpha, beta, k, channels_last, stream);
  AK_CUDA_DISPATCH(x.dtype, "lrn_forward_cuda", [&] {
    launch_forward<scalar_t>(x.const_data_ptr<scalar_t>(), y.mutable_data_ptr<scalar_t>(), ctx);
  });
}

void lrn_backward_cuda(const TensorView& x, const TensorView& dy, const TensorView& dx, int64_t size, double alpha,
                       double beta, double k, bool channels_last, void* stream, LrnBackwardSums sums) {
  if (x.numel == 0) return;
  LaunchContext ctx = make_context(x, size, alpha, beta, k, channels_last, stream);
  ctx.params.backward_v1 = sums == LrnBackwardSums::kV1;
  AK_CUDA_DISPATCH(x.dtype, "lrn_backward_cuda", [&] {
    launch_backward<scalar_t>(x.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(),
                              dx.mutable_data_ptr<scalar_t>(), ctx);
  });
}

}  // namespace ak
