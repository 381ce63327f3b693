// Compiler and threading helpers of the CPU kernels (lrn_cpu.cpp, pool_cpu.cpp, dropout_cpu.cpp): forced
// inlining of the small loops, and parallel loops whose body is compiled per ISA (cpu_isa.h) -- baseline
// x86-64, AVX2 + FMA, AVX-512 -- with the widest copy the CPU runs chosen at run time.
#pragma once

#include <torch/csrc/stable/ops.h>  // torch::stable::parallel_for: torch's intra-op thread pool, stable C ABI

#include "cpu_isa.h"
#include "tensor_view.h"

#include <algorithm>
#include <cstdint>

#if defined(__GNUC__)
#define AK_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define AK_ALWAYS_INLINE inline
#endif

// The CPU kernels' dtypes: float / half / bfloat16 computed in float, double (for gradcheck) in double.
#define AK_CPU_DISPATCH(TYPE, NAME, ...) AK_DISPATCH_FLOATING_AND_DOUBLE(TYPE, NAME, __VA_ARGS__)

namespace ak {

// at::parallel_for through the stable ABI (same pool, same grain semantics).
template <typename F>
void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  torch::stable::parallel_for(begin, end, grain, f);
}

inline int num_threads() { return static_cast<int>(torch::stable::get_num_threads()); }

// Work items per parallel chunk: about this many element visits at least.
constexpr int64_t kGrainElements = 1 << 15;

#ifdef AK_CPU_ISA_CLONES
template <typename Items>
AK_TARGET_AVX2 void run_items_avx2(const Items& items, int64_t begin, int64_t end) {
  items(begin, end);
}

template <typename Items>
AK_TARGET_AVX512 void run_items_avx512(const Items& items, int64_t begin, int64_t end) {
  items(begin, end);
}
#endif

template <typename Items>
void run_items_baseline(const Items& items, int64_t begin, int64_t end) {
  items(begin, end);
}

// items(begin, end) compiled for isa (one the CPU supports).
template <typename Items>
void run_items(CpuIsa isa, const Items& items, int64_t begin, int64_t end) {
#ifdef AK_CPU_ISA_CLONES
  switch (isa) {
    case CpuIsa::kAvx512: run_items_avx512(items, begin, end); return;
    case CpuIsa::kAvx2: run_items_avx2(items, begin, end); return;
    case CpuIsa::kBaseline: break;
  }
#endif
  run_items_baseline(items, begin, end);
}

// items(begin, end) over [0, count) in parallel chunks of about kGrainElements element visits, compiled for
// isa (default: the widest this CPU runs).
template <typename Items>
void parallel_items(int64_t count, int64_t elements_per_item, const Items& items, CpuIsa isa = best_cpu_isa()) {
  const int64_t grain = std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, elements_per_item));
  parallel_for(0, count, grain, [&](int64_t begin, int64_t end) { run_items(isa, items, begin, end); });
}

}  // namespace ak
