// Torch-free entry point of the hand-written CUDA implicit-GEMM convolution + bias + ReLU
// (device code: conv_cuda_kernels.cuh, launcher: conv_cuda.cu).
//
//   y = relu(conv2d(x, w, bias, stride, padding, groups)),  dilation 1.
//
// Memory the kernel reads and writes (element offsets; all sizes in ConvProblem):
//   x     channels_last (N, H, W, C) contiguous: x[n, c, ih, iw] at ((n*H + ih)*W + iw)*C + c
//   w     one row per output channel o, k = (kh*KW + kw)*Cg + c contiguous inside the row (the memory of a
//         channels_last (Cout, Cg, KH, KW) weight): w[o, c, kh, kw] at o*w_row_stride + (kh*KW + kw)*Cg + c,
//         w_row_stride >= K = KH*KW*Cg (a larger stride pads rows to 16 bytes, which lets the weight tile
//         load with 16-byte copies: conv1's K = 363)
//   bias  Cout contiguous elements, or nullptr
//   y     any strides: y[n, o, oh, ow] at n*y_sn + o*y_sc + oh*y_sh + ow*y_sw (channels_last: y_sc == 1)
// All three share one dtype (float32, float16 or bfloat16); accumulation is fp32.  fp32 runs on TF32
// tensor cores when allow_tf32, else on exact fp32 FMA.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>

#ifdef AK_WITH_CUDA
#include <cuda_runtime_api.h>
#endif

namespace ak {

enum class ConvDtype : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

inline int conv_dtype_size(ConvDtype d) { return d == ConvDtype::kFloat32 ? 4 : 2; }

struct ConvProblem {
  int64_t N, C, H, W;        // input
  int64_t Cout, KH, KW;      // weight (Cout, C / groups, KH, KW)
  int64_t SH, SW, PH, PW;    // stride, padding
  int64_t groups;
  int64_t OH, OW;            // output spatial size, (H + 2*PH - KH) / SH + 1 etc.
  int64_t w_row_stride;      // elements between the weight rows of consecutive output channels
  int64_t y_sn, y_sc, y_sh, y_sw;  // output element strides
};

// Largest grid axis y or z (a group's column tiles, the groups, the wgrad's splits) a launch may use.
constexpr int64_t kConvMaxGridY = 65535;

// nullptr when the kernels accept the problem, else a message naming what is wrong.  Shared by every
// caller (the Python binding, the emulator), so they cannot disagree on what is accepted.
inline const char* conv_problem_error(const ConvProblem& p) {
  if (p.N < 0) return "the batch size is negative";
  if (p.C < 1 || p.H < 1 || p.W < 1) return "the input's C, H and W must be >= 1";
  if (p.Cout < 1 || p.KH < 1 || p.KW < 1) return "the weight must not be empty";
  if (p.groups < 1 || p.C % p.groups || p.Cout % p.groups)
    return "groups must be >= 1 and divide both in_channels and out_channels";
  if (p.SH < 1 || p.SW < 1) return "the stride must be >= 1";
  if (p.PH < 0 || p.PW < 0) return "the padding must be >= 0";
  if (p.OH != (p.H + 2 * p.PH - p.KH) / p.SH + 1 || p.OW != (p.W + 2 * p.PW - p.KW) / p.SW + 1 || p.OH < 1 ||
      p.OW < 1)
    return "the output size is not (H + 2*pad - kernel) / stride + 1 >= 1";
  const int64_t K = p.KH * p.KW * (p.C / p.groups);
  if (p.w_row_stride < K) return "the weight's row stride is smaller than KH*KW*C/groups";
  // Sizes that enter 32-bit index arithmetic inside a tile (offsets into the tensors are 64-bit).
  const int64_t limit = int64_t(1) << 30;
  if (p.C >= limit || p.H >= limit || p.W >= limit || p.Cout >= limit || K >= limit || p.SH >= limit ||
      p.SW >= limit || p.PH >= limit || p.PW >= limit || p.KH >= limit || p.KW >= limit)
    return "a size or stride is 2^30 or larger";
  if (p.W * p.C >= (int64_t(1) << 31) || p.H + 2 * p.PH >= (int64_t(1) << 31) ||
      p.W + 2 * p.PW >= (int64_t(1) << 31))
    return "an image row (W*C elements) or the padded height / width is 2^31 or larger";
  if (p.groups > kConvMaxGridY) return "more than 65535 groups";
  return nullptr;
}

// Which A-tile (im2col) loader a launch uses.
enum class ConvLoader : int {
  kCpAsync16 = 0,  // Cg and C multiples of 16 bytes of channels: 16-byte cp.async per (pixel, tap, 8 channels)
  kRowSpan = 1,    // groups == 1: a window row (kh) is KW*C contiguous elements: a counter walk, 16-byte stores
  kScalar = 2,     // anything else: one element at a time
};

// Tile shapes compiled for the kernels (index into kConvTiles).
struct ConvTileShape {
  int bm, bn, bk, warps_m, warps_n, stages;
};
constexpr int kConvTileCount = 3;
constexpr ConvTileShape kConvTiles[kConvTileCount] = {
    {128, 128, 32, 2, 4, 3},  // 0: wide layers (Og a multiple of 128: conv2, conv3, conv5)
    {128, 96, 32, 4, 2, 3},   // 1: Og a multiple of 96 (conv1's 96, conv4's 192): no wasted columns
    {64, 64, 32, 2, 2, 4},    // 2: small Og or too few tiles to fill the GPU; the exact-fp32 and scalar paths
};

struct ConvPlan {
  ConvLoader loader;
  int tile;            // index into kConvTiles
  bool fma;            // exact fp32 FMA instead of tensor cores
  bool w_vec;          // weight rows 16-byte aligned: 16-byte cp.async for the weight tile
  bool y_pair;         // output channel pairs stored as one 32-bit / 64-bit store
  const char* reason;  // why this tile
};

inline int64_t conv_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The three kernels, which differ in what a pipeline stage holds.
enum class ConvKernel : int { kForward = 0, kDgrad = 1, kWgrad = 2 };

// Dynamic shared memory of a kernel under a tile: STAGES x (BM + BN) rows of BK elements padded by 16 bytes, and
// for the backward kernels (dgrad, wgrad) STAGES - 1 more tiles of BM such rows, where y lands beside dy (by
// cp.async) until each thread masks its own chunks of dy by y > 0 in shared memory: a tile's y is read once, just
// after its copies land and before the __syncthreads that frees the slot for the tile STAGES - 1 later.
inline size_t conv_smem_bytes(const ConvTileShape& s, ConvDtype dtype, ConvKernel kernel) {
  const int esize = conv_dtype_size(dtype);
  const int pitch = s.bk + 16 / esize;
  const size_t y_rows = kernel == ConvKernel::kForward ? 0 : size_t(s.stages - 1) * size_t(s.bm);
  return (size_t(s.stages) * size_t(s.bm + s.bn) + y_rows) * size_t(pitch) * size_t(esize);
}

// Whether tile `t` of `kernel` fits the device's opt-in dynamic shared memory per block
// (cudaDevAttrMaxSharedMemoryPerBlockOptin: 163 KB on sm_80, 99 KB on sm_86 / sm_89, 227 KB on sm_90); smem_optin <=
// 0: unknown, every tile assumed to fit.  The TF32 128x128 tile needs 110,592 B in the forward and 147,456 B in the
// backward: neither on sm_86 / sm_89 (the backward's 64x64 TF32 tile, 101,376 B, fills their 99 KB exactly).
inline bool conv_tile_fits(int t, ConvDtype dtype, ConvKernel kernel, int64_t smem_optin) {
  return smem_optin <= 0 || int64_t(conv_smem_bytes(kConvTiles[t], dtype, kernel)) <= smem_optin;
}

// Blocks along the grid's axes of each kernel -- the one definition the plan (conv_forward_grid, ...), the
// launchers (conv_cuda_kernels.cuh conv_grid) and the kernels' block-index decoding (BlockPlace, the wgrad's
// preamble) share:
//   forward  x over BM-row tiles of the output pixels N*OH*OW, y over the group's Og column tiles, z over groups;
//   dgrad    x over BM-row tiles of the input pixels N*H*W, y over the group's Cg column tiles, z over groups;
//   wgrad    x over (Og row tiles) x (K column tiles), y over groups, z over the pixel splits.
struct ConvGridSize {
  int64_t x, y, z;
  int64_t blocks() const { return x * y * z; }
};

// A forward or dgrad GEMM of `rows` rows and `cols` columns per group.
inline ConvGridSize conv_gemm_grid(int64_t rows, int64_t cols, int64_t groups, const ConvTileShape& s) {
  return {conv_cdiv(rows, s.bm), conv_cdiv(cols, s.bn), groups};
}

// The wgrad's GEMM per group: Og rows, K columns, the pixel reduction split `splits` ways.
inline ConvGridSize conv_wgrad_gemm_grid(int64_t Og, int64_t K, int64_t groups, int64_t splits,
                                         const ConvTileShape& s) {
  return {conv_cdiv(Og, s.bm) * conv_cdiv(K, s.bn), groups, splits};
}

inline ConvGridSize conv_forward_grid(const ConvProblem& p, int t) {
  return conv_gemm_grid(p.N * p.OH * p.OW, p.Cout / p.groups, p.groups, kConvTiles[t]);
}

inline ConvGridSize conv_dgrad_grid(const ConvProblem& p, int t) {
  return conv_gemm_grid(p.N * p.H * p.W, p.C / p.groups, p.groups, kConvTiles[t]);
}

inline ConvGridSize conv_wgrad_grid(const ConvProblem& p, int t, int64_t splits) {
  return conv_wgrad_gemm_grid(p.Cout / p.groups, p.KH * p.KW * (p.C / p.groups), p.groups, splits, kConvTiles[t]);
}

// The tile for a forward or dgrad GEMM with `cols` columns per group and `rows` rows, among the tiles that fit
// the device's shared memory (see plan_conv).  A grid y (a group's column tiles; groups are on z) above 65535 takes
// the fitting tile with the fewest column tiles: the widest, so y only shrinks (never a narrower one, which would
// make y larger).
inline int choose_conv_tile(ConvKernel kernel, int64_t rows, int64_t cols, int64_t groups, int sm_count,
                            ConvDtype dtype, int64_t smem_optin, const char** reason) {
  const auto waste = [&](int t) { return conv_cdiv(cols, kConvTiles[t].bn) * kConvTiles[t].bn - cols; };
  const auto fits = [&](int t) { return conv_tile_fits(t, dtype, kernel, smem_optin); };
  int tile;
  if (cols <= 64) {
    tile = 2;
    *reason = "<= 64 columns per group: a wider tile would waste columns";
  } else if (!fits(0)) {
    // On an sm_86 / sm_89 (99 KB) the TF32 128x128 tile does not fit: of the others, the fewest wasted columns.
    tile = fits(1) && waste(1) <= waste(2) ? 1 : 2;
    *reason = "the 128x128 tile needs more shared memory than the device allows: the fitting tile that wastes "
              "fewest columns";
  } else if (cols % 128 == 0) {
    tile = 0;
    *reason = "columns per group a multiple of 128: 128x128 tiles, no wasted columns, most reuse per loaded byte";
  } else if (cols % 96 == 0 && fits(1)) {
    tile = 1;
    *reason = "columns per group a multiple of 96: 128x96 tiles, no wasted columns";
  } else {
    tile = fits(1) && waste(1) < waste(0) ? 1 : 0;
    *reason = "columns per group not a multiple of 96 or 128: the tile width that wastes fewest columns";
  }
  const ConvTileShape& s = kConvTiles[tile];
  const int64_t blocks = conv_cdiv(rows, s.bm) * conv_cdiv(cols, s.bn) * groups;
  if (tile != 2 && sm_count > 0 && blocks < sm_count) {
    tile = 2;
    *reason = "fewer large tiles than multiprocessors: 64x64 tiles to fill the GPU";
  }
  const auto grid_y = [&](int t) { return conv_cdiv(cols, kConvTiles[t].bn); };
  if (grid_y(tile) > kConvMaxGridY) {
    for (int t = 0; t < kConvTileCount; ++t)
      if (fits(t) && grid_y(t) < grid_y(tile)) tile = t;
    *reason = "a grid y above 65535: the fitting tile with the fewest column tiles";
  }
  return tile;
}

// The plan of a kernel that has only the 64x64 tile compiled for some of its variants (exact fp32 FMA, element
// loads): true, with plan.tile = 2 and the reason, when the plan is one of those.
template <typename Plan>
bool plan_small_tile_only(Plan& plan, bool element_loads, const char* element_reason) {
  if (plan.fma) {
    plan.tile = 2;
    plan.reason = "exact fp32: FMA path, compiled for the 64x64 tile only";
  } else if (element_loads) {
    plan.tile = 2;
    plan.reason = element_reason;
  }
  return plan.fma || element_loads;
}

// The launch plan: loader from the layout, tile from the output channels of a group, the grid size and the
// device's shared memory.  sm_count: multiprocessors of the device (0: unknown); smem_optin: its opt-in dynamic
// shared memory per block in bytes (0: unknown).  Alignments are of the base pointers (bytes mod 16).
inline ConvPlan plan_conv(const ConvProblem& p, ConvDtype dtype, bool allow_tf32, int sm_count, unsigned x_align,
                          unsigned w_align, unsigned y_align, int64_t smem_optin = 0) {
  ConvPlan plan{};
  const int64_t vec = 16 / conv_dtype_size(dtype);
  const int64_t Cg = p.C / p.groups, Og = p.Cout / p.groups;
  if (Cg % vec == 0 && p.C % vec == 0 && x_align == 0)
    plan.loader = ConvLoader::kCpAsync16;
  else if (p.groups == 1)
    plan.loader = ConvLoader::kRowSpan;
  else
    plan.loader = ConvLoader::kScalar;
  plan.fma = dtype == ConvDtype::kFloat32 && !allow_tf32;
  plan.w_vec = w_align == 0 && p.w_row_stride % vec == 0;
  plan.y_pair = p.y_sc == 1 && Og % 2 == 0 && p.Cout % 2 == 0 && y_align % (2 * conv_dtype_size(dtype)) == 0 &&
                p.y_sn % 2 == 0 && p.y_sh % 2 == 0 && p.y_sw % 2 == 0;
  if (!plan_small_tile_only(plan, plan.loader == ConvLoader::kScalar,
                            "scalar im2col loads: compiled for the 64x64 tile only"))
    plan.tile = choose_conv_tile(ConvKernel::kForward, p.N * p.OH * p.OW, Og, p.groups, sm_count, dtype, smem_optin, &plan.reason);
  return plan;
}

// d(input) of conv2d_relu (the backward's dgrad), the ReLU mask y > 0 applied to dy before the mma:
//   dx[n, g*Cg + c, ih, iw] = sum over (kh, kw, o) with oh*SH = ih + PH - kh, ow*SW = iw + PW - kw in range of
//                             (y > 0 ? dy : 0)[n, g*Og + o, oh, ow] * w[g*Og + o, c, kh, kw]
// Memory: dy and y channels_last (N, OH, OW, Cout) contiguous (p.y_* are their strides); the weight
// transposed, one row per input channel (g, c): wt[(g*Cg + c)*p.w_row_stride + (kh*KW + kw)*Og + o],
// p.w_row_stride >= KH*KW*Og; dx any strides (N, C, H, W).
struct ConvDgradProblem {
  ConvProblem p;
  int64_t dx_sn, dx_sc, dx_sh, dx_sw;
};

inline const char* conv_dgrad_problem_error(const ConvDgradProblem& d) {
  ConvProblem q = d.p;
  const int64_t Kd = q.KH * q.KW * (q.Cout / (q.groups > 0 ? q.groups : 1));
  q.w_row_stride = INT64_MAX;  // the forward weight's bound does not apply: the transposed one's is checked below
  if (const char* why = conv_problem_error(q)) return why;
  if (d.p.w_row_stride < Kd) return "the transposed weight's row stride is smaller than KH*KW*Cout/groups";
  if (Kd >= (int64_t(1) << 30)) return "KH*KW*Cout/groups is 2^30 or larger";
  if (d.p.y_sc != 1 || d.p.y_sw != d.p.Cout || d.p.y_sh != d.p.OW * d.p.Cout || d.p.y_sn != d.p.OH * d.p.OW * d.p.Cout)
    return "dy and y must be channels_last-contiguous";
  if (d.dx_sn < 0 || d.dx_sc < 0 || d.dx_sh < 0 || d.dx_sw < 0) return "dx has a negative stride";
  return nullptr;
}

struct ConvDgradPlan {
  bool vec;            // 16-byte loads of dy and y
  int tile;
  bool fma;
  bool w_vec, dx_pair;
  const char* reason;
};

inline ConvDgradPlan plan_conv_dgrad(const ConvDgradProblem& d, ConvDtype dtype, bool allow_tf32, int sm_count,
                                     unsigned dy_align, unsigned y_align, unsigned w_align, unsigned dx_align,
                                     int64_t smem_optin = 0) {
  const ConvProblem& p = d.p;
  ConvDgradPlan plan{};
  const int64_t vec = 16 / conv_dtype_size(dtype);
  const int64_t Cg = p.C / p.groups, Og = p.Cout / p.groups;
  plan.vec = Og % vec == 0 && p.Cout % vec == 0 && dy_align == 0 && y_align == 0;
  plan.fma = dtype == ConvDtype::kFloat32 && !allow_tf32;
  plan.w_vec = w_align == 0 && p.w_row_stride % vec == 0;
  plan.dx_pair = d.dx_sc == 1 && Cg % 2 == 0 && p.C % 2 == 0 && dx_align % (2 * conv_dtype_size(dtype)) == 0 &&
                 d.dx_sn % 2 == 0 && d.dx_sh % 2 == 0 && d.dx_sw % 2 == 0;
  if (!plan_small_tile_only(plan, !plan.vec, "element loads of dy: compiled for the 64x64 tile only"))
    plan.tile = choose_conv_tile(ConvKernel::kDgrad, p.N * p.H * p.W, Cg, p.groups, sm_count, dtype, smem_optin, &plan.reason);
  return plan;
}

// d(weight) and d(bias) of conv2d_relu (the backward's wgrad), the ReLU mask y > 0 applied to dy,
// as fp32 partial sums over `splits` ranges of pixels: dw_part[s][o][(kh*KW + kw)*Cg + c] and db_part[s][o]
// (every element written; the caller adds the splits in order).  dy, y: channels_last (N, OH, OW, Cout)
// contiguous (p.y_* their strides); x channels_last (N, H, W, C) contiguous; p.w_row_stride unused.
struct ConvWgradProblem {
  ConvProblem p;
  int64_t splits;
};

inline const char* conv_wgrad_problem_error(const ConvWgradProblem& w) {
  ConvProblem q = w.p;
  q.w_row_stride = INT64_MAX;
  if (const char* why = conv_problem_error(q)) return why;
  if (w.p.y_sc != 1 || w.p.y_sw != w.p.Cout || w.p.y_sh != w.p.OW * w.p.Cout || w.p.y_sn != w.p.OH * w.p.OW * w.p.Cout)
    return "dy and y must be channels_last-contiguous";
  if (w.splits < 1 || w.splits > kConvMaxGridY) return "splits must be in [1, 65535]";
  return nullptr;
}

struct ConvWgradPlan {
  bool vec;  // 16-byte loads of dy, y and x
  int tile;
  bool fma, dw_pair;
  const char* reason;
};

// Tiles 0 (128x128) and 2 (64x64) are compiled for the wgrad.  smem_optin as for plan_conv.
inline ConvWgradPlan plan_conv_wgrad(const ConvWgradProblem& w, ConvDtype dtype, bool allow_tf32, unsigned dy_align,
                                     unsigned y_align, unsigned x_align, int64_t smem_optin = 0) {
  const ConvProblem& p = w.p;
  ConvWgradPlan plan{};
  const int64_t vec = 16 / conv_dtype_size(dtype);
  const int64_t Cg = p.C / p.groups, Og = p.Cout / p.groups;
  plan.vec = Og % vec == 0 && p.Cout % vec == 0 && Cg % vec == 0 && p.C % vec == 0 && dy_align == 0 &&
             y_align == 0 && x_align == 0;
  plan.fma = dtype == ConvDtype::kFloat32 && !allow_tf32;
  plan.dw_pair = (p.KH * p.KW * Cg) % 2 == 0;
  if (plan_small_tile_only(plan, !plan.vec, "element loads: the 64x64 tile")) return plan;
  if (Og % 128 != 0) {
    plan.tile = 2;
    plan.reason = "Og not a multiple of 128: 64x64 tiles";
  } else if (!conv_tile_fits(0, dtype, ConvKernel::kWgrad, smem_optin)) {
    plan.tile = 2;
    plan.reason = "the 128x128 tile needs more shared memory than the device allows: 64x64 tiles";
  } else {
    plan.tile = 0;
    plan.reason = "Og a multiple of 128: 128x128 tiles";
  }
  return plan;
}

// Fewest pixels a wgrad split sums: 32 k-steps of BK = 32, so that a block's fp32 partial tile (BM x BN x 4 bytes,
// written once and read once by the caller's sum) stays small next to the (BM + BN) x pixels it loads.
constexpr int64_t kConvWgradMinPixelsPerSplit = 1024;

// The wgrad's pixel splits for tile `t` on a device of sm_count multiprocessors that holds blocks_per_sm blocks of
// the kernel at once (its residency: cudaOccupancyMaxActiveBlocksPerMultiprocessor).  A grid of `tiles` = x * y
// blocks below target = sm_count * max(blocks_per_sm, 2) blocks (a full wave, and at least two blocks per
// multiprocessor, so that one block's prologue and epilogue overlap another's main loop) is split over pixels:
//   * the most splits whose grid stays within the target (target / tiles): whole waves, no ragged extra one, the
//     fewest partial sums -- when that fills at least 7/8 of the target;
//   * else (tiles just above a divisor of the target) the fewest more splits whose waves are on average at least
//     7/8 full (a wave: sm_count * blocks_per_sm blocks);
// never more than one split per 1024 pixels (kConvWgradMinPixelsPerSplit) or 65535.  A grid already at the target,
// or an unknown device (sm_count 0), is not split.  The caller adds the partial sums in split order (deterministic).
inline int64_t conv_wgrad_splits(const ConvProblem& p, int t, int sm_count, int blocks_per_sm) {
  if (sm_count <= 0) return 1;
  const int64_t resident = blocks_per_sm > 1 ? blocks_per_sm : 1;
  const int64_t wave = int64_t(sm_count) * resident;
  const int64_t target = int64_t(sm_count) * (resident > 2 ? resident : 2);
  const int64_t tiles = conv_wgrad_grid(p, t, 1).blocks();
  int64_t most = p.N * p.OH * p.OW / kConvWgradMinPixelsPerSplit;
  most = most < 1 ? 1 : most > kConvMaxGridY ? kConvMaxGridY : most;
  if (tiles >= target || most == 1) return 1;
  int64_t s = target / tiles;  // >= 1
  if (s >= most) return most;
  if (8 * tiles * s >= 7 * target) return s;
  // 8 x blocks >= 7 x (waves x wave): the waves at least 7/8 full.  Terminates: 8 or more waves are 8/9 full.
  const auto full = [&](int64_t n) { return 8 * tiles * n >= 7 * conv_cdiv(tiles * n, wave) * wave; };
  for (++s; s < most && !full(s); ++s) {
  }
  return s;
}

#ifdef AK_WITH_CUDA
// Writes dx (every element) with one kernel launch; as conv2d_relu_forward_cuda otherwise.
int conv2d_relu_dgrad_cuda(const void* dy, const void* y, const void* wt, void* dx, const ConvDgradProblem& d,
                           ConvDtype dtype, bool allow_tf32, cudaStream_t stream, int device, char* err,
                           size_t errlen);

// Writes dw_part (splits, Cout, K) and db_part (splits, Cout), fp32, with one kernel launch.  Any splits in
// [1, 65535] is correct; conv2d_relu_wgrad_splits_cuda says how many fill the device.
int conv2d_relu_wgrad_cuda(const void* dy, const void* y, const void* x, float* dw_part, float* db_part,
                           const ConvWgradProblem& w, ConvDtype dtype, bool allow_tf32, cudaStream_t stream,
                           int device, char* err, size_t errlen);

// *splits = conv_wgrad_splits of the plan conv2d_relu_wgrad_cuda makes for these pointers (w.splits ignored) on
// device `device`: its multiprocessor count and the planned kernel's residency.  Returns 0, or nonzero with a
// message in err.  Launches and allocates nothing.
int conv2d_relu_wgrad_splits_cuda(const void* dy, const void* y, const void* x, const ConvWgradProblem& w,
                                  ConvDtype dtype, bool allow_tf32, int device, int64_t* splits, char* err,
                                  size_t errlen);

// Writes y = relu(conv(x, w) + bias) with one kernel launch on `stream` of CUDA device `device`.
// Returns 0 on success; otherwise writes a message into err (errlen bytes) and returns nonzero.
// Allocates nothing and does not synchronise (safe under CUDA-graph capture).  N == 0 launches nothing.
int conv2d_relu_forward_cuda(const void* x, const void* w, const void* bias, void* y, const ConvProblem& p,
                             ConvDtype dtype, bool allow_tf32, cudaStream_t stream, int device, char* err,
                             size_t errlen);
#endif

}  // namespace ak
