// Device code of the CUDA LRN kernels and the host-side choice of kernel and launch shape.
// Included by lrn_cuda.cu; kept free of CUDA-runtime and ATen calls, so that a host-side emulator
// (each block run as real threads, __syncthreads as a barrier) can include it as well.
//
// Layouts (the tensor is viewed as (N, C, S)):
//   NCHW (channels_last == false): element (n, c, s) at (n*C + c)*S + s
//   NHWC (channels_last == true):  element (n, c, s) at (n*S + s)*C + c, i.e. a [N*S][C] matrix
// NCHW with S == 1 is the same memory as NHWC and takes the NHWC kernels.
//
// Kernels:
//   * NCHW tiles (pre + post <= kMaxTiledHalo): a block takes one n, kNchwTileChannels output
//     channels and kNchwTilePositions positions. It copies the rows of the channels the tile's windows
//     touch (with the halo) into shared memory: rows along s are contiguous in global memory, so the
//     copy is coalesced and moves 16-byte vectors where the row's alignment allows (load_nchw_rows).
//     Shared rows are [channel][position], so a warp reading one channel row for 32 consecutive
//     positions is bank-conflict free; each output then sums exactly its n window terms. The backward
//     forms base_j and t_j once per tile row (phase 1) and sums t over the transposed windows (phase 2);
//     its default "v2" window sums read each shared value once into registers per run of kRegRows rows
//     (windows up to kRegWindowMax), "v1" (wider windows, or LrnParams::backward_v1: the internal entry
//     point benchmarks compare against) re-reads the n terms of every sum from shared memory.
//   * NHWC tiles (C <= kNhwcMaxChannels): a block takes all C channels of a run of consecutive
//     positions, a contiguous span of memory with no halo (every window stays inside the tile).
//     It is copied with 16-byte vectors; lanes map to consecutive channels when computing.
//   * Fallback (any n, any C, either layout): one thread per output, window sums read from global
//     memory (backward recomputes each t_j from its own window). Slow for wide windows, but correct.
//
// Shared tiles keep the tensor's own dtype (half the space and no conversion cost for fp16/bf16);
// elements are converted to float when read, and every sum is accumulated in float.
// All offsets into the tensors are int64 (tensors may exceed 2^31 elements); offsets inside a tile
// are int.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "lrn_math.h"

namespace ak {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

// NCHW tile: output channels x positions. 64 positions waste little on the shapes that matter
// (S = 169, 729, 3025 split into 3, 12, 48 tiles at 88%, 95%, 98% use).
constexpr int kNchwTileChannels = 32;
constexpr int kNchwTilePositions = 64;
// Widest halo (pre + post = window - 1) of the tiled kernels; wider windows take the fallback.
constexpr int kMaxTiledHalo = 64;

// NHWC tile: about this many elements (all channels of max(1, kNhwcTileElements / C) positions).
constexpr int kNhwcTileElements = 2048;
constexpr int kNhwcMaxChannels = 1024;

// Largest grid we launch; tile loops stride over the rest.
constexpr int64_t kMaxGridBlocks = int64_t(1) << 30;

struct LrnShape {
  int64_t N;
  int C;
  int64_t S;
};

template <typename T>
struct VecTraits {
  static constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // elements per 16-byte vector
};

__host__ __device__ inline int64_t ceil_div64(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

template <typename T>
__device__ __forceinline__ float to_float(T v) {
  return static_cast<float>(v);
}

// Element address modulo 2^32 (only its low bits are used, to find a row's 16-byte phase).
template <typename T>
__device__ __forceinline__ uint32_t element_address(const T* p) {
  return static_cast<uint32_t>(reinterpret_cast<uintptr_t>(p) / sizeof(T));
}

__device__ __forceinline__ void store_zero16(void* dst) { *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0); }

// One 16-byte shared slot dst[0, kVec) <- src[e0, e0 + kVec): a single 16-byte load when the whole slot
// lies inside [0, count) (the caller aligned e0 with the global address), else element by element with
// zeros outside.
template <typename T>
__device__ __forceinline__ void copy_slot(const T* __restrict__ src, int count, int e0, T* dst) {
  constexpr int kVec = VecTraits<T>::kVec;
  if (e0 >= 0 && e0 + kVec <= count) {
    *reinterpret_cast<uint4*>(dst) = __ldg(reinterpret_cast<const uint4*>(src + e0));
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const int e = e0 + i;
      dst[i] = (e >= 0 && e < count) ? src[e] : T(0.0f);
    }
  }
}

// sum of x_j^2 over the channels j in [lo, hi] of the row whose channel 0 is at x_c0 (channel j at
// x_c0[j * channel_stride]: a global NCHW or NHWC tensor, or a shared NHWC tile row), j ascending.
template <typename T>
__device__ __forceinline__ float channel_window_sumsq(const T* x_c0, int64_t channel_stride, int lo, int hi) {
  float sumsq = 0.0f;
  for (int j = lo; j <= hi; ++j) {
    const float v = to_float(x_c0[j * channel_stride]);
    sumsq = fmaf(v, v, sumsq);
  }
  return sumsq;
}

// Copies elements [0, count) of a contiguous global span into shared memory at dst[phase + e],
// where phase = (element address of src) mod kVec. Global 16-byte vectors then land on 16-byte
// aligned shared vectors: full vectors move with one 16-byte load and store, the two partial ends
// element by element. dst must be 16-byte aligned with room for phase + count rounded up to kVec.
template <typename T>
__device__ __forceinline__ void load_span(const T* __restrict__ src, int count, int phase, T* dst, int tid,
                                          int nthreads) {
  constexpr int kVec = VecTraits<T>::kVec;
  const int slots = (phase + count + kVec - 1) / kVec;
  for (int v = tid; v < slots; v += nthreads) copy_slot(src, count, v * kVec - phase, dst + v * kVec);
}

// ================================================================================================
// NCHW tiles
// ================================================================================================
//
// Tile rows: channels [cfirst, cfirst + rows), positions [s0, s0 + len) of batch n. Shared row r
// holds position s at r * kRowPitch + phase(r) + s, phase(r) = (element address of the row's
// first element) mod kVec, which keeps global and shared 16-byte alignment in step (rows of odd S
// start at every phase). Channels outside [0, C) are zero rows: the window's zero padding.

template <typename T>
struct NchwTile {
  static constexpr int kVec = VecTraits<T>::kVec;
  static constexpr int kSlots = kNchwTilePositions / kVec + 1;  // 16-byte slots per shared row
  static constexpr int kRowPitch = kSlots * kVec;               // elements per shared row
};

struct NchwTileCoords {
  int64_t n;
  int c0;       // first output channel
  int64_t s0;   // first position
  int channels; // output channels in this tile (<= kNchwTileChannels)
  int len;      // positions in this tile (<= kNchwTilePositions)
};

__device__ __forceinline__ NchwTileCoords nchw_tile_coords(int64_t tile, const LrnShape& shape) {
  const int channel_tiles = (shape.C + kNchwTileChannels - 1) / kNchwTileChannels;
  const int64_t position_tiles = ceil_div64(shape.S, kNchwTilePositions);
  NchwTileCoords t;
  // Channel tiles vary fastest: neighbouring blocks share halo rows through L2.
  t.c0 = static_cast<int>(tile % channel_tiles) * kNchwTileChannels;
  const int64_t rest = tile / channel_tiles;
  t.s0 = (rest % position_tiles) * kNchwTilePositions;
  t.n = rest / position_tiles;
  t.channels = static_cast<int>(min64(kNchwTileChannels, shape.C - t.c0));
  t.len = static_cast<int>(min64(kNchwTilePositions, shape.S - t.s0));
  return t;
}

// Phase of tile row 0 (channel cfirst, possibly negative: the arithmetic wraps consistently mod 2^32).
// Row r's phase is (row0_phase + r * S) mod kVec.
template <typename T>
__device__ __forceinline__ uint32_t nchw_row0_address(const T* base, const LrnShape& shape, int64_t n, int cfirst,
                                                      int64_t s0) {
  return element_address(base) + static_cast<uint32_t>((n * shape.C + cfirst) * shape.S + s0);
}

template <typename T>
__device__ void load_nchw_rows(const T* __restrict__ src, T* tile, const LrnShape& shape, int64_t n, int cfirst,
                               int rows, int64_t s0, int len) {
  using Tile = NchwTile<T>;
  constexpr int kVec = Tile::kVec;
  const uint32_t row0 = nchw_row0_address(src, shape, n, cfirst, s0);
  const uint32_t S32 = static_cast<uint32_t>(shape.S);
  for (int idx = threadIdx.x; idx < rows * Tile::kSlots; idx += blockDim.x) {
    const int r = idx / Tile::kSlots;
    const int v = idx - r * Tile::kSlots;
    T* dst = tile + r * Tile::kRowPitch + v * kVec;
    const int channel = cfirst + r;
    if (channel < 0 || channel >= shape.C) {
      store_zero16(dst);
      continue;
    }
    const int phase = static_cast<int>((row0 + static_cast<uint32_t>(r) * S32) & (kVec - 1));
    const T* row = src + (n * shape.C + channel) * shape.S + s0;
    copy_slot(row, len, v * kVec - phase, dst);
  }
}

// Reads tile row r at position s as float.
template <typename T>
struct NchwTileReader {
  const T* tile;
  uint32_t row0;  // element address of row 0's first element (mod 2^32)
  uint32_t S32;
  __device__ __forceinline__ float operator()(int r, int s) const {
    using Tile = NchwTile<T>;
    const int phase = static_cast<int>((row0 + static_cast<uint32_t>(r) * S32) & (Tile::kVec - 1));
    return to_float(tile[r * Tile::kRowPitch + phase + s]);
  }
};

// Forward. Tile rows are channels [c0 - pre, c0 + channels + post); output channel c0 + cl uses
// rows cl .. cl + window - 1 and its own x at row cl + pre.
//   y_c = x_c * (k + alpha/n * sum_{d < window} x_{c - pre + d}^2)^(-beta)
template <typename T>
__global__ void __launch_bounds__(kThreads) lrn_forward_nchw_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                                    LrnShape shape, LrnParams p, int64_t num_tiles) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tile = reinterpret_cast<T*>(smem);
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int halo = p.pre + p.post;

  for (int64_t t = blockIdx.x; t < num_tiles; t += gridDim.x) {
    const NchwTileCoords tc = nchw_tile_coords(t, shape);
    const int cfirst = tc.c0 - p.pre;
    load_nchw_rows(x, tile, shape, tc.n, cfirst, tc.channels + halo, tc.s0, tc.len);
    __syncthreads();

    const NchwTileReader<T> xt{tile, nchw_row0_address(x, shape, tc.n, cfirst, tc.s0),
                               static_cast<uint32_t>(shape.S)};
    for (int cl = warp; cl < tc.channels; cl += kWarps) {
      T* y_row = y + (tc.n * shape.C + tc.c0 + cl) * shape.S + tc.s0;
      for (int s = lane; s < tc.len; s += 32) {
        float sumsq = 0.0f;
        for (int d = 0; d < p.window; ++d) {
          const float v = xt(cl + d, s);
          sumsq = fmaf(v, v, sumsq);
        }
        const float xc = xt(cl + p.pre, s);
        y_row[s] = static_cast<T>(lrn_forward_value(xc, lrn_base(sumsq, p.alpha_over_n, p.k), p.beta));
      }
    }
    __syncthreads();  // the tile is reloaded by the next iteration
  }
}

// Backward "v2" window sums (the default for windows up to kRegWindowMax): a thread takes one position s
// and kRegRows consecutive rows, reads the kRegRows + window - 1 shared-memory values their windows
// cover into registers once, and forms each row's sum exactly from the registers (a fresh sum per row,
// in the same order as v1's loop, so v1 and v2 give the same bits). Shared-memory reads per row:
// (kRegRows + window - 1) / kRegRows instead of window. Register arrays are indexed by compile-time
// constants only (fully unrolled loops, runtime bounds as predicates), so they stay in registers.
constexpr int kRegRows = 8;
constexpr int kRegWindowMax = 16;
constexpr int kRegSpan = kRegRows + kRegWindowMax - 1;

// Phase 1: t_j for t rows [0, t_rows), and g_c = dy_c * scale_c for the output rows.
template <typename T>
__device__ __forceinline__ void backward_nchw_t_registers(const NchwTileReader<T>& xt, const NchwTileReader<T>& dyt,
                                                          float* t_tile, float* g_tile, const NchwTileCoords& tc,
                                                          int t_first, int t_rows, int C, const LrnParams& p) {
  const int groups = (t_rows + kRegRows - 1) / kRegRows;
  const int x_rows = t_rows + p.pre + p.post;
  for (int item = threadIdx.x; item < groups * kNchwTilePositions; item += blockDim.x) {
    const int i0 = (item / kNchwTilePositions) * kRegRows;
    const int s = item % kNchwTilePositions;  // consecutive threads: consecutive positions (no bank conflicts)
    if (s >= tc.len) continue;
    float xv[kRegSpan];
#pragma unroll
    for (int e = 0; e < kRegSpan; ++e) {
      xv[e] = (e < kRegRows + p.window - 1 && i0 + e < x_rows) ? xt(i0 + e, s) : 0.0f;
    }
#pragma unroll
    for (int q = 0; q < kRegRows; ++q) {
      const int i = i0 + q;
      if (i >= t_rows) break;
      float sumsq = 0.0f;
      float xj = 0.0f;
#pragma unroll
      for (int d = 0; d < kRegWindowMax; ++d) {
        if (d < p.window) sumsq = fmaf(xv[q + d], xv[q + d], sumsq);
        if (d == p.pre) xj = xv[q + d];
      }
      const int j = t_first + i;
      float t_j = 0.0f;
      if (j >= 0 && j < C) {
        const float base = lrn_base(sumsq, p.alpha_over_n, p.k);
        const float scale = lrn_scale(base, p.beta);
        const float dyj = dyt(i, s);
        t_j = lrn_t_term(dyj, xj, base, scale);
        const int cl = i - p.post;
        if (cl >= 0 && cl < tc.channels) g_tile[cl * kNchwTilePositions + s] = dyj * scale;
      }
      t_tile[i * kNchwTilePositions + s] = t_j;
    }
  }
}

// Phase 2: dx for the output rows, the transposed-window sums of t from registers.
template <typename T>
__device__ __forceinline__ void backward_nchw_dx_registers(const NchwTileReader<T>& xt, const float* t_tile,
                                                           const float* g_tile, T* __restrict__ dx,
                                                           const NchwTileCoords& tc, const LrnShape& shape,
                                                           const LrnParams& p) {
  const int groups = (tc.channels + kRegRows - 1) / kRegRows;
  const int t_rows = tc.channels + p.pre + p.post;
  const int halo = p.pre + p.post;
  for (int item = threadIdx.x; item < groups * kNchwTilePositions; item += blockDim.x) {
    const int c0 = (item / kNchwTilePositions) * kRegRows;
    const int s = item % kNchwTilePositions;
    if (s >= tc.len) continue;
    float tv[kRegSpan];
#pragma unroll
    for (int e = 0; e < kRegSpan; ++e) {
      tv[e] = (e < kRegRows + p.window - 1 && c0 + e < t_rows) ? t_tile[(c0 + e) * kNchwTilePositions + s] : 0.0f;
    }
#pragma unroll
    for (int q = 0; q < kRegRows; ++q) {
      const int cl = c0 + q;
      if (cl >= tc.channels) break;
      float tsum = 0.0f;
#pragma unroll
      for (int d = 0; d < kRegWindowMax; ++d) {
        if (d < p.window) tsum += tv[q + d];
      }
      const float xc = xt(cl + halo, s);
      dx[(tc.n * shape.C + tc.c0 + cl) * shape.S + tc.s0 + s] =
          static_cast<T>(lrn_backward_value(g_tile[cl * kNchwTilePositions + s], xc, tsum, p.coef));
    }
  }
}

// Backward. For output channels [c0, c0 + channels):
//   dx_c = dy_c * scale_c - coef * x_c * sum_{j = c - post}^{c + pre} t_j,
//   t_j = dy_j * x_j * base_j^(-beta-1), base_j from x over [j - pre, j + post].
// So t is needed for j in [c0 - post, c0 + channels - 1 + pre] (t rows: channels + halo), which needs
// x over [c0 - post - pre, c0 + channels - 1 + pre + post] (x rows: channels + 2 * halo), and dy for
// the t rows. Phase 1 computes t_j into shared memory (zero for j outside [0, C)) together with
// g_c = dy_c * scale_c for the output channels; phase 2 sums t over the transposed windows.
//   x tile row  i <-> channel c0 - post - pre + i
//   dy tile row i <-> channel c0 - post + i       (= t row i)
//   g row      cl <-> channel c0 + cl
template <typename T>
__global__ void __launch_bounds__(kThreads) lrn_backward_nchw_kernel(const T* __restrict__ x,
                                                                     const T* __restrict__ dy, T* __restrict__ dx,
                                                                     LrnShape shape, LrnParams p,
                                                                     int64_t num_tiles) {
  using Tile = NchwTile<T>;
  extern __shared__ __align__(16) unsigned char smem[];
  const int halo = p.pre + p.post;
  T* x_tile = reinterpret_cast<T*>(smem);
  T* dy_tile = x_tile + (kNchwTileChannels + 2 * halo) * Tile::kRowPitch;
  float* t_tile = reinterpret_cast<float*>(dy_tile + (kNchwTileChannels + halo) * Tile::kRowPitch);
  float* g_tile = t_tile + (kNchwTileChannels + halo) * kNchwTilePositions;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;

  for (int64_t t = blockIdx.x; t < num_tiles; t += gridDim.x) {
    const NchwTileCoords tc = nchw_tile_coords(t, shape);
    const int x_first = tc.c0 - p.post - p.pre;
    const int t_first = tc.c0 - p.post;
    const int t_rows = tc.channels + halo;
    load_nchw_rows(x, x_tile, shape, tc.n, x_first, tc.channels + 2 * halo, tc.s0, tc.len);
    load_nchw_rows(dy, dy_tile, shape, tc.n, t_first, t_rows, tc.s0, tc.len);
    __syncthreads();

    const uint32_t S32 = static_cast<uint32_t>(shape.S);
    const NchwTileReader<T> xt{x_tile, nchw_row0_address(x, shape, tc.n, x_first, tc.s0), S32};
    const NchwTileReader<T> dyt{dy_tile, nchw_row0_address(dy, shape, tc.n, t_first, tc.s0), S32};
    if (!p.backward_v1 && p.window <= kRegWindowMax) {
      backward_nchw_t_registers(xt, dyt, t_tile, g_tile, tc, t_first, t_rows, shape.C, p);
      __syncthreads();
      backward_nchw_dx_registers(xt, t_tile, g_tile, dx, tc, shape, p);
      __syncthreads();
      continue;
    }
    for (int i = warp; i < t_rows; i += kWarps) {
      const int j = t_first + i;
      const bool inside = j >= 0 && j < shape.C;
      const int cl = i - p.post;  // output channel of this row, if in [0, channels)
      const bool is_output = cl >= 0 && cl < tc.channels;
      for (int s = lane; s < tc.len; s += 32) {
        float t_j = 0.0f;
        if (inside) {
          float sumsq = 0.0f;
          for (int d = 0; d < p.window; ++d) {
            const float v = xt(i + d, s);
            sumsq = fmaf(v, v, sumsq);
          }
          const float base = lrn_base(sumsq, p.alpha_over_n, p.k);
          const float scale = lrn_scale(base, p.beta);
          const float xj = xt(i + p.pre, s);
          const float dyj = dyt(i, s);
          t_j = lrn_t_term(dyj, xj, base, scale);
          if (is_output) g_tile[cl * kNchwTilePositions + s] = dyj * scale;
        }
        t_tile[i * kNchwTilePositions + s] = t_j;
      }
    }
    __syncthreads();

    for (int cl = warp; cl < tc.channels; cl += kWarps) {
      T* dx_row = dx + (tc.n * shape.C + tc.c0 + cl) * shape.S + tc.s0;
      for (int s = lane; s < tc.len; s += 32) {
        float tsum = 0.0f;
        for (int d = 0; d < p.window; ++d) tsum += t_tile[(cl + d) * kNchwTilePositions + s];
        const float xc = xt(cl + halo, s);
        dx_row[s] = static_cast<T>(lrn_backward_value(g_tile[cl * kNchwTilePositions + s], xc, tsum, p.coef));
      }
    }
    __syncthreads();
  }
}

template <typename T>
size_t nchw_forward_smem_bytes(int halo) {
  return sizeof(T) * size_t(kNchwTileChannels + halo) * NchwTile<T>::kRowPitch;
}

template <typename T>
size_t nchw_backward_smem_bytes(int halo) {
  return sizeof(T) * size_t(2 * kNchwTileChannels + 3 * halo) * NchwTile<T>::kRowPitch +
         sizeof(float) * size_t(2 * kNchwTileChannels + halo) * kNchwTilePositions;
}

// ================================================================================================
// NHWC tiles: all C channels of `tile_positions` consecutive positions of the [N*S][C] matrix
// ================================================================================================
//
// The tile is one contiguous span; shared memory holds it at phase + p*C + c (phase as in
// load_span). Thread (tx, ty) of a (bx, by) block handles channels tx, tx + bx, ... of positions
// ty, ty + by, ...: consecutive lanes read consecutive channels (conflict free) and write
// consecutive addresses. Windows are clipped to [0, C) explicitly.

struct NhwcConfig {
  int tile_positions;  // positions per tile
  int bx, by;          // block shape: bx lanes over channels, by over positions
};

NhwcConfig make_nhwc_config(int C) {
  NhwcConfig cfg;
  cfg.bx = 32;
  while (cfg.bx / 2 >= C && cfg.bx > 1) cfg.bx /= 2;  // C < 32: fewer lanes per position
  cfg.by = kThreads / cfg.bx;
  cfg.tile_positions = std::max(1, kNhwcTileElements / C);
  if (cfg.tile_positions >= cfg.by) cfg.tile_positions -= cfg.tile_positions % cfg.by;  // whole passes
  return cfg;
}

template <typename T>
__host__ __device__ int nhwc_span_capacity(int tile_positions, int C) {
  // phase (< kVec) + elements, rounded up to whole vectors
  constexpr int kVec = VecTraits<T>::kVec;
  return (tile_positions * C + 2 * kVec - 1) / kVec * kVec;
}

// Copies the span of positions [p0, p0 + count_positions) of the [N*S][C] tensor into the shared tile with the
// whole (2-D) block; returns its phase (the tile holds element e of the span at phase + e).
template <typename T>
__device__ __forceinline__ int load_nhwc_span(const T* __restrict__ tensor, int64_t p0, int count_positions, int C,
                                              T* tile) {
  constexpr int kVec = VecTraits<T>::kVec;
  const T* src = tensor + p0 * C;
  const int phase = static_cast<int>(element_address(src) & (kVec - 1));
  load_span(src, count_positions * C, phase, tile, threadIdx.y * blockDim.x + threadIdx.x, blockDim.x * blockDim.y);
  return phase;
}

//   y_c = x_c * (k + alpha/n * sum_{j = max(c - pre, 0)}^{min(c + post, C - 1)} x_j^2)^(-beta)
template <typename T>
__global__ void __launch_bounds__(kThreads) lrn_forward_nhwc_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                                    LrnShape shape, LrnParams p, int tile_positions,
                                                                    int64_t num_tiles) {
  extern __shared__ __align__(16) unsigned char smem[];
  T* tile = reinterpret_cast<T*>(smem);
  const int C = shape.C;
  const int64_t positions = shape.N * shape.S;

  for (int64_t t = blockIdx.x; t < num_tiles; t += gridDim.x) {
    const int64_t p0 = t * tile_positions;
    const int count_positions = static_cast<int>(min64(tile_positions, positions - p0));
    const int phase = load_nhwc_span(x, p0, count_positions, C, tile);
    __syncthreads();

    for (int pl = threadIdx.y; pl < count_positions; pl += blockDim.y) {
      const T* x_row = tile + phase + pl * C;
      T* y_row = y + (p0 + pl) * C;
      for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float sumsq = channel_window_sumsq(x_row, 1, lrn_window_lo(c, p.pre), lrn_window_hi(c, p.post, C));
        y_row[c] = static_cast<T>(lrn_forward_value(to_float(x_row[c]), lrn_base(sumsq, p.alpha_over_n, p.k), p.beta));
      }
    }
    __syncthreads();
  }
}

// Backward, same tiling: phase 1 writes t_j and g_j = dy_j * scale_j for every (position, channel)
// of the tile into shared memory; phase 2 sums t over the transposed window [c - post, c + pre].
template <typename T>
__global__ void __launch_bounds__(kThreads) lrn_backward_nhwc_kernel(const T* __restrict__ x,
                                                                     const T* __restrict__ dy, T* __restrict__ dx,
                                                                     LrnShape shape, LrnParams p, int tile_positions,
                                                                     int64_t num_tiles) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int C = shape.C;
  const int capacity = nhwc_span_capacity<T>(tile_positions, C);
  T* x_tile = reinterpret_cast<T*>(smem);
  T* dy_tile = x_tile + capacity;
  float* t_tile = reinterpret_cast<float*>(dy_tile + capacity);
  float* g_tile = t_tile + tile_positions * C;
  const int64_t positions = shape.N * shape.S;

  for (int64_t t = blockIdx.x; t < num_tiles; t += gridDim.x) {
    const int64_t p0 = t * tile_positions;
    const int count_positions = static_cast<int>(min64(tile_positions, positions - p0));
    const int x_phase = load_nhwc_span(x, p0, count_positions, C, x_tile);
    const int dy_phase = load_nhwc_span(dy, p0, count_positions, C, dy_tile);
    __syncthreads();

    for (int pl = threadIdx.y; pl < count_positions; pl += blockDim.y) {
      const T* x_row = x_tile + x_phase + pl * C;
      const T* dy_row = dy_tile + dy_phase + pl * C;
      for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const float sumsq = channel_window_sumsq(x_row, 1, lrn_window_lo(c, p.pre), lrn_window_hi(c, p.post, C));
        const float base = lrn_base(sumsq, p.alpha_over_n, p.k);
        const float scale = lrn_scale(base, p.beta);
        const float dyc = to_float(dy_row[c]);
        t_tile[pl * C + c] = lrn_t_term(dyc, to_float(x_row[c]), base, scale);
        g_tile[pl * C + c] = dyc * scale;
      }
    }
    __syncthreads();

    for (int pl = threadIdx.y; pl < count_positions; pl += blockDim.y) {
      const T* x_row = x_tile + x_phase + pl * C;
      const float* t_row = t_tile + pl * C;
      T* dx_row = dx + (p0 + pl) * C;
      for (int c = threadIdx.x; c < C; c += blockDim.x) {
        const int hi = lrn_window_hi(c, p.pre, C);  // transposed window [c - post, c + pre]
        float tsum = 0.0f;
        for (int j = lrn_window_lo(c, p.post); j <= hi; ++j) tsum += t_row[j];
        dx_row[c] = static_cast<T>(lrn_backward_value(g_tile[pl * C + c], to_float(x_row[c]), tsum, p.coef));
      }
    }
    __syncthreads();
  }
}

template <typename T>
size_t nhwc_forward_smem_bytes(const NhwcConfig& cfg, int C) {
  return sizeof(T) * size_t(nhwc_span_capacity<T>(cfg.tile_positions, C));
}

template <typename T>
size_t nhwc_backward_smem_bytes(const NhwcConfig& cfg, int C) {
  return 2 * sizeof(T) * size_t(nhwc_span_capacity<T>(cfg.tile_positions, C)) +
         2 * sizeof(float) * size_t(cfg.tile_positions) * C;
}

// ================================================================================================
// Fallback: one thread per output element, windows read from global memory
// ================================================================================================
//
// Linear index = memory offset o. NCHW: s = o % S, c = (o / S) % C, channel stride S.
// NHWC: c = o % C, channel stride 1. The element of channel j at the same (n, s) is at
// o + (j - c) * channel_stride.

struct FallbackGeometry {
  int64_t numel;
  int64_t channel_stride;  // S (NCHW) or 1 (NHWC)
  int64_t channel_div;     // o / channel_div % C = c: S (NCHW) or 1 (NHWC)
  int C;
};

__device__ __forceinline__ int fallback_channel(int64_t o, const FallbackGeometry& g) {
  return static_cast<int>((o / g.channel_div) % g.C);
}

template <typename T>
__global__ void __launch_bounds__(kThreads) lrn_forward_fallback_kernel(const T* __restrict__ x, T* __restrict__ y,
                                                                        FallbackGeometry g, LrnParams p) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < g.numel; o += int64_t(gridDim.x) * blockDim.x) {
    const int c = fallback_channel(o, g);
    const T* x_c0 = x + (o - c * g.channel_stride);  // channel 0 of this (n, s)
    const float sumsq =
        channel_window_sumsq(x_c0, g.channel_stride, lrn_window_lo(c, p.pre), lrn_window_hi(c, p.post, g.C));
    y[o] = static_cast<T>(lrn_forward_value(to_float(x[o]), lrn_base(sumsq, p.alpha_over_n, p.k), p.beta));
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) lrn_backward_fallback_kernel(const T* __restrict__ x,
                                                                         const T* __restrict__ dy,
                                                                         T* __restrict__ dx, FallbackGeometry g,
                                                                         LrnParams p) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < g.numel; o += int64_t(gridDim.x) * blockDim.x) {
    const int c = fallback_channel(o, g);
    const int64_t c0_offset = o - c * g.channel_stride;
    const T* x_c0 = x + c0_offset;
    const T* dy_c0 = dy + c0_offset;
    float tsum = 0.0f;
    float g_c = 0.0f;
    const int j_hi = lrn_window_hi(c, p.pre, g.C);
    for (int j = lrn_window_lo(c, p.post); j <= j_hi; ++j) {  // j in [c - post, c + pre]
      const float sumsq =
          channel_window_sumsq(x_c0, g.channel_stride, lrn_window_lo(j, p.pre), lrn_window_hi(j, p.post, g.C));
      const float base = lrn_base(sumsq, p.alpha_over_n, p.k);
      const float scale = lrn_scale(base, p.beta);
      const float dyj = to_float(dy_c0[j * g.channel_stride]);
      tsum += lrn_t_term(dyj, to_float(x_c0[j * g.channel_stride]), base, scale);
      if (j == c) g_c = dyj * scale;
    }
    dx[o] = static_cast<T>(lrn_backward_value(g_c, to_float(x[o]), tsum, p.coef));
  }
}

// ================================================================================================
// Host side: which kernel, and its launch shape
// ================================================================================================

enum class KernelKind { kNchwTiles, kNhwcTiles, kFallback };

struct DeviceLimits {
  int max_smem_optin;  // bytes of shared memory a block may opt in to
  int sm_count;
};

struct LaunchPlan {
  KernelKind kind;
  int64_t tiles;       // tiled kernels: tiles to process (blocks stride over them)
  int64_t grid;        // blocks launched
  int block_x, block_y;
  size_t smem_bytes;   // dynamic shared memory
  int tile_positions;  // NHWC tiles: positions per tile
  FallbackGeometry fallback;
};

// rows_of_channels: NHWC memory ([N*S][C]), i.e. channels_last, or NCHW with S == 1.
template <typename T>
LaunchPlan plan_launch(bool backward, const LrnShape& shape, const LrnParams& p, bool rows_of_channels,
                       const DeviceLimits& device) {
  const int halo = p.pre + p.post;
  const size_t smem_limit = static_cast<size_t>(device.max_smem_optin);
  LaunchPlan plan{};
  plan.block_x = kThreads;
  plan.block_y = 1;
  if (rows_of_channels && shape.C <= kNhwcMaxChannels) {
    const NhwcConfig cfg = make_nhwc_config(shape.C);
    const size_t smem = backward ? nhwc_backward_smem_bytes<T>(cfg, shape.C) : nhwc_forward_smem_bytes<T>(cfg, shape.C);
    if (smem <= smem_limit) {
      plan.kind = KernelKind::kNhwcTiles;
      plan.tiles = ceil_div64(shape.N * shape.S, cfg.tile_positions);
      plan.grid = min64(plan.tiles, kMaxGridBlocks);
      plan.block_x = cfg.bx;
      plan.block_y = cfg.by;
      plan.smem_bytes = smem;
      plan.tile_positions = cfg.tile_positions;
      return plan;
    }
  } else if (!rows_of_channels && halo <= kMaxTiledHalo) {
    const size_t smem = backward ? nchw_backward_smem_bytes<T>(halo) : nchw_forward_smem_bytes<T>(halo);
    if (smem <= smem_limit) {
      plan.kind = KernelKind::kNchwTiles;
      plan.tiles = shape.N * ceil_div64(shape.C, kNchwTileChannels) * ceil_div64(shape.S, kNchwTilePositions);
      plan.grid = min64(plan.tiles, kMaxGridBlocks);
      plan.smem_bytes = smem;
      return plan;
    }
  }
  plan.kind = KernelKind::kFallback;
  FallbackGeometry& g = plan.fallback;
  g.numel = shape.N * shape.C * shape.S;
  g.C = shape.C;
  g.channel_stride = rows_of_channels ? 1 : shape.S;
  g.channel_div = rows_of_channels ? 1 : shape.S;
  // Enough blocks to fill the GPU many times over; the kernel strides over the rest.
  plan.grid = min64(ceil_div64(g.numel, kThreads), int64_t(device.sm_count) * 64);
  return plan;
}

}  // namespace
}  // namespace ak
