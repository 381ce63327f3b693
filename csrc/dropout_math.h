// Element math of counter-based dropout and of the fused bias + ReLU + dropout block, shared by the CPU
// kernels (dropout_cpu.cpp) and the CUDA kernels (dropout_cuda.cu), so that the CPU tests exercise the
// formulas and the index arithmetic the GPU runs. The mask is a pure function of (seed, element index):
// nothing mask-sized is ever stored, backward regenerates it, and the Triton kernels, written from the
// same rules, draw the same bits.
//
// The mask (bit-identical across the C++ CPU, C++ CUDA and Triton kernels):
//   key      = (low 32 bits, high 32 bits) of the call's int64 seed, as uint64
//   element  i = the element's position in memory order (int64; tensors are dense)
//   group    g = i / 4, lane = i % 4: one Philox call serves four consecutive elements
//   r        = philox4x32_10(counter (low32(g), high32(g), 0, 0), key)[lane]        (philox.h)
//   keep(i)  = (r >> 8) >= threshold,  threshold = round(p * 2^24) in [0, 2^24]
//   so P(keep) = 1 - threshold / 2^24: the top 24 bits of r are a uniform integer in [0, 2^24).
//
// Values, in F = float (float, half, bfloat16) or double (the CPU float64 path), rounded once to the
// storage type T; scale = 1 / (1 - p) (finite, >= 1) is given as a double and used as F:
//   dropout:                y  = x * (keep ? scale : 0)         (a multiply: NaN and inf give NaN where
//                                                                dropped, as torch's x * mask * scale)
//   dropout backward:       dx = dy * (keep ? scale : 0)
//   bias + relu + dropout:  x (M, N), bias (N,), i = m * N + n
//                           v  = x + bias,  h = relu(v) = (v > 0 || isnan(v)) ? v : 0
//                           y  = h * (keep ? scale : 0)
//   its backward, from dy and the saved OUTPUT y (neither x nor a mask is kept): where kept,
//                           h = y / scale, and torch's relu backward passes the gradient where h > 0 or
//                           h is NaN, i.e. where !(y <= 0):
//                           dpre = (keep && !(y <= 0)) ? dy * scale : 0     (a select: dy may hold NaN
//                                                                            where the gradient is cut)
//                           dx = dpre,  dbias[n] = sum over m of dpre[m][n]
//                           (y is h * scale rounded to T: a positive h that rounds to 0, below half
//                           of T's smallest subnormal, loses its gradient, unlike autograd's)
//
// dbias, deterministically (no atomics; one summation order, identical on the CPU and the GPU and
// independent of the thread count), with L = kDbiasLanes = 64 row lanes and the rows cut into chunks of
// R = kDbiasChunkRows = 8L = 512 (chunk j: rows [jR, min(M, (j+1)R))):
//   s_jt[n]  = dpre[jR + t][n] + dpre[jR + t + L][n] + ...   (0 + the chunk's terms, m ascending), t < L
//   then the pairwise tree: for h = L/2, L/4, ..., 1:  s_jt += s_j(t+h) for every t < h;  P_j = s_j0
//   dbias[n] = 0 + P_0[n] + P_1[n] + ... (j ascending), accumulated in F and rounded once to T.
// (M <= R: one chunk, dbias = P_0.) The chunks let a tall, narrow matrix fill the GPU: its blocks are
// column blocks x chunks, each lane walks at most 8 rows, and the P_j go through a small scratch buffer.
// The CUDA kernel gives a block 16 columns x L lanes, the tree runs in shared memory; the CPU kernel
// keeps the L partial rows of a column tile in memory. The products dy * scale are kept out of fused
// multiply-adds on both (so dx and the sums round alike). The CUDA sources are built with -ftz=false
// (setup.py), so subnormals are kept on the GPU too and CPU and GPU give the same bits.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "philox.h"
#include "pool_math.h"  // relu_keep_nan: torch's relu, NaN kept

namespace ak {

// Elements per Philox call (the four output words).
constexpr int kDropoutGroup = 4;
// threshold is an integer in [0, 2^24]; 2^24 drops everything.
constexpr int64_t kDropoutThresholdMax = int64_t(1) << 24;
// Row lanes and rows per chunk of the dbias summation (see the header comment).
constexpr int kDbiasLanes = 64;
constexpr int64_t kDbiasChunkRows = 8 * kDbiasLanes;

AK_HD inline int64_t dbias_chunks(int64_t M) { return (M + kDbiasChunkRows - 1) / kDbiasChunkRows; }

struct DropoutKey {
  uint32_t k0, k1;
};

// The seed's bit pattern: k0 = low 32 bits, k1 = high 32 bits.
AK_HD inline DropoutKey make_dropout_key(int64_t seed) {
  const uint64_t bits = static_cast<uint64_t>(seed);
  return DropoutKey{static_cast<uint32_t>(bits), static_cast<uint32_t>(bits >> 32)};
}

// One call's parameters, scale in the arithmetic type F.
template <typename F>
struct DropoutParams {
  DropoutKey key;
  uint32_t threshold;
  F scale;
};

template <typename F>
inline DropoutParams<F> make_dropout_params(int64_t seed, int64_t threshold, double scale) {
  return DropoutParams<F>{make_dropout_key(seed), static_cast<uint32_t>(threshold), static_cast<F>(scale)};
}

// ---------------------------------------------------------------------------------------------
// The mask
// ---------------------------------------------------------------------------------------------

// The four random words of group g: r of elements 4g, 4g + 1, 4g + 2, 4g + 3.
AK_HD inline Philox4x32 dropout_group_randoms(int64_t group, DropoutKey key) {
  const uint64_t g = static_cast<uint64_t>(group);
  return philox4x32_10(Philox4x32{static_cast<uint32_t>(g), static_cast<uint32_t>(g >> 32), 0u, 0u}, key.k0,
                       key.k1);
}

AK_HD inline bool dropout_keep(uint32_t r, uint32_t threshold) { return (r >> 8) >= threshold; }

// keep of the group's four elements as bits: bit l for lane l.
AK_HD inline uint32_t dropout_keep_bits(const Philox4x32& r, uint32_t threshold) {
  return static_cast<uint32_t>(dropout_keep(r.x0, threshold)) |
         static_cast<uint32_t>(dropout_keep(r.x1, threshold)) << 1 |
         static_cast<uint32_t>(dropout_keep(r.x2, threshold)) << 2 |
         static_cast<uint32_t>(dropout_keep(r.x3, threshold)) << 3;
}

// keep of the up-to-four consecutive elements [first, first + count) as bits: bit l for element
// first + l. One Philox call when they lie in one group (always when first is a multiple of 4), two
// when they straddle a group boundary (a row of the bias kernels when N is not a multiple of 4).
AK_HD inline uint32_t dropout_run_keep_bits(int64_t first, int count, const DropoutKey& key, uint32_t threshold) {
  const int64_t group = first / kDropoutGroup;
  const int lane = static_cast<int>(first - group * kDropoutGroup);
  uint32_t bits = dropout_keep_bits(dropout_group_randoms(group, key), threshold) >> lane;
  if (lane + count > kDropoutGroup) {
    bits |= dropout_keep_bits(dropout_group_randoms(group + 1, key), threshold) << (kDropoutGroup - lane);
  }
  return bits & ((1u << count) - 1u);
}

AK_HD inline bool keep_bit(uint32_t bits, int l) { return ((bits >> l) & 1u) != 0; }

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

// a * b (float or double), never contracted into a fused multiply-add with a later addition (the dbias
// sums), so that the CPU and the GPU round the product alike.
template <typename F>
AK_HD inline F mul_uncontracted(F a, F b) {
  static_assert(std::is_same_v<F, float> || std::is_same_v<F, double>, "float or double");
#if defined(__CUDA_ARCH__)
  if constexpr (std::is_same_v<F, double>) {
    return __dmul_rn(a, b);
  } else {
    return __fmul_rn(a, b);
  }
#else
  return a * b;
#endif
}

// dropout (forward and backward): v * (keep ? scale : 0).
template <typename F>
AK_HD inline F dropout_value(F v, bool keep, F scale) {
  return v * (keep ? scale : F(0));
}

// bias + relu + dropout: relu(x + bias) * (keep ? scale : 0).
template <typename F>
AK_HD inline F bias_relu_dropout_value(F x, F bias, bool keep, F scale) {
  return dropout_value(relu_keep_nan(x + bias), keep, scale);
}

// The gradient at the pre-activation x + bias, from dy and the saved output y.
template <typename F>
AK_HD inline F bias_relu_dropout_grad(F dy, F y, bool keep, F scale) {
  const bool passes = keep & !(y <= F(0));    // & not &&: a select, no branch
  const F product = mul_uncontracted(dy, scale);
  return passes ? product : F(0);
}

// ---------------------------------------------------------------------------------------------
// Whole threads of the CUDA kernels (also run on the host by csrc/emulate/dropout_cuda_emulator.cpp)
// ---------------------------------------------------------------------------------------------

// Four consecutive elements as one aligned vector (16 bytes of float, 8 of half / bfloat16).
template <typename T>
struct alignas(kDropoutGroup * sizeof(T)) Pack4 {
  T v[kDropoutGroup];
};

// Whether p may be read or written as Pack4 (the launchers' and the emulator's test).
template <typename T>
inline bool is_pack4_aligned(const T* p) {
  return reinterpret_cast<uintptr_t>(p) % alignof(Pack4<T>) == 0;
}

// On the device a Pack4 moves as one machine vector (uint4 or uint2) through the __ldg / __stwb
// intrinsics: a plain struct copy may be split into scalar accesses once the compiler has broken the
// struct into its elements (it did, for some of the unrolled iterations of the backward's row loop).
template <typename T>
AK_HD inline Pack4<T> load_pack4(const T* p) {
#if defined(__CUDA_ARCH__)
  using Vector = std::conditional_t<sizeof(Pack4<T>) == 16, uint4, uint2>;
  static_assert(sizeof(Vector) == sizeof(Pack4<T>), "Pack4 is 8 or 16 bytes");
  const Vector v = __ldg(reinterpret_cast<const Vector*>(p));
  Pack4<T> pack;
  memcpy(&pack, &v, sizeof(pack));
  return pack;
#else
  return *reinterpret_cast<const Pack4<T>*>(p);
#endif
}

template <typename T>
AK_HD inline void store_pack4(T* p, const Pack4<T>& pack) {
#if defined(__CUDA_ARCH__)
  using Vector = std::conditional_t<sizeof(Pack4<T>) == 16, uint4, uint2>;
  Vector v;
  memcpy(&v, &pack, sizeof(v));
  __stwb(reinterpret_cast<Vector*>(p), v);
#else
  *reinterpret_cast<Pack4<T>*>(p) = pack;
#endif
}

// The elements of group g in [0, numel): dst = dropout(src). kPacked: all four exist and src, dst are
// Pack4-aligned (one vector load and store each).
template <bool kPacked, typename T, typename F>
AK_HD inline void dropout_group(const T* __restrict__ src, T* __restrict__ dst, int64_t numel, int64_t group,
                                const DropoutParams<F>& p) {
  const uint32_t keep = dropout_keep_bits(dropout_group_randoms(group, p.key), p.threshold);
  const int64_t first = group * kDropoutGroup;
  if constexpr (kPacked) {
    Pack4<T> pack = load_pack4(src + first);
    for (int l = 0; l < kDropoutGroup; ++l) {
      pack.v[l] = static_cast<T>(dropout_value(static_cast<F>(pack.v[l]), keep_bit(keep, l), p.scale));
    }
    store_pack4(dst + first, pack);
  } else {
    const int count = numel - first < kDropoutGroup ? static_cast<int>(numel - first) : kDropoutGroup;
    for (int l = 0; l < count; ++l) {
      dst[first + l] = static_cast<T>(dropout_value(static_cast<F>(src[first + l]), keep_bit(keep, l), p.scale));
    }
  }
}

// The elements of group g of an (M, N) problem (numel = M * N): y = bias_relu_dropout(x, bias).
// kPacked: N % 4 == 0 (the group is four columns of one row, starting at a multiple of 4) and x, bias,
// y are Pack4-aligned. Otherwise element by element, the column wrapping to 0 at a row's end.
template <bool kPacked, typename T, typename F>
AK_HD inline void bias_relu_dropout_group(const T* __restrict__ x, const T* __restrict__ bias, T* __restrict__ y,
                                          int64_t numel, int64_t N, int64_t group, const DropoutParams<F>& p) {
  const uint32_t keep = dropout_keep_bits(dropout_group_randoms(group, p.key), p.threshold);
  const int64_t first = group * kDropoutGroup;
  int64_t n = first % N;
  if constexpr (kPacked) {
    Pack4<T> pack = load_pack4(x + first);
    const Pack4<T> b = load_pack4(bias + n);
    for (int l = 0; l < kDropoutGroup; ++l) {
      pack.v[l] = static_cast<T>(bias_relu_dropout_value(static_cast<F>(pack.v[l]), static_cast<F>(b.v[l]),
                                                         keep_bit(keep, l), p.scale));
    }
    store_pack4(y + first, pack);
  } else {
    const int count = numel - first < kDropoutGroup ? static_cast<int>(numel - first) : kDropoutGroup;
    for (int l = 0; l < count; ++l) {
      y[first + l] = static_cast<T>(bias_relu_dropout_value(static_cast<F>(x[first + l]), static_cast<F>(bias[n]),
                                                            keep_bit(keep, l), p.scale));
      n = n + 1 == N ? 0 : n + 1;
    }
  }
}

// One thread of the backward: row lane t (< kDbiasLanes) of chunk `chunk` and the count (1..4) columns
// [c, c + count). Writes dx of the chunk's rows m = jR + t, jR + t + L, ... of those columns and adds their
// dpre to s[0..count), m ascending (s_jt of the header comment). kPacked: count == 4, N % 4 == 0 and dy, y, dx Pack4-aligned
// (then each row's four elements are one group: one Philox call).
template <bool kPacked, typename T, typename F>
AK_HD inline void bias_relu_dropout_backward_lane(const T* __restrict__ dy, const T* __restrict__ y,
                                                  T* __restrict__ dx, int64_t M, int64_t N, int64_t c, int count,
                                                  int64_t chunk, int t, const DropoutParams<F>& p,
                                                  F (&s)[kDropoutGroup]) {
  const int64_t m_end = M < (chunk + 1) * kDbiasChunkRows ? M : (chunk + 1) * kDbiasChunkRows;
#if defined(__CUDA_ARCH__)
#pragma unroll 4
#endif
  for (int64_t m = chunk * kDbiasChunkRows + t; m < m_end; m += kDbiasLanes) {
    const int64_t first = m * N + c;
    if constexpr (kPacked) {
      const uint32_t keep = dropout_keep_bits(dropout_group_randoms(first / kDropoutGroup, p.key), p.threshold);
      const Pack4<T> dy4 = load_pack4(dy + first);
      const Pack4<T> y4 = load_pack4(y + first);
      Pack4<T> dx4;
      for (int l = 0; l < kDropoutGroup; ++l) {
        const F d = bias_relu_dropout_grad(static_cast<F>(dy4.v[l]), static_cast<F>(y4.v[l]), keep_bit(keep, l),
                                           p.scale);
        dx4.v[l] = static_cast<T>(d);
        s[l] += d;
      }
      store_pack4(dx + first, dx4);
    } else {
      const uint32_t keep = dropout_run_keep_bits(first, count, p.key, p.threshold);
      for (int l = 0; l < count; ++l) {
        const F d = bias_relu_dropout_grad(static_cast<F>(dy[first + l]), static_cast<F>(y[first + l]),
                                           keep_bit(keep, l), p.scale);
        dx[first + l] = static_cast<T>(d);
        s[l] += d;
      }
    }
  }
}

}  // namespace ak
