// CUDA kernels of counter-based dropout and of the fused bias + ReLU + dropout block. The math, the
// mask and the per-thread work are dropout_math.h's, shared with the CPU kernels and run on the host by
// csrc/emulate/dropout_cuda_emulator.cpp:
//
//   apply_dropout, bias_relu_dropout forward: grid-stride loops (int64) over groups of four elements; a
//     thread draws one Philox call for its group and applies it to the four elements, with one vector
//     load / store per tensor (Pack4) when the pointers allow (and, for the bias kernel, N % 4 == 0).
//   bias_relu_dropout backward: a block owns 16 columns (4 column quads) and 64 row lanes (256
//     threads) of one 512-row chunk; thread (lane t, quad q) walks the chunk's rows t, t + 64, ... (8 at
//     most) of its four columns, writing dx and summing dpre (bias_relu_dropout_backward_lane), then the
//     block adds its 64 lane sums in dropout_math.h's pairwise tree in shared memory and writes dbias (one
//     chunk) or its chunk's partial sums, which a second launch adds in chunk order. So the grid, column
//     blocks x chunks, fills the GPU for tall narrow matrices too. No atomics: the summation order is fixed
//     by kDbiasLanes and kDbiasChunkRows alone (not by the grid or the GPU) and equals the CPU kernel's. Consecutive threads take consecutive quads, so a warp reads 8 rows x 16 columns, whole
//     32-byte sectors. When N % 4 == 0 a quad of a row is one group (one Philox call); otherwise it
//     may straddle two, both drawn (dropout_run_keep_bits).
//
// One launch per call on the stream bindings.cpp passes (the current stream of the tensors' device);
// nothing is allocated and nothing synchronises (safe under CUDA-graph capture).
#include <algorithm>

#include "dropout.h"
#include "dropout_math.h"

namespace ak {
namespace {

constexpr int kThreads = 256;
// Grid cap: far more blocks than any GPU runs at once; the grid-stride loops take the rest.
constexpr int64_t kMaxBlocks = int64_t(1) << 20;
// The backward's block: kBlockQuads column quads x kDbiasLanes row lanes.
constexpr int kBlockQuads = kThreads / kDbiasLanes;
constexpr int kBlockColumns = kBlockQuads * kDropoutGroup;
static_assert(kBlockQuads * kDbiasLanes == kThreads, "the backward block is quads x lanes");
static_assert((kDbiasLanes & (kDbiasLanes - 1)) == 0, "the dbias tree halves the lanes");

// kAligned: src and dst are Pack4-aligned (then every full group moves as one vector each).
template <bool kAligned, typename T>
__global__ void __launch_bounds__(kThreads)
    apply_dropout_kernel(const T* __restrict__ src, T* __restrict__ dst, int64_t numel, const int64_t* __restrict__ seed,
                         DropoutParams<float> p) {
  p.key = make_dropout_key(*seed);
  const int64_t groups = (numel + kDropoutGroup - 1) / kDropoutGroup;
  const int64_t full_groups = numel / kDropoutGroup;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups; g += int64_t(gridDim.x) * blockDim.x) {
    if (kAligned && g < full_groups) {
      dropout_group<true, T, float>(src, dst, numel, g, p);
    } else {
      dropout_group<false, T, float>(src, dst, numel, g, p);
    }
  }
}

// kAligned: N % 4 == 0 and x, bias, y Pack4-aligned (then every group is four columns of one row).
template <bool kAligned, typename T>
__global__ void __launch_bounds__(kThreads)
    bias_relu_dropout_forward_kernel(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y,
                                     int64_t numel, int64_t N, const int64_t* __restrict__ seed, DropoutParams<float> p) {
  p.key = make_dropout_key(*seed);
  const int64_t groups = (numel + kDropoutGroup - 1) / kDropoutGroup;
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups; g += int64_t(gridDim.x) * blockDim.x) {
    bias_relu_dropout_group<kAligned, T, float>(x, bias, y, numel, N, g, p);
  }
}

// kAligned: N % 4 == 0 and dy, y, dx Pack4-aligned (then a quad is 0 or 4 columns, one vector each row).
// Grid: column blocks (x) by dbias chunks (y), both grid-stride. With one chunk the block writes dbias;
// with several it writes its chunk's P_j (float) to partial[j * N + n], and dbias_chunk_sum_kernel adds them.
template <bool kAligned, typename T>
__global__ void __launch_bounds__(kThreads)
    bias_relu_dropout_backward_kernel(const T* __restrict__ dy, const T* __restrict__ y, T* __restrict__ dx,
                                      T* __restrict__ dbias, float* __restrict__ partial, int64_t M, int64_t N,
                                      const int64_t* __restrict__ seed, DropoutParams<float> p) {
  p.key = make_dropout_key(*seed);
  __shared__ float lane_sums[kDbiasLanes][kBlockColumns];
  const int q = threadIdx.x % kBlockQuads;
  const int t = threadIdx.x / kBlockQuads;
  const int64_t column_blocks = (N + kBlockColumns - 1) / kBlockColumns;
  const int64_t chunks = dbias_chunks(M);
  // Both loops are uniform per block: the syncs are safe.
  for (int64_t chunk = blockIdx.y; chunk < chunks; chunk += gridDim.y) {
    for (int64_t cb = blockIdx.x; cb < column_blocks; cb += gridDim.x) {
      const int64_t c = cb * kBlockColumns + q * kDropoutGroup;
      const int count = static_cast<int>(N - c >= kDropoutGroup ? kDropoutGroup : (N - c > 0 ? N - c : 0));
      float s[kDropoutGroup] = {0.0f, 0.0f, 0.0f, 0.0f};
      if constexpr (kAligned) {  // count is 0 or 4
        if (count == kDropoutGroup)
          bias_relu_dropout_backward_lane<true, T, float>(dy, y, dx, M, N, c, count, chunk, t, p, s);
      } else {
        if (count > 0) bias_relu_dropout_backward_lane<false, T, float>(dy, y, dx, M, N, c, count, chunk, t, p, s);
      }
#pragma unroll
      for (int l = 0; l < kDropoutGroup; ++l) lane_sums[t][q * kDropoutGroup + l] = s[l];
      __syncthreads();
      // dropout_math.h's tree: s_t += s_{t+h} for t < h, h = L/2, ..., 1.
#pragma unroll
      for (int h = kDbiasLanes / 2; h >= 1; h /= 2) {
        if (t < h) {
#pragma unroll
          for (int l = 0; l < kDropoutGroup; ++l) {
            lane_sums[t][q * kDropoutGroup + l] += lane_sums[t + h][q * kDropoutGroup + l];
          }
        }
        __syncthreads();
      }
      if (t == 0) {
        for (int l = 0; l < count; ++l) {
          const float sum = lane_sums[0][q * kDropoutGroup + l];
          if (chunks == 1) {
            dbias[c + l] = static_cast<T>(sum);
          } else {
            partial[chunk * N + c + l] = sum;
          }
        }
      }
      __syncthreads();  // lane_sums is reused by the next column block
    }
  }
}

// dbias[n] = 0 + P_0[n] + P_1[n] + ... (chunk order), one thread per column, rounded once.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    dbias_chunk_sum_kernel(const float* __restrict__ partial, T* __restrict__ dbias, int64_t chunks, int64_t N) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (int64_t j = 0; j < chunks; ++j) sum += partial[j * N + n];
    dbias[n] = static_cast<T>(sum);
  }
}

unsigned grid_for(int64_t work_items) {
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>((work_items + kThreads - 1) / kThreads, kMaxBlocks)));
}

#define AK_CUDA_DISPATCH(TYPE, NAME, ...) AK_DISPATCH_FLOATING(TYPE, NAME, __VA_ARGS__)

}  // namespace

void apply_dropout_cuda(const TensorView& src, const TensorView& dst, const int64_t* seed, int64_t threshold,
                        double scale, void* cuda_stream) {
  const int64_t numel = src.numel;
  if (numel == 0) return;
  // The key is read from `seed` (device memory) by the kernels: a CUDA-graph replay sees each replay's draw.
  const DropoutParams<float> p = make_dropout_params<float>(0, threshold, scale);
  const unsigned grid = grid_for((numel + kDropoutGroup - 1) / kDropoutGroup);
  const cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream);
  AK_CUDA_DISPATCH(src.dtype, "apply_dropout_cuda", [&] {
    const scalar_t* s = src.const_data_ptr<scalar_t>();
    scalar_t* d = dst.mutable_data_ptr<scalar_t>();
    if (is_pack4_aligned(s) && is_pack4_aligned(d)) {
      apply_dropout_kernel<true, scalar_t><<<grid, kThreads, 0, stream>>>(s, d, numel, seed, p);
    } else {
      apply_dropout_kernel<false, scalar_t><<<grid, kThreads, 0, stream>>>(s, d, numel, seed, p);
    }
    AK_CUDA_LAUNCH_CHECK();
  });
}

void bias_relu_dropout_forward_cuda(const TensorView& x, const TensorView& bias, const TensorView& y, const int64_t* seed,
                                    int64_t threshold, double scale, void* cuda_stream) {
  const int64_t numel = x.numel;
  if (numel == 0) return;
  const int64_t N = x.size(1);
  // The key is read from `seed` (device memory) by the kernels: a CUDA-graph replay sees each replay's draw.
  const DropoutParams<float> p = make_dropout_params<float>(0, threshold, scale);
  const unsigned grid = grid_for((numel + kDropoutGroup - 1) / kDropoutGroup);
  const cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream);
  AK_CUDA_DISPATCH(x.dtype, "bias_relu_dropout_forward_cuda", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* bp = bias.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    if (N % kDropoutGroup == 0 && is_pack4_aligned(xp) && is_pack4_aligned(bp) && is_pack4_aligned(yp)) {
      bias_relu_dropout_forward_kernel<true, scalar_t><<<grid, kThreads, 0, stream>>>(xp, bp, yp, numel, N, seed, p);
    } else {
      bias_relu_dropout_forward_kernel<false, scalar_t><<<grid, kThreads, 0, stream>>>(xp, bp, yp, numel, N, seed, p);
    }
    AK_CUDA_LAUNCH_CHECK();
  });
}

void bias_relu_dropout_backward_cuda(const TensorView& dy, const TensorView& y, const TensorView& dx,
                                     const TensorView& dbias, const TensorView& partial, const int64_t* seed,
                                     int64_t threshold, double scale, void* cuda_stream) {
  const int64_t M = dy.size(0), N = dy.size(1);
  if (N == 0) return;
  if (M == 0) {  // the sum over no rows
    AK_CUDA_CHECK(cudaMemsetAsync(dbias.data, 0, static_cast<size_t>(N) * dtype_size(dbias.dtype),
                                  static_cast<cudaStream_t>(cuda_stream)));
    return;
  }
  // The key is read from `seed` (device memory) by the kernels: a CUDA-graph replay sees each replay's draw.
  const DropoutParams<float> p = make_dropout_params<float>(0, threshold, scale);
  const int64_t chunks = dbias_chunks(M);
  const int64_t column_blocks = (N + kBlockColumns - 1) / kBlockColumns;
  const dim3 grid(static_cast<unsigned>(std::min<int64_t>(column_blocks, kMaxBlocks)),
                  static_cast<unsigned>(std::min<int64_t>({chunks, std::max<int64_t>(1, kMaxBlocks / column_blocks),
                                                           int64_t(65535)})));
  const cudaStream_t stream = static_cast<cudaStream_t>(cuda_stream);
  float* partial_sums = chunks > 1 ? partial.mutable_data_ptr<float>() : nullptr;
  AK_CUDA_DISPATCH(dy.dtype, "bias_relu_dropout_backward_cuda", [&] {
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    const scalar_t* yp = y.const_data_ptr<scalar_t>();
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    scalar_t* dbp = dbias.mutable_data_ptr<scalar_t>();
    if (N % kDropoutGroup == 0 && is_pack4_aligned(dyp) && is_pack4_aligned(yp) && is_pack4_aligned(dxp)) {
      bias_relu_dropout_backward_kernel<true, scalar_t>
          <<<grid, kThreads, 0, stream>>>(dyp, yp, dxp, dbp, partial_sums, M, N, seed, p);
    } else {
      bias_relu_dropout_backward_kernel<false, scalar_t>
          <<<grid, kThreads, 0, stream>>>(dyp, yp, dxp, dbp, partial_sums, M, N, seed, p);
    }
    AK_CUDA_LAUNCH_CHECK();
    if (chunks > 1) {
      dbias_chunk_sum_kernel<scalar_t><<<grid_for(N), kThreads, 0, stream>>>(partial_sums, dbp, chunks, N);
      AK_CUDA_LAUNCH_CHECK();
    }
  });
}

}  // namespace ak
