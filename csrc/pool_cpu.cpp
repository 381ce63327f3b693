// CPU kernels of 2-D max pooling and of the fused ReLU -> LRN -> max-pool block (math: pool_math.h).
// at::parallel_for over rows of work; values are read as F = float (float, half, bfloat16) or double, and
// the max-pool forward also takes the integer dtypes torch pools on the CPU (compared as themselves).
//
//   max pool forward, either layout: an item is one output row ((n, c, oh) NCHW, (n, oh) channels_last).
//     Each input row is reduced once to its row maxima (plane_row_maxima: strided vector loads along ow;
//     position_row_maxima: vectors along c), kept in a ring of kH rows, and an output row is the scan of
//     its window's row maxima (combine_rows) -- pool_argmax's result, see "Forward: row maxima" below.
//     NCHW planes of short rows with no clipped window (AlexNet's) go whole: an item is a plane (n, c), and
//     the same two scans run over the flattened plane in long vector loops (MaxPoolForwardNchwPlanes).
//   max pool, NCHW backward: an item is one plane (n, c); pool_gather's sums formed as an ordered
//     scatter (see MaxPoolBackwardNchw), the same terms in the same order.
//   max pool, channels_last: an item is (n, oh) / (n, ih); a position's C channels are contiguous, so
//     the scan and the gather run over all channels at once (vectorised along c) with the same rules
//     (pool_takes, pool_route), window elements in the same order.
//   fused, either layout: an item is (n, oh) (forward) or (n, ih) (backward). The input rows it needs
//     are computed into channel-major [C][W] scratch rows (relu, squares, window sums, the LRN power:
//     loops along w that vectorise, in the order of lrn_cpu.cpp's, so that L equals lrn_forward's
//     output bit for bit when lrn_cpu.cpp also sums term by term, windows of up to 24 channels). Forward
//     reduces each L row to its row maxima per channel as the max-pool forward does and keeps them in the
//     ring; backward gathers with pool_gather.
//
// The forwards and the max-pool backwards take their scratch from a per-thread block (Scratch, cpu_target.h):
// no allocation per call.
// Like lrn_cpu.cpp, the item loops are compiled for baseline x86-64, AVX2 + FMA and AVX-512, and the
// widest copy the CPU runs is chosen at run time.

// Lets GCC if-convert float selects (the clamps of lrn_exp2_poly, the scan's updates) so that the
// element loops vectorise, as in lrn_cpu.cpp. Before every include so that all functions of this
// file agree on it (GCC will not inline across differing options).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <algorithm>
#include <type_traits>
#include <vector>

#include "cpu_target.h"
#include "pool.h"
#include "pool_math.h"

namespace ak {
namespace {

// Accumulation / comparison type: float for float / half / bfloat16, double for double; integers (max-pool
// forward only) compare as themselves.
template <typename T>
using AccOf = std::conditional_t<std::is_same_v<T, double> || std::is_integral_v<T>, T, float>;

// max_pool2d_forward's dtypes: the integer ones torch pools on the CPU, then AK_CPU_DISPATCH's.
#define AK_CPU_DISPATCH_MAX_POOL_FORWARD(DTYPE, NAME, ...)                                     \
  do {                                                                                        \
    switch (DTYPE) {                                                                          \
      AK_DISPATCH_CASE_(kByte, uint8_t, __VA_ARGS__)                                          \
      AK_DISPATCH_CASE_(kChar, int8_t, __VA_ARGS__)                                           \
      AK_DISPATCH_CASE_(kShort, int16_t, __VA_ARGS__)                                         \
      AK_DISPATCH_CASE_(kInt, int32_t, __VA_ARGS__)                                           \
      AK_DISPATCH_CASE_(kLong, int64_t, __VA_ARGS__)                                          \
      default: AK_CPU_DISPATCH(DTYPE, NAME, __VA_ARGS__);                                     \
    }                                                                                         \
  } while (0)

// pool_covering_outputs of every input column (the divisions hoisted out of the element loops).
std::vector<PoolRange> covering_columns(const PoolProblem& P) {
  std::vector<PoolRange> ranges(static_cast<size_t>(P.W));
  for (int64_t iw = 0; iw < P.W; ++iw) ranges[iw] = pool_covering_outputs(iw, P.p.kW, P.p.sW, P.p.pW, P.OW);
  return ranges;
}

// ----------------------------------------------------------------------------------------------
// Max pool
// ----------------------------------------------------------------------------------------------

// Outputs [first, end) along w whose windows lie inside [0, W) (no clipping of their columns).
struct ColumnRange {
  int64_t first, end;
};

ColumnRange interior_columns(const PoolProblem& P) {
  const int64_t first = std::min(pool_ceil_div(P.p.pW, P.p.sW), P.OW);
  const int64_t last_start = P.W - P.p.kW + P.p.pW;  // ow * sW <= last_start
  const int64_t end = last_start >= 0 ? std::min(last_start / P.p.sW + 1, P.OW) : 0;
  return ColumnRange{first, std::max(first, end)};
}

// Forward: row maxima, then a scan over the window's rows.
//
// pool_argmax scans a window row by row, and its update (pool_takes: strictly larger, or NaN) composes:
// the scan of a window equals the scan, in row order, of each row's own scan result (a row's first
// maximum is taken only when strictly larger than every earlier row's; a row's last NaN always is, so
// the first maximum and the last NaN still win). So each input row is reduced once along w to the row
// maxima of every output column (value, and column in the window), and an output row combines the kH
// row maxima of its window: both loops run over contiguous elements with no per-element index math.
// Consecutive output rows share input rows when sH < kH: a ring of kH slots keeps the row maxima.

// Row maxima of one contiguous row of W values (a plane's row, or a channel row of the fused block).
// kKW / kSW: the window width and stride as constants (0: read them from P), so that the interior loop
// becomes strided vector loads with the window's columns unrolled.
template <int kKW, int kSW, typename F>
AK_ALWAYS_INLINE void plane_row_maxima(const F* row, const PoolProblem& P, const ColumnRange& cols, F* best,
                                       int32_t* col) {
  const int kW = kKW != 0 ? kKW : P.p.kW;
  const int64_t sW = kSW != 0 ? kSW : P.p.sW;
  for (int64_t ow = 0; ow < P.OW; ++ow) {  // windows clipped along w: pool_argmax's scan of this row
    if (ow == cols.first) ow = cols.end;
    if (ow == P.OW) break;
    const PoolSpan w = pool_window(ow, P.p.kW, P.p.sW, P.p.pW, P.W);
    F b = pool_lowest<F>();
    int32_t c = static_cast<int32_t>(w.begin - w.start);
    for (int64_t iw = w.begin; iw < w.end; ++iw) {
      if (pool_takes(row[iw], b)) {
        b = row[iw];
        c = static_cast<int32_t>(iw - w.start);
      }
    }
    best[ow] = b;
    col[ow] = c;
  }
  // Interior: starting from the window's first element equals starting from pool_lowest and taking it.
  // Locals and ivdep: the library is built with -fno-strict-aliasing (Python's flags), under which GCC
  // would assume the stores may overwrite the bounds and the inputs.
  const int64_t count = cols.end - cols.first;
  if (count <= 0) return;
  const F* first = row + cols.first * sW - P.p.pW;
  F* best_out = best + cols.first;
  int32_t* col_out = col + cols.first;
#pragma GCC ivdep
  for (int64_t i = 0; i < count; ++i) {
    const F* w = first + i * sW;
    F b = w[0];
    int32_t c = 0;
    for (int kx = 1; kx < kW; ++kx) {
      const F v = w[kx];
      const bool take = pool_takes(v, b);
      b = take ? v : b;
      c = take ? kx : c;
    }
    best_out[i] = b;
    col_out[i] = c;
  }
}

template <typename F>
AK_ALWAYS_INLINE void plane_row_maxima_any(const F* row, const PoolProblem& P, const ColumnRange& cols, F* best,
                                           int32_t* col) {
  if (P.p.kW == 3 && P.p.sW == 2) return plane_row_maxima<3, 2>(row, P, cols, best, col);
  if (P.p.kW == 3 && P.p.sW == 1) return plane_row_maxima<3, 1>(row, P, cols, best, col);
  if (P.p.kW == 2 && P.p.sW == 2) return plane_row_maxima<2, 2>(row, P, cols, best, col);
  plane_row_maxima<0, 0>(row, P, cols, best, col);
}

// Row maxima of one channels_last row: W positions of C contiguous channels, vectorised along c. kKW: the
// window width as a constant (0: from P); a window of kKW columns is scanned with its columns in registers
// (one load of each input, one store of each maximum), a clipped one column by column through best / col.
template <int kKW, typename T, typename F>
AK_ALWAYS_INLINE void position_row_maxima(const T* row, const PoolProblem& P, F* best, int32_t* col) {
  const int64_t C = P.C;
  for (int64_t ow = 0; ow < P.OW; ++ow) {
    const PoolSpan w = pool_window(ow, P.p.kW, P.p.sW, P.p.pW, P.W);
    F* b = best + ow * C;
    int32_t* cs = col + ow * C;
    const T* first = row + w.begin * C;
    const int32_t first_col = static_cast<int32_t>(w.begin - w.start);
    if (kKW != 0 && w.end - w.begin == kKW) {
#pragma GCC ivdep
      for (int64_t c = 0; c < C; ++c) {
        F held = static_cast<F>(first[c]);
        int32_t held_col = first_col;
        for (int kx = 1; kx < kKW; ++kx) {
          const F v = static_cast<F>(first[kx * C + c]);
          const bool take = pool_takes(v, held);
          held = take ? v : held;
          held_col = take ? first_col + kx : held_col;
        }
        b[c] = held;
        cs[c] = held_col;
      }
      continue;
    }
#pragma GCC ivdep
    for (int64_t c = 0; c < C; ++c) {
      b[c] = static_cast<F>(first[c]);
      cs[c] = first_col;
    }
    for (int64_t iw = w.begin + 1; iw < w.end; ++iw) {
      const T* src = row + iw * C;
      const int32_t kx = static_cast<int32_t>(iw - w.start);
#pragma GCC ivdep
      for (int64_t c = 0; c < C; ++c) {
        const F v = static_cast<F>(src[c]);
        const F held = b[c];
        const int32_t held_col = cs[c];
        const bool take = pool_takes(v, held);
        b[c] = take ? v : held;
        cs[c] = take ? kx : held_col;
      }
    }
  }
}

template <typename T, typename F>
AK_ALWAYS_INLINE void position_row_maxima_any(const T* row, const PoolProblem& P, F* best, int32_t* col) {
  if (P.p.kW == 3) return position_row_maxima<3>(row, P, best, col);
  position_row_maxima<0>(row, P, best, col);
}

// count outputs of one output row from the row maxima of its window's rows: best_rows[r][at + i] /
// col_rows[r][at + i] of input row h.begin + r. Values into y, offsets (row in window * kW + column).
template <int kRows, typename T, typename F>
AK_ALWAYS_INLINE void combine_rows_n(const F* const* best_rows, const int32_t* const* col_rows, int64_t at,
                                     int rows, int32_t first_row, int kW, int64_t count, T* y, uint8_t* offsets,
                                     int32_t* held) {
  constexpr int kHeld = kRows != 0 ? kRows : 1;
  // Row pointers as locals: the uint8 stores may alias the pointer arrays (which would be reloaded).
  const F* b[kHeld];
  const int32_t* c[kHeld];
  for (int r = 0; r < kHeld; ++r) {
    b[r] = best_rows[r] + at;
    c[r] = col_rows[r] + at;
  }
#pragma GCC ivdep
  for (int64_t i = 0; i < count; ++i) {
    F best = b[0][i];
    int32_t o = first_row + c[0][i];
    for (int r = 1; r < kRows; ++r) {
      const F v = b[r][i];
      const int32_t candidate = first_row + r * kW + c[r][i];  // loaded unconditionally: the select vectorises
      const bool take = pool_takes(v, best);
      best = take ? v : best;
      o = take ? candidate : o;
    }
    if constexpr (kRows == 0) {  // any number of rows
      for (int r = 1; r < rows; ++r) {
        const F v = best_rows[r][at + i];
        const int32_t candidate = first_row + r * kW + col_rows[r][at + i];
        const bool take = pool_takes(v, best);
        best = take ? v : best;
        o = take ? candidate : o;
      }
    }
    y[i] = static_cast<T>(best);
    held[i] = o;
  }
  // Narrowed in a loop of its own: with the uint8 stores in the loop above, its vectors would hold 64
  // outputs (more than a 27-wide row has), and it would run scalar.
#pragma GCC ivdep
  for (int64_t i = 0; i < count; ++i) offsets[i] = static_cast<uint8_t>(held[i]);
}

template <typename T, typename F>
AK_ALWAYS_INLINE void combine_rows(const F* const* best_rows, const int32_t* const* col_rows, int64_t at,
                                   const PoolSpan& h, int kW, int64_t count, T* y, uint8_t* offsets,
                                   int32_t* held) {
  const int rows = static_cast<int>(h.end - h.begin);
  const int32_t first_row = static_cast<int32_t>(h.begin - h.start) * kW;
  switch (rows) {
    case 1: return combine_rows_n<1>(best_rows, col_rows, at, rows, first_row, kW, count, y, offsets, held);
    case 2: return combine_rows_n<2>(best_rows, col_rows, at, rows, first_row, kW, count, y, offsets, held);
    case 3: return combine_rows_n<3>(best_rows, col_rows, at, rows, first_row, kW, count, y, offsets, held);
    default: return combine_rows_n<0>(best_rows, col_rows, at, rows, first_row, kW, count, y, offsets, held);
  }
}

// The row maxima of the input rows that a chunk of consecutive output rows reads: row ih of group g (a
// plane, or a batch index) in slot ih % kH, `width` elements per slot. A window's kH consecutive rows
// have distinct slots, so filling one never evicts another.
template <typename F>
struct RowMaximaRing {
  int kH;
  int64_t width;
  F* best;            // [kH][width]
  int32_t* col;       // [kH][width]
  int64_t* holds;     // [kH]: g * H + ih, or -1
  const F** best_rows;       // [kH]: the current window's rows
  const int32_t** col_rows;  // [kH]
  int32_t* held;             // [width]: an output row's offsets before they are narrowed (combine_rows)

  static int64_t scratch_bytes(int kH, int64_t width) {
    return Scratch::bytes<F>(kH * width) + Scratch::bytes<int32_t>(kH * width) + Scratch::bytes<int64_t>(kH) +
           Scratch::bytes<const F*>(kH) + Scratch::bytes<const int32_t*>(kH) + Scratch::bytes<int32_t>(width);
  }

  RowMaximaRing(Scratch& s, int kH_, int64_t width_)
      : kH(kH_), width(width_), best(s.take<F>(kH_ * width_)), col(s.take<int32_t>(kH_ * width_)),
        holds(s.take<int64_t>(kH_)), best_rows(s.take<const F*>(kH_)), col_rows(s.take<const int32_t*>(kH_)),
        held(s.take<int32_t>(width_)) {
    std::fill(holds, holds + kH, int64_t(-1));
  }

  // Points best_rows / col_rows[ih - h.begin] at input row ih of window h of group g; true when the row
  // is not in the ring yet and the caller must compute it into best_rows / col_rows[ih - h.begin].
  // (A query rather than a callback: a lambda called from here was compiled out of line, for the baseline
  // ISA, inside the AVX-512 copies.)
  AK_ALWAYS_INLINE bool claim(int64_t g, int64_t H, const PoolSpan& h, int64_t ih) {
    const int64_t slot = ih % kH;
    best_rows[ih - h.begin] = best + slot * width;
    col_rows[ih - h.begin] = col + slot * width;
    if (holds[slot] == g * H + ih) return false;
    holds[slot] = g * H + ih;
    return true;
  }

  // The writable row behind best_rows / col_rows[i].
  AK_ALWAYS_INLINE F* best_row(int64_t i) const { return best + (best_rows[i] - best); }
  AK_ALWAYS_INLINE int32_t* col_row(int64_t i) const { return col + (col_rows[i] - col); }
};

// NCHW forward; item = output row (plane, oh).
template <typename T>
struct MaxPoolForwardNchw {
  const T* x;
  T* y;
  uint8_t* offsets;
  PoolProblem P;
  ColumnRange cols;  // interior_columns(P)

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    constexpr bool kConvert = !std::is_same_v<T, F>;  // half / bfloat16: a row converted to float first
    const int64_t W = P.W, OW = P.OW;
    Scratch s(RowMaximaRing<F>::scratch_bytes(P.p.kH, OW) + Scratch::bytes<F>(kConvert ? W : 0));
    RowMaximaRing<F> ring(s, P.p.kH, OW);
    F* converted = s.take<F>(kConvert ? W : 0);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t plane = item / P.OH;  // n * C + c
      const PoolSpan h = pool_window(item % P.OH, P.p.kH, P.p.sH, P.p.pH, P.H);
      for (int64_t ih = h.begin; ih < h.end; ++ih) {
        if (!ring.claim(plane, P.H, h, ih)) continue;
        F* best = ring.best_row(ih - h.begin);
        int32_t* col = ring.col_row(ih - h.begin);
        const T* src = x + plane * P.in.c + ih * P.in.h;
        if constexpr (kConvert) {
          for (int64_t iw = 0; iw < W; ++iw) converted[iw] = static_cast<F>(src[iw]);
          plane_row_maxima_any(static_cast<const F*>(converted), P, cols, best, col);
        } else {
          plane_row_maxima_any(src, P, cols, best, col);
        }
      }
      combine_rows(ring.best_rows, ring.col_rows, 0, h, P.p.kW, OW, y + item * OW, offsets + item * OW,
                   ring.held);
    }
  }
};

// NCHW forward of short rows, whole planes at once; item = plane (n, c). Used when no window is clipped (no
// padding, every window inside the plane) and the rows are short: a 27-wide output row leaves most of a 16-lane
// vector loop to its remainder, and a row's fixed costs are paid per 27 outputs. Here the loops run over the
// flattened plane instead, ignoring row boundaries:
//   row maxima at every flattened position i (the kW elements i .. i + kW - 1, pool_takes in column order),
//   window maxima at the positions k * sW (the kH row maxima i, i + W, ... in row order: combine_rows' rule),
//   and output row oh is the OW windows from its first window's start (oh * sH) * W.
// A window whose start is an output start never crosses a row end, so the positions that straddle rows are
// computed and never read. Same scans in the same order as MaxPoolForwardNchw: identical values and offsets.
// kKH / kKW / kSW: the window height, width and stride as constants (0: from P).
template <int kKH, int kKW, int kSW, typename T>
AK_ALWAYS_INLINE void max_pool_plane_forward(const T* src, const PoolProblem& P, AccOf<T>* converted,
                                             AccOf<T>* row_best, int32_t* row_col, AccOf<T>* win_best,
                                             int32_t* win_off, T* y, uint8_t* offsets) {
  using F = AccOf<T>;
  const int kW = kKW != 0 ? kKW : P.p.kW;
  const int64_t sW = kSW != 0 ? kSW : P.p.sW;
  const int kH = kKH != 0 ? kKH : P.p.kH;
  const int64_t W = P.W, HW = P.H * P.W;
  const F* plane;
  if constexpr (!std::is_same_v<T, F>) {  // half / bfloat16: the plane converted to float once
    for (int64_t i = 0; i < HW; ++i) converted[i] = static_cast<F>(src[i]);
    plane = converted;
  } else {
    plane = src;
  }
  const int64_t row_positions = HW - (kW - 1);
#pragma GCC ivdep
  for (int64_t i = 0; i < row_positions; ++i) {
    F b = plane[i];
    int32_t c = 0;
    for (int kx = 1; kx < kW; ++kx) {
      const F v = plane[i + kx];
      const bool take = pool_takes(v, b);
      b = take ? v : b;
      c = take ? kx : c;
    }
    row_best[i] = b;
    row_col[i] = c;
  }
  // Window maxima at the positions that are multiples of sW only: every output's window starts at one
  // ((oh * sH * W + ow * sW), sW dividing sH * W: max_pool_planes_apply), so window k = position k * sW, and an
  // output row is the contiguous run of OW windows from oh * sH * W / sW.
  const int64_t windows = (row_positions - (kH - 1) * W + sW - 1) / sW;
#pragma GCC ivdep
  for (int64_t k = 0; k < windows; ++k) {
    const int64_t i = k * sW;
    F b = row_best[i];
    int32_t o = row_col[i];
    for (int r = 1; r < kH; ++r) {
      const F v = row_best[i + r * W];
      const int32_t candidate = r * kW + row_col[i + r * W];
      const bool take = pool_takes(v, b);
      b = take ? v : b;
      o = take ? candidate : o;
    }
    win_best[k] = b;
    win_off[k] = o;
  }
  const int64_t OW = P.OW, row_step = P.p.sH * W / sW;
  for (int64_t oh = 0; oh < P.OH; ++oh) {
    const F* wb = win_best + oh * row_step;
    const int32_t* wo = win_off + oh * row_step;
    T* yr = y + oh * OW;
    uint8_t* orow = offsets + oh * OW;
#pragma GCC ivdep
    for (int64_t ow = 0; ow < OW; ++ow) yr[ow] = static_cast<T>(wb[ow]);
#pragma GCC ivdep
    for (int64_t ow = 0; ow < OW; ++ow) orow[ow] = static_cast<uint8_t>(wo[ow]);
  }
}

// Whether MaxPoolForwardNchwPlanes applies: no window clipped, every window start a multiple of sW in the
// flattened plane, short rows, a plane's scratch small.
inline bool max_pool_planes_apply(const PoolProblem& P) {
  return P.p.pH == 0 && P.p.pW == 0 && (P.OH - 1) * P.p.sH + P.p.kH <= P.H &&
         (P.OW - 1) * P.p.sW + P.p.kW <= P.W && (P.p.sH * P.W) % P.p.sW == 0 && P.OW < 64 &&
         P.H * P.W <= (int64_t(1) << 16);
}

template <typename T>
struct MaxPoolForwardNchwPlanes {
  const T* x;
  T* y;
  uint8_t* offsets;
  PoolProblem P;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    constexpr bool kConvert = !std::is_same_v<T, F>;
    const int64_t HW = P.H * P.W, out_plane = P.OH * P.OW;
    Scratch s(Scratch::bytes<F>(kConvert ? HW : 0) + 2 * Scratch::bytes<F>(HW) + 2 * Scratch::bytes<int32_t>(HW));
    F* converted = s.take<F>(kConvert ? HW : 0);
    F* row_best = s.take<F>(HW);
    int32_t* row_col = s.take<int32_t>(HW);
    F* win_best = s.take<F>(HW);
    int32_t* win_off = s.take<int32_t>(HW);
    for (int64_t plane = begin; plane < end; ++plane) {
      const T* src = x + plane * HW;
      T* yp = y + plane * out_plane;
      uint8_t* op = offsets + plane * out_plane;
      if (P.p.kH == 3 && P.p.kW == 3 && P.p.sW == 2) {  // AlexNet's pools
        max_pool_plane_forward<3, 3, 2>(src, P, converted, row_best, row_col, win_best, win_off, yp, op);
      } else {
        max_pool_plane_forward<0, 0, 0>(src, P, converted, row_best, row_col, win_best, win_off, yp, op);
      }
    }
  }
};

// channels_last forward; item = output row (n, oh): rows of OW * C contiguous elements.
template <typename T>
struct MaxPoolForwardNhwc {
  const T* x;
  T* y;
  uint8_t* offsets;
  PoolProblem P;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t width = P.OW * P.C;
    Scratch s(RowMaximaRing<F>::scratch_bytes(P.p.kH, width));
    RowMaximaRing<F> ring(s, P.p.kH, width);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / P.OH;
      const int64_t oh = item % P.OH;
      const PoolSpan h = pool_window(oh, P.p.kH, P.p.sH, P.p.pH, P.H);
      for (int64_t ih = h.begin; ih < h.end; ++ih) {
        if (!ring.claim(n, P.H, h, ih)) continue;
        position_row_maxima_any(x + n * P.in.n + ih * P.in.h, P, ring.best_row(ih - h.begin),
                                ring.col_row(ih - h.begin));
      }
      const int64_t o = n * P.out.n + oh * P.out.h;
      combine_rows(ring.best_rows, ring.col_rows, 0, h, P.p.kW, width, y + o, offsets + o, ring.held);
    }
  }
};

// Window offset -> (row, column) in the window; kNotInWindow for offsets >= kH * kW.
struct OffsetTable {
  // ih = hstart + row then lies outside [0, H) for any window start (|hstart| < 2^33). An int16 -32768
  // did not: from hstart >= 32768 on (planes of more than 32768 rows and columns) such an offset routed
  // its gradient to an element of the plane.
  static constexpr int64_t kNotInWindow = -(int64_t(1) << 61);
  int64_t row[256], col[256];
};

OffsetTable make_offset_table(const PoolParams& p) {
  OffsetTable t;
  for (int off = 0; off < 256; ++off) {
    const bool in_window = off < p.kH * p.kW;
    t.row[off] = in_window ? static_cast<int64_t>(off / p.kW) : OffsetTable::kNotInWindow;
    t.col[off] = in_window ? static_cast<int64_t>(off % p.kW) : OffsetTable::kNotInWindow;
  }
  return t;
}

// NCHW backward; item = plane (n, c). pool_gather's sums, formed as a scatter: the outputs, oh
// ascending then ow ascending, add dy to the input their offset names, so each dx element receives
// exactly its routed terms in pool_gather's order, starting from 0 (the same sums, bit for bit,
// without searching the covering windows of every input). Offsets naming no in-bounds input of
// their window (padding, >= kH*kW) route nowhere, as in pool_gather.
template <typename T>
struct MaxPoolBackwardNchw {
  const T* dy;
  const uint8_t* offsets;
  T* dx;
  PoolProblem P;
  const OffsetTable* table;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    constexpr bool kConvert = !std::is_same_v<T, F>;  // half / bfloat16: summed in a float plane
    const int64_t H = P.H, W = P.W, OW = P.OW, in_plane = H * W, out_plane = P.OH * OW;
    Scratch s(Scratch::bytes<F>(kConvert ? in_plane : 0));
    F* converted = s.take<F>(kConvert ? in_plane : 0);
    for (int64_t plane = begin; plane < end; ++plane) {
      F* acc;
      if constexpr (kConvert) {
        acc = converted;
      } else {
        acc = dx + plane * in_plane;
      }
      std::fill(acc, acc + in_plane, F(0));
      const T* dy_plane = dy + plane * out_plane;
      const uint8_t* offsets_plane = offsets + plane * out_plane;
      for (int64_t oh = 0; oh < P.OH; ++oh) {
        const int64_t hstart = oh * P.p.sH - P.p.pH;
        for (int64_t ow = 0; ow < OW; ++ow) {
          const int off = offsets_plane[oh * OW + ow];
          const int64_t ih = hstart + table->row[off];
          const int64_t iw = ow * P.p.sW - P.p.pW + table->col[off];
          if (ih >= 0 && ih < H && iw >= 0 && iw < W) acc[ih * W + iw] += static_cast<F>(dy_plane[oh * OW + ow]);
        }
      }
      if constexpr (kConvert) {
        T* dst = dx + plane * in_plane;
        for (int64_t i = 0; i < in_plane; ++i) dst[i] = static_cast<T>(acc[i]);
      }
    }
  }
};

// channels_last backward; item = input row (n, ih). Per input position, the covering outputs in
// pool_gather's order, each one a contiguous run of C channels.
template <typename T>
struct MaxPoolBackwardNhwc {
  const T* dy;
  const uint8_t* offsets;
  T* dx;
  PoolProblem P;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t C = P.C;
    Scratch s(Scratch::bytes<F>(C));
    F* acc_p = s.take<F>(C);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / P.H;
      const int64_t ih = item % P.H;
      const PoolRange rows = pool_covering_outputs(ih, P.p.kH, P.p.sH, P.p.pH, P.OH);
      for (int64_t iw = 0; iw < P.W; ++iw) {
        // Per position rather than a table per call: two divisions against C channels of work.
        const PoolRange columns = pool_covering_outputs(iw, P.p.kW, P.p.sW, P.p.pW, P.OW);
        std::fill(acc_p, acc_p + C, F(0));
        for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
          for (int64_t ow = columns.first; ow <= columns.last; ++ow) {
            const int64_t o = n * P.out.n + oh * P.out.h + ow * P.out.w;
            const T* dy_p = dy + o;
            const uint8_t* offsets_p = offsets + o;
            const int expected = pool_offset(ih, iw, oh * P.p.sH - P.p.pH, ow * P.p.sW - P.p.pW, P.p.kW);
            for (int64_t c = 0; c < C; ++c) {
              acc_p[c] = pool_route(acc_p[c], static_cast<int>(offsets_p[c]), expected, static_cast<F>(dy_p[c]));
            }
          }
        }
        T* dst = dx + n * P.in.n + ih * P.in.h + iw * P.in.w;
        for (int64_t c = 0; c < C; ++c) dst[c] = static_cast<T>(acc_p[c]);
      }
    }
  }
};

// ----------------------------------------------------------------------------------------------
// Fused block: rows of channel-major [C][W] scratch
// ----------------------------------------------------------------------------------------------

// x row (n, ih) as F into [C][W]: xr = x, r = relu(x).
template <typename T, typename F>
AK_ALWAYS_INLINE void load_input_row(const T* x, const PoolProblem& P, int64_t n, int64_t ih, F* xr, F* r) {
  const int64_t C = P.C, W = P.W;
  const T* src = x + n * P.in.n + ih * P.in.h;
  if (P.channels_last) {
    for (int64_t iw = 0; iw < W; ++iw) {
      for (int64_t c = 0; c < C; ++c) xr[c * W + iw] = static_cast<F>(src[iw * C + c]);
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t iw = 0; iw < W; ++iw) xr[c * W + iw] = static_cast<F>(src[c * P.in.c + iw]);
    }
  }
  for (int64_t i = 0; i < C * W; ++i) r[i] = relu_keep_nan(xr[i]);
}

// [C][W] values into the input-shaped tensor's row (n, ih).
template <typename T, typename F>
AK_ALWAYS_INLINE void store_input_row(const F* values, const PoolProblem& P, int64_t n, int64_t ih, T* dst_tensor) {
  const int64_t C = P.C, W = P.W;
  T* dst = dst_tensor + n * P.in.n + ih * P.in.h;
  if (P.channels_last) {
    for (int64_t iw = 0; iw < W; ++iw) {
      for (int64_t c = 0; c < C; ++c) dst[iw * C + c] = static_cast<T>(values[c * W + iw]);
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t iw = 0; iw < W; ++iw) dst[c * P.in.c + iw] = static_cast<T>(values[c * W + iw]);
    }
  }
}

// sums[c][w] = sum over j in [c - behind, c + ahead] ∩ [0, C) of rows[j][w] for every channel c of
// a [C][W] block: the window's first channel copied, then the others added in ascending order
// (lrn_cpu.cpp's sums, term for term). Each step is one contiguous run over a range of channels,
// so the loops stay long however short a row is.
template <typename F>
AK_ALWAYS_INLINE void window_sums(const F* rows, int64_t W, int C, int behind, int ahead, F* sums) {
  // First terms: channel max(0, c - behind).
  const int from_zero = std::min(behind, C);  // channels [0, from_zero) start at channel 0
  for (int c = 0; c < from_zero; ++c) std::copy(rows, rows + W, sums + c * W);
  std::copy(rows, rows + (C - from_zero) * W, sums + from_zero * W);
  // Then channel c + d for d = -behind + 1, ..., ahead: the channels c with 0 < c + d < C.
  for (int d = std::max(1 - behind, 1 - C); d <= std::min(ahead, C - 1); ++d) {
    const int c0 = std::max(0, 1 - d), c1 = std::min(C, C - d);
    F* dst = sums + c0 * W;
    const F* src = rows + (c0 + d) * W;
    for (int64_t i = 0; i < (c1 - c0) * W; ++i) dst[i] += src[i];
  }
}

// L = LRN(r) of a [C][W] block from r and the window sums of r^2, rounded to T (fused_lrn_output). beta is
// passed in as a literal 0.75f where it is 0.75, so that the loop holds the square-root path alone.
template <typename T, typename F>
AK_ALWAYS_INLINE void fused_lrn_outputs_with(const F* r, const F* sums, F* out, int64_t count,
                                             const LrnCoeffs<F>& lrn, F beta) {
  const F alpha_over_n = lrn.alpha_over_n, k = lrn.k;
  for (int64_t i = 0; i < count; ++i) {
    out[i] = round_to_storage<T>(lrn_forward_value(r[i], lrn_base(sums[i], alpha_over_n, k), beta));
  }
}

template <typename T, typename F>
AK_ALWAYS_INLINE void fused_lrn_outputs(const F* r, const F* sums, F* out, int64_t count, const LrnCoeffs<F>& lrn) {
  if (lrn_beta_is_three_quarters(lrn.beta)) {
    fused_lrn_outputs_with<T>(r, sums, out, count, lrn, static_cast<F>(0.75f));
  } else {
    fused_lrn_outputs_with<T>(r, sums, out, count, lrn, lrn.beta);
  }
}

// Forward; item = output row (n, oh). Each input row's L ([C][W]) is reduced to its row maxima per channel
// ([C][OW]) as it is computed; the ring keeps those of the last kH rows.
template <typename T>
struct FusedForward {
  const T* x;
  T* z;
  uint8_t* offsets;
  PoolProblem P;
  ColumnRange cols;  // interior_columns(P)
  LrnCoeffs<AccOf<T>> lrn;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t C = P.C, W = P.W, OW = P.OW, row_size = C * W, out_row = C * OW;
    const bool staged = P.channels_last;  // output row [C][OW] transposed into [OW][C]
    Scratch s(RowMaximaRing<F>::scratch_bytes(P.p.kH, out_row) + 3 * Scratch::bytes<F>(row_size) +
              Scratch::bytes<T>(staged ? out_row : 0) + Scratch::bytes<uint8_t>(staged ? out_row : 0));
    RowMaximaRing<F> ring(s, P.p.kH, out_row);
    F* xr = s.take<F>(row_size);  // x, then r^2, then L
    F* r = s.take<F>(row_size);
    F* sums = s.take<F>(row_size);
    T* z_staged = s.take<T>(staged ? out_row : 0);
    uint8_t* offsets_staged = s.take<uint8_t>(staged ? out_row : 0);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / P.OH;
      const int64_t oh = item % P.OH;
      const PoolSpan h = pool_window(oh, P.p.kH, P.p.sH, P.p.pH, P.H);
      for (int64_t ih = h.begin; ih < h.end; ++ih) {
        if (!ring.claim(n, P.H, h, ih)) continue;
        F* best = ring.best_row(ih - h.begin);
        int32_t* col = ring.col_row(ih - h.begin);
        load_input_row(x, P, n, ih, xr, r);
        for (int64_t i = 0; i < row_size; ++i) xr[i] = r[i] * r[i];
        window_sums(xr, W, static_cast<int>(C), lrn.pre, lrn.post, sums);
        fused_lrn_outputs<T>(r, sums, xr, row_size, lrn);
        for (int64_t c = 0; c < C; ++c) plane_row_maxima_any(xr + c * W, P, cols, best + c * OW, col + c * OW);
      }
      const int64_t o = n * P.out.n + oh * P.out.h;
      if (!staged) {
        for (int64_t c = 0; c < C; ++c) {
          combine_rows(ring.best_rows, ring.col_rows, c * OW, h, P.p.kW, OW, z + o + c * P.out.c,
                       offsets + o + c * P.out.c, ring.held);
        }
      } else {
        combine_rows(ring.best_rows, ring.col_rows, 0, h, P.p.kW, out_row, z_staged, offsets_staged,
                     ring.held);
        T* z_row = z + o;  // locals: the uint8 stores may alias members reached through `this`
        uint8_t* offsets_row = offsets + o;
        for (int64_t ow = 0; ow < OW; ++ow) {
          for (int64_t c = 0; c < C; ++c) {
            z_row[ow * C + c] = z_staged[c * OW + ow];
            offsets_row[ow * C + c] = offsets_staged[c * OW + ow];
          }
        }
      }
    }
  }
};

// Backward; item = input row (n, ih). The steps of fused_backward_value, one [C][W] row at a time.
template <typename T>
struct FusedBackward {
  const T* x;
  const T* dz;
  const uint8_t* offsets;
  T* dx;
  PoolProblem P;
  LrnCoeffs<AccOf<T>> lrn;
  const PoolRange* columns;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t W = P.W, row_size = P.C * W;
    const int C = static_cast<int>(P.C);
    std::vector<F> scratch(static_cast<size_t>(6 * row_size));
    F* xr = scratch.data();
    F* r = xr + row_size;
    F* work = r + row_size;       // r^2, then t, then dx
    F* base = work + row_size;    // sums of r^2, then base, then sums of t
    F* scale = base + row_size;
    F* grad = scale + row_size;   // dL, then dL * scale
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / P.H;
      const int64_t ih = item % P.H;
      load_input_row(x, P, n, ih, xr, r);
      for (int64_t i = 0; i < row_size; ++i) work[i] = r[i] * r[i];
      window_sums(work, W, C, lrn.pre, lrn.post, base);
      for (int64_t i = 0; i < row_size; ++i) {
        const LrnTerms<F> terms = lrn_terms(base[i], lrn);
        base[i] = terms.base;
        scale[i] = terms.scale;
      }
      // dL: the max-pool gather of every channel at this row.
      const PoolRange rows = pool_covering_outputs(ih, P.p.kH, P.p.sH, P.p.pH, P.OH);
      for (int c = 0; c < C; ++c) {
        const int64_t plane = n * P.out.n + c * P.out.c;
        for (int64_t iw = 0; iw < W; ++iw) {
          grad[c * W + iw] =
              pool_gather<F>(dz + plane, offsets + plane, P.out.h, P.out.w, ih, iw, rows, columns[iw], P.p);
        }
      }
      for (int64_t i = 0; i < row_size; ++i) {
        work[i] = lrn_t_term(grad[i], r[i], base[i], scale[i]);
        grad[i] = grad[i] * scale[i];
      }
      // tsum over the transposed window [c - post, c + pre], then dx.
      F* tsum = base;
      window_sums(work, W, C, lrn.post, lrn.pre, tsum);
      F* dx_row = work;
      for (int64_t i = 0; i < row_size; ++i) {
        dx_row[i] = relu_backward(xr[i], lrn_backward_value(grad[i], r[i], tsum[i], lrn.coef));
      }
      store_input_row(dx_row, P, n, ih, dx);
    }
  }
};

}  // namespace

void max_pool2d_forward_cpu_isa(const TensorView& x, const TensorView& y, const TensorView& offsets,
                                const PoolParams& p, bool channels_last, CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "max_pool2d_forward_cpu: this CPU does not run the requested instruction set");
  if (y.numel == 0) return;
  const PoolProblem P = make_pool_problem(x, y, p, channels_last);
  const int64_t window = int64_t(p.kH) * p.kW;
  AK_CPU_DISPATCH_MAX_POOL_FORWARD(x.dtype, "max_pool2d_forward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    uint8_t* op = offsets.mutable_data_ptr<uint8_t>();
    if (channels_last) {
      parallel_items(P.N * P.OH, P.OW * P.C * window, MaxPoolForwardNhwc<scalar_t>{xp, yp, op, P}, isa);
    } else if (max_pool_planes_apply(P)) {
      parallel_items(P.N * P.C, P.H * P.W * (P.p.kH + P.p.kW), MaxPoolForwardNchwPlanes<scalar_t>{xp, yp, op, P}, isa);
    } else {
      parallel_items(P.N * P.C * P.OH, P.OW * window, MaxPoolForwardNchw<scalar_t>{xp, yp, op, P, interior_columns(P)},
                     isa);
    }
  });
}

void max_pool2d_backward_cpu_isa(const TensorView& dy, const TensorView& offsets, const TensorView& dx,
                                 const PoolParams& p, bool channels_last, CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "max_pool2d_backward_cpu: this CPU does not run the requested instruction set");
  if (dx.numel == 0) return;
  const PoolProblem P = make_pool_problem(dx, dy, p, channels_last);
  const OffsetTable table = make_offset_table(p);
  AK_CPU_DISPATCH(dx.dtype, "max_pool2d_backward_cpu", [&] {
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    const uint8_t* op = offsets.const_data_ptr<uint8_t>();
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    if (channels_last) {
      parallel_items(P.N * P.H, P.W * P.C * 4, MaxPoolBackwardNhwc<scalar_t>{dyp, op, dxp, P}, isa);
    } else {
      parallel_items(P.N * P.C, P.H * P.W + 4 * P.OH * P.OW, MaxPoolBackwardNchw<scalar_t>{dyp, op, dxp, P, &table},
                     isa);
    }
  });
}

void max_pool2d_forward_cpu(const TensorView& x, const TensorView& y, const TensorView& offsets,
                            const PoolParams& p, bool channels_last) {
  max_pool2d_forward_cpu_isa(x, y, offsets, p, channels_last, best_cpu_isa());
}

void max_pool2d_backward_cpu(const TensorView& dy, const TensorView& offsets, const TensorView& dx,
                             const PoolParams& p, bool channels_last) {
  max_pool2d_backward_cpu_isa(dy, offsets, dx, p, channels_last, best_cpu_isa());
}

void relu_lrn_max_pool2d_forward_cpu_isa(const TensorView& x, const TensorView& z, const TensorView& offsets,
                                         int64_t size, double alpha, double beta, double k, const PoolParams& p,
                                         bool channels_last, CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "relu_lrn_max_pool2d_forward_cpu: this CPU does not run the requested instruction set");
  if (z.numel == 0) return;
  const PoolProblem P = make_pool_problem(x, z, p, channels_last);
  AK_CPU_DISPATCH(x.dtype, "relu_lrn_max_pool2d_forward_cpu", [&] {
    using F = AccOf<scalar_t>;
    const FusedForward<scalar_t> items{x.const_data_ptr<scalar_t>(), z.mutable_data_ptr<scalar_t>(),
                                       offsets.mutable_data_ptr<uint8_t>(), P, interior_columns(P),
                                       make_lrn_coeffs<F>(size, alpha, beta, k, x.size(1))};
    // Per output row: about sH new input rows of LRN (the power dominates) and the pooling.
    parallel_items(P.N * P.OH, P.C * (P.W * p.sH * 8 + P.OW * p.kH * p.kW), items, isa);
  });
}

void relu_lrn_max_pool2d_backward_cpu_isa(const TensorView& x, const TensorView& dz, const TensorView& offsets,
                                          const TensorView& dx, int64_t size, double alpha, double beta, double k,
                                          const PoolParams& p, bool channels_last, CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "relu_lrn_max_pool2d_backward_cpu: this CPU does not run the requested instruction set");
  if (dx.numel == 0) return;
  const PoolProblem P = make_pool_problem(x, dz, p, channels_last);
  const std::vector<PoolRange> columns = covering_columns(P);
  AK_CPU_DISPATCH(x.dtype, "relu_lrn_max_pool2d_backward_cpu", [&] {
    using F = AccOf<scalar_t>;
    const FusedBackward<scalar_t> items{x.const_data_ptr<scalar_t>(), dz.const_data_ptr<scalar_t>(),
                                        offsets.const_data_ptr<uint8_t>(), dx.mutable_data_ptr<scalar_t>(), P,
                                        make_lrn_coeffs<F>(size, alpha, beta, k, x.size(1)), columns.data()};
    parallel_items(P.N * P.H, P.C * P.W * 16, items, isa);
  });
}

void relu_lrn_max_pool2d_forward_cpu(const TensorView& x, const TensorView& z, const TensorView& offsets,
                                     int64_t size, double alpha, double beta, double k, const PoolParams& p,
                                     bool channels_last) {
  relu_lrn_max_pool2d_forward_cpu_isa(x, z, offsets, size, alpha, beta, k, p, channels_last, best_cpu_isa());
}

void relu_lrn_max_pool2d_backward_cpu(const TensorView& x, const TensorView& dz, const TensorView& offsets,
                                      const TensorView& dx, int64_t size, double alpha, double beta, double k,
                                      const PoolParams& p, bool channels_last) {
  relu_lrn_max_pool2d_backward_cpu_isa(x, dz, offsets, dx, size, alpha, beta, k, p, channels_last, best_cpu_isa());
}

}  // namespace ak
