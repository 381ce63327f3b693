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
//     channels_last 3x3 windows, none clipped, in float / double / integers: each output position scans its
//     nine inputs in registers, C channels at a time (MaxPoolForwardNhwc3x3).
//   max pool, NCHW backward: an item is one plane (n, c); pool_gather's sums formed as an ordered
//     scatter (see MaxPoolBackwardNchw), the same terms in the same order.
//   max pool, channels_last: an item is (n, oh) / (n, ih); a position's C channels are contiguous, so
//     the scan and the gather run over all channels at once (vectorised along c) with the same rules
//     (pool_takes, pool_route), window elements in the same order.
//   fused forward: L is computed with lrn_cpu.cpp's own element loops (lrn_cpu_rows.h), so that it equals
//     lrn_forward's output bit for bit wherever lrn_cpu.cpp sums term by term (windows of up to 24
//     channels; the fused block always does), then rounded to the storage dtype and pooled by the
//     max-pool forward's rule. channels_last: an item is (n, oh); each input row's L is computed in its
//     own [W][C] layout (lrn_cpu.cpp's rows strategy) and reduced with position_row_maxima into the ring.
//     NCHW planes that the max-pool forward pools whole (AlexNet's): an item is (n, a chunk of channels);
//     each channel's L plane is computed whole as lrn_cpu.cpp's ring strategy does (the window sum and the
//     power in one pass) and pooled by max_pool_plane_forward (FusedForwardNchwPlanes). Other NCHW
//     problems: an item is (n, a chunk of channels, a band of output rows); each channel's L plane is
//     computed the same way with its rows permuted by phase (FusedForwardNchw) so that pool_plane_forward
//     pools it with unit-stride passes over the whole band. Channel chunks only where the images (bands)
//     do not split evenly over the threads (fused_channel_chunks).
//   fused backward: an item is (n, ih). The input rows it needs are computed into channel-major [C][W]
//     scratch rows (relu, squares, window sums, the LRN terms: loops along w that vectorise), and the
//     pooled gradient scattered from the covering output rows (pool_gather's sums, without a branch).
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
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu_target.h"
#include "lrn_cpu_rows.h"
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
// becomes strided vector loads with the window's columns unrolled. kOffsets false: the values only (col
// is neither computed nor written).
template <int kKW, int kSW, bool kOffsets = true, typename F>
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
        if constexpr (kOffsets) c = static_cast<int32_t>(iw - w.start);
      }
    }
    best[ow] = b;
    if constexpr (kOffsets) col[ow] = c;
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
      if constexpr (kOffsets) c = take ? kx : c;
    }
    best_out[i] = b;
    if constexpr (kOffsets) col_out[i] = c;
  }
}

template <bool kOffsets = true, typename F>
AK_ALWAYS_INLINE void plane_row_maxima_any(const F* row, const PoolProblem& P, const ColumnRange& cols, F* best,
                                           int32_t* col) {
  if (P.p.kW == 3 && P.p.sW == 2) return plane_row_maxima<3, 2, kOffsets>(row, P, cols, best, col);
  if (P.p.kW == 3 && P.p.sW == 1) return plane_row_maxima<3, 1, kOffsets>(row, P, cols, best, col);
  if (P.p.kW == 2 && P.p.sW == 2) return plane_row_maxima<2, 2, kOffsets>(row, P, cols, best, col);
  plane_row_maxima<0, 0, kOffsets>(row, P, cols, best, col);
}

// Row maxima of one channels_last row: W positions of C contiguous channels, vectorised along c. kKW: the
// window width as a constant (0: from P); a window of kKW columns is scanned with its columns in registers
// (one load of each input, one store of each maximum), a clipped one column by column through best / col.
// kOffsets false: the values only (col is neither computed nor written).
template <int kKW, bool kOffsets = true, typename T, typename F>
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
          if constexpr (kOffsets) held_col = take ? first_col + kx : held_col;
        }
        b[c] = held;
        if constexpr (kOffsets) cs[c] = held_col;
      }
      continue;
    }
#pragma GCC ivdep
    for (int64_t c = 0; c < C; ++c) {
      b[c] = static_cast<F>(first[c]);
      if constexpr (kOffsets) cs[c] = first_col;
    }
    for (int64_t iw = w.begin + 1; iw < w.end; ++iw) {
      const T* src = row + iw * C;
      const int32_t kx = static_cast<int32_t>(iw - w.start);
      if constexpr (kOffsets) {
#pragma GCC ivdep
        for (int64_t c = 0; c < C; ++c) {
          const F v = static_cast<F>(src[c]);
          const F held = b[c];
          const int32_t held_col = cs[c];
          const bool take = pool_takes(v, held);
          b[c] = take ? v : held;
          cs[c] = take ? kx : held_col;
        }
      } else {
#pragma GCC ivdep
        for (int64_t c = 0; c < C; ++c) {
          const F v = static_cast<F>(src[c]);
          const F held = b[c];
          b[c] = pool_takes(v, held) ? v : held;
        }
      }
    }
  }
}

template <bool kOffsets = true, typename T, typename F>
AK_ALWAYS_INLINE void position_row_maxima_any(const T* row, const PoolProblem& P, F* best, int32_t* col) {
  if (P.p.kW == 3) return position_row_maxima<3, kOffsets>(row, P, best, col);
  position_row_maxima<0, kOffsets>(row, P, best, col);
}

// count outputs of one output row from the row maxima of its window's rows: best_rows[r][at + i] /
// col_rows[r][at + i] of input row h.begin + r. Values into y, offsets (row in window * kW + column);
// kOffsets false: the values only (col_rows, offsets and held are not touched).
template <int kRows, bool kOffsets, typename T, typename F>
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
  if constexpr (!kOffsets) {
#pragma GCC ivdep
    for (int64_t i = 0; i < count; ++i) {
      F best = b[0][i];
      for (int r = 1; r < kRows; ++r) {
        const F v = b[r][i];
        best = pool_takes(v, best) ? v : best;
      }
      if constexpr (kRows == 0) {
        for (int r = 1; r < rows; ++r) {
          const F v = best_rows[r][at + i];
          best = pool_takes(v, best) ? v : best;
        }
      }
      y[i] = static_cast<T>(best);
    }
    return;
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

template <bool kOffsets = true, typename T, typename F>
AK_ALWAYS_INLINE void combine_rows(const F* const* best_rows, const int32_t* const* col_rows, int64_t at,
                                   const PoolSpan& h, int kW, int64_t count, T* y, uint8_t* offsets,
                                   int32_t* held) {
  const int rows = static_cast<int>(h.end - h.begin);
  const int32_t first_row = static_cast<int32_t>(h.begin - h.start) * kW;
  switch (rows) {
    case 1:
      return combine_rows_n<1, kOffsets>(best_rows, col_rows, at, rows, first_row, kW, count, y, offsets, held);
    case 2:
      return combine_rows_n<2, kOffsets>(best_rows, col_rows, at, rows, first_row, kW, count, y, offsets, held);
    case 3:
      return combine_rows_n<3, kOffsets>(best_rows, col_rows, at, rows, first_row, kW, count, y, offsets, held);
    default:
      return combine_rows_n<0, kOffsets>(best_rows, col_rows, at, rows, first_row, kW, count, y, offsets, held);
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

// The max-pool forwards' kOffsets: true writes y and the offsets, false y only (the values-only forward of
// inference: no offset is computed, held or stored).

// NCHW forward; item = output row (plane, oh).
template <typename T, bool kOffsets>
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
          plane_row_maxima_any<kOffsets>(static_cast<const F*>(converted), P, cols, best, col);
        } else {
          plane_row_maxima_any<kOffsets>(src, P, cols, best, col);
        }
      }
      combine_rows<kOffsets>(ring.best_rows, ring.col_rows, 0, h, P.p.kW, OW, y + item * OW,
                             kOffsets ? offsets + item * OW : nullptr, ring.held);
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

// max_pool_plane_forward's values only: the same scans of the same elements, with no column or offset.
template <int kKH, int kKW, int kSW, typename T>
AK_ALWAYS_INLINE void max_pool_plane_values(const T* src, const PoolProblem& P, AccOf<T>* converted,
                                            AccOf<T>* row_best, AccOf<T>* win_best, T* y) {
  using F = AccOf<T>;
  const int kW = kKW != 0 ? kKW : P.p.kW;
  const int64_t sW = kSW != 0 ? kSW : P.p.sW;
  const int kH = kKH != 0 ? kKH : P.p.kH;
  const int64_t W = P.W, HW = P.H * P.W;
  const F* plane;
  if constexpr (!std::is_same_v<T, F>) {
    for (int64_t i = 0; i < HW; ++i) converted[i] = static_cast<F>(src[i]);
    plane = converted;
  } else {
    plane = src;
  }
  const int64_t row_positions = HW - (kW - 1);
#pragma GCC ivdep
  for (int64_t i = 0; i < row_positions; ++i) {
    F b = plane[i];
    for (int kx = 1; kx < kW; ++kx) {
      const F v = plane[i + kx];
      b = pool_takes(v, b) ? v : b;
    }
    row_best[i] = b;
  }
  const int64_t windows = (row_positions - (kH - 1) * W + sW - 1) / sW;
#pragma GCC ivdep
  for (int64_t k = 0; k < windows; ++k) {
    const int64_t i = k * sW;
    F b = row_best[i];
    for (int r = 1; r < kH; ++r) {
      const F v = row_best[i + r * W];
      b = pool_takes(v, b) ? v : b;
    }
    win_best[k] = b;
  }
  const int64_t OW = P.OW, row_step = P.p.sH * W / sW;
  for (int64_t oh = 0; oh < P.OH; ++oh) {
    const F* wb = win_best + oh * row_step;
    T* yr = y + oh * OW;
#pragma GCC ivdep
    for (int64_t ow = 0; ow < OW; ++ow) yr[ow] = static_cast<T>(wb[ow]);
  }
}

// Whether MaxPoolForwardNchwPlanes applies: no window clipped, every window start a multiple of sW in the
// flattened plane, short rows, a plane's scratch small.
inline bool max_pool_planes_apply(const PoolProblem& P) {
  return P.p.pH == 0 && P.p.pW == 0 && (P.OH - 1) * P.p.sH + P.p.kH <= P.H &&
         (P.OW - 1) * P.p.sW + P.p.kW <= P.W && (P.p.sH * P.W) % P.p.sW == 0 && P.OW < 64 &&
         P.H * P.W <= (int64_t(1) << 16);
}

template <typename T, bool kOffsets>
struct MaxPoolForwardNchwPlanes {
  const T* x;
  T* y;
  uint8_t* offsets;
  PoolProblem P;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    constexpr bool kConvert = !std::is_same_v<T, F>;
    const int64_t HW = P.H * P.W, out_plane = P.OH * P.OW;
    const int64_t offset_scratch = kOffsets ? HW : 0;
    Scratch s(Scratch::bytes<F>(kConvert ? HW : 0) + 2 * Scratch::bytes<F>(HW) +
              2 * Scratch::bytes<int32_t>(offset_scratch));
    F* converted = s.take<F>(kConvert ? HW : 0);
    F* row_best = s.take<F>(HW);
    int32_t* row_col = s.take<int32_t>(offset_scratch);
    F* win_best = s.take<F>(HW);
    int32_t* win_off = s.take<int32_t>(offset_scratch);
    for (int64_t plane = begin; plane < end; ++plane) {
      const T* src = x + plane * HW;
      T* yp = y + plane * out_plane;
      const bool alexnet = P.p.kH == 3 && P.p.kW == 3 && P.p.sW == 2;  // AlexNet's pools: constant windows
      if constexpr (kOffsets) {
        uint8_t* op = offsets + plane * out_plane;
        if (alexnet) {
          max_pool_plane_forward<3, 3, 2>(src, P, converted, row_best, row_col, win_best, win_off, yp, op);
        } else {
          max_pool_plane_forward<0, 0, 0>(src, P, converted, row_best, row_col, win_best, win_off, yp, op);
        }
      } else if (alexnet) {
        max_pool_plane_values<3, 3, 2>(src, P, converted, row_best, win_best, yp);
      } else {
        max_pool_plane_values<0, 0, 0>(src, P, converted, row_best, win_best, yp);
      }
    }
  }
};

// channels_last forward; item = output row (n, oh): rows of OW * C contiguous elements.
template <typename T, bool kOffsets>
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
        position_row_maxima_any<kOffsets>(x + n * P.in.n + ih * P.in.h, P, ring.best_row(ih - h.begin),
                                          ring.col_row(ih - h.begin));
      }
      const int64_t o = n * P.out.n + oh * P.out.h;
      combine_rows<kOffsets>(ring.best_rows, ring.col_rows, 0, h, P.p.kW, width, y + o,
                             kOffsets ? offsets + o : nullptr, ring.held);
    }
  }
};

// channels_last forward of 3x3 windows none of which is clipped (AlexNet's), values compared in their own
// type (float, double, integers); item = output row (n, oh). Each
// output position scans its nine inputs, C contiguous channels at a time, in registers: pool_argmax's row-major
// scan, one store of each value and offset. Reading an input up to four times (overlapping windows) from
// cache costs less here than the ring's extra passes through scratch.
template <typename T, bool kOffsets>
struct MaxPoolForwardNhwc3x3 {
  const T* x;
  T* y;
  uint8_t* offsets;
  PoolProblem P;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t C = P.C, row = P.in.h, column = P.in.w;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / P.OH;
      const int64_t oh = item % P.OH;
      const T* top = x + n * P.in.n + oh * P.p.sH * row;
      T* y_row = y + n * P.out.n + oh * P.out.h;
      uint8_t* offsets_row = kOffsets ? offsets + n * P.out.n + oh * P.out.h : nullptr;
      for (int64_t ow = 0; ow < P.OW; ++ow) {
        const T* w = top + ow * P.p.sW * column;
        T* yp = y_row + ow * C;
        uint8_t* op = kOffsets ? offsets_row + ow * C : nullptr;
#pragma GCC ivdep
        for (int64_t c = 0; c < C; ++c) {
          F best = static_cast<F>(w[c]);
          int32_t at = 0;
#pragma GCC unroll 8
          for (int e = 1; e < 9; ++e) {  // window element e = 3 * row + column, row-major
            const F v = static_cast<F>(w[(e / 3) * row + (e % 3) * column + c]);
            const bool take = pool_takes(v, best);
            best = take ? v : best;
            if constexpr (kOffsets) at = take ? e : at;
          }
          yp[c] = static_cast<T>(best);
          if constexpr (kOffsets) op[c] = static_cast<uint8_t>(at);
        }
      }
    }
  }
};

// Whether MaxPoolForwardNhwc3x3 applies: 3x3 windows, none clipped.
inline bool max_pool_nhwc_3x3_applies(const PoolProblem& P) {
  return P.p.kH == 3 && P.p.kW == 3 && P.p.pH == 0 && P.p.pW == 0 && (P.OH - 1) * P.p.sH + 3 <= P.H &&
         (P.OW - 1) * P.p.sW + 3 <= P.W;
}

// Window offset -> (row, column) in the window; kNotInWindow for offsets >= kH * kW.
struct OffsetTable {
  // ih = hstart + row then lies outside [0, H) for any window start (|hstart| < 2^33). An int16 -32768
  // did not: from hstart >= 32768 on (planes of more than 32768 rows and columns) such an offset routed
  // its gradient to an element of the plane.
  static constexpr int64_t kNotInWindow = -(int64_t(1) << 61);
  int64_t row[256], col[256];
  int64_t col_or_zero[256];   // col, with 0 for an offset outside the window (its row never matches)
};

OffsetTable make_offset_table(const PoolParams& p) {
  OffsetTable t;
  for (int off = 0; off < 256; ++off) {
    const bool in_window = off < p.kH * p.kW;
    t.row[off] = in_window ? static_cast<int64_t>(off / p.kW) : OffsetTable::kNotInWindow;
    t.col[off] = in_window ? static_cast<int64_t>(off % p.kW) : OffsetTable::kNotInWindow;
    t.col_or_zero[off] = in_window ? t.col[off] : 0;
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

// v where keep is 1, +0 where it is 0, by masking v's bits: a select the compiler cannot turn back into a
// branch (it did, for `keep ? v : 0`).
template <typename F>
AK_ALWAYS_INLINE F kept_or_zero(F v, int64_t keep) {
  using Bits = std::conditional_t<sizeof(F) == 8, uint64_t, uint32_t>;
  Bits bits;
  std::memcpy(&bits, &v, sizeof(F));
  bits &= Bits(0) - static_cast<Bits>(keep);
  std::memcpy(&v, &bits, sizeof(F));
  return v;
}

// Backward; item = input row (n, ih). The steps of fused_backward_value, one [C][W] row at a time.
template <typename T>
struct FusedBackward {
  const T* x;
  const T* dz;
  const uint8_t* offsets;
  T* dx;
  PoolProblem P;
  LrnCoeffs<AccOf<T>> lrn;
  const OffsetTable* table;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t W = P.W, row_size = P.C * W;
    const int C = static_cast<int>(P.C);
    Scratch scratch(Scratch::bytes<F>(6 * row_size));
    F* xr = scratch.take<F>(6 * row_size);
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
      // dL: the max-pool gather of every channel at this row, formed as a scatter: the outputs whose window
      // rows cover ih, oh ascending then ow ascending, add dz to the column their offset names when its row is
      // ih -- each element gets pool_gather's terms in pool_gather's order, one look per output instead of one
      // per covering output and input element. Without a branch (whether an output's maximum lies in this
      // row is data, and mispredicted): the others add +0 to a clamped column, which changes no sum (a sum
      // from +0 is never -0) and lets no NaN or inf of dz through.
      const PoolRange rows = pool_covering_outputs(ih, P.p.kH, P.p.sH, P.p.pH, P.OH);
      const int64_t OW = P.OW, out_w = P.out.w, sW = P.p.sW, wstart0 = -P.p.pW;
      std::fill(grad, grad + row_size, F(0));
      for (int c = 0; c < C; ++c) {
        const int64_t plane = n * P.out.n + c * P.out.c;
        F* grad_c = grad + c * W;
        for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
          const int64_t window_row = ih - (oh * P.p.sH - P.p.pH);   // in [0, kH): the row ih within the window
          const T* dz_row = dz + plane + oh * P.out.h;
          const uint8_t* offsets_row = offsets + plane + oh * P.out.h;
          for (int64_t ow = 0; ow < OW; ++ow) {
            const int off = offsets_row[ow * out_w];
            const int64_t iw = wstart0 + ow * sW + table->col_or_zero[off];
            const int64_t routed = (table->row[off] == window_row) & (iw >= 0) & (iw < W);   // 0 or 1
            grad_c[iw * routed] += kept_or_zero(static_cast<F>(dz_row[ow * out_w]), routed);
          }
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

// ----------------------------------------------------------------------------------------------
// Fused block, forward: L computed with lrn_cpu.cpp's element loops (lrn_cpu_rows.h), then pooled
// ----------------------------------------------------------------------------------------------

// relu(x) of n contiguous elements, as F.
template <typename T, typename F>
AK_ALWAYS_INLINE void relu_row(const T* src, F* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = relu_keep_nan(static_cast<F>(src[i]));
}

// relu(x) of n contiguous elements as F, and its squares (relu_row and lrn_rows::square_row in one pass).
template <typename T, typename F>
AK_ALWAYS_INLINE void relu_square_row(const T* src, F* r, F* sq, int64_t n) {
#pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) {
    const F v = relu_keep_nan(static_cast<F>(src[i]));
    r[i] = v;
    sq[i] = v * v;
  }
}

// L rounded to the storage dtype in place (fused_lrn_output's rounding; nothing to do for float and double).
template <typename T, typename F>
AK_ALWAYS_INLINE void round_row_to_storage(F* values, int64_t n) {
  if constexpr (!std::is_same_v<T, F>) {
    for (int64_t i = 0; i < n; ++i) values[i] = round_to_storage<T>(values[i]);
  }
}

// channels_last forward; item = output row (n, oh). An input row's L is computed position by position in its
// own [W][C] layout, as lrn_cpu.cpp's rows strategy computes lrn_forward (a position's C channels contiguous:
// squares into a zero-padded row, window sums of shifted copies, term by term), then reduced at once to its
// row maxima (position_row_maxima, vectors along c) for the ring; an output row is combine_rows of its
// window's row maxima, written straight into z.
template <typename T>
struct FusedForwardNhwc {
  const T* x;
  T* z;
  uint8_t* offsets;
  PoolProblem P;
  LrnCoeffs<AccOf<T>> lrn;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t C = P.C, W = P.W, width = P.OW * C;
    const int length = lrn.pre + lrn.post + 1;  // both reaches clipped to C - 1 (make_lrn_coeffs)
    Scratch s(RowMaximaRing<F>::scratch_bytes(P.p.kH, width) + Scratch::bytes<F>(W * C) +
              2 * Scratch::bytes<F>(C) + Scratch::bytes<F>(C + length));
    RowMaximaRing<F> ring(s, P.p.kH, width);
    F* l_row = s.take<F>(W * C);
    F* r = s.take<F>(C);
    F* sum = s.take<F>(C);
    F* sq_padded = s.take<F>(C + length);  // pre zeros, the C squares, post zeros
    std::fill(sq_padded, sq_padded + C + length - 1, F(0));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / P.OH;
      const int64_t oh = item % P.OH;
      const PoolSpan h = pool_window(oh, P.p.kH, P.p.sH, P.p.pH, P.H);
      for (int64_t ih = h.begin; ih < h.end; ++ih) {
        if (!ring.claim(n, P.H, h, ih)) continue;
        const T* src = x + n * P.in.n + ih * P.in.h;
        for (int64_t iw = 0; iw < W; ++iw) {
          F* l = l_row + iw * C;
          relu_row(src + iw * C, r, C);
          lrn_rows::square_row(r, sq_padded + lrn.pre, C);
          lrn_rows::shifted_sum_row(sq_padded, length, sum, C);
          lrn_rows::forward_row(static_cast<const F*>(r), static_cast<const F*>(sum), l, C, lrn);
          round_row_to_storage<T>(l, C);
        }
        position_row_maxima_any(static_cast<const F*>(l_row), P, ring.best_row(ih - h.begin),
                                ring.col_row(ih - h.begin));
      }
      const int64_t o = n * P.out.n + oh * P.out.h;
      combine_rows(ring.best_rows, ring.col_rows, 0, h, P.p.kW, width, z + o, offsets + o, ring.held);
    }
  }
};

// NCHW forward: planes in "phase layout".
//
// An item is (n, a chunk of channels, a band of output rows). Channel by channel it computes the band's L
// plane as lrn_cpu.cpp's ring strategy computes lrn_forward (a ring of relu and squared planes, the window sum
// copied from its first channel's plane and the others added in order, the power over the whole plane), then
// pools the plane (pool_plane_forward). The rows are stored permuted so that every pooling loop runs at unit
// stride over the whole band: in padded coordinates u = ih + pH - o0 * sH (o0: the band's first output row) and
// v = iw + pW, cell (u, v) lives in phase array u % sH at row u / sH, column v (pitch B). Window row r of band
// row oh is then row oh + r / sH of phase r % sH. The row maxima are computed at every column v (window
// [v, v + kW): kW - 1 flat passes over a phase array), the band's outputs at every column too (kH - 1 flat passes
// over the row maxima), and the store keeps columns ow * sW: sW times the comparisons of the outputs alone, but no
// strided loads before the last step. LRN works position by position, so the permutation leaves L unchanged;
// cells that are padding, or past the band, hold 0 and no interior window reads them.
struct FusedPlanes {
  int64_t band, bands;    // output rows per band; bands per plane
  int64_t chunk, chunks;  // channels per item; chunks per image
  int64_t rows;           // A: rows of a phase array
  int64_t pitch;          // B: cells per row
  int64_t phase_cells;    // A * B, then zeros that the last row maxima read past the end
  int64_t plane_cells;    // sH * phase_cells
  int ring;               // planes per ring
  ColumnRange interior_rows, interior_cols;  // outputs whose windows lie inside the input
};

// Phase planes of at most about this many cells per band (AlexNet's maps are one band).
constexpr int64_t kFusedPlaneCells = 1 << 13;

// [first, end) of the outputs along one axis whose windows lie inside [0, in_size) (interior_columns' rule).
ColumnRange interior_outputs(int64_t in_size, int kernel, int stride, int pad, int64_t out_size) {
  const int64_t first = std::min(pool_ceil_div(pad, stride), out_size);
  const int64_t last_start = in_size - kernel + pad;
  const int64_t end = last_start >= 0 ? std::min(last_start / stride + 1, out_size) : 0;
  return ColumnRange{first, std::max(first, end)};
}

// Channel chunks per group (an image, or an image's band of output rows) of the fused NCHW forwards: each chunk
// recomputes the relu and squares of the LRN window's reach past its ends, so as few as give every thread the same
// number of items (groups * chunks a multiple of the threads); none where the groups already do.
int64_t fused_channel_chunks(int64_t groups, int64_t C) {
  const int64_t threads = std::max(1, num_threads());
  if (groups % threads == 0) return 1;
  int64_t chunks = 1;
  while ((groups * chunks) % threads != 0) ++chunks;
  return std::min(chunks, C);
}

// lrn_window: pre + post + 1 (the reaches clipped to C - 1).
FusedPlanes make_fused_planes(const PoolProblem& P, int lrn_window) {
  const PoolParams& p = P.p;
  FusedPlanes G{};
  // Columns: every window's cells ((OW - 1) * sW + kW) and every input column (W + pW).
  G.pitch = std::max<int64_t>((P.OW - 1) * p.sW + p.kW, P.W + p.pW);
  const int64_t band_input_rows = std::max<int64_t>(1, kFusedPlaneCells / G.pitch);
  G.band = std::clamp<int64_t>((band_input_rows - p.kH) / p.sH + 1, 1, P.OH);
  G.bands = pool_ceil_div(P.OH, G.band);
  G.band = pool_ceil_div(P.OH, G.bands);
  G.rows = G.band - 1 + pool_ceil_div(p.kH, p.sH);
  G.phase_cells = G.rows * G.pitch + (p.kW + 14) / 16 * 16;  // kW - 1 zeros, rounded up to 64 bytes
  G.plane_cells = int64_t(p.sH) * G.phase_cells;
  G.ring = static_cast<int>(std::min<int64_t>(lrn_window, P.C));
  // Enough items for the threads: split the channels, each chunk re-reading the window's reach around it.
  G.chunks = fused_channel_chunks(P.N * G.bands, P.C);
  G.chunk = pool_ceil_div(P.C, G.chunks);
  G.chunks = pool_ceil_div(P.C, G.chunk);
  G.interior_rows = interior_outputs(P.H, p.kH, p.sH, p.pH, P.OH);
  G.interior_cols = interior_outputs(P.W, p.kW, p.sW, p.pW, P.OW);
  return G;
}

// relu of the band of plane x_plane (rows of W, NCHW) into phase layout, and its squares, zeros where no
// input is. Input rows in memory order.
template <typename T, typename F>
AK_ALWAYS_INLINE void load_phase_plane(const T* x_plane, const PoolProblem& P, const FusedPlanes& G, int64_t o0,
                                       F* r, F* sq) {
  const PoolParams& p = P.p;
  const int64_t B = G.pitch, W = P.W;
  const int64_t band_rows = (G.band - 1) * p.sH + p.kH;  // the band's padded rows
  int qh = 0;      // u % sH, u / sH without a division per row
  int64_t a = 0;
  for (int64_t u = 0; u < G.rows * p.sH; ++u) {
    const int64_t ih = o0 * p.sH + u - p.pH;
    const int64_t at = qh * G.phase_cells + a * B;
    if (++qh == p.sH) {
      qh = 0;
      ++a;
    }
    F* r_row = r + at;
    F* sq_row = sq + at;
    if (u < band_rows && ih >= 0 && ih < P.H) {
      std::fill(r_row, r_row + p.pW, F(0));
      std::fill(sq_row, sq_row + p.pW, F(0));
      relu_row(x_plane + ih * P.in.h, r_row + p.pW, W);
      lrn_rows::square_row(static_cast<const F*>(r_row + p.pW), sq_row + p.pW, W);
      std::fill(r_row + p.pW + W, r_row + B, F(0));
      std::fill(sq_row + p.pW + W, sq_row + B, F(0));
    } else {
      std::fill(r_row, r_row + B, F(0));
      std::fill(sq_row, sq_row + B, F(0));
    }
  }
  for (int qh = 0; qh < p.sH; ++qh) {
    const int64_t at = qh * G.phase_cells;
    std::fill(r + at + G.rows * B, r + at + G.phase_cells, F(0));
    std::fill(sq + at + G.rows * B, sq + at + G.phase_cells, F(0));
  }
}

// Element (ih, iw) of a phase-layout band whose first output row is o0.
template <typename F>
struct PhasePlaneReader {
  const F* plane;
  const FusedPlanes* G;
  PoolParams p;
  int64_t o0;
  AK_ALWAYS_INLINE F operator()(int64_t ih, int64_t iw) const {
    const int64_t u = ih + p.pH - o0 * p.sH;
    return plane[(u % p.sH) * G->phase_cells + (u / p.sH) * G->pitch + iw + p.pW];
  }
};

// ---- pool_plane_forward: max-pool of one phase-layout band (the fused NCHW forward's pooling) ----
// Kept apart from the max-pool forward's structs above (which pool NCHW tensors row by row); the rule is
// theirs: row maxima (first maximum, last NaN) of every row, then the window's rows in order (see
// "Forward: row maxima"), so values and offsets are pool_argmax's. Interior outputs come from the flat
// passes; outputs whose windows are clipped by the input's edges scan their window with pool_argmax.

struct PlanePoolScratch {
  void* best;     // F[sH][A * B]: row maxima
  int32_t* col;   // [sH][A * B]: their columns in the window
  void* out;      // F[band * B]
  int32_t* held;  // [band * B]: offsets before they are narrowed

  template <typename F>
  static int64_t bytes(const PoolParams& p, const FusedPlanes& G) {
    const int64_t cells = int64_t(p.sH) * G.rows * G.pitch, outs = G.band * G.pitch;
    return Scratch::bytes<F>(cells) + Scratch::bytes<int32_t>(cells) + Scratch::bytes<F>(outs) +
           Scratch::bytes<int32_t>(outs);
  }

  template <typename F>
  static PlanePoolScratch take(Scratch& s, const PoolParams& p, const FusedPlanes& G) {
    const int64_t cells = int64_t(p.sH) * G.rows * G.pitch, outs = G.band * G.pitch;
    PlanePoolScratch t;
    t.best = s.take<F>(cells);
    t.col = s.take<int32_t>(cells);
    t.out = s.take<F>(outs);
    t.held = s.take<int32_t>(outs);
    return t;
  }
};

// Output rows [o0, o1) of one plane: z_plane / offsets_plane at (0, 0), row pitch P.out.h.
template <typename T, typename F>
AK_ALWAYS_INLINE void pool_plane_forward(const F* plane, const PoolProblem& P, const FusedPlanes& G, int64_t o0,
                                         int64_t o1, T* z_plane, uint8_t* offsets_plane,
                                         const PlanePoolScratch& scratch) {
  const PoolParams& p = P.p;
  const int64_t B = G.pitch, cells = G.rows * B, outs = G.band * B;
  // Locals for the loops (-fno-strict-aliasing: stores could otherwise alias the pointers and bounds).
  F* const best_all = static_cast<F*>(scratch.best);
  int32_t* const col_all = scratch.col;
  F* const out = static_cast<F*>(scratch.out);
  int32_t* const held = scratch.held;
  for (int qh = 0; qh < p.sH; ++qh) {  // row maxima of the rows of phase qh
    F* best = best_all + qh * cells;
    int32_t* col = col_all + qh * cells;
    const F* first = plane + qh * G.phase_cells;
    if (p.kW == 1) {
#pragma GCC ivdep
      for (int64_t i = 0; i < cells; ++i) {
        best[i] = first[i];
        col[i] = 0;
      }
    } else {  // columns 0 and 1
#pragma GCC ivdep
      for (int64_t i = 0; i < cells; ++i) {
        const F v = first[i + 1];
        const F b = first[i];
        const bool take = pool_takes(v, b);
        best[i] = take ? v : b;
        col[i] = take ? 1 : 0;
      }
    }
    for (int kx = 2; kx < p.kW; ++kx) {
      const F* values = first + kx;
#pragma GCC ivdep
      for (int64_t i = 0; i < cells; ++i) {
        const F v = values[i];
        const F b = best[i];
        const bool take = pool_takes(v, b);
        best[i] = take ? v : b;
        col[i] = take ? kx : col[i];
      }
    }
  }
  if (p.kH == 1) {
#pragma GCC ivdep
    for (int64_t i = 0; i < outs; ++i) {
      out[i] = best_all[i];
      held[i] = col_all[i];
    }
  } else {  // window rows 0 and 1
    const int64_t at = (1 % p.sH) * cells + (1 / p.sH) * B;
    const F* best = best_all + at;
    const int32_t* col = col_all + at;
    const int32_t row_offset = p.kW;
#pragma GCC ivdep
    for (int64_t i = 0; i < outs; ++i) {
      const F v = best[i];
      const F b = best_all[i];
      const bool take = pool_takes(v, b);
      out[i] = take ? v : b;
      held[i] = take ? row_offset + col[i] : col_all[i];
    }
  }
  for (int r = 2; r < p.kH; ++r) {  // the other window rows in order
    const int64_t at = (r % p.sH) * cells + (r / p.sH) * B;
    const F* best = best_all + at;
    const int32_t* col = col_all + at;
    const int32_t row_offset = r * p.kW;
#pragma GCC ivdep
    for (int64_t i = 0; i < outs; ++i) {
      const F v = best[i];
      const F b = out[i];
      const bool take = pool_takes(v, b);
      out[i] = take ? v : b;
      held[i] = take ? row_offset + col[i] : held[i];
    }
  }
  const PhasePlaneReader<F> reader{plane, &G, p, o0};
  const ColumnRange cols = G.interior_cols;
  for (int64_t oh = o0; oh < o1; ++oh) {
    T* z_row = z_plane + oh * P.out.h;
    uint8_t* offsets_row = offsets_plane + oh * P.out.h;
    const bool interior_row = oh >= G.interior_rows.first && oh < G.interior_rows.end;
    if (interior_row) {
      const F* out_row = out + (oh - o0) * B;
      const int32_t* held_row = held + (oh - o0) * B;
      const int64_t sW = p.sW;
      for (int64_t ow = cols.first; ow < cols.end; ++ow) {  // the outputs: columns v = ow * sW
        z_row[ow] = static_cast<T>(out_row[ow * sW]);
        offsets_row[ow] = static_cast<uint8_t>(held_row[ow * sW]);
      }
    }
    const PoolSpan h = pool_window(oh, p.kH, p.sH, p.pH, P.H);
    for (int64_t ow = 0; ow < P.OW; ++ow) {  // windows clipped by an edge
      if (interior_row && ow == cols.first) ow = cols.end;
      if (ow >= P.OW) break;
      const PoolArgmax<F> b = pool_argmax<F>(h, pool_window(ow, p.kW, p.sW, p.pW, P.W), p.kW, reader);
      z_row[ow] = static_cast<T>(b.value);
      offsets_row[ow] = static_cast<uint8_t>(b.offset);
    }
  }
}
// ---- end of pool_plane_forward ----

template <typename T>
struct FusedForwardNchw {
  const T* x;
  T* z;
  uint8_t* offsets;
  PoolProblem P;
  LrnCoeffs<AccOf<T>> lrn;
  FusedPlanes G;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t cells = G.plane_cells, C = P.C;
    const int ring = G.ring;
    Scratch s(2 * Scratch::bytes<F>(ring * cells) + 2 * Scratch::bytes<F>(cells) +
              PlanePoolScratch::bytes<F>(P.p, G));
    F* ring_r = s.take<F>(ring * cells);
    F* ring_sq = s.take<F>(ring * cells);
    F* sum = s.take<F>(cells);
    F* l = s.take<F>(cells);
    const PlanePoolScratch pool_scratch = PlanePoolScratch::take<F>(s, P.p, G);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t chunk = item % G.chunks, band = (item / G.chunks) % G.bands, n = item / G.chunks / G.bands;
      const int64_t c0 = chunk * G.chunk, c1 = std::min(C, c0 + G.chunk);
      const int64_t o0 = band * G.band, o1 = std::min(P.OH, o0 + G.band);
      const T* x_image = x + n * P.in.n;
      int64_t loaded = std::max<int64_t>(0, c0 - lrn.pre);  // planes [.., loaded) are in the rings
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t hi = std::min<int64_t>(c + lrn.post, C - 1);
        for (; loaded <= hi; ++loaded) {
          load_phase_plane(x_image + loaded * P.in.c, P, G, o0, ring_r + (loaded % ring) * cells,
                           ring_sq + (loaded % ring) * cells);
        }
        const int64_t lo = std::max<int64_t>(c - lrn.pre, 0);
        lrn_rows::copy_row(static_cast<const F*>(ring_sq + (lo % ring) * cells), sum, cells);
        for (int64_t j = lo + 1; j <= hi; ++j) {
          lrn_rows::add_row(static_cast<const F*>(ring_sq + (j % ring) * cells), sum, cells);
        }
        lrn_rows::forward_row(static_cast<const F*>(ring_r + (c % ring) * cells), static_cast<const F*>(sum), l, cells,
                              lrn);
        round_row_to_storage<T>(l, cells);
        pool_plane_forward(static_cast<const F*>(l), P, G, o0, o1, z + n * P.out.n + c * P.out.c,
                           offsets + n * P.out.n + c * P.out.c, pool_scratch);
      }
    }
  }
};

// NCHW forward of planes that max_pool_planes_apply (short rows, no window clipped: AlexNet's); item = (n, a chunk
// of channels). Each channel's L plane is computed whole in its own layout, as lrn_cpu.cpp's ring strategy
// computes lrn_forward (a ring of relu and squared planes, the window sum copied from its first channel's plane
// and the others added in order, the power over the plane: loops over the flattened plane, the sum and the power
// in one pass for windows of 5: lrn_rows::forward_window_row), and pooled by the
// max-pool forward's own plane pass (max_pool_plane_forward): both steps are the separate ops' loops, so values
// and offsets are theirs, and L never leaves the cache. half / bfloat16: L rounded to T as the separate chain
// stores it, pooled from there.
template <typename T>
struct FusedForwardNchwPlanes {
  const T* x;
  T* z;
  uint8_t* offsets;
  PoolProblem P;
  LrnCoeffs<AccOf<T>> lrn;
  int64_t chunk, chunks;  // channels per item; items per image

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    constexpr bool kConvert = !std::is_same_v<T, F>;
    const int64_t HW = P.H * P.W, out_plane = P.OH * P.OW, C = P.C;
    const int ring = static_cast<int>(std::min<int64_t>(lrn.pre + lrn.post + 1, C));
    Scratch s(2 * Scratch::bytes<F>(ring * HW) + 2 * Scratch::bytes<F>(HW) + Scratch::bytes<T>(kConvert ? HW : 0) +
              Scratch::bytes<F>(kConvert ? HW : 0) + 2 * Scratch::bytes<F>(HW) + 2 * Scratch::bytes<int32_t>(HW) +
              Scratch::bytes<const F*>(ring));
    F* ring_r = s.take<F>(ring * HW);
    F* ring_sq = s.take<F>(ring * HW);
    F* sum = s.take<F>(HW);
    F* l = s.take<F>(HW);
    T* l_stored = s.take<T>(kConvert ? HW : 0);
    F* converted = s.take<F>(kConvert ? HW : 0);
    F* row_best = s.take<F>(HW);
    int32_t* row_col = s.take<int32_t>(HW);
    F* win_best = s.take<F>(HW);
    int32_t* win_off = s.take<int32_t>(HW);
    const F** window = s.take<const F*>(ring);  // the squared planes of a channel's LRN window, in order
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / chunks, c0 = item % chunks * chunk, c1 = std::min(C, c0 + chunk);
      const T* x_image = x + n * P.in.n;
      int64_t loaded = std::max<int64_t>(0, c0 - lrn.pre);  // planes [.., loaded) are in the rings
      for (int64_t c = c0; c < c1; ++c) {
        const int64_t hi = std::min<int64_t>(c + lrn.post, C - 1);
        for (; loaded <= hi; ++loaded) {
          relu_square_row(x_image + loaded * P.in.c, ring_r + (loaded % ring) * HW, ring_sq + (loaded % ring) * HW,
                          HW);
        }
        const int64_t lo = std::max<int64_t>(c - lrn.pre, 0);
        for (int64_t j = lo; j <= hi; ++j) window[j - lo] = ring_sq + (j % ring) * HW;
        lrn_rows::forward_window_row(static_cast<const F*>(ring_r + (c % ring) * HW), window,
                                     static_cast<int>(hi - lo + 1), sum, l, HW, lrn);
        T* zp = z + n * P.out.n + c * out_plane;
        uint8_t* op = offsets + n * P.out.n + c * out_plane;
        const T* pooled;
        if constexpr (kConvert) {
          lrn_rows::store_row(static_cast<const F*>(l), l_stored, HW);
          pooled = l_stored;
        } else {
          pooled = l;
        }
        if (P.p.kH == 3 && P.p.kW == 3 && P.p.sW == 2) {  // AlexNet's pools
          max_pool_plane_forward<3, 3, 2>(pooled, P, converted, row_best, row_col, win_best, win_off, zp, op);
        } else {
          max_pool_plane_forward<0, 0, 0>(pooled, P, converted, row_best, row_col, win_best, win_off, zp, op);
        }
      }
    }
  }
};


}  // namespace

void max_pool2d_forward_cpu_isa(const TensorView& x, const TensorView& y, const TensorView& offsets,
                                const PoolParams& p, bool channels_last, CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "max_pool2d_forward_cpu: this CPU does not run the requested instruction set");
  if (y.numel == 0) return;
  AK_CHECK(offsets.numel == 0 || offsets.numel == y.numel,
           "max_pool2d_forward_cpu: offsets must have y's elements, or none (the values only)");
  const PoolProblem P = make_pool_problem(x, y, p, channels_last);
  const int64_t window = int64_t(p.kH) * p.kW;
  AK_CPU_DISPATCH_MAX_POOL_FORWARD(x.dtype, "max_pool2d_forward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    uint8_t* op = offsets.mutable_data_ptr<uint8_t>();
    // offsets_tag: std::true_type (y and offsets) or std::false_type (y only), as kOffsets of the kernels.
    const auto run = [&](auto offsets_tag) {
      constexpr bool kOffsets = decltype(offsets_tag)::value;
      if (channels_last) {
        // half / bfloat16 keep the ring: converting each input once beats converting it up to four times.
        if (std::is_same_v<scalar_t, AccOf<scalar_t>> && max_pool_nhwc_3x3_applies(P)) {
          parallel_items(P.N * P.OH, P.OW * P.C * window, MaxPoolForwardNhwc3x3<scalar_t, kOffsets>{xp, yp, op, P},
                         isa);
        } else {
          parallel_items(P.N * P.OH, P.OW * P.C * window, MaxPoolForwardNhwc<scalar_t, kOffsets>{xp, yp, op, P}, isa);
        }
      } else if (max_pool_planes_apply(P)) {
        parallel_items(P.N * P.C, P.H * P.W * (P.p.kH + P.p.kW),
                       MaxPoolForwardNchwPlanes<scalar_t, kOffsets>{xp, yp, op, P}, isa);
      } else {
        parallel_items(P.N * P.C * P.OH, P.OW * window,
                       MaxPoolForwardNchw<scalar_t, kOffsets>{xp, yp, op, P, interior_columns(P)}, isa);
      }
    };
    if (offsets.numel == 0) {
      run(std::false_type{});
    } else {
      run(std::true_type{});
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
    const LrnCoeffs<F> lrn = make_lrn_coeffs<F>(size, alpha, beta, k, x.size(1));
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* zp = z.mutable_data_ptr<scalar_t>();
    uint8_t* op = offsets.mutable_data_ptr<uint8_t>();
    if (channels_last) {
      // Per output row: about sH new input rows of LRN (the power dominates) and the pooling.
      parallel_items(P.N * P.OH, P.C * (P.W * p.sH * 8 + P.OW * p.kH * p.kW),
                     FusedForwardNhwc<scalar_t>{xp, zp, op, P, lrn}, isa);
    } else if (max_pool_planes_apply(P) && P.H * P.W <= kFusedPlaneCells) {
      // Per item: chunk channels of LRN (the power dominates) and their pooling.
      const int64_t chunks = fused_channel_chunks(P.N, P.C), chunk = pool_ceil_div(P.C, chunks);
      parallel_items(P.N * pool_ceil_div(P.C, chunk), chunk * P.H * P.W * 8,
                     FusedForwardNchwPlanes<scalar_t>{xp, zp, op, P, lrn, chunk, pool_ceil_div(P.C, chunk)}, isa);
    } else {
      const FusedPlanes G = make_fused_planes(P, lrn.pre + lrn.post + 1);
      parallel_items(P.N * G.bands * G.chunks, G.chunk * G.plane_cells * 8,
                     FusedForwardNchw<scalar_t>{xp, zp, op, P, lrn, G}, isa);
    }
  });
}

void relu_lrn_max_pool2d_backward_cpu_isa(const TensorView& x, const TensorView& dz, const TensorView& offsets,
                                          const TensorView& dx, int64_t size, double alpha, double beta, double k,
                                          const PoolParams& p, bool channels_last, CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "relu_lrn_max_pool2d_backward_cpu: this CPU does not run the requested instruction set");
  if (dx.numel == 0) return;
  const PoolProblem P = make_pool_problem(x, dz, p, channels_last);
  const OffsetTable table = make_offset_table(p);
  AK_CPU_DISPATCH(x.dtype, "relu_lrn_max_pool2d_backward_cpu", [&] {
    using F = AccOf<scalar_t>;
    const FusedBackward<scalar_t> items{x.const_data_ptr<scalar_t>(), dz.const_data_ptr<scalar_t>(),
                                        offsets.const_data_ptr<uint8_t>(), dx.mutable_data_ptr<scalar_t>(), P,
                                        make_lrn_coeffs<F>(size, alpha, beta, k, x.size(1)), &table};
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
