// CPU kernels of counter-based dropout and of the fused bias + ReLU + dropout block (math and mask:
// dropout_math.h). torch's parallel_for over groups of four elements (forward) or over (dbias chunk, column
// tile) items (the bias backward). The results depend on neither the thread count nor the chunking:
// the mask is a function of the element index, and dbias is summed in dropout_math.h's fixed order.
//
// Each work chunk runs in blocks: the Philox words of a block's groups are drawn first into a small
// array (a loop over groups that the compiler vectorises: philox4x32_10 unrolls and its 32 x 32 -> 64
// products become vpmuludq lanes), then an element loop applies them (a vectorised select and
// multiply). Each group's Philox call is made once, except in the bias backward when N is not a
// multiple of 4: a row segment of a column tile then starts or ends inside a group, drawn for both.
//
// As in pool_cpu.cpp, the loops are compiled for baseline x86-64, AVX2 + FMA and AVX-512, and the widest
// copy the CPU runs is chosen at run time (the *_isa entry points take it as an argument so that a test
// harness can run each copy).

// no-trapping-math lets GCC if-convert the float selects so that the element loops vectorise;
// fp-contract=off keeps dy * scale out of fused multiply-adds with the dbias sums (dropout_math.h:
// the CPU and the GPU round alike). Before every include so that all functions of this file agree on
// it (GCC will not inline across differing options).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math", "fp-contract=off")
#endif

#include <algorithm>
#include <type_traits>

#include "cpu_target.h"
#include "dropout.h"
#include "dropout_math.h"

namespace ak {
namespace {

// Arithmetic type: float for float / half / bfloat16, double for double.
template <typename T>
using AccOf = std::conditional_t<std::is_same_v<T, double>, double, float>;

// Groups whose Philox words a block draws at once (16 KiB of words: stays in L1).
constexpr int64_t kBlockGroups = 1024;
// Columns of a tile of the bias backward (a multiple of 4: a tile's row segments then start on a group
// boundary whenever N is a multiple of 4, so no group is drawn twice).
constexpr int64_t kTileColumns = 512;

// r[4j + l] = word l of group first_group + j, for j < count.
AK_ALWAYS_INLINE void draw_randoms(int64_t first_group, int64_t count, DropoutKey key, uint32_t* r) {
  for (int64_t j = 0; j < count; ++j) {
    const Philox4x32 w = dropout_group_randoms(first_group + j, key);
    r[4 * j + 0] = w.x0;
    r[4 * j + 1] = w.x1;
    r[4 * j + 2] = w.x2;
    r[4 * j + 3] = w.x3;
  }
}

// The Philox words of elements [first, first + count) into r (room for count + 8 words): element
// first + k gets word r[offset + k], offset returned.
AK_ALWAYS_INLINE int64_t draw_run(int64_t first, int64_t count, DropoutKey key, uint32_t* r) {
  const int64_t first_group = first / kDropoutGroup;
  const int64_t last_group = (first + count - 1) / kDropoutGroup;
  draw_randoms(first_group, last_group - first_group + 1, key, r);
  return first - first_group * kDropoutGroup;
}

// body(first, end, r) over elements [first, end) of groups [group_begin, group_end), one block of
// kBlockGroups groups at a time; element first + k gets the Philox word r[k].
template <typename Body>
AK_ALWAYS_INLINE void for_each_drawn_block(int64_t group_begin, int64_t group_end, int64_t numel, DropoutKey key,
                                           const Body& body) {
  alignas(64) uint32_t r[kBlockGroups * kDropoutGroup];
  for (int64_t b = group_begin; b < group_end; b += kBlockGroups) {
    const int64_t groups = std::min(group_end - b, kBlockGroups);
    draw_randoms(b, groups, key, r);
    const int64_t first = b * kDropoutGroup;
    body(first, std::min(first + groups * kDropoutGroup, numel), static_cast<const uint32_t*>(r));
  }
}

// dst = dropout(src); item = group.
template <typename T>
struct ApplyDropout {
  const T* src;
  T* dst;
  int64_t numel;
  DropoutParams<AccOf<T>> p;

  AK_ALWAYS_INLINE void operator()(int64_t group_begin, int64_t group_end) const {
    using F = AccOf<T>;
    const uint32_t threshold = p.threshold;
    const F scale = p.scale;
    const T* s = src;  // locals: the stores may alias members reached through `this`
    T* d = dst;
    for_each_drawn_block(group_begin, group_end, numel, p.key, [&](int64_t first, int64_t end, const uint32_t* r) {
      for (int64_t i = first; i < end; ++i) {
        d[i] = static_cast<T>(dropout_value(static_cast<F>(s[i]), dropout_keep(r[i - first], threshold), scale));
      }
    });
  }
};

// y = bias_relu_dropout(x, bias) of an (M, N) problem; item = group. A block's elements are cut into
// row segments, each a vectorised loop over consecutive columns.
template <typename T>
struct BiasReluDropoutForward {
  const T* x;
  const T* bias;
  T* y;
  int64_t numel, N;
  DropoutParams<AccOf<T>> p;

  AK_ALWAYS_INLINE void operator()(int64_t group_begin, int64_t group_end) const {
    using F = AccOf<T>;
    const uint32_t threshold = p.threshold;
    const F scale = p.scale;
    for_each_drawn_block(group_begin, group_end, numel, p.key, [&](int64_t first, int64_t end, const uint32_t* r) {
      for (int64_t i = first; i < end;) {
        const int64_t n0 = i % N;
        const int64_t count = std::min(end - i, N - n0);
        const T* xs = x + i;
        const T* bs = bias + n0;
        const uint32_t* rs = r + (i - first);
        T* ys = y + i;
        for (int64_t k = 0; k < count; ++k) {
          ys[k] = static_cast<T>(bias_relu_dropout_value(static_cast<F>(xs[k]), static_cast<F>(bs[k]),
                                                         dropout_keep(rs[k], threshold), scale));
        }
        i += count;
      }
    });
  }
};

// Backward, phase 1; item = (dbias chunk j, column tile). For each row lane t: dx of the chunk's rows
// m = jR + t, jR + t + L, ... of the tile's columns and s_jt of those columns (m ascending); then
// dropout_math.h's tree over the lanes gives P_j, stored in partial[j][column]. Lanes >= the chunk's row
// count had no rows: their s is +0 (a sum that starts at +0 is never -0), adding it changes nothing, so the
// tree skips them and gives the GPU's bits.
template <typename T>
struct BiasReluDropoutBackwardChunk {
  const T* dy;
  const T* y;
  T* dx;
  AccOf<T>* partial;  // [chunk][N]
  int64_t M, N, tiles;
  DropoutParams<AccOf<T>> p;

  AK_ALWAYS_INLINE void operator()(int64_t item_begin, int64_t item_end) const {
    using F = AccOf<T>;
    alignas(64) uint32_t r[kTileColumns + 2 * kDropoutGroup];
    Scratch scratch(Scratch::bytes<F>(kDbiasLanes * kTileColumns));
    F* lanes = scratch.take<F>(kDbiasLanes * kTileColumns);  // [lane][column]
    const uint32_t threshold = p.threshold;
    const F scale = p.scale;
    for (int64_t item = item_begin; item < item_end; ++item) {
      const int64_t chunk = item / tiles, tile = item % tiles;
      const int64_t c0 = tile * kTileColumns;
      const int64_t columns = std::min(kTileColumns, N - c0);
      const int64_t m0 = chunk * kDbiasChunkRows, m_end = std::min(M, m0 + kDbiasChunkRows);
      const int64_t lanes_used = std::min<int64_t>(m_end - m0, kDbiasLanes);
      for (int64_t t = 0; t < lanes_used; ++t) {
        F* s = lanes + t * kTileColumns;
        std::fill(s, s + columns, F(0));
        for (int64_t m = m0 + t; m < m_end; m += kDbiasLanes) {
          const int64_t first = m * N + c0;
          const uint32_t* rs = r + draw_run(first, columns, p.key, r);
          const T* dys = dy + first;
          const T* ys = y + first;
          T* dxs = dx + first;
          for (int64_t k = 0; k < columns; ++k) {
            const F d = bias_relu_dropout_grad(static_cast<F>(dys[k]), static_cast<F>(ys[k]),
                                               dropout_keep(rs[k], threshold), scale);
            dxs[k] = static_cast<T>(d);
            s[k] += d;
          }
        }
      }
      for (int64_t h = kDbiasLanes / 2; h >= 1; h /= 2) {
        for (int64_t t = 0; t < h && t + h < lanes_used; ++t) {
          F* dst = lanes + t * kTileColumns;
          const F* src = lanes + (t + h) * kTileColumns;
          for (int64_t k = 0; k < columns; ++k) dst[k] += src[k];
        }
      }
      std::copy(lanes, lanes + columns, partial + chunk * N + c0);
    }
  }
};

// Backward, phase 2; item = column tile: dbias = 0 + P_0 + P_1 + ... (chunk order), rounded once.
template <typename T>
struct BiasReluDropoutBackwardChunkSum {
  T* dbias;
  const AccOf<T>* partial;
  int64_t N, chunks;

  AK_ALWAYS_INLINE void operator()(int64_t tile_begin, int64_t tile_end) const {
    using F = AccOf<T>;
    for (int64_t tile = tile_begin; tile < tile_end; ++tile) {
      const int64_t c0 = tile * kTileColumns;
      const int64_t columns = std::min(kTileColumns, N - c0);
      for (int64_t k = 0; k < columns; ++k) {
        F sum = F(0);
        for (int64_t j = 0; j < chunks; ++j) sum += partial[j * N + c0 + k];
        dbias[c0 + k] = static_cast<T>(sum);
      }
    }
  }
};


int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

void apply_dropout_cpu_isa(const TensorView& src, const TensorView& dst, int64_t seed, int64_t threshold,
                           double scale, CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "apply_dropout_cpu: this CPU does not run the requested instruction set");
  const int64_t numel = src.numel;
  if (numel == 0) return;
  AK_CPU_DISPATCH(src.dtype, "apply_dropout_cpu", [&] {
    using F = AccOf<scalar_t>;
    const ApplyDropout<scalar_t> items{src.const_data_ptr<scalar_t>(), dst.mutable_data_ptr<scalar_t>(), numel,
                                       make_dropout_params<F>(seed, threshold, scale)};
    parallel_items(ceil_div(numel, kDropoutGroup), kDropoutGroup, items, isa);
  });
}

void bias_relu_dropout_forward_cpu_isa(const TensorView& x, const TensorView& bias, const TensorView& y,
                                       int64_t seed, int64_t threshold, double scale, CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "bias_relu_dropout_forward_cpu: this CPU does not run the requested instruction set");
  const int64_t numel = x.numel;
  if (numel == 0) return;
  AK_CPU_DISPATCH(x.dtype, "bias_relu_dropout_forward_cpu", [&] {
    using F = AccOf<scalar_t>;
    const BiasReluDropoutForward<scalar_t> items{x.const_data_ptr<scalar_t>(), bias.const_data_ptr<scalar_t>(),
                                                 y.mutable_data_ptr<scalar_t>(), numel, x.size(1),
                                                 make_dropout_params<F>(seed, threshold, scale)};
    parallel_items(ceil_div(numel, kDropoutGroup), kDropoutGroup, items, isa);
  });
}

void bias_relu_dropout_backward_cpu_isa(const TensorView& dy, const TensorView& y, const TensorView& dx,
                                        const TensorView& dbias, int64_t seed, int64_t threshold, double scale,
                                        CpuIsa isa) {
  AK_CHECK(cpu_supports(isa), "bias_relu_dropout_backward_cpu: this CPU does not run the requested instruction set");
  const int64_t M = dy.size(0), N = dy.size(1);
  if (N == 0) return;
  if (M == 0) {
    AK_CPU_DISPATCH(dbias.dtype, "bias_relu_dropout_backward_cpu", [&] {
      std::fill_n(dbias.mutable_data_ptr<scalar_t>(), N, scalar_t(0));  // the sum over no rows
    });
    return;
  }
  const int64_t tiles = ceil_div(N, kTileColumns);
  const int64_t chunks = dbias_chunks(M);
  AK_CPU_DISPATCH(dy.dtype, "bias_relu_dropout_backward_cpu", [&] {
    using F = AccOf<scalar_t>;
    // The chunks' partial sums: M * N / 512 values, the calling thread's block shared with the workers.
    CallerScratch caller(CallerScratch::bytes<F>(chunks * N));
    F* const partial = caller.take<F>(chunks * N);
    const BiasReluDropoutBackwardChunk<scalar_t> items{dy.const_data_ptr<scalar_t>(), y.const_data_ptr<scalar_t>(),
                                                       dx.mutable_data_ptr<scalar_t>(), partial, M, N, tiles,
                                                       make_dropout_params<F>(seed, threshold, scale)};
    parallel_items(chunks * tiles, std::min(M, kDbiasChunkRows) * std::min(N, kTileColumns), items, isa);
    const BiasReluDropoutBackwardChunkSum<scalar_t> sums{dbias.mutable_data_ptr<scalar_t>(), partial, N,
                                                        chunks};
    parallel_items(tiles, chunks * kTileColumns, sums, isa);
  });
}

void apply_dropout_cpu(const TensorView& src, const TensorView& dst, int64_t seed, int64_t threshold, double scale) {
  apply_dropout_cpu_isa(src, dst, seed, threshold, scale, best_cpu_isa());
}

void bias_relu_dropout_forward_cpu(const TensorView& x, const TensorView& bias, const TensorView& y, int64_t seed,
                                   int64_t threshold, double scale) {
  bias_relu_dropout_forward_cpu_isa(x, bias, y, seed, threshold, scale, best_cpu_isa());
}

void bias_relu_dropout_backward_cpu(const TensorView& dy, const TensorView& y, const TensorView& dx,
                                    const TensorView& dbias, int64_t seed, int64_t threshold, double scale) {
  bias_relu_dropout_backward_cpu_isa(dy, y, dx, dbias, seed, threshold, scale, best_cpu_isa());
}

}  // namespace ak
