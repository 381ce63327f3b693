// CPU kernels of cross-channel LRN (math: lrn_math.h). torch's parallel_for over work items; every element
// loop runs over contiguous floats so that it vectorises, whatever the layout and dtype (values are
// converted to float when read and back when written).
//
// Three strategies, by layout and window width:
//   * ring   (NCHW, direct windows): a work item is one batch n and a block of positions. Channel rows
//     stream through a ring of window-length rows (x, x^2, and for backward t and dy * scale), so the
//     tensor is read and written in long contiguous runs and the working set stays in L1/L2.
//   * rows   (channels_last, or S == 1, direct windows, C >= kRowsMinChannels): a position's C
//     channels are contiguous; every window sum is a sum of shifted copies of a zero-padded row.
//   * planes (wide windows, or few channels in channels_last): a work item gathers C x width values
//     into float planes (plane c = channel c, contiguous in the position) and sums windows with
//     the block scheme below.
//
// Window sums are sums of exactly the window's terms, formed by additions only. Windows of up to
// kDirectSumMaxTerms channels are added term by term; wider ones use the van Herk / Gil-Werman block
// scheme, O(C) whatever n: the (zero-padded) channel axis is cut into blocks of L = window length,
// within each block running prefix and suffix sums are formed, and every length-L window is one
// block's suffix plus the next block's prefix (or one whole block). Nothing is subtracted, so a huge
// value elsewhere on the channel axis cannot cancel a window's small sum, as it does with running
// add-and-subtract sums or differences of global prefix sums.
//
// Each parallel chunk takes its scratch from the calling thread's Scratch block (cpu_target.h): nothing is
// allocated per call beyond the outputs once a thread has seen its largest problem. Every scratch element a
// loop reads was written first in the same call (the zero padding of rows and blocks included).
//
// The element loops are compiled three times, for baseline x86-64 (SSE2), AVX2 + FMA and AVX-512, and the
// widest copy the CPU runs is chosen at run time (cpu_isa.h; the *_isa entry points take it as an argument
// so that a test harness can run each copy).

// Lets GCC if-convert float selects (the clamps of lrn_exp2_poly) so that the element loops
// vectorise. Nothing here reads the floating-point exception flags. Before every include so that
// all functions of this file agree on it (GCC will not inline across differing options).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

#include <algorithm>
#include <type_traits>

#include "cpu_target.h"
#include "lrn.h"
#include "lrn_cpu_rows.h"
#include "lrn_math.h"

namespace ak {
namespace {

// Windows of up to this many channels are summed term by term; wider ones by the block scheme.
constexpr int64_t kDirectSumMaxTerms = 24;
// Ring: positions per work item at most (long rows, small rings).
constexpr int64_t kRingMaxWidth = 2048;
// Rows: elements per work item, about.
constexpr int64_t kRowsItemElements = 1 << 15;
// channels_last with fewer channels than this goes through planes (vectors along positions).
constexpr int64_t kRowsMinChannels = 16;
// Planes: scratch floats per thread for all planes of an item (1 MiB).
constexpr int64_t kPlaneScratchFloats = 1 << 18;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Accumulation type: float for float / half / bfloat16 (as on the GPU), double for double.
template <typename T>
using AccOf = std::conditional_t<std::is_same_v<T, double>, double, float>;

// alpha / n, beta, k and 2 * alpha * beta / n in the accumulation type (computed in double first,
// so the float values are those of make_lrn_params, which the GPU kernels use).
template <typename Acc>
struct Coeffs {
  Acc alpha_over_n, beta, k, coef;
};

// ----------------------------------------------------------------------------------------------
// Element loops over contiguous floats (the forward ones, shared with pool_cpu.cpp: lrn_cpu_rows.h)
// ----------------------------------------------------------------------------------------------

using namespace lrn_rows;

// dy_scale = dy * base^(-beta), t = dy * x * base^(-beta-1)
template <typename Acc>
AK_ALWAYS_INLINE void backward_terms_row_with(const Acc* x, const Acc* dy, const Acc* sumsq, Acc* dy_scale, Acc* t,
                                              int64_t n, const Coeffs<Acc>& p, Acc beta) {
  const Acc alpha_over_n = p.alpha_over_n, k = p.k;
  for (int64_t i = 0; i < n; ++i) {
    const Acc base = lrn_base(sumsq[i], alpha_over_n, k);
    const Acc scale = lrn_scale(base, beta);
    dy_scale[i] = dy[i] * scale;
    t[i] = lrn_t_term(dy[i], x[i], base, scale);
  }
}

template <typename Acc>
AK_ALWAYS_INLINE void backward_terms_row(const Acc* x, const Acc* dy, const Acc* sumsq, Acc* dy_scale, Acc* t,
                                         int64_t n, const Coeffs<Acc>& p) {
  if (lrn_beta_is_three_quarters(p.beta)) {
    backward_terms_row_with(x, dy, sumsq, dy_scale, t, n, p, static_cast<Acc>(0.75f));
  } else {
    backward_terms_row_with(x, dy, sumsq, dy_scale, t, n, p, p.beta);
  }
}

// dx = dy_scale - coef * x * tsum
template <typename Acc>
AK_ALWAYS_INLINE void backward_row(const Acc* dy_scale, const Acc* x, const Acc* tsum, Acc* dx, int64_t n,
                                   const Coeffs<Acc>& p) {
  const Acc coef = p.coef;
  for (int64_t i = 0; i < n; ++i) dx[i] = lrn_backward_value(dy_scale[i], x[i], tsum[i], coef);
}

// ----------------------------------------------------------------------------------------------
// Windows
// ----------------------------------------------------------------------------------------------

// [c - behind, c + ahead] clipped to [0, C). W(c) is (pre, post); the transposed window (post, pre).
struct WindowSpec {
  int C;
  int behind;   // clipped to C - 1: channels further away are all padding
  int ahead;
  int length;   // behind + ahead + 1
  bool blocked; // block scheme rather than term-by-term sums
  // Block scheme: padded row r in [0, padded_rows) is channel r - behind (zero outside [0, C)).
  int padded_rows;
};

WindowSpec make_window(int64_t C, int behind, int ahead) {
  WindowSpec w;
  w.C = static_cast<int>(C);
  w.behind = static_cast<int>(std::min<int64_t>(behind, C - 1));
  w.ahead = static_cast<int>(std::min<int64_t>(ahead, C - 1));
  w.length = w.behind + w.ahead + 1;
  w.blocked = std::min<int64_t>(w.length, C) > kDirectSumMaxTerms;
  w.padded_rows = w.C + w.length - 1;
  return w;
}

// ----------------------------------------------------------------------------------------------
// The problem: strategy, work items, scratch
// ----------------------------------------------------------------------------------------------

enum class Strategy { kRing, kRows, kPlanes };

// Planes: element (batch b, channel c, position q) at b*batch_stride + c*channel_stride + q*position_stride.
struct PlaneLayout {
  int64_t batches;
  int64_t positions;
  int64_t batch_stride;
  int64_t channel_stride;
  int64_t position_stride;
};

struct CpuProblem {
  Strategy strategy;
  bool backward;
  int64_t N, C, S;
  Coeffs<double> coeffs;
  WindowSpec window;      // W(c)
  WindowSpec transposed;  // {j : c in W(j)}
  int64_t items;
  int64_t width;              // ring: positions per item; rows: positions per item; planes: plane pitch
  int64_t blocks_per_batch;   // ring, planes
  int ring;                   // ring: rows per ring
  PlaneLayout layout;         // planes
  int planes;                 // planes: float planes per item
  int64_t scratch_elements;  // of the accumulation type
};

CpuProblem make_problem(const TensorView& x, int64_t size, double alpha, double beta, double k, bool channels_last,
                        bool backward) {
  CpuProblem P{};
  P.backward = backward;
  P.N = x.size(0);
  P.C = x.size(1);
  P.S = x.size(2);
  const int pre = lrn_clipped_reach(lrn_pre(size), P.C), post = lrn_clipped_reach(lrn_post(size), P.C);
  P.coeffs = Coeffs<double>{alpha / static_cast<double>(size), beta, k, 2.0 * alpha * beta / static_cast<double>(size)};
  P.window = make_window(P.C, pre, post);
  P.transposed = make_window(P.C, post, pre);
  const bool rows_of_channels = channels_last || P.S == 1;  // memory is [N*S][C]
  const int64_t threads = std::max(1, num_threads());
  const int64_t C = P.C;

  if (P.window.blocked || (rows_of_channels && C < kRowsMinChannels)) {
    P.strategy = Strategy::kPlanes;
    P.layout = rows_of_channels ? PlaneLayout{1, P.N * P.S, 0, 1, C} : PlaneLayout{P.N, P.S, C * P.S, P.S, 1};
    P.planes = backward ? 5 : 3;  // x, x^2 (later dx), y | x, dy, x^2 (later dx), dy * scale, t
    const int64_t partial_planes = P.window.blocked ? ceil_div(2 * int64_t(P.window.padded_rows) + 1, C) : 0;
    const int64_t max_width = std::max<int64_t>(8, kPlaneScratchFloats / ((P.planes + 1 + partial_planes) * C));
    const int64_t blocks = ceil_div(P.layout.positions, max_width);
    P.width = std::min(P.layout.positions, round_up(ceil_div(P.layout.positions, blocks), 8));
    P.blocks_per_batch = ceil_div(P.layout.positions, P.width);
    P.items = P.layout.batches * P.blocks_per_batch;
    P.scratch_elements = (P.planes * C + 1) * P.width;
    if (P.window.blocked) P.scratch_elements += (2 * int64_t(P.window.padded_rows) + 1) * P.width;
  } else if (rows_of_channels) {
    P.strategy = Strategy::kRows;
    const int64_t positions = P.N * P.S;
    int64_t width = std::max<int64_t>(1, kRowsItemElements / C);
    width = std::min(width, std::max<int64_t>(1, ceil_div(positions, 4 * threads)));  // enough items
    P.width = width;
    P.items = ceil_div(positions, width);
    // x, dy, x^2 (padded), sum, dy * scale, t (padded), out
    P.scratch_elements = 7 * C + 2 * int64_t(P.window.length);
  } else {
    P.strategy = Strategy::kRing;
    int64_t blocks = ceil_div(P.S, kRingMaxWidth);
    if (P.N * blocks < 4 * threads) {  // few batches: split the positions further, not below 64
      blocks = std::max(blocks, std::min(ceil_div(P.S, 64), ceil_div(4 * threads, P.N)));
    }
    P.width = std::min(P.S, round_up(ceil_div(P.S, blocks), 16));
    P.blocks_per_batch = ceil_div(P.S, P.width);
    P.items = P.N * P.blocks_per_batch;
    P.ring = static_cast<int>(std::min<int64_t>(P.window.length, C));
    // rings: x, x^2, t, dy * scale; rows: sum, dy, out
    P.scratch_elements = (4 * int64_t(P.ring) + 3) * P.width;
  }
  return P;
}

template <typename Acc>
Coeffs<Acc> coeffs_of(const CpuProblem& P) {
  return Coeffs<Acc>{static_cast<Acc>(P.coeffs.alpha_over_n), static_cast<Acc>(P.coeffs.beta),
                     static_cast<Acc>(P.coeffs.k), static_cast<Acc>(P.coeffs.coef)};
}

// ----------------------------------------------------------------------------------------------
// Ring (NCHW, direct windows)
// ----------------------------------------------------------------------------------------------
//
// Rows of batch n, positions [s0, s0 + count). Row j lives in ring slot j % ring. Forward at channel c
// needs x^2 rows [c - pre, c + post]; loading row c + post evicts row c + post - ring < c - pre.
// Backward at channel c needs t rows [c - post, c + pre]; t_j needs x^2 rows [j - pre, j + post] and
// is computed (with dy_scale_j) just before it is first needed, i.e. j = c + pre, which loads x rows
// up to c + pre + post and evicts only rows < c.

template <typename T>
AK_ALWAYS_INLINE void ring_forward_items(const T* x, T* y, const CpuProblem& P, int64_t begin, int64_t end,
                                         AccOf<T>* scratch) {
  using Acc = AccOf<T>;
  const Coeffs<Acc> coeffs = coeffs_of<Acc>(P);
  const int64_t C = P.C, S = P.S, pitch = P.width;
  const int ring = P.ring;
  const int pre = P.window.behind, post = P.window.ahead;
  Acc* ring_x = scratch;
  Acc* ring_sq = ring_x + ring * pitch;
  Acc* sum = ring_sq + ring * pitch;
  Acc* out = sum + pitch;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / P.blocks_per_batch;
    const int64_t s0 = (item % P.blocks_per_batch) * P.width;
    const int64_t count = std::min(P.width, S - s0);
    const T* x_rows = x + n * C * S + s0;
    T* y_rows = y + n * C * S + s0;
    int64_t loaded = 0;  // rows [0, loaded) have been through the ring
    for (int64_t c = 0; c < C; ++c) {
      const int64_t hi = std::min(c + post, C - 1);
      for (; loaded <= hi; ++loaded) {
        Acc* xr = ring_x + (loaded % ring) * pitch;
        load_row(x_rows + loaded * S, xr, count);
        square_row(xr, ring_sq + (loaded % ring) * pitch, count);
      }
      const int64_t lo = std::max<int64_t>(c - pre, 0);
      copy_row(ring_sq + (lo % ring) * pitch, sum, count);
      for (int64_t j = lo + 1; j <= hi; ++j) add_row(ring_sq + (j % ring) * pitch, sum, count);
      const Acc* xc = ring_x + (c % ring) * pitch;
      if constexpr (std::is_same_v<T, Acc>) {
        forward_row(xc, sum, y_rows + c * S, count, coeffs);
      } else {
        forward_row(xc, sum, out, count, coeffs);
        store_row(out, y_rows + c * S, count);
      }
    }
  }
}

template <typename T>
AK_ALWAYS_INLINE void ring_backward_items(const T* x, const T* dy, T* dx, const CpuProblem& P, int64_t begin,
                                          int64_t end, AccOf<T>* scratch) {
  using Acc = AccOf<T>;
  const Coeffs<Acc> coeffs = coeffs_of<Acc>(P);
  const int64_t C = P.C, S = P.S, pitch = P.width;
  const int ring = P.ring;
  const int pre = P.window.behind, post = P.window.ahead;
  Acc* ring_x = scratch;
  Acc* ring_sq = ring_x + ring * pitch;
  Acc* ring_t = ring_sq + ring * pitch;
  Acc* ring_g = ring_t + ring * pitch;  // dy * scale
  Acc* sum = ring_g + ring * pitch;
  Acc* dy_row = sum + pitch;
  Acc* out = dy_row + pitch;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t n = item / P.blocks_per_batch;
    const int64_t s0 = (item % P.blocks_per_batch) * P.width;
    const int64_t count = std::min(P.width, S - s0);
    const int64_t offset = n * C * S + s0;
    int64_t loaded = 0;    // x rows [0, loaded) have been through the ring
    int64_t t_ready = 0;   // t rows [0, t_ready) have been computed
    for (int64_t c = 0; c < C; ++c) {
      const int64_t t_hi = std::min(c + pre, C - 1);
      for (; t_ready <= t_hi; ++t_ready) {
        const int64_t j = t_ready;
        const int64_t hi = std::min(j + post, C - 1);
        for (; loaded <= hi; ++loaded) {
          Acc* xr = ring_x + (loaded % ring) * pitch;
          load_row(x + offset + loaded * S, xr, count);
          square_row(xr, ring_sq + (loaded % ring) * pitch, count);
        }
        const int64_t lo = std::max<int64_t>(j - pre, 0);
        copy_row(ring_sq + (lo % ring) * pitch, sum, count);
        for (int64_t i = lo + 1; i <= hi; ++i) add_row(ring_sq + (i % ring) * pitch, sum, count);
        const Acc* dyj;
        if constexpr (std::is_same_v<T, Acc>) {
          dyj = dy + offset + j * S;
        } else {
          load_row(dy + offset + j * S, dy_row, count);
          dyj = dy_row;
        }
        backward_terms_row(ring_x + (j % ring) * pitch, dyj, sum, ring_g + (j % ring) * pitch,
                           ring_t + (j % ring) * pitch, count, coeffs);
      }
      const int64_t lo = std::max<int64_t>(c - post, 0);
      copy_row(ring_t + (lo % ring) * pitch, sum, count);
      for (int64_t j = lo + 1; j <= t_hi; ++j) add_row(ring_t + (j % ring) * pitch, sum, count);
      const Acc* xc = ring_x + (c % ring) * pitch;
      const Acc* gc = ring_g + (c % ring) * pitch;
      if constexpr (std::is_same_v<T, Acc>) {
        backward_row(gc, xc, sum, dx + offset + c * S, count, coeffs);
      } else {
        backward_row(gc, xc, sum, out, count, coeffs);
        store_row(out, dx + offset + c * S, count);
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------
// Rows (channels_last or S == 1, direct windows): position q's channels are x[q*C .. q*C + C)
// ----------------------------------------------------------------------------------------------
//
// padded[behind + c] = value of channel c, zeros around: the window sum at c is
// sum_{d < length} padded[c + d].

template <typename T>
AK_ALWAYS_INLINE void rows_forward_items(const T* x, T* y, const CpuProblem& P, int64_t begin, int64_t end,
                                         AccOf<T>* scratch) {
  using Acc = AccOf<T>;
  const Coeffs<Acc> coeffs = coeffs_of<Acc>(P);
  const int64_t C = P.C, positions = P.N * P.S;
  const WindowSpec& w = P.window;
  Acc* xr = scratch;
  Acc* sq_padded = xr + C;  // C + length - 1
  Acc* sum = sq_padded + C + w.length;
  Acc* out = sum + C;
  std::fill(sq_padded, sq_padded + C + w.length - 1, 0.0f);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t q_end = std::min(positions, (item + 1) * P.width);
    for (int64_t q = item * P.width; q < q_end; ++q) {
      load_row(x + q * C, xr, C);
      square_row(xr, sq_padded + w.behind, C);
      shifted_sum_row(sq_padded, w.length, sum, C);
      if constexpr (std::is_same_v<T, Acc>) {
        forward_row(xr, sum, y + q * C, C, coeffs);
      } else {
        forward_row(xr, sum, out, C, coeffs);
        store_row(out, y + q * C, C);
      }
    }
  }
}

template <typename T>
AK_ALWAYS_INLINE void rows_backward_items(const T* x, const T* dy, T* dx, const CpuProblem& P, int64_t begin,
                                          int64_t end, AccOf<T>* scratch) {
  using Acc = AccOf<T>;
  const Coeffs<Acc> coeffs = coeffs_of<Acc>(P);
  const int64_t C = P.C, positions = P.N * P.S;
  const WindowSpec& w = P.window;
  const WindowSpec& wt = P.transposed;
  Acc* xr = scratch;
  Acc* dyr = xr + C;
  Acc* sq_padded = dyr + C;        // C + length - 1
  Acc* sum = sq_padded + C + w.length;
  Acc* g = sum + C;                // dy * scale
  Acc* t_padded = g + C;           // C + length - 1 (transposed padding)
  Acc* out = t_padded + C + w.length;
  std::fill(sq_padded, sq_padded + C + w.length - 1, 0.0f);
  std::fill(t_padded, t_padded + C + wt.length - 1, 0.0f);
  for (int64_t item = begin; item < end; ++item) {
    const int64_t q_end = std::min(positions, (item + 1) * P.width);
    for (int64_t q = item * P.width; q < q_end; ++q) {
      load_row(x + q * C, xr, C);
      load_row(dy + q * C, dyr, C);
      square_row(xr, sq_padded + w.behind, C);
      shifted_sum_row(sq_padded, w.length, sum, C);
      backward_terms_row(xr, dyr, sum, g, t_padded + wt.behind, C, coeffs);
      shifted_sum_row(t_padded, wt.length, sum, C);
      if constexpr (std::is_same_v<T, Acc>) {
        backward_row(g, xr, sum, dx + q * C, C, coeffs);
      } else {
        backward_row(g, xr, sum, out, C, coeffs);
        store_row(out, dx + q * C, C);
      }
    }
  }
}

// ----------------------------------------------------------------------------------------------
// Planes (wide windows; channels_last with few channels)
// ----------------------------------------------------------------------------------------------

template <typename T, typename Acc>
AK_ALWAYS_INLINE void load_planes(const T* src, const PlaneLayout& L, int64_t C, int64_t b, int64_t p0,
                                  int64_t count, int64_t pitch, Acc* planes) {
  const T* base = src + b * L.batch_stride + p0 * L.position_stride;
  if (L.position_stride == 1) {
    for (int64_t c = 0; c < C; ++c) load_row(base + c * L.channel_stride, planes + c * pitch, count);
  } else {  // channel_stride == 1: a position's channels are contiguous
    for (int64_t i = 0; i < count; ++i) {
      const T* channels = base + i * L.position_stride;
      for (int64_t c = 0; c < C; ++c) planes[c * pitch + i] = static_cast<Acc>(channels[c]);
    }
  }
}

template <typename T, typename Acc>
AK_ALWAYS_INLINE void store_planes(T* dst, const PlaneLayout& L, int64_t C, int64_t b, int64_t p0, int64_t count,
                                   int64_t pitch, const Acc* planes) {
  T* base = dst + b * L.batch_stride + p0 * L.position_stride;
  if (L.position_stride == 1) {
    for (int64_t c = 0; c < C; ++c) store_row(planes + c * pitch, base + c * L.channel_stride, count);
  } else {
    for (int64_t i = 0; i < count; ++i) {
      T* channels = base + i * L.position_stride;
      for (int64_t c = 0; c < C; ++c) channels[c] = static_cast<T>(planes[c * pitch + i]);
    }
  }
}

// Block scheme, step 1: for blocks [b0, b0 + L) of padded rows, prefix[r] = rows b0..r and
// suffix[r] = rows r..block end. `partial` holds padded_rows prefix rows, then as many suffix rows,
// then a zero row (the padding).
template <typename Acc>
AK_ALWAYS_INLINE void build_block_sums(const WindowSpec& w, const Acc* planes, int64_t pitch, int64_t count,
                                       Acc* partial) {
  Acc* prefix = partial;
  Acc* suffix = partial + int64_t(w.padded_rows) * pitch;
  Acc* zero_row = partial + 2 * int64_t(w.padded_rows) * pitch;
  std::fill(zero_row, zero_row + count, 0.0f);
  auto padded_row = [&](int r) -> const Acc* {
    const int c = r - w.behind;
    return (c >= 0 && c < w.C) ? planes + int64_t(c) * pitch : zero_row;
  };
  for (int b0 = 0; b0 < w.padded_rows; b0 += w.length) {
    const int b1 = std::min(b0 + w.length, w.padded_rows);  // block end (exclusive)
    copy_row(padded_row(b0), prefix + int64_t(b0) * pitch, count);
    for (int r = b0 + 1; r < b1; ++r) {
      Acc* cur = prefix + int64_t(r) * pitch;
      copy_row(prefix + int64_t(r - 1) * pitch, cur, count);
      add_row(padded_row(r), cur, count);
    }
    copy_row(padded_row(b1 - 1), suffix + int64_t(b1 - 1) * pitch, count);
    for (int r = b1 - 2; r >= b0; --r) {
      Acc* cur = suffix + int64_t(r) * pitch;
      copy_row(suffix + int64_t(r + 1) * pitch, cur, count);
      add_row(padded_row(r), cur, count);
    }
  }
}

// out[i] = sum over channels j in [c - behind, c + ahead] ∩ [0, C) of planes[j][i].
template <typename Acc>
AK_ALWAYS_INLINE void window_sum_row(const WindowSpec& w, const Acc* planes, const Acc* partial, int64_t pitch,
                                     int64_t count, int c, Acc* out) {
  if (w.blocked) {
    // Padded window [c, c + L - 1]: a whole block, or the suffix of one plus the prefix of the next.
    copy_row(partial + (int64_t(w.padded_rows) + c) * pitch, out, count);
    if (c % w.length != 0) add_row(partial + (int64_t(c) + w.length - 1) * pitch, out, count);
    return;
  }
  const int lo = lrn_window_lo(c, w.behind);
  const int hi = lrn_window_hi(c, w.ahead, w.C);
  copy_row(planes + int64_t(lo) * pitch, out, count);
  for (int j = lo + 1; j <= hi; ++j) add_row(planes + int64_t(j) * pitch, out, count);
}

template <typename T>
AK_ALWAYS_INLINE void planes_forward_items(const T* x, T* y, const CpuProblem& P, int64_t begin, int64_t end,
                                           AccOf<T>* scratch) {
  using Acc = AccOf<T>;
  const Coeffs<Acc> coeffs = coeffs_of<Acc>(P);
  const int64_t C = P.C, pitch = P.width;
  Acc* xs = scratch;
  Acc* sq = xs + C * pitch;
  Acc* ys = sq + C * pitch;
  Acc* sum = ys + C * pitch;
  Acc* partial = sum + pitch;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / P.blocks_per_batch;
    const int64_t p0 = (item % P.blocks_per_batch) * P.width;
    const int64_t count = std::min(P.width, P.layout.positions - p0);
    load_planes(x, P.layout, C, b, p0, count, pitch, xs);
    for (int64_t c = 0; c < C; ++c) square_row(xs + c * pitch, sq + c * pitch, count);
    if (P.window.blocked) build_block_sums(P.window, sq, pitch, count, partial);
    for (int c = 0; c < C; ++c) {
      window_sum_row(P.window, sq, partial, pitch, count, c, sum);
      forward_row(xs + c * pitch, sum, ys + c * pitch, count, coeffs);
    }
    store_planes(y, P.layout, C, b, p0, count, pitch, ys);
  }
}

template <typename T>
AK_ALWAYS_INLINE void planes_backward_items(const T* x, const T* dy, T* dx, const CpuProblem& P, int64_t begin,
                                            int64_t end, AccOf<T>* scratch) {
  using Acc = AccOf<T>;
  const Coeffs<Acc> coeffs = coeffs_of<Acc>(P);
  const int64_t C = P.C, pitch = P.width;
  Acc* xs = scratch;
  Acc* dys = xs + C * pitch;
  Acc* work = dys + C * pitch;      // x^2, then dx
  Acc* dy_scale = work + C * pitch;
  Acc* ts = dy_scale + C * pitch;
  Acc* sum = ts + C * pitch;
  Acc* partial = sum + pitch;
  for (int64_t item = begin; item < end; ++item) {
    const int64_t b = item / P.blocks_per_batch;
    const int64_t p0 = (item % P.blocks_per_batch) * P.width;
    const int64_t count = std::min(P.width, P.layout.positions - p0);
    load_planes(x, P.layout, C, b, p0, count, pitch, xs);
    load_planes(dy, P.layout, C, b, p0, count, pitch, dys);
    for (int64_t c = 0; c < C; ++c) square_row(xs + c * pitch, work + c * pitch, count);
    if (P.window.blocked) build_block_sums(P.window, work, pitch, count, partial);
    for (int c = 0; c < C; ++c) {
      window_sum_row(P.window, work, partial, pitch, count, c, sum);
      backward_terms_row(xs + c * pitch, dys + c * pitch, sum, dy_scale + c * pitch, ts + c * pitch, count,
                         coeffs);
    }
    // x^2 (and its block sums) are no longer needed: `work` now receives dx.
    if (P.transposed.blocked) build_block_sums(P.transposed, ts, pitch, count, partial);
    for (int c = 0; c < C; ++c) {
      window_sum_row(P.transposed, ts, partial, pitch, count, c, sum);
      backward_row(dy_scale + c * pitch, xs + c * pitch, sum, work + c * pitch, count, coeffs);
    }
    store_planes(dx, P.layout, C, b, p0, count, pitch, work);
  }
}

// ----------------------------------------------------------------------------------------------
// Dispatch, compiled for baseline x86-64, AVX2 and AVX-512
// ----------------------------------------------------------------------------------------------

template <typename T>
AK_ALWAYS_INLINE void forward_items(const T* x, T* y, const CpuProblem& P, int64_t begin, int64_t end,
                                   AccOf<T>* scratch) {
  switch (P.strategy) {
    case Strategy::kRing: ring_forward_items(x, y, P, begin, end, scratch); break;
    case Strategy::kRows: rows_forward_items(x, y, P, begin, end, scratch); break;
    case Strategy::kPlanes: planes_forward_items(x, y, P, begin, end, scratch); break;
  }
}

template <typename T>
AK_ALWAYS_INLINE void backward_items(const T* x, const T* dy, T* dx, const CpuProblem& P, int64_t begin, int64_t end,
                                     AccOf<T>* scratch) {
  switch (P.strategy) {
    case Strategy::kRing: ring_backward_items(x, dy, dx, P, begin, end, scratch); break;
    case Strategy::kRows: rows_backward_items(x, dy, dx, P, begin, end, scratch); break;
    case Strategy::kPlanes: planes_backward_items(x, dy, dx, P, begin, end, scratch); break;
  }
}

template <typename T>
void forward_items_baseline(const T* x, T* y, const CpuProblem& P, int64_t begin, int64_t end,
                            AccOf<T>* scratch) {
  forward_items(x, y, P, begin, end, scratch);
}
template <typename T>
void backward_items_baseline(const T* x, const T* dy, T* dx, const CpuProblem& P, int64_t begin, int64_t end,
                             AccOf<T>* scratch) {
  backward_items(x, dy, dx, P, begin, end, scratch);
}

#ifdef AK_CPU_ISA_CLONES
template <typename T>
AK_TARGET_AVX2 void forward_items_avx2(const T* x, T* y, const CpuProblem& P, int64_t begin, int64_t end,
                                       AccOf<T>* scratch) {
  forward_items(x, y, P, begin, end, scratch);
}
template <typename T>
AK_TARGET_AVX2 void backward_items_avx2(const T* x, const T* dy, T* dx, const CpuProblem& P, int64_t begin,
                                        int64_t end, AccOf<T>* scratch) {
  backward_items(x, dy, dx, P, begin, end, scratch);
}
template <typename T>
AK_TARGET_AVX512 void forward_items_avx512(const T* x, T* y, const CpuProblem& P, int64_t begin, int64_t end,
                                           AccOf<T>* scratch) {
  forward_items(x, y, P, begin, end, scratch);
}
template <typename T>
AK_TARGET_AVX512 void backward_items_avx512(const T* x, const T* dy, T* dx, const CpuProblem& P, int64_t begin,
                                            int64_t end, AccOf<T>* scratch) {
  backward_items(x, dy, dx, P, begin, end, scratch);
}
#endif

template <typename T>
void forward_items_for(CpuIsa isa, const T* x, T* y, const CpuProblem& P, int64_t begin, int64_t end,
                       AccOf<T>* scratch) {
#ifdef AK_CPU_ISA_CLONES
  switch (isa) {
    case CpuIsa::kAvx512: forward_items_avx512(x, y, P, begin, end, scratch); return;
    case CpuIsa::kAvx2: forward_items_avx2(x, y, P, begin, end, scratch); return;
    case CpuIsa::kBaseline: break;
  }
#endif
  forward_items_baseline(x, y, P, begin, end, scratch);
}

template <typename T>
void backward_items_for(CpuIsa isa, const T* x, const T* dy, T* dx, const CpuProblem& P, int64_t begin,
                        int64_t end, AccOf<T>* scratch) {
#ifdef AK_CPU_ISA_CLONES
  switch (isa) {
    case CpuIsa::kAvx512: backward_items_avx512(x, dy, dx, P, begin, end, scratch); return;
    case CpuIsa::kAvx2: backward_items_avx2(x, dy, dx, P, begin, end, scratch); return;
    case CpuIsa::kBaseline: break;
  }
#endif
  backward_items_baseline(x, dy, dx, P, begin, end, scratch);
}

}  // namespace

void lrn_forward_cpu_isa(const TensorView& x, const TensorView& y, int64_t size, double alpha, double beta,
                         double k, bool channels_last, CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "lrn_forward_cpu: this CPU does not run the requested instruction set");
  if (x.numel == 0) return;
  const CpuProblem P = make_problem(x, size, alpha, beta, k, channels_last, /*backward=*/false);
  AK_CPU_DISPATCH(x.dtype, "lrn_forward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* yp = y.mutable_data_ptr<scalar_t>();
    parallel_for(0, P.items, 1, [&](int64_t begin, int64_t end) {
      using Acc = AccOf<scalar_t>;
      Scratch s(Scratch::bytes<Acc>(P.scratch_elements));
      forward_items_for(isa, xp, yp, P, begin, end, s.take<Acc>(P.scratch_elements));
    });
  });
}

void lrn_backward_cpu_isa(const TensorView& x, const TensorView& dy, const TensorView& dx, int64_t size,
                          double alpha, double beta, double k, bool channels_last, CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "lrn_backward_cpu: this CPU does not run the requested instruction set");
  if (x.numel == 0) return;
  const CpuProblem P = make_problem(x, size, alpha, beta, k, channels_last, /*backward=*/true);
  AK_CPU_DISPATCH(x.dtype, "lrn_backward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* dyp = dy.const_data_ptr<scalar_t>();
    scalar_t* dxp = dx.mutable_data_ptr<scalar_t>();
    parallel_for(0, P.items, 1, [&](int64_t begin, int64_t end) {
      using Acc = AccOf<scalar_t>;
      Scratch s(Scratch::bytes<Acc>(P.scratch_elements));
      backward_items_for(isa, xp, dyp, dxp, P, begin, end, s.take<Acc>(P.scratch_elements));
    });
  });
}

void lrn_forward_cpu(const TensorView& x, const TensorView& y, int64_t size, double alpha, double beta, double k,
                     bool channels_last) {
  lrn_forward_cpu_isa(x, y, size, alpha, beta, k, channels_last, best_cpu_isa());
}

void lrn_backward_cpu(const TensorView& x, const TensorView& dy, const TensorView& dx, int64_t size, double alpha,
                      double beta, double k, bool channels_last) {
  lrn_backward_cpu_isa(x, dy, dx, size, alpha, beta, k, channels_last, best_cpu_isa());
}

}  // namespace ak
