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

// Largest grid axis y (output-channel tiles times groups) a launch may use.
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
  kRowSpan = 1,    // groups == 1: a window row (kh) is KW*C contiguous elements: 16-byte vector loads
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

// The tile for a GEMM with `cols` columns per group and `rows` rows (see plan_conv).
inline int choose_conv_tile(int64_t rows, int64_t cols, int64_t groups, int sm_count, const char** reason) {
  int tile;
  if (cols <= 64) {
    tile = 2;
    *reason = "<= 64 columns per group: a wider tile would waste columns";
  } else if (cols % 128 == 0) {
    tile = 0;
    *reason = "columns per group a multiple of 128: 128x128 tiles, no wasted columns, most reuse per loaded byte";
  } else if (cols % 96 == 0) {
    tile = 1;
    *reason = "columns per group a multiple of 96: 128x96 tiles, no wasted columns";
  } else {
    const int64_t waste128 = (128 - cols % 128) % 128, waste96 = (96 - cols % 96) % 96;
    tile = waste96 < waste128 ? 1 : 0;
    *reason = "columns per group not a multiple of 96 or 128: the tile width that wastes fewest columns";
  }
  const ConvTileShape& s = kConvTiles[tile];
  const int64_t blocks = ((rows + s.bm - 1) / s.bm) * ((cols + s.bn - 1) / s.bn) * groups;
  if (tile != 2 && sm_count > 0 && blocks < sm_count) {
    tile = 2;
    *reason = "fewer large tiles than multiprocessors: 64x64 tiles to fill the GPU";
  }
  if (((cols + kConvTiles[tile].bn - 1) / kConvTiles[tile].bn) * groups > kConvMaxGridY) tile = 2;
  return tile;
}

// The launch plan: loader from the layout, tile from the output channels of a group and the grid size.
// sm_count: multiprocessors of the device (0: unknown).  Alignments are of the base pointers (bytes mod 16).
inline ConvPlan plan_conv(const ConvProblem& p, ConvDtype dtype, bool allow_tf32, int sm_count, unsigned x_align,
                          unsigned w_align, unsigned y_align) {
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
  if (plan.fma) {
    plan.tile = 2;
    plan.reason = "exact fp32: FMA path, compiled for the 64x64 tile only";
  } else if (plan.loader == ConvLoader::kScalar) {
    plan.tile = 2;
    plan.reason = "scalar im2col loads: compiled for the 64x64 tile only";
  } else {
    plan.tile = choose_conv_tile(p.N * p.OH * p.OW, Og, p.groups, sm_count, &plan.reason);
  }
  return plan;
}

// d(input) of conv2d_relu (the backward's dgrad), the ReLU mask y > 0 applied to dy as it is loaded:
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
                                     unsigned dy_align, unsigned y_align, unsigned w_align, unsigned dx_align) {
  const ConvProblem& p = d.p;
  ConvDgradPlan plan{};
  const int64_t vec = 16 / conv_dtype_size(dtype);
  const int64_t Cg = p.C / p.groups, Og = p.Cout / p.groups;
  plan.vec = Og % vec == 0 && p.Cout % vec == 0 && dy_align == 0 && y_align == 0;
  plan.fma = dtype == ConvDtype::kFloat32 && !allow_tf32;
  plan.w_vec = w_align == 0 && p.w_row_stride % vec == 0;
  plan.dx_pair = d.dx_sc == 1 && Cg % 2 == 0 && p.C % 2 == 0 && dx_align % (2 * conv_dtype_size(dtype)) == 0 &&
                 d.dx_sn % 2 == 0 && d.dx_sh % 2 == 0 && d.dx_sw % 2 == 0;
  if (plan.fma) {
    plan.tile = 2;
    plan.reason = "exact fp32: FMA path, compiled for the 64x64 tile only";
  } else if (!plan.vec) {
    plan.tile = 2;
    plan.reason = "element loads of dy: compiled for the 64x64 tile only";
  } else {
    plan.tile = choose_conv_tile(p.N * p.H * p.W, Cg, p.groups, sm_count, &plan.reason);
  }
  return plan;
}

// d(weight) and d(bias) of conv2d_relu (the backward's wgrad), the ReLU mask y > 0 applied to dy on load,
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

inline ConvWgradPlan plan_conv_wgrad(const ConvWgradProblem& w, ConvDtype dtype, bool allow_tf32, unsigned dy_align,
                                     unsigned y_align, unsigned x_align) {
  const ConvProblem& p = w.p;
  ConvWgradPlan plan{};
  const int64_t vec = 16 / conv_dtype_size(dtype);
  const int64_t Cg = p.C / p.groups, Og = p.Cout / p.groups;
  plan.vec = Og % vec == 0 && p.Cout % vec == 0 && Cg % vec == 0 && p.C % vec == 0 && dy_align == 0 &&
             y_align == 0 && x_align == 0;
  plan.fma = dtype == ConvDtype::kFloat32 && !allow_tf32;
  plan.dw_pair = (p.KH * p.KW * Cg) % 2 == 0;
  if (plan.fma || !plan.vec || Og % 128 != 0) {
    plan.tile = 2;
    plan.reason = plan.fma ? "exact fp32: the 64x64 tile" : !plan.vec ? "element loads: the 64x64 tile"
                                                                       : "Og not a multiple of 128: 64x64 tiles";
  } else {
    plan.tile = 0;
    plan.reason = "Og a multiple of 128: 128x128 tiles";
  }
  return plan;
}

// Dynamic shared memory of a tile: STAGES x (BM + BN) rows of BK elements padded by 16 bytes.
inline size_t conv_smem_bytes(const ConvTileShape& s, ConvDtype dtype) {
  const int esize = conv_dtype_size(dtype);
  const int pitch = s.bk + 16 / esize;
  return size_t(s.stages) * size_t(s.bm + s.bn) * size_t(pitch) * size_t(esize);
}

#ifdef AK_WITH_CUDA
// Writes dx (every element) with one kernel launch; as conv2d_relu_forward_cuda otherwise.
int conv2d_relu_dgrad_cuda(const void* dy, const void* y, const void* wt, void* dx, const ConvDgradProblem& d,
                           ConvDtype dtype, bool allow_tf32, cudaStream_t stream, int device, char* err,
                           size_t errlen);

// Writes dw_part (splits, Cout, K) and db_part (splits, Cout), fp32, with one kernel launch.
int conv2d_relu_wgrad_cuda(const void* dy, const void* y, const void* x, float* dw_part, float* db_part,
                           const ConvWgradProblem& w, ConvDtype dtype, bool allow_tf32, cudaStream_t stream,
                           int device, char* err, size_t errlen);

// Writes y = relu(conv(x, w) + bias) with one kernel launch on `stream` of CUDA device `device`.
// Returns 0 on success; otherwise writes a message into err (errlen bytes) and returns nonzero.
// Allocates nothing and does not synchronise (safe under CUDA-graph capture).  N == 0 launches nothing.
int conv2d_relu_forward_cuda(const void* x, const void* w, const void* bias, void* y, const ConvProblem& p,
                             ConvDtype dtype, bool allow_tf32, cudaStream_t stream, int device, char* err,
                             size_t errlen);
#endif

}  // namespace ak
