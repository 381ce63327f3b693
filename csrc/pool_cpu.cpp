// CPU kernels of 2-D max pooling and of the fused ReLU -> LRN -> max-pool block (math: pool_math.h).
// at::parallel_for over rows of work; values are read as F = float (float, half, bfloat16) or double, and
// the max-pool forward also takes the integer dtypes torch pools on the CPU (compared as themselves).
//
//   max pool, NCHW forward: an item is one output row (n, c, oh) (pool_row). Outputs whose window is
//     clipped along w run pool_argmax, the function the CUDA threads run; the others run the same
//     scan vectorised along ow (scan_interior), window elements in the same order.
//   max pool, NCHW backward: an item is one plane (n, c); pool_gather's sums formed as an ordered
//     scatter (see MaxPoolBackwardNchw), the same terms in the same order.
//   max pool, channels_last: an item is (n, oh) / (n, ih); a position's C channels are contiguous, so
//     the scan and the gather run over all channels at once (vectorised along c) with the same rules
//     (pool_takes, pool_route), window elements in the same order.
//   fused, either layout: an item is (n, oh) (forward) or (n, ih) (backward). The input rows it needs
//     are computed into channel-major [C][W] scratch rows (relu, squares, window sums, the LRN power:
//     loops along w that vectorise, in the order of lrn_cpu.cpp's, so that L equals lrn_forward's
//     output bit for bit when lrn_cpu.cpp also sums term by term, windows of up to 24 channels), then
//     pooled with pool_row / gathered with pool_gather. Forward keeps the last kH rows of L in a ring,
//     so consecutive output rows of a work chunk share them.
//
// Like lrn_cpu.cpp, the item loops are compiled for baseline x86-64 and for AVX2 + FMA, and the AVX2
// copy runs where the CPU has it.

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

// pool_argmax for the interior outputs [first, end) of one output row, vectorised along ow: each
// window element, in pool_argmax's order (rows, then columns), is offered to all outputs at once.
// rows[ih - h.begin] = input row ih as F. kStride = sW when it is 1 or 2 (strided loads the
// compiler vectorises), 0 for any other stride (`stride`).
template <int kStride, typename F>
AK_ALWAYS_INLINE void scan_interior(const F* const* rows, const PoolSpan& h, const PoolParams& p, int64_t stride,
                                    const ColumnRange& cols, F* best, int32_t* best_offset) {
  const int64_t sW = kStride != 0 ? kStride : stride;
  const int32_t first_offset = pool_offset(h.begin, 0, h.start, 0, p.kW);  // interior: the window's column 0
  for (int64_t ow = cols.first; ow < cols.end; ++ow) {
    best[ow] = pool_lowest<F>();
    best_offset[ow] = first_offset;
  }
  for (int64_t ih = h.begin; ih < h.end; ++ih) {
    for (int kx = 0; kx < p.kW; ++kx) {
      const F* row = rows[ih - h.begin];
      const int64_t shift = kx - p.pW;  // output ow reads column ow*sW - pW + kx, >= 0 in the interior
      const int32_t offset = pool_offset(ih, kx, h.start, 0, p.kW);
      for (int64_t ow = cols.first; ow < cols.end; ++ow) {
        const F v = row[ow * sW + shift];
        const bool take = pool_takes(v, best[ow]);
        best[ow] = take ? v : best[ow];
        best_offset[ow] = take ? offset : best_offset[ow];
      }
    }
  }
}

// (ih, iw) -> rows[ih - first_row][iw]: a window's input rows held as F.
template <typename F>
struct RowsReader {
  const F* const* rows;
  int64_t first_row;
  AK_ALWAYS_INLINE F operator()(int64_t ih, int64_t iw) const { return rows[ih - first_row][iw]; }
};

// pool_argmax of every output of one output row into best / best_offset [OW], from the window's input
// rows as F (rows[ih - h.begin]): windows clipped along w one at a time, the interior ones by
// scan_interior.
template <typename F>
AK_ALWAYS_INLINE void pool_row(const F* const* rows, const PoolSpan& h, const PoolProblem& P, const ColumnRange& cols,
                               F* best, int32_t* best_offset) {
  const RowsReader<F> reader{rows, h.begin};
  for (int64_t ow = 0; ow < P.OW; ++ow) {
    if (ow == cols.first) ow = cols.end;  // skip the interior
    if (ow == P.OW) break;
    const PoolArgmax<F> result = pool_argmax<F>(h, pool_window(ow, P.p.kW, P.p.sW, P.p.pW, P.W), P.p.kW, reader);
    best[ow] = result.value;
    best_offset[ow] = result.offset;
  }
  switch (P.p.sW) {
    case 1: scan_interior<1>(rows, h, P.p, 1, cols, best, best_offset); break;
    case 2: scan_interior<2>(rows, h, P.p, 2, cols, best, best_offset); break;
    default: scan_interior<0>(rows, h, P.p, P.p.sW, cols, best, best_offset); break;
  }
}

// NCHW forward; item = output row (n, c, oh).
template <typename T>
struct MaxPoolForwardNchw {
  const T* x;
  T* y;
  uint8_t* offsets;
  PoolProblem P;
  ColumnRange cols;  // interior_columns(P)

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    constexpr bool kConvert = !std::is_same_v<T, F>;  // half / bfloat16: rows converted to float first
    std::vector<F> best(static_cast<size_t>(P.OW));
    std::vector<int32_t> best_offset(static_cast<size_t>(P.OW));
    std::vector<F> converted(kConvert ? static_cast<size_t>(P.p.kH * P.W) : 0);
    std::vector<const F*> rows(static_cast<size_t>(P.p.kH));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t plane = item / P.OH;  // n * C + c
      const int64_t oh = item % P.OH;
      const PoolSpan h = pool_window(oh, P.p.kH, P.p.sH, P.p.pH, P.H);
      for (int64_t ih = h.begin; ih < h.end; ++ih) {
        const T* src = x + plane * P.in.c + ih * P.in.h;
        if constexpr (kConvert) {
          F* dst = converted.data() + (ih - h.begin) * P.W;
          for (int64_t iw = 0; iw < P.W; ++iw) dst[iw] = static_cast<F>(src[iw]);
          rows[ih - h.begin] = dst;
        } else {
          rows[ih - h.begin] = src;
        }
      }
      pool_row(rows.data(), h, P, cols, best.data(), best_offset.data());
      // Locals: the uint8 stores may alias anything reached through `this` (members would be reloaded).
      const int64_t OW = P.OW;
      T* y_row = y + item * OW;
      uint8_t* offsets_row = offsets + item * OW;
      for (int64_t ow = 0; ow < OW; ++ow) {
        y_row[ow] = static_cast<T>(best[ow]);
        offsets_row[ow] = static_cast<uint8_t>(best_offset[ow]);
      }
    }
  }
};

// channels_last forward; item = (n, oh). Per output position, the window's elements in pool_argmax's
// order, each one a contiguous run of C channels.
template <typename T>
struct MaxPoolForwardNhwc {
  const T* x;
  T* y;
  uint8_t* offsets;
  PoolProblem P;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t C = P.C;
    std::vector<F> best(static_cast<size_t>(C));
    std::vector<int32_t> best_offset(static_cast<size_t>(C));
    F* best_p = best.data();
    int32_t* offset_p = best_offset.data();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / P.OH;
      const int64_t oh = item % P.OH;
      const PoolSpan h = pool_window(oh, P.p.kH, P.p.sH, P.p.pH, P.H);
      for (int64_t ow = 0; ow < P.OW; ++ow) {
        const PoolSpan w = pool_window(ow, P.p.kW, P.p.sW, P.p.pW, P.W);
        const int32_t first = pool_offset(h.begin, w.begin, h.start, w.start, P.p.kW);
        std::fill(best_p, best_p + C, pool_lowest<F>());
        std::fill(offset_p, offset_p + C, first);
        for (int64_t ih = h.begin; ih < h.end; ++ih) {
          for (int64_t iw = w.begin; iw < w.end; ++iw) {
            const T* src = x + n * P.in.n + ih * P.in.h + iw * P.in.w;
            const int32_t offset = pool_offset(ih, iw, h.start, w.start, P.p.kW);
            for (int64_t c = 0; c < C; ++c) {
              const F v = static_cast<F>(src[c]);
              const bool take = pool_takes(v, best_p[c]);
              best_p[c] = take ? v : best_p[c];
              offset_p[c] = take ? offset : offset_p[c];
            }
          }
        }
        const int64_t o = n * P.out.n + oh * P.out.h + ow * P.out.w;
        T* y_position = y + o;  // locals: see MaxPoolForwardNchw
        uint8_t* offsets_position = offsets + o;
        for (int64_t c = 0; c < C; ++c) {
          y_position[c] = static_cast<T>(best_p[c]);
          offsets_position[c] = static_cast<uint8_t>(offset_p[c]);
        }
      }
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
    std::vector<F> converted(kConvert ? static_cast<size_t>(in_plane) : 0);
    for (int64_t plane = begin; plane < end; ++plane) {
      F* acc;
      if constexpr (kConvert) {
        acc = converted.data();
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
  const PoolRange* columns;

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t C = P.C;
    std::vector<F> acc(static_cast<size_t>(C));
    F* acc_p = acc.data();
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / P.H;
      const int64_t ih = item % P.H;
      const PoolRange rows = pool_covering_outputs(ih, P.p.kH, P.p.sH, P.p.pH, P.OH);
      for (int64_t iw = 0; iw < P.W; ++iw) {
        std::fill(acc_p, acc_p + C, F(0));
        for (int64_t oh = rows.first; oh <= rows.last; ++oh) {
          for (int64_t ow = columns[iw].first; ow <= columns[iw].last; ++ow) {
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

// Forward; item = output row (n, oh).
template <typename T>
struct FusedForward {
  const T* x;
  T* z;
  uint8_t* offsets;
  PoolProblem P;
  ColumnRange cols;  // interior_columns(P)
  LrnCoeffs<AccOf<T>> lrn;

  // L of input row (n, ih) into out ([C][W]); xr, r, sums are [C][W] scratch.
  AK_ALWAYS_INLINE void lrn_row(int64_t n, int64_t ih, AccOf<T>* xr, AccOf<T>* r, AccOf<T>* sums,
                                AccOf<T>* out) const {
    using F = AccOf<T>;
    const int64_t row_size = P.C * P.W;
    load_input_row(x, P, n, ih, xr, r);
    F* r2 = xr;  // x is not needed past relu
    for (int64_t i = 0; i < row_size; ++i) r2[i] = r[i] * r[i];
    window_sums(r2, P.W, static_cast<int>(P.C), lrn.pre, lrn.post, sums);
    for (int64_t i = 0; i < row_size; ++i) out[i] = fused_lrn_output<T>(r[i], sums[i], lrn);
  }

  AK_ALWAYS_INLINE void operator()(int64_t begin, int64_t end) const {
    using F = AccOf<T>;
    const int64_t C = P.C, W = P.W, row_size = C * W;
    const int kH = P.p.kH;
    std::vector<F> scratch(static_cast<size_t>((kH + 3) * row_size));
    F* ring = scratch.data();  // input row ih's L in slot ih % kH
    F* xr = ring + kH * row_size;
    F* r = xr + row_size;
    F* sums = r + row_size;
    std::vector<int64_t> slot_holds(static_cast<size_t>(kH), -1);  // n * H + ih, or -1
    std::vector<const F*> window_rows(static_cast<size_t>(kH));   // L of rows h.begin, h.begin + 1, ...
    std::vector<const F*> channel_rows(static_cast<size_t>(kH));  // channel c of those
    std::vector<F> best(static_cast<size_t>(P.OW));
    std::vector<int32_t> best_offset(static_cast<size_t>(P.OW));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / P.OH;
      const int64_t oh = item % P.OH;
      const PoolSpan h = pool_window(oh, P.p.kH, P.p.sH, P.p.pH, P.H);
      // The window's kH consecutive rows have distinct slots: filling one never evicts another.
      for (int64_t ih = h.begin; ih < h.end; ++ih) {
        const int64_t slot = ih % kH;
        F* row = ring + slot * row_size;
        if (slot_holds[slot] != n * P.H + ih) {
          lrn_row(n, ih, xr, r, sums, row);
          slot_holds[slot] = n * P.H + ih;
        }
        window_rows[ih - h.begin] = row;
      }
      for (int64_t c = 0; c < C; ++c) {
        for (int64_t i = 0; i < h.end - h.begin; ++i) channel_rows[i] = window_rows[i] + c * W;
        pool_row(channel_rows.data(), h, P, cols, best.data(), best_offset.data());
        const int64_t o = n * P.out.n + c * P.out.c + oh * P.out.h;
        T* z_row = z + o;  // locals: see MaxPoolForwardNchw
        uint8_t* offsets_row = offsets + o;
        const int64_t OW = P.OW, ws = P.out.w;
        for (int64_t ow = 0; ow < OW; ++ow) {
          z_row[ow * ws] = static_cast<T>(best[ow]);
          offsets_row[ow * ws] = static_cast<uint8_t>(best_offset[ow]);
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
  const std::vector<PoolRange> columns = covering_columns(P);
  const OffsetTable table = make_offset_table(p);
  AK_CPU_DISPATCH(dx.dtype, "max_pool2d_backward_cpu", [&] {
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    const uint8_t* op = offsets.const_data_ptr<uint8_t>();
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    if (channels_last) {
      parallel_items(P.N * P.H, P.W * P.C * 4, MaxPoolBackwardNhwc<scalar_t>{dyp, op, dxp, P, columns.data()}, isa);
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

void relu_lrn_max_pool2d_forward_cpu(const TensorView& x, const TensorView& z, const TensorView& offsets,
                                     int64_t size, double alpha, double beta, double k, const PoolParams& p,
                                     bool channels_last) {
  if (z.numel == 0) return;
  const PoolProblem P = make_pool_problem(x, z, p, channels_last);
  AK_CPU_DISPATCH(x.dtype, "relu_lrn_max_pool2d_forward_cpu", [&] {
    using F = AccOf<scalar_t>;
    const FusedForward<scalar_t> items{x.const_data_ptr<scalar_t>(), z.mutable_data_ptr<scalar_t>(),
                                       offsets.mutable_data_ptr<uint8_t>(), P, interior_columns(P),
                                       make_lrn_coeffs<F>(size, alpha, beta, k, x.size(1))};
    // Per output row: about sH new input rows of LRN (the power dominates) and the pooling.
    parallel_items(P.N * P.OH, P.C * (P.W * p.sH * 8 + P.OW * p.kH * p.kW), items);
  });
}

void relu_lrn_max_pool2d_backward_cpu(const TensorView& x, const TensorView& dz, const TensorView& offsets,
                                      const TensorView& dx, int64_t size, double alpha, double beta, double k,
                                      const PoolParams& p, bool channels_last) {
  if (dx.numel == 0) return;
  const PoolProblem P = make_pool_problem(x, dz, p, channels_last);
  const std::vector<PoolRange> columns = covering_columns(P);
  AK_CPU_DISPATCH(x.dtype, "relu_lrn_max_pool2d_backward_cpu", [&] {
    using F = AccOf<scalar_t>;
    const FusedBackward<scalar_t> items{x.const_data_ptr<scalar_t>(), dz.const_data_ptr<scalar_t>(),
                                        offsets.const_data_ptr<uint8_t>(), dx.mutable_data_ptr<scalar_t>(), P,
                                        make_lrn_coeffs<F>(size, alpha, beta, k, x.size(1)), columns.data()};
    parallel_items(P.N * P.H, P.C * P.W * 16, items);
  });
}

}  // namespace ak
