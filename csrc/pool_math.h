// Element math of 2-D max pooling and of the fused ReLU -> LRN -> max-pool block, shared by the CPU
// kernels (pool_cpu.cpp) and the CUDA kernels (pool_cuda.cu), so the CPU tests exercise the rules
// the GPU runs. The CUDA kernels are grid-stride loops over the *_element functions at the end of
// this file; the CPU kernels call the same pieces (pool_argmax, pool_gather, the LRN formulas) with
// their index arithmetic hoisted out of the inner loops.
//
// Max pooling, exactly torch.nn.functional.max_pool2d (dilation 1, any ceil_mode: the output size
// comes from the output tensor):
//
//   Window of output (oh, ow): rows [hstart, hstart + kH) ∩ [0, H), cols [wstart, wstart + kW) ∩ [0, W),
//     hstart = oh*sH - pH, wstart = ow*sW - pW (unclipped, may be negative: padding is never selected).
//   Offset of input (ih, iw) in that window: (ih - hstart)*kW + (iw - wstart), in [0, kH*kW) (uint8).
//   Forward (torch's scan): best = -inf, best_off = the window's first in-bounds element; rows
//     ascending, then columns ascending; take v when v > best or v is NaN. Ties keep the first
//     maximum, the last NaN wins; y = the taken value (x's own value, NaN included).
//   Backward (a gather: deterministic, no atomics): dx(ih, iw) = sum over the outputs whose window
//     covers (ih, iw), oh ascending then ow ascending, of dy(oh, ow) where offsets(oh, ow) names
//     (ih, iw). A select, never a multiply by a 0/1 mask (dy may hold NaN / inf elsewhere). The
//     covering outputs: oh in [ceil((ih + pH - kH + 1) / sH), floor((ih + pH) / sH)] ∩ [0, OH), ow alike.
//
// Fused block z = max_pool(LRN(relu(x))), PyTorch's LRN (lrn_math.h: W(c) = [c - pre, c + post]):
//
//   r_c   = relu(x_c), NaN and -0 kept:  x_c < 0 ? 0 : x_c
//   L_c   = r_c * (k + alpha/n * sum_{j in W(c)} r_j^2)^(-beta), the sum in channel order, then
//           rounded to the storage dtype (so that half / bf16 routing equals the unfused chain's)
//   z     = max_pool(L), offsets as above.
//   Backward at input (n, c, ih, iw), recomputed from x and the offsets:
//   dL_j  = the max-pool gather of channel j at (ih, iw), kept in the accumulation type
//   base_j, scale_j = base_j^(-beta), t_j = dL_j * r_j * scale_j / base_j for j in [c - post, c + pre]
//   dr_c  = dL_c * scale_c - (2*alpha*beta/n) * r_c * sum_j t_j
//   dx_c  = relu'(x_c) dr_c: torch's relu backward passes the gradient where relu(x) > 0 or is NaN.
//
// Values are compared and accumulated in F = float (float, half, bfloat16: exact for the comparisons)
// or F = double (the CPU float64 path). Offsets into tensors are int64 (tensors may exceed 2^31
// elements); kH*kW <= 256 and C < 2^31 are checked by the bindings.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "lrn_math.h"

namespace ak {

// ---------------------------------------------------------------------------------------------
// Geometry
// ---------------------------------------------------------------------------------------------

struct PoolParams {
  int kH, kW;  // kernel
  int sH, sW;  // stride
  int pH, pW;  // padding
};

// Element (n, c, h, w) of a 4-D tensor lives at n*n + c*c + h*h + w*w (element strides).
struct Strides4 {
  int64_t n, c, h, w;
};

// NCHW-contiguous or channels_last (NHWC) contiguous strides of an (N, C, H, W) tensor.
AK_HD inline Strides4 layout_strides(int64_t C, int64_t H, int64_t W, bool channels_last) {
  return channels_last ? Strides4{H * W * C, 1, W * C, C} : Strides4{C * H * W, H * W, W, 1};
}

struct Index4 {
  int64_t n, c, h, w;
};

// o's index along its innermost remaining dimension (of size `extent`); o becomes the offset over the others.
template <typename I>
AK_HD inline I take_index(I& o, I extent) {
  const I i = o % extent;
  o /= extent;
  return i;
}

// The element at memory offset o of a layout_strides tensor, the divisions done in the index type I:
// int32_t when every offset of the call fits (PoolProblem::index32; a 64-bit division is a long
// software sequence on the GPU, several per element), int64_t otherwise.
template <typename I>
AK_HD inline Index4 unravel_index_as(I o, I C, I H, I W, bool channels_last) {
  Index4 i;
  if (channels_last) {  // innermost first: c, w, h
    i.c = take_index(o, C);
    i.w = take_index(o, W);
    i.h = take_index(o, H);
  } else {  // w, h, c
    i.w = take_index(o, W);
    i.h = take_index(o, H);
    i.c = take_index(o, C);
  }
  i.n = o;
  return i;
}

AK_HD inline Index4 unravel_index(int64_t o, int64_t C, int64_t H, int64_t W, bool channels_last) {
  return unravel_index_as<int64_t>(o, C, H, W, channels_last);
}

// One call's shapes: input (N, C, H, W), outputs (N, C, OH, OW), one layout for all tensors.
struct PoolProblem {
  int64_t N, C, H, W;
  int64_t OH, OW;
  PoolParams p;
  bool channels_last;
  Strides4 in;   // x, dx
  Strides4 out;  // y / z, offsets, dy / dz
  bool index32;  // every element offset of input and output < 2^31: index math in 32 bits
};

// Offsets below this take 32-bit index math; the CUDA grid-stride loops add at most 2^28 to an offset
// below it, which stays below 2^32 in their unsigned 32-bit loop counters.
constexpr int64_t kIndex32Limit = int64_t(1) << 31;

inline PoolProblem make_pool_problem(int64_t N, int64_t C, int64_t H, int64_t W, int64_t OH, int64_t OW,
                                     const PoolParams& p, bool channels_last) {
  PoolProblem P;
  P.N = N;
  P.C = C;
  P.H = H;
  P.W = W;
  P.OH = OH;
  P.OW = OW;
  P.p = p;
  P.channels_last = channels_last;
  P.in = layout_strides(C, H, W, channels_last);
  P.out = layout_strides(C, OH, OW, channels_last);
  P.index32 = N * C * H * W < kIndex32Limit && N * C * OH * OW < kIndex32Limit;
  return P;
}

// ceil(a / b) for b > 0 and a of either sign (C++ division truncates towards zero).
template <typename I>
AK_HD inline I pool_ceil_div_as(I a, I b) { return a > 0 ? (a + b - 1) / b : -((-a) / b); }
AK_HD inline int64_t pool_ceil_div(int64_t a, int64_t b) { return pool_ceil_div_as<int64_t>(a, b); }

// One axis of a window: unclipped start, and the in-bounds part [begin, end).
struct PoolSpan {
  int64_t start, begin, end;
};

AK_HD inline PoolSpan pool_window(int64_t out_index, int kernel, int stride, int pad, int64_t in_size) {
  PoolSpan s;
  s.start = out_index * stride - pad;
  s.begin = s.start > 0 ? s.start : 0;
  s.end = s.start + kernel < in_size ? s.start + kernel : in_size;
  return s;
}

// The outputs [first, last] (empty when first > last) along one axis whose windows cover input i.
struct PoolRange {
  int64_t first, last;
};

// The divisions in the index type I (int32_t under PoolProblem::index32: every index and size < 2^31).
template <typename I>
AK_HD inline PoolRange pool_covering_outputs_as(I in_index, int kernel, int stride, int pad, I out_size) {
  const I first = pool_ceil_div_as<I>(in_index + pad - kernel + 1, stride);
  const I last = (in_index + pad) / stride;  // in_index + pad >= 0: truncation is floor
  return PoolRange{first > 0 ? first : 0, last < out_size - 1 ? last : out_size - 1};
}

AK_HD inline PoolRange pool_covering_outputs(int64_t in_index, int kernel, int stride, int pad, int64_t out_size) {
  return pool_covering_outputs_as<int64_t>(in_index, kernel, stride, pad, out_size);
}

// Offset of input (ih, iw) in the window starting at (hstart, wstart).
AK_HD inline int pool_offset(int64_t ih, int64_t iw, int64_t hstart, int64_t wstart, int kW) {
  return static_cast<int>(ih - hstart) * kW + static_cast<int>(iw - wstart);
}

// ---------------------------------------------------------------------------------------------
// Forward: the argmax scan
// ---------------------------------------------------------------------------------------------

// torch's update rule: a strictly larger value, or any NaN (so the first maximum and the last NaN win).
// Where a window's scan starts: -inf, or an integer type's lowest value (as torch's CPU kernels; a window
// of only that value keeps its first element, like a window of -infs).
template <typename F>
AK_HD inline F pool_lowest() {
  if constexpr (std::is_integral_v<F>) {
    return std::numeric_limits<F>::lowest();  // instantiated for the CPU kernels only
  } else {
    return -static_cast<F>(INFINITY);
  }
}

template <typename F>
AK_HD inline bool pool_takes(F v, F best) {
  return v > best || v != v;
}

template <typename F>
struct PoolArgmax {
  F value;
  int offset;
};

// Scans the window (h, w) in torch's order; value_at(ih, iw) gives the element as F. When nothing is
// taken (every element -inf) the result is the first element, whose value is -inf.
template <typename F, typename ValueAt>
AK_HD inline PoolArgmax<F> pool_argmax(const PoolSpan& h, const PoolSpan& w, int kW, const ValueAt& value_at) {
  PoolArgmax<F> best{pool_lowest<F>(), pool_offset(h.begin, w.begin, h.start, w.start, kW)};
  for (int64_t ih = h.begin; ih < h.end; ++ih) {
    for (int64_t iw = w.begin; iw < w.end; ++iw) {
      const F v = value_at(ih, iw);
      if (pool_takes(v, best.value)) {
        best.value = v;
        best.offset = pool_offset(ih, iw, h.start, w.start, kW);
      }
    }
  }
  return best;
}

// ---------------------------------------------------------------------------------------------
// Backward: the gather
// ---------------------------------------------------------------------------------------------

// acc + dy where the output routed its gradient here (offset == expected), else acc unchanged.
template <typename F>
AK_HD inline F pool_route(F acc, int offset, int expected, F dy) {
  return offset == expected ? acc + dy : acc;
}

// d(input (ih, iw)) of one (n, c) plane. dy and offsets point at the plane's (0, 0) output, element
// (oh, ow) at oh*hs + ow*ws; oh_range / ow_range are pool_covering_outputs of ih / iw.
template <typename F, typename T>
AK_HD inline F pool_gather(const T* dy, const uint8_t* offsets, int64_t hs, int64_t ws, int64_t ih, int64_t iw,
                           const PoolRange& oh_range, const PoolRange& ow_range, const PoolParams& p) {
  F acc = F(0);
  for (int64_t oh = oh_range.first; oh <= oh_range.last; ++oh) {
    for (int64_t ow = ow_range.first; ow <= ow_range.last; ++ow) {
      const int64_t o = oh * hs + ow * ws;
      const int expected = pool_offset(ih, iw, oh * p.sH - p.pH, ow * p.sW - p.pW, p.kW);
      acc = pool_route(acc, static_cast<int>(offsets[o]), expected, static_cast<F>(dy[o]));
    }
  }
  return acc;
}

// ---------------------------------------------------------------------------------------------
// Fused ReLU -> LRN
// ---------------------------------------------------------------------------------------------

// relu as torch.relu: NaN propagates (a comparison with NaN is false) and -0 stays -0.
template <typename F>
AK_HD inline F relu_keep_nan(F v) {
  return v < F(0) ? F(0) : v;
}

// torch's relu backward, threshold_backward on relu's output: the gradient passes where relu(x) > 0
// or relu(x) is NaN (x NaN), and is 0 where x <= 0.
template <typename F>
AK_HD inline F relu_backward(F x, F grad) {
  return (x > F(0) || x != x) ? grad : F(0);
}

// v rounded to the storage dtype T and back (the identity for float and double).
template <typename T, typename F>
AK_HD inline F round_to_storage(F v) {
  return static_cast<F>(static_cast<T>(v));
}

// LrnParams in the accumulation type F (float: the same values as make_lrn_params).
template <typename F>
struct LrnCoeffs {
  int pre, post;  // W(c) = [c - pre, c + post]
  F alpha_over_n, beta, k;
  F coef;         // 2 * alpha * beta / n
};

// size = n >= 1, channels = C of the tensor (the window's reach is clipped to it: make_lrn_params).
template <typename F>
inline LrnCoeffs<F> make_lrn_coeffs(int64_t size, double alpha, double beta, double k, int64_t channels) {
  const LrnParams p = make_lrn_params(size, alpha, beta, k, channels);
  const double n = static_cast<double>(size);
  return LrnCoeffs<F>{p.pre, p.post, static_cast<F>(alpha / n), static_cast<F>(beta), static_cast<F>(k),
                      static_cast<F>(2.0 * alpha * beta / n)};
}

// sum of r_at(j)^2 over j in [c - behind, c + ahead] ∩ [0, C), j ascending.
template <typename F, typename RAt>
AK_HD inline F window_sumsq(const RAt& r_at, int c, int C, int behind, int ahead) {
  F sumsq = F(0);
  const int hi = lrn_window_hi(c, ahead, C);
  for (int j = lrn_window_lo(c, behind); j <= hi; ++j) {
    const F r = r_at(j);
    sumsq += r * r;
  }
  return sumsq;
}

// L_c from r_c and the sum of squares over W(c), rounded to the storage dtype T.
template <typename T, typename F>
AK_HD inline F fused_lrn_output(F r_c, F sumsq, const LrnCoeffs<F>& p) {
  return round_to_storage<T>(lrn_forward_value(r_c, lrn_base(sumsq, p.alpha_over_n, p.k), p.beta));
}

template <typename F>
struct LrnTerms {
  F base, scale;  // base and base^(-beta) of one channel at one position
};

template <typename F>
AK_HD inline LrnTerms<F> lrn_terms(F sumsq, const LrnCoeffs<F>& p) {
  const F base = lrn_base(sumsq, p.alpha_over_n, p.k);
  return LrnTerms<F>{base, lrn_scale(base, p.beta)};
}

// dx_c at one position. r_at(j) = r_j, terms_at(j) = LrnTerms of channel j, grad_at(j) = dL_j, all at
// this position; j runs over the transposed window [c - post, c + pre] ∩ [0, C), ascending.
template <typename F, typename RAt, typename TermsAt, typename GradAt>
AK_HD inline F fused_backward_value(F x_c, int c, int C, const LrnCoeffs<F>& p, const RAt& r_at,
                                    const TermsAt& terms_at, const GradAt& grad_at) {
  F tsum = F(0);
  F grad_scale_c = F(0);  // dL_c * scale_c
  const int hi = lrn_window_hi(c, p.pre, C);
  for (int j = lrn_window_lo(c, p.post); j <= hi; ++j) {
    const LrnTerms<F> terms = terms_at(j);
    const F grad = grad_at(j);
    tsum += lrn_t_term(grad, r_at(j), terms.base, terms.scale);
    if (j == c) grad_scale_c = grad * terms.scale;
  }
  return relu_backward(x_c, lrn_backward_value(grad_scale_c, relu_keep_nan(x_c), tsum, p.coef));
}

// ---------------------------------------------------------------------------------------------
// Readers: tensor elements as F (functors, usable on host and device)
// ---------------------------------------------------------------------------------------------

// Plane (n, c) of a tensor: (h, w) -> F.
template <typename T, typename F>
struct PlaneReader {
  const T* plane;
  int64_t hs, ws;
  AK_HD F operator()(int64_t h, int64_t w) const { return static_cast<F>(plane[h * hs + w * ws]); }
};

// One (n, h, w) position: channel j -> relu(x_j).
template <typename T, typename F>
struct ReluChannelReader {
  const T* position;  // channel 0
  int64_t cs;
  AK_HD F operator()(int j) const { return relu_keep_nan(static_cast<F>(position[j * cs])); }
};

// Image n, channel c: (h, w) -> L_c at (h, w), rounded to T.
template <typename T, typename F>
struct FusedLrnReader {
  const T* image;  // x at (n, 0, 0, 0)
  Strides4 s;
  int c, C;
  LrnCoeffs<F> p;
  AK_HD F operator()(int64_t h, int64_t w) const {
    const ReluChannelReader<T, F> r{image + h * s.h + w * s.w, s.c};
    return fused_lrn_output<T>(r(c), window_sumsq<F>(r, c, C, p.pre, p.post), p);
  }
};

// One (n, h, w) position: channel j -> base_j, scale_j.
template <typename T, typename F>
struct LrnTermsReader {
  ReluChannelReader<T, F> r;
  int C;
  LrnCoeffs<F> p;
  AK_HD LrnTerms<F> operator()(int j) const { return lrn_terms(window_sumsq<F>(r, j, C, p.pre, p.post), p); }
};

// One input position (n, ih, iw): channel j -> dL_j, the gather from dz / offsets of channel j.
template <typename T, typename F>
struct PoolGradReader {
  const T* dz;               // dz at (n, 0, 0, 0)
  const uint8_t* offsets;    // offsets at (n, 0, 0, 0)
  Strides4 s;                // output strides
  int64_t ih, iw;
  PoolRange oh_range, ow_range;
  PoolParams p;
  AK_HD F operator()(int j) const {
    return pool_gather<F>(dz + j * s.c, offsets + j * s.c, s.h, s.w, ih, iw, oh_range, ow_range, p);
  }
};

// ---------------------------------------------------------------------------------------------
// Whole elements: what one CUDA thread computes (o = the element's memory offset)
// ---------------------------------------------------------------------------------------------

// The element functions take the index type I of their divisions (int32_t only under P.index32); the
// address arithmetic stays int64.

// Output o of max_pool2d: y[o], offsets[o].
template <typename T, typename F, typename I = int64_t>
AK_HD inline void max_pool_forward_element(const T* x, T* y, uint8_t* offsets, const PoolProblem& P, int64_t o) {
  const Index4 i = unravel_index_as<I>(static_cast<I>(o), static_cast<I>(P.C), static_cast<I>(P.OH),
                                       static_cast<I>(P.OW), P.channels_last);
  const PoolSpan h = pool_window(i.h, P.p.kH, P.p.sH, P.p.pH, P.H);
  const PoolSpan w = pool_window(i.w, P.p.kW, P.p.sW, P.p.pW, P.W);
  const PlaneReader<T, F> plane{x + i.n * P.in.n + i.c * P.in.c, P.in.h, P.in.w};
  const PoolArgmax<F> best = pool_argmax<F>(h, w, P.p.kW, plane);
  y[o] = static_cast<T>(best.value);
  offsets[o] = static_cast<uint8_t>(best.offset);
}

// Input o of max_pool2d backward: dx[o].
template <typename T, typename F, typename I = int64_t>
AK_HD inline void max_pool_backward_element(const T* dy, const uint8_t* offsets, T* dx, const PoolProblem& P,
                                            int64_t o) {
  const Index4 i = unravel_index_as<I>(static_cast<I>(o), static_cast<I>(P.C), static_cast<I>(P.H),
                                       static_cast<I>(P.W), P.channels_last);
  const PoolRange oh_range =
      pool_covering_outputs_as<I>(static_cast<I>(i.h), P.p.kH, P.p.sH, P.p.pH, static_cast<I>(P.OH));
  const PoolRange ow_range =
      pool_covering_outputs_as<I>(static_cast<I>(i.w), P.p.kW, P.p.sW, P.p.pW, static_cast<I>(P.OW));
  const int64_t plane = i.n * P.out.n + i.c * P.out.c;
  dx[o] = static_cast<T>(pool_gather<F>(dy + plane, offsets + plane, P.out.h, P.out.w, i.h, i.w, oh_range, ow_range, P.p));
}

// Output o of the fused block: z[o], offsets[o].
template <typename T, typename F, typename I = int64_t>
AK_HD inline void fused_forward_element(const T* x, T* z, uint8_t* offsets, const PoolProblem& P,
                                        const LrnCoeffs<F>& lrn, int64_t o) {
  const Index4 i = unravel_index_as<I>(static_cast<I>(o), static_cast<I>(P.C), static_cast<I>(P.OH),
                                       static_cast<I>(P.OW), P.channels_last);
  const PoolSpan h = pool_window(i.h, P.p.kH, P.p.sH, P.p.pH, P.H);
  const PoolSpan w = pool_window(i.w, P.p.kW, P.p.sW, P.p.pW, P.W);
  const FusedLrnReader<T, F> values{x + i.n * P.in.n, P.in, static_cast<int>(i.c), static_cast<int>(P.C), lrn};
  const PoolArgmax<F> best = pool_argmax<F>(h, w, P.p.kW, values);
  z[o] = static_cast<T>(best.value);
  offsets[o] = static_cast<uint8_t>(best.offset);
}

// Input o of the fused backward: dx[o].
template <typename T, typename F, typename I = int64_t>
AK_HD inline void fused_backward_element(const T* x, const T* dz, const uint8_t* offsets, T* dx,
                                         const PoolProblem& P, const LrnCoeffs<F>& lrn, int64_t o) {
  const Index4 i = unravel_index_as<I>(static_cast<I>(o), static_cast<I>(P.C), static_cast<I>(P.H),
                                       static_cast<I>(P.W), P.channels_last);
  const int C = static_cast<int>(P.C);
  const ReluChannelReader<T, F> r{x + i.n * P.in.n + i.h * P.in.h + i.w * P.in.w, P.in.c};
  const LrnTermsReader<T, F> terms{r, C, lrn};
  const PoolGradReader<T, F> grad{dz + i.n * P.out.n,
                                  offsets + i.n * P.out.n,
                                  P.out,
                                  i.h,
                                  i.w,
                                  pool_covering_outputs_as<I>(static_cast<I>(i.h), P.p.kH, P.p.sH, P.p.pH,
                                                              static_cast<I>(P.OH)),
                                  pool_covering_outputs_as<I>(static_cast<I>(i.w), P.p.kW, P.p.sW, P.p.pW,
                                                              static_cast<I>(P.OW)),
                                  P.p};
  dx[o] = static_cast<T>(fused_backward_value(static_cast<F>(x[o]), static_cast<int>(i.c), C, lrn, r, terms, grad));
}

}  // namespace ak
