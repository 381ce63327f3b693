// Device code of the CUDA implicit-GEMM convolution + bias + ReLU (host launcher: conv_cuda.cu; problem,
// checks and tile plan: conv.h).  Kept free of CUDA-runtime and torch calls, and every warp-collective or
// asynchronous instruction goes through one small wrapper (conv_ptx_* below), so that the host emulator
// (csrc/emulate/conv_cuda_emulator.cpp) can include this file with its own definitions of those wrappers:
// mma.sync by the PTX ISA's fragment layouts, cp.async as copies deferred to the matching wait.
//
// GEMM view (as the Triton kernel in alexnet_kernels/triton_kernels/conv.py):
//   y[p, o] = relu(b[o] + sum_k A[p, k] * B[o, k]),  p = (n, oh, ow) in [0, M = N*OH*OW), o in [0, Og) of group g
//   A[p, k] = x[n, g*Cg + c, oh*SH - PH + kh, ow*SW - PW + kw]  (0 outside the image),  k = (kh*KW + kw)*Cg + c
//   B[o, k] = w[g*Og + o, c, kh, kw] = w_mem[(g*Og + o)*w_row_stride + k]
// Grid (conv.h conv_gemm_grid): x = tiles of BM pixels, y = output-channel tiles of a group, z = groups (one
// launch).  A block of WARPS_M x WARPS_N warps computes a BM x BN tile; warp (wm, wn) owns the
// (BM/WARPS_M) x (BN/WARPS_N) sub-tile as MT x NT fragments of 16 x 8 (the mma's C shape).
//
// Pipeline: STAGES shared-memory buffers of A (BM x BK) and B (BN x BK), k contiguous in each row (pitch
// BK + 16 bytes: the fragment loads below, one 32-bit word per lane, hit 32 distinct banks; the 16-byte fills
// take their rows in the order chunk_row gives, so a quarter warp's chunks hit distinct banks too).  Tiles
// kt+1 .. kt+STAGES-1 are in flight (cp.async groups) while tile kt is multiplied; cp.async.wait_group
// STAGES-2 then __syncthreads() before a tile is read and before its buffer is refilled.  The wgrad stores
// its stages k-major instead (KMajor: pixel rows, channels contiguous) and transposes its fragments with
// ldmatrix.trans.  Every shared-memory access goes through conv_sts / conv_lds / cp.async / ldmatrix wrappers
// tagged with an SmemSite, so the emulator can count each site's bank conflicts.
//
// A loaders (im2col on the fly; conv.h ConvLoader):
//   kCpAsync16  Cg % 8 (16 bytes of channels) == 0: a 16-byte chunk of a row is 8 channels of one tap,
//               contiguous in channels_last x: one cp.async, zero-filled (src-size 0) outside the image.
//   kRowSpan    groups == 1 (conv1: C = 3, K = 363): for one tap row kh the window's KW*C elements are
//               contiguous in x, so a thread walks its part of an A row with a counter (no division per
//               element), gathers it into registers by element loads (zeros outside the image) and stores
//               it as 16-byte chunks.
//   kScalar     anything else: one element per load.
// B (weights): 16-byte cp.async per 8 k (src-size clipped at K: zero-filled tail) when the rows are
// 16-byte aligned, else element loads.
//
// Math: bf16 / fp16 -> mma.sync.m16n8k16 (fp32 accumulators); fp32 with TF32 -> the inputs rounded by
// cvt.rna.tf32.f32, then mma.sync.m16n8k8.tf32; exact fp32 -> the same fragment ownership with FFMA over k
// in order.  Epilogue: + bias, relu (NaN kept: `v < 0 ? 0 : v`), converted once and stored once.
//
// Indices: pixel and output offsets are 64-bit; sizes within a tile row are 32-bit (conv.h limits them).
#pragma once

#include <cstdint>
#include <type_traits>

#include "conv.h"

#ifndef AK_CONV_HOST_EMULATION
#include "conv_cuda_ptx.cuh"  // the emulator defines the same functions before including this file
#endif

namespace ak {
namespace conv_detail {

enum class MathKind : int { kMmaF16 = 0, kMmaBF16 = 1, kMmaTF32 = 2, kFmaF32 = 3 };

// The kernels' shared-memory access sites (the SITE argument of conv_sts / conv_lds / cp.async / ldmatrix):
// the host emulator counts bank conflicts per site (csrc/emulate/smem_banks.h).
enum SmemSite : int {
  kSiteAFill = 0,    // A operand into shared memory (stores or cp.async)
  kSiteBFill = 1,    // B operand into shared memory
  kSiteAFrag = 2,    // A fragments out of shared memory
  kSiteBFrag = 3,    // B fragments
  kSiteBiasSum = 4,  // wgrad: d(bias) sums read from the A tiles
  kSiteYFill = 5,    // dgrad, wgrad: y (the ReLU output, for the mask) into shared memory by cp.async
  kSiteMask = 6,     // dgrad, wgrad: the mask pass (dy and y chunks read, masked dy written back)
  kSiteCount = 7
};
constexpr const char* kSmemSiteNames[kSiteCount] = {"A fill",      "B fill",    "A fragments", "B fragments",
                                                    "bias sums",   "y fill",    "mask pass"};

// The convolution's sizes as every kernel reads them (32-bit: conv.h bounds them); Cg = C / groups,
// Og = Cout / groups.
struct ConvGeometry {
  int H, W, C, OH, OW, Cg, Og, Cout, KW, SH, SW, PH, PW;
};

inline ConvGeometry conv_geometry(const ConvProblem& p) {
  return ConvGeometry{int(p.H),  int(p.W),  int(p.C),  int(p.OH),         int(p.OW),
                      int(p.C / p.groups), int(p.Cout / p.groups), int(p.Cout), int(p.KW),
                      int(p.SH), int(p.SW), int(p.PH), int(p.PW)};
}

// Problem as the forward kernel reads it.  Not built on ConvGeometry as the backward kernels' are: the
// exact-fp32 forward kernels sit at the register limit (252 of 255 on sm_90 with the cp.async16 loader), and
// that layout of the argument block made one of them spill (tests/test_conv_cuda.py checks the SASS).
struct ConvArgs {
  const void* x;
  const void* w;
  const void* bias;  // nullptr: no bias
  void* y;
  int64_t M;         // N * OH * OW
  int H, W, C, OH, OW, Cg, Og, K, KW, SH, SW, PH, PW, Cout;
  int64_t w_row_stride;
  int64_t y_sn, y_sc, y_sh, y_sw;
  bool w_vec, y_pair;
};

template <int BM_, int BN_, int BK_, int WARPS_M_, int WARPS_N_, int STAGES_>
struct Tile {
  static constexpr int BM = BM_, BN = BN_, BK = BK_, WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, STAGES = STAGES_;
  static constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  static constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N;  // warp tile
  static constexpr int MT = WTM / 16, NT = WTN / 8;             // 16 x 8 fragments per warp
  static_assert(WTM % 16 == 0 && WTN % 8 == 0, "warp tile must be whole 16x8 fragments");
  static_assert(BK % 16 == 0, "BK must be a multiple of the mma's k (16)");
};

// T is the storage type (float, or the includer's 16-bit half / bfloat16); elements move as raw bits
// between global and shared memory and are converted only by the mma (or FMA) and the epilogue.
template <typename T>
struct Elem {
  static constexpr int kSize = sizeof(T);
  static constexpr int kVec = 16 / sizeof(T);  // elements per 16-byte chunk
};

__host__ __device__ inline int64_t cdiv64(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Per-row data of an A-tile row a thread loads: the first input element of its window.
struct RowInfo {
  int64_t base;  // element offset of x[n, 0, 0, 0]
  int ih0, iw0;  // top-left corner of the window (may be negative)
  bool valid;    // pixel < M
};

__device__ __forceinline__ RowInfo row_info(const ConvArgs& a, int64_t m) {
  RowInfo r;
  r.valid = m < a.M;
  const int64_t mm = r.valid ? m : 0;
  const int ow = static_cast<int>(mm % a.OW);
  const int64_t t = mm / a.OW;
  const int oh = static_cast<int>(t % a.OH);
  const int64_t n = t / a.OH;
  r.base = n * a.H * a.W * a.C;
  r.ih0 = oh * a.SH - a.PH;
  r.iw0 = ow * a.SW - a.PW;
  return r;
}

// The tile row a thread fills when rows are filled kChunksPerRow 16-byte chunks at a time, thread (or chunk)
// i taking chunk i % kChunksPerRow of row i / kChunksPerRow -- with bits 0 and 2 of the row swapped when a row is
// four chunks (16-bit elements, BK = 32: an 80-byte pitch, 5 of the 8 16-byte bank groups of 128 bytes).  A
// quarter warp's 8 chunks then lie in rows r and r + 4, whose groups 5r + {0..3} and 5r + 20 + {0..3} (mod 8)
// are disjoint: one wavefront per phase, where rows r and r + 1 would collide once.  A permutation of the rows
// within each 8, so every row is still filled exactly once.
template <int kChunksPerRow>
__device__ __forceinline__ int chunk_row(int i) {
  const int r = i / kChunksPerRow;
  if constexpr (kChunksPerRow == 4)
    return (r & ~5) | ((r & 1) << 2) | ((r >> 2) & 1);
  else
    return r;
}

// ---- A loaders ---------------------------------------------------------------------------------------

// kCpAsync16: thread `tid` copies chunks tid, tid + kThreads, ... of the BM x (BK/kVec) chunks.
template <typename T, typename TileT>
struct LoaderCp16 {
  static constexpr int kVec = Elem<T>::kVec;
  static constexpr int kChunksPerRow = TileT::BK / kVec;
  static constexpr int kRowsPerPass = TileT::kThreads / kChunksPerRow;
  static constexpr int kPasses = TileT::BM / kRowsPerPass;
  static_assert(TileT::kThreads % kChunksPerRow == 0 && TileT::BM % kRowsPerPass == 0, "A chunk split");
  RowInfo rows[kPasses];
  int chunk;  // this thread's chunk column (the same in every pass)

  __device__ __forceinline__ void init(const ConvArgs& a, int64_t m0, int tid) {
    chunk = tid % kChunksPerRow;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) rows[i] = row_info(a, m0 + chunk_row<kChunksPerRow>(tid) + i * kRowsPerPass);
  }

  __device__ __forceinline__ void load(const ConvArgs& a, const T* __restrict__ x, int group, int k0, T* As,
                                       int pitch, int tid) {
    const int k = k0 + chunk * kVec;
    const bool k_ok = k < a.K;
    const int kk = k_ok ? k : 0;
    const int tap = kk / a.Cg, c = kk - tap * a.Cg;
    const int kh = tap / a.KW, kw = tap - kh * a.KW;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int r = chunk_row<kChunksPerRow>(tid) + i * kRowsPerPass;
      const int ih = rows[i].ih0 + kh, iw = rows[i].iw0 + kw;
      const bool ok = k_ok && rows[i].valid && ih >= 0 && ih < a.H && iw >= 0 && iw < a.W;
      const T* src = ok ? x + rows[i].base + (int64_t(ih) * a.W + iw) * a.C + int64_t(group) * a.Cg + c : x;
      conv_ptx_cp_async16<kSiteAFill>(As + r * pitch + chunk * kVec, src, ok ? 16 : 0);
    }
  }
};

// kScalar: element (r, kk) of the tile; kk fixed per thread.
template <typename T, typename TileT>
struct LoaderScalar {
  static constexpr int kRowsPerPass = TileT::kThreads / TileT::BK;
  static constexpr int kPasses = TileT::BM / kRowsPerPass;
  static_assert(TileT::kThreads % TileT::BK == 0 && TileT::BM % kRowsPerPass == 0, "A element split");
  RowInfo rows[kPasses];
  int col;

  __device__ __forceinline__ void init(const ConvArgs& a, int64_t m0, int tid) {
    col = tid % TileT::BK;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) rows[i] = row_info(a, m0 + tid / TileT::BK + i * kRowsPerPass);
  }

  __device__ __forceinline__ void load(const ConvArgs& a, const T* __restrict__ x, int group, int k0, T* As,
                                       int pitch, int tid) {
    const int k = k0 + col;
    const bool k_ok = k < a.K;
    const int kk = k_ok ? k : 0;
    const int tap = kk / a.Cg, c = kk - tap * a.Cg;
    const int kh = tap / a.KW, kw = tap - kh * a.KW;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int r = tid / TileT::BK + i * kRowsPerPass;
      const int ih = rows[i].ih0 + kh, iw = rows[i].iw0 + kw;
      const bool ok = k_ok && rows[i].valid && ih >= 0 && ih < a.H && iw >= 0 && iw < a.W;
      T v = conv_zero<T>();
      if (ok) v = x[rows[i].base + (int64_t(ih) * a.W + iw) * a.C + int64_t(group) * a.Cg + c];
      conv_sts<kSiteAFill>(As + r * pitch + col, v);
    }
  }
};

// kRowSpan (groups == 1): kThreadsPerRow threads share an A row of the tile, each filling kPart contiguous
// k of it.  Along k the elements of one tap row kh (a span of KW*C) are contiguous in x, so a thread's kPart
// elements lie in at most ceil(kPart / span) + 1 image rows and its walk along them is a counter, not a
// division per element.  The elements are gathered into registers with the same (unrolled) instructions in
// every thread -- one predicated element load each, zero outside the image, past M or past K -- and stored as
// whole 16-byte chunks: warp-uniform stores whose banks do not depend on the data (element stores at the
// data-dependent columns of the spans hit 4 threads per bank: 4-way).
template <typename T, typename TileT>
struct LoaderRowSpan {
  static constexpr int kVec = Elem<T>::kVec;
  // Split a row between threads so that every thread takes kPart contiguous elements of it.
  static constexpr int kThreadsPerRow = TileT::kThreads >= TileT::BM ? TileT::kThreads / TileT::BM : 1;
  static constexpr int kPart = TileT::BK / kThreadsPerRow;
  static constexpr int kChunks = kPart / kVec;  // 16-byte chunks per thread and row
  static constexpr int kRowsPerPass = TileT::kThreads / kThreadsPerRow;
  static constexpr int kPasses = TileT::BM / kRowsPerPass;
  static_assert(TileT::BK % kThreadsPerRow == 0 && TileT::BM % kRowsPerPass == 0, "A span split");
  static_assert(kPart % kVec == 0 && kRowsPerPass % 8 == 0, "whole 16-byte chunks, rows permuted within 8");
  RowInfo rows[kPasses];
  int part;

  // The tile row of thread tid's first pass.  A 16-byte store is served a quarter warp (8 threads: 8 /
  // kThreadsPerRow rows) at a time; store q of the thread of part p writes chunk p * kChunks + q of its row, in
  // 16-byte bank group (row * pitch_groups + chunk) mod 8.  16-bit elements with BK = 32 (pitch 80 bytes: 5
  // groups; two threads a row, chunks q and q + 2): rows 0-3 (groups 0, 5, 2, 7) collide, rows {0, 1, 4, 5}
  // (0, 5, 4, 1) plus {0, 2} are 8 distinct groups -- so bits 1 and 2 of the row are swapped (rows {2, 3, 6, 7}
  // likewise).  fp32 (pitch 144 bytes: 9 = 1 mod 8 groups; chunks q and q + 4): rows r..r+3 are distinct as they
  // are.  A permutation within each 8 rows, so every row is still filled once.
  __device__ __forceinline__ static int row_of(int tid) {
    const int r = tid / kThreadsPerRow;
    if constexpr (kThreadsPerRow == 2 && TileT::BK / kVec == 4)
      return (r & ~6) | ((r & 2) << 1) | ((r >> 1) & 2);
    else
      return r;
  }

  __device__ __forceinline__ void init(const ConvArgs& a, int64_t m0, int tid) {
    part = tid % kThreadsPerRow;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) rows[i] = row_info(a, m0 + row_of(tid) + i * kRowsPerPass);
  }

  __device__ __forceinline__ void load(const ConvArgs& a, const T* __restrict__ x, int /*group*/, int k0, T* As,
                                       int pitch, int tid) {
    const int span = a.KW * a.C;    // elements of one tap row of the window
    const int row_len = a.W * a.C;  // elements of one image row
    const int kbeg = k0 + part * kPart;
    const int kh0 = kbeg / span;
    const int j0 = kbeg - kh0 * span;
    const int k_left = a.K - kbeg;  // elements e >= k_left are past K: zeros
#pragma unroll 1
    for (int i = 0; i < kPasses; ++i) {
      const RowInfo& ri = rows[i];
      int ih = ri.ih0 + kh0;
      int col = ri.iw0 * a.C + j0;  // element of image row ih (outside [0, row_len): padding)
      int col_end = ri.iw0 * a.C + span;
      int64_t row_off = ri.base + int64_t(ih) * row_len;
      T* dst = As + (row_of(tid) + i * kRowsPerPass) * pitch + part * kPart;
#pragma unroll
      for (int q = 0; q < kChunks; ++q) {  // a chunk stored as soon as it is gathered: fewer live registers
        T v[kVec];
#pragma unroll
        for (int e = 0; e < kVec; ++e) {
          if (col == col_end) {  // next tap row
            col -= span;
            ++ih;
            row_off += row_len;
          }
          const bool ok = ri.valid && q * kVec + e < k_left && ih >= 0 && ih < a.H && col >= 0 && col < row_len;
          v[e] = ok ? x[row_off + col] : conv_zero<T>();
          ++col;
        }
        conv_sts16<kSiteAFill>(dst + q * kVec, v);
      }
    }
  }
};

template <typename T, typename TileT, ConvLoader L>
struct LoaderFor;
template <typename T, typename TileT>
struct LoaderFor<T, TileT, ConvLoader::kCpAsync16> { using type = LoaderCp16<T, TileT>; };
template <typename T, typename TileT>
struct LoaderFor<T, TileT, ConvLoader::kRowSpan> { using type = LoaderRowSpan<T, TileT>; };
template <typename T, typename TileT>
struct LoaderFor<T, TileT, ConvLoader::kScalar> { using type = LoaderScalar<T, TileT>; };

// ---- B (weight) loader ---------------------------------------------------------------------------------

// Rows [o_first, o_first + o_count) of a row-major weight matrix (Args: w_vec, K, w_row_stride), columns
// [k0, k0 + BK) into Bs[row][k].
template <typename T, typename TileT, typename Args>
__device__ __forceinline__ void load_weights(const Args& a, const T* __restrict__ w, int64_t o_first,
                                             int o_count, int k0, T* Bs, int pitch, int tid) {
  constexpr int kVec = Elem<T>::kVec;
  if (a.w_vec) {
    constexpr int kChunksPerRow = TileT::BK / kVec;
    constexpr int kChunks = TileT::BN * kChunksPerRow;
    for (int q = tid; q < kChunks; q += TileT::kThreads) {
      const int r = chunk_row<kChunksPerRow>(q), cc = q - (q / kChunksPerRow) * kChunksPerRow;
      const int k = k0 + cc * kVec;
      const int left = a.K - k;
      const bool ok = r < o_count && left > 0;
      const int bytes = ok ? (left >= kVec ? 16 : left * int(sizeof(T))) : 0;
      const T* src = ok ? w + (o_first + r) * a.w_row_stride + k : w;
      conv_ptx_cp_async16<kSiteBFill>(Bs + r * pitch + cc * kVec, src, bytes);
    }
  } else {
    constexpr int kElems = TileT::BN * TileT::BK;
    for (int q = tid; q < kElems; q += TileT::kThreads) {
      const int r = q / TileT::BK, kk = q - r * TileT::BK;
      const int k = k0 + kk;
      T v = conv_zero<T>();
      if (r < o_count && k < a.K) v = w[(o_first + r) * a.w_row_stride + k];
      conv_sts<kSiteBFill>(Bs + r * pitch + kk, v);
    }
  }
}

// ---- warp tile math ------------------------------------------------------------------------------------

// One BK slice of the warp tile: acc[mt][nt][0..3] += A(16 rows of mt) x B(8 columns of nt), fragment registers
// by the PTX ISA's layouts (g = lane / 4, t = lane % 4):
//   m16n8k16 (16-bit): A regs (g, 2t|2t+1), (g+8, 2t|2t+1), (g, 2t+8|+9), (g+8, 2t+8|+9);
//                      B regs (k 2t|2t+1, n g), (k 2t+8|2t+9, n g); C (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
//   m16n8k8 (tf32):    A (g, t), (g+8, t), (g, t+4), (g+8, t+4); B (k t, n g), (k t+4, n g); C as above
// The exact-fp32 path keeps the same ownership of C and sums k in order, one FMA each.  Where the elements lie
// in a stage is the Frags type's business (RowMajorFrags: the forward's and dgrad's; KMajorFrags: the wgrad's).

// A as [row][k] and B as [n][k] (pitch elements per row): every 16-bit pair above is one aligned 32-bit word.
template <typename T, typename TileT>
struct RowMajorFrags {
  const T* As;
  const T* Bs;
  int pitch, wm, wn, g, t;

  __device__ __forceinline__ RowMajorFrags(const T* As_, const T* Bs_, int pitch_, int wm_, int wn_, int lane)
      : As(As_), Bs(Bs_), pitch(pitch_), wm(wm_), wn(wn_), g(lane >> 2), t(lane & 3) {}

  __device__ __forceinline__ void load16(uint32_t (&af)[TileT::MT][4], uint32_t (&bf)[TileT::NT][2], int ks) const {
#pragma unroll
    for (int mt = 0; mt < TileT::MT; ++mt) {
      const T* p = As + (wm * TileT::WTM + mt * 16 + g) * pitch + ks + 2 * t;
      af[mt][0] = conv_lds32<kSiteAFrag>(p);
      af[mt][1] = conv_lds32<kSiteAFrag>(p + 8 * pitch);
      af[mt][2] = conv_lds32<kSiteAFrag>(p + 8);
      af[mt][3] = conv_lds32<kSiteAFrag>(p + 8 * pitch + 8);
    }
#pragma unroll
    for (int nt = 0; nt < TileT::NT; ++nt) {
      const T* p = Bs + (wn * TileT::WTN + nt * 8 + g) * pitch + ks + 2 * t;
      bf[nt][0] = conv_lds32<kSiteBFrag>(p);
      bf[nt][1] = conv_lds32<kSiteBFrag>(p + 8);
    }
  }

  __device__ __forceinline__ void load32(float (&af)[TileT::MT][4], float (&bf)[TileT::NT][2], int ks) const {
#pragma unroll
    for (int mt = 0; mt < TileT::MT; ++mt) {
      const float* p = reinterpret_cast<const float*>(As) + (wm * TileT::WTM + mt * 16 + g) * pitch + ks + t;
      af[mt][0] = conv_lds<kSiteAFrag>(p);
      af[mt][1] = conv_lds<kSiteAFrag>(p + 8 * pitch);
      af[mt][2] = conv_lds<kSiteAFrag>(p + 4);
      af[mt][3] = conv_lds<kSiteAFrag>(p + 8 * pitch + 4);
    }
#pragma unroll
    for (int nt = 0; nt < TileT::NT; ++nt) {
      const float* p = reinterpret_cast<const float*>(Bs) + (wn * TileT::WTN + nt * 8 + g) * pitch + ks + t;
      bf[nt][0] = conv_lds<kSiteBFrag>(p);
      bf[nt][1] = conv_lds<kSiteBFrag>(p + 4);
    }
  }

  // Exact fp32: A rows g, g + 8 of mt and B columns 2t, 2t + 1 of nt, element k of each.
  struct FmaRows {
    const float *a0, *a1, *b0, *b1;
    __device__ __forceinline__ void operands(int k, float (&av)[2], float (&bv)[2]) const {
      av[0] = conv_lds<kSiteAFrag>(a0 + k);
      av[1] = conv_lds<kSiteAFrag>(a1 + k);
      bv[0] = conv_lds<kSiteBFrag>(b0 + k);
      bv[1] = conv_lds<kSiteBFrag>(b1 + k);
    }
  };
  __device__ __forceinline__ FmaRows fma_rows(int mt, int nt) const {
    const float* a0 = reinterpret_cast<const float*>(As) + (wm * TileT::WTM + mt * 16 + g) * pitch;
    const float* b0 = reinterpret_cast<const float*>(Bs) + (wn * TileT::WTN + nt * 8 + 2 * t) * pitch;
    return FmaRows{a0, a0 + 8 * pitch, b0, b0 + pitch};
  }
};

// The wgrad's shared layout, k-major: A as [BK][BM + kPad] (pixel rows, output channels contiguous) and B as
// [BK][BN + kPad] (pixel rows, im2col columns contiguous), so both fill as whole 16-byte chunks of a row, as the
// channels lie in memory.  kPad (8 elements) puts a 16-bit row 16 bytes past a multiple of 128 bytes (the 8 rows
// an ldmatrix phase reads fall in 8 distinct 16-byte bank groups) and an fp32 row 8 words past a multiple of 32
// (a fragment's lanes (t, g) read words t*pitch + g: 32 distinct banks).  It fits in the [row][k] stage.
template <typename T, typename TileT>
struct KMajor {
  static constexpr int kPad = 8;
  static constexpr int kPitchA = TileT::BM + kPad, kPitchB = TileT::BN + kPad;
  static constexpr int kBOffset = TileT::BK * kPitchA;  // elements from a stage's A to its B
  static_assert(TileT::BK * (kPitchA + kPitchB) <= (TileT::BM + TileT::BN) * (TileT::BK + Elem<T>::kVec),
                "the k-major stage must fit in the stage conv_smem_bytes allocates");
  static_assert(TileT::NT % 2 == 0, "B fragments load two 8-column blocks per ldmatrix.x4");
};

// The same fragments from the k-major layout: 16-bit through ldmatrix.x4.trans (lane l addresses row l % 8 of
// matrix l / 8; matrix j lands in register j), 32-bit elements one load each.
template <typename T, typename TileT>
struct KMajorFrags {
  static constexpr int kPA = KMajor<T, TileT>::kPitchA, kPB = KMajor<T, TileT>::kPitchB;
  const T* A;  // this warp's first m / n column, at pixel row 0
  const T* B;
  int g, t, lr, lm;

  __device__ __forceinline__ KMajorFrags(const T* As, const T* Bs, int /*pitch*/, int wm, int wn, int lane)
      : A(As + wm * TileT::WTM), B(Bs + wn * TileT::WTN), g(lane >> 2), t(lane & 3), lr(lane & 7), lm(lane >> 3) {}

  __device__ __forceinline__ void load16(uint32_t (&af)[TileT::MT][4], uint32_t (&bf)[TileT::NT][2], int ks) const {
    // A matrices: (k 0-7, m 0-7), (k 0-7, m 8-15), (k 8-15, m 0-7), (k 8-15, m 8-15) = a0..a3.
#pragma unroll
    for (int mt = 0; mt < TileT::MT; ++mt)
      conv_ldmatrix_x4_trans<kSiteAFrag>(af[mt], A + (ks + lr + (lm >> 1) * 8) * kPA + mt * 16 + (lm & 1) * 8);
    // B matrices: (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15) = b0, b1 of nt, nt + 1.
#pragma unroll
    for (int nt = 0; nt < TileT::NT; nt += 2) {
      uint32_t r[4];
      conv_ldmatrix_x4_trans<kSiteBFrag>(r, B + (ks + lr + (lm & 1) * 8) * kPB + nt * 8 + (lm >> 1) * 8);
      bf[nt][0] = r[0];
      bf[nt][1] = r[1];
      bf[nt + 1][0] = r[2];
      bf[nt + 1][1] = r[3];
    }
  }

  __device__ __forceinline__ void load32(float (&af)[TileT::MT][4], float (&bf)[TileT::NT][2], int ks) const {
    const float* a = reinterpret_cast<const float*>(A);
    const float* b = reinterpret_cast<const float*>(B);
#pragma unroll
    for (int mt = 0; mt < TileT::MT; ++mt) {
      const float* p = a + (ks + t) * kPA + mt * 16 + g;
      af[mt][0] = conv_lds<kSiteAFrag>(p);
      af[mt][1] = conv_lds<kSiteAFrag>(p + 8);
      af[mt][2] = conv_lds<kSiteAFrag>(p + 4 * kPA);
      af[mt][3] = conv_lds<kSiteAFrag>(p + 4 * kPA + 8);
    }
#pragma unroll
    for (int nt = 0; nt < TileT::NT; ++nt) {
      const float* p = b + (ks + t) * kPB + nt * 8 + g;
      bf[nt][0] = conv_lds<kSiteBFrag>(p);
      bf[nt][1] = conv_lds<kSiteBFrag>(p + 4 * kPB);
    }
  }

  struct FmaRows {
    const float *a, *b;
    __device__ __forceinline__ void operands(int k, float (&av)[2], float (&bv)[2]) const {
      av[0] = conv_lds<kSiteAFrag>(a + k * kPA);
      av[1] = conv_lds<kSiteAFrag>(a + k * kPA + 8);
      bv[0] = conv_lds<kSiteBFrag>(b + k * kPB);
      bv[1] = conv_lds<kSiteBFrag>(b + k * kPB + 1);
    }
  };
  __device__ __forceinline__ FmaRows fma_rows(int mt, int nt) const {
    return FmaRows{reinterpret_cast<const float*>(A) + mt * 16 + g, reinterpret_cast<const float*>(B) + nt * 8 + 2 * t};
  }
};

template <typename T, MathKind MK, typename TileT, typename Frags>
__device__ __forceinline__ void warp_tile_mma(const Frags& f, float (&acc)[TileT::MT][TileT::NT][4]) {
  if constexpr (MK == MathKind::kMmaF16 || MK == MathKind::kMmaBF16) {
#pragma unroll
    for (int ks = 0; ks < TileT::BK; ks += 16) {
      uint32_t af[TileT::MT][4], bf[TileT::NT][2];
      f.load16(af, bf, ks);
#pragma unroll
      for (int mt = 0; mt < TileT::MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < TileT::NT; ++nt) {
          if constexpr (MK == MathKind::kMmaF16)
            conv_ptx_mma_f16(acc[mt][nt], af[mt], bf[nt]);
          else
            conv_ptx_mma_bf16(acc[mt][nt], af[mt], bf[nt]);
        }
    }
  } else if constexpr (MK == MathKind::kMmaTF32) {
#pragma unroll
    for (int ks = 0; ks < TileT::BK; ks += 8) {
      float av[TileT::MT][4], bv[TileT::NT][2];
      f.load32(av, bv, ks);
      uint32_t af[TileT::MT][4], bf[TileT::NT][2];
#pragma unroll
      for (int mt = 0; mt < TileT::MT; ++mt)
#pragma unroll
        for (int i = 0; i < 4; ++i) af[mt][i] = conv_ptx_to_tf32(av[mt][i]);
#pragma unroll
      for (int nt = 0; nt < TileT::NT; ++nt)
#pragma unroll
        for (int i = 0; i < 2; ++i) bf[nt][i] = conv_ptx_to_tf32(bv[nt][i]);
#pragma unroll
      for (int mt = 0; mt < TileT::MT; ++mt)
#pragma unroll
        for (int nt = 0; nt < TileT::NT; ++nt) conv_ptx_mma_tf32(acc[mt][nt], af[mt], bf[nt]);
    }
  } else {
#pragma unroll
    for (int mt = 0; mt < TileT::MT; ++mt)
#pragma unroll
      for (int nt = 0; nt < TileT::NT; ++nt) {
        float* c = acc[mt][nt];
        const auto rows = f.fma_rows(mt, nt);
#pragma unroll 8
        for (int k = 0; k < TileT::BK; ++k) {
          float av[2], bv[2];
          rows.operands(k, av, bv);
          c[0] = fmaf(av[0], bv[0], c[0]);
          c[1] = fmaf(av[0], bv[1], c[1]);
          c[2] = fmaf(av[1], bv[0], c[2]);
          c[3] = fmaf(av[1], bv[1], c[3]);
        }
      }
  }
}

// ---- the pipelined main loop and the epilogue, shared by the forward and dgrad kernels -----------------

template <typename TileT>
using Acc = float[TileT::MT][TileT::NT][4];

// acc += A x B over k_tiles tiles of BK; fill(As, Bs, k0) issues the loads of one tile into a stage
// (cp.async copies, or synchronous stores); mask(As, kt) runs once this thread's copies of tile kt have landed and
// before the __syncthreads that makes everyone's visible (the backward's pass over its own dy chunks);
// landed(As) sees each A tile once every thread's loads of it are visible.  Ends with every copy landed.
// KMAJOR: the stage holds the k-major layout (KMajor, the wgrad's) instead of [row][k] (pitch kPitch).
template <typename T, MathKind MK, typename TileT, bool KMAJOR = false, typename Fill, typename Mask, typename Landed>
__device__ __forceinline__ void gemm_mainloop(T* smem, int k_tiles, int wm, int wn, int lane, Fill& fill, Mask& mask,
                                              Landed& landed, Acc<TileT>& acc) {
  constexpr int kPitch = TileT::BK + Elem<T>::kVec;  // elements per shared row (16 bytes of padding)
  constexpr int kStageElems = (TileT::BM + TileT::BN) * kPitch;
  constexpr int kBOffset = KMAJOR ? KMajor<T, TileT>::kBOffset : TileT::BM * kPitch;
#pragma unroll
  for (int mt = 0; mt < TileT::MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < TileT::NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.0f;
#pragma unroll 1
  for (int s = 0; s < TileT::STAGES - 1; ++s) {
    if (s < k_tiles) fill(smem + s * kStageElems, smem + s * kStageElems + kBOffset, s * TileT::BK);
    conv_ptx_cp_async_commit();
  }
#pragma unroll 1
  for (int kt = 0; kt < k_tiles; ++kt) {
    conv_ptx_cp_async_wait<TileT::STAGES - 2>();  // tile kt has landed (this thread's copies) ...
    mask(smem + (kt % TileT::STAGES) * kStageElems, kt);
    __syncthreads();                              // ... and everyone's; buffer (kt-1) % STAGES is free
    const int next = kt + TileT::STAGES - 1;
    if (next < k_tiles) {
      T* As = smem + (next % TileT::STAGES) * kStageElems;
      fill(As, As + kBOffset, next * TileT::BK);
    }
    conv_ptx_cp_async_commit();
    const T* As = smem + (kt % TileT::STAGES) * kStageElems;
    landed(As);
    using Frags = typename std::conditional<KMAJOR, KMajorFrags<T, TileT>, RowMajorFrags<T, TileT>>::type;
    warp_tile_mma<T, MK, TileT>(Frags(As, As + kBOffset, kPitch, wm, wn, lane), acc);
  }
  conv_ptx_cp_async_wait<0>();
}

// Where the GEMM's rows and columns go: row m = (n, a, b) of an (N, cols, D1, D2) tensor with element
// strides (sn, sc, s1, s2); columns [col0, col0 + cols_valid) of the tile's first column are channels
// chan0 + j.  bias (may be nullptr) is indexed by the channel; relu as torch.relu (NaN kept).
struct EpilogueMap {
  int64_t M;
  int D1, D2;
  int64_t sn, sc, s1, s2;
  int64_t chan0;  // channel of column 0 of the group's matrix
  int cols;       // columns of the group's matrix (Og or Cg)
  bool pair;      // channel pairs may be stored as one aligned store (sc == 1, even offsets)
};

template <typename TileT, typename T>
__device__ __forceinline__ void store_tile(const Acc<TileT>& acc, const EpilogueMap& e, int64_t m0, int col0,
                                           int wm, int wn, int lane, T* __restrict__ out,
                                           const T* __restrict__ bias, bool relu) {
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mt = 0; mt < TileT::MT; ++mt)
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int64_t m = m0 + wm * TileT::WTM + mt * 16 + g + 8 * half;
      if (m >= e.M) continue;
      const int b = static_cast<int>(m % e.D2);
      const int64_t q = m / e.D2;
      const int a = static_cast<int>(q % e.D1);
      const int64_t n = q / e.D1;
      T* row = out + n * e.sn + int64_t(a) * e.s1 + int64_t(b) * e.s2;
#pragma unroll
      for (int nt = 0; nt < TileT::NT; ++nt) {
        const int col = col0 + wn * TileT::WTN + nt * 8 + 2 * t;  // column in the group's matrix
        float v[2] = {acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]};
        T res[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) {
          if (bias != nullptr && col + j < e.cols) v[j] += conv_to_float(bias[e.chan0 + col + j]);
          if (relu) v[j] = v[j] < 0.0f ? 0.0f : v[j];
          res[j] = conv_from_float<T>(v[j]);
        }
        const int64_t c = e.chan0 + col;
        if (e.pair && col + 1 < e.cols) {
          conv_store_pair(row + c, res);
        } else {
          if (col < e.cols) row[c * e.sc] = res[0];
          if (col + 1 < e.cols) row[(c + 1) * e.sc] = res[1];
        }
      }
    }
}

// Where a forward or dgrad block and its thread work (the grid: conv.h conv_gemm_grid -- x row tiles, y a group's
// column tiles, z groups): the thread's warp (wm, wn) in the block, the block's first GEMM row m0, and its column
// tile of group blockIdx.z -- columns [col0, col0 + col_count) of the group's `cols`, which are rows row_first...
// of the (transposed) weight matrix.
template <typename TileT>
struct BlockPlace {
  int tid, lane, wm, wn, group, col0, col_count;
  int64_t m0, row_first;
  __device__ __forceinline__ BlockPlace(int cols) {
    tid = threadIdx.x;
    lane = tid & 31;
    const int warp = tid >> 5;
    wm = warp / TileT::WARPS_N;
    wn = warp % TileT::WARPS_N;
    m0 = int64_t(blockIdx.x) * TileT::BM;
    group = blockIdx.z;
    col0 = blockIdx.y * TileT::BN;
    col_count = cols - col0 < TileT::BN ? cols - col0 : TileT::BN;
    row_first = int64_t(group) * cols + col0;
  }
};

// ---- the forward kernel --------------------------------------------------------------------------------

template <typename T, MathKind MK, typename TileT, ConvLoader L>
__global__ void __launch_bounds__(TileT::kThreads)
    conv2d_relu_fwd_kernel(ConvArgs a) {
  extern __shared__ __align__(16) unsigned char conv_smem[];
  T* smem = reinterpret_cast<T*>(conv_smem);
  const BlockPlace<TileT> bp(a.Og);
  const T* x = static_cast<const T*>(a.x);
  const T* w = static_cast<const T*>(a.w);
  constexpr int kPitch = TileT::BK + Elem<T>::kVec;

  typename LoaderFor<T, TileT, L>::type loader;
  loader.init(a, bp.m0, bp.tid);
  auto fill = [&](T* As, T* Bs, int k0) {
    loader.load(a, x, bp.group, k0, As, kPitch, bp.tid);
    load_weights<T, TileT>(a, w, bp.row_first, bp.col_count, k0, Bs, kPitch, bp.tid);
  };
  auto mask = [](T*, int) {};
  auto landed = [](const T*) {};
  float acc[TileT::MT][TileT::NT][4];
  gemm_mainloop<T, MK, TileT>(smem, (a.K + TileT::BK - 1) / TileT::BK, bp.wm, bp.wn, bp.lane, fill, mask, landed,
                              acc);

  // Epilogue: bias + ReLU on the accumulators, one store per element (or per channel pair).
  const EpilogueMap e{a.M, a.OH, a.OW, a.y_sn, a.y_sc, a.y_sh, a.y_sw, int64_t(bp.group) * a.Og, a.Og,
                      a.y_pair};
  store_tile<TileT>(acc, e, bp.m0, bp.col0, bp.wm, bp.wn, bp.lane, static_cast<T*>(a.y),
                    static_cast<const T*>(a.bias), true);
}

// ---- the backward kernels' loads -------------------------------------------------------------------------

// kE elements from src: one 16-byte vector (VEC, kE = 16 bytes of elements) or one element.
template <typename T, bool VEC>
__device__ __forceinline__ void load_elems(T (&v)[VEC ? Elem<T>::kVec : 1], const T* __restrict__ src) {
  if constexpr (VEC)
    conv_ld_global16(v, src);
  else
    v[0] = *src;
}

// kE elements into shared memory: one 16-byte store (VEC) or one element store.
template <int SITE, typename T, bool VEC>
__device__ __forceinline__ void store_elems(T* dst, const T (&v)[VEC ? Elem<T>::kVec : 1]) {
  if constexpr (VEC)
    conv_sts16<SITE>(dst, v);
  else
    conv_sts<SITE>(dst, v[0]);
}

// The backward's G operand: kE elements of dy from element offset off with ReLU's mask (y > 0) applied, into
// shared memory at dst (contiguous); zeros where !ok.
template <typename T, bool VEC>
__device__ __forceinline__ void load_masked_dy(const T* __restrict__ dy, const T* __restrict__ y, int64_t off, bool ok,
                                               T* dst) {
  constexpr int kE = VEC ? Elem<T>::kVec : 1;
  T d[kE], v[kE], g[kE];
  if (ok) {
    load_elems<T, VEC>(d, dy + off);
    load_elems<T, VEC>(v, y + off);
  }
#pragma unroll
  for (int e = 0; e < kE; ++e) g[e] = (ok && conv_to_float(v[e]) > 0.0f) ? d[e] : conv_zero<T>();
  store_elems<kSiteAFill, T, VEC>(dst, g);
}

// The backward's G operand staged in shared memory (VEC): kE elements of dy into dst and of y into ydst (the same
// place in the stage's y tile) by cp.async, zero-filled where !ok; mask_dy_chunk later zeroes dy where y <= 0.
template <typename T>
__device__ __forceinline__ void copy_dy_and_y(const T* __restrict__ dy, const T* __restrict__ y, int64_t off, bool ok,
                                              T* dst, T* ydst) {
  conv_ptx_cp_async16<kSiteAFill>(dst, ok ? dy + off : dy, ok ? 16 : 0);
  conv_ptx_cp_async16<kSiteYFill>(ydst, ok ? y + off : y, ok ? 16 : 0);
}

// One chunk of the mask pass: dy = (y > 0 ? dy : 0) in shared memory, the chunk this thread copied (its copies have
// landed; nobody else touches the chunk before the __syncthreads that follows).
template <typename T>
__device__ __forceinline__ void mask_dy_chunk(T* dst, const T* ysrc) {
  constexpr int kE = Elem<T>::kVec;
  T d[kE], v[kE];
  conv_lds16<kSiteMask>(d, dst);
  conv_lds16<kSiteMask>(v, ysrc);
#pragma unroll
  for (int e = 0; e < kE; ++e) d[e] = conv_to_float(v[e]) > 0.0f ? d[e] : conv_zero<T>();
  conv_sts16<kSiteMask>(dst, d);
}

// Where the backward kernels' y tiles lie: STAGES - 1 slots of BM x pitch elements after the STAGES stages
// (conv.h conv_smem_bytes); tile kt uses slot kt % (STAGES - 1), freed by its mask pass before the __syncthreads
// after which tile kt + STAGES - 1 is filled into it.
template <typename T, typename TileT>
struct YSlots {
  static constexpr int kPitch = TileT::BK + Elem<T>::kVec;
  static constexpr int kStageElems = (TileT::BM + TileT::BN) * kPitch;
  static constexpr int kSlotElems = TileT::BM * kPitch;
  static_assert(TileT::STAGES >= 2, "a y slot per tile in flight");
  __device__ __forceinline__ static T* slot(T* smem, int kt) {
    return smem + TileT::STAGES * kStageElems + (kt % (TileT::STAGES - 1)) * kSlotElems;
  }
};

// ---- the dgrad kernel: dx = (dy * (y > 0)) (*) w^T ------------------------------------------------------
//
//   dx[q, c] = sum_k G[q, k] * Wt[c, k],  q = (n, ih, iw) in [0, N*H*W), c in [0, Cg) of group g,
//   k = (kh*KW + kw)*Og + o,  G[q, k] = g[n, oh, ow, g*Og + o] with oh = (ih + PH - kh) / SH, ow likewise,
//   when both divide exactly and are in range (else 0), g = dy where y > 0 (the ReLU mask, applied in shared
//   memory, or as dy is loaded on the element path; y is the saved output), Wt[c, k] = w[g*Og + o, c, kh, kw] = wt_mem[(g*Cg + c)*wt_row_stride + k]
//   (the weight transposed once by the caller: rows (group, c), k contiguous).
// dy and y are channels_last (N, OH, OW, Cout) contiguous; dx any strides.

struct DgradArgs : ConvGeometry {
  const void* dy;
  const void* y;
  const void* w;  // the transposed weight (rows g*Cg + c)
  void* dx;
  int64_t M;      // N * H * W
  int K;          // KH * KW * Og
  int64_t w_row_stride;
  int64_t dx_sn, dx_sc, dx_sh, dx_sw;
  bool vec;       // 16-byte cp.async of dy and y, masked in shared memory (Og, Cout multiples of 16 bytes of
                  // channels, aligned bases)
  bool w_vec, dx_pair;
};

template <typename T, typename TileT, bool VEC>
struct DgradLoader {
  static constexpr int kE = VEC ? Elem<T>::kVec : 1;  // channels per load
  static constexpr int kChunksPerRow = TileT::BK / kE;
  static constexpr int kRowsPerPass = TileT::kThreads / kChunksPerRow;
  static constexpr int kPasses = TileT::BM / kRowsPerPass;
  static_assert(TileT::kThreads % kChunksPerRow == 0 && TileT::BM % kRowsPerPass == 0, "dgrad A split");
  int64_t nb[kPasses];  // n * OH
  int ihp[kPasses], iwp[kPasses];  // ih + PH, iw + PW
  bool valid[kPasses];
  int chunk;

  __device__ __forceinline__ void init(const DgradArgs& a, int64_t m0, int tid) {
    chunk = tid % kChunksPerRow;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int64_t q = m0 + chunk_row<kChunksPerRow>(tid) + i * kRowsPerPass;
      valid[i] = q < a.M;
      const int64_t qq = valid[i] ? q : 0;
      iwp[i] = static_cast<int>(qq % a.W) + a.PW;
      const int64_t t = qq / a.W;
      ihp[i] = static_cast<int>(t % a.H) + a.PH;
      nb[i] = (t / a.H) * a.OH;
    }
  }

  // VEC: dy and y by cp.async (y into Ys, the tile's y slot), masked later by mask(); else masked element loads.
  __device__ __forceinline__ void load(const DgradArgs& a, const T* __restrict__ dy, const T* __restrict__ y,
                                       int group, int k0, T* As, T* Ys, int pitch, int tid) {
    const int k = k0 + chunk * kE;
    const bool k_ok = k < a.K;
    const int kk = k_ok ? k : 0;
    const int tap = kk / a.Og, o = kk - tap * a.Og;
    const int kh = tap / a.KW, kw = tap - kh * a.KW;
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int r = chunk_row<kChunksPerRow>(tid) + i * kRowsPerPass;
      const int ohs = ihp[i] - kh, ows = iwp[i] - kw;
      const int oh = ohs / a.SH, ow = ows / a.SW;
      const bool ok = k_ok && valid[i] && ohs >= 0 && ows >= 0 && oh * a.SH == ohs && ow * a.SW == ows &&
                      oh < a.OH && ow < a.OW;
      const int64_t off = ok ? ((nb[i] + oh) * a.OW + ow) * a.Cout + int64_t(group) * a.Og + o : 0;
      if constexpr (VEC)
        copy_dy_and_y<T>(dy, y, off, ok, As + r * pitch + chunk * kE, Ys + r * pitch + chunk * kE);
      else
        load_masked_dy<T, VEC>(dy, y, off, ok, As + r * pitch + chunk * kE);
    }
  }

  // The mask pass over this thread's chunks of a landed tile (VEC).
  __device__ __forceinline__ void mask(T* As, const T* Ys, int pitch, int tid) const {
#pragma unroll
    for (int i = 0; i < kPasses; ++i) {
      const int r = chunk_row<kChunksPerRow>(tid) + i * kRowsPerPass;
      mask_dy_chunk<T>(As + r * pitch + chunk * kE, Ys + r * pitch + chunk * kE);
    }
  }
};

template <typename T, MathKind MK, typename TileT, bool VEC>
__global__ void __launch_bounds__(TileT::kThreads)
    conv2d_relu_dgrad_kernel(DgradArgs a) {
  extern __shared__ __align__(16) unsigned char conv_smem[];
  T* smem = reinterpret_cast<T*>(conv_smem);
  const BlockPlace<TileT> bp(a.Cg);
  const T* dy = static_cast<const T*>(a.dy);
  const T* y = static_cast<const T*>(a.y);
  const T* w = static_cast<const T*>(a.w);
  constexpr int kPitch = TileT::BK + Elem<T>::kVec;

  DgradLoader<T, TileT, VEC> loader;
  loader.init(a, bp.m0, bp.tid);
  auto fill = [&](T* As, T* Bs, int k0) {
    loader.load(a, dy, y, bp.group, k0, As, YSlots<T, TileT>::slot(smem, k0 / TileT::BK), kPitch, bp.tid);
    load_weights<T, TileT>(a, w, bp.row_first, bp.col_count, k0, Bs, kPitch, bp.tid);
  };
  auto mask = [&](T* As, int kt) {
    if constexpr (VEC) loader.mask(As, YSlots<T, TileT>::slot(smem, kt), kPitch, bp.tid);
  };
  auto landed = [](const T*) {};
  float acc[TileT::MT][TileT::NT][4];
  gemm_mainloop<T, MK, TileT>(smem, (a.K + TileT::BK - 1) / TileT::BK, bp.wm, bp.wn, bp.lane, fill, mask, landed,
                              acc);
  const EpilogueMap e{a.M, a.H, a.W, a.dx_sn, a.dx_sc, a.dx_sh, a.dx_sw, int64_t(bp.group) * a.Cg, a.Cg, a.dx_pair};
  store_tile<TileT>(acc, e, bp.m0, bp.col0, bp.wm, bp.wn, bp.lane, static_cast<T*>(a.dx),
                    static_cast<const T*>(nullptr), false);
}


// ---- the wgrad kernel: dw = (dy * (y > 0))^T (*) im2col(x), db = column sums of dy * (y > 0) -------------
//
//   dw[g*Og + o, k] = sum_p G[o, p] * X[k, p],  db[g*Og + o] = sum_p G[o, p]
//   G[o, p] = (y > 0 ? dy : 0)[p, g*Og + o] (the mask applied in shared memory: wgrad_mask), X[k, p] = A[p, k] of the forward
//   (im2col of x), p = (n, oh, ow) in [0, P = N*OH*OW), k = (kh*KW + kw)*Cg + c.
// The pixel reduction is split over grid axis z; split s sums pixels [s*p_per_split, (s+1)*p_per_split) in
// order and writes fp32 partial sums dw_part[s][Cout][K] and db_part[s][Cout]; the caller adds the splits
// in a fixed order (deterministic, no atomics).  db is summed by the blocks of the first k tile, in pixel
// order, from the A tiles in shared memory.  Both operands are stored k-major ([p][o] and [p][k], KMajor) as
// they lie in channels_last memory, and the fragments are transposed on their way out of shared memory
// (ldmatrix.trans); every access is conflict-free.  VEC (Og, Cout, Cg, C multiples of 16 bytes of channels,
// aligned bases): x, dy and y through 16-byte cp.async, zero-filled outside the image and past P (y into the
// tile's y slot), dy masked in shared memory by the mask pass (wgrad_mask).  Otherwise element loads, masked in
// registers.

struct WgradArgs : ConvGeometry {
  const void* dy;
  const void* y;
  const void* x;
  float* dw_part;
  float* db_part;
  int64_t P;            // N * OH * OW
  int K;                // KH * KW * Cg
  int m_tiles;          // tiles over Og
  int splits;           // grid axis z
  int64_t p_per_split;  // a multiple of BK
  bool vec, dw_pair;
};

template <typename T, typename TileT, bool VEC>
__device__ __forceinline__ void wgrad_fill(const WgradArgs& a, const T* __restrict__ dy, const T* __restrict__ y,
                                           const T* __restrict__ x, int group, int o0, int kcol0, int64_t p0,
                                           int64_t p_end, T* As, T* Bs, T* Ys, int tid) {
  constexpr int kE = VEC ? Elem<T>::kVec : 1;
  constexpr int kPA = KMajor<T, TileT>::kPitchA, kPB = KMajor<T, TileT>::kPitchB;
  // A[p][o]: kE consecutive output channels of one pixel per load (contiguous in channels_last dy), stored as
  // they lie; consecutive threads take consecutive chunks of a row.
  constexpr int kAChunksPerP = TileT::BM / kE;
  for (int q = tid; q < kAChunksPerP * TileT::BK; q += TileT::kThreads) {
    const int pl = q / kAChunksPerP, oc = (q - pl * kAChunksPerP) * kE;
    const int64_t p = p0 + pl;
    const int o = o0 + oc;
    const bool ok = p < p_end && o < a.Og;
    const int64_t off = p * a.Cout + int64_t(group) * a.Og + o;
    if constexpr (VEC)
      copy_dy_and_y<T>(dy, y, off, ok, As + pl * kPA + oc, Ys + pl * kPA + oc);
    else
      load_masked_dy<T, VEC>(dy, y, off, ok, As + pl * kPA + oc);
  }
  // B[p][k]: kE consecutive k (channels of one tap) of one pixel per load: a cp.async (zero-filled outside
  // the image and past K) or an element load.
  constexpr int kBChunksPerP = TileT::BN / kE;
  for (int q = tid; q < kBChunksPerP * TileT::BK; q += TileT::kThreads) {
    const int pl = q / kBChunksPerP, kc = (q - pl * kBChunksPerP) * kE;
    const int64_t p = p0 + pl;
    const int k = kcol0 + kc;
    bool ok = p < p_end && k < a.K;
    int64_t off = 0;
    if (ok) {
      const int ow = static_cast<int>(p % a.OW);
      const int64_t t = p / a.OW;
      const int oh = static_cast<int>(t % a.OH);
      const int64_t n = t / a.OH;
      const int tap = k / a.Cg, c = k - tap * a.Cg;
      const int kh = tap / a.KW, kw = tap - kh * a.KW;
      const int ih = oh * a.SH - a.PH + kh, iw = ow * a.SW - a.PW + kw;
      ok = ih >= 0 && ih < a.H && iw >= 0 && iw < a.W;
      off = ((n * a.H + ih) * a.W + iw) * a.C + int64_t(group) * a.Cg + c;
    }
    if constexpr (VEC) {
      conv_ptx_cp_async16<kSiteBFill>(Bs + pl * kPB + kc, ok ? x + off : x, ok ? 16 : 0);
    } else {
      conv_sts<kSiteBFill>(Bs + pl * kPB + kc, ok ? x[off] : conv_zero<T>());
    }
  }
}

// The wgrad's mask pass (VEC): this thread's chunks of A (as wgrad_fill assigns them), y from the same place of
// the tile's y slot (k-major like A; it fits the slot: BK * (BM + 8) <= BM * (BK + kVec)).
template <typename T, typename TileT>
__device__ __forceinline__ void wgrad_mask(T* As, const T* Ys, int tid) {
  constexpr int kE = Elem<T>::kVec, kPA = KMajor<T, TileT>::kPitchA;
  static_assert(TileT::BK * kPA <= YSlots<T, TileT>::kSlotElems, "the k-major A tile fits a y slot");
  constexpr int kAChunksPerP = TileT::BM / kE;
  for (int q = tid; q < kAChunksPerP * TileT::BK; q += TileT::kThreads) {
    const int pl = q / kAChunksPerP, oc = (q - pl * kAChunksPerP) * kE;
    mask_dy_chunk<T>(As + pl * kPA + oc, Ys + pl * kPA + oc);
  }
}

template <typename T, MathKind MK, typename TileT, bool VEC>
__global__ void __launch_bounds__(TileT::kThreads)
    conv2d_relu_wgrad_kernel(WgradArgs a) {
  extern __shared__ __align__(16) unsigned char conv_smem[];
  T* smem = reinterpret_cast<T*>(conv_smem);
  const int tid = threadIdx.x;
  const int lane = tid & 31, warp = tid >> 5;
  const int wm = warp / TileT::WARPS_N, wn = warp % TileT::WARPS_N;
  const int m_tile = static_cast<int>(blockIdx.x % a.m_tiles), k_tile = static_cast<int>(blockIdx.x / a.m_tiles);
  const int group = blockIdx.y;
  const int64_t split = blockIdx.z;
  const int o0 = m_tile * TileT::BM, kcol0 = k_tile * TileT::BN;
  const int64_t p_begin = split * a.p_per_split;
  const int64_t p_end = p_begin + a.p_per_split < a.P ? p_begin + a.p_per_split : a.P;
  const int k_tiles = p_end > p_begin ? static_cast<int>((p_end - p_begin + TileT::BK - 1) / TileT::BK) : 0;
  const T* dy = static_cast<const T*>(a.dy);
  const T* y = static_cast<const T*>(a.y);
  const T* x = static_cast<const T*>(a.x);
  constexpr int kPA = KMajor<T, TileT>::kPitchA;

  auto fill = [&](T* As, T* Bs, int kk) {
    wgrad_fill<T, TileT, VEC>(a, dy, y, x, group, o0, kcol0, p_begin + kk, p_end, As, Bs,
                              YSlots<T, TileT>::slot(smem, kk / TileT::BK), tid);
  };
  auto mask = [&](T* As, int kt) {
    if constexpr (VEC) wgrad_mask<T, TileT>(As, YSlots<T, TileT>::slot(smem, kt), tid);
  };
  float db = 0.0f;  // output channel o0 + tid of the first k tile's blocks, summed in pixel order
  const bool sums_bias = k_tile == 0 && tid < TileT::BM;
  auto landed = [&](const T* As) {
    if (sums_bias)
      for (int j = 0; j < TileT::BK; ++j) db += conv_to_float(conv_lds<kSiteBiasSum>(As + j * kPA + tid));
  };
  float acc[TileT::MT][TileT::NT][4];
  gemm_mainloop<T, MK, TileT, true>(smem, k_tiles, wm, wn, lane, fill, mask, landed, acc);
  float* dw = a.dw_part + (split * a.Cout + int64_t(group) * a.Og) * a.K;
  const EpilogueMap e{int64_t(a.Og), 1, 1, int64_t(a.K), 1, 0, 0, 0, a.K, a.dw_pair};
  store_tile<TileT>(acc, e, o0, kcol0, wm, wn, lane, dw, static_cast<const float*>(nullptr), false);
  if (sums_bias && o0 + tid < a.Og) a.db_part[split * a.Cout + int64_t(group) * a.Og + o0 + tid] = db;
}

// ---- host side: kernel arguments, grids and the choice of compiled kernel -------------------------------

template <int I>
using TileOf = Tile<kConvTiles[I].bm, kConvTiles[I].bn, kConvTiles[I].bk, kConvTiles[I].warps_m,
                    kConvTiles[I].warps_n, kConvTiles[I].stages>;

// The kernels' views of a checked problem under a plan (plan.tile is the tile that will run), field by field
// in the order the structs declare them.
inline ConvArgs make_conv_args(const ConvProblem& p, const ConvPlan& plan, const void* x, const void* w,
                               const void* bias, void* y) {
  const ConvGeometry g = conv_geometry(p);
  return ConvArgs{x, w, bias, y, p.N * p.OH * p.OW, g.H, g.W, g.C, g.OH, g.OW, g.Cg, g.Og, int(p.KH * p.KW * g.Cg),
                  g.KW, g.SH, g.SW, g.PH, g.PW, g.Cout, p.w_row_stride,
                  p.y_sn, p.y_sc, p.y_sh, p.y_sw, plan.w_vec, plan.y_pair};
}

inline DgradArgs make_dgrad_args(const ConvDgradProblem& d, const ConvDgradPlan& plan, const void* dy, const void* y,
                                 const void* wt, void* dx) {
  const ConvProblem& p = d.p;
  const ConvGeometry g = conv_geometry(p);
  return DgradArgs{g, dy, y, wt, dx, p.N * p.H * p.W, int(p.KH * p.KW * g.Og), p.w_row_stride, d.dx_sn, d.dx_sc, d.dx_sh, d.dx_sw,
                   plan.vec, plan.w_vec, plan.dx_pair};
}

inline WgradArgs make_wgrad_args(const ConvWgradProblem& w, const ConvWgradPlan& plan, const void* dy, const void* y,
                                 const void* x, float* dw_part, float* db_part) {
  const ConvProblem& p = w.p;
  const ConvGeometry g = conv_geometry(p);
  const ConvTileShape& s = kConvTiles[plan.tile];
  const int64_t P = p.N * p.OH * p.OW;
  const int64_t p_per_split = cdiv64(cdiv64(P, w.splits), s.bk) * s.bk;  // a multiple of BK
  return WgradArgs{g, dy, y, x, dw_part, db_part, P, int(p.KH * p.KW * g.Cg), int(cdiv64(g.Og, s.bm)),
                   int(w.splits), p_per_split, plan.vec, plan.dw_pair};
}

// The grid of a launch (conv.h: conv_gemm_grid, conv_wgrad_gemm_grid; the launcher checks it against CUDA's
// limits).
template <typename TileT>
constexpr ConvTileShape tile_shape() {
  return ConvTileShape{TileT::BM, TileT::BN, TileT::BK, TileT::WARPS_M, TileT::WARPS_N, TileT::STAGES};
}
template <typename TileT>
ConvGridSize conv_grid(const ConvArgs& a) {
  return conv_gemm_grid(a.M, a.Og, a.Cout / a.Og, tile_shape<TileT>());
}
template <typename TileT>
ConvGridSize conv_grid(const DgradArgs& a) {
  return conv_gemm_grid(a.M, a.Cg, a.C / a.Cg, tile_shape<TileT>());
}
template <typename TileT>
ConvGridSize conv_grid(const WgradArgs& a) {
  return conv_wgrad_gemm_grid(a.Og, a.K, a.Cout / a.Og, a.splits, tile_shape<TileT>());
}

// Which compiled kernel runs a plan: dispatch_conv(plan, dtype, f) calls, for the plan's problem,
//   forward  f.template run<T, MathKind, TileT, Loader>():  bf16 / fp16 / TF32 on any tile with the cp.async16
//            or row-span loader; the scalar loader and exact fp32 on tile 2;
//   dgrad    f.template run_dgrad<T, MathKind, TileT, VEC>(): 16-byte dy loads on any tile, element loads and
//            exact fp32 on tile 2;
//   wgrad    f.template run_wgrad<T, MathKind, TileT, VEC>(): vector loads on tiles 0 and 2, element loads and
//            exact fp32 on tile 2.
// TF16 / TBF16 are the 16-bit storage types of the includer (CUDA's __half / __nv_bfloat16, or the emulator's).

template <typename T, MathKind MK, typename TileT, typename F>
int dispatch_loader(const ConvPlan& plan, F& f) {
  switch (plan.loader) {
    case ConvLoader::kCpAsync16: return f.template run<T, MK, TileT, ConvLoader::kCpAsync16>();
    case ConvLoader::kRowSpan: return f.template run<T, MK, TileT, ConvLoader::kRowSpan>();
    default: return f.template run<T, MK, TileOf<2>, ConvLoader::kScalar>();
  }
}

template <typename T, MathKind MK, typename F>
int dispatch_tile(const ConvPlan& plan, F& f) {
  if constexpr (MK == MathKind::kFmaF32) {
    return dispatch_loader<T, MK, TileOf<2>>(plan, f);
  } else {
    switch (plan.tile) {
      case 0: return dispatch_loader<T, MK, TileOf<0>>(plan, f);
      case 1: return dispatch_loader<T, MK, TileOf<1>>(plan, f);
      default: return dispatch_loader<T, MK, TileOf<2>>(plan, f);
    }
  }
}

template <typename T, MathKind MK, typename F>
int dispatch_tile(const ConvDgradPlan& plan, F& f) {
  if (!plan.vec) return f.template run_dgrad<T, MK, TileOf<2>, false>();
  if constexpr (MK == MathKind::kFmaF32) {
    return f.template run_dgrad<T, MK, TileOf<2>, true>();
  } else {
    switch (plan.tile) {
      case 0: return f.template run_dgrad<T, MK, TileOf<0>, true>();
      case 1: return f.template run_dgrad<T, MK, TileOf<1>, true>();
      default: return f.template run_dgrad<T, MK, TileOf<2>, true>();
    }
  }
}

template <typename T, MathKind MK, typename F>
int dispatch_tile(const ConvWgradPlan& plan, F& f) {
  if (!plan.vec) return f.template run_wgrad<T, MK, TileOf<2>, false>();
  if constexpr (MK == MathKind::kFmaF32) {
    return f.template run_wgrad<T, MK, TileOf<2>, true>();
  } else {
    if (plan.tile == 0) return f.template run_wgrad<T, MK, TileOf<0>, true>();
    return f.template run_wgrad<T, MK, TileOf<2>, true>();
  }
}

template <typename TF16, typename TBF16, typename Plan, typename F>
int dispatch_conv(const Plan& plan, ConvDtype dtype, F& f) {
  if (dtype == ConvDtype::kBFloat16) return dispatch_tile<TBF16, MathKind::kMmaBF16>(plan, f);
  if (dtype == ConvDtype::kFloat16) return dispatch_tile<TF16, MathKind::kMmaF16>(plan, f);
  if (plan.fma) return dispatch_tile<float, MathKind::kFmaF32>(plan, f);
  return dispatch_tile<float, MathKind::kMmaTF32>(plan, f);
}

}  // namespace conv_detail
}  // namespace ak
