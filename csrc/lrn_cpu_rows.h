// Element loops of the CPU LRN over contiguous rows of the accumulation type (float, or double): loads,
// squares, window sums by shifted copies of a zero-padded row, and the forward formula. Shared by
// lrn_cpu.cpp and the fused ReLU -> LRN -> max-pool forward of pool_cpu.cpp, so that the fused block's L is
// lrn_forward's output bit for bit (the same operations in the same order).
//
// Both files compile these with GCC's no-trapping-math (their #pragma before every include), so that the
// power's selects if-convert and the loops vectorise; they are inlined into each file's per-ISA item loops.
#pragma once

#include <cstdint>

#include "cpu_target.h"
#include "lrn_math.h"

namespace ak {
namespace lrn_rows {

template <typename T, typename Acc>
AK_ALWAYS_INLINE void load_row(const T* src, Acc* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Acc>(src[i]);
}

template <typename T, typename Acc>
AK_ALWAYS_INLINE void store_row(const Acc* src, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<T>(src[i]);
}

template <typename Acc>
AK_ALWAYS_INLINE void square_row(const Acc* x, Acc* sq, int64_t n) {
  for (int64_t i = 0; i < n; ++i) sq[i] = x[i] * x[i];
}

template <typename Acc>
AK_ALWAYS_INLINE void copy_row(const Acc* src, Acc* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
}

template <typename Acc>
AK_ALWAYS_INLINE void add_row(const Acc* src, Acc* acc, int64_t n) {
  for (int64_t i = 0; i < n; ++i) acc[i] += src[i];
}

// y = x * (k + alpha/n * sumsq)^(-beta), with beta passed in (a literal 0.75f or p.beta); p: any struct with
// alpha_over_n and k (and beta) in Acc.
template <typename Acc, typename Coeffs>
AK_ALWAYS_INLINE void forward_row_with(const Acc* x, const Acc* sumsq, Acc* y, int64_t n, const Coeffs& p, Acc beta) {
  const Acc alpha_over_n = p.alpha_over_n, k = p.k;
  for (int64_t i = 0; i < n; ++i) y[i] = lrn_forward_value(x[i], lrn_base(sumsq[i], alpha_over_n, k), beta);
}

// The power's path is chosen once per row: with the literal 0.75f the test inside lrn_scale folds away,
// so each vectorised loop holds one path (the square roots, or exp2/log2) rather than both and a blend.
template <typename Acc, typename Coeffs>
AK_ALWAYS_INLINE void forward_row(const Acc* x, const Acc* sumsq, Acc* y, int64_t n, const Coeffs& p) {
  if (lrn_beta_is_three_quarters(p.beta)) {
    forward_row_with(x, sumsq, y, n, p, static_cast<Acc>(0.75f));
  } else {
    forward_row_with(x, sumsq, y, n, p, p.beta);
  }
}

// y = x * (k + alpha/n * sumsq)^(-beta) where sumsq = sq[0] + sq[1] + ... + sq[kTerms - 1] added in that order:
// copy_row / add_row's window sum and forward_row's formula in one pass, the sum kept in a register (the same
// operations in the same order as the two steps, so the same bits, with one pass over memory instead of kTerms + 1).
template <int kTerms, typename Acc, typename Coeffs>
AK_ALWAYS_INLINE void forward_window_row_with(const Acc* x, const Acc* const* sq, Acc* y, int64_t n, const Coeffs& p,
                                              Acc beta) {
  const Acc* s[kTerms];  // as locals: the stores to y could otherwise alias the pointer array
  for (int t = 0; t < kTerms; ++t) s[t] = sq[t];
  const Acc alpha_over_n = p.alpha_over_n, k = p.k;
#pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i) {
    Acc sumsq = s[0][i];
    for (int t = 1; t < kTerms; ++t) sumsq += s[t][i];
    y[i] = lrn_forward_value(x[i], lrn_base(sumsq, alpha_over_n, k), beta);
  }
}

// forward_row of the window sum of the `terms` rows sq[0 .. terms) (added in order): in one pass for windows of
// 5 rows (AlexNet's size), else the sum formed in `sum` first.
template <typename Acc, typename Coeffs>
AK_ALWAYS_INLINE void forward_window_row(const Acc* x, const Acc* const* sq, int terms, Acc* sum, Acc* y, int64_t n,
                                         const Coeffs& p) {
  if (terms == 5) {
    if (lrn_beta_is_three_quarters(p.beta)) {
      forward_window_row_with<5>(x, sq, y, n, p, static_cast<Acc>(0.75f));
    } else {
      forward_window_row_with<5>(x, sq, y, n, p, p.beta);
    }
    return;
  }
  copy_row(sq[0], sum, n);
  for (int t = 1; t < terms; ++t) add_row(sq[t], sum, n);
  forward_row(x, static_cast<const Acc*>(sum), y, n, p);
}

// acc[i] = sum_{d < terms} padded[d + i]: window sums along a zero-padded contiguous row.
template <typename Acc>
AK_ALWAYS_INLINE void shifted_sum_row(const Acc* padded, int terms, Acc* acc, int64_t n) {
  copy_row(padded, acc, n);
  for (int d = 1; d < terms; ++d) add_row(padded + d, acc, n);
}

}  // namespace lrn_rows
}  // namespace ak
