// Element math of cross-channel Local Response Normalization, shared by the CPU kernels
// (lrn_cpu.cpp) and the CUDA kernels (lrn_cuda.cu), so the CPU tests exercise the formulas the GPU
// runs. Exactly torch.nn.functional.local_response_norm:
//
//   x viewed as (N, C, S); window size n >= 1; pre = n / 2, post = (n - 1) / 2.
//   W(c) = [c - pre, c + post]; channels outside [0, C) count as zero; the divisor stays n.
//   base_c = k + (alpha / n) * sum_{j in W(c)} x_j^2          (accumulated in fp32, or better)
//   y_c    = x_c * base_c^(-beta)
//
// Backward, recomputed from x and dy alone:
//   scale_j = base_j^(-beta)                    p_j = base_j^(-beta-1) = scale_j / base_j
//   t_j     = dy_j * x_j * p_j
//   dx_c    = dy_c * scale_c - (2 * alpha * beta / n) * x_c * sum_{j : c in W(j)} t_j
//   c in W(j)  <=>  j in [c - post, c + pre]    (the transposed window: W(c) mirrored, which
//                                                differs from W(c) when n is even)
//
// The Python side validates k > 0, alpha >= 0 and finite parameters, so base >= k > 0.
//
// Powers: for beta == 0.75 exactly (as the kernels hold it, in fp32 -- the AlexNet, Caffe and torch default)
// base^(-3/4) = 1 / (sqrt(base) * sqrt(sqrt(base))): two square roots, a product and a division, all IEEE
// on the CPU (about 2 ulp in all) and the fast-math sqrt.approx / div.approx on the GPU (a few ulp). Every
// other beta takes exp2(exponent * log2(base)): on the GPU the hardware approximations (ex2.approx /
// lg2.approx under --use_fast_math, about 2 ulp; built with -ftz=false, so without flushing subnormal
// inputs or results to zero); on the CPU the same decomposition runs as branch-free polynomials
// (lrn_log2_poly / lrn_exp2_poly below, about 1e-7 relative) that the compiler can auto-vectorise, where a
// libm call per element cannot be. Loops over many elements test lrn_beta_is_three_quarters once and
// run the path's own loop (lrn_cpu.cpp), so each vectorised loop holds one path.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define AK_HD __host__ __device__
#else
#define AK_HD
#endif

namespace ak {

// ---------------------------------------------------------------------------------------------
// Window bounds
// ---------------------------------------------------------------------------------------------

// Channels looked at before / after c by W(c).
AK_HD inline int64_t lrn_pre(int64_t size) { return size / 2; }
AK_HD inline int64_t lrn_post(int64_t size) { return (size - 1) / 2; }

// A reach (pre or post) clipped to C - 1: from any channel of [0, C), offsets beyond C - 1 fall outside
// [0, C) and add only zeros, so a window of any n >= 1 (up to 2^63 - 1) runs as one of at most 2C - 1
// channels with the same sums; the divisor stays n. C >= 1 and C < 2^31 (checked by the bindings).
inline int lrn_clipped_reach(int64_t reach, int64_t C) {
  const int64_t limit = C > 1 ? C - 1 : 0;
  return static_cast<int>(reach < limit ? reach : limit);
}

// [lo, hi] = [c - behind, c + ahead] clipped to [0, C). W(c) is (behind, ahead) = (pre, post);
// the transposed window {j : c in W(j)} used by backward is (behind, ahead) = (post, pre).
AK_HD inline int lrn_window_lo(int c, int behind) { return c - behind > 0 ? c - behind : 0; }
AK_HD inline int lrn_window_hi(int c, int ahead, int C) { return c + ahead < C - 1 ? c + ahead : C - 1; }

// ---------------------------------------------------------------------------------------------
// Host power: exp2 / log2 as vectorisable polynomials (float in, float out, no branches).
// ---------------------------------------------------------------------------------------------

AK_HD inline uint32_t lrn_float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}

AK_HD inline float lrn_bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}

// log2(b) for b > 0 (subnormals included; log2(inf) = inf, log2(NaN) = NaN).
// b = m * 2^e with m in [sqrt(1/2), sqrt(2)); ln(m) = 2 atanh(s), s = (m - 1) / (m + 1),
// |s| <= 0.172: five odd terms leave < 1e-9. The choices are selects, not branches, so that loops
// over this function vectorise (lrn_cpu.cpp compiles it with -fno-trapping-math semantics).
AK_HD inline float lrn_log2_poly(float b) {
  const uint32_t b_bits = lrn_float_bits(b);
  const uint32_t scaled_bits = lrn_float_bits(b * 16777216.0f);   // b * 2^24: subnormals made normal
  const bool subnormal = b_bits < 0x00800000u;
  const uint32_t subnormal_mask = 0u - static_cast<uint32_t>(subnormal);   // a blend, not a branch
  const uint32_t bits = (b_bits & ~subnormal_mask) | (scaled_bits & subnormal_mask);
  const uint32_t mantissa = bits & 0x007fffffu;
  const bool upper = mantissa > 0x003504f3u;                       // 1.mantissa > sqrt(2)
  const int e = static_cast<int>(bits >> 23) - (subnormal ? 127 + 24 : 127) + (upper ? 1 : 0);
  const float m = lrn_bits_float(mantissa | (upper ? 0x3f000000u : 0x3f800000u));   // [sqrt(1/2), sqrt(2))
  const float s = (m - 1.0f) / (m + 1.0f);   // m - 1 is exact (Sterbenz)
  const float s2 = s * s;
  const float series = 1.0f + s2 * (0.333333333f + s2 * (0.2f + s2 * (0.142857143f + s2 * 0.111111111f)));
  const float result = static_cast<float>(e) + s * series * 2.88539008f;   // 2 / ln 2
  return b_bits >= 0x7f800000u ? b : result;                               // inf and NaN stay
}

// 2^t for t in [-126, 127.5]; NaN for NaN; 0 from about -126.5 down and inf from about 127.5 up
// (no subnormal results; the clamp to [-127, 128] makes the exponent field 0 or all ones there).
// t = i + f with i = round(t), |f| <= 1/2; 2^f by its Taylor series to degree 7 (truncation
// < 6e-9 relative); 2^i assembled in the exponent field.
AK_HD inline float lrn_exp2_poly(float t) {
  t = t < -127.0f ? -127.0f : t;   // NaN passes both clamps
  t = t > 128.0f ? 128.0f : t;
  const float round_magic = 12582912.0f;         // 1.5 * 2^23: t + magic holds round(t) in its low bits
  const float shifted = t + round_magic;
  const float i = shifted - round_magic;
  const int i_int = static_cast<int>(lrn_float_bits(shifted) - 0x4b400000u);   // = round(t), no cvt
  const float f = t - i;
  const float p =
      1.0f + f * (0.693147181f + f * (0.240226507f + f * (0.0555041087f + f * (0.00961812911f +
      f * (0.00133335581f + f * (0.000154035304f + f * 0.0000152527338f))))));
  return p * lrn_bits_float(static_cast<uint32_t>(i_int + 127) << 23);   // 2^-127 -> 0, 2^128 -> inf
}

// ---------------------------------------------------------------------------------------------
// Element formulas
// ---------------------------------------------------------------------------------------------

// base^exponent for base > 0, with IEEE pow's special values where they can arise here: NaN for a
// NaN base, 0 or inf for an infinite base (x^2 overflowed), and 1 for exponent 0 whatever the base
// (exp2(0 * log2(inf)) alone would give NaN). Results below about 2^-126.5 are 0 on the CPU (the
// polynomial's clamp); the GPU's ex2.approx returns them as subnormals (an absolute difference < 2^-126).
AK_HD inline float lrn_pow(float base, float exponent) {
#if defined(__CUDA_ARCH__)
  const float power = exp2f(exponent * log2f(base));   // ex2.approx(exponent * lg2.approx(base)): fast math
#else
  const float power = lrn_exp2_poly(exponent * lrn_log2_poly(base));
#endif
  return exponent == 0.0f ? 1.0f : power;
}

// Double precision (the CPU kernels' float64 path, used by gradcheck): libm's pow.
AK_HD inline double lrn_pow(double base, double exponent) { return pow(base, exponent); }

// The rule for the square-root path: beta, as the fp32 kernels receive it, is 0.75 exactly. (A beta
// such as 0.75000001 that rounds to 0.75f is 0.75 to every fp32 kernel, whichever path it took.)
AK_HD inline bool lrn_beta_is_three_quarters(float beta) { return beta == 0.75f; }
AK_HD inline bool lrn_beta_is_three_quarters(double) { return false; }   // float64 keeps libm's pow

// base^(-3/4) for base > 0 from square roots: no log/exp. inf -> 0, NaN -> NaN, subnormal bases are
// exact inputs to sqrt, and the result never overflows (base >= 2^-149 gives at most 2^111.75).
AK_HD inline float lrn_pow_minus_three_quarters(float base) {
  const float root = sqrtf(base);
  return 1.0f / (root * sqrtf(root));
}

// The formulas below take F = float (all kernels) or F = double (the CPU float64 path).

// k + (alpha / n) * sum of squares over the window.
template <typename F>
AK_HD inline F lrn_base(F sumsq, F alpha_over_n, F k) { return k + alpha_over_n * sumsq; }

// base^(-beta): the square-root path for beta == 0.75, else exp2/log2. A per-element test: the GPU's
// is uniform across a launch; the CPU's element loops call lrn_scale with a literal 0.75f or a beta
// already known to differ (lrn_cpu.cpp), so the test folds away and each loop holds one path.
AK_HD inline float lrn_scale(float base, float beta) {
  if (lrn_beta_is_three_quarters(beta)) return lrn_pow_minus_three_quarters(base);
  return lrn_pow(base, -beta);
}
AK_HD inline double lrn_scale(double base, double beta) { return lrn_pow(base, -beta); }

// y = x * base^(-beta)
template <typename F>
AK_HD inline F lrn_forward_value(F x, F base, F beta) { return x * lrn_scale(base, beta); }

// t = dy * x * base^(-beta-1), with scale = base^(-beta) already computed.
template <typename F>
AK_HD inline F lrn_t_term(F dy, F x, F base, F scale) { return dy * x * (scale / base); }

// dx = dy * base^(-beta) - coef * x * tsum, with dy_scale = dy * base^(-beta) and
// tsum = sum of t_j over the transposed window.
template <typename F>
AK_HD inline F lrn_backward_value(F dy_scale, F x, F tsum, F coef) {
  return dy_scale - coef * x * tsum;
}

// The scalar parameters every kernel takes.
struct LrnParams {
  int window;          // pre + post + 1: n, or fewer rows when n's reach is clipped to the C channels
  int pre, post;       // W(c) = [c - pre, c + post], each clipped to C - 1 (lrn_clipped_reach)
  float alpha_over_n;  // alpha / n
  float beta;
  float k;
  float coef;          // 2 * alpha * beta / n
  // CUDA NCHW backward: true runs the "v1" window sums (every sum re-reads its n terms from shared
  // memory) on every window; false (make_lrn_params) leaves the choice to the kernel's rule: v2's register
  // windows up to kRegWindowMax rows, v1 beyond. Set only by the internal entry point benchmarks use
  // (lrn_backward_cuda with LrnBackwardSums::kV1).
  bool backward_v1;
};

// size = n >= 1, channels = C of the tensor.
inline LrnParams make_lrn_params(int64_t size, double alpha, double beta, double k, int64_t channels) {
  LrnParams p;
  p.pre = lrn_clipped_reach(lrn_pre(size), channels);
  p.post = lrn_clipped_reach(lrn_post(size), channels);
  p.window = p.pre + p.post + 1;
  p.alpha_over_n = static_cast<float>(alpha / static_cast<double>(size));
  p.beta = static_cast<float>(beta);
  p.k = static_cast<float>(k);
  p.coef = static_cast<float>(2.0 * alpha * beta / static_cast<double>(size));
  p.backward_v1 = false;
  return p;
}

}  // namespace ak
